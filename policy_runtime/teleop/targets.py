"""Operator input to end-effector targets, with Diffusion Policy's demonstration modes.

Each policy period the newest :class:`TeleopInput` moves the target (Diffusion Policy's
``demo_real_robot``): axes times the maximum speeds times the period; by default only
translation in the table plane; holding the rotation button rotates instead of translating;
holding the unlock-z button adds vertical motion; a press of the gripper button toggles the
gripper. Axes are in the operator's view (REP 103: x away from the operator, y left, z up),
turned into ``base_link`` by ``operator_yaw_rad``.

Safety on top of the executor's own limits:
- dead-man: an input older than ``input_timeout_s`` (a device unplugged, a frozen terminal, a
  silent joystick topic) counts as no input: the target stops and the arm holds there;
- the target never leads the measured TCP by more than ``max_lead_m`` and ``max_lead_rad``:
  released, the arm stops within that, however long the operator pushed against a limit the
  arm could not follow (the safety filter's workspace, speed or joint limits) or while the
  executor held it. The defaults are below the executor's resume limits
  (``max_resume_position_m`` 0.05 m, ``max_resume_rotation_rad`` 0.3 rad), so a held arm always
  resumes toward the operator's target;
- :meth:`TeleopTargets.sync` puts the target on the measured TCP (at start, after a reset), and
  so does a step that finds the target over twice the lead limit away (the arm was moved by
  something else): the arm is never sent back to where it was.
numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from policy_runtime.robots.poses import pose_to_ee_action
from policy_runtime.teleop.input import TeleopInput


@dataclass(frozen=True)
class TeleopSettings:
    """Speeds at full deflection, the dead-man timeout, the lead limit and the button roles."""

    max_speed_m_s: float = 0.2
    max_rotation_rad_s: float = 0.8
    input_timeout_s: float = 0.25
    max_lead_m: float = 0.04
    max_lead_rad: float = 0.25
    operator_yaw_rad: float = 0.0
    rotation_button: int = 0
    unlock_z_button: int = 1
    gripper_button: int = 2


class TeleopTargets:
    """The operator's end-effector target (see the module docs)."""

    def __init__(self, settings: TeleopSettings | None = None) -> None:
        self.settings = settings or TeleopSettings()
        self.pose: np.ndarray | None = None  # 4x4 in base_link
        self.gripper = 1.0
        self._measured: np.ndarray | None = None
        self._input: TeleopInput | None = None
        self._gripper_was_pressed = False
        #: Periods the input was older than the timeout (the dead-man held the target).
        self.stale_inputs = 0

    def set_input(self, reading: TeleopInput) -> None:
        self._input = reading

    @property
    def last_input(self) -> TeleopInput | None:
        """The newest reading (however old)."""
        return self._input

    def measured(self, pose: np.ndarray, gripper: float | None = None) -> None:
        """The TCP's measured pose (and gripper opening); the first one places the target."""
        self._measured = np.asarray(pose, dtype=np.float64)
        if self.pose is None:
            self.sync(gripper)

    def sync(self, gripper: float | None = None) -> None:
        """Put the target on the measured TCP (nothing to do before the first measurement)."""
        if self._measured is not None:
            self.pose = self._measured.copy()
        if gripper is not None:
            self.gripper = float(gripper)

    def step(self, period_s: float, now: float) -> np.ndarray | None:
        """Move the target by the input over ``period_s``; the target as a (10,) end-effector
        action (None before the TCP is measured). ``now`` is the clock of the inputs'
        ``received`` (monotonic)."""
        if self.pose is None or self._measured is None:
            return None
        s = self.settings
        reading = self._input
        if reading is None or now - reading.received > s.input_timeout_s:
            if reading is not None:
                self.stale_inputs += 1
            axes, buttons = np.zeros(6), tuple[bool, ...]()
        else:
            axes, buttons = reading.axes, reading.buttons
        pressed = _pressed(buttons, s.gripper_button)
        if pressed and not self._gripper_was_pressed:
            self.gripper = 0.0 if self.gripper > 0.5 else 1.0
        self._gripper_was_pressed = pressed
        if np.linalg.norm(self.pose[:3, 3] - self._measured[:3, 3]) > 2 * s.max_lead_m:
            self.sync()
        period = max(0.0, period_s)
        move = axes[:3] * s.max_speed_m_s * period
        turn = axes[3:] * s.max_rotation_rad_s * period
        if _pressed(buttons, s.rotation_button):
            move = np.zeros(3)
        else:
            turn = np.zeros(3)
        if not _pressed(buttons, s.unlock_z_button):
            move[2] = 0.0
        view = _rot_z(s.operator_yaw_rad)
        assert self.pose is not None
        pose = self.pose.copy()
        pose[:3, 3] += view @ move
        pose[:3, :3] = _rotation(view @ turn) @ pose[:3, :3]
        lead = pose[:3, 3] - self._measured[:3, 3]
        distance = float(np.linalg.norm(lead))
        if distance > s.max_lead_m:
            pose[:3, 3] = self._measured[:3, 3] + lead * (s.max_lead_m / distance)
        turn_lead = _rotvec(pose[:3, :3] @ self._measured[:3, :3].T)
        angle = float(np.linalg.norm(turn_lead))
        if angle > s.max_lead_rad:
            scaled = _rotation(turn_lead * (s.max_lead_rad / angle))
            pose[:3, :3] = scaled @ self._measured[:3, :3]
        self.pose = pose
        return pose_to_ee_action(pose, self.gripper)


def _pressed(buttons: tuple[bool, ...], index: int) -> bool:
    return 0 <= index < len(buttons) and bool(buttons[index])


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rotvec(rotation: np.ndarray) -> np.ndarray:
    """The rotation vector of a rotation matrix (angle below pi)."""
    cos = float(np.clip(0.5 * (np.trace(rotation) - 1.0), -1.0, 1.0))
    angle = math.acos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array(
        [
            rotation[2, 1] - rotation[1, 2],
            rotation[0, 2] - rotation[2, 0],
            rotation[1, 0] - rotation[0, 1],
        ]
    )
    norm = float(np.linalg.norm(axis))
    if norm < 1e-12:  # a half turn: not reached by a lead limit below pi
        return np.zeros(3)
    return axis / norm * angle


def _rotation(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation by ``|rotvec|`` about its direction."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
