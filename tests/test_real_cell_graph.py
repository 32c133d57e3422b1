"""The real driver's behaviours, against the sim bridge standing in for ``ur_robot_driver``
(real DDS, real processes): the robot program stopping mid-episode, the speed slider at 50%,
shadow mode and arming, the driver's default trajectory controller."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Jazzy wheels are not installed")

from tests.ros_graph import (
    BIN,
    NodeProcess,
    Watcher,
    call,
    executor_status,
    moving,
    policy_graph,
    rest_time_after,
    wait_for,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _positions(watcher, since: float) -> np.ndarray:
    return np.array([m.position for t, m in watcher.timed("/joint_states") if t >= since])


def test_program_stop_holds_follows_the_arm_and_resumes_only_after_a_reset(tmp_path: Path):
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import SetBool, Trigger

    from policy_runtime.ros import qos

    with policy_graph(tmp_path) as (_, watcher, _):
        watcher.keep("/forward_position_controller/commands", Float64MultiArray, qos.STREAM)
        program = watcher.node.create_client(SetBool, "/sim_bridge/program_running")
        reset = watcher.node.create_client(Trigger, "/executor/reset")
        wait_for(lambda: moving(watcher), 60, "the policy to move the arm")
        time.sleep(0.5)

        stopped = time.monotonic()
        assert call(watcher, program, SetBool.Request(data=False)).success
        wait_for(lambda: rest_time_after(watcher, stopped) is not None, 10, "the arm to stop")
        wait_for(lambda: executor_status(watcher).get("state") == "stopped", 5, "stopped")
        assert int(executor_status(watcher)["hold.program_stopped"]) > 0

        restarted = time.monotonic()
        assert call(watcher, program, SetBool.Request(data=True)).success
        time.sleep(2.0)
        # Running again, the program gets commands at the arm (re-anchored: it settles by the
        # servo's last few 1e-5 rad onto the measured joints), and no motion.
        held = _positions(watcher, restarted)
        assert np.abs(held - held[0]).max() < 1e-3
        commands = [
            np.array(m.data)
            for t, m in watcher.timed("/forward_position_controller/commands")
            if t >= restarted + 0.5
        ]
        assert commands, "no hold commands after the program restarted"
        np.testing.assert_allclose(commands[-1], held[-1], atol=1e-4)
        assert executor_status(watcher)["state"] == "stopped"

        assert call(watcher, reset, Trigger.Request()).success
        wait_for(lambda: moving(watcher), 60, "motion to resume after the reset")


def test_speed_scaling_at_50_percent_holds_until_it_is_back(tmp_path: Path):
    """The chosen behaviour: below ``min_speed_scaling_percent`` (90) the executor holds (the
    plan's time would run ahead of an arm at half speed); back at 100% it resumes by itself
    through the supervisor (a fresh chunk near the arm)."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    with policy_graph(tmp_path) as (_, watcher, _):
        parameters = watcher.node.create_client(SetParameters, "/sim_bridge/set_parameters")

        def slider(percent: float) -> None:
            request = SetParameters.Request(
                parameters=[Parameter("speed_scaling", value=percent).to_parameter_msg()]
            )
            assert call(watcher, parameters, request).results[0].successful

        wait_for(lambda: moving(watcher), 60, "the policy to move the arm")
        time.sleep(0.5)
        lowered = time.monotonic()
        before = _positions(watcher, lowered - 0.02)[0]
        slider(50.0)
        wait_for(lambda: rest_time_after(watcher, lowered) is not None, 10, "the arm to hold")
        rest = rest_time_after(watcher, lowered)
        travelled = np.abs(_positions(watcher, lowered)[-1] - before).max()
        wait_for(lambda: "hold.speed_scaling_low" in executor_status(watcher), 5, "the reason")
        print(f"speed scaling 50%: at rest {rest:.3f} s later, {travelled:.4f} rad travelled")
        assert rest is not None and rest < 1.0
        time.sleep(1.0)
        assert not moving(watcher)

        slider(100.0)
        wait_for(lambda: moving(watcher), 60, "motion to resume at 100%")


def test_shadow_mode_moves_nothing_reports_the_would_be_motion_and_arms_on_request(
    tmp_path: Path,
):
    from sensor_msgs.msg import JointState

    from policy_runtime.ros import qos

    with policy_graph(tmp_path, executor={"require_arming": True}) as (_, watcher, _):
        watcher.keep("/executor/shadow/joint_commands", JointState, qos.STREAM)
        wait_for(
            lambda: len(watcher.received("/executor/shadow/joint_commands")) > 100,
            60,
            "shadow commands",
        )
        started = time.monotonic()
        report = subprocess.run(
            [str(BIN / "prt"), "shadow-report", "--duration", "4", "--out", str(tmp_path / "r")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert report.returncode == 0, report.stdout + report.stderr
        summary = json.loads((tmp_path / "r" / "shadow.json").read_text())
        assert (tmp_path / "r" / "shadow.png").stat().st_size > 10_000
        still = _positions(watcher, started)
        assert np.abs(still - still[0]).max() <= 1e-9  # the arm did not move
        assert summary["real_arm_motion_rad"] <= 1e-9
        # Commands over most of the 4 s window (125 Hz; fewer on a busy machine).
        assert summary["seconds"] > 3.0 and summary["commands"] > 100
        assert summary["states"].get("running", 0) > 0
        assert summary["max_tcp_displacement_m"] > 0.005  # the policy wanted to move it
        assert "obs_to_chunk_p50" in summary["latencies_ms"]
        print(report.stdout)

        armed = subprocess.run(
            [str(BIN / "prt"), "executor", "arm"], capture_output=True, text=True, timeout=60
        )
        assert armed.returncode == 0 and "armed" in armed.stdout, armed.stdout + armed.stderr
        wait_for(lambda: moving(watcher), 60, "the armed executor to move the arm")


def test_arming_is_refused_while_nothing_subscribes_to_the_command_topic(tmp_path: Path):
    """The driver still runs its default trajectory controller: arming names the fix."""
    bridge = {"active_controller": "scaled_joint_trajectory_controller"}
    with policy_graph(tmp_path, executor={"require_arming": True}, bridge=bridge) as graph:
        _, watcher, _ = graph
        wait_for(lambda: executor_status(watcher).get("state", "").startswith("shadow"), 60, "")
        refused = subprocess.run(
            [str(BIN / "prt"), "executor", "arm"], capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 1
        assert "arm refused: nothing subscribes" in refused.stdout
        assert "forward_position_controller" in refused.stdout
        time.sleep(1.5)
        assert executor_status(watcher)["armed"] == "false"


def test_with_the_trajectory_controller_active_trajectories_move_the_arm_by_joint_name(
    tmp_path: Path,
):
    """The driver's default controller: trajectories by joint name in any order, the gripper's
    own controller, and nothing subscribed to the position streaming topic."""
    from builtin_interfaces.msg import Duration
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from policy_runtime.robots.ur5 import JOINT_NAMES
    from policy_runtime.ros import qos

    bridge = NodeProcess(
        "prt-sim-bridge",
        {"cameras": "[]", "active_controller": "scaled_joint_trajectory_controller"},
        tmp_path,
    )
    watcher = Watcher()
    try:
        watcher.keep("/joint_states", JointState, qos.STREAM)
        watcher.keep("/gripper/joint_states", JointState, qos.STREAM)
        trajectories = watcher.node.create_publisher(
            JointTrajectory, "/scaled_joint_trajectory_controller/joint_trajectory", qos.STREAM
        )
        gripper = watcher.node.create_publisher(
            Float64MultiArray, "/gripper_controller/commands", qos.STREAM
        )
        positions = watcher.node.create_publisher(
            Float64MultiArray, "/forward_position_controller/commands", qos.STREAM
        )
        wait_for(lambda: trajectories.get_subscription_count() > 0, 30, "the trajectory topic")
        wait_for(lambda: gripper.get_subscription_count() > 0, 10, "the gripper topic")
        wait_for(lambda: len(watcher.received("/joint_states")) > 10, 10, "joint states")
        assert positions.get_subscription_count() == 0

        def measured() -> np.ndarray:
            return np.array(watcher.received("/joint_states")[-1].position)

        target = measured() + np.array([0.1, -0.05, 0.05, 0.0, 0.0, 0.1])
        order = [5, 3, 1, 0, 2, 4]
        point = JointTrajectoryPoint(
            positions=[float(target[i]) for i in order], time_from_start=Duration(sec=1)
        )
        message = JointTrajectory(joint_names=[JOINT_NAMES[i] for i in order], points=[point])
        trajectories.publish(message)  # unstamped: from its arrival
        wait_for(lambda: np.abs(measured() - target).max() < 5e-3, 10, "the trajectory")
        gripper.publish(Float64MultiArray(data=[0.0]))

        def closed() -> bool:
            return watcher.received("/gripper/joint_states")[-1].position[0] < 0.05

        wait_for(closed, 10, "the gripper to close")
    finally:
        watcher.close()
        bridge.stop()
