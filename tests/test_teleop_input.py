"""Teleop input: the SpaceMouse through pyspacemouse's own HID parsing of recorded reports (the
HID handle is the only stand-in), the deadband, the keyboard's key-to-axes core, and the terminal
reader on a real pseudo-terminal.

Expected SpaceMouse axes are written by hand from the HID meaning of the raw values (USB HID
Usage Tables, as pyspacemouse's AxisConvention.HID documents them: x right, y toward the
operator, z down, rotations right-handed about those), turned into REP 103 of the operator's view
(x away from the operator, y left, z up). That frame change is the proper rotation
x = -HID y, y = -HID x, z = -HID z, so angular rates map alike: roll = -Ry, pitch = -Rx,
yaw = -Rz. Raw counts are scaled by 350 (axis_scale of these models).
"""

from __future__ import annotations

import os
import pty
import select
import struct
import sys
import termios

import numpy as np
import pytest

from policy_runtime.teleop import (
    AXIS_NAMES,
    InputDevice,
    KeyboardTeleop,
    SpaceMouse,
    TeleopDeviceError,
    TeleopInput,
    TerminalKeyboard,
    deadband,
)
from policy_runtime.teleop.keyboard import split_keys

# -- recorded HID reports -------------------------------------------------------------------


def translation_report(x: int, y: int, z: int) -> bytes:
    """Report id 1 of a SpaceNavigator-class device: x, y, z as little-endian int16."""
    return struct.pack("<Bhhh", 1, x, y, z)


def rotation_report(rx: int, ry: int, rz: int) -> bytes:
    """Report id 2 of a SpaceNavigator-class device: Rx, Ry, Rz as little-endian int16."""
    return struct.pack("<Bhhh", 2, rx, ry, rz)


def six_axis_report(x: int, y: int, z: int, rx: int, ry: int, rz: int) -> bytes:
    """Report id 1 of a SpaceMouse Wireless: all six axes in one 13-byte report."""
    return struct.pack("<Bhhhhhh", 1, x, y, z, rx, ry, rz)


def button_report(mask: int) -> bytes:
    """Report id 3: the button bitmask (bit 0 left, bit 1 right)."""
    return bytes([3, mask])


class ReplayHID:
    """An easyhid ``Device`` that replays recorded reports. Like easyhid's ``read(size)`` it
    returns a ``size``-byte buffer (the report, zero-padded) or an empty one when none waits."""

    def __init__(self, reports: list[bytes]) -> None:
        self.reports = list(reports)
        self.sizes: set[int] = set()
        self.closed = False

    def feed(self, *reports: bytes) -> None:
        self.reports.extend(reports)

    def read(self, size: int = 64, timeout: int | None = None) -> bytearray:
        self.sizes.add(size)
        if not self.reports:
            return bytearray()
        return bytearray(self.reports.pop(0)[:size].ljust(size, b"\0"))

    def close(self) -> None:
        self.closed = True


def spacemouse(model: str, hid: ReplayHID, deadband: float = 0.0) -> SpaceMouse:
    psm = pytest.importorskip("pyspacemouse")
    spec = psm.apply_axis_convention(psm.get_device_specs()[model], psm.AxisConvention.ROS)
    return SpaceMouse(psm.SpaceMouseDevice(spec, device=hid), deadband=deadband)


# -- SpaceMouse -----------------------------------------------------------------------------


def test_spacenavigator_reports_become_rep103_axes_and_buttons():
    hid = ReplayHID(
        [
            # HID: right 0.2, toward the operator -0.4 (away 0.4), down 0.6 (up -0.6).
            translation_report(70, -140, 210),
            # HID: Rx 0.3, Ry -0.7, Rz 0.1.
            rotation_report(105, -245, 35),
            button_report(0b10),  # RIGHT
        ]
    )
    mouse = spacemouse("SpaceNavigator", hid)
    assert isinstance(mouse, InputDevice)
    reading = mouse.read()
    assert reading is not None
    # x = away 0.4, y = left -0.2, z = up -0.6, roll = -Ry, pitch = -Rx, yaw = -Rz.
    np.testing.assert_allclose(reading.axes, [0.4, -0.2, -0.6, 0.7, -0.3, -0.1], atol=1e-12)
    assert reading.buttons == (False, True)
    assert mouse.button_names == ("LEFT", "RIGHT")
    assert hid.sizes == {7}  # the id byte and three int16: the SpaceNavigator's report length
    assert mouse.read() is None  # nothing new

    hid.feed(button_report(0b01), translation_report(0, 0, 0))
    reading = mouse.read()
    assert reading is not None
    # The rotation report from before still holds; translation is back at rest.
    np.testing.assert_allclose(reading.axes, [0.0, 0.0, 0.0, 0.7, -0.3, -0.1], atol=1e-12)
    assert reading.buttons == (True, False)
    mouse.close()
    assert hid.closed


def test_spacenavigator_deadband_and_clipping():
    hid = ReplayHID(
        [
            # HID: right 0.5, toward the operator 500/350 (past full scale), down 10/350.
            translation_report(175, 500, 10),
            # HID: Rx -17/350 (inside the band), Ry 0, Rz -350 (full scale).
            rotation_report(-17, 0, -350),
        ]
    )
    reading = spacemouse("SpaceNavigator", hid, deadband=0.05).read()
    assert reading is not None
    outside = (0.5 - 0.05) / 0.95
    # x = -(1.43 clipped to 1) = -1; y = -0.5 -> -(0.45 / 0.95); z = -0.029 inside the band;
    # pitch = +0.049 inside the band; yaw = +1 stays 1.
    np.testing.assert_allclose(reading.axes, [-1.0, -outside, 0.0, 0.0, 0.0, 1.0], atol=1e-12)
    assert reading.buttons == (False, False)


def test_spacemouse_wireless_single_report_with_all_six_axes():
    hid = ReplayHID(
        [
            # HID: right -0.1, toward 0.3, down -0.5, Rx -0.2, Ry 0.4, Rz -0.6.
            six_axis_report(-35, 105, -175, -70, 140, -210),
            button_report(0b11),
        ]
    )
    mouse = spacemouse("SpaceMouseWireless", hid)
    reading = mouse.read()
    assert reading is not None
    np.testing.assert_allclose(reading.axes, [-0.3, 0.1, 0.5, -0.4, 0.2, 0.6], atol=1e-12)
    assert reading.buttons == (True, True)
    assert hid.sizes == {13}  # the id byte and six int16


def test_spacemouse_refuses_a_device_parsing_in_another_convention():
    psm = pytest.importorskip("pyspacemouse")
    legacy = psm.get_device_specs()["SpaceNavigator"]
    with pytest.raises(ValueError, match=r"AxisConvention\.ROS"):
        SpaceMouse(psm.SpaceMouseDevice(legacy, device=ReplayHID([])))


def test_spacemouse_open_without_pyspacemouse_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)
    with pytest.raises(TeleopDeviceError, match=r"policy_runtime\[teleop\]"):
        SpaceMouse.open()


def test_spacemouse_open_of_an_unknown_model_lists_the_supported_ones():
    pytest.importorskip("pyspacemouse")
    with pytest.raises(TeleopDeviceError, match="SpaceNavigator"):
        SpaceMouse.open("NoSuchMouse")


def test_spacemouse_open_with_no_device_says_what_to_install_or_plug_in():
    pytest.importorskip("pyspacemouse")
    try:
        mouse = SpaceMouse.open()
    except TeleopDeviceError as e:
        # No hidapi library: what to install; no device: what to plug in and permit.
        assert "policy_runtime[teleop]" in str(e) or "/dev/hidraw" in str(e)
    else:
        mouse.close()
        pytest.skip("a SpaceMouse is connected to this machine")


# -- deadband -------------------------------------------------------------------------------


def test_deadband_values_by_hand():
    out = deadband([0.05, -0.1, 0.55, -1.0, 2.0, -0.28], 0.1)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, -1.0, 1.0, -0.2], atol=1e-12)
    np.testing.assert_allclose(deadband([0.3, -0.7], 0.0), [0.3, -0.7])


def test_deadband_is_continuous_at_the_threshold():
    eps = 1e-9
    below, above = deadband([0.2 - eps, -(0.2 + eps)], 0.2)
    assert below == 0.0 and -2 * eps < above < 0.0
    with pytest.raises(ValueError):
        deadband([0.0], 1.0)


def test_teleop_input_is_validated_and_read_only():
    reading = TeleopInput(axes=[0.0, 1.0, -1.0, 0.5, 0.0, 0.0], buttons=(1, 0), received=2.0)
    assert reading.axes.dtype == np.float64 and reading.buttons == (True, False)
    with pytest.raises(ValueError):
        reading.axes[0] = 0.3
    with pytest.raises(ValueError):
        TeleopInput(axes=np.zeros(5), buttons=(), received=0.0)
    with pytest.raises(ValueError):
        TeleopInput(axes=[0, 0, 1.5, 0, 0, 0], buttons=(), received=0.0)
    assert len(AXIS_NAMES) == 6


# -- keyboard core --------------------------------------------------------------------------


def test_a_key_holds_its_axis_for_hold_s_after_its_last_press():
    kb = KeyboardTeleop(hold_s=0.15)
    kb.press("w", 0.0)
    np.testing.assert_array_equal(kb.read(0.1).axes, [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(kb.read(0.2).axes, [0, 0, 0, 0, 0, 0])
    # Held: the terminal's repeats keep the axis up; it drops hold_s after the last one.
    for t in (1.0, 1.5, 1.53, 1.56, 1.59):
        kb.press("w", t)
    assert kb.read(1.7).axes[0] == 1.0
    assert kb.read(1.75).axes[0] == 0.0


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("w", [1, 0, 0, 0, 0, 0]),
        ("s", [-1, 0, 0, 0, 0, 0]),
        ("a", [0, 1, 0, 0, 0, 0]),
        ("d", [0, -1, 0, 0, 0, 0]),
        ("r", [0, 0, 1, 0, 0, 0]),
        ("f", [0, 0, -1, 0, 0, 0]),
        ("j", [0, 0, 0, 1, 0, 0]),
        ("l", [0, 0, 0, -1, 0, 0]),
        ("i", [0, 0, 0, 0, 1, 0]),
        ("k", [0, 0, 0, 0, -1, 0]),
        ("q", [0, 0, 0, 0, 0, 1]),
        ("e", [0, 0, 0, 0, 0, -1]),
        ("W", [1, 0, 0, 0, 0, 0]),  # Shift / Caps Lock change nothing
    ],
)
def test_key_bindings(key, expected):
    kb = KeyboardTeleop()
    assert kb.press(key, 0.0)
    reading = kb.read(0.01)
    np.testing.assert_array_equal(reading.axes, expected)
    assert reading.buttons == (False, False, False)


def test_opposite_keys_cancel_and_unbound_keys_do_nothing():
    kb = KeyboardTeleop()
    kb.press("w", 0.0)
    kb.press("s", 0.0)
    kb.press("a", 0.0)
    assert not kb.press("x", 0.0)
    np.testing.assert_array_equal(kb.read(0.01).axes, [0, 1, 0, 0, 0, 0])


def test_t_and_z_toggle_their_buttons_once_per_press():
    kb = KeyboardTeleop()
    kb.press("t", 0.0)
    assert kb.read(0.1).buttons == (True, False, False)
    assert kb.read(5.0).buttons == (True, False, False)  # stays on
    kb.press("z", 5.0)
    assert kb.read(5.1).buttons == (True, True, False)
    kb.press("t", 6.0)
    assert kb.read(6.1).buttons == (False, True, False)
    # Holding t: the press and its auto-repeats toggle once.
    for t in (8.0, 8.5, 8.53, 8.56, 8.59):
        kb.press("t", t)
    assert kb.read(8.6).buttons == (True, True, False)
    kb.press("z", 10.0)
    assert kb.read(10.1).buttons == (True, False, False)


def test_space_gives_the_gripper_button_for_exactly_one_read():
    kb = KeyboardTeleop()
    kb.press(" ", 0.0)
    assert kb.read(0.01).buttons == (False, False, True)
    assert kb.read(0.02).buttons == (False, False, False)
    # A held space (press, then repeats) is one press; a later press is another.
    for t in (1.0, 1.5, 1.53):
        kb.press(" ", t)
    assert kb.read(1.54).buttons == (False, False, True)
    kb.press(" ", 1.56)
    assert kb.read(1.57).buttons == (False, False, False)
    kb.press(" ", 3.0)
    assert kb.read(3.01).buttons == (False, False, True)


def test_escape_sequences_are_not_keys():
    # Up arrow is ESC [ A: its "A" must not move y; F1 (ESC O P), Ctrl+Right, Alt+w likewise.
    assert split_keys("w\x1b[Aa\x1bOPs\x1b[1;5C\x1bwd\x1b") == ["w", "a", "s", "d"]


# -- terminal reader ------------------------------------------------------------------------


def test_terminal_keyboard_needs_a_tty(monkeypatch):
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as pipe, os.fdopen(write_fd, "w"):
        monkeypatch.setattr(sys, "stdin", pipe)
        with pytest.raises(TeleopDeviceError, match="interactive terminal"):
            TerminalKeyboard()
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(TeleopDeviceError, match="interactive terminal"):
        TerminalKeyboard()


def test_terminal_keyboard_reads_a_pseudo_terminal_and_restores_it():
    master, slave = pty.openpty()
    now = [10.0]
    try:
        with os.fdopen(slave, closefd=False) as stream:
            before = termios.tcgetattr(slave)
            with TerminalKeyboard(stream, clock=lambda: now[0]) as kb:
                assert isinstance(kb, InputDevice)
                cbreak = termios.tcgetattr(slave)
                assert not cbreak[3] & (termios.ICANON | termios.ECHO)
                os.write(master, b"wt\x1b[A")  # no newline: cbreak delivers keys at once
                assert select.select([slave], [], [], 2.0)[0]
                reading = kb.read()
                np.testing.assert_array_equal(reading.axes, [1, 0, 0, 0, 0, 0])
                assert reading.buttons == (True, False, False) and reading.received == 10.0
                now[0] = 10.2
                assert kb.read().axes[0] == 0.0  # no repeat within hold_s: released
            assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)
