"""Tracking an object by its markers frame after frame (:class:`calibration.tracking.
MarkerTracker`): the estimate, each way a frame is lost (counted, named, never raised), and what
a lost frame does to an evaluation episode (stale: no chunk asked for, the stack holds)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cv2")

from calibration.markers import ObjectModel
from calibration.result import CameraCalibration
from calibration.tracker_settings import TrackerSettings
from calibration.tracking import MarkerTracker, load_object_model
from tests.test_calibration_board import CAMERA, HEIGHT, WIDTH
from tests.test_markers import MARKER, look_at, render, rotation

#: A 10 x 6 cm plate with MARKER 2 cm off its centre, lying on a table at base_link z = 0.02,
#: seen from 0.45 m above the table at ~45 degrees (test_markers' object).
MODEL = ObjectModel.from_arrays(
    [(MARKER, np.array([[1, 0, 0, 0.02], [0, 1, 0, 0.0], [0, 0, 1, 0.005], [0, 0, 0, 1.0]]))],
    np.array([[-0.05, -0.03], [0.05, -0.03], [0.05, 0.03], [-0.05, 0.03]]),
    rest_height_m=0.005,
)
BASE_FROM_CAMERA = look_at((0.0, -0.1, 0.47), (0.43, 0.05, 0.02))
TABLE_Z_M = 0.02


def view(x: float, y: float, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """The camera's image of the object at (x, y, yaw) on the table, and its true keypoints."""
    base_from_object = np.eye(4)
    base_from_object[:3, :3] = rotation(0.0, 0.0, yaw)
    base_from_object[:3, 3] = (x, y, TABLE_Z_M + 0.005)
    camera_from_marker = (
        np.linalg.inv(BASE_FROM_CAMERA)
        @ base_from_object
        @ MODEL.markers[0].object_from_marker_matrix()
    )
    c, s = math.cos(yaw), math.sin(yaw)
    truth = MODEL.keypoints() @ np.array([[c, s], [-s, c]]) + (x, y)
    return render(MARKER, camera_from_marker), truth


def tracker(**settings: Any) -> MarkerTracker:
    return MarkerTracker(
        MODEL, CAMERA, BASE_FROM_CAMERA, TrackerSettings(table_z_m=TABLE_Z_M, **settings)
    )


def test_each_frame_gives_the_keypoints_or_is_lost_by_reason() -> None:
    tracking = tracker()
    image, truth = view(0.43, 0.05, 2.2)
    estimate = tracking.estimate(image)
    assert estimate is not None
    np.testing.assert_allclose(estimate.keypoints, truth, atol=1e-3)
    assert 0.0 < estimate.confidence <= 1.0 and estimate.processing_s > 0.0
    assert tracking.last_problem == ""

    blank = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    assert tracking.estimate(blank) is None
    assert tracking.last_problem.startswith("not_visible: marker 7")
    assert tracking.estimate(blank[:240]) is None  # another camera's size
    assert tracking.last_problem.startswith("bad_image: the image is 640x240 pixels")
    assert tracking.estimate(np.zeros((HEIGHT, WIDTH, 4), np.uint8)) is None  # RGBA
    assert tracking.lost == {
        "not_visible": 1,
        "low_confidence": 0,
        "off_table": 0,
        "bad_image": 2,
    }
    assert tracking.tracked == 1
    # Back in view: tracked again, the problem cleared.
    assert tracking.estimate(image) is not None and tracking.last_problem == ""


def test_an_estimate_off_the_table_or_unsure_is_lost() -> None:
    image, _ = view(0.43, 0.05, 2.2)
    # The table 2 cm higher than it is: no pose on it fits the corners (0.5-1 px off).
    lifted = MarkerTracker(
        MODEL,
        CAMERA,
        BASE_FROM_CAMERA,
        TrackerSettings(table_z_m=TABLE_Z_M + 0.02, max_reprojection_px=0.3),
    )
    assert lifted.estimate(image) is None and lifted.lost["off_table"] == 1
    assert "lifted, tipped over" in lifted.last_problem
    unsure = tracker(min_confidence=0.999)
    assert unsure.estimate(image) is None and unsure.lost["low_confidence"] == 1
    assert unsure.last_problem.startswith("low_confidence: confidence 0.")


def test_trackers_are_built_from_a_fixed_cameras_calibration(tmp_path: Path) -> None:
    def calibration(mode: str) -> CameraCalibration:
        return CameraCalibration.from_transform(
            "front", BASE_FROM_CAMERA, CAMERA, "park", mode, 10, np.zeros(10), np.zeros(10)
        )

    built = MarkerTracker.from_calibration(MODEL, calibration("eye_to_base"))
    np.testing.assert_allclose(built.base_from_camera, BASE_FROM_CAMERA, atol=1e-12)
    with pytest.raises(ValueError, match="calibrated in tool0: track objects with a camera fixed"):
        MarkerTracker.from_calibration(MODEL, calibration("eye_in_hand"))
    with pytest.raises(ValueError, match="no rest_height_m"):
        MarkerTracker(MODEL.model_copy(update={"rest_height_m": None}), CAMERA, BASE_FROM_CAMERA)


def test_the_push_t_object_file_is_the_simulated_blocks_model() -> None:
    """``config/push_t_block_markers.yaml`` (what a real cell prints and tracks) is the block
    the simulation draws and the evaluation tracks."""
    from sim_bridge.tasks.push_t import marker_model

    path = Path(__file__).resolve().parents[1] / "config" / "push_t_block_markers.yaml"
    model = load_object_model(path)
    expected = marker_model()
    assert [p.marker for p in model.markers] == [p.marker for p in expected.markers]
    for ours, theirs in zip(model.markers, expected.markers, strict=True):
        np.testing.assert_allclose(ours.object_from_marker, theirs.object_from_marker, atol=1e-9)
    np.testing.assert_allclose(model.keypoints(), expected.keypoints(), atol=1e-9)
    assert model.rest_height_m == pytest.approx(expected.rest_height_m)


# -- a lost observation in an evaluation episode ---------------------------------------------


def test_a_lost_observation_asks_for_no_chunk_and_the_stack_holds() -> None:
    from policy_runtime.evaluation import run_policy_episode
    from policy_runtime.execution import ExecutorConfig
    from sim_bridge.env import make_env

    env = make_env("pick_place", cameras=())
    executor = ExecutorConfig()
    calls: list[int] = []

    def hold(window: dict[str, np.ndarray]) -> np.ndarray:
        calls.append(env.steps)
        return np.repeat(env.last_action_ee[None], 10, axis=0)

    def perception(env: Any, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        return None if 10 <= env.steps < 20 else obs  # the object hidden for 1 s

    try:
        result = run_policy_episode(
            env,
            hold,
            seed=3,
            n_obs_steps=2,
            n_action_steps=8,
            keys=("joint_pos",),
            max_steps=40,
            execution=executor.execution_for("ee", mode="replace"),
            executor=executor,
            perception=perception,
        )
    finally:
        env.close()
    assert result.observations_lost == 10
    assert not [step for step in calls if 10 <= step < 20], calls
    assert any(step >= 20 for step in calls)  # asked again once the object is back
    # The watchdog's 0.25 s of observations passed: the stack held for the rest of the second.
    assert result.holds.get("observation_stale", 0) > 0
    with pytest.raises(ValueError, match="perception needs the engine"):
        run_policy_episode(
            env, hold, seed=3, n_obs_steps=2, n_action_steps=8, keys=(), perception=perception
        )
