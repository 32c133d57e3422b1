"""One controller tick: time, measurement, supervisor, target, kinematics, safety -> the command.

The ROS 2 executor node and the simulation call :meth:`ControlLoop.tick` at the controller rate
(125 Hz on a CB3 UR5, 500 Hz on an e-series) with the time, the measured joints and their
stamp, and stream the returned :class:`JointCommand` to the position controller; chunks go in
through :meth:`ControlLoop.submit`, the e-stop input through :meth:`ControlLoop.set_estop`, the
operator's reset through :meth:`ControlLoop.reset`. Nothing on the per-tick path raises on bad
input: every bad value holds the arm and is counted by reason (:attr:`ControlLoop.counts`).

Per tick:

1. **Time.** A time that is not a finite number, or not after the previous tick, is answered
   with the previous command, twice at most; if it goes on, the loop holds (decelerating as if
   each tick were a controller period) and drops the plan, since repeating a command for long
   stops the arm dead. A time more than ``clock_reset_s`` before the previous one is a clock
   reset (a simulation restarted): the loop starts over from it and waits for a fresh chunk.
   The step's length comes from :class:`~policy_runtime.execution.timing.TickTiming`: the real
   time since the last command sent, at most one controller period, and a tick too soon after
   it gets the previous command again (limits hold per second of real time, whatever the tick
   rate). After a late tick the velocity the next step starts from is the real one: the
   controller held the previous command meanwhile.
2. **Measurement.** Joints that are not 6 finite numbers, lie beyond any UR joint's range
   (+-2 pi), or jumped further since the previous sample than the arm can move in that time
   are no measurement: the arm holds; the first sample of a stream is trusted only once the
   next agrees with it (nothing is commanded before). Only a valid sample of a fresh feed is
   used to check or re-anchor the commands: its stamp feeds the watchdog (a stamp that stops
   changing is a stale feed), and joints that stay bit for bit the same while the commands move
   on are a frozen one (a driver republishing a cached sample); see
   :mod:`policy_runtime.execution.joint_feed`.
3. **Supervisor** (:mod:`policy_runtime.execution.supervisor`): the watchdog's reasons and the
   faults (e-stop input; measured joints more than ``max_tracking_error_rad`` from the commands,
   i.e. the arm does not execute them) move it between running, holding, stopped and resuming;
   entering a hold or a stop drops the engine's plan.
4. **Target.** Running, the engine gives the action-space target for this tick; for
   end-effector actions the safety filter checks it and IK turns it into joints on the branch
   nearest the previous command; the safety filter limits the joint command (velocity,
   acceleration, position limits and the workspace, with the braking envelope).

Any "no" along the way is a hold: the commanded velocity ramps to zero at the acceleration
limit, so the arm is at rest :attr:`JointCommand.stop_time_s` later.

**Following the measured arm.** The loop keeps the *commanded* state (position, velocity,
gripper), which the limits must be continuous with, and ties it to the measured joints:

* it starts from them, at rest;
* at rest in a hold, once the servo has had ``servo_lag_s`` to arrive, it re-anchors to them
  when ``tracking_error_samples`` fresh samples in a row are more than ``resync_tolerance_rad``
  away (the arm was blocked, moved by hand, or a driver dropped commands), so it never streams
  commands away from where the arm is, and never follows one stale or corrupt sample;
* while running, a gap larger than the servo lag explains (``resync_tolerance_rad +
  servo_lag_s`` times the fastest the commands moved over the last ``servo_lag_s``, per joint:
  the UR driver's ``servoj`` lookahead plus a cycle of measurement delay) drops the plan at
  once (following it further would race to catch up) and holds; at rest the loop re-anchors
  and waits for a fresh chunk that starts near the arm; the ``max_lags``-th such lag
  within ``lag_window_s`` (an arm pushing against something) latches a tracking stop;
* a gap over ``max_tracking_error_rad`` on ``tracking_error_samples`` fresh samples in a row
  (the arm does not execute the commands) latches a tracking stop; the commands come to rest
  and then go where the arm is.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from policy_runtime.chunk import ActionChunk
from policy_runtime.execution.clock import finite_time
from policy_runtime.execution.engine import (
    TIME_EPS,
    ExecutionEngine,
    SubmitReport,
    SubmitStatus,
)
from policy_runtime.execution.joint_feed import JointFeed
from policy_runtime.execution.kinematics import EeToJoint, IkFailure
from policy_runtime.execution.safety import Intervention, Refusal, SafeJointCommand, SafetyFilter
from policy_runtime.execution.supervisor import ResetReport, Supervisor, SupervisorState
from policy_runtime.execution.timing import TickStats, TickTiming
from policy_runtime.execution.watchdog import (
    INPUT_REASONS,
    PLAN_REASONS,
    Watchdog,
    WatchdogReason,
)
from policy_runtime.robots.poses import EE_ACTION_DIM, matrix_from_rot6d
from policy_runtime.robots.ur5 import CB3_CONTROL_HZ, JOINT_NAMES

__all__ = [
    "HOLD_REASONS",
    "ControlLoop",
    "HoldReason",
    "JointCommand",
    "LoopConfig",
]

#: Why a tick holds (or repeats the previous command): the watchdog's reasons, a refused
#: command, an IK failure, the engine's plan ran out (``no_command``) or gave a target of the
#: wrong shape (``invalid_target``), a joint feed repeating one sample while the commands move
#: (``joint_states_frozen``), measured joints that are no joints
#: (``invalid_measurement``) or lag more than the servo explains (``tracking_lag``) or than
#: ``max_tracking_error_rad`` (``tracking_error``, a latched stop), the robot program stopped
#: (``program_stopped``, a latched stop: see :meth:`ControlLoop.set_robot_state`), waiting for
#: a fresh chunk (``resuming``), and the repeats: a time that is not finite
#: (``invalid_time``), not after the previous tick (``time_not_advancing``) or too soon after
#: the last command (``tick_too_early``).
HoldReason = Literal[
    WatchdogReason,
    "joint_states_frozen",
    Refusal,
    IkFailure,
    "no_command",
    "invalid_target",
    "invalid_measurement",
    "tracking_lag",
    "tracking_error",
    "program_stopped",
    "resuming",
    "invalid_time",
    "time_not_advancing",
    "tick_too_early",
]
HOLD_REASONS: tuple[HoldReason, ...] = get_args(HoldReason)
#: Counted events that are not per-tick reasons: chunks refused (invalid, while holding, not
#: fresh, too far from the arm to resume with) and re-anchorings to the measured joints.
EVENTS = (
    "invalid_chunk",
    "chunk_while_holding",
    "chunk_not_fresh",
    "chunk_far_from_arm",
    "resync",
    "clock_reset",
)
#: The input reasons that make the joint feed untrustworthy this tick.
_FEED_REASONS = frozenset({"no_joint_states", "joint_states_stale", "joint_states_frozen"})


class LoopConfig(BaseModel):
    """The control loop's settings; the controller period is stated here and nowhere else."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: The robot controller's rate: 125 Hz for a CB3 UR5, 500 Hz for an e-series.
    controller_hz: float = Field(default=CB3_CONTROL_HZ, gt=0.0)
    #: A tick sooner than this fraction of a period after the last command repeats it.
    min_tick_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    #: The recent median tick interval may differ from the period by this fraction before the
    #: loop reports that it runs at another rate than the controller.
    rate_tolerance: float = Field(default=0.1, gt=0.0)
    rate_window: int = Field(default=250, ge=10)
    #: A measured joint this far from the command means the arm is not executing the commands
    #: (blocked, protective stop, a driver that stopped forwarding): a latched stop. 0.2 rad is
    #: ~0.13 s behind at the default pi/2 rad/s, ~10 cm at the TCP of an arm reaching 0.5 m.
    max_tracking_error_rad: float = Field(default=0.2, gt=0.0)
    #: ... on this many fresh samples in a row (one corrupt sample is not an arm).
    tracking_error_samples: int = Field(default=3, ge=1)
    #: Lags the servo cannot explain, this many within ``lag_window_s``: a latched stop (an
    #: arm that keeps pushing against something is not to be restarted by itself).
    max_lags: int = Field(default=3, ge=1)
    lag_window_s: float = Field(default=5.0, gt=0.0)
    #: A sample may differ from the previous one by the arm's top joint speed over the time
    #: between them plus this; further is a corrupt sample, not a motion.
    measurement_tolerance_rad: float = Field(default=0.05, gt=0.0)
    #: Ticks with a bad time answered with the previous command before the loop holds.
    max_bad_time_repeats: int = Field(default=2, ge=0)
    #: A time this far before the previous tick is a clock reset, not a late sample.
    clock_reset_s: float = Field(default=0.5, gt=0.0)
    #: What servo lag cannot explain: a gap over ``resync_tolerance_rad + servo_lag_s`` times
    #: the fastest the commands moved over the last ``servo_lag_s``, on any joint; at rest, a
    #: re-anchor waits ``servo_lag_s`` for the servo to arrive. The UR driver's ``servoj``
    #: lookahead is 0.03 s by default (range 0.03-0.2) and its joint states are a 125 Hz cycle
    #: old: 0.1 s covers a lookahead up to ~0.08 s. The tolerance is above the simulated
    #: servo's static sag (its PD has no integral term).
    resync_tolerance_rad: float = Field(default=0.02, gt=0.0)
    servo_lag_s: float = Field(default=0.1, ge=0.0)
    #: A resume's first action may be this far from the measured arm: joints (rad), or the
    #: TCP's position (m) and rotation (rad) for end-effector actions.
    max_resume_joint_rad: float = Field(default=0.2, gt=0.0)
    max_resume_position_m: float = Field(default=0.05, gt=0.0)
    max_resume_rotation_rad: float = Field(default=0.3, gt=0.0)

    @property
    def period_s(self) -> float:
        return 1.0 / self.controller_hz


@dataclass(frozen=True)
class JointCommand:
    """What to send to the robot at ``t``."""

    t: float
    #: Joint positions (6,) in rad.
    q: np.ndarray
    #: The commanded velocity (6,): this command's step over the step's length (the real time
    #: since the last command, at most a controller period).
    velocity: np.ndarray
    #: Gripper opening in [0, 1]; None until a target has set one (leave the gripper as is).
    gripper: float | None
    #: True while holding (decelerating or at rest) instead of following a target.
    hold: bool
    reasons: tuple[HoldReason, ...]
    #: What the safety filter changed or refused in this tick.
    interventions: tuple[Intervention, ...]
    #: Seconds a hold from this command takes to reach rest (while holding: the time left).
    stop_time_s: float
    #: The supervisor's state after this tick.
    state: SupervisorState
    #: True when this is the previous command again (a repeat reason says why).
    repeat: bool = False


class ControlLoop:
    """Engine, supervisor, watchdog, kinematics and safety filter, ticked as one; see the module
    docs. ``action_space`` is the policy's: ``"ee"`` (10-D TCP action) or ``"joint"`` (6 joints
    + optional gripper). ``kinematics`` maps TCP targets to joints and gives the TCP of joint
    commands for the workspace (UR5 with the default tool offset when None)."""

    def __init__(
        self,
        engine: ExecutionEngine,
        action_space: Literal["ee", "joint"],
        *,
        config: LoopConfig | None = None,
        safety: SafetyFilter | None = None,
        watchdog: Watchdog | None = None,
        kinematics: EeToJoint | None = None,
    ) -> None:
        if action_space not in ("ee", "joint"):
            raise ValueError(f"action_space must be 'ee' or 'joint', got {action_space!r}")
        if engine.config.action_space != action_space:
            raise ValueError(
                f"the engine plans {engine.config.action_space!r} actions, the loop was given "
                f"action_space={action_space!r}"
            )
        self.engine = engine
        self.action_space = action_space
        self.config = config or LoopConfig()
        self.safety = safety or SafetyFilter()
        self.watchdog = watchdog or Watchdog()
        self.kinematics = kinematics or EeToJoint()
        self.supervisor = Supervisor()
        self.timing = TickTiming(
            self.config.period_s,
            self.config.min_tick_fraction,
            self.config.rate_tolerance,
            self.config.rate_window,
        )
        #: Ticks by reason (holds and repeats) and events (:data:`EVENTS`), since construction.
        self.counts: dict[str, int] = dict.fromkeys((*HOLD_REASONS, *EVENTS), 0)
        #: Which measured samples to trust (:mod:`policy_runtime.execution.joint_feed`).
        self.feed = JointFeed(
            np.asarray(self.safety.limits.joint_velocity_limits),
            self.config.measurement_tolerance_rad,
            self.config.resync_tolerance_rad,
            self.watchdog,
        )
        self._q: np.ndarray | None = None  # commanded joints; None before the first tick
        self._v = np.zeros(6)
        self._gripper: float | None = None
        #: The last end-effector target the safety filter passed; None at the start and after
        #: a hold (the next one is then limited relative to the joint command's TCP).
        self._ee_target: np.ndarray | None = None
        #: This tick's measured joints when valid and the feed is fresh (None otherwise): the
        #: only measurement the commands are checked against or re-anchored to.
        self._fresh: np.ndarray | None = None
        self._tracking_samples = 0  # fresh samples in a row beyond max_tracking_error_rad
        self._offset_samples = 0  # ... beyond resync_tolerance_rad
        self._lags: deque[float] = deque()
        #: The commands' |v| per joint and times, newest over the last ``servo_lag_s`` (the lag
        #: bound): a ring of as many commands as fit in that time at the shortest step.
        slots = (
            int(
                np.ceil(
                    self.config.servo_lag_s / (self.config.min_tick_fraction * self.config.period_s)
                )
            )
            + 2
        )
        self._speeds = np.zeros((slots, 6))
        self._speed_times = np.full(slots, -np.inf)
        self._speed_slot = 0
        self._rest_since: float | None = None  # when the commands came to rest (None: moving)
        self._time: float | None = None  # the last valid tick time
        self._bad_times = 0  # consecutive ticks with a bad time
        self._last: JointCommand | None = None
        self._program_running = True
        self._program_stopped = False  # the program stopped since the last tick: latch a stop
        #: The supervisor's count of entries into running at the last reset (or start): more
        #: now means the loop has moved the arm since.
        self._running_since_reset = 0

    # -- inputs ----------------------------------------------------------------------------

    @property
    def state(self) -> SupervisorState:
        return self.supervisor.state

    @property
    def last_command(self) -> JointCommand | None:
        """The command of the latest tick (None before the first)."""
        return self._last

    def tick_stats(self) -> TickStats:
        return self.timing.stats()

    def observation_received(self, stamp: float) -> None:
        """An observation stamped ``stamp`` reached the policy side (the watchdog's input)."""
        self.watchdog.observation_received(stamp)

    def set_estop(self, active: bool) -> None:
        """The e-stop input's level. Active stops the arm at the next tick and latches until
        :meth:`reset`."""
        self.watchdog.set_estop(active)

    def set_robot_state(self, program_running: bool, speed_scaling_percent: float) -> None:
        """The driver's robot program state and speed scaling (percent).

        A speed scaling below the watchdog's ``min_speed_scaling_percent`` holds while it lasts
        (the robot would run each command at that fraction of its speed, behind the plan).
        The program stopping after the loop has moved the arm (since it was built or last
        reset: a protective stop, the pendant's stop button, a dropped connection) latches a
        stop; before that (the program not yet started) it only holds. While it is off the
        commands follow the measured arm, so they start from wherever the arm was put, and
        after a latched stop only the operator's :meth:`reset` lets the loop resume, once the
        program runs again (a reset while it is still off is taken and resumes when it
        runs)."""
        running = bool(program_running)
        engaged = self.supervisor.entries["running"] > self._running_since_reset
        if self._program_running and not running and engaged:
            self._program_stopped = True
        self._program_running = running
        self.watchdog.set_robot_state(running, speed_scaling_percent)

    def reset(self) -> ResetReport:
        """The operator's reset after a stop (e-stop, tracking error, the robot program
        stopped): refused while the e-stop input is active. The loop then waits for the
        inputs (the program running among them) and a fresh chunk that starts near the arm."""
        t = self._time if self._time is not None else -np.inf
        if self._program_stopped:
            # A program stop not ticked yet is latched first: the reset answers it too.
            self._program_stopped = False
            if self.supervisor.update(t, ("program_stopped",), (), ()):
                self.engine.reset()
        report = self.supervisor.reset(t, self.watchdog.estop_active)
        if report.ok:
            self._running_since_reset = self.supervisor.entries["running"]
            self._lags.clear()
            self._tracking_samples = self._offset_samples = 0
        return report

    def should_request(self, t: float) -> bool:
        """Whether to ask the policy for a chunk at ``t`` (then call
        ``engine.request_started(t)``): the engine wants one and the loop could take it (a
        resume needs a fresh measurement to compare the chunk with)."""
        resumable = self.supervisor.state != "resuming" or self._fresh is not None
        return self.supervisor.accepts_chunks and resumable and self.engine.should_request(t)

    def submit(self, chunk: ActionChunk, t_obs: float) -> SubmitReport:
        """Hand over ``chunk``, predicted from observations up to ``t_obs``. Never raises on a
        bad chunk: it is refused, counted and reported (``status`` and ``detail``), and it ends
        the request in flight, so the next request need not wait for a timeout.

        Refused: no plan (NaN, wrong shape, ...: a running loop then holds and waits for a fresh
        chunk); arriving while holding or stopped; while resuming, one observed before the resume
        began, or whose first action is further from the arm than the ``max_resume_*`` limits.
        """
        engine = self.engine
        now = engine.clock.now()
        problem = engine.chunk_problem(chunk, t_obs)
        if problem is not None:
            report = engine.submit(chunk, t_obs)  # refused, counted, request ended
            self.counts["invalid_chunk"] += 1
            if self.supervisor.drop_plan(now, "invalid_chunk"):
                engine.reset()
            return report
        t_obs = float(t_obs)  # a number: chunk_problem checked it
        if not self.supervisor.accepts_chunks:
            return self._refuse(chunk, t_obs, "holding", "chunk_while_holding", self.state)
        if self.supervisor.state == "resuming":
            since = self.supervisor.resume_since
            if t_obs < since - TIME_EPS:
                detail = f"observed at {t_obs:.3f} s, before the resume began at {since:.3f} s"
                return self._refuse(chunk, t_obs, "not_fresh", "chunk_not_fresh", detail)
            first = engine.first_usable_action(chunk, t_obs)
            far = None if first is None else self._resume_distance(first)
            if far is not None:
                return self._refuse(chunk, t_obs, "far_from_arm", "chunk_far_from_arm", far)
        report = engine.submit(chunk, t_obs)
        if report.accepted:
            self.watchdog.chunk_received(t_obs)
            self.supervisor.resumed(now)
        return report

    def _refuse(
        self, chunk: ActionChunk, t_obs: float, status: SubmitStatus, event: str, detail: str
    ) -> SubmitReport:
        self.engine.request_ended()
        self.counts[event] += 1
        now = self.engine.clock.now()
        return SubmitReport(status, now, now - t_obs, 0, 0, 0, detail)

    def _resume_distance(self, action: np.ndarray) -> str | None:
        """Why a resume may not start toward ``action`` (the distance, named), or None."""
        q = self._fresh
        if q is None:
            return "no fresh measured joints to compare the first action with"
        cfg = self.config
        if self.action_space == "joint":
            gap = np.abs(action[:6] - q)
            worst = int(np.argmax(gap))
            if gap[worst] > cfg.max_resume_joint_rad:
                return (
                    f"the first action is {gap[worst]:.3f} rad from the arm on {JOINT_NAMES[worst]}"
                    f" (at most {cfg.max_resume_joint_rad} rad)"
                )
            return None
        pose = self.kinematics.forward(q)
        distance = float(np.linalg.norm(action[:3] - pose[:3, 3]))
        relative = pose[:3, :3].T @ matrix_from_rot6d(action[3:9])
        angle = float(np.arccos(np.clip(0.5 * (np.trace(relative) - 1.0), -1.0, 1.0)))
        if distance > cfg.max_resume_position_m or angle > cfg.max_resume_rotation_rad:
            return (
                f"the first action's TCP is {distance:.3f} m and {angle:.3f} rad from the arm's "
                f"(at most {cfg.max_resume_position_m} m and {cfg.max_resume_rotation_rad} rad)"
            )
        return None

    # -- the tick ----------------------------------------------------------------------------

    def tick(self, t: float, q_measured: np.ndarray, q_stamp: float) -> JointCommand | None:
        """The command for controller time ``t``; ``q_measured`` (6,) are the joints now and
        ``q_stamp`` their sample's stamp. None until a measurement is confirmed (two plausible
        samples in a row: there is nothing safe to command before). Never raises."""
        cfg = self.config
        time = finite_time(t)
        if time is not None and self._time is not None and time < self._time - cfg.clock_reset_s:
            self._clock_reset(time)
        elif time is None or (self._time is not None and time <= self._time):
            return self._bad_time("invalid_time" if time is None else "time_not_advancing")
        t = time
        self._bad_times, self._time = 0, t
        self.timing.observe(t)
        step = self.timing.step(t)
        if step is None:
            return self._repeat("tick_too_early")
        h, elapsed = step
        if elapsed - h > TIME_EPS:
            # The controller held the previous command for the time beyond one period: the arm
            # is slower than that command's velocity, and the next step starts from there.
            self._v = self._v * (h / elapsed)

        measured = self.feed.sample(t, q_measured, q_stamp)
        if self._q is None:
            if measured is None:
                if not self.feed.unconfirmed:
                    self._count(("invalid_measurement",))
                return None
            self._q = measured.copy()

        status = self.watchdog.check(t)
        faults: tuple[str, ...] = ("estop",) if "estop" in status.reasons else ()
        if self._program_stopped:
            faults, self._program_stopped = (*faults, "program_stopped"), False
        inputs: tuple[str, ...] = tuple(r for r in status.reasons if r in INPUT_REASONS)
        if self.feed.frozen(t, measured, self._q) and "joint_states_stale" not in inputs:
            inputs = (*inputs, "joint_states_frozen")
        self._fresh = None if _FEED_REASONS.intersection(inputs) else measured
        if "program_not_running" in inputs and self._fresh is not None:
            # The robot program is off: the arm does not take these commands (the operator may
            # move it, a simulation may be reset). Follow it, so a resume starts from it.
            self._q, self._v, self._ee_target = self._fresh.copy(), np.zeros(6), None
            self.feed.reanchored()
        gap = None if self._fresh is None else np.abs(self._fresh - self._q)
        self._offset_samples = (
            self._offset_samples + 1
            if gap is not None and gap.max() > cfg.resync_tolerance_rad
            else 0
        )
        self._tracking_samples = (
            self._tracking_samples + 1
            if gap is not None and gap.max() > cfg.max_tracking_error_rad
            else 0
        )
        if self._tracking_samples >= cfg.tracking_error_samples:
            faults = (*faults, "tracking_error")  # latched; the hold re-anchors once at rest
        plan = tuple(r for r in status.reasons if r in PLAN_REASONS)
        if self.supervisor.update(t, faults, inputs, plan):
            self.engine.reset()

        state = self.supervisor.state
        invalid: tuple[HoldReason, ...] = ("invalid_measurement",) if measured is None else ()
        if state == "stopped":
            transition = self.supervisor.last_transition
            latched = transition.reasons if transition is not None else ("estop",)
            return self._hold(t, h, (*latched, *invalid))  # type: ignore[arg-type]
        if state == "holding":
            return self._hold(t, h, (*inputs, *invalid))  # type: ignore[arg-type]
        if state == "resuming":
            return self._hold(t, h, ("resuming", *invalid))
        if invalid:
            return self._hold(t, h, invalid)
        if gap is not None and np.any(gap > self._lag_bound(t)):
            self._lag_event(t)
            return self._hold(t, h, ("tracking_lag",))
        target = self.engine.command(t)
        if target is None:
            return self._hold(t, h, ("no_command",))
        action = np.asarray(target, dtype=np.float64)
        if self.action_space == "ee":
            if action.shape != (EE_ACTION_DIM,):
                return self._hold(t, h, ("invalid_target",))
            return self._follow_ee(t, h, action)
        if action.shape not in ((6,), (7,)):
            return self._hold(t, h, ("invalid_target",))
        gripper = float(action[6]) if action.shape == (7,) else None
        return self._follow_joints(t, h, action[:6], gripper, ())

    def _lag_bound(self, t: float) -> np.ndarray:
        """Per joint, the largest gap the servo lag explains: the tolerance plus ``servo_lag_s``
        times the fastest the commands moved in the last ``servo_lag_s`` (an arm ``servo_lag_s``
        behind is still that far back when the commands have just stopped)."""
        cfg = self.config
        recent = self._speed_times >= t - cfg.servo_lag_s - TIME_EPS
        speed = self._speeds[recent].max(axis=0) if recent.any() else np.zeros(6)
        return np.minimum(
            cfg.resync_tolerance_rad + cfg.servo_lag_s * speed, cfg.max_tracking_error_rad
        )

    def _bad_time(self, reason: HoldReason) -> JointCommand | None:
        """A tick whose time cannot be used: the previous command again, a few times; after
        that a hold and the plan dropped, stepped on the engine's clock where that advances
        (else as if each tick were a controller period). No measurement is trusted meanwhile."""
        self._bad_times += 1
        self._fresh = None
        last = self._last
        if last is None or self._bad_times <= self.config.max_bad_time_repeats:
            return self._repeat(reason)
        if self.supervisor.update(last.t, (), (reason,), ()):
            self.engine.reset()
        fallback = finite_time(self.engine.clock.now())
        h = self.config.period_s
        if fallback is not None and fallback > last.t:
            step = self.timing.step(fallback)
            if step is None:
                return self._repeat("tick_too_early")
            h = step[0]
        return self._hold(last.t if fallback is None else max(fallback, last.t), h, (reason,))

    def _clock_reset(self, t: float) -> None:
        """The clock went back (a restarted simulation): start over from ``t``, forgetting
        every stamp and time of the old clock."""
        self.counts["clock_reset"] += 1
        self.timing.restart()
        self.watchdog.forget_stamps()
        self.feed.restart()
        self._time = None
        self._speed_times[:] = -np.inf
        self._lags.clear()
        self._offset_samples = self._tracking_samples = 0
        self._rest_since = None
        self.supervisor.drop_plan(t, "clock_reset")
        self.engine.reset()  # a plan on the old clock means nothing, whatever the state

    def _follow_ee(self, t: float, h: float, action: np.ndarray) -> JointCommand:
        assert self._q is not None
        previous = self._ee_target
        if previous is None:
            # The previous gripper only shows in a refused command's echo, which is not used.
            previous = self.kinematics.ee_action(self._q, self._gripper or 0.0)
        ee = self.safety.filter_ee(action, previous, h)
        if ee.refusal is not None:
            return self._hold(t, h, (ee.refusal,), ee.interventions)
        solution = self.kinematics.solve(ee.action, q_near=self._q)
        if solution.q is None:
            reason = solution.failure or "invalid_target"
            return self._hold(t, h, (reason,), ee.interventions)
        command = self._follow_joints(t, h, solution.q, solution.gripper, ee.interventions)
        if not command.hold:
            self._ee_target = ee.action
        return command

    def _follow_joints(
        self,
        t: float,
        h: float,
        q_target: np.ndarray,
        gripper: float | None,
        interventions: tuple[Intervention, ...],
    ) -> JointCommand:
        assert self._q is not None
        command = self.safety.filter_joints(
            q_target, self._q, self._v, h, gripper=gripper, kinematics=self.kinematics
        )
        interventions += command.interventions
        reasons: tuple[HoldReason, ...] = () if command.refusal is None else (command.refusal,)
        return self._emit(t, command, reasons, interventions)

    def _hold(
        self,
        t: float,
        h: float,
        reasons: tuple[HoldReason, ...],
        interventions: tuple[Intervention, ...] = (),
    ) -> JointCommand:
        assert self._q is not None
        command = self.safety.hold(self._q, self._v, h)
        fresh, cfg = self._fresh, self.config
        if (
            fresh is not None
            and not np.any(command.velocity)
            and self._rest_since is not None
            and t - self._rest_since >= cfg.servo_lag_s - TIME_EPS
            and self._offset_samples >= cfg.tracking_error_samples
        ):
            # At rest long enough for the servo to have arrived, and the arm is still elsewhere
            # on several samples in a row: command where the arm is.
            self.counts["resync"] += 1
            self._offset_samples = self._tracking_samples = 0
            self.feed.reanchored()
            command = replace(command, q=fresh.copy())
        return self._emit(t, command, reasons, interventions)

    def _lag_event(self, t: float) -> None:
        """A lag the servo cannot explain: the plan is not followed any further (the arm would
        race to catch up with it) but dropped for a fresh chunk from where the arm is; the
        ``max_lags``-th within ``lag_window_s`` (an arm pushing against something) latches
        a stop instead."""
        window = self._lags
        window.append(t)
        while window and window[0] < t - self.config.lag_window_s:
            window.popleft()
        if len(window) >= self.config.max_lags:
            window.clear()
            self.supervisor.update(t, ("tracking_error",), (), ())
            self.engine.reset()
        elif self.supervisor.drop_plan(t, "tracking_lag"):
            self.engine.reset()

    def _emit(
        self,
        t: float,
        command: SafeJointCommand,
        reasons: tuple[HoldReason, ...],
        interventions: tuple[Intervention, ...],
    ) -> JointCommand:
        # A re-anchored hold is at rest: its velocity is zero, whatever the jump to the arm.
        self._v = command.velocity
        speed = np.abs(self._v)
        self._speeds[self._speed_slot] = speed
        self._speed_times[self._speed_slot] = t
        self._speed_slot = (self._speed_slot + 1) % len(self._speed_times)
        if speed.any():
            self._rest_since = None
        elif self._rest_since is None:
            self._rest_since = t
        if command.hold:
            self._ee_target = None
        self._q = command.q
        if command.gripper is not None:
            self._gripper = command.gripper
        self._count(reasons)
        self.timing.sent(t)
        self._last = JointCommand(
            t=t,
            q=command.q.copy(),
            velocity=self._v.copy(),
            gripper=self._gripper,
            hold=command.hold,
            reasons=reasons,
            interventions=interventions,
            stop_time_s=self.safety.stopping_time(self._v),
            state=self.supervisor.state,
        )
        return self._last

    def _repeat(self, reason: HoldReason) -> JointCommand | None:
        """The previous command again (None before the first), counted under ``reason``."""
        self._count((reason,))
        last = self._last
        if last is None:
            return None
        return replace(last, reasons=(reason,), repeat=True)

    def _count(self, reasons: tuple[str, ...]) -> None:
        for reason in reasons:
            self.counts[reason] += 1
