"""What a lockstep simulation has published, and whether it has all arrived.

In lockstep the policy server answers a request of time ``t`` from exactly the data the
simulator published up to ``t``. Waiting for each stream's newest sample "within its period"
is a race: a stream whose next sample is due at ``t`` itself is also covered by the one before
it (one period old), so the window depended on which message DDS delivered first (measured:
15% of the windows of a lockstep episode used the previous tick's state, and episodes of one
seed ended differently from run to run). The simulator therefore announces, after each tick,
the newest stamp it has published (or scheduled: a camera frame still rendering) on each
topic; topics arrive in order each, so once every announced stamp of the topics a server reads
has arrived, nothing older can still come and the window is fixed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from policy_runtime.alignment import STAMP_EPS

#: The lockstep's two messages. The simulator's announcement after each tick
#: (sensor_msgs/JointState: header.stamp the tick, name the topics, position their newest
#: stamps), and the executor's answer to each tick (std_msgs/Header: stamp the tick answered,
#: frame_id the commands sent for it, all of which the simulator awaits before stepping on).
PUBLISHED_TOPIC = "/sim_bridge/published"
TICK_DONE_TOPIC = "/executor/tick_done"


class PublishedStamps:
    """The simulator's announcements against the samples received on ``topics``."""

    def __init__(self, topics: Iterable[str]) -> None:
        self._arrived = dict.fromkeys(topics, -math.inf)
        self._announced_at = -math.inf
        self._announced: dict[str, float] = {}

    def arrived(self, topic: str, stamp: float) -> None:
        """A sample of ``topic`` stamped ``stamp`` is in the history."""
        if topic in self._arrived:
            self._arrived[topic] = max(self._arrived[topic], stamp)

    def announced(self, t: float, stamps: Mapping[str, float]) -> None:
        """The simulator has published, by its tick ``t``, up to ``stamps[topic]`` on each
        topic. Only the newest announcement counts (a later one asks for at least as much)."""
        if t > self._announced_at:
            self._announced_at, self._announced = t, dict(stamps)

    def complete(self, t: float) -> bool:
        """Whether everything the simulator published up to ``t`` on these topics is here."""
        return self._announced_at >= t - STAMP_EPS and not self.missing()

    def missing(self) -> list[str]:
        """The topics whose newest announced sample has not arrived yet."""
        return [
            topic
            for topic, newest in self._arrived.items()
            if topic in self._announced and newest < self._announced[topic] - STAMP_EPS
        ]

    def unannounced(self) -> list[str]:
        """Topics read here that the newest announcement does not name (never waited for)."""
        if self._announced_at == -math.inf:
            return []
        return [topic for topic in self._arrived if topic not in self._announced]
