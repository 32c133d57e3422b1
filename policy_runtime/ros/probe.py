"""A probe of a live ROS 2 graph: a node in its own context and thread that records topics
(arrival times on the system clock, header stamps, the newest or every message), for the
pre-flight checks and the shadow-mode report."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor

from policy_runtime.ros.messages import seconds

__all__ = ["GraphProbe", "Stream"]


@dataclass
class Stream:
    """Arrivals (system clock), stamps and the newest message of one topic."""

    arrivals: list[float] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)
    newest: Any = None
    #: Every message, when the stream keeps them.
    messages: list[Any] | None = None

    def add(self, msg: Any, stamp: float | None) -> None:
        self.arrivals.append(time.time())
        if stamp is not None:
            self.stamps.append(stamp)
        self.newest = msg
        if self.messages is not None:
            self.messages.append(msg)

    def rate(self) -> float:
        """Messages per second at the publisher: the median interval between header stamps, or
        between arrivals for unstamped messages. Stamps, because a loaded receiver takes
        messages in batches (a 125 Hz stream once measured 229 Hz by arrivals); the median, so
        a burst as a subscription first matches does not move it."""
        times = self.stamps if len(self.stamps) >= 2 else self.arrivals
        if len(times) < 2:
            return 0.0
        interval = float(np.median(np.diff(times)))
        return 1.0 / interval if interval > 0 else math.inf

    def skew(self) -> float:
        """Median of arrival minus stamp (s): the transport delay plus any clock offset."""
        n = min(len(self.arrivals), len(self.stamps))
        return float(np.median(np.subtract(self.arrivals[:n], self.stamps[:n]))) if n else math.nan


class GraphProbe:
    """A node in its own context and thread, recording topics of a live graph."""

    def __init__(self, name: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.streams: dict[str, Stream] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context went away during shutdown
                return

    def listen(self, topic: str, msg_type: type, profile: Any, keep: bool = False) -> None:
        """Record ``topic`` (every message too when ``keep``)."""
        self.streams.setdefault(topic, Stream(messages=[] if keep else None))

        def callback(msg: Any) -> None:
            header = getattr(msg, "header", None)
            with self.lock:
                self.streams[topic].add(msg, None if header is None else seconds(header.stamp))

        self.node.create_subscription(msg_type, topic, callback, profile)

    def stream(self, topic: str) -> Stream:
        """What ``topic`` brought so far (a copy)."""
        with self.lock:
            got = self.streams.get(topic, Stream())
            messages = None if got.messages is None else list(got.messages)
            return Stream(list(got.arrivals), list(got.stamps), got.newest, messages)

    def topic_types(self) -> dict[str, list[str]]:
        return dict(self.node.get_topic_names_and_types())

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)
