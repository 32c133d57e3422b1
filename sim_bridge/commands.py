"""What the simulated controller does with the commands it receives, as the UR driver does.

- Position streaming (``forward_position_controller``): each controller tick applies the newest
  command received, like ``servoj``; with none new it holds the last. A command that is not six
  finite numbers, or that jumps further than ``max_jump_rad`` from the command in force, is
  refused and counted (the real arm would fault on it): the arm holds.
- Trajectories (``scaled_joint_trajectory_controller``): the points, joints matched by name in
  any order, are interpolated linearly from the command in force, ``time_from_start`` after the
  trajectory's stamp (or its arrival when unstamped); a new position command or trajectory
  replaces it.

Plain numpy: the ROS 2 node hands the messages' fields to :class:`CommandInbox`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from policy_runtime.robots.ur5 import JOINT_NAMES

REFUSALS = ("wrong_length", "not_finite", "jump", "bad_trajectory")


class CommandInbox:
    """The newest valid command and the trajectory in force; ``counts`` of refused ones."""

    def __init__(self, max_jump_rad: float = 0.5) -> None:
        self.max_jump_rad = max_jump_rad
        self.counts: dict[str, int] = dict.fromkeys(REFUSALS, 0)
        self._newest: np.ndarray | None = None
        self._trajectory: tuple[np.ndarray, np.ndarray] | None = None  # times (n,), q (n, 6)

    def clear(self) -> None:
        """Forget pending commands (a reset: the arm holds where it was put)."""
        self._newest = None
        self._trajectory = None

    def _refuse(self, reason: str) -> str:
        self.counts[reason] += 1
        return reason

    def offer_positions(self, values: Sequence[float], q_in_force: np.ndarray) -> str | None:
        """A position command; None when taken, else the reason it was refused."""
        q = np.asarray(values, dtype=np.float64)
        if q.shape != (6,):
            return self._refuse("wrong_length")
        if not np.all(np.isfinite(q)):
            return self._refuse("not_finite")
        if np.max(np.abs(q - q_in_force)) > self.max_jump_rad:
            return self._refuse("jump")
        self._newest = q
        self._trajectory = None
        return None

    def offer_trajectory(
        self,
        names: Sequence[str],
        positions: Sequence[Sequence[float]],
        times_from_start: Sequence[float],
        start: float,
        q_in_force: np.ndarray,
    ) -> str | None:
        """A joint trajectory starting at ``start``; None when taken, else why refused."""
        try:
            order = [list(names).index(joint) for joint in JOINT_NAMES]
        except ValueError:
            return self._refuse("bad_trajectory")
        if len(names) != 6 or not positions or len(positions) != len(times_from_start):
            return self._refuse("bad_trajectory")
        q = np.asarray([[p[i] for i in order] for p in positions], dtype=np.float64)
        times = start + np.asarray(times_from_start, dtype=np.float64)
        if not np.all(np.isfinite(q)) or np.any(np.diff(times) <= 0) or times[0] < start:
            return self._refuse("bad_trajectory")
        self._trajectory = (np.concatenate([[start], times]), np.vstack([q_in_force, q]))
        self._newest = None
        return None

    def command_at(self, t: float) -> np.ndarray | None:
        """The joint command for the tick at ``t`` (None: hold the last)."""
        if self._trajectory is not None:
            times, q = self._trajectory
            return np.array([np.interp(t, times, q[:, j]) for j in range(6)])
        newest, self._newest = self._newest, None
        return newest
