"""Operator input to end-effector targets: Diffusion Policy's demo modes, the dead-man and the
lead limit, with every expected pose worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policy_runtime.robots.poses import ee_action_to_pose
from policy_runtime.teleop.input import TeleopInput
from policy_runtime.teleop.targets import TeleopSettings, TeleopTargets

START = np.eye(4)
START[:3, 3] = (0.5, 0.0, 0.1)


def reading(axes: list[float], buttons: tuple[bool, ...] = (), at: float = 0.0) -> TeleopInput:
    return TeleopInput(np.array(axes, dtype=np.float64), buttons, at)


def targets(**settings: float) -> TeleopTargets:
    teleop = TeleopTargets(TeleopSettings(max_speed_m_s=0.2, max_rotation_rad_s=0.8, **settings))
    teleop.measured(START, gripper=1.0)
    return teleop


def position(action: np.ndarray | None) -> np.ndarray:
    assert action is not None
    return ee_action_to_pose(action)[0][:3, 3]


def test_no_target_before_the_tcp_is_measured() -> None:
    assert TeleopTargets().step(0.1, 0.0) is None


def test_translation_stays_in_the_table_plane_unless_z_is_unlocked() -> None:
    teleop = targets()
    # Half deflection forward and full up for 0.1 s at 0.2 m/s: x moves 0.5 * 0.2 * 0.1 = 1 cm;
    # z is locked (no button 1).
    teleop.set_input(reading([0.5, 0.0, 1.0, 0, 0, 0]))
    np.testing.assert_allclose(position(teleop.step(0.1, 0.0)), [0.51, 0.0, 0.1], atol=1e-7)
    teleop.set_input(reading([0.0, -1.0, 1.0, 0, 0, 0], (False, True)))
    # Unlocked: y -2 cm, z +2 cm.
    np.testing.assert_allclose(position(teleop.step(0.1, 0.0)), [0.51, -0.02, 0.12], atol=1e-7)


def test_the_rotation_button_rotates_instead_of_translating() -> None:
    teleop = targets()
    teleop.set_input(reading([1.0, 0, 0, 0, 0, 1.0], (True,)))
    action = teleop.step(0.1, 0.0)
    pose, _ = ee_action_to_pose(action)
    angle = 0.8 * 0.1  # yaw at full deflection for 0.1 s, about base_link's z
    c, s = math.cos(angle), math.sin(angle)
    np.testing.assert_allclose(pose[:3, :3], [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(pose[:3, 3], START[:3, 3], atol=1e-7)  # no translation


def test_the_operator_view_turns_the_axes_into_base_link() -> None:
    teleop = targets(operator_yaw_rad=math.pi / 2)
    teleop.set_input(reading([1.0, 0, 0, 0, 0, 0]))
    # The operator faces base_link's +y: forward on the stick is +y of the robot.
    np.testing.assert_allclose(position(teleop.step(0.1, 0.0)), [0.5, 0.02, 0.1], atol=1e-7)


def test_dead_man_holds_the_target_when_input_stops_coming() -> None:
    teleop = targets(input_timeout_s=0.25)
    teleop.set_input(reading([1.0, 0, 0, 0, 0, 0], at=10.0))
    np.testing.assert_allclose(position(teleop.step(0.1, 10.2)), [0.52, 0.0, 0.1], atol=1e-7)
    # 0.3 s after the last reading: older than the timeout, so no motion.
    np.testing.assert_allclose(position(teleop.step(0.1, 10.3)), [0.52, 0.0, 0.1], atol=1e-7)
    assert teleop.stale_inputs == 1


def test_the_target_never_leads_the_arm_by_more_than_the_limit() -> None:
    teleop = targets(max_lead_m=0.06)
    teleop.set_input(reading([1.0, 0, 0, 0, 0, 0]))
    for _ in range(20):  # 20 * 2 cm pushed while the arm does not move
        action = teleop.step(0.1, 0.0)
    np.testing.assert_allclose(position(action), [0.56, 0.0, 0.1], atol=1e-7)


def test_a_target_far_off_the_arm_is_put_back_on_it() -> None:
    teleop = targets(max_lead_m=0.06)
    moved = START.copy()
    moved[:3, 3] = (0.3, 0.2, 0.1)  # a simulator reset put the arm 28 cm away
    teleop.measured(moved)
    teleop.set_input(reading([0.0, 0, 0, 0, 0, 0]))
    np.testing.assert_allclose(position(teleop.step(0.1, 0.0)), [0.3, 0.2, 0.1], atol=1e-7)


@pytest.mark.parametrize("presses", [1, 3])
def test_the_gripper_toggles_once_per_press(presses: int) -> None:
    teleop = targets()
    assert teleop.gripper == 1.0
    for _ in range(presses):  # held for `presses` periods, then released
        teleop.set_input(reading([0] * 6, (False, False, True)))
        action = teleop.step(0.1, 0.0)
    assert action is not None and action[9] == 0.0
    teleop.set_input(reading([0] * 6))
    teleop.step(0.1, 0.0)
    teleop.set_input(reading([0] * 6, (False, False, True)))
    action = teleop.step(0.1, 0.0)
    assert action is not None and action[9] == 1.0


def test_rotation_lead_is_limited_too() -> None:
    teleop = targets(max_lead_rad=0.25)
    teleop.set_input(reading([0, 0, 0, 0, 0, 1.0], (True,)))
    for _ in range(10):  # 10 * 0.08 rad of yaw pushed while the arm does not turn
        action = teleop.step(0.1, 0.0)
    pose, _ = ee_action_to_pose(action)
    c, s = math.cos(0.25), math.sin(0.25)
    np.testing.assert_allclose(pose[:3, :3], [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-6)


def test_lead_limits_sit_inside_the_executors_resume_limits() -> None:
    """A held arm resumes only toward a first action within the executor's resume limits; the
    operator's target can lead the arm by at most the teleop's: smaller, so it always resumes."""
    from policy_runtime.execution.control_loop import LoopConfig

    loop, teleop = LoopConfig(), TeleopSettings()
    assert teleop.max_lead_m < loop.max_resume_position_m
    assert teleop.max_lead_rad < loop.max_resume_rotation_rad
