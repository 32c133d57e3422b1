"""A RealSense without a camera: a librealsense software device with a colour and a depth sensor,
and a thread that feeds it a known test pattern at the configured rate.

Frames go through real librealsense (sensors opened and started, options and their ranges, the
syncer, ``rs.align`` with the registered depth-to-colour extrinsics), so the camera core, the node
(``device: test_pattern``), the tests and the bench run on a machine with no camera.

What a software device cannot show: it has no ``global_time_enabled`` option (the injected
stamps carry their domain themselves, ``global_time`` here, so librealsense's own mapping of a
hardware clock to the host is not exercised); it cannot leave a context (see
:class:`~policy_runtime.camera.device.DeviceHub`); and "busy" is its refusal of a second open in
the same process, not another process holding a USB device.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyrealsense2 as rs

from policy_runtime.camera.frames import Intrinsics

DEFAULT_SERIAL = "test-pattern"
DEVICE_NAME = "Intel RealSense test pattern"
#: Brown-Conrady k1, k2, p1, p2, k3 of the colour lens (non-zero, as a real one's).
COLOR_COEFFS = (0.112, -0.231, 0.0012, -0.0007, 0.094)
#: The depth plane: this far at the top row, this much farther at the bottom row (metres).
PLANE_TOP_M = 1.0
PLANE_DEPTH_M = 0.5


def pattern_intrinsics(width: int, height: int, model: str, coeffs: Sequence[float]) -> Intrinsics:
    """A ~70 degree horizontal field of view, principal point a little off-centre."""
    fx = 0.71 * width
    return Intrinsics(
        width=width,
        height=height,
        fx=fx,
        fy=fx + 0.75,
        ppx=(width - 1) / 2 + 1.5,
        ppy=(height - 1) / 2 - 2.25,
        model=model,
        coeffs=tuple(float(c) for c in coeffs),
    )


def pattern_color(width: int, height: int, frame_number: int) -> np.ndarray:
    """A gradient moving with the frame number: (H, W, 3) uint8."""
    x = np.arange(width, dtype=np.int64)[None, :]
    y = np.arange(height, dtype=np.int64)[:, None]
    n = frame_number
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = (x + 4 * n) % 256
    image[..., 1] = (y + 2 * n) % 256
    image[..., 2] = (x + y + n) % 256
    return image


def pattern_depth(width: int, height: int, units_m: float) -> np.ndarray:
    """A plane tilting away towards the bottom of the image, in device units: (H, W) uint16."""
    rows = PLANE_TOP_M + PLANE_DEPTH_M * np.arange(height) / max(height - 1, 1)
    raw = np.rint(rows / units_m).astype(np.uint16)
    return np.repeat(raw[:, None], width, axis=1)


class SoftwareCamera:
    """A software RealSense of ``serial``: colour rgb8 and depth z16 at ``width`` x ``height`` @
    ``fps`` (and the extra ``modes``, (w, h, fps), for both), depth in ``depth_units_m`` metres,
    ``baseline_m`` the x translation of the depth-to-colour extrinsics (a D435's is ~0.015 m).

    Add :attr:`device` to a :class:`~policy_runtime.camera.device.DeviceHub`; then
    :meth:`inject` frames one by one, or :meth:`start` the thread that injects the pattern.
    """

    def __init__(
        self,
        serial: str = DEFAULT_SERIAL,
        *,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        depth_units_m: float = 0.001,
        baseline_m: float = 0.015,
        modes: Sequence[tuple[int, int, int]] = (),
    ) -> None:
        self.fps = fps
        self.depth_units_m = depth_units_m
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, DEVICE_NAME)
        self.depth_sensor = self.device.add_sensor("Stereo Module")
        self.color_sensor = self.device.add_sensor("RGB Camera")
        self.intrinsics = pattern_intrinsics(width, height, "brown_conrady", COLOR_COEFFS)
        depth_profiles, color_profiles = [], []
        all_modes = [(width, height, fps), *[m for m in modes if m != (width, height, fps)]]
        for uid, (w, h, rate) in enumerate(all_modes):
            color = pattern_intrinsics(w, h, "brown_conrady", COLOR_COEFFS)
            depth = pattern_intrinsics(w, h, "brown_conrady", (0.0,) * 5)
            depth_profiles.append(
                self.depth_sensor.add_video_stream(
                    _video_stream(rs.stream.depth, rs.format.z16, 2, 2 * uid + 1, rate, depth)
                )
            )
            color_profiles.append(
                self.color_sensor.add_video_stream(
                    _video_stream(rs.stream.color, rs.format.rgb8, 3, 2 * uid + 2, rate, color)
                )
            )
        extrinsics = rs.extrinsics()
        extrinsics.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        extrinsics.translation = [baseline_m, 0.0, 0.0]
        for depth_profile in depth_profiles:
            for color_profile in color_profiles:
                depth_profile.register_extrinsics_to(color_profile, extrinsics)
        self.depth_sensor.add_read_only_option(rs.option.depth_units, depth_units_m)
        # A D435's ranges. Options: min, max, step, default.
        for sensor, option, bounds in (
            (self.depth_sensor, rs.option.laser_power, (0, 360, 30, 150)),
            (self.depth_sensor, rs.option.inter_cam_sync_mode, (0, 2, 1, 0)),
            (self.color_sensor, rs.option.enable_auto_exposure, (0, 1, 1, 1)),
            (self.color_sensor, rs.option.exposure, (1, 10000, 1, 156)),
            (self.color_sensor, rs.option.enable_auto_white_balance, (0, 1, 1, 1)),
            (self.color_sensor, rs.option.white_balance, (2800, 6500, 10, 4600)),
        ):
            sensor.add_option(option, _option_range(*bounds))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_number = 1
        self._depth_cache: dict[tuple[int, int], np.ndarray] = {}

    def inject(
        self,
        frame_number: int,
        timestamp_ms: float | None = None,
        color: np.ndarray | None = None,
        depth: np.ndarray | None = None,
    ) -> None:
        """One colour frame and one depth frame into the sensors that stream (the pattern unless
        given), stamped ``timestamp_ms`` (default: now) in the ``global_time`` domain."""
        stamp = time.time() * 1000.0 if timestamp_ms is None else timestamp_ms
        for sensor, bpp in ((self.color_sensor, 3), (self.depth_sensor, 2)):
            streams = sensor.get_active_streams()
            if not streams:
                continue
            profile = streams[0].as_video_stream_profile()
            width, height = profile.width(), profile.height()
            if bpp == 3:
                pixels = pattern_color(width, height, frame_number) if color is None else color
            else:
                pixels = self.depth_image(width, height) if depth is None else depth
            frame = rs.software_video_frame()
            frame.pixels = np.ascontiguousarray(pixels)
            frame.bpp, frame.stride = bpp, bpp * width
            frame.timestamp, frame.frame_number = stamp, frame_number
            frame.domain = rs.timestamp_domain.global_time
            frame.profile = profile
            if bpp == 2:
                frame.depth_units = self.depth_units_m
            sensor.on_video_frame(frame)

    def depth_image(self, width: int, height: int) -> np.ndarray:
        """The depth pattern at a resolution (computed once)."""
        key = (width, height)
        if key not in self._depth_cache:
            self._depth_cache[key] = pattern_depth(width, height, self.depth_units_m)
        return self._depth_cache[key]

    def start(self) -> None:
        """Inject the pattern at ``fps``, frame numbers going on from the last injected."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="test pattern", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _run(self) -> None:
        start = time.monotonic()
        first = self._next_number
        while not self._stop.is_set():
            self.inject(self._next_number)
            self._next_number += 1
            due = start + (self._next_number - first) / self.fps
            self._stop.wait(max(0.0, due - time.monotonic()))


def _video_stream(
    stream: Any, fmt: Any, bpp: int, uid: int, fps: int, intrinsics: Intrinsics
) -> Any:
    video = rs.video_stream()
    video.type, video.index, video.uid, video.fmt = stream, 0, uid, fmt
    video.width, video.height = intrinsics.width, intrinsics.height
    video.fps, video.bpp = fps, bpp
    rs_intrinsics = rs.intrinsics()
    rs_intrinsics.width, rs_intrinsics.height = intrinsics.width, intrinsics.height
    rs_intrinsics.fx, rs_intrinsics.fy = intrinsics.fx, intrinsics.fy
    rs_intrinsics.ppx, rs_intrinsics.ppy = intrinsics.ppx, intrinsics.ppy
    rs_intrinsics.model = getattr(rs.distortion, intrinsics.model)
    rs_intrinsics.coeffs = list(intrinsics.coeffs)
    video.intrinsics = rs_intrinsics
    return video


def _option_range(low: float, high: float, step: float, default: float) -> Any:
    """By attribute: pyrealsense2 2.59's constructor takes the default before the step, though
    its signature names them the other way round."""
    bounds = rs.option_range()
    bounds.min, bounds.max, bounds.step, bounds.default = low, high, step, default
    return bounds
