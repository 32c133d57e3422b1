"""The executor: chunks in, a joint command per controller cycle out to the UR driver.

It runs :mod:`policy_runtime.execution` (engine, supervisor, watchdog, IK, safety filter: the
:class:`~policy_runtime.execution.ControlLoop` that ``prt eval`` runs) and streams its commands
to ``/forward_position_controller/commands``.

Timing source, on purpose: one tick per ``/joint_states`` sample, stamped with the sample's
stamp, like a ros2_control update. The driver publishes joint states once per controller cycle
(125 Hz on a CB3, 500 Hz on an e-series), so this never publishes faster than the controller
reads and never pauses while the driver runs; an rclpy timer would alias against the
controller's cycle (and at 500 Hz is unreliable), and a sleep loop would need a second clock
agreeing with the driver's. Ticks hold the arm whenever the loop says so. Only the newest
joint state is kept (``qos.NEWEST``): a tick that runs late skips the samples that came
meanwhile instead of answering each late; the objects of start-up are frozen out of the
garbage collector's scans (``gc.freeze``). ``realtime_priority`` runs the ticks under
``SCHED_FIFO``: in a process of its own, every thread of it (the middleware's receive threads
deliver the samples); composed with the server, the ticking thread only (not inference).

Inputs: ``/io_and_status_controller/robot_program_running`` (latched; off: no commands, the
loop follows the arm, and once the loop has moved the arm a stop latched until ``~/reset``),
``/speed_scaling_state_broadcaster/speed_scaling`` (percent; below the config's
``min_speed_scaling_percent``: hold), ``~/estop`` (std_msgs/Bool; true stops, latched until
``~/reset``), the policy server's description, chunks and observation heartbeat.
``~/reset`` (Trigger) is the operator's reset after a stop. ``/diagnostics``: state, tick
jitter and cost, holds by reason, interventions, request-to-chunk and observation-to-chunk
latency.

Arming and shadow mode (``require_arming: true``, the real cell's launch file): the executor
starts disarmed. Disarmed, the whole loop runs on the real topics against a virtual arm that
starts where the real one is and follows every command exactly, and its commands go to
``~/shadow/joint_commands`` (JointState, stamped, UR names, and ``gripper``) while nothing
reaches the controller: the arm holds, and ``prt shadow-report`` shows where the commands
would have taken it. ``~/arm`` (SetBool) arms: refused while nothing subscribes to the
controller's command topic (the driver's ``forward_position_controller`` is not active), while
the robot program is off, or before the policy and the joint states are known; arming builds a
fresh loop that starts at rest from the measured arm and waits for a chunk that starts near
it. Disarming is refused while the arm moves (stop it first: it would stop streaming while
moving, which the driver answers with a protective stop); the loop then returns to shadow.

Lockstep (simulation faster than real time, ``lockstep: true``): a tick waits, without
blocking the callbacks, for the chunk of a request older than ``lockstep_latency_s`` and for the
server's observations of the last policy period, and every answered sample is acknowledged on
``/executor/tick_done`` (stamp: the sample's, frame_id: the commands sent for it) for the sim
bridge.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, Header, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from policy_runtime.chunk import ActionChunk, ChunkPrefix
from policy_runtime.execution import ControlLoop, ExecutorConfig, FakeClock, JointCommand
from policy_runtime.execution.kinematics import EeToJoint
from policy_runtime.execution.realtime import raise_process_priority, raise_thread_priority
from policy_runtime.robots.ur5 import JOINT_NAMES
from policy_runtime.ros import qos
from policy_runtime.ros.diagnostics import diagnostic_array, millisecond_quantiles
from policy_runtime.ros.messages import chunk_from_msg, request_to_msg, seconds, stamp
from policy_runtime.ros.params import (
    Param,
    declare_parameters,
    fifo_priority,
    non_negative,
    positive,
)
from policy_runtime.serving.decode import DecodeError, NamePicker
from policy_runtime.serving.lockstep import TICK_DONE_TOPIC
from policy_runtime.serving.server import PolicyInfo

#: The policy server's topics (remap them to talk to a server elsewhere).
INFO_TOPIC = "/policy_server/policy_info"
JOINT_CHUNK_TOPIC = "/policy_server/joint_chunk"
EE_CHUNK_TOPIC = "/policy_server/ee_chunk"
REQUEST_TOPIC = "/policy_server/request"
OBSERVED_TOPIC = "/policy_server/observed"
#: The UR driver's position streaming topic (``forward_position_controller``).
COMMAND_TOPIC = "/forward_position_controller/commands"

PARAMETERS = {
    "executor_config": Param("", "executor YAML (config/executor_ur5.yaml); '' : its defaults"),
    "deployment": Param("", "deployment YAML (its executor section and TCP; replaces the above)"),
    "require_arming": Param(False, "start disarmed (shadow mode) until ~/arm; the real cell's way"),
    "lockstep": Param(False, "simulation faster than real time: wait for the server in sim time"),
    "lockstep_latency_s": Param(
        0.0, "lockstep: sim seconds from a request to its chunk", non_negative
    ),
    "lockstep_timeout_s": Param(2.0, "lockstep: wall seconds to wait for the server", positive),
    "diagnostics_period_s": Param(1.0, "seconds between /diagnostics messages", positive),
    "realtime_priority": Param(
        0, "SCHED_FIFO priority (1-99) of the ticking thread; 0: normal", fifo_priority
    ),
}


@dataclass(frozen=True)
class Sample:
    t: float
    q: np.ndarray
    received: float  # monotonic


#: ``request(t, prefix)``: ask for the chunk of time ``t`` (real-time chunking: with the
#: committed prefix). Over DDS between processes, a direct call when composed with the server.
RequestChunk = Callable[[float, ChunkPrefix | None], None]


class Executor(Node):
    """See the module docs. ``request`` replaces the DDS request topic (composition)."""

    def __init__(self, request: RequestChunk | None = None, **kwargs: object) -> None:
        composed = request is not None
        super().__init__("executor", **kwargs)  # type: ignore[arg-type]
        p = declare_parameters(self, PARAMETERS)
        self.config, self.kinematics = _executor_config(p["executor_config"], p["deployment"])
        self.params = p
        self.period = self.config.loop.period_s
        self.clock = FakeClock(0.0)
        self.loop: ControlLoop | None = None
        self.info: PolicyInfo | None = None
        self._lock = threading.RLock()
        self._joints = NamePicker(JOINT_NAMES)
        self._program_running = True
        self._speed_scaling = 100.0
        self._estop = False
        self._estop_pressed = False
        self._requested_at: float | None = None
        self._observed: float = -math.inf
        self._deferred: Sample | None = None
        self._server_silent = False  # lockstep gave up waiting: do not wait again until heard
        self._gripper_sent: float | None = None
        self.armed = not p["require_arming"]
        #: Disarmed: the virtual arm the loop drives (None until the first sample).
        self._shadow_q: np.ndarray | None = None
        self._q_measured: np.ndarray | None = None
        self._priority_set = False
        self.commands_sent = 0
        self.ticks_skipped = 0
        self.intervals: deque[float] = deque(maxlen=1000)
        #: Wall seconds from the observation (its stamp; real time only) and from the request
        #: to the chunk's arrival.
        self.latencies: deque[float] = deque(maxlen=1000)
        self.round_trips: deque[float] = deque(maxlen=1000)
        #: Wall seconds a tick takes, from the sample's callback to the command sent.
        self.tick_costs: deque[float] = deque(maxlen=1000)
        #: Wall seconds a chunk message takes to decode and submit (on the ticking thread).
        self.chunk_costs: deque[float] = deque(maxlen=1000)
        self._request_wall = 0.0
        self._last_publish: float | None = None

        self.pub_command = self.create_publisher(Float64MultiArray, COMMAND_TOPIC, qos.STREAM)
        self.pub_shadow = self.create_publisher(JointState, "~/shadow/joint_commands", qos.STREAM)
        self.pub_gripper = self.create_publisher(
            Float64MultiArray, "/gripper_controller/commands", qos.STREAM
        )
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", qos.STREAM)
        self.pub_tick_done = (
            self.create_publisher(Header, TICK_DONE_TOPIC, qos.STREAM) if p["lockstep"] else None
        )
        if request is None:
            publisher = self.create_publisher(JointTrajectory, REQUEST_TOPIC, qos.STREAM)

            def request(t: float, prefix: ChunkPrefix | None) -> None:
                publisher.publish(request_to_msg(t, prefix))

            self.create_subscription(
                JointTrajectory, JOINT_CHUNK_TOPIC, self._on_chunk_msg, qos.STREAM
            )
            self.create_subscription(
                MultiDOFJointTrajectory, EE_CHUNK_TOPIC, self._on_chunk_msg, qos.STREAM
            )
            self.create_subscription(String, INFO_TOPIC, self._on_info_msg, qos.LATCHED)
            self.create_subscription(Header, OBSERVED_TOPIC, self._on_observed_msg, qos.STREAM)
        self.request = request
        self.composed = composed
        # The program's state before the joint states: rclpy's executor takes the messages
        # that are ready in the order the subscriptions were made, so a sample sent after the
        # program's message was acknowledged (a lockstep episode's first) is ticked knowing it.
        self.create_subscription(
            Bool, "/io_and_status_controller/robot_program_running", self._on_program, qos.LATCHED
        )
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, qos.NEWEST)
        self.create_subscription(
            Float64, "/speed_scaling_state_broadcaster/speed_scaling", self._on_scaling, qos.STREAM
        )
        self.create_subscription(Bool, "~/estop", self._on_estop, qos.STREAM)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(SetBool, "~/arm", self._on_arm)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics, clock=steady)
        if p["lockstep"]:
            self.create_timer(0.05, self._lockstep_timeout, clock=steady)
        # What start-up made lives as long as the process: keep the garbage collector from
        # scanning it (a full collection over it stalls a tick by tens of milliseconds on a
        # busy machine, measured here), so collections see only what the ticks create.
        gc.collect()
        gc.freeze()

    # -- the policy ---------------------------------------------------------------------------

    def set_policy(self, info: PolicyInfo) -> None:
        """The server's policy (its latched description). The first builds the loop for its
        action space; a later one with the same action space only changes how chunks are read
        (the loop's state, a latched stop included, carries on); one with another action space
        is refused: its chunks do not decode and the loop holds until the executor restarts."""
        with self._lock:
            if self.loop is None:
                self.info = info
                self.loop = self._build_loop(info)
                if self._estop_pressed:
                    self.loop.set_estop(True)  # latched by the supervisor at the first tick
                self.loop.set_estop(self._estop)
            elif info.action_space != self.loop.action_space:
                self.get_logger().error(
                    f"the policy server now serves {info.action_space} actions, this executor "
                    f"runs {self.loop.action_space} ones: its chunks are refused (restart the "
                    "executor to switch)"
                )
                return
            else:
                self.info = info
        self.get_logger().info(
            f"policy {info.kind}: {info.action_space} actions, {info.chunk_length} per chunk, "
            f"{info.n_action_steps} executed, dt {info.dt:g} s"
        )

    def chunk_arrived(self, chunk: ActionChunk, t_obs: float) -> None:
        """A chunk for this executor (from DDS or a composed server's thread)."""
        arrived, arrived_wall = time.monotonic(), time.time()
        with self._lock:
            loop = self.loop
            if loop is None:
                return
            if self._requested_at is not None:
                self.round_trips.append(arrived - self._request_wall)
            if not self.params["lockstep"]:  # stamps are the system clock
                self.latencies.append(arrived_wall - t_obs)
            report = loop.submit(chunk, t_obs)
            self._requested_at = None
            self._server_silent = False
            if report.status != "accepted" and report.status != "stale":
                self.get_logger().info(
                    f"chunk observed at {t_obs:.3f} refused: {report.status} {report.detail}",
                    throttle_duration_sec=1.0,
                )
        self._run_deferred()

    def request_unanswered(self, t_request: float | None = None) -> None:
        """The server answered the request of ``t_request`` (None: the one in flight) with no
        chunk (no data yet, stopped, a bad request): another may start at once. An answer to an
        older request than the one in flight changes nothing."""
        with self._lock:
            requested = self._requested_at
            if t_request is not None and (requested is None or abs(t_request - requested) > 1e-6):
                return
            if self.loop is not None:
                self.loop.engine.request_ended()
            self._requested_at = None
        self._run_deferred()

    def observed(self, t: float) -> None:
        """The server has every observation up to ``t`` (its heartbeat)."""
        with self._lock:
            self._observed = t
            self._server_silent = False
            if self.loop is not None:
                self.loop.observation_received(t)
        self._run_deferred()

    def _on_info_msg(self, msg: String) -> None:
        try:
            info = PolicyInfo.from_json(msg.data)
        except ValueError as exc:
            self.get_logger().error(f"{INFO_TOPIC}: not a policy description ({exc})")
            return
        self.set_policy(info)

    def _on_chunk_msg(self, msg: JointTrajectory | MultiDOFJointTrajectory) -> None:
        start = time.monotonic()
        self._take_chunk_msg(msg)
        self.chunk_costs.append(time.monotonic() - start)

    def _take_chunk_msg(self, msg: JointTrajectory | MultiDOFJointTrajectory) -> None:
        info = self.info
        if info is None:
            return
        try:
            decoded = chunk_from_msg(msg, info)
        except ValueError as exc:
            self.get_logger().warning(f"chunk refused: {exc}", throttle_duration_sec=1.0)
            with self._lock:
                if self.loop is not None:
                    self.loop.counts["invalid_chunk"] += 1
                    self.loop.engine.request_ended()
                self._requested_at = None
            self._run_deferred()
            return
        if decoded is None:
            self.request_unanswered(seconds(msg.header.stamp))
        else:
            self.chunk_arrived(*decoded)

    def _on_observed_msg(self, msg: Header) -> None:
        self.observed(seconds(msg.stamp))

    # -- robot state ----------------------------------------------------------------------------

    def _on_program(self, msg: Bool) -> None:
        with self._lock:
            self._program_running = bool(msg.data)
            if self.loop is not None:
                # At once, not at the next tick: a reset that follows must see the stop.
                self.loop.set_robot_state(self._program_running, self._speed_scaling)
            if not msg.data:
                # The gripper may be anywhere when the program runs again: send it anew.
                self._gripper_sent = None
        self._run_deferred()

    def _on_scaling(self, msg: Float64) -> None:
        with self._lock:
            self._speed_scaling = float(msg.data)

    def _on_estop(self, msg: Bool) -> None:
        with self._lock:
            self._estop = bool(msg.data)
            # A press before the loop exists still stops it when it is built.
            self._estop_pressed = self._estop_pressed or self._estop
            if self.loop is not None:
                self.loop.set_estop(self._estop)
        if msg.data:
            self.get_logger().error("e-stop input active: stopping (latched until ~/reset)")

    def _build_loop(self, info: PolicyInfo) -> ControlLoop:
        return self.config.build(self.clock, info.action_space, kinematics=self.kinematics)

    def _on_arm(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._lock:
            problem = self._arm_problem() if request.data else self._disarm_problem()
            if problem is None and self.armed != request.data:
                assert self.info is not None
                # A fresh loop: at rest from the arm (real or virtual), waiting for a chunk
                # that starts near it; the e-stop input carries over.
                self.loop = self._build_loop(self.info)
                self.loop.set_estop(self._estop)
                self._requested_at, self._deferred = None, None
                self._shadow_q = None
                self.armed = bool(request.data)
        word = "arm" if request.data else "disarm"
        response.success = problem is None
        response.message = f"{word}ed" if problem is None else f"{word} refused: {problem}"
        (self.get_logger().warning if problem else self.get_logger().info)(response.message)
        return response

    def _arm_problem(self) -> str | None:
        if self.armed:
            return None
        if self.pub_command.get_subscription_count() == 0:
            return (
                f"nothing subscribes to {COMMAND_TOPIC}: activate the driver's "
                "forward_position_controller (ros2 control switch_controllers --deactivate "
                "scaled_joint_trajectory_controller --activate forward_position_controller)"
            )
        if not self._program_running:
            return "the robot program is not running: start it on the teach pendant"
        if self._estop:
            return "the e-stop input is active: release it first"
        if self.info is None or self.loop is None:
            return "no policy yet (is the policy server up?)"
        if self.loop.state == "stopped":
            transition = self.loop.supervisor.last_transition
            why = ", ".join(transition.reasons) if transition is not None else "a fault"
            return f"the loop is stopped ({why}): call ~/reset first"
        if self._q_measured is None or not np.all(np.isfinite(self._q_measured)):
            return "no valid /joint_states yet"
        return None

    def _disarm_problem(self) -> str | None:
        last = None if self.loop is None else self.loop.last_command
        if self.armed and last is not None and np.any(last.velocity):
            return "the arm is moving: stop it first (~/estop, or stop the policy server)"
        return None

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self.loop is None:
                response.success, response.message = False, "no policy yet"
                return response
            report = self.loop.reset()
        response.success, response.message = report.ok, report.reason or "reset: resuming"
        return response

    # -- the tick ---------------------------------------------------------------------------

    def _on_joint_state(self, msg: JointState) -> None:
        if not self._priority_set:
            # The thread that ticks is the one spinning this node: raise it from here; in a
            # process of its own, the middleware's threads too (composed: not the server's).
            self._priority_set = True
            raise_priority = raise_thread_priority if self.composed else raise_process_priority
            problem = raise_priority(self.params["realtime_priority"])
            if problem is not None:
                self.get_logger().warning(f"realtime_priority: {problem}; ticking normally")
        t = seconds(msg.header.stamp)
        try:
            q = self._joints(msg.name, msg.position).astype(np.float64)
        except DecodeError as exc:
            self.get_logger().warning(f"/joint_states: {exc}", throttle_duration_sec=1.0)
            q = np.full(6, np.nan)  # the loop counts it and holds
        sample = Sample(t, q, time.monotonic())
        with self._lock:
            self._q_measured = q
            if self._must_wait(t):
                if self._deferred is not None:
                    self.ticks_skipped += 1
                self._deferred = sample
                return
        self._tick(sample)

    def _must_wait(self, t: float) -> bool:
        """Lockstep: whether the tick at ``t`` must wait for the server."""
        if not self.params["lockstep"] or self.loop is None or self._server_silent:
            return False
        if not self._program_running or self.info is None:
            return False
        latency = self.params["lockstep_latency_s"]
        requested = self._requested_at
        accepts = self.loop.supervisor.accepts_chunks
        if requested is not None and accepts and t >= requested + latency - 1e-9:
            return True
        return self._observed < t - self.info.dt - 1e-9

    def _run_deferred(self) -> None:
        with self._lock:
            sample = self._deferred
            if sample is None or self._must_wait(sample.t):
                return
            self._deferred = None
        self._tick(sample)

    def _lockstep_timeout(self) -> None:
        with self._lock:
            sample = self._deferred
            if sample is None:
                return
            if time.monotonic() - sample.received < self.params["lockstep_timeout_s"]:
                return
            self._server_silent = True
            self.get_logger().warning(
                "lockstep: the policy server did not answer in time; going on without it "
                "(the watchdog holds the arm)"
            )
        self._run_deferred()

    def _tick(self, sample: Sample) -> None:
        start = time.monotonic()
        with self._lock:
            loop = self.loop
            sent = 0
            if loop is not None:
                self.clock.set(sample.t)
                loop.set_robot_state(self._program_running, self._speed_scaling)
                if self.armed:
                    command = loop.tick(sample.t, sample.q, sample.t)
                    if command is not None and self._program_running:
                        sent = self._publish_command(command.q, command.gripper)
                else:
                    command = self._shadow_tick(loop, sample)
                if loop.should_request(sample.t):
                    loop.engine.request_started(sample.t)
                    prefix = (
                        loop.engine.rtc_prefix(sample.t)
                        if loop.engine.config.mode == "rtc"
                        else None
                    )
                    self._requested_at = sample.t
                    self._request_wall = time.monotonic()
                    self.request(sample.t, prefix)
            if self.pub_tick_done is not None:
                # frame_id: the commands sent for this sample, all of which the bridge awaits.
                self.pub_tick_done.publish(Header(stamp=stamp(sample.t), frame_id=str(sent)))
            self.tick_costs.append(time.monotonic() - start)

    def _shadow_tick(self, loop: ControlLoop, sample: Sample) -> JointCommand | None:
        """Disarmed: the loop drives the virtual arm (from the real one, then exactly where
        each command puts it) and the command goes to the shadow topic only."""
        if self._shadow_q is None and np.all(np.isfinite(sample.q)):
            self._shadow_q = sample.q.copy()
        virtual = sample.q if self._shadow_q is None else self._shadow_q
        command = loop.tick(sample.t, virtual, sample.t)
        if command is not None:
            self._shadow_q = command.q.copy()
            names = [*JOINT_NAMES, "gripper"] if command.gripper is not None else JOINT_NAMES
            positions = [float(v) for v in command.q]
            if command.gripper is not None:
                positions.append(float(command.gripper))
            msg = JointState(name=list(names), position=positions)
            msg.header.stamp = stamp(sample.t)
            msg.header.frame_id = command.state
            self.pub_shadow.publish(msg)
        return command

    def _publish_command(self, q: np.ndarray, gripper: float | None) -> int:
        """Send a tick's joint command, and the gripper's when it changed; how many messages."""
        self.pub_command.publish(Float64MultiArray(data=[float(v) for v in q]))
        self.commands_sent += 1
        now = time.monotonic()
        if self._last_publish is not None:
            self.intervals.append(now - self._last_publish)
        self._last_publish = now
        if gripper is not None and gripper != self._gripper_sent:
            self.pub_gripper.publish(Float64MultiArray(data=[float(gripper)]))
            self._gripper_sent = gripper
            return 2
        return 1

    # -- diagnostics ----------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        with self._lock:
            loop = self.loop
            values = {
                "armed": str(self.armed).lower(),
                "commands_sent": str(self.commands_sent),
                "program_running": str(self._program_running).lower(),
                "speed_scaling": f"{self._speed_scaling:g}",
                "ticks_skipped": str(self.ticks_skipped),
            }
            # |interval - controller period| between published commands (wall clock).
            errors = np.abs(np.asarray(self.intervals) - self.period)
            values.update(millisecond_quantiles("jitter", errors))
            state = "no policy"
            if loop is not None:
                state = loop.state
                values.update({f"hold.{k}": str(v) for k, v in loop.counts.items() if v})
                values.update(
                    {f"intervention.{k}": str(v) for k, v in loop.safety.counts.items() if v}
                )
                engine = loop.engine.stats
                for name in ("chunks_accepted", "stale_chunks", "rtc_actions_skipped", "run_outs"):
                    values[f"engine.{name}"] = str(getattr(engine, name))
            values.update(millisecond_quantiles("obs_to_chunk", self.latencies))
            values.update(millisecond_quantiles("request_to_chunk", self.round_trips))
            values.update(millisecond_quantiles("tick_cost", self.tick_costs))
            values.update(millisecond_quantiles("chunk_cost", self.chunk_costs))
        level = DiagnosticStatus.OK if state in ("running", "resuming") else DiagnosticStatus.WARN
        if state == "stopped":
            level = DiagnosticStatus.ERROR
        stamp_now = self.get_clock().now().to_msg()
        message = state if self.armed else f"shadow: {state}"
        self.pub_diagnostics.publish(
            diagnostic_array("policy_runtime: executor", level, message, "ur", values, stamp_now)
        )


def _executor_config(
    executor_config: str, deployment: str
) -> tuple[ExecutorConfig, EeToJoint | None]:
    """The execution stack and the kinematics (None: the default TCP) from the parameters."""
    if executor_config and deployment:
        raise ValueError(
            "parameters 'executor_config' and 'deployment': give one (a deployment has its "
            "executor section)"
        )
    if deployment:
        from policy_runtime.deployment.config import DeploymentConfig

        config = DeploymentConfig.load(deployment)
        return config.executor, config.kinematics()
    return (ExecutorConfig.load(executor_config) if executor_config else ExecutorConfig()), None


def main() -> None:
    from policy_runtime.ros.params import run_nodes

    raise SystemExit(run_nodes(lambda: [Executor()]))
