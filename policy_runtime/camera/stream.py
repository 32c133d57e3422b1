"""A camera's frame thread: frames out to a callback, stalls and removals survived.

The thread waits on the device's syncer, never the caller: per frameset it aligns depth to colour,
converts depth to millimetres, maps the capture stamp to the host and ROS clocks
(:mod:`policy_runtime.camera.clock`) and hands a :class:`CameraFrame` to ``on_frame``. When the
device is removed (the devices-changed callback) or sends nothing for ``frame_timeout_s``, its
sensors are stopped and closed and the same serial is opened again every
``reconnect_period_s`` until it is back. Nothing raises out of the thread: failures are logged
and counted in :class:`CameraStats`.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from policy_runtime.camera.clock import FrameClock
from policy_runtime.camera.config import CameraConfig
from policy_runtime.camera.device import (
    CameraError,
    DeviceHub,
    OpenDevice,
    arrival_time,
    open_device,
)
from policy_runtime.camera.frames import CameraFrame, depth_to_mm
from policy_runtime.camera.stats import CameraStats

#: Longest wait on the syncer: how soon a removal or :meth:`Camera.close` is noticed.
POLL_S = 0.05
#: Seconds a device may take to send its first frame after it starts (USB power-up, the first
#: exposures): ``frame_timeout_s`` applies once frames flow.
FIRST_FRAME_S = 5.0
#: The same failure to open is logged again after this long.
REPEAT_LOG_S = 10.0


class Log(Protocol):
    """A ``logging.Logger`` or a ROS node's logger."""

    def info(self, msg: str, /) -> object: ...
    def warning(self, msg: str, /) -> object: ...
    def error(self, msg: str, /) -> object: ...


class Camera:
    """One RealSense device streaming to ``on_frame`` (called from the frame thread; it should
    return quickly, a frame arriving meanwhile waits in the syncer's queue).

    ``ros_minus_system() = ros_now - system_now`` maps capture times to the ROS clock.
    """

    def __init__(
        self,
        hub: DeviceHub,
        config: CameraConfig,
        on_frame: Callable[[CameraFrame], None],
        *,
        ros_minus_system: Callable[[], float] = lambda: 0.0,
        log: Log | None = None,
    ) -> None:
        self.hub = hub
        self.config = config
        self.on_frame = on_frame
        self.stats = CameraStats()
        self.clock = FrameClock(ros_minus_system)
        self.log: Log = log or logging.getLogger(__name__)
        self._device: OpenDevice | None = None
        self._removed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe = hub.subscribe(self._on_devices_changed)
        self._last_number: int | None = None
        self._last_frame = 0.0
        self._timeout_s = FIRST_FRAME_S
        self._lost = False
        self._failure = ("", 0.0)  # the last failure to open logged, and when (monotonic)

    @property
    def name(self) -> str:
        return self.config.serial or "(any serial)"

    def start(self, *, wait_for_device: bool = False) -> None:
        """Open the device and start the frame thread. Raises :class:`CameraError` if it cannot
        be opened; with ``wait_for_device``, a device that is missing or busy is not an error:
        the thread opens it when it can (the stats say why it is not streaming meanwhile)."""
        try:
            self._open()
        except CameraError as exc:
            if not (wait_for_device and exc.transient):
                self._unsubscribe()
                raise
            self._failed_to_open(exc)
        self._thread = threading.Thread(target=self._run, name=f"camera {self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and release the device."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._unsubscribe()
        self._close_device()
        self.stats.closed()

    # -- the frame thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._device is None:
                    self._reopen()
                else:
                    self._step(self._device)
            except Exception as exc:  # never out of the thread: log, count, start over
                self.log.error(f"camera {self.name}: {traceback.format_exc()}")
                self.stats.failed(f"{type(exc).__name__}: {exc}")
                self._lose()

    def _reopen(self) -> None:
        if self._stop.wait(self.config.reconnect_period_s):
            return
        try:
            self._open()
        except CameraError as exc:
            self._failed_to_open(exc)

    def _failed_to_open(self, exc: CameraError) -> None:
        message = f"cannot open: {exc}"
        self.stats.failed(message)
        last, when = self._failure
        if message != last or time.monotonic() - when > REPEAT_LOG_S:
            self._failure = (message, time.monotonic())
            self.log.error(f"{message}; trying again every {self.config.reconnect_period_s:g} s")

    def _open(self) -> None:
        self._removed.clear()
        device = open_device(self.hub, self.config)
        self._device = device
        self._last_number = None
        self._last_frame = time.monotonic()
        self._timeout_s = max(FIRST_FRAME_S, self.config.frame_timeout_s)
        self.clock.reset()
        self.stats.opened(device.serial, reconnect=self._lost)
        if self._lost:
            self.log.info(f"camera {device.serial}: open again")

    def _step(self, device: OpenDevice) -> None:
        frameset = device.wait(min(POLL_S, self.config.frame_timeout_s))
        if self._removed.is_set():
            self.stats.removed(f"camera {device.serial} was removed")
            self.log.warning(f"camera {device.serial}: removed; waiting for it to come back")
            self._lose()
        elif frameset is not None:
            self._last_frame = time.monotonic()
            self._timeout_s = self.config.frame_timeout_s
            self._publish(device, frameset)
        elif time.monotonic() - self._last_frame > self._timeout_s:
            problem = f"camera {device.serial}: no frame for {self._timeout_s:g} s"
            self.stats.stalled(problem)
            self.log.warning(f"{problem}; closing and opening it again")
            self._lose()

    def _lose(self) -> None:
        self._close_device()
        self._lost = True

    def _close_device(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            device.close()

    def _publish(self, device: OpenDevice, frameset: Any) -> None:
        received = time.time()
        frameset = self._newest(device, frameset)
        if frameset is None:
            return
        if device.align is not None and frameset.get_depth_frame():
            frameset = device.align.process(frameset)
            depth = frameset.get_depth_frame()
            depth_mm = depth_to_mm(np.asanyarray(depth.get_data()), depth.get_units())
        else:
            depth_mm = None
        color = frameset.get_color_frame()
        when = self.clock.capture(
            color.get_timestamp(),
            color.get_frame_timestamp_domain().name,
            arrival_time(color, received),
        )
        frame = CameraFrame(
            color=np.asanyarray(color.get_data()),
            depth_mm=depth_mm,
            frame_number=color.get_frame_number(),
            capture_s=when.system_s,
            stamp_s=when.ros_s,
            received_s=received,
            intrinsics=device.intrinsics,
        )
        self.on_frame(frame)
        self.stats.published(time.time() - when.system_s)

    def _newest(self, device: OpenDevice, frameset: Any) -> Any | None:
        """The newest frameset with colour among those waiting; older ones are skipped. Every
        colour frame seen counts towards the frame-number gaps."""
        newest = None
        while frameset is not None:
            color = frameset.get_color_frame()
            if color:
                self._count_gap(color.get_frame_number())
                if newest is not None:
                    self.stats.skipped()
                newest = frameset
            frameset = device.poll()
        return newest

    def _count_gap(self, number: int) -> None:
        last, self._last_number = self._last_number, number
        if last is not None and number > last + 1:
            self.stats.dropped(number - last - 1)

    def _on_devices_changed(self, removed: Callable[[Any], bool]) -> None:  # librealsense thread
        device = self._device
        if device is not None and removed(device.device):
            self._removed.set()
