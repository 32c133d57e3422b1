"""Operator input for teleoperation, without ROS: every device reduces to :class:`TeleopInput`
(six axes in [-1, 1], REP 103 of the operator's view, plus buttons). ``spacemouse`` reads a
3Dconnexion SpaceMouse through pyspacemouse (imported only when a device is opened: the
``teleop`` extra); ``keyboard`` reads the terminal's keys. Turning readings into robot motion is
a later layer's job."""

from policy_runtime.teleop.input import (
    AXIS_NAMES,
    InputDevice,
    TeleopDeviceError,
    TeleopInput,
    deadband,
)
from policy_runtime.teleop.keyboard import (
    KEY_BINDINGS,
    AxisKey,
    ButtonKey,
    KeyboardTeleop,
    TerminalKeyboard,
)
from policy_runtime.teleop.spacemouse import SpaceMouse, supported_devices

__all__ = [
    "AXIS_NAMES",
    "KEY_BINDINGS",
    "AxisKey",
    "ButtonKey",
    "InputDevice",
    "KeyboardTeleop",
    "SpaceMouse",
    "TeleopDeviceError",
    "TeleopInput",
    "TerminalKeyboard",
    "deadband",
    "supported_devices",
]
