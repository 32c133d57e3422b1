"""A 3Dconnexion SpaceMouse as a teleop device, through pyspacemouse (the ``teleop`` extra).

pyspacemouse finds the device, reads its HID reports and parses them with its per-model table
(``devices.toml``). It is imported inside functions, so ``policy_runtime.teleop`` imports on a
machine without it or without the hidapi C library it loads.

Axis convention: pyspacemouse's ``AxisConvention.ROS``, ROS REP 103 from the operator's seat. The
raw HID axes of the cap (USB HID Usage Tables: x right, y toward the operator, z down, rotations
right-handed about them) become x = -HID y (push away: forward), y = -HID x (push left: left),
z = -HID z (pull up: up), roll = -HID Ry, pitch = -HID Rx, yaw = -HID Rz (twist counter-clockwise
seen from above: +yaw).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import numpy as np

from policy_runtime.teleop.input import AXIS_NAMES, InputDevice, TeleopDeviceError, TeleopInput
from policy_runtime.teleop.input import deadband as apply_deadband

#: pyspacemouse's name of the axis convention this module reads the device in (REP 103).
AXIS_CONVENTION = "ros"
#: At most this many HID reports are parsed per :meth:`SpaceMouse.read`; a device sends one
#: every 8-16 ms while the cap is off centre, so this drains seconds of backlog, yet a device
#: that never runs dry cannot hold a read forever.
MAX_REPORTS_PER_READ = 256

_HIDAPI_HINT = "apt install libhidapi-hidraw0 on Debian/Ubuntu, brew install hidapi on macOS"
_INSTALL_HINT = (
    "pip install 'policy_runtime[teleop]' (pyspacemouse and its HID backend easyhid, which "
    f"loads the hidapi C library: {_HIDAPI_HINT})"
)
_PERMISSION_HINT = (
    "if it is plugged in, your user may lack access to /dev/hidraw*: add a udev rule such as "
    'KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0660", TAG+="uaccess" '
    "(idVendor 046d for the older Logitech-made models) in /etc/udev/rules.d/, then "
    "`sudo udevadm control --reload && sudo udevadm trigger` and replug"
)


def _import_pyspacemouse() -> Any:
    try:
        import pyspacemouse
    except (ImportError, OSError) as e:
        raise TeleopDeviceError(f"the SpaceMouse needs pyspacemouse: {_INSTALL_HINT}") from e
    return pyspacemouse


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a failing HID read raises: easyhid's HIDException (pyspacemouse's backend), OSError."""
    try:
        from easyhid import HIDException
    except (ImportError, OSError):
        return (OSError,)
    return (HIDException, OSError)


def supported_devices() -> list[str]:
    """The SpaceMouse models pyspacemouse can parse (names as ``SpaceMouse.open`` takes them)."""
    return sorted(_import_pyspacemouse().get_device_specs())


class SpaceMouse(InputDevice):
    """A SpaceMouse read through a pyspacemouse ``SpaceMouseDevice``.

    :meth:`open` finds and opens a connected device. The constructor takes a device made
    elsewhere (an already opened one, or one whose HID handle replays recorded reports); it must
    parse in :data:`AXIS_CONVENTION` (build its spec with
    ``pyspacemouse.apply_axis_convention(spec, AxisConvention.ROS)``) and read without blocking,
    since each :meth:`read` drains every report waiting.
    """

    def __init__(
        self,
        device: Any,
        deadband: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        convention = getattr(device.info, "convention", None)
        if convention != AXIS_CONVENTION:
            raise ValueError(
                f"the SpaceMouseDevice parses in axis convention {convention!r}; SpaceMouse "
                f"needs {AXIS_CONVENTION!r} (REP 103): build its spec with "
                "pyspacemouse.apply_axis_convention(spec, AxisConvention.ROS)"
            )
        if not 0.0 <= deadband < 1.0:
            raise ValueError(f"deadband must be in [0, 1), got {deadband}")
        self._device = device
        self._deadband = deadband
        self._clock = clock
        # pyspacemouse's state carries t = -1 until it parses a first report.
        self._last_report_t: float = -1.0
        self._read_errors = _read_errors()

    @classmethod
    def open(cls, device_name: str | None = None, deadband: float = 0.05) -> SpaceMouse:
        """Open the first connected supported device, or the one named (see
        :func:`supported_devices`). Raises :class:`TeleopDeviceError` saying what to install,
        plug in or permit when that fails."""
        psm = _import_pyspacemouse()
        supported = sorted(psm.get_device_specs())
        if device_name is not None and device_name not in supported:
            raise TeleopDeviceError(
                f"unknown SpaceMouse model {device_name!r}; pyspacemouse supports: "
                + ", ".join(supported)
            )
        try:
            connected = psm.get_connected_devices()
        except RuntimeError as e:  # pyspacemouse: easyhid found no hidapi library to call
            raise TeleopDeviceError(
                "pyspacemouse's HID backend easyhid found no hidapi C library to load: "
                f"{_HIDAPI_HINT} (policy_runtime[teleop] brings only the Python packages)"
            ) from e
        wanted = [name for name in connected if device_name in (None, name)]
        if not wanted:
            which = device_name or "a supported SpaceMouse"
            raise TeleopDeviceError(
                f"no {which} is connected (pyspacemouse supports: {', '.join(supported)}); "
                f"plug one in; {_PERMISSION_HINT}"
            )
        try:
            device = psm.open(
                device=wanted[0],
                nonblocking=True,
                axis_convention=psm.AxisConvention(AXIS_CONVENTION),
            )
        except (RuntimeError, ValueError, OSError) as e:
            raise TeleopDeviceError(
                f"the {wanted[0]} is connected but could not be opened ({e}); {_PERMISSION_HINT}"
            ) from e
        return cls(device, deadband=deadband)

    @property
    def name(self) -> str:
        """The model name pyspacemouse gives the device."""
        return str(self._device.name)

    @property
    def button_names(self) -> tuple[str, ...]:
        """The names of :attr:`TeleopInput.buttons`, in order (from pyspacemouse's table)."""
        return tuple(self._device.info.button_names)

    def read(self) -> TeleopInput | None:
        """Parse every waiting HID report and return the resulting state; ``None`` when no
        report arrived since the last read. A translation and a rotation report may arrive
        separately (older models); the state combines the latest of each."""
        state = None
        fresh = False
        try:
            for _ in range(MAX_REPORTS_PER_READ):
                state = self._device.read()
                # pyspacemouse stamps the state each time it parses a report, only then.
                if state.t == self._last_report_t:
                    break
                self._last_report_t = state.t
                fresh = True
        except self._read_errors as e:  # the device was unplugged or failed
            raise TeleopDeviceError(f"reading the {self.name} failed: {e}") from e
        if not fresh or state is None:
            return None
        raw = np.array([getattr(state, axis) for axis in AXIS_NAMES], dtype=np.float64)
        return TeleopInput(
            axes=apply_deadband(np.clip(raw, -1.0, 1.0), self._deadband),
            buttons=tuple(bool(b) for b in state.buttons),
            received=self._clock(),
        )

    def close(self) -> None:
        """Close the HID device (idempotent)."""
        self._device.close()

    def __enter__(self) -> SpaceMouse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
