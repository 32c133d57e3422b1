"""Decides when the robot must hold: stale data, no data yet, a software e-stop.

A policy acting on an old observation, or an executor running out an old chunk, moves the arm
blind; the watchdog notices and says *hold*. It only decides: the control loop turns a hold
into a deceleration ramp (:meth:`~policy_runtime.execution.safety.SafetyFilter.hold`), so
the command comes to rest ``max_j |v_j| / a_j`` (rounded up to a whole tick) after the last
command before the hold.

* Staleness clears by itself: a hold for stale data ends on the first tick at which data
  fresher than the threshold has arrived (``*_received``), and never earlier.
* The e-stop latches: once its input has been active, the hold stays until :meth:`reset`, and
  :meth:`reset` is refused while the input is still active, so releasing a button alone never
  restarts the arm.

Stamps and ``t`` are seconds on one clock (ROS time; see the architecture's time rules). The
newest *received* stamp counts, not the largest: when the clock jumps back (a sim reset), the
old stamps would otherwise look like the future for ever. A stamp ahead of ``t`` by more than
``max_future_s`` means the clocks disagree, which is a hold too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Watchdog", "WatchdogConfig", "WatchdogReason", "WatchdogState", "WatchdogStatus"]

WatchdogReason = Literal[
    "estop", "no_observation", "observation_stale", "no_chunk", "chunk_stale", "stamp_in_future"
]
#: ``running``: commands flow; ``holding``: stale or missing data (clears on fresh data);
#: ``estop``: latched until :meth:`Watchdog.reset`.
WatchdogState = Literal["running", "holding", "estop"]


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


@dataclass(frozen=True)
class WatchdogStatus:
    state: WatchdogState
    #: Every reason that holds the robot now (empty while running).
    reasons: tuple[WatchdogReason, ...]
    #: ``t`` minus the newest stamp; None before the first one arrived.
    observation_age_s: float | None
    chunk_age_s: float | None

    @property
    def hold(self) -> bool:
        return self.state != "running"


class Watchdog:
    """Feed it stamps as data arrives and the e-stop input; ask :meth:`check` every tick."""

    def __init__(self, config: WatchdogConfig | None = None) -> None:
        self.config = config or WatchdogConfig()
        self._observation_stamp: float | None = None
        self._chunk_stamp: float | None = None
        self._estop_input = False
        self._estop_latched = False
        #: Stamps ignored because they were NaN or inf (a corrupt message must not count as
        #: fresh data, and must not crash the caller's callback either).
        self.rejected_stamps = 0

    def observation_received(self, stamp: float) -> None:
        """An observation stamped ``stamp`` arrived."""
        if self._accept(stamp):
            self._observation_stamp = float(stamp)

    def chunk_received(self, stamp: float) -> None:
        """A chunk predicted from observations up to ``stamp`` (its ``t_obs``) arrived."""
        if self._accept(stamp):
            self._chunk_stamp = float(stamp)

    def _accept(self, stamp: float) -> bool:
        if math.isfinite(stamp):
            return True
        self.rejected_stamps += 1
        return False

    def set_estop(self, active: bool) -> None:
        """The e-stop input's current level; active latches a hold."""
        self._estop_input = bool(active)
        self._estop_latched = self._estop_latched or self._estop_input

    @property
    def estop_active(self) -> bool:
        return self._estop_input

    @property
    def estop_latched(self) -> bool:
        return self._estop_latched

    def reset(self) -> bool:
        """Clear a latched e-stop. Refused (returns False) while the input is still active;
        True otherwise. Staleness is not reset: it follows the data."""
        if self._estop_input:
            return False
        self._estop_latched = False
        return True

    def check(self, t: float) -> WatchdogStatus:
        """The state at time ``t``: running, or holding and why."""
        if not math.isfinite(t):
            raise ValueError(f"t must be finite, got {t}")
        reasons: list[WatchdogReason] = ["estop"] if self._estop_latched else []
        observation_age = self._age(
            t,
            self._observation_stamp,
            self.config.max_observation_age_s,
            reasons,
            ("no_observation", "observation_stale"),
        )
        chunk_age = self._age(
            t, self._chunk_stamp, self.config.max_chunk_age_s, reasons, ("no_chunk", "chunk_stale")
        )
        state: WatchdogState = (
            "estop" if self._estop_latched else ("holding" if reasons else "running")
        )
        return WatchdogStatus(state, tuple(reasons), observation_age, chunk_age)

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
