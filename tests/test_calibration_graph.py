"""``prt-calibrate`` on the simulated graph: the arm shows the board to the front camera through
the executor, the node captures, solves and writes the calibration, which matches the
simulated camera's true pose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("cv2")

from calibration.result import CameraCalibration
from tests.ros_graph import ROOT, NodeProcess

pytestmark = [pytest.mark.ros, pytest.mark.slow]

POSES = 12
#: Fewer poses than the offline ground-truth test (40), so a looser bound than its 2 mm / 0.2 deg.
MAX_TRANSLATION_MM = 3.0
MAX_ROTATION_DEG = 0.3


def true_base_from_front() -> np.ndarray:
    from sim_bridge import gl

    gl.configure_headless_rendering()
    from sim_bridge.cell import Ur5Cell

    cell = Ur5Cell()
    try:
        return np.linalg.inv(cell.body_pose("base_link")) @ cell.camera_pose("front")
    finally:
        cell.close()


def test_eye_to_base_through_the_sim_graph(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "calibrate_sim_eye_to_base.yaml").read_text())
    config["poses"] = POSES
    config["max_joint_speed_rad_s"] = 0.5
    config_path = tmp_path / "calibrate.yaml"
    config_path.write_text(yaml.safe_dump(config))
    output = tmp_path / "front.yaml"
    nodes = [
        NodeProcess(
            "prt-sim-bridge",
            {"cameras": "[front]", "depth": False, "calibration_board": "tool"},
            tmp_path,
        ),
        NodeProcess("prt-executor", {}, tmp_path),
    ]
    calibrate = NodeProcess("prt-calibrate", {"config": config_path, "output": output}, tmp_path)
    try:
        code = calibrate.process.wait(timeout=240)
    except BaseException:
        print(calibrate.output()[-4000:])
        raise
    finally:
        calibrate.stop()
        for node in nodes:
            node.stop()
    print(calibrate.output()[-3000:])
    assert code == 0, calibrate.output()[-3000:]
    result = CameraCalibration.load(output)
    delta = np.linalg.inv(true_base_from_front()) @ result.parent_from_optical
    translation_mm = np.linalg.norm(delta[:3, 3]) * 1e3
    rotation_deg = np.degrees(np.arccos(np.clip((np.trace(delta[:3, :3]) - 1) / 2, -1, 1)))
    print(f"through the graph: {translation_mm:.2f} mm, {rotation_deg:.3f} deg off the truth")
    assert result.parent_frame == "base_link" and result.captures >= POSES - 2
    assert translation_mm <= MAX_TRANSLATION_MM and rotation_deg <= MAX_ROTATION_DEG
