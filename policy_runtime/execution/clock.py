"""The engine's notion of "now", injected so the same code runs on wall time, ROS time and tests.

Every stamp the engine compares (``t_obs``, due times, controller ticks) must come from one clock
(the architecture's time rule); the engine only reads it when a chunk arrives, to learn how late
it is. :class:`MonotonicClock` serves a standalone process, a ROS 2 node passes its own clock
(``/clock`` in sim), and tests drive a :class:`FakeClock` by hand so no test ever sleeps.
"""

from __future__ import annotations

import math
import time
from typing import Protocol


def finite_time(value: object) -> float | None:
    """``value`` as a finite float (a time or a stamp), or None whatever else it is (NaN, inf,
    text, None, an array): what the control path takes from the outside is checked, not trusted."""
    if isinstance(value, (str, bytes)) or getattr(value, "ndim", None):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


class Clock(Protocol):
    """Anything with ``now()`` in seconds; only differences and order matter, not the epoch."""

    def now(self) -> float: ...


class MonotonicClock:
    """``time.monotonic()``: never jumps with NTP or a changed wall clock."""

    def now(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to, forwards only (a real clock never goes back)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, dt: float) -> float:
        """Move ``dt`` seconds forward and return the new time."""
        if dt < 0:
            raise ValueError(f"dt must be >= 0 (a clock never goes back), got {dt}")
        self._now += dt
        return self._now

    def set(self, t: float) -> None:
        """Jump to ``t``, which must not be earlier than now."""
        if t < self._now:
            raise ValueError(f"t must be >= now ({self._now}) (a clock never goes back), got {t}")
        self._now = float(t)
