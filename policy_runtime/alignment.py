"""Stamped samples onto a policy's time grid: Diffusion Policy's newest-not-after rule.

A policy sees every key once per period ``dt``. Streams arrive at their own rates with their own
stamps, so each grid time ``t`` takes, per stream, the newest sample stamped not after ``t``
(Diffusion Policy's real-robot alignment). The policy server applies the rule to a window of
recent samples (:mod:`policy_runtime.serving.history`); the recorder and the bag import apply it
online to whole episodes (:class:`GridAligner`). Both call :func:`newest_not_after`, so a
recorded episode and a served window pick the same samples. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

#: Stamps this close count as equal. Not a nanosecond: a float64 of seconds since the epoch
#: (system time on a robot, ~1.8e9 s) resolves only ~0.24 us, so a stamp built from a message's
#: integer nanoseconds and a grid time summed from t0 can differ by that much when they are the
#: same instant. A microsecond is far below any stream's period (500 Hz: 2 ms).
STAMP_EPS = 1e-6

T = TypeVar("T")


def newest_not_after(stamps: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """For each grid time, the index of the newest of the ascending ``stamps`` not after it
    (-1 where every stamp is after it)."""
    return np.searchsorted(stamps, np.asarray(grid) + STAMP_EPS, side="right") - 1


@dataclass(frozen=True)
class AlignedRow(Generic[T]):
    """Grid time ``index``'s sample: its value and stamp (``grid time - stamp`` is how old the
    sample was at that grid time)."""

    index: int
    value: T
    stamp: float


class GridAligner(Generic[T]):
    """One stream onto the grid ``t0 + k * dt``, online: a grid time is decided as soon as a
    sample stamped after it arrives (the one before is then the newest not after it), so only
    the newest sample is ever held.

    Samples must come in stamp order; an older or equal stamp is refused (returns None) and
    counted in ``out_of_order``. The first sample must not be after ``t0`` (the caller starts
    the grid where every stream has one).
    """

    def __init__(self, t0: float, dt: float) -> None:
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        self.t0, self.dt = t0, dt
        self.next_index = 0
        self.out_of_order = 0
        self._last: tuple[float, T] | None = None

    def grid_time(self, index: int) -> float:
        return self.t0 + index * self.dt

    def add(self, stamp: float, value: T) -> list[AlignedRow[T]] | None:
        """Keep a sample; return the rows it decides (None: refused as out of order)."""
        last = self._last
        if last is None:
            if stamp > self.t0 + STAMP_EPS:
                raise ValueError(
                    f"the first sample ({stamp:.6f}) is after the grid start {self.t0}"
                )
        elif stamp <= last[0] + STAMP_EPS:
            self.out_of_order += 1
            return None
        rows = self._rows_before(stamp) if last is not None else []
        self._last = (stamp, value)
        return rows

    def finish(self, length: int) -> list[AlignedRow[T]]:
        """The rows of grid times up to ``length - 1`` not decided yet (the stream ended, or the
        episode does: its newest sample is the newest not after each of them)."""
        last = self._last
        if last is None:
            raise ValueError("no sample: the stream never started")
        rows = []
        while self.next_index < length:
            rows.append(AlignedRow(self.next_index, last[1], last[0]))
            self.next_index += 1
        return rows

    def _rows_before(self, stamp: float) -> list[AlignedRow[T]]:
        assert self._last is not None
        last_stamp, value = self._last
        rows = []
        # Grid times strictly before the new stamp take the previous sample. The index is
        # computed, not stepped through, for a stream that resumes after a long pause.
        end = int(np.floor((stamp - STAMP_EPS - self.t0) / self.dt)) + 1
        while self.next_index < end:
            rows.append(AlignedRow(self.next_index, value, last_stamp))
            self.next_index += 1
        return rows
