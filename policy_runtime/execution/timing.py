"""How long a controller tick's step may be, from the real time since the last command sent.

The UR's forward position controller applies the newest command once per controller cycle
(8 ms on a CB3, 2 ms on an e-series); a command more than one cycle's motion ahead of the
previous one is a speed violation on the arm, whatever the caller's tick rate. So the limits of
a tick are stated per second of *real* time:

* a tick ``elapsed`` seconds after the last command actually sent steps ``h = min(elapsed,
  period)``: an early tick gets a shorter step, a late one no longer than one period (the
  controller held the previous command meanwhile: time lost, not motion owed);
* a tick closer than ``min_tick_fraction`` of a period to that command (a burst after a stall,
  a second publisher, a loop running at several times the controller rate) gets no new step at
  all: it is answered with the previous command, which the controller already has;
* the intervals between ticks are watched: when their median over the last ``rate_window``
  ticks strays from the period by more than ``rate_tolerance``, the loop is running at another
  rate than the controller it was configured for (say, 500 Hz ticks for a 125 Hz CB3). That is
  reported (:attr:`TickStats.rate_mismatch`, counted per tick) and never moves the arm faster:
  the steps above already hold the limits.

:class:`TickTiming` keeps the real-time bookkeeping; the control loop asks it for each tick's
step and tells it when a new command went out. numpy only.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

#: Times closer than this are one instant (sums of periods drift by ~1e-16 s).
_TIME_EPS = 1e-9
#: The fewest intervals the rate watch judges from.
_MIN_RATE_SAMPLES = 10


@dataclass(frozen=True)
class TickStats:
    """The tick timing seen so far (``intervals``: between consecutive ticks, seconds)."""

    ticks: int
    #: Ticks answered with the previous command because they came too soon after it.
    early_ticks: int
    #: Ticks more than 1.5 periods after the previous one (the controller held a command).
    late_ticks: int
    #: Ticks seen while the recent median interval was off the period by more than the tolerance.
    rate_mismatch_ticks: int
    #: Whether the recent median interval is off the period by more than the tolerance now.
    rate_mismatch: bool
    #: Median interval over the window and |interval - period| percentiles (s); NaN before two
    #: ticks.
    interval_p50_s: float
    period_error_p50_s: float
    period_error_p99_s: float
    period_error_max_s: float


class TickTiming:
    """The step each tick may take; see the module docs. ``period_s`` is the controller's."""

    def __init__(
        self,
        period_s: float,
        min_tick_fraction: float = 0.5,
        rate_tolerance: float = 0.1,
        rate_window: int = 250,
    ) -> None:
        if not (math.isfinite(period_s) and period_s > 0.0):
            raise ValueError(f"period_s must be a positive number of seconds, got {period_s}")
        if not 0.0 < min_tick_fraction <= 1.0:
            raise ValueError(f"min_tick_fraction must be in (0, 1], got {min_tick_fraction}")
        self.period_s = float(period_s)
        self.min_tick_fraction = float(min_tick_fraction)
        self.rate_tolerance = float(rate_tolerance)
        self._intervals: deque[float] = deque(maxlen=rate_window)
        #: How many intervals in the window are shorter / longer than the tolerance allows: the
        #: median is off the period exactly when one of them is more than half the window, and
        #: counting costs O(1) a tick where a median costs tens of microseconds.
        self._short = self._long = 0
        self._last_tick: float | None = None
        self._last_sent: float | None = None
        self._ticks = self._early = self._late = self._mismatch_ticks = 0
        self._mismatch = False

    def restart(self) -> None:
        """Forget the last tick and command (the clock went back): the next tick steps a full
        period."""
        self._last_sent = self._last_tick = None
        self._intervals.clear()
        self._short = self._long = 0

    def observe(self, t: float) -> None:
        """Record a tick at ``t`` (a finite time after the previous tick) for the rate watch."""
        if self._last_tick is not None:
            interval = t - self._last_tick
            window = self._intervals
            if len(window) == window.maxlen:
                short, long = self._off(window[0])
                self._short, self._long = self._short - short, self._long - long
            window.append(interval)
            short, long = self._off(interval)
            self._short, self._long = self._short + short, self._long + long
            if interval > 1.5 * self.period_s:
                self._late += 1
            # The median interval is off the period (robust to a single stall).
            half = len(window) / 2
            self._mismatch = len(window) >= _MIN_RATE_SAMPLES and (
                self._short > half or self._long > half
            )
        self._last_tick = t
        self._ticks += 1
        self._mismatch_ticks += self._mismatch

    def _off(self, interval: float) -> tuple[int, int]:
        """(1, 0) for an interval shorter than the tolerance allows, (0, 1) longer, else 0s."""
        ratio = interval / self.period_s - 1.0
        return int(ratio < -self.rate_tolerance), int(ratio > self.rate_tolerance)

    def step(self, t: float) -> tuple[float, float] | None:
        """``(h, elapsed)`` for a tick at ``t``: the step duration the limits apply to and the
        real time since the last command sent; None when the tick is too early for a new step
        (answer it with the previous command; it is counted)."""
        if self._last_sent is None:
            return self.period_s, self.period_s
        elapsed = t - self._last_sent
        if elapsed < self.min_tick_fraction * self.period_s - _TIME_EPS:
            self._early += 1
            return None
        return min(elapsed, self.period_s), elapsed

    def sent(self, t: float) -> None:
        """A new command went out at ``t``."""
        self._last_sent = t

    def stats(self) -> TickStats:
        intervals = np.asarray(self._intervals)
        nan = math.nan
        if len(intervals) == 0:
            p50 = e50 = e99 = emax = nan
        else:
            errors = np.abs(intervals - self.period_s)
            p50 = float(np.median(intervals))
            e50, e99 = (float(v) for v in np.percentile(errors, [50, 99]))
            emax = float(errors.max())
        return TickStats(
            ticks=self._ticks,
            early_ticks=self._early,
            late_ticks=self._late,
            rate_mismatch_ticks=self._mismatch_ticks,
            rate_mismatch=self._mismatch,
            interval_p50_s=p50,
            period_error_p50_s=e50,
            period_error_p99_s=e99,
            period_error_max_s=emax,
        )
