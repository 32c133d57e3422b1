"""Teleoperation: the operator's device takes the policy's place in front of the executor.

To the executor this node is a policy server whose policy is the operator: it publishes a
policy description (end-effector actions, one per period, due a period after the request, like
the simulator's demonstrations) and answers each chunk request with the operator's target
(:class:`~policy_runtime.teleop.TeleopTargets`). Everything that moves the arm is the policy's
stack: engine, supervisor, ``ControlLoop``, safety filter, watchdog, streaming to the UR
driver's ``forward_position_controller``; so teleop works against the sim bridge and, unchanged,
against the robot, with the same limits. If this node dies the executor's chunks run out and it
holds the arm.

Input (``input``): ``joy`` (sensor_msgs/Joy on ``~/joy``: six axes in REP 103 and buttons, e.g.
remapped to spacenav_node's ``/spacenav/joy``; a scripted operator publishes here),
``spacemouse`` (a 3Dconnexion device through pyspacemouse) or ``keyboard`` (this terminal).
Outputs for the recorder: ``~/target`` (PoseStamped, base_link) and ``~/gripper`` (JointState
``gripper``), stamped with the request time: the action of that grid time.
``~/reset`` (Trigger) puts the target back on the measured TCP (after the arm was moved by
something else, e.g. a simulator's reset).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from policy_runtime.chunk import ActionChunk, ChunkPrefix
from policy_runtime.robots.poses import (
    EE_ACTION_DIM,
    ee_action_to_pose,
    matrix_from_quaternion,
    quaternion_from_matrix,
)
from policy_runtime.ros import qos
from policy_runtime.ros.executor_node import (
    EE_CHUNK_TOPIC,
    INFO_TOPIC,
    OBSERVED_TOPIC,
    REQUEST_TOPIC,
)
from policy_runtime.ros.messages import chunk_to_msg, request_from_msg, stamp
from policy_runtime.ros.params import Param, declare_parameters, non_negative, one_of, positive
from policy_runtime.serving.server import PolicyInfo
from policy_runtime.teleop.input import InputDevice, TeleopDeviceError, TeleopInput
from policy_runtime.teleop.targets import TeleopSettings, TeleopTargets

PARAMETERS = {
    "input": Param(
        "joy", "joy (~/joy topic) | spacemouse | keyboard", one_of("joy", "spacemouse", "keyboard")
    ),
    "control_hz": Param(10.0, "targets per second (the recorded data's rate)", positive),
    "max_speed_m_s": Param(0.2, "TCP speed at full deflection", positive),
    "max_rotation_rad_s": Param(0.8, "rotation speed at full deflection", positive),
    "input_timeout_s": Param(0.25, "dead-man: older input counts as none", positive),
    "max_lead_m": Param(0.06, "the target stays this close to the measured TCP", positive),
    "operator_yaw_rad": Param(0.0, "the operator's view (x forward) about base_link's z"),
    "deadband": Param(0.05, "spacemouse: axes below this read 0", non_negative),
    "device_poll_hz": Param(100.0, "spacemouse/keyboard: readings per second", positive),
}

#: Actions per chunk: the target, repeated (the executor runs one, then asks again).
CHUNK_LENGTH = 4


class TeleopNode(Node):
    """See the module docs."""

    def __init__(self, device: InputDevice | None = None, **kwargs: Any) -> None:
        super().__init__("teleop", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.params = p
        self.targets = TeleopTargets(
            TeleopSettings(
                max_speed_m_s=p["max_speed_m_s"],
                max_rotation_rad_s=p["max_rotation_rad_s"],
                input_timeout_s=p["input_timeout_s"],
                max_lead_m=p["max_lead_m"],
                operator_yaw_rad=p["operator_yaw_rad"],
            )
        )
        self.dt = 1.0 / p["control_hz"]
        self.info = PolicyInfo(
            kind="teleop",
            action_space="ee",
            action_dim=EE_ACTION_DIM,
            chunk_length=CHUNK_LENGTH,
            n_action_steps=1,
            dt=self.dt,
            offset_steps=1,
            obs_keys=(),
        )
        self._lock = threading.Lock()
        self._last_request: float | None = None
        self._heartbeat_sent = -math.inf
        self.requests = 0
        info = self.create_publisher(String, INFO_TOPIC, qos.LATCHED)
        info.publish(String(data=self.info.to_json()))
        self._info_pub = info
        self.pub_chunk = self.create_publisher(MultiDOFJointTrajectory, EE_CHUNK_TOPIC, qos.STREAM)
        self.pub_observed = self.create_publisher(Header, OBSERVED_TOPIC, qos.STREAM)
        self.pub_target = self.create_publisher(PoseStamped, "~/target", qos.STREAM)
        self.pub_gripper = self.create_publisher(JointState, "~/gripper", qos.STREAM)
        self.create_subscription(JointTrajectory, REQUEST_TOPIC, self._on_request, qos.STREAM)
        self.create_subscription(
            PoseStamped, "/tcp_pose_broadcaster/pose", self._on_tcp, qos.STREAM
        )
        self.create_subscription(JointState, "/gripper/joint_states", self._on_gripper, qos.STREAM)
        self.create_subscription(Joy, "~/joy", self._on_joy, qos.STREAM)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._gripper_measured: float | None = None
        self._device = device if device is not None else _open_device(p["input"], p["deadband"])
        if self._device is not None:
            steady = Clock(clock_type=ClockType.STEADY_TIME)
            self.create_timer(1.0 / p["device_poll_hz"], self._poll_device, clock=steady)
        self.get_logger().info(f"teleop from {p['input']}: waiting for the executor's requests")

    # -- inputs ---------------------------------------------------------------------------------

    def _on_joy(self, msg: Joy) -> None:
        axes = np.zeros(6)
        values = np.asarray(msg.axes[:6], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            self.get_logger().warning("~/joy: non-finite axes ignored", throttle_duration_sec=1.0)
            return
        axes[: len(values)] = np.clip(values, -1.0, 1.0)
        reading = TeleopInput(axes, tuple(bool(b) for b in msg.buttons), time.monotonic())
        with self._lock:
            self.targets.set_input(reading)

    def _poll_device(self) -> None:
        assert self._device is not None
        reading = self._device.read()
        if reading is not None:
            with self._lock:
                self.targets.set_input(reading)

    def _on_tcp(self, msg: PoseStamped) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        pose = np.eye(4)
        pose[:3, :3] = matrix_from_quaternion(np.array([o.x, o.y, o.z, o.w]))
        pose[:3, 3] = (p.x, p.y, p.z)
        if not np.all(np.isfinite(pose)):
            return
        t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            self.targets.measured(pose, self._gripper_measured)
        if t >= self._heartbeat_sent + 0.5 * self.dt:
            self._heartbeat_sent = t
            self.pub_observed.publish(Header(stamp=stamp(t)))

    def _on_gripper(self, msg: JointState) -> None:
        if "gripper" in msg.name:
            self._gripper_measured = float(msg.position[list(msg.name).index("gripper")])

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self.targets.sync(self._gripper_measured)
            self._last_request = None
        response.success, response.message = True, "target on the measured TCP"
        return response

    # -- requests -------------------------------------------------------------------------------

    def _on_request(self, msg: JointTrajectory) -> None:
        t, prefix = request_from_msg(msg, self.info)
        self.request(t, prefix)

    def request(self, t: float, prefix: ChunkPrefix | None = None) -> None:
        """Answer the executor's request of time ``t`` with the target a period later."""
        with self._lock:
            last = self._last_request
            period = self.dt if last is None else min(max(t - last, 0.0), 2 * self.dt)
            self._last_request = t
            action = self.targets.step(period, time.monotonic())
            gripper = self.targets.gripper
        if action is None:
            return  # no TCP pose yet: the executor asks again
        self.requests += 1
        chunk = ActionChunk.from_actions(
            np.repeat(action[None], CHUNK_LENGTH, axis=0), 1, self.dt, self.info.offset_steps
        )
        self.pub_chunk.publish(chunk_to_msg(chunk, t, self.info))
        pose, _ = ee_action_to_pose(action)
        target = PoseStamped()
        target.header.stamp = stamp(t)
        target.header.frame_id = "base_link"
        target.pose.position.x, target.pose.position.y, target.pose.position.z = (
            float(v) for v in pose[:3, 3]
        )
        q = quaternion_from_matrix(pose[:3, :3])
        o = target.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in q)
        self.pub_target.publish(target)
        grip = JointState(name=["gripper"], position=[float(gripper)])
        grip.header.stamp = stamp(t)
        self.pub_gripper.publish(grip)

    def close(self) -> None:
        if self._device is not None:
            self._device.close()


def _open_device(kind: str, deadband: float) -> InputDevice | None:
    if kind == "spacemouse":
        from policy_runtime.teleop.spacemouse import SpaceMouse

        try:
            return SpaceMouse.open(deadband=deadband)
        except TeleopDeviceError as exc:
            raise ValueError(f"input spacemouse: {exc}") from exc
    if kind == "keyboard":
        from policy_runtime.teleop.keyboard import TerminalKeyboard

        try:
            return TerminalKeyboard()
        except TeleopDeviceError as exc:
            raise ValueError(f"input keyboard: {exc}") from exc
    return None


def main() -> None:
    from policy_runtime.ros.params import run_nodes

    raise SystemExit(run_nodes(lambda: [TeleopNode()]))
