"""The sim bridge: the MuJoCo UR5 cell as a ROS 2 robot, on the real drivers' topics.

A thread steps the cell one controller tick at a time, applying the newest command like
``servoj``, and publishes what ``ur_robot_driver`` and ``realsense2_camera`` publish:

==============================================================  ================================
``/joint_states`` (sensor_msgs/JointState)                      every tick, stamped, UR names
``/forward_position_controller/commands`` (Float64MultiArray)   in: 6 joint positions
``/scaled_joint_trajectory_controller/joint_trajectory``        in: JointTrajectory
``/speed_scaling_state_broadcaster/speed_scaling`` (Float64)     percent, 10 Hz and on change
``/io_and_status_controller/robot_program_running`` (Bool)      reliable + transient local
``/tcp_pose_broadcaster/pose`` (PoseStamped)                    TCP in ``base_link``, every tick
``/gripper_controller/commands`` (Float64MultiArray)            in: [opening], 0 closed .. 1 open
``/gripper/joint_states`` (JointState)                          ``gripper``: its opening
``/<camera_namespace>/<camera>/color/image_raw`` (Image rgb8)   ``camera_hz``, reliable
``.../color/camera_info``, ``.../aligned_depth_to_color/...``   K of the sim camera; 16UC1 mm
``/sim_bridge/task_state`` (JointState)                         the task's state, ``<key>/<i>``
``/sim_bridge/episode`` (DiagnosticArray, latched)              seed, step, success, score, done
``/clock`` (rosgraph_msgs/Clock)                                sim time (fast mode)
==============================================================  ================================

Services: ``~/reset`` (Trigger: the next episode, with the ``seed`` parameter, which then
counts up by one; the robot program runs from its first tick) and ``~/program_running``
(SetBool: stop or start the "robot program", as the teach pendant would). An episode ends at
its first status that says done: the program stops there (the arm holds) and the status keeps
that instant's values until the next reset. The gripper has no standard UR topic: its pair
mirrors a ros2_control forward command controller for one gripper joint.

Like the real driver: only the ``active_controller``'s command topic is subscribed (the driver
starts with ``scaled_joint_trajectory_controller``; a deployment switches to
``forward_position_controller``), and the ``speed_scaling`` parameter (percent, settable while
running, as the pendant's slider) slows the arm the way the robot does: each controller cycle
the arm goes that fraction of the way to the newest position command (the robot runs a
``servoj`` target meant for one cycle at the scaled speed). Trajectories are not slowed (the
trajectory controller's own time scaling is not modelled).

Real time (``realtime: true``, the default) ticks on the wall clock and stamps with it, like
the robot. Fast mode publishes ``/clock`` and steps as soon as the node named by
``lockstep_with`` (the executor) has answered the tick's joint states (``/executor/tick_done``:
stamp = the tick answered, frame_id = how many commands it sent for it, all of which must have
arrived): every node then follows ``/clock``, and results do not depend on the machine's speed.
For that, fast mode also announces after each tick the newest stamp it has published (or
scheduled: a frame still rendering) on each topic (``/sim_bridge/published``, JointState: names the
topics, positions their stamps; latched), which a lockstep policy server waits for, and sends
an episode's first sample once every subscriber has acknowledged the program's start (or, with
a warning, after ``lockstep_timeout_s``).
Also ``/diagnostics``: real-time factor, late ticks, frames rendered and skipped, the
joint-state period error and the joint-states-to-command round trip, refused commands.
"""

from __future__ import annotations

import copy
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import mujoco
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy._rclpy_pybind11 import RCLError
from rclpy.clock import Clock as RosClock
from rclpy.clock import ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, Header
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from policy_runtime.execution.realtime import raise_thread_priority
from policy_runtime.robots.poses import quaternion_from_matrix
from policy_runtime.robots.ur5 import JOINT_NAMES
from policy_runtime.ros import qos
from policy_runtime.ros.diagnostics import diagnostic_array, millisecond_quantiles
from policy_runtime.ros.messages import BASE_FRAME, image_to_msg, seconds, stamp
from policy_runtime.ros.params import Param, declare_parameters, fifo_priority, one_of, positive
from policy_runtime.ros.transforms import tf_message, tf_publisher, transform_stamped
from policy_runtime.serving.lockstep import PUBLISHED_TOPIC, TICK_DONE_TOPIC
from sim_bridge.cameras import CameraSpec, placed_cameras
from sim_bridge.cell import CellOptions, render_view
from sim_bridge.commands import CommandInbox


def _percent(value: float) -> str | None:
    return None if 0.0 <= value <= 100.0 else "must be within [0, 100]"


def _tasks(value: str) -> str | None:
    from sim_bridge.tasks import task_names

    return None if value in task_names() else f"must be one of {task_names()}"


PARAMETERS = {
    "task": Param("push_t", "the task of sim_bridge.tasks to run", _tasks),
    "variant": Param("", "the task's variant ('' : its first)"),
    "seed": Param(100_000, "the next episode's seed; each ~/reset uses it, then adds one"),
    "realtime": Param(
        True, "tick on the wall clock (the robot's way) or as fast as lockstep allows"
    ),
    "controller_hz": Param(125.0, "controller rate: 125 (UR5 CB3) or 500 (e-series)", positive),
    "lockstep_with": Param(
        "executor",
        "fast mode: the node whose /executor/tick_done each tick waits for ('' : none), for logs",
    ),
    "lockstep_timeout_s": Param(2.0, "fast mode: give up waiting for a tick after this", positive),
    "cameras": Param(["front", "wrist"], "sim cameras to publish (each its own namespace)"),
    "calibration_board": Param(
        "none", "a ChArUco board on the table or in the gripper", one_of("none", "table", "tool")
    ),
    "camera_calibrations": Param(
        [], "calibration YAMLs (prt calibrate) placing sim cameras where real ones are"
    ),
    "camera_namespace": Param("camera", "topics /<namespace>/<camera>/color/..."),
    "image_width": Param(640, "camera image width in pixels", positive),
    "image_height": Param(480, "camera image height in pixels", positive),
    "camera_hz": Param(30.0, "camera frame rate", positive),
    "depth": Param(True, "publish aligned depth (16UC1, mm) with each colour frame"),
    "speed_scaling": Param(
        100.0, "the pendant's speed slider in percent (slows the arm; settable)", _percent
    ),
    "active_controller": Param(
        "forward_position_controller",
        "the controller whose command topic is subscribed",
        one_of("forward_position_controller", "scaled_joint_trajectory_controller"),
    ),
    "max_command_jump_rad": Param(0.5, "a command this far from the last is refused", positive),
    "settle_ticks": Param(3, "ticks the arm stands at its start pose, program off, per reset"),
    "realtime_priority": Param(
        0,
        "SCHED_FIFO priority (1-99) of the tick thread, as the driver's; 0: normal",
        fifo_priority,
    ),
}


class CameraPublishers(NamedTuple):
    color: Publisher
    info: Publisher
    depth: Publisher | None


def _calibrated_cameras(paths: list[str]) -> tuple[CameraSpec, ...]:
    """The cell's cameras, those calibrated in ``paths`` placed and focused as the real ones;
    ValueError naming the file for one that does not load or fit."""
    from calibration.result import CameraCalibration

    placements = {}
    for path in paths:
        calibration = CameraCalibration.load(path)
        placements[calibration.camera] = calibration.sim_placement()
    try:
        return placed_cameras(CellOptions().cameras, placements)
    except ValueError as exc:
        raise ValueError(f"parameter 'camera_calibrations': {exc}") from exc


class SimBridge(Node):
    """See the module docs."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("sim_bridge", **kwargs)  # type: ignore[arg-type]
        p = declare_parameters(self, PARAMETERS)
        from sim_bridge.env import make_env

        self.realtime: bool = p["realtime"]
        if self.get_parameter("use_sim_time").value:
            # The bridge is the clock: following its own /clock would only cost a callback a
            # tick. Its stamps come from now() below in either mode.
            self.set_parameters([Parameter("use_sim_time", value=False)])
        self.env = make_env(
            p["task"],
            p["variant"] or None,
            cameras=(),
            control_hz=p["controller_hz"],
            camera_specs=_calibrated_cameras(list(p["camera_calibrations"])),
            calibration_board=p["calibration_board"],
        )
        self.cell = self.env.cell
        cameras = [c.name for c in self.env.options.cell.cameras]
        unknown = [c for c in p["cameras"] if c not in cameras]
        if unknown:
            raise ValueError(f"parameter 'cameras': no sim camera {unknown}; there are {cameras}")
        self.period = 1.0 / p["controller_hz"]
        self.params = p
        self.inbox = CommandInbox(p["max_command_jump_rad"])
        self._refusal_logged: dict[str, float] = {}
        self._lock = threading.Lock()
        self._gripper: float | None = None
        self._reset_requested = False
        self._program = False  # each episode starts it (see _start_episode)
        self._offset = 0.0  # ROS time of sim time 0 of this episode (fast mode)
        self._episode_start = 0.0  # ROS time the episode started
        self._episode_over = False
        self._episode = 0
        self._episode_seed = int(p["seed"])
        self._acked = (-math.inf, 0)
        # Lockstep starts with the lockstep node's first answer (it may start after the bridge).
        self._ack_lost = True
        #: Commands (joint and gripper) received since the last tick was stepped: the lockstep
        #: node's answer names how many it sent for the tick, and all of them must be here.
        self._commands_this_tick = 0
        self._ack_cv = threading.Condition(self._lock)
        self._stop = threading.Event()
        self.stats = {"ticks": 0, "late_ticks": 0, "frames": 0, "frames_skipped": 0}
        #: Wall seconds from publishing a tick's joint states to receiving a command (the
        #: executor's answer, DDS both ways), recent ticks.
        self.command_latency: deque[float] = deque(maxlen=2000)
        self._joints_sent_at = 0.0
        #: Real time: |interval - period| between joint-state messages (the driver's jitter).
        self.period_errors: deque[float] = deque(maxlen=2000)
        self._rtf_mark = (time.monotonic(), 0.0)

        self.pub_joints = self.create_publisher(JointState, "/joint_states", qos.STREAM)
        self.pub_tcp = self.create_publisher(PoseStamped, "/tcp_pose_broadcaster/pose", qos.STREAM)
        self.pub_scaling = self.create_publisher(
            Float64, "/speed_scaling_state_broadcaster/speed_scaling", qos.STREAM
        )
        self.pub_program = self.create_publisher(
            Bool, "/io_and_status_controller/robot_program_running", qos.LATCHED
        )
        self.pub_gripper = self.create_publisher(JointState, "/gripper/joint_states", qos.STREAM)
        self.pub_task = self.create_publisher(JointState, "~/task_state", qos.STREAM)
        #: What every tick publishes (the stamp each announcement names for them).
        self._state_publishers = (self.pub_joints, self.pub_tcp, self.pub_gripper, self.pub_task)
        self.pub_episode = self.create_publisher(DiagnosticArray, "~/episode", qos.LATCHED)
        self.pub_clock = (
            None if self.realtime else self.create_publisher(Clock, "/clock", qos.CLOCK)
        )
        #: Fast mode: after each tick, the newest stamp published (or scheduled, a frame still
        #: rendering) on each topic, so a lockstep policy server knows when all has arrived.
        self.pub_published = (
            None
            if self.realtime
            else self.create_publisher(JointState, PUBLISHED_TOPIC, qos.LATCHED)
        )
        self.pub_tf = tf_publisher(
            self,
            "/tf",
            qos.STREAM,
            "the TCP pose is on /tcp_pose_broadcaster/pose, the cameras' frames name their images",
        )
        self.cameras = {name: self._camera_publishers(name) for name in p["cameras"]}
        #: The newest stamp published (or scheduled) on each topic; -inf: nothing yet.
        camera_publishers = [
            pub for pubs in self.cameras.values() for pub in pubs if pub is not None
        ]
        self._published = {
            publisher.topic_name: -math.inf
            for publisher in (*self._state_publishers, *camera_publishers)
        }
        self._camera_period = 1.0 / p["camera_hz"]
        self._next_frame = 0.0
        # One frame in the queue at most: real time skips frames, fast mode waits for a slot.
        self._frame_queue: queue.Queue[tuple[mujoco.MjData, float] | None] = queue.Queue(1)
        self._renderer = threading.Thread(
            target=self._render_loop, name="sim_bridge_render", daemon=True
        )
        self._renderer.start()

        if p["active_controller"] == "forward_position_controller":
            self.create_subscription(
                Float64MultiArray,
                "/forward_position_controller/commands",
                self._on_command,
                qos.STREAM,
            )
        else:
            self.create_subscription(
                JointTrajectory,
                "/scaled_joint_trajectory_controller/joint_trajectory",
                self._on_trajectory,
                qos.STREAM,
            )
        self._speed_scaling = float(p["speed_scaling"])
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_subscription(
            Float64MultiArray, "/gripper_controller/commands", self._on_gripper, qos.STREAM
        )
        if not self.realtime and p["lockstep_with"]:
            self.create_subscription(Header, TICK_DONE_TOPIC, self._on_tick_done, qos.STREAM)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(SetBool, "~/program_running", self._on_program)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", qos.STREAM)
        self.create_timer(
            1.0, self._publish_diagnostics, clock=RosClock(clock_type=ClockType.STEADY_TIME)
        )

        self._start_episode()
        self._thread = threading.Thread(target=self._run, name="sim_bridge_ticks", daemon=True)
        self._thread.start()

    # -- time ---------------------------------------------------------------------------------

    def now(self) -> float:
        """The time to stamp with: the wall clock (real time) or this episode's sim time."""
        if self.realtime:
            return time.time()
        return self._offset + self.env.time

    # -- inputs (callbacks: short, under the lock) -----------------------------------------------

    def _on_command(self, msg: Float64MultiArray) -> None:
        received = time.monotonic()
        with self._lock:
            self._commands_this_tick += 1
            self.command_latency.append(received - self._joints_sent_at)
            problem = self.inbox.offer_positions(msg.data, self.env.commanded_joints)
            self._ack_cv.notify_all()
        if problem is not None:
            self._log_refusal("/forward_position_controller/commands", problem, list(msg.data))

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        with self._lock:
            start = seconds(msg.header.stamp) or self.now()
            problem = self.inbox.offer_trajectory(
                msg.joint_names,
                [list(p.positions) for p in msg.points],
                [seconds(p.time_from_start) for p in msg.points],
                start - self._offset if not self.realtime else start,
                self.env.commanded_joints,
            )
        if problem is not None:
            self._log_refusal("/scaled_joint_trajectory_controller/joint_trajectory", problem, [])

    def _log_refusal(self, topic: str, reason: str, values: list[float]) -> None:
        """Log a refused command, at most once a second per reason (each is counted)."""
        now = time.monotonic()
        if now - self._refusal_logged.get(reason, -math.inf) >= 1.0:
            self._refusal_logged[reason] = now
            count = self.inbox.counts[reason]
            self.get_logger().warning(f"{topic}: refused ({reason}, {count} so far): {values}")

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        good = len(msg.data) == 1 and math.isfinite(msg.data[0])
        with self._lock:
            self._commands_this_tick += 1  # received, taken or not (the lockstep count)
            if good:
                self._gripper = float(np.clip(msg.data[0], 0.0, 1.0))
            self._ack_cv.notify_all()
        if not good:
            self.get_logger().warning(f"/gripper_controller/commands refused: {list(msg.data)}")

    def _on_tick_done(self, msg: Header) -> None:
        try:
            commands = int(msg.frame_id or 0)
        except ValueError:
            self.get_logger().warning(f"{TICK_DONE_TOPIC}: frame_id {msg.frame_id!r} is no count")
            return
        with self._lock:
            self._acked = (seconds(msg.stamp), commands)
            self._ack_lost = False
            self._ack_cv.notify_all()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Ask the tick thread for a new episode and return at once (the reset runs between two
        ticks; waiting here would block the callbacks the settle ticks wait for). The episode
        status (``~/episode``) announces the new episode when it has started."""
        with self._lock:
            self._reset_requested = True
        seed = int(self.get_parameter("seed").value)
        response.success = True
        response.message = f"episode {self._episode + 1} with seed {seed} starts after this tick"
        return response

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """``speed_scaling`` takes effect at the next tick and is published at once (the
        pendant's slider); ``seed`` is read at the next reset."""
        for parameter in parameters:
            if parameter.name == "speed_scaling":
                problem = _percent(float(parameter.value))
                if problem is not None:
                    return SetParametersResult(successful=False, reason=f"speed_scaling {problem}")
        for parameter in parameters:
            if parameter.name == "speed_scaling":
                with self._lock:
                    self._speed_scaling = float(parameter.value)
                self.pub_scaling.publish(Float64(data=float(parameter.value)))
        return SetParametersResult(successful=True)

    def _on_program(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._lock:
            self._program = bool(request.data)
            self.inbox.clear()
        self._publish_program()
        response.success, response.message = True, f"program running: {self._program}"
        return response

    # -- the tick thread ------------------------------------------------------------------------

    def _run(self) -> None:
        self._until_shutdown(self._tick_loop)

    def _tick_loop(self) -> None:
        problem = raise_thread_priority(self.params["realtime_priority"])
        if problem is not None:
            self.get_logger().warning(f"realtime_priority: {problem}; ticking normally")
        next_tick = time.monotonic()
        while not self._stop.is_set() and self.context.ok():
            with self._lock:
                reset, self._reset_requested = self._reset_requested, False
            if reset:
                self._start_episode()
            self._tick()
            if self.realtime:
                next_tick += self.period
                delay = next_tick - time.monotonic()
                if delay < -self.period:  # more than a period late: count it, do not catch up
                    self.stats["late_ticks"] += 1
                    next_tick = time.monotonic()
                elif delay > 0:
                    _sleep_until(next_tick)
            else:
                self._wait_for_ack()

    def _tick(self) -> None:
        with self._lock:
            t_cmd = self.env.time if not self.realtime else time.time()
            q = self.inbox.command_at(t_cmd) if self._program else None
            if q is not None and self._speed_scaling < 100.0:
                # The robot runs the cycle's target at the scaled speed: part of the way.
                current = self.env.commanded_joints
                q = current + (self._speed_scaling / 100.0) * (q - current)
            gripper, self._gripper = self._gripper, None
            period_ended = self.env.tick(q, gripper)
        t = self.now()
        self.stats["ticks"] += 1
        self._publish_clock(t)
        self._publish_state(t)
        if period_ended:
            if not self._episode_over:
                self._publish_episode(t)
            self.pub_scaling.publish(Float64(data=self._speed_scaling))
        if self.cameras and self.env.time + 1e-9 >= self._next_frame:
            self._next_frame += self._camera_period * max(
                1, math.floor((self.env.time - self._next_frame) / self._camera_period) + 1
            )
            self._render_cameras(t)
        self._announce(t)

    def _wait_for_ack(self, t: float | None = None) -> None:
        """Fast mode: block until the lockstep node answered this tick. After a timeout it
        stops waiting (a node that died must not slow every tick) until it answers again."""
        if self.realtime or not self.params["lockstep_with"] or self._ack_lost:
            return
        t = self.now() if t is None else t
        deadline = time.monotonic() + self.params["lockstep_timeout_s"]
        with self._lock:
            while not self._stop.is_set():
                acked_t, commands = self._acked
                if acked_t >= t - 1e-6 and self._commands_this_tick >= commands:
                    self._commands_this_tick = 0
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    self._ack_lost = True
                    self.get_logger().warning(
                        f"{TICK_DONE_TOPIC}: no answer to t={t:.3f} within "
                        f"{self.params['lockstep_timeout_s']} s; stepping on without "
                        f"{self.params['lockstep_with']} until it answers again"
                    )
                    return
                self._ack_cv.wait(timeout=min(left, 0.1))

    def _start_episode(self) -> None:
        """Reset the cell with the ``seed`` parameter (then counted up by one) and start the
        episode with the robot program running.

        The program is off during the reset: the arm standing at its new start pose is
        published for ``settle_ticks`` ticks before the episode's first (as a robot's joint
        states flow before a program starts), so the executor follows the arm there; the
        episode's first tick then runs with the program on.
        """
        with self._lock:
            self._program = False
            self.inbox.clear()
            self._gripper = None
        self._publish_program()
        before = self.now()
        seed = int(self.get_parameter("seed").value)
        self.env.reset(seed)
        settle = int(self.params["settle_ticks"])
        with self._lock:
            if not self.realtime:
                # Sim time keeps counting across episodes (ROS time must not go back): the new
                # episode starts on a whole second, more than a second after the last tick.
                start = float(math.ceil(before + 1.0 + settle * self.period))
                self._offset = start - self.env.time
            self._episode += 1
            self._episode_seed = seed
            self._episode_over = False
            self._next_frame = self.env.time
        self.set_parameters([Parameter("seed", value=seed + 1)])
        for k in range(settle, 0, -1):
            t = time.time() if self.realtime else self._offset + self.env.time - k * self.period
            self._publish_clock(t)
            self._publish_state(t)
            self._announce(t)
            if self.realtime:
                time.sleep(self.period)
            else:
                self._wait_for_ack(t)
        with self._lock:
            self._program = True
            self.inbox.clear()
        self._publish_program()
        if not self.realtime:
            # The episode's first sample must find the executor with the program on: had it
            # not received the program's message yet, it would hold at that sample and ask for
            # its first chunk a tick later, and the episode would depend on DDS's timing.
            # Acknowledged, the message is in each reader before the sample is sent; the
            # executor takes it first (it subscribes to the program before the joint states).
            self._wait_for_program_acknowledged()
        self._episode_start = self.now()
        self._publish_clock(self._episode_start)
        self._publish_state(self._episode_start)
        self._announce(self._episode_start)
        self._publish_episode(self._episode_start)
        self._wait_for_ack(self._episode_start)

    def _wait_for_program_acknowledged(self) -> None:
        """Fast mode: wait until every subscriber has the program's state, at most
        ``lockstep_timeout_s`` (then warn and go on), in short waits :meth:`close` can end."""
        deadline = time.monotonic() + self.params["lockstep_timeout_s"]
        while not self.pub_program.wait_for_all_acked(Duration(seconds=0.05)):
            if self._stop.is_set():
                return
            if time.monotonic() > deadline:
                self.get_logger().warning(
                    "/io_and_status_controller/robot_program_running: not acknowledged within "
                    f"{self.params['lockstep_timeout_s']} s; starting the episode anyway"
                )
                return

    def _publish_clock(self, t: float) -> None:
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=stamp(t)))

    # -- outputs --------------------------------------------------------------------------------

    def _publish_tf(self, publisher: Publisher, header_stamp: Time) -> None:
        """``base_link`` -> ``base`` (pi about z, the controller's frame), ``tcp`` and each
        camera's optical frame (the names realsense-ros uses with ``camera_name``)."""
        base_inverse = np.linalg.inv(self.cell.body_pose("base_link"))
        turn = np.diag([-1.0, -1.0, 1.0, 1.0])
        poses = {"base": turn, "tcp": self.env.tcp_pose()}
        for name in self.cameras:
            poses[self._optical_frame(name)] = base_inverse @ self.cell.camera_pose(name)
        transforms = [
            transform_stamped(
                pose[:3, 3], quaternion_from_matrix(pose[:3, :3]), BASE_FRAME, child, header_stamp
            )
            for child, pose in poses.items()
        ]
        publisher.publish(tf_message(transforms))

    def _publish_state(self, t: float) -> None:
        header_stamp = stamp(t)
        joints = JointState()
        joints.header.stamp = header_stamp
        joints.name = list(JOINT_NAMES)
        joints.position = self.cell.joint_positions.tolist()
        joints.velocity = self.cell.joint_velocities.tolist()
        joints.effort = self.cell.joint_efforts.tolist()
        self.pub_joints.publish(joints)
        sent = time.monotonic()
        if self.realtime and self._joints_sent_at:
            self.period_errors.append(abs(sent - self._joints_sent_at - self.period))
        self._joints_sent_at = sent
        if self.pub_tf is not None:
            self._publish_tf(self.pub_tf, header_stamp)

        tcp = self.env.tcp_pose()
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = header_stamp, BASE_FRAME
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = tcp[:3, 3].tolist()
        qx, qy, qz, qw = quaternion_from_matrix(tcp[:3, :3]).tolist()
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = qx, qy, qz, qw
        self.pub_tcp.publish(pose)

        gripper = JointState()
        gripper.header.stamp = header_stamp
        gripper.name, gripper.position = ["gripper"], [self.cell.gripper_opening]
        self.pub_gripper.publish(gripper)

        state = JointState()
        state.header.stamp = header_stamp
        for key, value in self.env.task.observation(self.env).items():
            flat = np.asarray(value, dtype=np.float64).reshape(-1)
            state.name.extend(f"{key}/{i}" for i in range(flat.size))
            state.position.extend(flat.tolist())
        self.pub_task.publish(state)
        for publisher in self._state_publishers:
            self._published[publisher.topic_name] = t

    def _announce(self, t: float) -> None:
        """Fast mode: announce what has been published (or scheduled) up to tick ``t``."""
        if self.pub_published is not None:
            msg = JointState(name=list(self._published), position=list(self._published.values()))
            msg.header.stamp = stamp(t)
            self.pub_published.publish(msg)

    def _publish_episode(self, t: float) -> None:
        """The episode's status; the first one that says done is the last: the program stops
        (the arm holds) and the status stays as it was at that instant until the next reset."""
        env = self.env
        success = env.success()
        done = success or env.steps >= env.task.max_steps
        values = {
            "episode": str(self._episode),
            "seed": str(self._episode_seed),
            "task": env.task.name,
            "variant": env.task.variant,
            "step": str(env.steps),
            "max_steps": str(env.task.max_steps),
            "success": str(success).lower(),
            "score": f"{env.score():.6f}",
            "done": str(done).lower(),
            "start": f"{self._episode_start:.9f}",
        }
        message = "done" if done else "running"
        array = diagnostic_array(
            "sim_bridge: episode", DiagnosticStatus.OK, message, "mujoco", values, stamp(t)
        )
        self.pub_episode.publish(array)
        if done:
            self._episode_over = True
            with self._lock:
                self._program = False
                self.inbox.clear()
            self._publish_program()

    def _publish_diagnostics(self) -> None:
        """Real-time factor, late ticks, frames, command latency, refused commands."""
        now, sim = time.monotonic(), self.stats["ticks"] * self.period  # sim seconds stepped
        mark_wall, mark_sim = self._rtf_mark
        self._rtf_mark = (now, sim)
        with self._lock:
            latency, errors = list(self.command_latency), list(self.period_errors)
        values = {
            **{k: str(v) for k, v in self.stats.items()},
            **{f"refused.{k}": str(v) for k, v in self.inbox.counts.items() if v},
            "real_time_factor": f"{(sim - mark_sim) / max(now - mark_wall, 1e-9):.3f}",
            **millisecond_quantiles("command_latency", latency),
            **millisecond_quantiles("period_error", errors),
        }
        message = "real time" if self.realtime else "fast (lockstep)"
        array = diagnostic_array(
            "sim_bridge: cell", DiagnosticStatus.OK, message, "mujoco", values, stamp(self.now())
        )
        self.pub_diagnostics.publish(array)

    def _publish_program(self) -> None:
        self.pub_program.publish(Bool(data=self._program))

    def _optical_frame(self, camera: str) -> str:
        """The colour optical frame of a camera, as realsense-ros names it."""
        return f"{camera}_color_optical_frame"

    def _camera_publishers(self, name: str) -> CameraPublishers:
        base = f"/{self.params['camera_namespace']}/{name}"
        return CameraPublishers(
            self.create_publisher(Image, f"{base}/color/image_raw", qos.SENSOR_PUBLISH),
            self.create_publisher(CameraInfo, f"{base}/color/camera_info", qos.SENSOR_PUBLISH),
            self.create_publisher(
                Image, f"{base}/aligned_depth_to_color/image_raw", qos.SENSOR_PUBLISH
            )
            if self.params["depth"]
            else None,
        )

    def _render_cameras(self, t: float) -> None:
        """Hand a snapshot of the state at ``t`` to the render thread, so a frame does not delay
        the next tick. Real time skips a frame while the last still renders (counted); fast mode
        waits for it (the frames then never depend on the machine's speed)."""
        if self.realtime and self._frame_queue.full():
            self.stats["frames_skipped"] += 1
            return
        self._frame_queue.put((copy.copy(self.cell.data), t))
        for publishers in self.cameras.values():
            for publisher in publishers:
                if publisher is not None:
                    self._published[publisher.topic_name] = t

    def _render_loop(self) -> None:
        self._until_shutdown(self._render_frames)

    def _until_shutdown(self, loop: Callable[[], None]) -> None:
        """Run a thread's ``loop``: a shut-down context (Ctrl-C) ends it quietly, as a publish
        then fails; any other failure is raised."""
        try:
            loop()
        except RCLError:
            if self.context.ok():
                raise

    def _render_frames(self) -> None:
        renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        size = (int(self.params["image_width"]), int(self.params["image_height"]))
        model = self.cell.model
        while True:
            item = self._frame_queue.get()
            if item is None:
                break
            data, t = item
            for name, publishers in self.cameras.items():
                frame = self._optical_frame(name)
                rgb = render_view(renderers, model, data, name, size)
                publishers.color.publish(image_to_msg(rgb, t, frame, "rgb8"))
                publishers.info.publish(self._camera_info(name, *size, t, frame))
                if publishers.depth is not None:
                    metres = render_view(renderers, model, data, name, size, depth=True)
                    mm = np.clip(np.rint(metres * 1000.0), 0, 65535).astype(np.uint16)
                    publishers.depth.publish(image_to_msg(mm, t, frame, "16UC1"))
            self.stats["frames"] += 1
            self._frame_queue.task_done()
        for renderer in renderers.values():
            renderer.close()

    def _camera_info(self, name: str, width: int, height: int, t: float, frame: str) -> CameraInfo:
        k = self.cell.camera_intrinsics(name, width, height)
        info = CameraInfo()
        info.header.stamp, info.header.frame_id = stamp(t), frame
        info.width, info.height = width, height
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        info.k = k.reshape(-1).tolist()
        info.r = np.eye(3).reshape(-1).tolist()
        info.p = np.hstack([k, np.zeros((3, 1))]).reshape(-1).tolist()
        return info

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._ack_cv.notify_all()
        self._thread.join(timeout=2.0)
        try:
            while True:  # drop a frame still waiting: the render thread ends at the None
                self._frame_queue.get_nowait()
        except queue.Empty:
            pass
        self._frame_queue.put(None)
        self._renderer.join(timeout=5.0)
        self.env.close()


def _sleep_until(deadline: float) -> None:
    """Sleep to within half a millisecond of ``deadline`` (monotonic), then spin: the kernel's
    sleep granularity would otherwise add its jitter to every tick."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if left > 0.0005:
            time.sleep(left - 0.0005)


def main() -> None:
    from policy_runtime.ros.params import run_nodes
    from sim_bridge.gl import configure_headless_rendering

    configure_headless_rendering()
    raise SystemExit(run_nodes(lambda: [SimBridge()]))
