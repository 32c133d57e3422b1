"""Hand-eye solvers on synthetic captures (no images): exact, noisy, degenerate, with an outlier.

The ground truth and the robot poses come from :mod:`bench.handeye` (the benchmark's
generator): a wrist camera 8 cm off the flange axis looking at a board on the table
(eye_in_hand), or a fixed camera in front of the robot looking at a board on the tool
(eye_to_base); views tilted up to 30 deg and rolled up to ±60 deg, the tool 0.4-0.85 m from the
base pointing down within ~40 deg (eye_in_hand). Each ``camera_from_board`` is exact (from the
chain) unless noise is asked for.

What is true, and asserted: noise-free, every method (the numpy implementations; OpenCV 4.x's
too, where the wheel binds them) recovers X to ~1e-12 m, so 1e-6 mm / 1e-6 deg holds with a wide
margin. With noise, andreff and li are far less accurate in translation (they solve rotation and
translation in one linear system and orthonormalise the rotation afterwards without re-solving
the translation: 3-20 mm at 20 poses in bench.handeye), so the accuracy bound is asserted for
park, daniilidis and shah, the methods worth using.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.handeye import errors, rotation, scene, simulate, translation
from calibration.handeye import (
    METHODS,
    Capture,
    HandEyeError,
    Mode,
    guidance,
    pose_diversity,
    resolve_backend,
    solve,
)

MODES: tuple[Mode, ...] = ("eye_in_hand", "eye_to_base")


def _from_robot_poses(mode: Mode, base_from_tool0: list[np.ndarray]) -> list[Capture]:
    """Exact captures at the given flange poses: ``B_i = inv(X) @ inv(A_i) @ C``."""
    truth = scene(mode)
    captures = []
    for pose in base_from_tool0:
        a = pose if mode == "eye_in_hand" else np.linalg.inv(pose)
        board = np.linalg.inv(truth.x_true) @ np.linalg.inv(a) @ truth.board_true
        captures.append(Capture(pose, board))
    return captures


def _start(mode: Mode) -> np.ndarray:
    return simulate(scene(mode), 1, np.random.default_rng(0))[0].base_from_tool0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_noise_free_every_method_recovers_x(mode: Mode, method: str) -> None:
    truth = scene(mode)
    captures = simulate(truth, 12, np.random.default_rng(1))
    result = solve(captures, mode, method)  # type: ignore[arg-type]
    t_mm, r_deg = errors(result.transform, truth.x_true)
    assert t_mm < 1e-6 and r_deg < 1e-6, (t_mm, r_deg)
    t_mm, r_deg = errors(result.board_transform, truth.board_true)
    assert t_mm < 1e-6 and r_deg < 1e-6, (t_mm, r_deg)
    assert result.used == tuple(range(12)) and result.rejected == ()
    assert result.mode == mode and result.method == method


@pytest.mark.parametrize("method", ["park", "daniilidis", "shah"])
@pytest.mark.parametrize("mode", MODES)
def test_noisy_20_poses_within_2mm_and_0_2deg(mode: Mode, method: str) -> None:
    """0.1 mm / 0.01 deg per axis on the flange pose, 0.2 mm / 0.02 deg per axis on the board
    pose (about what 0.5 px corner noise gives at 0.3-0.5 m; bench.handeye simulates the
    pixels themselves)."""
    truth = scene(mode)
    for seed in range(5):
        captures = simulate(
            truth, 20, np.random.default_rng(seed), robot_noise=(0.1, 0.01), board_noise=(0.2, 0.02)
        )
        result = solve(captures, mode, method, reject_outliers=False)  # type: ignore[arg-type]
        t_mm, r_deg = errors(result.transform, truth.x_true)
        assert t_mm < 2.0 and r_deg < 0.2, (seed, t_mm, r_deg)


def test_two_captures_raise_with_the_hint() -> None:
    captures = simulate(scene("eye_in_hand"), 2, np.random.default_rng(0))
    with pytest.raises(HandEyeError, match="capture at least 3 poses; 10-20 with varied"):
        solve(captures, "eye_in_hand")


@pytest.mark.parametrize("mode", MODES)
def test_rotations_about_the_tool_z_axis_only_raise_with_the_hint(mode: Mode) -> None:
    start = _start(mode)
    poses = [
        start @ translation(0.01 * k, -0.005 * k, 0.0) @ rotation("z", angle)
        for k, angle in enumerate((-60, -35, -10, 15, 40, 65))
    ]
    captures = _from_robot_poses(mode, poses)
    with pytest.raises(HandEyeError, match=r"all rotations are about \(.*\) of the tool") as info:
        solve(captures, mode)
    assert "about its z axis" in str(info.value)
    assert "tilt the tool about another axis (its x or y axis" in str(info.value)

    diversity = pose_diversity(captures)
    assert diversity.axis_spread_deg[0] < 1e-6 and diversity.axis_spread_deg[1] < 1e-6
    assert diversity.axis_spread_deg[2] > 30
    assert np.allclose(np.abs(diversity.dominant_axis), (0, 0, 1))
    hints = guidance(captures)
    assert any("rotate about the tool's x axis by ±20 deg" in h for h in hints)
    assert any("rotate about the tool's y axis by ±20 deg" in h for h in hints)
    assert not any("tool's z axis" in h for h in hints)


def test_tiny_rotations_raise_with_the_hint() -> None:
    rng = np.random.default_rng(2)
    start = _start("eye_in_hand")
    poses = [
        start @ translation(*rng.uniform(-0.05, 0.05, 3)) @ rotation(rng.normal(size=3), 1.5)
        for _ in range(8)
    ]
    with pytest.raises(HandEyeError, match="rotate more between poses"):
        solve(_from_robot_poses("eye_in_hand", poses), "eye_in_hand")


@pytest.mark.parametrize("method", ["park", "shah", "tsai"])
@pytest.mark.parametrize("mode", MODES)
def test_an_outlier_capture_is_rejected_and_named(mode: Mode, method: str) -> None:
    truth = scene(mode)
    captures = simulate(
        truth, 15, np.random.default_rng(3), robot_noise=(0.1, 0.01), board_noise=(0.2, 0.02)
    )
    bad = captures[6].camera_from_board.copy()
    bad[:3, 3] += np.array([0.012, -0.016, 0.0])  # 2 cm off
    captures[6] = Capture(captures[6].base_from_tool0, bad)

    kept = solve(captures, mode, method, reject_outliers=False)  # type: ignore[arg-type]
    assert kept.rejected == ()
    assert int(np.argmax([r.translation_mm for r in kept.residuals])) == 6

    result = solve(captures, mode, method)  # type: ignore[arg-type]
    assert result.rejected == (6,)
    assert 6 not in result.used and len(result.used) == 14
    assert result.residuals[6].translation_mm > 15 and not result.residuals[6].used
    assert "rejected" in result.report()
    t_mm, r_deg = errors(result.transform, truth.x_true)
    assert t_mm < 2.0 and r_deg < 0.2
    assert t_mm < errors(kept.transform, truth.x_true)[0]


def test_clean_noisy_data_loses_no_capture() -> None:
    truth = scene("eye_in_hand")
    captures = simulate(
        truth, 20, np.random.default_rng(4), robot_noise=(0.1, 0.01), board_noise=(0.2, 0.02)
    )
    assert solve(captures, "eye_in_hand").rejected == ()


@pytest.mark.parametrize("mode", MODES)
def test_residuals_of_a_perfect_data_set_are_zero(mode: Mode) -> None:
    captures = simulate(scene(mode), 10, np.random.default_rng(5))
    result = solve(captures, mode, "park")
    assert len(result.residuals) == 10
    assert np.max(result.residual_translation_mm) < 1e-6
    assert np.max(result.residual_rotation_deg) < 1e-6
    assert len(result.pair_residuals) == 9
    assert [(p.i, p.j) for p in result.pair_residuals] == [(k, k + 1) for k in range(9)]
    assert max(p.translation_mm for p in result.pair_residuals) < 1e-6
    assert max(p.rotation_deg for p in result.pair_residuals) < 1e-6
    report = result.report()
    x_name = "tool0_from_camera" if mode == "eye_in_hand" else "base_from_camera"
    assert f"{mode}, method park" in report and x_name in report
    assert "translation median 0.00 mm, max 0.00 mm" in report
    assert "10 of 10 captures used" in report


def test_result_frames_se3_and_named_transforms() -> None:
    truth = scene("eye_to_base")
    result = solve(simulate(truth, 10, np.random.default_rng(6)), "eye_to_base", "daniilidis")
    assert np.allclose(result.se3.A, result.transform, atol=1e-9)
    assert np.allclose(result.base_from_camera, truth.x_true, atol=1e-9)
    assert np.allclose(result.tool0_from_board, truth.board_true, atol=1e-9)
    with pytest.raises(ValueError, match="tool0_from_camera is a eye_in_hand result"):
        _ = result.tool0_from_camera
    with pytest.raises(ValueError, match="base_from_board"):
        _ = result.base_from_board


def test_diverse_poses_need_no_guidance_and_few_poses_do() -> None:
    captures = simulate(scene("eye_in_hand"), 20, np.random.default_rng(7))
    assert guidance(captures) == []
    diversity = pose_diversity(captures)
    assert diversity.captures == 20 and diversity.pairs == 190
    assert min(diversity.axis_spread_deg) > 8 and diversity.principal_spread_deg[1] > 8
    assert guidance(captures[:6]) == ["add 4 or more poses: 10-20 is typical"]
    assert "capture at least 3 poses" in guidance(captures[:1])[0]


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="base_from_tool0 is not a rigid transform"):
        Capture(np.diag([1.0, 2.0, 1.0, 1.0]), np.eye(4))
    with pytest.raises(ValueError, match="camera_from_board must be a finite 4x4"):
        Capture(np.eye(4), np.eye(3))
    captures = simulate(scene("eye_in_hand"), 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="method must be one of"):
        solve(captures, "eye_in_hand", "kabsch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be one of"):
        solve(captures, "eye_on_hand")  # type: ignore[arg-type]


def test_backend_choice() -> None:
    assert resolve_backend("park", "numpy") == "numpy"
    assert resolve_backend("daniilidis") == "numpy"  # OpenCV's root choice can fail outright
    import cv2

    if hasattr(cv2, "calibrateHandEye"):
        assert resolve_backend("park") == "opencv"
    else:  # opencv-python 5.0.0.93 builds the solvers but does not bind them (opencv#29565)
        assert resolve_backend("park") == "numpy"
        with pytest.raises(ValueError, match=r"cv2\.calibrateHandEye is not available"):
            resolve_backend("park", "opencv")


def test_daniilidis_picks_the_real_root() -> None:
    """A data set (bench.handeye's 6th eye_to_base trial) where the first null vector is nearly
    pure dual: OpenCV's root choice returns X kilometres off, rotated 180 deg."""
    truth = scene("eye_to_base")
    captures = simulate(
        truth,
        20,
        np.random.default_rng(3439874040),
        pixel_noise_px=0.5,
        robot_noise=(0.1, 0.01),
    )
    result = solve(captures, "eye_to_base", "daniilidis", False, backend="numpy")
    t_mm, r_deg = errors(result.transform, truth.x_true)
    assert t_mm < 5.0 and r_deg < 0.5, (t_mm, r_deg)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_numpy_matches_opencv_where_opencv_binds_the_solvers(mode: Mode, method: str) -> None:
    """The same equations: identical noise-free; under noise, within 1e-6 mm except tsai, whose
    OpenCV least squares differ slightly (0.01-0.2 mm at 20 poses, measured with 4.12), and
    daniilidis where OpenCV's root choice fails (not on this data set)."""
    import cv2

    name = "calibrateRobotWorldHandEye" if method in ("shah", "li") else "calibrateHandEye"
    if not hasattr(cv2, name):
        pytest.skip(f"OpenCV {cv2.__version__} does not bind cv2.{name}")
    truth = scene(mode)
    captures = simulate(
        truth, 20, np.random.default_rng(8), robot_noise=(0.1, 0.01), pixel_noise_px=0.5
    )
    ours = solve(captures, mode, method, False, backend="numpy")  # type: ignore[arg-type]
    theirs = solve(captures, mode, method, False, backend="opencv")  # type: ignore[arg-type]
    assert theirs.backend == "opencv" and ours.backend == "numpy"
    t_mm, r_deg = errors(ours.transform, theirs.transform)
    limit = (0.5, 0.05) if method == "tsai" else (1e-6, 1e-6)
    assert t_mm < limit[0] and r_deg < limit[1], (t_mm, r_deg)
