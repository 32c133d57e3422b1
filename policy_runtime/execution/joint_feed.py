"""Which measured joint samples the control loop may trust.

The loop checks its commands against the measured joints and, in a hold, re-anchors to them: a
wrong sample trusted there becomes a command. A sample is used only when it is one:

* 6 finite numbers with a finite stamp, within a UR joint's range (+-2 pi plus the tolerance);
* no further from the previous well-formed sample than the arm's top joint speed allows over the
  time between them, plus ``tolerance_rad`` (a unit mix-up, a bit flip, another arm's message:
  no arm moves like that; the sample after a real jump agrees with it and is trusted);
* not the first of a stream (at start-up, after a clock reset): it is trusted once the next one
  agrees with it, so nothing is ever commanded from a single sample.

And the feed as a whole must be live: besides the watchdog's stamp check (a stamp that stops
changing), joints that stay bit for bit the same while the commands moved on by more than
``moved_rad`` for longer than the joint states may be old are a frozen feed (a driver that lost
the arm and republishes its last sample with new stamps: a real arm's encoders, following the
commands, are never that still).
"""

from __future__ import annotations

import numpy as np

from policy_runtime.execution.clock import finite_time
from policy_runtime.execution.watchdog import Watchdog

__all__ = ["JointFeed"]

#: A UR joint's whole range (rad): a sample beyond it (plus the tolerance) is not a UR arm's.
UR_JOINT_RANGE = 2.0 * np.pi


class JointFeed:
    """The trust in one stream of joint samples; see the module docs. Feeds the watchdog the
    stamps of the samples it trusts."""

    def __init__(
        self, arm_speed: np.ndarray, tolerance_rad: float, moved_rad: float, watchdog: Watchdog
    ) -> None:
        self.arm_speed = np.asarray(arm_speed, dtype=np.float64)
        self.tolerance_rad = float(tolerance_rad)
        self.moved_rad = float(moved_rad)
        self.watchdog = watchdog
        #: Whether the latest sample was the first of a stream (not an invalid one).
        self.unconfirmed = False
        self._previous: tuple[np.ndarray, float] | None = None
        #: The measured joints, since when they have been bit for bit the same, and the
        #: commanded joints then.
        self._same: tuple[np.ndarray, float, np.ndarray] | None = None

    def restart(self) -> None:
        """A new stream (the clock went back): the next sample must be confirmed again."""
        self._previous = self._same = None

    def sample(self, t: float, q_measured: object, q_stamp: object) -> np.ndarray | None:
        """The sample at loop time ``t`` as float64 joints when it can be trusted, else None.
        Never raises, whatever ``q_measured`` and ``q_stamp`` are."""
        self.unconfirmed = False
        stamp = finite_time(q_stamp)
        try:
            raw = np.asarray(q_measured)
            if raw.dtype.kind not in "iufO":  # complex, text, bytes: no joint angles
                return None
            with np.errstate(all="ignore"):
                q = raw.astype(np.float64)
        except (TypeError, ValueError, OverflowError):
            return None
        if q.shape != (6,) or stamp is None or not np.all(np.isfinite(q)):
            return None
        previous, self._previous = self._previous, (q, t)
        if np.abs(q).max() > UR_JOINT_RANGE + self.tolerance_rad:
            return None
        if previous is None:
            self.unconfirmed = True
            return None
        allowed = self.arm_speed * (t - previous[1]) + self.tolerance_rad
        if np.any(np.abs(q - previous[0]) > allowed):
            return None  # a jump no arm makes: a corrupt sample (or the first after one)
        self.watchdog.joint_state_received(stamp, t)
        return q

    def reanchored(self) -> None:
        """The commands were moved to where the arm is (a re-anchoring, or following the arm
        while the robot program is off): that move is no motion the arm should have followed,
        so the frozen check starts over."""
        self._same = None

    def frozen(self, t: float, measured: np.ndarray | None, commanded: np.ndarray) -> bool:
        """Whether ``measured`` continues a run of bit-identical samples that has lasted longer
        than joint states may be old while the ``commanded`` joints moved on."""
        if measured is None:
            return False
        same = self._same
        if same is None or not np.array_equal(measured, same[0]):
            self._same = (measured, t, commanded.copy())
            return False
        moved = np.abs(commanded - same[2]).max() > self.moved_rad
        return moved and t - same[1] > self.watchdog.config.max_joint_state_age_s
