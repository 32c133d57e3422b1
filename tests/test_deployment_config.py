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


def _tracked(**changes: object) -> dict:
    """A deployment whose front camera (calibrated) feeds block_keypoints by its markers."""
    return _minimal(
        cameras={"front": {"serial": "1", "fps": 15, "calibration": "calibration/front.yaml"}},
        object_state={"block_keypoints": {"cameras": ["front"], "object": "block.yaml"}},
        **changes,
    )


def test_object_state_keys_are_read_from_the_perception_topics_by_name_prefix(tmp_path):
    cell = DeploymentConfig.load(_write(tmp_path, _tracked()))
    # Paths relative to the file, not required to exist (a template names files to write).
    assert cell.cameras["front"].calibration == (tmp_path / "calibration" / "front.yaml")
    assert cell.object_state["block_keypoints"].object == tmp_path / "block.yaml"
    assert cell.object_state["block_keypoints"].tracker.table_z_m == 0.0
    assert cell.object_state_topic("block_keypoints") == "/perception/block_keypoints"
    source = cell.server_config().observations["block_keypoints"]
    assert (source.topic, source.type) == ("/perception/block_keypoints", "joint_state")
    assert (source.name_prefix, source.rate_hz) == ("block_keypoints/", 15)


def test_the_shipped_deployment_tracks_the_block_with_the_calibrated_front_and_side_cameras():
    cell = DeploymentConfig.load(EXAMPLE)
    source = cell.object_state["block_keypoints"]
    assert source.cameras == ("front", "side") and "block_keypoints" not in cell.observations
    assert source.object == ROOT / "config" / "push_t_block_markers.yaml"
    assert cell.cameras["front"].calibration == ROOT / "config" / "calibration" / "front.yaml"
    assert cell.cameras["side"].calibration == ROOT / "config" / "calibration" / "side.yaml"
    assert cell.server_config().observations["block_keypoints"].rate_hz == 30


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"object_state": {"block_keypoints": {"cameras": ["top"], "object": "b.yaml"}}},
            r"object_state\.block_keypoints\.cameras: 'top' is not under cameras",
        ),
        (
            {
                "cameras": {"front": {"serial": "1"}},
                "object_state": {"block_keypoints": {"cameras": ["front"], "object": "b.yaml"}},
            },
            r"object_state\.block_keypoints\.cameras: 'front' has no calibration: set "
            r"cameras\.front\.calibration",
        ),
        (
            {
                "observations": {
                    "block_keypoints": {"topic": "/x", "type": "joint_state", "name_prefix": "b/"}
                }
            },
            r"object_state\.block_keypoints is also under observations",
        ),
        (
            {
                "cameras": {
                    "front": {"calibration": "f.yaml"},
                    "wrist": {"observation": "block_keypoints"},
                }
            },
            r"object_state\.block_keypoints is also cameras\.wrist\.observation",
        ),
        (
            {"object_state": {"block_keypoints": {"cameras": ["front"]}}},
            r"object_state\.block_keypoints\.object: Field required",
        ),
        (
            {
                "object_state": {
                    "block_keypoints": {
                        "cameras": ["front"],
                        "object": "b.yaml",
                        "tracker": {"min_confidence": 2},
                    }
                }
            },
            r"object_state\.block_keypoints\.tracker\.min_confidence",
        ),
    ],
)
def test_a_wrong_object_state_is_refused_naming_the_field(tmp_path, changes, message):
    data = _tracked()
    data.update(changes)
    with pytest.raises(ValueError, match=message):
        DeploymentConfig.load(_write(tmp_path, data))


def test_the_policy_server_picks_the_keypoints_of_the_object_state_layout():
    """The object state node's names (keypoints, then confidence and latency): the server's
    ``name_prefix`` decoding reads the 16 keypoints and skips the two extra values."""
    from policy_runtime.deployment.config import object_state_names
    from policy_runtime.serving.decode import NamePicker

    keypoints = np.arange(16, dtype=np.float64) * 0.01 + 0.3
    names = object_state_names("block_keypoints", 16)
    assert names[:2] == ["block_keypoints/0", "block_keypoints/1"]
    assert names[-2:] == ["block_keypoints.confidence", "block_keypoints.latency_s"]
    values = [*keypoints, 0.87, 0.031]
    picked = NamePicker(prefix="block_keypoints/")(names, values)
    assert picked.shape == (16,)
    np.testing.assert_array_equal(picked, keypoints.astype(np.float32))
