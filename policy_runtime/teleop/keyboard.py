"""The keyboard of a terminal as a teleop device: a pure key-to-axes core and a stdin reader.

A terminal sends characters, not key-down/key-up events: a held key arrives as a stream of
auto-repeats. So a movement key counts as held for ``hold_s`` after its last character, and
letting go shows as the repeats stopping. The first repeat only comes after the terminal's
auto-repeat delay (typically 250-600 ms), so with the default ``hold_s`` a held key moves for
``hold_s``, pauses until repeats start, then moves steadily; raise ``hold_s`` or shorten the
delay (``xset r rate 200 30`` under X11) to bridge that gap.

Bindings (:data:`KEY_BINDINGS`; letters are case-insensitive, so Caps Lock or Shift changes
nothing; arrow keys and other escape sequences are ignored):

====================  ===========================================================
key                   effect (axes in REP 103 terms of the operator's view)
====================  ===========================================================
``w`` / ``s``         x +1 / -1 (forward, away from the operator / back)
``a`` / ``d``         y +1 / -1 (left / right)
``r`` / ``f``         z +1 / -1 (up / down)
``j`` / ``l``         roll +1 / -1
``i`` / ``k``         pitch +1 / -1
``q`` / ``e``         yaw +1 / -1 (counter-clockwise / clockwise seen from above)
``t``                 toggles button 0, "rotation mode"
``z``                 toggles button 1, "unlock z"
space                 button 2, "gripper": pressed for exactly one read per press
====================  ===========================================================

Rotation keys only set rotation axes and buttons are only reported: what a mode means (e.g.
that translation keys rotate in rotation mode) is decided by a later layer.
"""

from __future__ import annotations

import codecs
import os
import re
import select
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, NamedTuple, TextIO

import numpy as np

from policy_runtime.teleop.input import AXIS_NAMES, InputDevice, TeleopDeviceError, TeleopInput


class AxisKey(NamedTuple):
    """A key that drives axis ``axis`` (index into :data:`AXIS_NAMES`) to ``sign`` while held."""

    axis: int
    sign: float


class ButtonKey(NamedTuple):
    """A key for button ``button``: ``toggle`` flips it per press, otherwise one read sees it."""

    button: int
    toggle: bool
    name: str


_X, _Y, _Z, _ROLL, _PITCH, _YAW = range(len(AXIS_NAMES))

#: Key (as :meth:`KeyboardTeleop.press` takes it, lower case; ``" "`` is space) -> binding.
KEY_BINDINGS: Final[dict[str, AxisKey | ButtonKey]] = {
    "w": AxisKey(_X, +1.0),
    "s": AxisKey(_X, -1.0),
    "a": AxisKey(_Y, +1.0),
    "d": AxisKey(_Y, -1.0),
    "r": AxisKey(_Z, +1.0),
    "f": AxisKey(_Z, -1.0),
    "j": AxisKey(_ROLL, +1.0),
    "l": AxisKey(_ROLL, -1.0),
    "i": AxisKey(_PITCH, +1.0),
    "k": AxisKey(_PITCH, -1.0),
    "q": AxisKey(_YAW, +1.0),
    "e": AxisKey(_YAW, -1.0),
    "t": ButtonKey(0, toggle=True, name="rotation mode"),
    "z": ButtonKey(1, toggle=True, name="unlock z"),
    " ": ButtonKey(2, toggle=False, name="gripper"),
}
#: Number of buttons a keyboard reading carries.
NUM_BUTTONS: Final = 1 + max(b.button for b in KEY_BINDINGS.values() if isinstance(b, ButtonKey))

#: CSI (``ESC [ ... final``), SS3 (``ESC O x``) and ESC-prefixed (Alt+key) sequences: arrow,
#: function and Alt keys, which must not leak their letters (up arrow is ``ESC [ A``) as keys.
_ESCAPE_SEQUENCE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|O.|.)?", re.DOTALL)


def split_keys(text: str) -> list[str]:
    """The single keys typed in ``text``, escape sequences (arrows, F-keys, Alt+key) removed."""
    return list(_ESCAPE_SEQUENCE.sub("", text))


class KeyboardTeleop:
    """Turns timed key presses into :class:`TeleopInput` readings (see the module docstring).

    ``hold_s``: a movement key holds its axis at +-1 this long after its last press.
    ``repeat_s``: a button key pressed again within this long of its previous press is taken
    for an auto-repeat of a held key, not a new press, so holding ``t`` toggles once and holding
    space grips once; it exceeds the usual auto-repeat delay.
    """

    def __init__(self, hold_s: float = 0.15, repeat_s: float = 0.6) -> None:
        if hold_s <= 0.0 or repeat_s < 0.0:
            raise ValueError(f"need hold_s > 0 and repeat_s >= 0, got {hold_s}, {repeat_s}")
        self.hold_s = hold_s
        self.repeat_s = repeat_s
        self._last_press: dict[str, float] = {}
        self._toggled = [False] * NUM_BUTTONS
        self._pulsed = [False] * NUM_BUTTONS

    def press(self, key: str, now: float) -> bool:
        """Record that ``key`` arrived at ``now`` (monotonic seconds); ``False``: it is unbound."""
        key = key.lower()
        binding = KEY_BINDINGS.get(key)
        if binding is None:
            return False
        previous = self._last_press.get(key)
        self._last_press[key] = now
        if isinstance(binding, ButtonKey):
            if previous is not None and now - previous < self.repeat_s:
                return True  # an auto-repeat of a held key
            if binding.toggle:
                self._toggled[binding.button] = not self._toggled[binding.button]
            else:
                self._pulsed[binding.button] = True
        return True

    def read(self, now: float | None = None) -> TeleopInput:
        """The state at ``now`` (default ``time.monotonic()``); consumes pending button presses."""
        if now is None:
            now = time.monotonic()
        axes = np.zeros(len(AXIS_NAMES))
        for key, pressed_at in self._last_press.items():
            binding = KEY_BINDINGS[key]
            if isinstance(binding, AxisKey) and now - pressed_at < self.hold_s:
                axes[binding.axis] += binding.sign
        buttons = tuple(t or p for t, p in zip(self._toggled, self._pulsed, strict=True))
        self._pulsed = [False] * NUM_BUTTONS
        return TeleopInput(axes=np.clip(axes, -1.0, 1.0), buttons=buttons, received=now)


class TerminalKeyboard(InputDevice):
    """The keyboard of the controlling terminal, read from stdin without blocking.

    Construction puts the terminal in cbreak mode (keys arrive at once and are not echoed;
    Ctrl-C still interrupts); :meth:`close`, or leaving the ``with`` block, restores its
    settings. Nothing else may read stdin meanwhile.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        hold_s: float = 0.15,
        repeat_s: float = 0.6,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        stream = sys.stdin if stream is None else stream
        if not _is_tty(stream):
            raise TeleopDeviceError(
                "the keyboard needs an interactive terminal on stdin (not a pipe, file or "
                "service); run the command in a terminal, or use another device (a SpaceMouse)"
            )
        try:
            import termios
            import tty
        except ImportError as e:
            raise TeleopDeviceError(
                "the keyboard device needs a POSIX terminal (termios); use a SpaceMouse"
            ) from e
        self._termios: Any = termios
        self._fd = stream.fileno()
        self._saved: list[Any] | None = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._clock = clock
        self.teleop = KeyboardTeleop(hold_s=hold_s, repeat_s=repeat_s)

    def read(self) -> TeleopInput:
        """Feed every key typed since the last read to the core and return its state."""
        if self._saved is None:
            raise TeleopDeviceError("the terminal keyboard is closed")
        text = ""
        while select.select([self._fd], [], [], 0.0)[0]:
            data = os.read(self._fd, 1024)
            if not data:
                raise TeleopDeviceError("the terminal closed (end of input on stdin)")
            text += self._decoder.decode(data)
        now = self._clock()
        for key in split_keys(text):
            self.teleop.press(key, now)
        return self.teleop.read(now)

    def close(self) -> None:
        """Restore the terminal settings (idempotent)."""
        if self._saved is not None:
            self._termios.tcsetattr(self._fd, self._termios.TCSADRAIN, self._saved)
            self._saved = None

    def __enter__(self) -> TerminalKeyboard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _is_tty(stream: Any) -> bool:
    """Whether ``stream`` is a terminal; a replaced or closed stdin (None, pytest's) is not."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
