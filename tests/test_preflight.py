"""The real cell's graph beside the sim bridge standing in for the UR driver, camera nodes on
librealsense software devices: ``prt doctor --robot`` passes on a healthy graph and names the
failing check for each fault (no joint states, a controller topic nobody subscribes to, a
missing observation topic, a stale camera), and ``ur5_real.launch.yaml`` runs end to end."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="the ROS 2 Jazzy wheels are not installed")

from tests.ros_graph import BIN, BUNDLE, NodeProcess

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _deployment(tmp_path: Path, block_topic: str = "/sim_bridge/task_state") -> Path:
    cell = {
        "robot": {"type": "ur5"},
        "bundle": str(BUNDLE),
        "cameras": {
            "front": {"serial": "front-sw", "depth": False},
            "wrist": {"serial": "wrist-sw", "depth": False},
        },
        "observations": {
            "ee_pose": {"topic": "/tcp_pose_broadcaster/pose", "type": "pose", "rate_hz": 125},
            "block_keypoints": {
                "topic": block_topic,
                "type": "joint_state",
                "name_prefix": "block_keypoints/",
                "rate_hz": 125,
            },
        },
    }
    path = tmp_path / f"deploy{len(block_topic)}.yaml"
    path.write_text(yaml.safe_dump(cell))
    return path


def _doctor(deployment: Path) -> tuple[int, dict[str, str]]:
    """The exit status and each check's line, by check name."""
    done = subprocess.run(
        [str(BIN / "prt"), "doctor", "--robot", "--deployment", str(deployment),
         "--duration", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = {}
    for line in done.stdout.splitlines():
        status, _, rest = line.partition("  ")
        rest = rest.strip()
        if status in ("ok", "FAIL") and ":" in rest:
            name, _, detail = rest.partition(": ")
            lines[name] = f"{status} {detail}"
    assert lines, done.stdout + done.stderr
    return done.returncode, lines


def _failed(lines: dict[str, str]) -> set[str]:
    return {name for name, line in lines.items() if line.startswith("FAIL")}


def test_a_stream_rate_is_the_publishers_even_when_messages_arrive_in_batches():
    """A loaded receiver takes a 125 Hz stream in batches of four every 32 ms: the rate is the
    stamps' 125 Hz, not the arrivals' (median interval 0, infinite)."""
    from policy_runtime.ros.probe import Stream

    stream = Stream()
    stream.stamps = [n / 125 for n in range(400)]
    stream.arrivals = [(n // 4) * 4 / 125 + 0.003 for n in range(400)]
    assert stream.rate() == pytest.approx(125.0)
    unstamped = Stream(arrivals=[n / 30 for n in range(90)])
    assert unstamped.rate() == pytest.approx(30.0)


def test_preflight_passes_on_a_healthy_graph_and_names_each_fault(tmp_path: Path):
    deployment = _deployment(tmp_path)
    cameras = {
        name: NodeProcess(
            "prt-camera",
            {"camera_name": name, "device": "test_pattern", "deployment": deployment},
            tmp_path,
        )
        for name in ("front", "wrist")
    }
    bridge = None
    try:
        # No driver yet: no joint states (and what depends on them).
        code, lines = _doctor(deployment)
        assert code == 1
        assert lines["joint_states"].startswith("FAIL no /joint_states")
        assert {"joint_states", "program_running", "command_topic", "workspace"} <= _failed(lines)
        assert lines["camera front"].startswith("ok"), lines["camera front"]

        # The driver still runs its default trajectory controller.
        bridge = NodeProcess(
            "prt-sim-bridge",
            {"cameras": "[]", "active_controller": "scaled_joint_trajectory_controller"},
            tmp_path,
        )
        code, lines = _doctor(deployment)
        assert code == 1 and _failed(lines) == {"command_topic"}, lines
        assert "forward_position_controller" in lines["command_topic"]
        bridge.stop()

        # Healthy.
        bridge = NodeProcess("prt-sim-bridge", {"cameras": "[]"}, tmp_path)
        code, lines = _doctor(deployment)
        assert code == 0 and not _failed(lines), lines
        assert {"joint_states", "camera front", "camera wrist", "bundle", "workspace"} <= set(lines)
        assert {"observation ee_pose", "observation block_keypoints"} <= set(lines)

        # An observation mapped to a topic nobody publishes.
        code, lines = _doctor(_deployment(tmp_path, block_topic="/perception/block_state"))
        assert code == 1 and _failed(lines) == {"observation block_keypoints"}, lines
        assert "does not exist" in lines["observation block_keypoints"]

        # A camera that stops sending (its process frozen).
        cameras["front"].process.send_signal(signal.SIGSTOP)
        code, lines = _doctor(deployment)
        cameras["front"].process.send_signal(signal.SIGCONT)
        assert code == 1 and _failed(lines) == {"camera front"}, lines
    finally:
        if bridge is not None:
            bridge.stop()
        for camera in cameras.values():
            camera.stop()


def test_the_real_cell_launch_file_starts_in_shadow_passes_preflight_and_arms(tmp_path: Path):
    """``ur5_real.launch.yaml`` end to end beside the sim bridge standing in for the driver:
    camera nodes on software devices, server and executor from one deployment file; the arm
    holds in shadow mode while the loop runs, pre-flight passes, and ``prt executor arm`` hands
    the arm to the policy."""
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from policy_runtime.ros import qos
    from tests.ros_graph import ROOT, Watcher, executor_status, moving, wait_for

    deployment = _deployment(tmp_path)
    bridge = NodeProcess("prt-sim-bridge", {"cameras": "[]"}, tmp_path)
    log = (tmp_path / "launch.log").open("wb")
    launch = subprocess.Popen(
        [str(BIN / "prt"), "launch", str(ROOT / "launch" / "ur5_real.launch.yaml"),
         f"deployment:={deployment}", "camera_device:=test_pattern", "side:=false"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    watcher = Watcher()
    try:
        watcher.keep("/joint_states", JointState, qos.STREAM)
        watcher.keep("/diagnostics", DiagnosticArray, qos.STREAM)
        wait_for(
            lambda: executor_status(watcher).get("state") == "shadow: running", 90, "shadow mode"
        )
        time.sleep(2.0)  # every stream past its start-up, as an operator would find them
        code, lines = _doctor(deployment)
        assert code == 0, {name: lines[name] for name in _failed(lines)}
        positions = np.array([m.position for m in watcher.received("/joint_states")])
        assert np.abs(positions - positions[0]).max() <= 1e-9  # disarmed: the arm held

        armed = subprocess.run(
            [str(BIN / "prt"), "executor", "arm"], capture_output=True, text=True, timeout=60
        )
        assert armed.returncode == 0, armed.stdout + armed.stderr
        wait_for(lambda: moving(watcher), 60, "the armed executor to move the arm")
    finally:
        watcher.close()
        launch.send_signal(signal.SIGINT)
        try:
            launch.wait(timeout=30)
        except subprocess.TimeoutExpired:
            launch.kill()
        log.close()
        bridge.stop()
    # Ctrl-C's status (128 + SIGINT), every node down.
    assert launch.returncode == 130, (tmp_path / "launch.log").read_text()[-3000:]
