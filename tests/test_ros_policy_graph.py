"""The deployed graph in real processes: sim bridge, policy server and executor over DDS.

Failures as a robot sees them, measured in the simulated arm's joint velocities: a policy
server that dies (the executor holds within its watchdog time; a new server resumes the motion
through the supervisor), the e-stop input (a latched stop until released and reset), an
executor that dies (the arm holds its last command, as ``servoj`` does). And the end-to-end
run: episodes driven only through ROS 2 topics succeed where ``prt eval`` succeeds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Jazzy wheels are not installed")

from tests.ros_graph import (
    BIN,
    BUNDLE,
    ROOT,
    SERVER_CONFIG,
    NodeProcess,
    Watcher,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

MOVING = 0.05  # rad/s: the arm is moving when a joint is faster
AT_REST = 0.01  # rad/s: at rest when every joint is slower


def _speed(watcher: Watcher) -> float:
    return float(np.max(np.abs(watcher.received("/joint_states")[-1].velocity)))


def _moving(watcher: Watcher, window_s: float = 0.5) -> bool:
    now = time.monotonic()
    recent = [m for t, m in watcher.timed("/joint_states") if t > now - window_s]
    return any(np.max(np.abs(m.velocity)) > MOVING for m in recent)


def _rest_time_after(watcher: Watcher, since: float, hold_s: float = 0.3) -> float | None:
    """Seconds from ``since`` until the arm came to rest and stayed there ``hold_s``."""
    samples = [(t, np.max(np.abs(m.velocity))) for t, m in watcher.timed("/joint_states")]
    after = [(t, v) for t, v in samples if t >= since]
    for i, (t, _) in enumerate(after):
        window = [v for u, v in after[i:] if u <= t + hold_s]
        if after[-1][0] >= t + hold_s and all(v < AT_REST for v in window):
            return t - since
    return None


@pytest.fixture
def graph(tmp_path: Path):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from policy_runtime.ros import qos

    nodes = {
        "bridge": NodeProcess("prt-sim-bridge", {"cameras": "[]"}, tmp_path),
        "server": NodeProcess(
            "prt-policy-server", {"bundle": BUNDLE, "config": SERVER_CONFIG}, tmp_path
        ),
        "executor": NodeProcess("prt-executor", {}, tmp_path),
    }
    watcher = Watcher()
    watcher.keep("/joint_states", JointState, qos.STREAM)
    watcher.keep("/diagnostics", DiagnosticArray, qos.STREAM)
    try:
        yield nodes, watcher, tmp_path
    finally:
        watcher.close()
        for node in nodes.values():
            node.stop()


def _executor_status(watcher: Watcher) -> dict[str, str]:
    for msg in reversed(watcher.received("/diagnostics")):
        for status in msg.status:
            if status.name == "policy_runtime: executor":
                return {"state": status.message, **{kv.key: kv.value for kv in status.values}}
    return {}


def test_server_death_holds_then_a_new_server_resumes_and_executor_death_holds(graph):
    nodes, watcher, log_dir = graph
    wait_for(lambda: _moving(watcher), 60, "the policy to move the arm")
    time.sleep(1.0)

    killed = time.monotonic()
    nodes["server"].stop(signal.SIGKILL)
    wait_for(lambda: _rest_time_after(watcher, killed) is not None, 10, "the arm to hold")
    rest = _rest_time_after(watcher, killed)
    # The executor's observation watchdog (0.25 s), then a hold decelerating within the
    # acceleration limits, then the servo settling: well within a second.
    assert rest is not None and rest < 1.0, rest
    print(f"server killed: the arm at rest {rest:.3f} s later")
    wait_for(lambda: "hold.observation_stale" in _executor_status(watcher), 5, "the reason")

    nodes["server"] = NodeProcess(
        "prt-policy-server", {"bundle": BUNDLE, "config": SERVER_CONFIG}, log_dir
    )
    wait_for(lambda: _moving(watcher), 60, "motion to resume with the new server")

    killed = time.monotonic()
    nodes["executor"].stop(signal.SIGKILL)
    wait_for(lambda: _rest_time_after(watcher, killed) is not None, 10, "the arm to hold")
    before = np.array(watcher.received("/joint_states")[-1].position)
    time.sleep(1.0)
    after = np.array(watcher.received("/joint_states")[-1].position)
    np.testing.assert_allclose(after, before, atol=1e-3)  # it holds the last command


def test_estop_stops_until_released_and_reset(graph):
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger

    from policy_runtime.ros import qos

    _, watcher, _ = graph
    estop = watcher.node.create_publisher(Bool, "/executor/estop", qos.STREAM)
    reset = watcher.node.create_client(Trigger, "/executor/reset")
    wait_for(lambda: _moving(watcher), 60, "the policy to move the arm")
    wait_for(lambda: estop.get_subscription_count() > 0, 10, "the executor's e-stop input")

    pressed = time.monotonic()
    estop.publish(Bool(data=True))
    wait_for(lambda: _rest_time_after(watcher, pressed) is not None, 10, "the arm to stop")
    wait_for(lambda: _executor_status(watcher).get("state") == "stopped", 5, "stopped")

    def call_reset() -> Trigger.Response:
        future = reset.call_async(Trigger.Request())
        wait_for(future.done, 10, "the reset service")
        return future.result()

    assert reset.wait_for_service(timeout_sec=10)
    refused = call_reset()
    assert not refused.success and "e-stop" in refused.message
    time.sleep(1.0)
    assert not _moving(watcher)  # still latched
    estop.publish(Bool(data=False))
    time.sleep(0.2)
    assert call_reset().success
    wait_for(lambda: _moving(watcher), 60, "motion to resume after the reset")


def test_episodes_through_ros_succeed_where_prt_eval_succeeds(tmp_path: Path):
    """Three episodes in the fast (lockstep) graph, composed server and executor, against
    ``prt eval`` of the same bundle on the same seeds: the policy succeeds on all of them."""
    seeds = (100_001, 100_002, 100_003)
    out = tmp_path / "ros"
    launch = subprocess.run(
        [str(BIN / "prt"), "launch", str(ROOT / "launch" / "sim_episodes.launch.yaml"),
         "episodes:=3", f"seed:={seeds[0]}", "cameras:=[]", "video_topic:=''", f"out:={out}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert launch.returncode == 0, launch.stdout[-3000:]
    records = json.loads((out / "episodes.json").read_text())["records"]
    assert [r["seed"] for r in records] == list(seeds)
    assert "success: 3/3" in launch.stdout

    evaluation = subprocess.run(
        [str(BIN / "prt"), "eval", "--policy", str(BUNDLE), "--task", "push_t",
         "--episodes", "3", "--start-seed", str(seeds[0]), "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stdout[-3000:]
    logged = json.loads((tmp_path / "eval" / "eval_log.json").read_text())["episodes"]
    assert [e["success"] for e in logged] == [r["success"] for r in records] == [True] * 3
