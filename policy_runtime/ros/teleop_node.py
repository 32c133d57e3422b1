"""Teleoperation: the operator's device takes the policy's place in front of the executor.

To the executor this node is a policy server whose policy is the operator: it publishes a
policy description (end-effector actions, one per period, due a period after their time, like
the simulator's demonstrations) and answers each chunk request with the operator's newest
target (:class:`~policy_runtime.teleop.TeleopTargets`). Targets are set once per period on the
ROS clock's whole multiples of the period (``control_hz``), from the device's newest reading,
as Diffusion Policy's teleop loop sets one per cycle. Everything that moves the arm is the policy's
stack: engine, supervisor, ``ControlLoop``, safety filter, watchdog, streaming to the UR
driver's ``forward_position_controller``; so teleop works against the sim bridge and, unchanged,
against the robot, with the same limits. If this node dies the executor's chunks run out and it
holds the arm.

Input (``input``): ``joy`` (sensor_msgs/Joy on ``~/joy``: six axes in REP 103 and buttons, e.g.
remapped to spacenav_node's ``/spacenav/joy``; a scripted operator publishes here),
``spacemouse`` (a 3Dconnexion device through pyspacemouse) or ``keyboard`` (this terminal).
Outputs for the recorder: ``~/target`` (PoseStamped, base_link) and ``~/gripper`` (JointState
``gripper``), stamped with their period's time: the action of that time, so a recording whose
grid falls on them (``grid_stream``) holds each target at exactly its time.
``~/reset`` (Trigger) puts the target back on the measured TCP (after the arm was moved by
something else, e.g. a simulator's reset).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from policy_runtime.alignment import STAMP_EPS
from policy_runtime.chunk import ActionChunk, ChunkPrefix
from policy_runtime.robots.poses import (
    EE_ACTION_DIM,
    ee_action_to_pose,
    matrix_from_quaternion,
    quaternion_from_matrix,
)
from policy_runtime.ros import qos
from policy_runtime.ros.diagnostics import diagnostic_array
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
    "max_lead_m": Param(0.04, "the target stays this close to the measured TCP", positive),
    "max_lead_rad": Param(0.25, "and this close in rotation", positive),
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
                max_lead_rad=p["max_lead_rad"],
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
        #: The newest periods' targets: (time, action), at whole multiples of dt.
        self._cycles: deque[tuple[float, np.ndarray]] = deque(maxlen=3)
        self._cycle_index: int | None = None
        #: A reset's time: the target waits for a TCP pose stamped at or after it.
        self._resync_after: float | None = None
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
        # Polled ten times a period: a tick's jitter does not matter, each sets the target of
        # the period it falls in, stamped with that period's exact time on the ROS clock.
        self.create_timer(self.dt / 10, self._cycle_tick)
        self._gripper_measured: float | None = None
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", qos.STREAM)
        steady_clock = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self._publish_diagnostics, clock=steady_clock)
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
            resync = self._resync_after is not None and t >= self._resync_after
            if resync:
                self.targets.sync(self._gripper_measured)
                self._resync_after = None
        if resync:
            self.get_logger().info(f"target back on the arm at {np.round(pose[:3, 3], 3)}")
        if t >= self._heartbeat_sent + 0.5 * self.dt:
            self._heartbeat_sent = t
            self.pub_observed.publish(Header(stamp=stamp(t)))

    def _on_gripper(self, msg: JointState) -> None:
        if "gripper" in msg.name:
            self._gripper_measured = float(msg.position[list(msg.name).index("gripper")])

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Put the target on the TCP as measured from now on (the pose on hand may predate a
        move: a simulator's reset); no target until then."""
        with self._lock:
            self._resync_after = self.get_clock().now().nanoseconds * 1e-9
            self._cycles.clear()
        response.success, response.message = True, "the target goes to the next measured TCP"
        return response

    # -- requests -------------------------------------------------------------------------------

    def _on_request(self, msg: JointTrajectory) -> None:
        t, prefix = request_from_msg(msg, self.info)
        self.request(t, prefix)

    def request(self, t: float, prefix: ChunkPrefix | None = None) -> None:
        """Answer the executor's request of time ``t`` with the newest target set at or before
        it, due a period after its own time. The chunk is stamped with ``t`` (the executor
        measures its latency from the stamp: an older stamp would read as a slow policy and
        make it ask again at once) and its due times count from there."""
        with self._lock:
            cycle = next((c for c in reversed(self._cycles) if c[0] <= t + STAMP_EPS), None)
        if cycle is None:
            return  # no target yet (no TCP pose): the executor asks again
        self.requests += 1
        t_target, action = cycle
        steps = np.arange(CHUNK_LENGTH, dtype=np.float64) + self.info.offset_steps
        due = np.maximum(t_target + steps * self.dt - t, 0.0)
        chunk = ActionChunk(np.repeat(action[None], CHUNK_LENGTH, axis=0), due, 1, self.dt)
        self.pub_chunk.publish(chunk_to_msg(chunk, t, self.info))

    def _cycle_tick(self) -> None:
        """Set the target of the newest whole period of the clock (a late tick catches up,
        moving the target by every period it missed, at most two) and publish it, stamped with
        that period's time: the action of that time."""
        now = self.get_clock().now().nanoseconds * 1e-9
        if now <= 0.0:
            return  # no clock yet (sim time before /clock)
        index = math.floor(now / self.dt + 1e-6)
        with self._lock:
            if self._resync_after is not None:
                return  # after a reset: no target until the TCP is measured again
            last = self._cycle_index
            steps = 1 if last is None else min(index - last, 2)
            if steps <= 0:
                return
            self._cycle_index = index
            action = None
            for _ in range(steps):
                action = self.targets.step(self.dt, time.monotonic())
            gripper = self.targets.gripper
            if action is None:
                return  # no TCP pose yet
            t = index * self.dt
            self._cycles.append((t, action))
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

    def _publish_diagnostics(self) -> None:
        """Whether the operator's input is live, how often the dead-man held, the target."""
        with self._lock:
            reading = self.targets.last_input
            pose = None if self.targets.pose is None else self.targets.pose[:3, 3].copy()
            gripper, holds = self.targets.gripper, self.targets.stale_inputs
        age = None if reading is None else time.monotonic() - reading.received
        live = age is not None and age <= self.targets.settings.input_timeout_s
        values = {
            "input": self.params["input"],
            "input_age_s": "none" if age is None else f"{age:.3f}",
            "dead_man_holds": str(holds),
            "requests": str(self.requests),
            "gripper": f"{gripper:g}",
            "target_m": "none" if pose is None else " ".join(f"{v:.4f}" for v in pose),
        }
        level = DiagnosticStatus.OK if live else DiagnosticStatus.WARN
        message = "input live" if live else "no input: holding"
        self.pub_diagnostics.publish(
            diagnostic_array(
                "policy_runtime: teleop",
                level,
                message,
                "ur",
                values,
                self.get_clock().now().to_msg(),
            )
        )

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
