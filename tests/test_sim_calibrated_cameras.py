"""The simulator's cameras placed and focused from calibration files, as the real cell's are:
in the cell (``make_env(camera_specs=...)``) and through the sim bridge's
``camera_calibrations`` parameter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.intrinsics import CameraIntrinsics
from calibration.result import CameraCalibration
from sim_bridge.cameras import placed_cameras
from sim_bridge.cell import CellOptions

#: A front camera somewhere else than the sim's default, looking down at the table.
FRONT = np.array(
    [[0.0, -1.0, 0.0, 0.9], [-1.0, 0.0, 0.0, 0.1], [0.0, 0.0, -1.0, 0.8], [0.0, 0.0, 0.0, 1.0]]
)


def calibration_file(tmp_path: Path, camera: str = "front", mode: str = "eye_to_base") -> Path:
    intrinsics = CameraIntrinsics(width=640, height=480, fx=600.0, fy=600.0, cx=319.5, cy=239.5)
    calibration = CameraCalibration.from_transform(
        camera,
        FRONT,
        intrinsics,
        "park",
        mode,
        20,
        np.array([0.3]),
        np.array([0.02]),  # type: ignore[arg-type]
    )
    path = tmp_path / f"{camera}.yaml"
    calibration.save(path)
    return path


def test_a_calibration_places_and_focuses_the_sim_camera(tmp_path: Path) -> None:
    from sim_bridge import gl

    gl.configure_headless_rendering()
    from sim_bridge.env import make_env

    calibration = CameraCalibration.load(calibration_file(tmp_path))
    cameras = placed_cameras(CellOptions().cameras, {"front": calibration.sim_placement()})
    env = make_env("push_t", cameras=(), camera_specs=cameras)
    try:
        cell = env.cell
        base = cell.body_pose("base_link")
        np.testing.assert_allclose(
            np.linalg.inv(base) @ cell.camera_pose("front"), FRONT, atol=1e-9
        )
        # fy = (h / 2) / tan(fovy / 2): the calibrated focal length at the calibrated size.
        np.testing.assert_allclose(cell.camera_intrinsics("front", 640, 480)[1, 1], 600.0)
    finally:
        env.close()


def test_a_calibration_of_another_frame_or_camera_is_refused(tmp_path: Path) -> None:
    wrong_parent = CameraCalibration.load(calibration_file(tmp_path, "front", "eye_in_hand"))
    with pytest.raises(ValueError, match="calibrated in tool0"):
        placed_cameras(CellOptions().cameras, {"front": wrong_parent.sim_placement()})
    with pytest.raises(ValueError, match="no sim camera 'top'"):
        placed_cameras(CellOptions().cameras, {"top": wrong_parent.sim_placement()})


@pytest.mark.ros
def test_the_bridge_publishes_the_calibrated_camera(tmp_path: Path) -> None:
    from sensor_msgs.msg import CameraInfo

    from policy_runtime.ros import qos
    from tests.ros_graph import NodeProcess, Watcher, wait_for

    path = calibration_file(tmp_path)
    bridge = NodeProcess(
        "prt-sim-bridge",
        {"cameras": "[front]", "depth": False, "camera_calibrations": f"['{path}']"},
        tmp_path,
    )
    watcher = Watcher()
    try:
        watcher.keep("/camera/front/color/camera_info", CameraInfo, qos.SENSOR, key="info")
        wait_for(lambda: bool(watcher.received("info")), 30.0, "camera_info")
        k = watcher.received("info")[-1].k
        assert k[0] == pytest.approx(600.0) and k[4] == pytest.approx(600.0)
    finally:
        watcher.close()
        bridge.stop()
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    refused = NodeProcess(
        "prt-sim-bridge",
        {"cameras": "[]", "camera_calibrations": f"['{calibration_file(wrong, 'wrist')}']"},
        tmp_path,
    )
    assert refused.process.wait(timeout=30) == 2
    assert "calibrated in base_link" in refused.output()
