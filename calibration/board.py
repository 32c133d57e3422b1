"""Calibration boards: what they are, how to draw them, finding them in an image, their pose.

The board frame (both kinds, the same as OpenCV's ``CharucoBoard``): origin at the board's
top-left OUTER corner as :meth:`BoardSpec.image` draws it (the outer corner of the black square
at the top left), x along the columns (to the right in the drawing), y along the rows (down the
drawing), z = x cross y, into the board (away from a camera that sees its printed face).
Metres. Inner corner ``id`` (row-major, ``squares_x - 1`` per row) is at
``((id % (squares_x - 1) + 1) * square_m, (id // (squares_x - 1) + 1) * square_m, 0)``.

Image points follow OpenCV: pixel (0, 0)'s centre is at (0, 0), x to the right, y down; the
camera's optical frame is x right, y down, z forward.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from calibration.intrinsics import CameraIntrinsics

#: Default :func:`detect` threshold on :attr:`BoardView.sharpness`. Rendered ChArUco boards at
#: 50 px a square score ~450 sharp, ~300 / 110 / 65 blurred by a Gaussian of 1 / 2 / 2.5 px;
#: at 80 px a square ~230, 160 / 50 / 33. The score falls as the squares grow (fewer edges).
MIN_SHARPNESS = 50.0
#: The Gaussian (pixels) that smooths the image before its Laplacian in the sharpness measure,
#: so that sensor noise does not read as sharpness.
SHARPNESS_SMOOTHING_PX = 1.0

RejectReason = Literal["no_board", "too_few_corners", "collinear", "blurred", "oblique"]


class ViewRejected(ValueError):
    """A view of the board that calibration cannot use. The message says why and what to do;
    ``reason`` names the cause for a program: ``no_board``, ``too_few_corners``, ``collinear``,
    ``blurred`` or ``oblique``."""

    def __init__(self, message: str, reason: RejectReason) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


class BoardSpec(BaseModel):
    """A printed calibration board: ``squares_x`` columns by ``squares_y`` rows of squares of
    ``square_m`` metres; a ChArUco board's ArUco markers (``marker_m`` wide, from the
    ``dictionary``) sit in its white squares. See the module docs for the board frame.

    A plain chessboard must have ``squares_x + squares_y`` odd (9x6, 8x5, ...): then its
    top-left and bottom-right squares differ in colour and its orientation is unambiguous."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["charuco", "chessboard"]
    squares_x: int = Field(ge=3, le=64)
    squares_y: int = Field(ge=3, le=64)
    square_m: float = Field(gt=0.0)
    marker_m: float | None = Field(default=None, gt=0.0)
    #: A ``cv2.aruco`` predefined dictionary (ChArUco only).
    dictionary: str = "DICT_5X5_100"

    @field_validator("dictionary")
    @classmethod
    def _known_dictionary(cls, name: str) -> str:
        return known_dictionary(name)

    @model_validator(mode="after")
    def _consistent(self) -> BoardSpec:
        if self.kind == "charuco":
            if self.marker_m is None:
                raise ValueError("a ChArUco board needs marker_m (the markers' side, metres)")
            if self.marker_m >= self.square_m:
                raise ValueError(
                    f"marker_m {self.marker_m} must be smaller than square_m {self.square_m}"
                )
            markers = self.squares_x * self.squares_y // 2
            available = aruco_dictionary(self.dictionary).bytesList.shape[0]
            if markers > available:
                raise ValueError(
                    f"a {self.squares_x}x{self.squares_y} ChArUco board needs {markers} markers;"
                    f" {self.dictionary} has {available}: take a larger dictionary"
                )
        else:
            if self.marker_m is not None:
                raise ValueError("a chessboard has no markers: leave marker_m out")
            if (self.squares_x + self.squares_y) % 2 == 0:
                raise ValueError(
                    f"a {self.squares_x}x{self.squares_y} chessboard looks the same turned"
                    " half a turn: use one with squares_x + squares_y odd (e.g. 9x6)"
                )
        return self

    @property
    def inner_corners(self) -> tuple[int, int]:
        """Inner corners per row and per column: ``(squares_x - 1, squares_y - 1)``."""
        return self.squares_x - 1, self.squares_y - 1

    @property
    def corner_count(self) -> int:
        """How many inner corners (the points detected and calibrated on)."""
        columns, rows = self.inner_corners
        return columns * rows

    @property
    def size_m(self) -> tuple[float, float]:
        """The board's outer (width, height) in metres: ``squares_* * square_m``."""
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def object_points(self) -> np.ndarray:
        """(N, 3) float64: inner corner ``id``'s position in the board frame (module docs), in
        metres, row ``id``. Equal to OpenCV's ``CharucoBoard.getChessboardCorners()``."""
        columns, rows = self.inner_corners
        row, column = np.divmod(np.arange(columns * rows), columns)
        points = np.zeros((columns * rows, 3))
        points[:, 0] = (column + 1) * self.square_m
        points[:, 1] = (row + 1) * self.square_m
        return points

    def image(self, pixels_per_square: int = 100, margin_squares: float = 0.0) -> np.ndarray:
        """(H, W) uint8 drawing of the board: the top-left square black, ``pixels_per_square``
        pixels a square, surrounded by ``margin_squares`` squares of white (rounded to whole
        pixels). Without margin the image is exactly the board, ``squares_x * pixels_per_square``
        wide: a texture of the physical size :attr:`size_m` maps onto it 1:1.

        Board point (x, y) metres is image point ``(m + x * pixels_per_square / square_m - 0.5,
        m + y * ... - 0.5)`` (OpenCV pixel centres, ``m`` the margin in pixels): the board-frame
        origin is the top-left corner (not the centre) of pixel (m, m), the image's own top-left
        corner without margin."""
        if pixels_per_square < 8:
            raise ValueError(f"pixels_per_square {pixels_per_square}: draw at least 8")
        margin = round(margin_squares * pixels_per_square)
        if margin < 0:
            raise ValueError(f"margin_squares {margin_squares} is negative")
        width = self.squares_x * pixels_per_square
        height = self.squares_y * pixels_per_square
        if self.kind == "charuco":
            size = (width + 2 * margin, height + 2 * margin)
            return np.asarray(_charuco_board(self).generateImage(size, marginSize=margin))
        row, column = np.mgrid[0:height, 0:width] // pixels_per_square
        board = np.where((row + column) % 2 == 0, 0, 255).astype(np.uint8)
        return np.pad(board, margin, constant_values=255)

    def png(self, pixels_per_square: int = 200) -> bytes:
        """:meth:`image` as PNG bytes (a simulator's texture, a file to print)."""
        ok, encoded = cv2.imencode(".png", self.image(pixels_per_square))
        if not ok:
            raise ValueError("could not encode the board image")
        return encoded.tobytes()


@dataclass(frozen=True)
class BoardView:
    """The board's inner corners found in one image."""

    #: (N,) int: the corners' ids (rows of :meth:`BoardSpec.object_points`), ascending.
    ids: np.ndarray
    #: (N, 2) float64: their sub-pixel image positions (OpenCV: pixel (0, 0)'s centre at (0, 0)).
    corners: np.ndarray
    #: (N, 3) float64: their positions in the board frame, metres.
    object_points: np.ndarray
    #: The image's (width, height) in pixels.
    image_size: tuple[int, int]
    #: Variance of the Laplacian over the board's bounding box (see :func:`sharpness`).
    sharpness: float


@dataclass(frozen=True)
class BoardPose:
    """Where the board is, seen from the camera."""

    #: (4, 4): the board frame in the camera's optical frame (x right, y down, z forward), i.e.
    #: ``p_camera = camera_from_board @ p_board``; metres.
    camera_from_board: np.ndarray
    #: RMS distance between the detected corners and the pose's reprojection, pixels.
    reprojection_rms_px: float
    #: The angle between the board's normal and the line of sight from the camera to the
    #: centroid of the corners seen, degrees (0: the board faces the camera square on).
    obliquity_deg: float


def detect(
    image: np.ndarray,
    spec: BoardSpec,
    min_corners: int = 6,
    min_sharpness: float = MIN_SHARPNESS,
) -> BoardView:
    """The board's inner corners in ``image``, (H, W, 3) RGB or (H, W) grey, uint8.

    ChArUco: ``cv2.aruco.CharucoDetector``, then each corner refined by ``cv2.cornerSubPix``
    with a window that stays clear of the markers (the detector's own refinement stops at
    0.1 px). Any subset of corners is a view, from ``min_corners`` (at least 4, not all on one
    line). Chessboard: ``cv2.findChessboardCornersSB`` (its ``CALIB_CB_ACCURACY`` refinement),
    all corners or none; the corners are then ordered by the board's colours and handedness,
    which the detector leaves ambiguous.

    Raises :class:`ViewRejected`: no board, blurred (sharpness below ``min_sharpness``), too few
    corners, corners on one line."""
    if min_corners < 4:
        raise ValueError(f"min_corners {min_corners}: a board's pose needs at least 4 corners")
    gray = _gray(image)
    if spec.kind == "charuco":
        ids, corners = _detect_charuco(gray, spec)
    else:
        ids, corners = _detect_chessboard(gray, spec)
    if len(ids) == 0:
        whole = sharpness(gray)
        hint = (
            f" (sharpness {whole:.0f} < {min_sharpness:.0f}: it may be blurred: hold still /"
            " more light)"
            if whole < min_sharpness
            else ""
        )
        what = "ChArUco board" if spec.kind == "charuco" else _chessboard_name(spec)
        raise ViewRejected(
            f"no {what} found{hint}: bring the whole board into view", reason="no_board"
        )
    object_points = spec.object_points()[ids]
    score = sharpness(gray, _board_box(corners, object_points, spec, gray.shape))
    if score < min_sharpness:
        raise ViewRejected(
            f"blurred (sharpness {score:.0f} < {min_sharpness:.0f}): hold still / more light",
            reason="blurred",
        )
    if len(ids) < min_corners:
        raise ViewRejected(
            f"only {len(ids)} of {spec.corner_count} corners found (at least {min_corners}"
            " needed): move the board fully into view",
            reason="too_few_corners",
        )
    if spec.kind == "charuco":
        if _charuco_board(spec).checkCharucoCornersCollinear(ids.astype(np.int32)):
            raise ViewRejected(
                f"the {len(ids)} corners found lie on one line: move the board fully into view",
                reason="collinear",
            )
        corners = _refine_charuco(gray, corners, object_points, spec)
    height, width = gray.shape
    return BoardView(
        ids=ids,
        corners=corners,
        object_points=object_points,
        image_size=(width, height),
        sharpness=score,
    )


def sharpness(gray: np.ndarray, box: tuple[int, int, int, int] | None = None) -> float:
    """How sharp ``gray`` (uint8) is within ``box`` (x, y, width, height; default all of it):
    the variance of the Laplacian after a 1 px Gaussian (so noise does not count), with the
    grey levels first stretched so the box's 5th and 95th percentiles span 0-255 (so a dim or
    low-contrast board scores as a bright one). Edges spread over ``s`` pixels score about
    ``1 / s**3``; more, smaller squares score higher."""
    if box is not None:
        x, y, w, h = box
        gray = gray[y : y + h, x : x + w]
    if gray.size < 16:
        return 0.0
    region = gray.astype(np.float64)
    low, high = np.percentile(region, [5.0, 95.0])
    if high - low < 1.0:
        return 0.0
    region = (region - low) * (255.0 / (high - low))
    region = cv2.GaussianBlur(region, (0, 0), SHARPNESS_SMOOTHING_PX)
    return float(cv2.Laplacian(region, cv2.CV_64F).var())


def board_pose(
    view: BoardView, intrinsics: CameraIntrinsics, max_obliquity_deg: float = 60.0
) -> BoardPose:
    """The board's pose in the camera's optical frame from one view: ``cv2.solvePnP`` with
    ``SOLVEPNP_IPPE`` (planar targets; it picks the better of the two planar solutions), refined
    by ``cv2.solvePnPRefineLM``. Lens distortion is that of ``intrinsics`` (the fisheye model
    for ``equidistant``).

    Raises :class:`ViewRejected` (``oblique``) past ``max_obliquity_deg``: corners on a steeply
    inclined board are foreshortened and their positions, hence the pose, less precise."""
    if tuple(view.image_size) != (intrinsics.width, intrinsics.height):
        raise ValueError(
            f"the view is {view.image_size[0]}x{view.image_size[1]} pixels, the intrinsics"
            f" {intrinsics.width}x{intrinsics.height}: calibrate the camera at this resolution"
        )
    k = intrinsics.k
    object_points = view.object_points.astype(np.float64)
    corners = view.corners.astype(np.float64).reshape(-1, 1, 2)
    fisheye = intrinsics.distortion_model == "equidistant"
    if fisheye:
        # Solve on ideal pinhole points; the residual below is measured on the real image.
        image_points = cv2.fisheye.undistortPoints(corners, k, intrinsics.dist_coeffs, P=k)
        distortion = np.zeros(0)
    else:
        image_points, distortion = corners, intrinsics.dist_coeffs
    ok, rvec, tvec = cv2.solvePnP(
        object_points, image_points, k, distortion, flags=cv2.SOLVEPNP_IPPE
    )
    if not ok:
        raise ViewRejected("no pose fits the corners: detect the board again", reason="no_board")
    rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, k, distortion, rvec, tvec)
    if fisheye:
        projected, _ = cv2.fisheye.projectPoints(
            object_points.reshape(-1, 1, 3), rvec, tvec, k, intrinsics.dist_coeffs
        )
    else:
        projected, _ = cv2.projectPoints(object_points, rvec, tvec, k, distortion)
    residual = projected.reshape(-1, 2) - view.corners
    rms = float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))

    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(rvec)[0]
    pose[:3, 3] = tvec.ravel()
    centre = pose[:3, :3] @ object_points.mean(axis=0) + pose[:3, 3]
    cosine = abs(float(pose[:3, 2] @ centre)) / float(np.linalg.norm(centre))
    obliquity = math.degrees(math.acos(min(1.0, cosine)))
    if obliquity > max_obliquity_deg:
        raise ViewRejected(
            f"too oblique ({obliquity:.0f} deg > {max_obliquity_deg:.0f} deg): face the board more",
            reason="oblique",
        )
    return BoardPose(camera_from_board=pose, reprojection_rms_px=rms, obliquity_deg=obliquity)


# -- internals ---------------------------------------------------------------------------------


@functools.cache
def known_dictionary(name: str) -> str:
    """``name`` if it is a ``cv2.aruco`` predefined dictionary; ValueError listing them."""
    if not name.startswith("DICT_") or not isinstance(getattr(cv2.aruco, name, None), int):
        known = sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_"))
        raise ValueError(f"unknown ArUco dictionary {name!r}: one of {', '.join(known)}")
    return name


def aruco_dictionary(name: str) -> cv2.aruco.Dictionary:
    """The ``cv2.aruco`` predefined dictionary ``name`` (boards' and markers')."""
    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))


@functools.cache
def _charuco_board(spec: BoardSpec) -> cv2.aruco.CharucoBoard:
    # OpenCV >= 4.6's layout (not the legacy one): the top-left square is black for any size.
    assert spec.marker_m is not None
    return cv2.aruco.CharucoBoard(
        (spec.squares_x, spec.squares_y),
        spec.square_m,
        spec.marker_m,
        aruco_dictionary(spec.dictionary),
    )


def _chessboard_name(spec: BoardSpec) -> str:
    columns, rows = spec.inner_corners
    return f"{columns}x{rows}-corner chessboard (the whole of it must be in view)"


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image is {image.dtype}: give uint8")
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    raise ValueError(f"image of shape {image.shape}: give (H, W, 3) RGB or (H, W) grey")


def _detect_charuco(gray: np.ndarray, spec: BoardSpec) -> tuple[np.ndarray, np.ndarray]:
    parameters = cv2.aruco.CharucoParameters()
    parameters.tryRefineMarkers = True
    detector = cv2.aruco.CharucoDetector(_charuco_board(spec), parameters)
    corners, ids, _, _ = detector.detectBoard(gray)
    if ids is None or len(ids) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2))
    ids = ids.ravel().astype(np.int64)
    order = np.argsort(ids)
    return ids[order], corners.reshape(-1, 2).astype(np.float64)[order]


def _detect_chessboard(gray: np.ndarray, spec: BoardSpec) -> tuple[np.ndarray, np.ndarray]:
    columns, rows = spec.inner_corners
    # Not CALIB_CB_NORMALIZE_IMAGE: its histogram equalisation costs accuracy (corners off by
    # up to a pixel on rendered boards).
    flags = cv2.CALIB_CB_ACCURACY | cv2.CALIB_CB_EXHAUSTIVE
    found, corners = cv2.findChessboardCornersSB(gray, (columns, rows), flags=flags)
    if not found or corners is None or len(corners) != columns * rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2))
    grid = corners.reshape(rows, columns, 2).astype(np.float64)
    # Handedness: seen from its face, the board's x cross y points away from the camera, as
    # the image's x (right) cross y (down) does; a mirrored order flips the columns.
    along_x = (grid[:, -1] - grid[:, 0]).mean(axis=0)
    along_y = (grid[-1] - grid[0]).mean(axis=0)
    if along_x[0] * along_y[1] - along_x[1] * along_y[0] < 0:
        grid = grid[:, ::-1]
    # Colour: square (column i, row j) is black when i + j is even; half a turn swaps the
    # colours of every square when squares_x + squares_y is odd.
    if _dark_squares_are_white(gray, grid, spec):
        grid = grid[::-1, ::-1]
    return np.arange(columns * rows), grid.reshape(-1, 2)


def _dark_squares_are_white(gray: np.ndarray, grid: np.ndarray, spec: BoardSpec) -> bool:
    """Whether the squares that should be black (between the inner corners) are lighter than
    those that should be white, sampled at their centres through the corners' homography."""
    homography, _ = cv2.findHomography(spec.object_points()[:, :2], grid.reshape(-1, 2))
    i, j = np.meshgrid(np.arange(1, spec.squares_x - 1), np.arange(1, spec.squares_y - 1))
    centres = np.stack([(i.ravel() + 0.5), (j.ravel() + 0.5)], axis=1) * spec.square_m
    pixels = cv2.perspectiveTransform(centres.reshape(-1, 1, 2), homography).reshape(-1, 2)
    height, width = gray.shape
    x = np.clip(np.rint(pixels[:, 0]).astype(int), 0, width - 1)
    y = np.clip(np.rint(pixels[:, 1]).astype(int), 0, height - 1)
    values = gray[y, x].astype(np.float64)
    black = (i.ravel() + j.ravel()) % 2 == 0
    return bool(values[black].mean() > values[~black].mean())


def _board_box(
    corners: np.ndarray, object_points: np.ndarray, spec: BoardSpec, shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """The corners' bounding box grown by a square's size in pixels on each side (to take in
    the edges around the outermost corners), clipped to the image."""
    if len(corners) >= 2:
        pixels = np.linalg.norm(corners[:, None] - corners[None], axis=2)
        metres = np.linalg.norm(object_points[:, None, :2] - object_points[None, :, :2], axis=2)
        near = metres > 0
        pad = float(np.median(pixels[near] / metres[near])) * spec.square_m
    else:
        pad = 20.0
    height, width = shape[:2]
    x0 = max(0, math.floor(corners[:, 0].min() - pad))
    y0 = max(0, math.floor(corners[:, 1].min() - pad))
    x1 = min(width, math.ceil(corners[:, 0].max() + pad) + 1)
    y1 = min(height, math.ceil(corners[:, 1].max() + pad) + 1)
    return x0, y0, x1 - x0, y1 - y0


def _refine_charuco(
    gray: np.ndarray, corners: np.ndarray, object_points: np.ndarray, spec: BoardSpec
) -> np.ndarray:
    """``cv2.cornerSubPix`` on each corner, its window as large as the white gap between the
    corner and the nearest marker allows (measured in the image, along the board's most
    foreshortened direction), between 2 and 10 pixels half-width."""
    assert spec.marker_m is not None
    homography, _ = cv2.findHomography(object_points[:, :2], corners)
    if homography is None:
        return corners
    gap_m = (spec.square_m - spec.marker_m) / 2.0
    half = np.array([_half_window(homography, p, gap_m) for p in object_points[:, :2]])
    refined = corners.copy()
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 100, 1e-3)
    for size in np.unique(half):
        chosen = half == size
        points = corners[chosen].astype(np.float32).reshape(-1, 1, 2)
        window = (int(size), int(size))
        points = cv2.cornerSubPix(gray, points, window, (-1, -1), criteria)
        refined[chosen] = points.reshape(-1, 2)
    return refined


def _half_window(homography: np.ndarray, point: np.ndarray, gap_m: float) -> int:
    """Half the cornerSubPix window at board ``point``: 0.8 of the gap's smallest image size."""
    h = homography
    x, y = point
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    u = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
    v = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
    jacobian = np.array(
        [
            [(h[0, 0] - u * h[2, 0]) / w, (h[0, 1] - u * h[2, 1]) / w],
            [(h[1, 0] - v * h[2, 0]) / w, (h[1, 1] - v * h[2, 1]) / w],
        ]
    )
    smallest = float(np.linalg.svd(jacobian, compute_uv=False)[-1])
    return int(np.clip(math.floor(0.8 * smallest * gap_m), 2, 10))


#: The board the project's simulation shows and its docs print: 9 x 7 squares of 30 mm with
#: 22 mm markers (27 x 21 cm, fits A4).
STANDARD_BOARD = BoardSpec(kind="charuco", squares_x=9, squares_y=7, square_m=0.03, marker_m=0.022)
