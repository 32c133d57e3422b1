"""Calibration against simulation ground truth: a ChArUco board rendered by MuJoCo from the
cell's cameras at generated robot poses, detected, and solved; the answers compared with the
simulated camera's true pose and intrinsics (which the pipeline never reads)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from calibration.board import STANDARD_BOARD, ViewRejected, board_pose, detect
from calibration.handeye import Capture, solve
from calibration.intrinsics import CameraIntrinsics, estimate_intrinsics
from calibration.poses import generate_poses
from calibration.result import CameraCalibration
from policy_runtime.robots.poses import matrix_from_quaternion

pytestmark = pytest.mark.slow

BOARD = STANDARD_BOARD
#: The Done-when limits.
MAX_TRANSLATION_MM = 2.0
MAX_ROTATION_DEG = 0.2
N_POSES = 40


def board_png() -> bytes:
    return BOARD.png()


def pose_error(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(translation mm, rotation deg) between two poses."""
    delta = np.linalg.inv(truth) @ estimate
    angle = np.degrees(np.arccos(np.clip((np.trace(delta[:3, :3]) - 1) / 2, -1.0, 1.0)))
    return float(np.linalg.norm(delta[:3, 3]) * 1e3), float(angle)


@pytest.fixture(scope="module", params=["eye_in_hand", "eye_to_base"])
def calibration_run(request: pytest.FixtureRequest):
    """Renders, detects and solves one mode; yields what the tests compare."""
    from sim_bridge import gl

    gl.configure_headless_rendering()
    from sim_bridge.calibration_cell import CalibrationCell

    mode = request.param
    cell = CalibrationCell(mode, board_png(), BOARD.size_m)
    truth = cell.truth()
    # The poses are aimed with a nominal mount 2 cm / a few degrees off the truth, as a drawing
    # would give it: the solve must not depend on it.
    nominal = truth.copy()
    nominal[:3, 3] += 0.02
    if mode == "eye_in_hand":
        centre = (cell.base_from_board() @ np.array([*np.array(BOARD.size_m) / 2, 0, 1]))[:3]
        poses = generate_poses(mode, N_POSES, centre, tool0_from_camera=nominal, seed=1)
    else:
        poses = generate_poses(
            mode,
            N_POSES,
            np.array([0.62, 0.0, 0.35]),
            base_from_camera=nominal,
            tool0_from_board=cell.parent_from_board,
            board_size_m=BOARD.size_m,
            seed=1,
        )
    views, robot = [], []
    for pose in poses:
        try:
            views.append(detect(cell.view(pose.q), BOARD))
        except ViewRejected:
            continue
        robot.append(pose.base_from_tool0)
    estimate = estimate_intrinsics(views, (640, 480))
    captures = [
        Capture(tool, board_pose(view, estimate.intrinsics).camera_from_board)
        for tool, view in zip(robot, views, strict=True)
    ]
    result = solve(captures, mode, method="park")
    yield {
        "mode": mode,
        "cell": cell,
        "truth": truth,
        "true_k": cell.intrinsics(),
        "intrinsics": estimate.intrinsics,
        "result": result,
        "views": len(views),
        "poses": poses,
    }
    cell.close()


def test_recovers_the_simulated_camera_pose(calibration_run) -> None:
    run = calibration_run
    assert run["views"] >= 20
    translation_mm, rotation_deg = pose_error(run["result"].transform, run["truth"])
    print(f"{run['mode']}: {translation_mm:.3f} mm, {rotation_deg:.4f} deg off the truth")
    assert translation_mm <= MAX_TRANSLATION_MM
    assert rotation_deg <= MAX_ROTATION_DEG


def test_recovers_the_simulated_intrinsics(calibration_run) -> None:
    k, estimate = calibration_run["true_k"], calibration_run["intrinsics"]
    for got, want in ((estimate.fx, k[0, 0]), (estimate.fy, k[1, 1])):
        assert abs(got - want) / want < 0.01
    # The principal point within 1% of the focal length (its scale).
    assert abs(estimate.cx - k[0, 2]) < 0.01 * k[0, 0]
    assert abs(estimate.cy - k[1, 2]) < 0.01 * k[1, 1]


def test_a_sim_camera_placed_from_the_calibration_sees_the_same_corners(
    calibration_run, tmp_path
) -> None:
    """The calibration written as YAML and read back places the sim's camera; it renders the
    board's corners where the true camera does, to within 1 px."""
    from sim_bridge.calibration_cell import CalibrationCell

    run = calibration_run
    result = run["result"]
    calibration = CameraCalibration.from_transform(
        run["cell"].camera,
        result.transform,
        CameraIntrinsics.from_matrix(run["true_k"], 640, 480),
        result.method,
        run["mode"],
        len(result.used),
        result.residual_translation_mm,
        result.residual_rotation_deg,
    )
    path = tmp_path / "camera.yaml"
    calibration.save(path)
    loaded = CameraCalibration.load(path)
    placed = run["cell"].placed(loaded.parent_from_optical)
    twin = CalibrationCell(run["mode"], board_png(), BOARD.size_m, placed)
    q = run["poses"][0].q
    true_view = detect(run["cell"].view(q), BOARD)
    placed_view = detect(twin.view(q), BOARD)
    twin.close()
    common, a, b = np.intersect1d(true_view.ids, placed_view.ids, return_indices=True)
    assert len(common) >= 20
    offsets = np.linalg.norm(true_view.corners[a] - placed_view.corners[b], axis=1)
    print(f"{run['mode']}: corners {offsets.max():.3f} px apart at most")
    assert offsets.max() <= 1.0
    assert np.allclose(matrix_from_quaternion(np.array(loaded.rotation_xyzw)),
                       result.transform[:3, :3], atol=1e-9)  # fmt: skip
