"""One controller tick: watchdog, target, kinematics, safety filter -> the joint command to send.

The ROS 2 executor node and the simulation call :meth:`ControlLoop.tick` at the controller rate
(125 Hz on a CB3 UR5, 500 Hz on an e-series) with the time and the measured joints, and stream
the returned :class:`JointCommand` to the position controller. Per tick:

0. the measured joints must be following the commands: a gap of more than
   ``max_tracking_error_rad`` on any joint means the arm is not executing them (blocked, in a
   protective stop, a driver that stopped forwarding, the speed slider turned down under a
   position stream), and it latches a hold until :meth:`ControlLoop.reset`;
1. the watchdog decides whether to hold (stale or missing data, a latched e-stop);
2. the engine gives the action-space target for this tick, or None (nothing valid to command);
3. for end-effector actions, the safety filter checks the TCP target, then IK turns it into
   joints on the branch nearest the previous command;
4. the safety filter limits the joint command (and, for joint actions, refuses one that takes
   the TCP further out of the workspace).

Any "no" along the way is a hold: the commanded velocity ramps to zero at the acceleration
limit, so the arm is at rest :attr:`JointCommand.stop_time_s` later, and it stays there until
a valid target comes again, which it then approaches within the velocity and acceleration
limits. The loop keeps the *commanded* state (position, velocity, gripper) itself: it is
what the limits must be continuous with; the measured joints seed it on the first tick (and
after :meth:`ControlLoop.reset`) and are otherwise only checked against it. Each command is
taken to execute over one controller period ``period_s``, whatever the jitter of the calls: a
late tick must not license a longer step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Protocol, get_args

import numpy as np

from policy_runtime.execution.kinematics import EeToJoint, IkFailure
from policy_runtime.execution.safety import Intervention, Refusal, SafeJointCommand, SafetyFilter
from policy_runtime.execution.watchdog import Watchdog, WatchdogReason
from policy_runtime.robots.poses import EE_ACTION_DIM
from policy_runtime.robots.ur5 import CB3_CONTROL_HZ

__all__ = ["HOLD_REASONS", "CommandSource", "ControlLoop", "HoldReason", "JointCommand"]

#: Why a tick holds: the watchdog's reasons, a refused command, an IK failure, no target from
#: the engine, a tick whose time did not advance past the previous one, or an arm that does not
#: follow the commands.
HoldReason = Literal[
    WatchdogReason, Refusal, IkFailure, "no_command", "time_not_advancing", "tracking_error"
]
HOLD_REASONS: tuple[HoldReason, ...] = get_args(HoldReason)


class CommandSource(Protocol):
    """What the loop pulls targets from (the execution engine, or a test stub)."""

    def command(self, t: float) -> np.ndarray | None:
        """The action-space target at controller time ``t``; None when nothing is valid."""
        ...


@dataclass(frozen=True)
class JointCommand:
    """What to send to the robot at ``t``."""

    t: float
    #: Joint positions (6,) in rad.
    q: np.ndarray
    #: The commanded velocity (6,) this position implies (rad/s).
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


class ControlLoop:
    """Composes engine, kinematics, safety filter and watchdog; see the module docs.

    ``action_space`` is the policy's action representation: ``"ee"`` (10-D TCP action) or
    ``"joint"`` (6 joints + optional gripper). ``kinematics`` maps TCP targets to joints and
    gives the TCP of joint commands for the workspace check (UR5 with the default tool offset
    when None). ``max_tracking_error_rad`` bounds how far any measured joint may be from the
    last command: 0.2 rad is ~0.13 s behind at the default pi/2 rad/s, ~10 cm at the TCP of
    an arm reaching 0.5 m.
    """

    def __init__(
        self,
        engine: CommandSource,
        action_space: Literal["ee", "joint"],
        *,
        safety: SafetyFilter | None = None,
        watchdog: Watchdog | None = None,
        kinematics: EeToJoint | None = None,
        period_s: float = 1.0 / CB3_CONTROL_HZ,
        max_tracking_error_rad: float = 0.2,
    ) -> None:
        if action_space not in ("ee", "joint"):
            raise ValueError(f"action_space must be 'ee' or 'joint', got {action_space!r}")
        if not (np.isfinite(period_s) and period_s > 0.0):
            raise ValueError(f"period_s must be a positive number of seconds, got {period_s}")
        if not (np.isfinite(max_tracking_error_rad) and max_tracking_error_rad > 0.0):
            raise ValueError(
                f"max_tracking_error_rad must be a positive angle, got {max_tracking_error_rad}"
            )
        self.engine = engine
        self.action_space = action_space
        self.safety = safety or SafetyFilter()
        self.watchdog = watchdog or Watchdog()
        self.kinematics = kinematics or EeToJoint()
        self.period_s = float(period_s)
        self.max_tracking_error_rad = float(max_tracking_error_rad)
        #: Ticks held, by reason, since construction.
        self.hold_counts: dict[HoldReason, int] = dict.fromkeys(HOLD_REASONS, 0)
        self.reset()

    def reset(self) -> None:
        """Forget the commanded state: the next tick starts again from the measured joints,
        at rest (e.g. after the robot was moved by hand, or a program restart on the robot).
        Also the only way out of a tracking-error hold, once its cause is cleared."""
        self._started = False
        self._tracking_lost = False
        self._q = np.zeros(6)
        self._v = np.zeros(6)
        self._gripper: float | None = None
        #: The last end-effector target the safety filter passed; None at the start and after
        #: a hold (the next one is then limited relative to the joint command's TCP).
        self._ee_target: np.ndarray | None = None
        self._last: JointCommand | None = None

    @property
    def last_command(self) -> JointCommand | None:
        """The command of the latest tick (None before the first and after a reset)."""
        return self._last

    def tick(self, t: float, q_measured: np.ndarray) -> JointCommand:
        """The command for controller time ``t``; ``q_measured`` (6,) are the joints now: they
        seed the first tick and must stay within ``max_tracking_error_rad`` of the commands."""
        t = float(t)
        if not np.isfinite(t):
            raise ValueError(f"t must be finite, got {t}")
        q_measured = np.asarray(q_measured, dtype=np.float64)
        if q_measured.shape != (6,) or not np.all(np.isfinite(q_measured)):
            raise ValueError(f"q_measured must be 6 finite joint positions, got {q_measured}")
        if not self._started:
            self._q, self._started = q_measured.copy(), True
        elif self._last is not None and t <= self._last.t:
            # Same or earlier time: the previous command is still the right one; never advance.
            self._count(("time_not_advancing",))
            return replace(self._last, hold=True, reasons=("time_not_advancing",))

        if np.max(np.abs(q_measured - self._q)) > self.max_tracking_error_rad:
            self._tracking_lost = True
        if self._tracking_lost:
            return self._hold(t, ("tracking_error",), ())
        status = self.watchdog.check(t)
        if status.hold:
            return self._hold(t, status.reasons, ())
        action = self.engine.command(t)
        if action is None:
            return self._hold(t, ("no_command",), ())
        action = np.asarray(action, dtype=np.float64)
        if self.action_space == "ee":
            return self._follow_ee(t, action)
        if action.shape not in ((6,), (7,)):
            raise ValueError(f"a joint action has shape (6,) or (7,), got {action.shape}")
        gripper = float(action[6]) if action.shape == (7,) else None
        return self._follow_joints(t, action[:6], gripper, ())

    def _follow_ee(self, t: float, action: np.ndarray) -> JointCommand:
        if action.shape != (EE_ACTION_DIM,):
            raise ValueError(
                f"an end-effector action has shape ({EE_ACTION_DIM},), got {action.shape}"
            )
        previous = self._ee_target
        if previous is None:
            # The previous gripper only shows in a refused command's echo, which is not used.
            previous = self.kinematics.ee_action(self._q, self._gripper or 0.0)
        ee = self.safety.filter_ee(action, previous, self.period_s)
        if ee.refusal is not None:
            return self._hold(t, (ee.refusal,), ee.interventions)
        solution = self.kinematics.solve(ee.action, q_near=self._q)
        if solution.q is None:
            return self._hold(t, (solution.failure or "invalid_target",), ee.interventions)
        command = self._follow_joints(t, solution.q, solution.gripper, ee.interventions)
        if not command.hold:
            self._ee_target = ee.action
        return command

    def _follow_joints(
        self,
        t: float,
        q_target: np.ndarray,
        gripper: float | None,
        interventions: tuple[Intervention, ...],
    ) -> JointCommand:
        command = self.safety.filter_joints(
            q_target, self._q, self._v, self.period_s, gripper=gripper
        )
        interventions += command.interventions
        if command.refusal is not None:
            return self._emit(t, command, (command.refusal,), interventions)
        if self.action_space == "joint" and not self.safety.allows_tcp_motion(
            self._stop_tcp(self._q, self._v), self._stop_tcp(command.q, command.velocity)
        ):
            return self._hold(t, ("workspace_exit",), (*interventions, "workspace_exit"))
        return self._emit(t, command, (), interventions)

    def _stop_tcp(self, q: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        """TCP position where a hold from this command would leave the arm: checking it, not
        the command, keeps the braking distance of a refusal's hold inside the workspace."""
        stop = self.safety.stopping_point(q, velocity, self.period_s)
        return self.kinematics.forward(stop)[:3, 3]

    def _hold(
        self,
        t: float,
        reasons: tuple[HoldReason, ...],
        interventions: tuple[Intervention, ...],
    ) -> JointCommand:
        command = self.safety.hold(self._q, self._v, self.period_s)
        return self._emit(t, command, reasons, interventions)

    def _emit(
        self,
        t: float,
        command: SafeJointCommand,
        reasons: tuple[HoldReason, ...],
        interventions: tuple[Intervention, ...],
    ) -> JointCommand:
        self._q, self._v = command.q, command.velocity
        if command.hold:
            self._ee_target = None
        if command.gripper is not None:
            self._gripper = command.gripper
        self._count(reasons)
        self._last = JointCommand(
            t=t,
            q=command.q.copy(),
            velocity=command.velocity.copy(),
            gripper=self._gripper,
            hold=command.hold,
            reasons=reasons,
            interventions=interventions,
            stop_time_s=self.safety.stopping_time(command.velocity),
        )
        return self._last

    def _count(self, reasons: tuple[HoldReason, ...]) -> None:
        for reason in reasons:
            self.hold_counts[reason] += 1
