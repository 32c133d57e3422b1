"""A frame's capture time, on the host's system clock and on the ROS clock.

librealsense stamps each frame in one of three domains (milliseconds):

- ``global_time``: the device's hardware clock mapped to the host's system clock by librealsense
  (``global_time_enabled``, which the camera turns on where a sensor supports it);
- ``system_time``: the host's system clock when the frame arrived (what librealsense falls back
  to when a frame carries no hardware stamp): later than the exposure by the transport delay;
- ``hardware_clock``: the device's own clock, unrelated to the host's.

The first two are host system time: ROS time = ts / 1000 + (ros_now - system_now), where the
second term is 0 on a robot (the ROS clock is the system clock) and the simulation's offset under
``use_sim_time``.

For ``hardware_clock`` the offset from the device clock to the host clock is estimated here.
Every frame gives ``host_arrival - device_ts = offset + delay`` with a delay > 0 (readout, USB,
driver). Its lower envelope, the minimum over a sliding window, is the offset plus the smallest
delay in the window: a late frame or jittery transport does not move it, so stamps stay evenly
spaced, biased late by the minimum delay (about a millisecond over USB 3). The window (10 s)
follows the drift between the two crystals (tens of ppm: under a millisecond per window). A
sample more than ``jump_s`` off the envelope means the device clock jumped (the device restarted
or its counter wrapped): the window starts over from it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: The domains whose stamps are host system time in milliseconds.
SYSTEM_DOMAINS = ("global_time", "system_time")


class ClockOffset:
    """The lower envelope of ``host - device`` over the last ``window_s`` of host time (a
    monotonic deque: amortised O(1) per sample)."""

    def __init__(self, window_s: float = 10.0, jump_s: float = 1.0) -> None:
        self.window_s = window_s
        self.jump_s = jump_s
        #: (host time, host - device), offsets increasing from the front: the front is the min.
        self._window: deque[tuple[float, float]] = deque()

    @property
    def value(self) -> float | None:
        """The current estimate (None before the first sample)."""
        return self._window[0][1] if self._window else None

    def update(self, device_s: float, host_s: float) -> float:
        """Add a frame's device stamp and host arrival time (seconds); the offset estimate."""
        sample = host_s - device_s
        current = self.value
        if current is not None and abs(sample - current) > self.jump_s:
            self._window.clear()
        while self._window and self._window[-1][1] >= sample:
            self._window.pop()
        self._window.append((host_s, sample))
        while self._window[0][0] < host_s - self.window_s:
            self._window.popleft()
        return self._window[0][1]

    def reset(self) -> None:
        self._window.clear()


@dataclass(frozen=True)
class FrameTime:
    #: Capture time on the host's system clock (seconds since the epoch).
    system_s: float
    #: The same instant on the ROS clock.
    ros_s: float


class FrameClock:
    """Maps frame stamps to :class:`FrameTime`. ``ros_minus_system() = ros_now - system_now``,
    asked for each frame (0 where the ROS clock is the system clock)."""

    def __init__(
        self, ros_minus_system: Callable[[], float] = lambda: 0.0, window_s: float = 10.0
    ) -> None:
        self.ros_minus_system = ros_minus_system
        self.offset = ClockOffset(window_s)

    def capture(self, timestamp_ms: float, domain: str, arrival_s: float) -> FrameTime:
        """``domain``: the name of librealsense's timestamp domain; ``arrival_s``: when the
        frame reached the host, system clock (used for ``hardware_clock`` stamps only)."""
        if domain in SYSTEM_DOMAINS:
            system = timestamp_ms / 1000.0
        elif domain == "hardware_clock":
            device = timestamp_ms / 1000.0
            system = device + self.offset.update(device, arrival_s)
        else:
            raise ValueError(f"unknown timestamp domain {domain!r}")
        return FrameTime(system, system + self.ros_minus_system())

    def reset(self) -> None:
        """Forget the device clock's offset (a reopened device may have restarted its clock)."""
        self.offset.reset()
