"""Finding, configuring and opening a RealSense device with librealsense (pyrealsense2).

The colour stream is rgb8 and the depth stream z16, at the same rate; depth is aligned to colour
(``rs.align``) and both are read through one ``rs.syncer``. Every refusal is a
:class:`CameraError` whose message names the serial and what the device offers instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyrealsense2 as rs

from policy_runtime.camera.config import SYNC_MODE_VALUES, CameraConfig
from policy_runtime.camera.frames import Intrinsics

#: Colour exposure units of librealsense's ``exposure`` option, microseconds: an RGB (UVC) sensor
#: counts in 100 us steps (range 1..10000 on a D400, librealsense issue #8243), a stereo module
#: in microseconds (the D405's colour comes from its stereo module).
RGB_EXPOSURE_UNIT_US = 100.0
STEREO_EXPOSURE_UNIT_US = 1.0
#: Framesets the syncer holds for the frame thread: one being read, one arriving.
SYNCER_QUEUE = 2

#: ``removed(device) -> bool``: whether a devices-changed event removed ``device``.
RemovedTest = Callable[[Any], bool]
DevicesListener = Callable[[RemovedTest], None]


class CameraError(ValueError):
    """A camera that cannot be opened as configured; the message names the serial.

    ``fields``: the :class:`CameraConfig` fields at fault. ``transient``: the device is missing
    or busy, and may come back (a camera retries those; the others need another configuration).
    """

    def __init__(
        self, message: str, *, fields: Sequence[str] = (), transient: bool = False
    ) -> None:
        super().__init__(message)
        self.fields = tuple(fields)
        self.transient = transient


def device_serial(device: Any) -> str:
    info = rs.camera_info.serial_number
    return str(device.get_info(info)) if device.supports(info) else ""


class DeviceHub:
    """The devices a camera may open: an ``rs.context``'s, and software devices added here.

    librealsense (2.54 on, with its device factories) does not list a software device added to
    a context: ``add_to`` keeps only a weak reference to the device's entry, so ``query_devices``
    never returns it, though the context's devices-changed callback announces it. Nor can a
    software device leave a context. The hub therefore keeps its software devices itself and
    reports their removal to its listeners as the context reports a real device's.
    """

    def __init__(self, context: Any = None) -> None:
        self.context = context if context is not None else rs.context()
        self._lock = threading.Lock()
        self._software: list[Any] = []
        self._listeners: list[DevicesListener] = []
        self.context.set_devices_changed_callback(self._on_devices_changed)

    @classmethod
    def software_only(cls) -> DeviceHub:
        """A hub whose context lists no USB devices: only the software devices added to it."""
        return cls(rs.context({"device-mask": int(rs.product_line.sw_only)}))

    def devices(self) -> list[Any]:
        with self._lock:
            software = list(self._software)
        return [*self.context.query_devices(), *software]

    def add(self, device: Any) -> None:
        """Add a software device (again, after :meth:`remove`)."""
        device.add_to(self.context)
        with self._lock:
            self._software.append(device)

    def remove(self, device: Any) -> None:
        """Unplug a software device: it is no longer listed and the listeners hear of it."""
        serial = device_serial(device)
        with self._lock:
            self._software = [d for d in self._software if d is not device]
            listeners = list(self._listeners)
        for listener in listeners:
            listener(lambda d: device_serial(d) == serial)

    def subscribe(self, listener: DevicesListener) -> Callable[[], None]:
        """Call ``listener`` on every change of the devices; returns the unsubscribe."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _on_devices_changed(self, info: Any) -> None:  # a librealsense thread
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(info.was_removed)


def find_device(hub: DeviceHub, serial: str) -> Any:
    """The device of ``serial`` ("" : the only one connected)."""
    devices = hub.devices()
    serials = [device_serial(d) for d in devices]
    if serial:
        for device, found in zip(devices, serials, strict=True):
            if found == serial:
                return device
        present = ", ".join(serials) or "none"
        raise CameraError(
            f"camera {serial}: not connected (connected: {present})",
            fields=("serial",),
            transient=True,
        )
    if len(devices) == 1:
        return devices[0]
    if not devices:
        raise CameraError("camera (any serial): no RealSense device connected", transient=True)
    raise CameraError(
        f"camera (any serial): {len(devices)} RealSense devices connected "
        f"({', '.join(serials)}): choose one by its serial",
        fields=("serial",),
    )


@dataclass
class OpenDevice:
    """A device streaming colour (and depth) into a syncer; :meth:`close` releases it."""

    device: Any
    serial: str
    sensors: list[Any]
    syncer: Any
    #: Aligns depth to colour; None without depth.
    align: Any | None
    intrinsics: Intrinsics

    def wait(self, timeout_s: float) -> Any | None:
        """The next frameset, or None after ``timeout_s``."""
        ok, frameset = self.syncer.try_wait_for_frames(max(1, round(timeout_s * 1000)))
        return frameset if ok else None

    def poll(self) -> Any | None:
        """A frameset already waiting, or None."""
        frameset = self.syncer.poll_for_frames()
        return frameset if frameset else None

    def close(self) -> None:
        _release(self.sensors)


def arrival_time(frame: Any, fallback_s: float) -> float:
    """When ``frame`` reached the host (system clock, seconds): librealsense's
    ``time_of_arrival`` where the frame has it, else ``fallback_s``."""
    arrival = rs.frame_metadata_value.time_of_arrival
    if frame.supports_frame_metadata(arrival):
        return float(frame.get_frame_metadata(arrival)) / 1000.0
    return fallback_s


def open_device(hub: DeviceHub, config: CameraConfig) -> OpenDevice:
    """Find the device, check and apply ``config``, open its sensors and start streaming."""
    device = find_device(hub, config.serial)
    serial = device_serial(device) or config.serial
    sensors = list(device.query_sensors())
    color_at, color = _color_profile(sensors, config, serial)
    streams: dict[int, list[Any]] = {color_at: [color]}
    align = None
    if config.depth:
        depth_at, depth = _depth_profile(sensors, config, serial)
        streams.setdefault(depth_at, []).append(depth)
        try:
            depth.get_extrinsics_to(color)
        except RuntimeError as exc:
            raise CameraError(
                f"camera {serial}: no depth-to-colour extrinsics, depth cannot be aligned ({exc})",
                fields=("depth",),
            ) from None
        align = rs.align(rs.stream.color)
    _configure(sensors, color_at, config, serial)
    opened: list[Any] = []
    try:
        for index, profiles in streams.items():
            sensor = sensors[index]
            if sensor.supports(rs.option.global_time_enabled):
                sensor.set_option(rs.option.global_time_enabled, 1.0)
            try:
                sensor.open(profiles)
            except RuntimeError as exc:
                raise CameraError(
                    f"camera {serial}: cannot open its {_name(sensor)} (busy in another "
                    f"process?): {exc}",
                    transient=True,
                ) from None
            opened.append(sensor)
        syncer = rs.syncer(SYNCER_QUEUE)
        for sensor in opened:
            sensor.start(syncer)
    except BaseException:
        _release(opened)
        raise
    return OpenDevice(device, serial, opened, syncer, align, _intrinsics(color))


def _release(sensors: list[Any]) -> None:
    """Stop and close sensors, whatever state they are in (a removed device refuses both)."""
    for sensor in sensors:
        for step in (sensor.stop, sensor.close):
            with contextlib.suppress(RuntimeError):
                step()


def _name(sensor: Any) -> str:
    info = rs.camera_info.name
    return str(sensor.get_info(info)) if sensor.supports(info) else "sensor"


def _video_profiles(sensors: list[Any], stream: Any, fmt: Any) -> list[tuple[int, Any]]:
    return [
        (index, profile.as_video_stream_profile())
        for index, sensor in enumerate(sensors)
        for profile in sensor.get_stream_profiles()
        if profile.stream_type() == stream and profile.format() == fmt
    ]


def _modes(profiles: list[tuple[int, Any]]) -> str:
    modes = sorted({(p.width(), p.height(), p.fps()) for _, p in profiles})
    return ", ".join(f"{w}x{h} @ {fps}" for w, h, fps in modes) or "none"


def _color_profile(sensors: list[Any], config: CameraConfig, serial: str) -> tuple[int, Any]:
    profiles = _video_profiles(sensors, rs.stream.color, rs.format.rgb8)
    wanted = (config.width, config.height, config.fps)
    for index, profile in profiles:
        if (profile.width(), profile.height(), profile.fps()) == wanted:
            return index, profile
    raise CameraError(
        f"camera {serial}: colour rgb8 {config.width}x{config.height} @ {config.fps} fps is not "
        f"supported; supported: {_modes(profiles)}",
        fields=("width", "height", "fps"),
    )


def _depth_profile(sensors: list[Any], config: CameraConfig, serial: str) -> tuple[int, Any]:
    """Depth z16 at the colour's rate: at its resolution where the device has it, else the
    largest (aligned depth has the colour's resolution either way)."""
    profiles = _video_profiles(sensors, rs.stream.depth, rs.format.z16)
    same_rate = [(i, p) for i, p in profiles if p.fps() == config.fps]
    if not same_rate:
        raise CameraError(
            f"camera {serial}: no depth z16 stream at {config.fps} fps; supported: "
            f"{_modes(profiles)}",
            fields=("fps", "depth"),
        )
    for index, profile in same_rate:
        if (profile.width(), profile.height()) == (config.width, config.height):
            return index, profile
    return max(same_rate, key=lambda item: item[1].width() * item[1].height())


def _intrinsics(profile: Any) -> Intrinsics:
    i = profile.get_intrinsics()
    return Intrinsics(
        width=i.width,
        height=i.height,
        fx=i.fx,
        fy=i.fy,
        ppx=i.ppx,
        ppy=i.ppy,
        model=i.model.name,
        coeffs=tuple(float(c) for c in i.coeffs),
    )


def _configure(sensors: list[Any], color_at: int, config: CameraConfig, serial: str) -> None:
    """Exposure and white balance on the colour sensor (manual turns the automatic control off,
    None turns it on), laser power and sync mode on the depth sensor."""
    color = sensors[color_at]
    if config.exposure_us is None:
        _set_if_supported(color, rs.option.enable_auto_exposure, 1.0)
    else:
        unit = STEREO_EXPOSURE_UNIT_US if color.is_depth_sensor() else RGB_EXPOSURE_UNIT_US
        _set_if_supported(color, rs.option.enable_auto_exposure, 0.0)
        _set(color, rs.option.exposure, config.exposure_us / unit, serial, "exposure_us", unit)
    if config.white_balance_k is None:
        _set_if_supported(color, rs.option.enable_auto_white_balance, 1.0)
    else:
        _set_if_supported(color, rs.option.enable_auto_white_balance, 0.0)
        _set(color, rs.option.white_balance, config.white_balance_k, serial, "white_balance_k")
    depth = next((s for s in sensors if s.is_depth_sensor()), None)
    if config.laser_power_mw is not None:
        _set(depth, rs.option.laser_power, config.laser_power_mw, serial, "laser_power_mw")
    if config.sync_mode != "default":
        mode = SYNC_MODE_VALUES[config.sync_mode]
        _set(depth, rs.option.inter_cam_sync_mode, mode, serial, "sync_mode")
    elif depth is not None:
        _set_if_supported(depth, rs.option.inter_cam_sync_mode, SYNC_MODE_VALUES["default"])


def _set_if_supported(sensor: Any, option: Any, value: float) -> None:
    if sensor.supports(option) and not sensor.is_option_read_only(option):
        sensor.set_option(option, value)


def _set(
    sensor: Any | None, option: Any, value: float, serial: str, field: str, unit: float = 1.0
) -> None:
    """Set ``option`` to ``value`` rounded to its step; CameraError naming the option, the value
    and the range when the sensor lacks it or the value is out of range."""
    name = option.name
    if sensor is None or not sensor.supports(option):
        where = "no depth sensor" if sensor is None else f"its {_name(sensor)}"
        raise CameraError(
            f"camera {serial}: option {name} (for {field}) is not supported by {where}",
            fields=(field,),
        )
    bounds = sensor.get_option_range(option)
    in_units = "" if unit == 1.0 else f" ({field} / {unit:g})"
    if not bounds.min <= value <= bounds.max:
        raise CameraError(
            f"camera {serial}: option {name} = {value:g}{in_units} is outside its range "
            f"[{bounds.min:g}, {bounds.max:g}]",
            fields=(field,),
        )
    if bounds.step > 0:
        value = bounds.min + round((value - bounds.min) / bounds.step) * bounds.step
    sensor.set_option(option, value)
