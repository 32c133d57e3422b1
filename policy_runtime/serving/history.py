"""Stamped observation streams, aligned to a policy's grid the way Diffusion Policy aligns them.

Each observation key arrives on its own stream (a topic) at its own rate and with its own
stamps. A policy wants ``n_obs_steps`` of every key, one policy period ``dt`` apart. Diffusion
Policy's real-robot rule: the window ends at ``t_obs``, the newest time every stream has reached;
for each grid time ``t_obs - k * dt`` take each stream's newest sample stamped not after it.
Before a stream's first sample the window repeats that first sample (as the simulation loop
repeats the first observation); a chosen sample older than ``max_gap_periods`` of the stream's
own period is a gap: the window is still built, and the gap is counted and named.

Plain numpy, no ROS: the policy server feeds it from its subscriptions.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from policy_runtime.alignment import STAMP_EPS, newest_not_after


@dataclass(frozen=True)
class StreamSpec:
    """One stream: its key and its expected period in seconds (None: unknown, no gap check)."""

    key: str
    period_s: float | None = None


@dataclass(frozen=True)
class Window:
    """``obs[key]`` ``(n_obs_steps, *shape)`` oldest first, ending at ``t_obs``; ``stamps[key]``
    the chosen samples' stamps; ``gaps`` the keys whose chosen samples were too old."""

    t_obs: float
    obs: dict[str, np.ndarray]
    stamps: dict[str, np.ndarray]
    gaps: tuple[str, ...] = ()
    #: Grid times before a stream's first sample (filled with it).
    padded: int = 0


@dataclass
class _Stream:
    spec: StreamSpec
    stamps: deque[float] = field(default_factory=deque)
    values: deque[np.ndarray] = field(default_factory=deque)


class ObservationHistory:
    """The recent samples of every stream, and the policy window at any time they cover.

    ``keep_s`` bounds how far back samples are kept (a window needs ``(n_obs_steps - 1) * dt``
    plus one sample before it). Samples must come in stamp order per stream: an older or equal
    stamp is refused (counted in ``out_of_order``), as is anything stamped before
    :meth:`clear`'s ``since`` (a message of the previous episode still in flight).
    """

    def __init__(
        self, streams: list[StreamSpec], n_obs_steps: int, dt: float, max_gap_periods: float = 2.5
    ) -> None:
        if n_obs_steps < 1 or not dt > 0:
            raise ValueError(f"n_obs_steps must be >= 1 and dt > 0, got {n_obs_steps}, {dt}")
        keys = [s.key for s in streams]
        if len(set(keys)) != len(keys) or not keys:
            raise ValueError(f"streams need distinct keys, got {keys}")
        self.n_obs_steps = n_obs_steps
        self.dt = dt
        self.max_gap_periods = max_gap_periods
        longest = max((s.period_s or 0.0) for s in streams)
        self.keep_s = (n_obs_steps - 1) * dt + max_gap_periods * longest + dt
        self._streams = {s.key: _Stream(s) for s in streams}
        #: Samples stamped before this are refused (set by :meth:`clear`).
        self.since = -math.inf
        self.out_of_order = 0
        self.gaps: dict[str, int] = dict.fromkeys(keys, 0)

    @property
    def keys(self) -> list[str]:
        return list(self._streams)

    def add(self, key: str, stamp: float, value: np.ndarray) -> bool:
        """Keep a sample; False (and counted) when its stamp is not newer than the stream's last
        or before the last :meth:`clear`. Raises KeyError for a key that is not a stream."""
        stream = self._streams[key]
        if not math.isfinite(stamp) or stamp < self.since - STAMP_EPS:
            self.out_of_order += 1
            return False
        if stream.stamps and stamp <= stream.stamps[-1] + STAMP_EPS:
            self.out_of_order += 1
            return False
        stream.stamps.append(stamp)
        stream.values.append(value)
        # Keep one sample older than the window's reach: it is the one a grid time picks.
        while len(stream.stamps) > 2 and stream.stamps[1] < stamp - self.keep_s:
            stream.stamps.popleft()
            stream.values.popleft()
        return True

    def clear(self, since: float = -math.inf) -> None:
        """Forget every sample; refuse any stamped before ``since`` from now on."""
        for stream in self._streams.values():
            stream.stamps.clear()
            stream.values.clear()
        self.since = since

    def newest_stamp(self, key: str) -> float | None:
        stamps = self._streams[key].stamps
        return stamps[-1] if stamps else None

    def newest_common_stamp(self) -> float | None:
        """The newest time every stream has reached (None while one has no sample)."""
        newest = [s.stamps[-1] if s.stamps else None for s in self._streams.values()]
        if any(stamp is None for stamp in newest):
            return None
        return min(stamp for stamp in newest if stamp is not None)

    def window(self, t_obs: float | None = None) -> Window | None:
        """The window ending at ``t_obs`` (default: :meth:`newest_common_stamp`); None while a
        stream has no sample at or before ``t_obs``."""
        if t_obs is None:
            t_obs = self.newest_common_stamp()
            if t_obs is None:
                return None
        grid = t_obs - self.dt * np.arange(self.n_obs_steps - 1, -1, -1, dtype=np.float64)
        obs: dict[str, np.ndarray] = {}
        stamps: dict[str, np.ndarray] = {}
        gaps: list[str] = []
        padded = 0
        for key, stream in self._streams.items():
            times = np.fromiter(stream.stamps, np.float64, len(stream.stamps))
            index = newest_not_after(times, grid)
            if index.size == 0 or index[-1] < 0:
                return None
            padded += int(np.count_nonzero(index < 0))
            index = np.maximum(index, 0)
            chosen = times[index]
            values = [stream.values[i] for i in index]
            obs[key] = np.stack(values)
            stamps[key] = chosen
            period = stream.spec.period_s
            if period is not None:
                late = (grid - chosen)[grid >= times[0]]
                if np.any(late > self.max_gap_periods * period + STAMP_EPS):
                    gaps.append(key)
                    self.gaps[key] += 1
        return Window(t_obs, obs, stamps, tuple(gaps), padded)
