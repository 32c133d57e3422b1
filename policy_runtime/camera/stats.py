"""Per-frame bookkeeping of a camera, for its diagnostics: written by the frame thread, read by
the node's diagnostics timer (every access takes the lock)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

#: ``streaming``: frames flow; ``starting``: opened, no frame yet; ``stalled``: no frame for
#: ``frame_timeout_s``; ``disconnected``: the device was removed; ``error``: it cannot be opened
#: (the problem says why); ``closed``: shut down.
CameraState = Literal["starting", "streaming", "stalled", "disconnected", "error", "closed"]


@dataclass(frozen=True)
class CameraSnapshot:
    state: CameraState
    #: Why the camera is not streaming ("" when it is).
    problem: str
    #: The serial of the device opened last ("" before one was).
    serial: str
    published: int
    #: Frames lost: gaps in the colour frame numbers (the device, the USB link, or librealsense's
    #: queue when this process fell behind), plus ``skipped``.
    dropped: int
    #: Of ``dropped``: frames that arrived while an older one was still being published and were
    #: passed over for a newer one.
    skipped: int
    stalls: int
    removals: int
    #: Opens after a stall or a removal.
    reconnects: int
    #: Frames published per second, recently (host clock).
    fps: float
    #: Recent capture-to-publish latencies (seconds, host system clock).
    latency_s: tuple[float, ...]


class CameraStats:
    def __init__(self, window: int = 300) -> None:
        self._lock = threading.Lock()
        self._state: CameraState = "starting"
        self._problem = ""
        self._serial = ""
        self._published = 0
        self._gaps = 0
        self._skipped = 0
        self._stalls = 0
        self._removals = 0
        self._reconnects = 0
        self._publish_times: deque[float] = deque(maxlen=window)
        self._latency_s: deque[float] = deque(maxlen=window)

    def published(self, latency_s: float) -> None:
        with self._lock:
            self._published += 1
            self._publish_times.append(time.monotonic())
            self._latency_s.append(latency_s)
            self._state, self._problem = "streaming", ""

    def dropped(self, frames: int) -> None:
        with self._lock:
            self._gaps += frames

    def skipped(self) -> None:
        with self._lock:
            self._skipped += 1

    def opened(self, serial: str, reconnect: bool) -> None:
        with self._lock:
            self._serial = serial
            self._reconnects += reconnect
            self._state, self._problem = "starting", ""

    def stalled(self, problem: str) -> None:
        with self._lock:
            self._stalls += 1
            self._state, self._problem = "stalled", problem

    def removed(self, problem: str) -> None:
        with self._lock:
            self._removals += 1
            self._state, self._problem = "disconnected", problem

    def failed(self, problem: str) -> None:
        with self._lock:
            self._state, self._problem = "error", problem

    def closed(self) -> None:
        with self._lock:
            self._state, self._problem = "closed", ""

    def snapshot(self) -> CameraSnapshot:
        with self._lock:
            times = list(self._publish_times)
            recent = [t for t in times if t > time.monotonic() - 2.0]
            span = recent[-1] - recent[0] if len(recent) > 1 else 0.0
            return CameraSnapshot(
                state=self._state,
                problem=self._problem,
                serial=self._serial,
                published=self._published,
                dropped=self._gaps + self._skipped,
                skipped=self._skipped,
                stalls=self._stalls,
                removals=self._removals,
                reconnects=self._reconnects,
                fps=(len(recent) - 1) / span if span > 0 else 0.0,
                latency_s=tuple(self._latency_s),
            )
