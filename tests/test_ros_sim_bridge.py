"""The sim bridge against real rclpy peers: the UR and realsense-ros drivers' topics, types and
QoS, and the arm's answer to bad commands, as a robot under ``ur_robot_driver`` answers."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Jazzy wheels are not installed")

from tests.ros_graph import NodeProcess, Watcher, wait_for

ROOT = Path(__file__).resolve().parents[1]
#: The shipped bundle with the simulated cell's observation mapping: a server that would start.
SHIPPED_SERVER = {
    "bundle": str(ROOT / "bundles" / "push_t_drifting"),
    "config": str(ROOT / "config" / "server_sim.yaml"),
}

pytestmark = [pytest.mark.ros, pytest.mark.slow]

WIDTH, HEIGHT = 64, 48


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory):
    log_dir = tmp_path_factory.mktemp("bridge")
    node = NodeProcess(
        "prt-sim-bridge",
        {"cameras": "[front]", "image_width": WIDTH, "image_height": HEIGHT, "camera_hz": 30.0},
        log_dir,
    )
    yield node
    assert node.stop() == 0, node.output()


@pytest.fixture(scope="module")
def watcher(bridge: NodeProcess):
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import Float64

    from policy_runtime.ros import qos

    watch = Watcher()
    watch.keep("/joint_states", JointState, qos.STREAM)
    watch.keep("/tcp_pose_broadcaster/pose", PoseStamped, qos.STREAM)
    watch.keep("/sim_bridge/task_state", JointState, qos.STREAM)
    watch.keep("/gripper/joint_states", JointState, qos.STREAM)
    watch.keep("/speed_scaling_state_broadcaster/speed_scaling", Float64, qos.STREAM)
    watch.keep("/sim_bridge/episode", DiagnosticArray, qos.LATCHED)
    base = "/camera/front"
    watch.keep(f"{base}/color/image_raw", Image, qos.SENSOR, key="image best effort")
    watch.keep(f"{base}/color/image_raw", Image, qos.STREAM, key="image reliable")
    watch.keep(f"{base}/color/camera_info", CameraInfo, qos.SENSOR)
    watch.keep(f"{base}/aligned_depth_to_color/image_raw", Image, qos.SENSOR)
    wait_for(lambda: len(watch.received("image reliable")) >= 5, 60, "camera frames")
    yield watch
    watch.close()


def test_joint_states_are_the_ur_drivers(watcher: Watcher):
    from policy_runtime.robots.ur5 import JOINT_NAMES

    time.sleep(1.0)
    timed = watcher.timed("/joint_states")
    last = timed[-1][1]
    assert list(last.name) == list(JOINT_NAMES)
    assert len(last.position) == len(last.velocity) == len(last.effort) == 6
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for _, m in timed[-126:]]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    # 125 Hz on the wall clock (real time is the default), within 15%.
    arrivals = [t for t, _ in timed if t > timed[-1][0] - 1.0]
    assert 106 <= len(arrivals) <= 144, len(arrivals)


def test_cameras_are_realsense_rosss_both_qos_receive(watcher: Watcher):
    from sim_bridge.cameras import REALSENSE_COLOR_FOVY_DEG, intrinsics_matrix

    best_effort = watcher.received("image best effort")
    reliable = watcher.received("image reliable")
    assert len(best_effort) >= 3 and len(reliable) >= 3
    image = reliable[-1]
    assert (image.encoding, image.width, image.height) == ("rgb8", WIDTH, HEIGHT)
    assert image.step == 3 * WIDTH and len(image.data) == 3 * WIDTH * HEIGHT
    assert image.header.frame_id == "front_color_optical_frame"  # realsense-ros: <name>_...
    info = watcher.received("/camera/front/color/camera_info")[-1]
    np.testing.assert_allclose(
        np.reshape(info.k, (3, 3)), intrinsics_matrix(REALSENSE_COLOR_FOVY_DEG, WIDTH, HEIGHT)
    )
    depth = watcher.received("/camera/front/aligned_depth_to_color/image_raw")[-1]
    assert depth.encoding == "16UC1" and depth.header.frame_id == image.header.frame_id
    mm = np.frombuffer(bytes(depth.data), np.uint16).reshape(HEIGHT, WIDTH)
    # The front camera stands ~1.2 m from the table's middle: millimetres, not metres.
    assert 500 < np.median(mm) < 2500


def test_state_topics_tcp_task_gripper_scaling_and_episode(watcher: Watcher):
    pose = watcher.received("/tcp_pose_broadcaster/pose")[-1]
    assert pose.header.frame_id == "base_link"
    q = pose.pose.orientation
    assert abs(np.linalg.norm([q.x, q.y, q.z, q.w]) - 1.0) < 1e-9
    task = watcher.received("/sim_bridge/task_state")[-1]
    assert [n for n in task.name if n.startswith("block_keypoints/")] == [
        f"block_keypoints/{i}" for i in range(16)
    ]
    assert list(watcher.received("/gripper/joint_states")[-1].name) == ["gripper"]
    assert watcher.received("/speed_scaling_state_broadcaster/speed_scaling")[-1].data == 100.0
    status = watcher.received("/sim_bridge/episode")[-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert values["task"] == "push_t" and values["seed"] == "100000"


def test_program_running_is_latched_for_a_late_subscriber(watcher: Watcher):
    from std_msgs.msg import Bool

    from policy_runtime.ros import qos

    key = watcher.keep("/io_and_status_controller/robot_program_running", Bool, qos.LATCHED)
    wait_for(lambda: len(watcher.received(key)) >= 1, 10, "the latched program state")
    assert watcher.received(key)[-1].data is True


def _positions(watcher: Watcher) -> np.ndarray:
    return np.array(watcher.received("/joint_states")[-1].position)


def test_bad_commands_are_refused_and_the_arm_holds(watcher: Watcher, bridge: NodeProcess):
    from std_msgs.msg import Float64MultiArray

    from policy_runtime.ros import qos

    publisher = watcher.node.create_publisher(
        Float64MultiArray, "/forward_position_controller/commands", qos.STREAM
    )
    wait_for(lambda: publisher.get_subscription_count() > 0, 10, "the bridge's subscription")
    time.sleep(0.5)
    before = _positions(watcher)
    jump = before.copy()
    jump[0] += 1.0
    for bad in ([float("nan")] * 6, [0.0] * 5, jump.tolist()):
        publisher.publish(Float64MultiArray(data=bad))
        time.sleep(0.3)
        np.testing.assert_allclose(_positions(watcher), before, atol=2e-3)
    log = bridge.output()
    for reason in ("not_finite", "wrong_length", "jump"):
        assert f"refused ({reason}, 1 so far)" in log, log
    # A good command is applied at the next tick, like servoj: the arm goes there.
    target = before.copy()
    target[0] += 0.05
    publisher.publish(Float64MultiArray(data=target.tolist()))
    wait_for(lambda: abs(_positions(watcher)[0] - target[0]) < 5e-3, 5, "the arm to follow")


@pytest.mark.parametrize(
    ("executable", "params", "named"),
    [
        ("prt-sim-bridge", {"controller_hz": -5.0}, "controller_hz"),
        ("prt-sim-bridge", {"controller_hz": "fast"}, "controller_hz"),
        ("prt-sim-bridge", {"task": "juggling"}, "task"),
        ("prt-executor", {"executor_config": "/nonexistent.yaml"}, "/nonexistent.yaml"),
        ("prt-policy-server", {"bundle": "/nonexistent", "config": "x"}, "bundle"),
        ("prt-policy-server", {**SHIPPED_SERVER, "backend": "tpu"}, "backend: 'tpu'"),
        ("prt-policy-server", {**SHIPPED_SERVER, "precision": "int4"}, "precision: 'int4'"),
        # A precision its manifest has no passed check for (nor the int8 graphs it needs).
        ("prt-policy-server", {**SHIPPED_SERVER, "precision": "int8"}, "int8 graphs"),
    ],
)
def test_bad_parameters_are_refused_with_their_name(
    tmp_path: Path, executable: str, params: dict, named: str
):
    node = NodeProcess(executable, params, tmp_path)
    code = node.process.wait(timeout=60)
    assert code == 2, node.output()
    assert named in node.output()
