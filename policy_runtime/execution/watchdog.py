"""Decides when the robot must hold: stale data, no data yet, a frozen joint-state feed, the
e-stop input.

A policy acting on an old observation, an executor running out an old chunk, or a loop that
checks its commands against joint states that stopped coming moves the arm blind; the watchdog
notices and says *hold*, naming the reason. It only decides: the supervisor
(:mod:`policy_runtime.execution.supervisor`) turns an e-stop into a latched stop and staleness
into a hold that lasts while the data is stale, and the control loop decelerates the arm
(:meth:`~policy_runtime.execution.safety.SafetyFilter.hold`).

* Observations and chunks are judged by their stamps: the newest *received* stamp counts, not
  the largest (when the clock jumps back, a sim reset, old stamps would otherwise look like the
  future for ever), and a stamp ahead of ``t`` by more than ``max_future_s`` means the clocks
  disagree, which is a hold too.
* Joint states are judged by when their stamp last *changed*, on the loop's own clock: a driver
  that keeps publishing one old sample, or a subscriber that keeps handing over the last message
  it got, is as frozen as one that went silent, and this needs no agreement between the
  driver's clock and the loop's.

Stamps and ``t`` are seconds on one clock (ROS time; see the architecture's time rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from policy_runtime.execution.clock import finite_time

__all__ = [
    "INPUT_REASONS",
    "PLAN_REASONS",
    "Watchdog",
    "WatchdogConfig",
    "WatchdogReason",
    "WatchdogStatus",
]

WatchdogReason = Literal[
    "estop",
    "no_observation",
    "observation_stale",
    "no_joint_states",
    "joint_states_stale",
    "stamp_in_future",
    "no_chunk",
    "chunk_stale",
    "program_not_running",
    "speed_scaling_low",
]
#: The reasons that hold until the data is fresh again (the chunk's are the plan's concern).
INPUT_REASONS: frozenset[WatchdogReason] = frozenset(
    {
        "no_observation",
        "observation_stale",
        "no_joint_states",
        "joint_states_stale",
        "stamp_in_future",
        "program_not_running",
        "speed_scaling_low",
    }
)
PLAN_REASONS: frozenset[WatchdogReason] = frozenset({"no_chunk", "chunk_stale"})


class WatchdogConfig(BaseModel):
    """Thresholds, in seconds of the stamps' clock."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: The newest observation may be this old (a few missed frames of a 30 Hz camera).
    max_observation_age_s: float = Field(default=0.25, gt=0.0)
    #: The newest chunk (its ``t_obs`` stamp) may be this old: inference latency plus the
    #: ``n_action_steps / control_hz`` a chunk runs before the next (0.8 s for DP's 8 at 10 Hz).
    max_chunk_age_s: float = Field(default=1.0, gt=0.0)
    #: How far a stamp may lie ahead of ``t`` (clock jitter between processes) before it counts
    #: as a clock mismatch.
    max_future_s: float = Field(default=0.05, ge=0.0)
    #: The joint-state stamp may stay unchanged this long (loop time): six missed samples of
    #: the UR driver's 125 Hz, and more than its ``robot_receive_timeout`` (0.04 s), after which
    #: the robot program itself would stop.
    max_joint_state_age_s: float = Field(default=0.05, gt=0.0)
    #: Below this speed scaling (percent, as the UR driver publishes it) the arm cannot keep
    #: the policy's timing: hold until the operator turns the speed slider back up.
    min_speed_scaling_percent: float = Field(default=90.0, ge=0.0, le=100.0)


@dataclass(frozen=True)
class WatchdogStatus:
    #: Every reason that holds the robot now (empty: all fresh).
    reasons: tuple[WatchdogReason, ...]
    #: ``t`` minus the newest stamp; None before the first one arrived.
    observation_age_s: float | None
    chunk_age_s: float | None
    #: Loop time since the joint-state stamp last changed; None before the first.
    joint_state_age_s: float | None


class Watchdog:
    """Feed it stamps as data arrives and the e-stop input; ask :meth:`check` every tick."""

    def __init__(self, config: WatchdogConfig | None = None) -> None:
        self.config = config or WatchdogConfig()
        self._observation_stamp: float | None = None
        self._chunk_stamp: float | None = None
        self._joint_stamp: float | None = None
        self._joint_changed_at: float | None = None
        self._estop_input = False
        self._estop_pressed = False
        self._program_running = True
        self._speed_scaling = 100.0
        #: Stamps ignored because they were NaN or inf (a corrupt message must not count as
        #: fresh data, and must not crash the caller's callback either).
        self.rejected_stamps = 0

    def observation_received(self, stamp: float) -> None:
        """An observation stamped ``stamp`` arrived."""
        value = self._accept(stamp)
        if value is not None:
            self._observation_stamp = value

    def chunk_received(self, stamp: float) -> None:
        """A chunk predicted from observations up to ``stamp`` (its ``t_obs``) arrived."""
        value = self._accept(stamp)
        if value is not None:
            self._chunk_stamp = value

    def joint_state_received(self, stamp: float, t: float) -> None:
        """The loop got a joint-state sample stamped ``stamp`` at loop time ``t``."""
        value = self._accept(stamp)
        if value is not None and value != self._joint_stamp:
            self._joint_stamp = value
            self._joint_changed_at = float(t)

    def forget_stamps(self) -> None:
        """Forget every stamp (the clock went back: they belong to another time line); the
        e-stop input is kept."""
        self._observation_stamp = self._chunk_stamp = self._joint_stamp = None
        self._joint_changed_at = None

    def _accept(self, stamp: object) -> float | None:
        """``stamp`` as a finite float; None (counted) for anything else."""
        value = finite_time(stamp)
        if value is None:
            self.rejected_stamps += 1
        return value

    def set_estop(self, active: bool) -> None:
        """The e-stop input's current level (the supervisor latches it). A press is kept until
        the next :meth:`check` reports it, however short it was."""
        self._estop_input = bool(active)
        self._estop_pressed = self._estop_pressed or self._estop_input

    def set_robot_state(self, program_running: bool, speed_scaling_percent: float) -> None:
        """The robot's own state, as its driver reports it: whether the robot program runs (it
        accepts commands only then) and the speed scaling in percent. Either one off holds
        while it lasts; a scaling that is not a number counts as too low."""
        self._program_running = bool(program_running)
        scaling = finite_time(speed_scaling_percent)
        self._speed_scaling = -1.0 if scaling is None else scaling

    @property
    def estop_active(self) -> bool:
        return self._estop_input

    def check(self, t: float) -> WatchdogStatus:
        """Every reason to hold at (finite) time ``t``."""
        reasons: list[WatchdogReason] = ["estop"] if self._estop_pressed else []
        self._estop_pressed = self._estop_input
        if not self._program_running:
            reasons.append("program_not_running")
        if self._speed_scaling < self.config.min_speed_scaling_percent:
            reasons.append("speed_scaling_low")
        observation_age = self._age(
            t,
            self._observation_stamp,
            self.config.max_observation_age_s,
            reasons,
            ("no_observation", "observation_stale"),
        )
        joint_age = None if self._joint_changed_at is None else t - self._joint_changed_at
        if joint_age is None:
            reasons.append("no_joint_states")
        elif joint_age > self.config.max_joint_state_age_s:
            reasons.append("joint_states_stale")
        chunk_age = self._age(
            t, self._chunk_stamp, self.config.max_chunk_age_s, reasons, ("no_chunk", "chunk_stale")
        )
        return WatchdogStatus(tuple(reasons), observation_age, chunk_age, joint_age)

    def _age(
        self,
        t: float,
        stamp: float | None,
        max_age: float,
        reasons: list[WatchdogReason],
        names: tuple[WatchdogReason, WatchdogReason],
    ) -> float | None:
        """``t - stamp``, appending to ``reasons`` when it is missing, too old or too new."""
        if stamp is None:
            reasons.append(names[0])
            return None
        age = t - stamp
        if age > max_age:
            reasons.append(names[1])
        elif age < -self.config.max_future_s and "stamp_in_future" not in reasons:
            reasons.append("stamp_in_future")
        return age
