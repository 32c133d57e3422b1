"""Board detection, board pose and intrinsics on synthetic views: the board's own drawing
(:meth:`BoardSpec.image`) rendered through a known pinhole camera by a homography, 4x
supersampled then box-filtered (a camera's pixels integrate light), mildly blurred and noisy."""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import pytest

from calibration.board import BoardSpec, BoardView, ViewRejected, board_pose, detect
from calibration.intrinsics import (
    CameraIntrinsics,
    estimate_intrinsics,
    from_realsense,
    realsense_distortion,
)

WIDTH, HEIGHT = 640, 480
K = np.array([[600.0, 0.0, 322.5], [0.0, 605.0, 238.7], [0.0, 0.0, 1.0]])
CAMERA = CameraIntrinsics.from_matrix(K, WIDTH, HEIGHT)
#: A wide lens's barrel distortion (~4 px at the image's corners), and a fisheye's.
DISTORTED = CameraIntrinsics.from_matrix(K, WIDTH, HEIGHT, d=(-0.12, 0.09, 0.0008, -0.0005))
FISHEYE = CameraIntrinsics.from_matrix(K, WIDTH, HEIGHT, (0.05, -0.02, 0.004, 0.0), "equidistant")
CHARUCO = BoardSpec(kind="charuco", squares_x=7, squares_y=5, square_m=0.04, marker_m=0.03)
CHESSBOARD = BoardSpec(kind="chessboard", squares_x=9, squares_y=6, square_m=0.03)
PIXELS_PER_SQUARE = 120
SUPERSAMPLE = 4


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([rx, ry, rz], dtype=np.float64))[0]


def facing(spec: BoardSpec, centre: tuple[float, float, float], tilt=(0.0, 0.0, 0.0)):
    """camera_from_board (4x4) with the board's centre at ``centre`` (camera frame, metres),
    its printed face toward the camera, then tilted by the rotation vector ``tilt`` about
    its centre."""
    width, height = spec.size_m
    pose = np.eye(4)
    pose[:3, :3] = rotation(*tilt)
    pose[:3, 3] = np.asarray(centre) - pose[:3, :3] @ np.array([width / 2, height / 2, 0.0])
    return pose


def render(
    spec: BoardSpec,
    camera_from_board: np.ndarray,
    blur_px: float = 0.7,
    noise: float = 1.0,
    seed: int = 0,
    camera: CameraIntrinsics = CAMERA,
) -> np.ndarray:
    """(H, W, 3) RGB uint8 view of the board's drawing through ``camera`` (with its lens
    distortion): white around the board."""
    texture = spec.image(PIXELS_PER_SQUARE)
    metres = spec.square_m / PIXELS_PER_SQUARE
    # texture pixel (u, v) -> board point ((u + 0.5) m, (v + 0.5) m) -> image (OpenCV centres)
    texture_to_board = np.array([[metres, 0, metres / 2], [0, metres, metres / 2], [0, 0, 1]])
    r, t = camera_from_board[:3, :3], camera_from_board[:3, 3]
    image_from_texture = camera.k @ np.column_stack([r[:, 0], r[:, 1], t]) @ texture_to_board
    s = SUPERSAMPLE
    fine_from_image = np.array([[s, 0, s / 2 - 0.5], [0, s, s / 2 - 0.5], [0, 0, 1]])
    fine_from_texture = fine_from_image @ image_from_texture
    size = (WIDTH * s, HEIGHT * s)
    if not any(camera.d):
        fine = cv2.warpPerspective(
            texture, fine_from_texture, size, flags=cv2.INTER_LINEAR, borderValue=255
        )
    else:  # each fine pixel samples the texture where its undistorted ray meets the board
        x, y = fine_ideal_pixels(camera)
        h = np.linalg.inv(fine_from_texture)
        w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
        u = ((h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w).astype(np.float32)
        v = ((h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w).astype(np.float32)
        fine = cv2.remap(texture, u, v, cv2.INTER_LINEAR, borderValue=255)
    image = cv2.resize(fine, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA).astype(np.float32)
    if blur_px > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur_px)
    image += np.random.default_rng(seed).normal(0.0, noise, image.shape).astype(np.float32)
    gray = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


@functools.cache
def fine_ideal_pixels(camera: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of the supersampled image, its undistorted (pinhole) position in the
    same supersampled pixels: undistorted per image pixel, interpolated between them."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    points = np.stack([x.ravel(), y.ravel()], axis=1).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 50, 1e-12)
    k, d = camera.k, camera.dist_coeffs
    if camera.distortion_model == "equidistant":
        ideal = cv2.fisheye.undistortPoints(points, k, d, P=k, criteria=criteria)
    else:
        ideal = cv2.undistortPointsIter(points, k, d, None, k, criteria)
    ideal = ideal.reshape(HEIGHT, WIDTH, 2).astype(np.float32)
    s = SUPERSAMPLE
    fine = s * (cv2.resize(ideal, (WIDTH * s, HEIGHT * s), interpolation=cv2.INTER_LINEAR) + 0.5)
    return fine[:, :, 0] - 0.5, fine[:, :, 1] - 0.5


def projected(
    spec: BoardSpec, camera_from_board: np.ndarray, camera: CameraIntrinsics = CAMERA
) -> np.ndarray:
    """Every inner corner's ground-truth image position (N, 2)."""
    rvec = cv2.Rodrigues(camera_from_board[:3, :3])[0]
    points, t = spec.object_points(), camera_from_board[:3, 3]
    if camera.distortion_model == "equidistant":
        image, _ = cv2.fisheye.projectPoints(
            points.reshape(-1, 1, 3), rvec, t, camera.k, camera.dist_coeffs
        )
    else:
        image, _ = cv2.projectPoints(points, rvec, t, camera.k, camera.dist_coeffs)
    return image.reshape(-1, 2)


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    cosine = (np.trace(a[:3, :3].T @ b[:3, :3]) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, cosine))))


# -- the board ---------------------------------------------------------------------------------


def test_object_points_are_opencvs_board_frame():
    board = cv2.aruco.CharucoBoard(
        (7, 5), 0.04, 0.03, cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_5X5_100)
    )
    points = CHARUCO.object_points()
    assert points.shape == (24, 3) and points.dtype == np.float64
    np.testing.assert_allclose(points, board.getChessboardCorners(), atol=1e-7)
    # id 0: one square right and down of the top-left outer corner; ids run along the rows
    np.testing.assert_allclose(
        points[[0, 1, 6]], [[0.04, 0.04, 0], [0.08, 0.04, 0], [0.04, 0.08, 0]]
    )
    assert CHARUCO.size_m == pytest.approx((0.28, 0.20))
    assert CHESSBOARD.object_points().shape == (40, 3)


@pytest.mark.parametrize("spec", [CHARUCO, CHESSBOARD], ids=["charuco", "chessboard"])
def test_drawing_maps_the_board_frame_onto_pixels(spec: BoardSpec):
    """Board point (x, y) is drawing pixel (m + x ppsq/square - 0.5, ...): the corners detected
    in the drawing itself sit exactly there, and the top-left square is black."""
    image = spec.image(pixels_per_square=60, margin_squares=0.5)
    margin = 30
    assert image.shape == (spec.squares_y * 60 + 2 * margin, spec.squares_x * 60 + 2 * margin)
    assert image.dtype == np.uint8
    assert image[margin + 5, margin + 5] == 0 and image[5, 5] == 255
    assert spec.image(pixels_per_square=50).shape == (spec.squares_y * 50, spec.squares_x * 50)
    view = detect(image, spec)
    expected = margin + view.object_points[:, :2] * 60 / spec.square_m - 0.5
    assert len(view.ids) == spec.corner_count
    np.testing.assert_allclose(view.corners, expected, atol=0.05)


def test_spec_validation():
    with pytest.raises(ValueError, match="marker_m"):
        BoardSpec(kind="charuco", squares_x=7, squares_y=5, square_m=0.04)
    with pytest.raises(ValueError, match="smaller than square_m"):
        BoardSpec(kind="charuco", squares_x=7, squares_y=5, square_m=0.04, marker_m=0.05)
    with pytest.raises(ValueError, match="unknown ArUco dictionary"):
        BoardSpec(kind="charuco", squares_x=7, squares_y=5, square_m=0.04, marker_m=0.03,
                  dictionary="DICT_9X9_7")  # fmt: skip
    with pytest.raises(ValueError, match="needs 60 markers"):
        BoardSpec(kind="charuco", squares_x=12, squares_y=10, square_m=0.04, marker_m=0.03,
                  dictionary="DICT_4X4_50")  # fmt: skip
    with pytest.raises(ValueError, match="half a turn"):
        BoardSpec(kind="chessboard", squares_x=8, squares_y=6, square_m=0.03)
    with pytest.raises(ValueError, match="no markers"):
        BoardSpec(kind="chessboard", squares_x=9, squares_y=6, square_m=0.03, marker_m=0.02)
    with pytest.raises(ValueError, match="extra"):
        BoardSpec.model_validate({**CHESSBOARD.model_dump(), "colour": "red"})


# -- detection and pose --------------------------------------------------------------------------

POSE = facing(CHARUCO, (0.02, -0.01, 0.5), tilt=(0.35, -0.25, 0.1))


@pytest.mark.parametrize(
    ("spec", "pose"),
    [
        (CHARUCO, POSE),
        (CHARUCO, facing(CHARUCO, (-0.03, 0.02, 0.45), tilt=(-0.2, 0.3, 2.5))),
        (CHESSBOARD, facing(CHESSBOARD, (0.0, 0.01, 0.5), tilt=(0.3, 0.3, -0.2))),
        # half and quarter turns: the ids still follow the board, not the image
        (CHESSBOARD, facing(CHESSBOARD, (0.01, 0.0, 0.5), tilt=(0.0, 0.0, math.pi))),
        (CHESSBOARD, facing(CHESSBOARD, (0.01, 0.0, 0.5), tilt=(0.0, 0.2, math.pi / 2))),
    ],
    ids=["charuco", "charuco-turned", "chessboard", "chessboard-half-turn", "chessboard-quarter"],
)
def test_detect_finds_the_projected_corners(spec: BoardSpec, pose: np.ndarray):
    view = detect(render(spec, pose), spec)
    assert len(view.ids) == spec.corner_count
    assert view.image_size == (WIDTH, HEIGHT)
    assert view.corners.dtype == np.float64 and view.object_points.shape == (len(view.ids), 3)
    np.testing.assert_array_equal(view.object_points, spec.object_points()[view.ids])
    error = np.linalg.norm(view.corners - projected(spec, pose)[view.ids], axis=1)
    assert error.max() < 0.1, error.max()
    assert error.mean() < 0.05
    # the frame convention: corner 0 of the board frame, through the pose, is detected corner 0
    assert view.ids[0] == 0
    assert np.linalg.norm(projected(spec, pose)[0] - view.corners[0]) < 0.1


@pytest.mark.parametrize("spec", [CHARUCO, CHESSBOARD], ids=["charuco", "chessboard"])
def test_board_pose_recovers_the_pose(spec: BoardSpec):
    pose = facing(spec, (0.03, -0.02, 0.5), tilt=(0.4, -0.3, 0.2))
    found = board_pose(detect(render(spec, pose), spec), CAMERA)
    assert found.camera_from_board.shape == (4, 4)
    translation_mm = 1000 * np.linalg.norm(found.camera_from_board[:3, 3] - pose[:3, 3])
    assert translation_mm < 0.5
    assert rotation_error_deg(found.camera_from_board, pose) < 0.05
    assert found.reprojection_rms_px < 0.1
    assert 25 < found.obliquity_deg < 35  # 0.5 rad of tilt, seen a little off-axis


@pytest.mark.parametrize("camera", [DISTORTED, FISHEYE], ids=["plumb_bob", "equidistant"])
def test_board_pose_through_lens_distortion(camera: CameraIntrinsics):
    pose = facing(CHARUCO, (-0.1, 0.07, 0.5), tilt=(0.3, 0.4, -0.1))
    view = detect(render(CHARUCO, pose, camera=camera), CHARUCO)
    error = np.linalg.norm(view.corners - projected(CHARUCO, pose, camera)[view.ids], axis=1)
    assert error.max() < 0.15  # (curved edges: cornerSubPix models straight ones)
    assert error.mean() < 0.06
    found = board_pose(view, camera)
    assert 1000 * np.linalg.norm(found.camera_from_board[:3, 3] - pose[:3, 3]) < 0.5
    assert rotation_error_deg(found.camera_from_board, pose) < 0.05
    assert found.reprojection_rms_px < 0.1
    # ignoring the distortion costs millimetres
    pinhole = board_pose(view, CAMERA)
    assert pinhole.reprojection_rms_px > 0.3


def test_board_pose_of_a_facing_board_is_not_oblique():
    pose = facing(CHARUCO, (0.0, 0.0, 0.5))
    found = board_pose(detect(render(CHARUCO, pose), CHARUCO), CAMERA)
    assert found.obliquity_deg < 2.0
    # z of the board frame points away from the camera (into the board)
    assert found.camera_from_board[2, 2] == pytest.approx(1.0, abs=1e-3)


def test_board_pose_with_another_resolution_is_refused():
    view = detect(render(CHARUCO, POSE), CHARUCO)
    with pytest.raises(ValueError, match="calibrate the camera at this resolution"):
        board_pose(view, CameraIntrinsics.from_matrix(K, 1280, 720))


# -- rejections --------------------------------------------------------------------------------


def test_blurred_view_is_rejected():
    close = facing(CHARUCO, (0.0, 0.0, 0.32), tilt=(0.2, 0.1, 0.0))
    sharp = detect(render(CHARUCO, close), CHARUCO)
    with pytest.raises(ViewRejected, match=r"blurred \(sharpness \d+ < 50\): hold still") as e:
        detect(render(CHARUCO, close, blur_px=3.5), CHARUCO)
    assert e.value.reason == "blurred"
    assert sharp.sharpness > 4 * 50
    # so blurred that no marker is read: still named
    with pytest.raises(ViewRejected, match=r"no ChArUco board found.*blurred") as e:
        detect(render(CHARUCO, POSE, blur_px=8.0), CHARUCO)
    assert e.value.reason == "no_board"


def test_partial_charuco_view_is_rejected():
    # the board's centre beyond the image's top-left corner: 4 corners in view
    pose = facing(CHARUCO, (-0.26, -0.16, 0.5), tilt=(0.0, 0.2, 0.0))
    with pytest.raises(ViewRejected, match=r"only 4 of 24 corners found.*fully into view") as e:
        detect(render(CHARUCO, pose), CHARUCO)
    assert e.value.reason == "too_few_corners"
    # a board half in view is still a view (of the corners seen)
    half = facing(CHARUCO, (-0.27, 0.0, 0.5), tilt=(0.0, 0.2, 0.0))
    view = detect(render(CHARUCO, half), CHARUCO)
    assert 6 <= len(view.ids) < 24
    error = np.linalg.norm(view.corners - projected(CHARUCO, half)[view.ids], axis=1)
    assert error.max() < 0.1


def test_partial_chessboard_and_no_board_are_rejected():
    pose = facing(CHESSBOARD, (-0.25, 0.0, 0.5))
    with pytest.raises(ViewRejected, match=r"no 8x5-corner chessboard.*whole of it") as e:
        detect(render(CHESSBOARD, pose), CHESSBOARD)
    assert e.value.reason == "no_board"
    rng = np.random.default_rng(1)
    clutter = cv2.GaussianBlur(rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8), (0, 0), 2)
    for spec in (CHARUCO, CHESSBOARD):
        with pytest.raises(ViewRejected, match=r"no .* found") as e:
            detect(clutter, spec)
        assert e.value.reason == "no_board"


def test_oblique_view_is_rejected():
    pose = facing(CHARUCO, (0.0, 0.0, 0.5), tilt=(0.0, math.radians(66), 0.0))
    view = detect(render(CHARUCO, pose), CHARUCO)
    with pytest.raises(ViewRejected, match=r"too oblique \(6\d deg > 60 deg\): face the board"):
        board_pose(view, CAMERA)
    assert board_pose(view, CAMERA, max_obliquity_deg=75).obliquity_deg > 60


def test_detect_arguments():
    image = render(CHARUCO, POSE)
    with pytest.raises(ValueError, match="at least 4"):
        detect(image, CHARUCO, min_corners=3)
    with pytest.raises(ValueError, match="uint8"):
        detect(image.astype(np.float32), CHARUCO)
    gray = detect(image[:, :, 0], CHARUCO)
    np.testing.assert_allclose(gray.corners, detect(image, CHARUCO).corners)


# -- intrinsics --------------------------------------------------------------------------------


def calibration_views(
    count: int = 12, camera: CameraIntrinsics = CAMERA, tilted: bool = True
) -> list[BoardView]:
    """The board over the whole image, tilted up to ~35 deg, 0.38-0.55 m away."""
    rng = np.random.default_rng(7)
    views = []
    for index in range(count):
        z = rng.uniform(0.38, 0.55)
        column, row = index % 4, (index // 4) % 3
        x = (column - 1.5) / 1.5 * 0.18 * z / 0.5
        y = (row - 1.0) * 0.12 * z / 0.5
        tilt = (*rng.uniform(-0.6, 0.6, 2), rng.uniform(-0.3, 0.3)) if tilted else (0, 0, 0)
        pose = facing(CHARUCO, (x, y, z), tilt=tilt)
        views.append(detect(render(CHARUCO, pose, seed=index, camera=camera), CHARUCO))
    return views


@pytest.fixture(scope="module")
def views() -> list[BoardView]:
    return calibration_views()


def test_estimate_intrinsics_recovers_the_camera(views: list[BoardView]):
    estimate = estimate_intrinsics(views, (WIDTH, HEIGHT))
    found = estimate.intrinsics
    assert (found.width, found.height, found.distortion_model) == (WIDTH, HEIGHT, "plumb_bob")
    for name, truth in (("fx", 600.0), ("fy", 605.0), ("cx", 322.5), ("cy", 238.7)):
        assert getattr(found, name) == pytest.approx(truth, rel=0.005), name
    assert len(found.d) == 5 and found.d[4] == 0.0  # k3 held at 0
    assert max(abs(c) for c in found.d) < 0.02
    assert estimate.rms_px < 0.1
    assert len(estimate.per_view_rms_px) == len(views)
    assert max(estimate.per_view_rms_px) < 0.15
    assert estimate.coverage > 0.5
    assert all(0 < s < 3 for s in estimate.std_px)

    square = estimate_intrinsics(views, (WIDTH, HEIGHT), fix_aspect_ratio=True)
    assert square.intrinsics.fx == square.intrinsics.fy
    assert square.intrinsics.fx == pytest.approx(602.5, rel=0.01)
    rational = estimate_intrinsics(views, (WIDTH, HEIGHT), model="rational_polynomial")
    assert rational.intrinsics.distortion_model == "rational_polynomial"
    assert len(rational.intrinsics.d) == 8


def test_estimate_intrinsics_through_lens_distortion():
    estimate = estimate_intrinsics(calibration_views(camera=DISTORTED), (WIDTH, HEIGHT))
    found = estimate.intrinsics
    for name in ("fx", "fy", "cx", "cy"):
        assert getattr(found, name) == pytest.approx(getattr(DISTORTED, name), rel=0.005), name
    np.testing.assert_allclose(found.d[:2], DISTORTED.d[:2], atol=0.02)
    np.testing.assert_allclose(found.d[2:4], DISTORTED.d[2:4], atol=0.001)
    assert estimate.rms_px < 0.1


def test_estimate_intrinsics_refuses_poor_view_sets(views: list[BoardView]):
    with pytest.raises(ValueError, match="only 3 views: take at least 4"):
        estimate_intrinsics(views[:3], (WIDTH, HEIGHT))
    # all views in the image's top-left quarter
    corner = [v for v in views if v.corners[:, 0].max() < 400 and v.corners[:, 1].max() < 320]
    crowded = [*corner, *corner][:4]
    assert len(corner) >= 1
    with pytest.raises(ValueError, match=r"cover \d+% of the image.*corners/edges"):
        estimate_intrinsics(crowded, (WIDTH, HEIGHT))
    with pytest.raises(ValueError, match="calibrate one resolution at a time"):
        estimate_intrinsics(views, (1280, 720))


def test_estimate_intrinsics_refuses_views_that_all_face_the_camera():
    flat = calibration_views(count=8, tilted=False)
    with pytest.raises(ValueError, match=r"square on in 8 of 8 views.*tilt the board"):
        estimate_intrinsics(flat, (WIDTH, HEIGHT))


# -- intrinsics types ----------------------------------------------------------------------------


def test_camera_intrinsics_model():
    assert CAMERA.d == (0.0,) * 5
    np.testing.assert_array_equal(CAMERA.k, K)
    assert CAMERA.dist_coeffs.shape == (5,)
    none = CameraIntrinsics.from_matrix(K, WIDTH, HEIGHT, model="none")
    assert none.d == () and none.dist_coeffs.shape == (0,)
    with pytest.raises(ValueError, match="plumb_bob has 5 coefficients, not 6"):
        CameraIntrinsics.from_matrix(K, WIDTH, HEIGHT, d=(0.1,) * 6)
    with pytest.raises(ValueError, match="skew"):
        CameraIntrinsics.from_matrix(K + np.array([[0, 1.0, 0], [0, 0, 0], [0, 0, 0]]), 640, 480)
    dumped = CAMERA.model_dump(mode="json")
    assert CameraIntrinsics.model_validate(dumped) == CAMERA


def test_from_realsense():
    rs = pytest.importorskip("pyrealsense2")
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = 1280, 720
    intrinsics.fx, intrinsics.fy, intrinsics.ppx, intrinsics.ppy = 910.5, 909.8, 641.2, 362.9
    intrinsics.model = rs.distortion.inverse_brown_conrady
    intrinsics.coeffs = [0.01, -0.02, 0.001, 0.002, 0.003]
    found = from_realsense(intrinsics)  # librealsense holds float32
    assert (found.width, found.height, found.distortion_model) == (1280, 720, "plumb_bob")
    assert (found.fx, found.fy, found.cx, found.cy) == pytest.approx((910.5, 909.8, 641.2, 362.9))
    assert found.d == pytest.approx((0.01, -0.02, 0.001, 0.002, 0.003))
    intrinsics.model = rs.distortion.kannala_brandt4
    fisheye = from_realsense(intrinsics)
    assert fisheye.distortion_model == "equidistant"
    assert fisheye.d == pytest.approx((0.01, -0.02, 0.001, 0.002))
    # the same mapping as the camera node's CameraInfo, from policy_runtime's own Intrinsics
    from policy_runtime.camera.frames import Intrinsics

    frames = Intrinsics(640, 480, 600.0, 601.0, 320.0, 240.0, "brown_conrady", (0.1,) * 5)
    assert from_realsense(frames).distortion_model == "plumb_bob"
    assert realsense_distortion("none", [0.0] * 5) == ("plumb_bob", (0.0,) * 5)
