"""What every operator device hands the teleop layer: six normalised axes and some buttons.

Devices differ (a SpaceMouse streams HID reports, a terminal delivers key repeats), so each one is
reduced here to one reading type, :class:`TeleopInput`, in one frame: ROS REP 103 as the operator
sees it (x forward, away from the operator; y left; z up; roll, pitch, yaw about x, y, z,
right-handed). Mapping readings to robot motion (modes, scaling, frames) is a later layer's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Names of the six axes of :attr:`TeleopInput.axes`, in order.
AXIS_NAMES: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw")


class TeleopDeviceError(RuntimeError):
    """A device that is absent or cannot be opened; the message says what to install or plug in."""


@dataclass(frozen=True, eq=False)
class TeleopInput:
    """One reading of an operator device.

    ``axes``: shape (6,) float64 in [-1, 1], ordered as :data:`AXIS_NAMES`, in ROS REP 103
    terms of the operator's view (x forward/away from the operator, y left, z up; rotations
    right-handed about those axes). It is stored as a read-only copy, so a reading handed to
    several consumers cannot be changed by one of them. ``buttons[i]``: button ``i`` is pressed.
    ``received``: ``time.monotonic()`` when the device was read.

    ``eq=False``: element-wise array comparison has no single truth value; compare fields.
    """

    axes: NDArray[np.float64]
    buttons: tuple[bool, ...]
    received: float

    def __post_init__(self) -> None:
        axes = np.array(self.axes, dtype=np.float64)
        if axes.shape != (len(AXIS_NAMES),):
            raise ValueError(f"axes must have shape (6,), got {axes.shape}")
        if not np.all(np.abs(axes) <= 1.0):  # also refuses NaN
            raise ValueError(f"axes must lie in [-1, 1], got {axes}")
        axes.flags.writeable = False
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "buttons", tuple(bool(b) for b in self.buttons))
        object.__setattr__(self, "received", float(self.received))


@runtime_checkable
class InputDevice(Protocol):
    """An operator device the teleop loop polls once per tick."""

    def read(self) -> TeleopInput | None:
        """The newest state; ``None`` when nothing new or available. Never blocks for long."""
        ...

    def close(self) -> None:
        """Release the device (and restore whatever it changed, e.g. terminal settings)."""
        ...


def deadband(axes: ArrayLike, threshold: float) -> NDArray[np.float64]:
    """Zero the axes with ``|v| < threshold`` and rescale the rest so the map stays continuous.

    ``|v|`` in [threshold, 1] maps linearly onto [0, 1] with the sign kept, so motion starts
    from zero at the edge of the band instead of jumping to ``threshold``; the result is clipped
    to [-1, 1]. A device at rest rarely reads exactly zero (a SpaceMouse cap drifts by a few
    counts), and without the band the robot would creep.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"deadband threshold must be in [0, 1), got {threshold}")
    values = np.clip(np.asarray(axes, dtype=np.float64), -1.0, 1.0)
    magnitude = np.maximum(np.abs(values) - threshold, 0.0) / (1.0 - threshold)
    return np.asarray(np.clip(np.sign(values) * magnitude, -1.0, 1.0), dtype=np.float64)
