"""The deployment YAML: the shipped example loads, the robot type sets the controller rate,
every wrong key or value is refused with its path in the file, and it yields the server's
observation mapping and the arm's TCP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from policy_runtime.deployment.config import DeploymentConfig
from policy_runtime.inference import load_policy
from policy_runtime.robots.ur5 import forward_kinematics

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "deploy_ur5.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _minimal(**changes: object) -> dict:
    return {
        "robot": {"type": "ur5"},
        "bundle": str(ROOT / "bundles" / "push_t_drifting"),
        **changes,
    }


def test_the_shipped_deployment_loads_and_maps_every_key_of_its_bundle():
    cell = DeploymentConfig.load(EXAMPLE)
    assert cell.bundle == (ROOT / "bundles" / "push_t_drifting").resolve()
    assert cell.executor.loop.controller_hz == 125.0
    assert cell.executor.limits.velocity_fraction == 0.25
    runtime = load_policy(cell.bundle)
    sources = cell.server_config().for_policy(runtime.specs)
    assert set(sources) == {k.key for k in runtime.specs.obs.keys}


def test_the_robot_type_sets_the_controller_rate_and_a_contradiction_is_refused(tmp_path):
    e_series = DeploymentConfig.load(_write(tmp_path, _minimal(robot={"type": "ur5e"})))
    assert e_series.executor.loop.controller_hz == 500.0
    assert e_series.executor.loop.period_s == pytest.approx(0.002)
    bad = _minimal(robot={"type": "ur5e"}, executor={"loop": {"controller_hz": 125}})
    with pytest.raises(ValueError, match=r"controller_hz is 125 but robot.type ur5e runs a 500"):
        DeploymentConfig.load(_write(tmp_path, bad))


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"robot": {"type": "ur10"}}, "robot.type"),
        ({"robot": {"type": "ur5", "tcp": [0, 0, 1]}}, "robot.tcp"),
        ({"executor": {"limits": {"velocity_fraction": 2.0}}}, "executor.limits.velocity_fraction"),
        ({"executor": {"limit": {}}}, "executor.limit"),
        ({"cameras": {"front": {"serial": "1", "fps": -5}}}, "cameras.front.fps"),
        ({"cameras": {"front": {"exposure": 100}}}, "cameras.front.exposure"),
        (
            {"observations": {"ee_pose": {"topic": "/x", "type": "twist"}}},
            "observations.ee_pose.type",
        ),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_wrong_key_or_value_is_refused_with_its_path(tmp_path, changes, path):
    file = _write(tmp_path, _minimal(**changes))
    with pytest.raises(ValueError, match=path.replace(".", r"\.")) as info:
        DeploymentConfig.load(file)
    assert str(file) in str(info.value)


def test_one_key_has_one_source(tmp_path):
    data = _minimal(
        cameras={"front": {"observation": "front_rgb"}},
        observations={"front_rgb": {"topic": "/other", "type": "image"}},
    )
    with pytest.raises(ValueError, match=r"cameras\.front\.observation 'front_rgb'"):
        DeploymentConfig.load(_write(tmp_path, data))


def test_cameras_feed_their_observation_key_on_the_realsense_ros_topic(tmp_path):
    data = _minimal(cameras={"wrist": {"serial": "42", "fps": 15, "observation": "wrist_rgb"}})
    source = DeploymentConfig.load(_write(tmp_path, data)).server_config().observations["wrist_rgb"]
    assert source.topic == "/camera/wrist/color/image_raw"
    assert (source.type, source.rate_hz) == ("image", 15)


def test_the_tcp_offset_moves_the_tcp_along_tool0_z(tmp_path):
    cell = DeploymentConfig.load(
        _write(tmp_path, _minimal(robot={"type": "ur5", "tcp_offset_m": [0, 0, 0.2]}))
    )
    q = np.array([0.1, -1.2, 1.4, -1.7, -1.5, 0.3])
    tool0 = forward_kinematics(q)
    expected = tool0[:3, 3] + 0.2 * tool0[:3, 2]  # hand computation: 0.2 m along tool0's z
    np.testing.assert_allclose(cell.kinematics().tcp_position(q), expected, atol=1e-12)
