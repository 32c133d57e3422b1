"""The safety filter of policy_runtime.execution: limits, refusals, holds, the braking envelope.

Deterministic: time is a tick counter (``t = k * DT``), nothing sleeps, and every expected
number below is worked out by hand in the comments (DT = 10 ms, a = 10 rad/s^2, so the
velocity may change by a * DT = 0.1 rad/s per tick). The control loop around it is tested in
``test_control_loop.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from policy_runtime.execution.kinematics import EeToJoint
from policy_runtime.execution.safety import INTERVENTIONS, SafetyFilter, SafetyLimits
from policy_runtime.robots.poses import rot6d_from_matrix
from policy_runtime.robots.ur5 import UR5_POSITION_LIMITS, UR5_VELOCITY_LIMITS

DT = 0.01
ACCEL = 10.0
A_DT = ACCEL * DT  # 0.1 rad/s per tick
V_MAX = np.pi / 2  # the default half of the UR5's pi rad/s
HOME_Q = np.array([0.0, -1.9, 1.9, -1.571, -1.571, 0.0])
#: Relative slack for limits checked on outputs (round-off of the scaling, not a tolerance).
SLACK = 1e-9


def rz(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def ee(position: Sequence[float] | np.ndarray, rotation: np.ndarray, gripper: float) -> np.ndarray:
    return np.concatenate([position, rot6d_from_matrix(rotation), [gripper]])


TOP_DOWN = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
PREVIOUS_EE = ee((0.5, 0.0, 0.2), TOP_DOWN, 0.5)


# -- limits -------------------------------------------------------------------------------


def test_default_limits_are_the_ur5s():
    limits = SafetyLimits()
    assert limits.joint_position_limits == UR5_POSITION_LIMITS
    assert limits.joint_velocity_limits == UR5_VELOCITY_LIMITS
    np.testing.assert_allclose(SafetyFilter(limits).velocity_limits, np.full(6, np.pi / 2))
    assert limits.joint_acceleration_limits == (ACCEL,) * 6
    assert (limits.workspace_min_m, limits.workspace_max_m) == (
        (0.2, -0.45, 0.01),
        (0.8, 0.45, 0.6),
    )
    assert (limits.max_ee_speed_m_s, limits.max_ee_angular_speed_rad_s) == (0.43, 1.04)
    assert limits.gripper_range == (0.0, 1.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("joint_position_limits", ((1.0, -1.0),) * 6),
        ("joint_position_limits", ((-1.0, 1.0),) * 5),
        ("joint_velocity_limits", (1.0, 1.0, 1.0, 1.0, 1.0, -1.0)),
        ("joint_acceleration_limits", (1.0, 2.0)),
        ("velocity_fraction", 1.5),
        ("max_ee_speed_m_s", float("inf")),
        ("max_ee_jump_rad", 4.0),
        ("workspace_min_m", (0.9, -0.45, 0.0)),
        ("gripper_range", (0.5, 1.2)),
        ("unknown_limit", 1.0),
    ],
)
def test_bad_limits_are_refused_naming_the_field(field: str, value: Any):
    with pytest.raises(ValidationError, match=field):
        SafetyLimits(**{field: value})


# -- end-effector rules ---------------------------------------------------------------------


def test_nan_and_degenerate_ee_targets_are_refused_and_counted():
    safety = SafetyFilter()
    target = PREVIOUS_EE.copy()
    target[0] = np.nan
    result = safety.filter_ee(target, PREVIOUS_EE, DT)
    assert (result.hold, result.refusal, result.interventions) == (
        True,
        "non_finite",
        ("non_finite",),
    )
    np.testing.assert_array_equal(result.action, PREVIOUS_EE)
    target = PREVIOUS_EE.copy()
    target[3:9] = [1.0, 0.0, 0.0, 2.0, 0.0, 0.0]  # parallel rows: no rotation
    assert safety.filter_ee(target, PREVIOUS_EE, DT).refusal == "invalid_rotation"
    assert safety.counts["non_finite"] == 1
    assert safety.counts["invalid_rotation"] == 1


def test_a_one_metre_jump_is_refused_not_clamped():
    safety = SafetyFilter()
    far = ee((0.5, 0.0, 1.2), TOP_DOWN, 0.5)
    result = safety.filter_ee(far, PREVIOUS_EE, DT)
    assert result.hold and result.interventions == ("ee_jump",)
    np.testing.assert_array_equal(result.action, PREVIOUS_EE)
    turned = ee((0.5, 0.0, 0.2), rz(1.0) @ TOP_DOWN, 0.5)  # 1 rad > 0.8 rad
    assert safety.filter_ee(turned, PREVIOUS_EE, DT).refusal == "ee_jump"
    assert safety.counts["ee_jump"] == 2


def test_a_valid_ee_target_passes_unchanged():
    safety = SafetyFilter()
    target = ee((0.502, 0.001, 0.199), rz(0.005) @ TOP_DOWN, 0.7)
    result = safety.filter_ee(target, PREVIOUS_EE, DT)
    assert not result.hold and result.interventions == ()
    np.testing.assert_allclose(result.action, target, atol=1e-12)
    assert sum(safety.counts.values()) == 0


def test_workspace_box_clamps_the_position():
    safety = SafetyFilter()
    low = ee((0.5, 0.0, 0.05), TOP_DOWN, 0.5)
    below = ee((0.5, 0.0, -0.05), TOP_DOWN, 0.5)  # 10 cm down, 5 cm into the table
    result = safety.filter_ee(below, low, dt=1.0)  # long dt: no speed limit
    assert result.interventions == ("workspace",)
    np.testing.assert_allclose(result.action[:3], [0.5, 0.0, 0.01], atol=1e-15)
    near_edge = ee((0.55, 0.4, 0.2), TOP_DOWN, 0.5)
    aside = ee((0.55, 0.5, 0.2), TOP_DOWN, 0.5)
    np.testing.assert_allclose(
        safety.filter_ee(aside, near_edge, 1.0).action[:3], [0.55, 0.45, 0.2]
    )
    assert safety.counts["workspace"] == 2


def test_ee_linear_and_angular_speed_limits_scale_the_step_together():
    safety = SafetyFilter()
    # 10 cm in 10 ms asks 10 m/s: 0.43 m/s allows 4.3 mm along the same direction.
    target = ee((0.56, 0.08, 0.2), TOP_DOWN, 0.5)
    result = safety.filter_ee(target, PREVIOUS_EE, DT)
    assert result.interventions == ("ee_speed",)
    np.testing.assert_allclose(
        result.action[:3], [0.5 + 0.0043 * 0.6, 0.0043 * 0.8, 0.2], atol=1e-15
    )
    np.testing.assert_allclose(result.action[3:9], PREVIOUS_EE[3:9], atol=1e-15)
    # 0.5 rad about z and 1 mm in 0.1 s: the angular cap (0.104 rad) binds, and the position
    # step is scaled by the same factor 0.104 / 0.5 = 0.208.
    target = ee((0.501, 0.0, 0.2), rz(0.5) @ TOP_DOWN, 0.5)
    result = safety.filter_ee(target, PREVIOUS_EE, 0.1)
    assert result.interventions == ("ee_angular_speed",)
    np.testing.assert_allclose(result.action[:3], [0.5 + 0.001 * 0.208, 0.0, 0.2], atol=1e-15)
    np.testing.assert_allclose(
        result.action[3:9], rot6d_from_matrix(rz(0.104) @ TOP_DOWN), atol=1e-12
    )


def test_gripper_is_clamped_to_its_range():
    safety = SafetyFilter()
    wide = PREVIOUS_EE.copy()
    wide[9] = 1.3
    result = safety.filter_ee(wide, PREVIOUS_EE, DT)
    assert (result.action[9], result.interventions) == (1.0, ("gripper_range",))
    joints = safety.filter_joints(HOME_Q, HOME_Q, np.zeros(6), DT, gripper=-0.2)
    assert (joints.gripper, joints.interventions) == (0.0, ("gripper_range",))
    # A regression's noise at the edge of the range is clamped, but not reported.
    noisy = safety.filter_joints(HOME_Q, HOME_Q, np.zeros(6), DT, gripper=1.005)
    assert (noisy.gripper, noisy.interventions) == (1.0, ())
    assert safety.counts["gripper_range"] == 2


# -- joint rules ----------------------------------------------------------------------------


def test_nan_joint_command_holds_by_decelerating():
    safety = SafetyFilter()
    v_prev = np.array([1.0, -0.5, 0, 0, 0, 0])
    result = safety.filter_joints(np.full(6, np.nan), HOME_Q, v_prev, DT)
    # Stop time max|v|/a = 0.1 s; one tick of the ramp leaves 90 % of the velocity.
    assert (result.hold, result.refusal, result.gripper) == (True, "non_finite", None)
    np.testing.assert_allclose(result.velocity, 0.9 * v_prev, atol=1e-12)
    np.testing.assert_allclose(result.q, HOME_Q + 0.9 * v_prev * DT, atol=1e-12)
    assert safety.filter_joints(HOME_Q, HOME_Q, v_prev, DT, gripper=np.inf).refusal == "non_finite"
    assert safety.counts["non_finite"] == 2


def test_a_joint_jump_is_refused():
    safety = SafetyFilter()
    result = safety.filter_joints(HOME_Q + np.array([0, 0, 0, 0.6, 0, 0]), HOME_Q, np.zeros(6), DT)
    assert result.hold and result.interventions == ("joint_jump",)
    np.testing.assert_array_equal(result.q, HOME_Q)  # at rest it stays put
    assert safety.counts["joint_jump"] == 1


def test_hold_ramps_velocity_to_zero_within_the_stop_time():
    safety = SafetyFilter()
    v = np.array([1.0, -0.5, 0.2, 0, 0, 0])
    assert safety.stopping_time(v) == pytest.approx(0.1)  # 1.0 / 10
    q, velocities = HOME_Q, []
    for _ in range(12):
        held = safety.hold(q, v, DT)
        q, v = held.q, held.velocity
        velocities.append(v.copy())
    # Linear ramp, all joints together: 0.9, 0.8, ..., 0.1, 0 of the initial velocity.
    fractions = np.array([v[0] for v in velocities])
    np.testing.assert_allclose(
        fractions, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0, 0, 0], atol=1e-12
    )
    np.testing.assert_allclose(np.array(velocities)[:, 1], -0.5 * fractions, atol=1e-12)
    # Distance: (0.9 + ... + 0.1) * 10 ms = 45 mrad on the first joint.
    np.testing.assert_allclose(q[0] - HOME_Q[0], 0.045, atol=1e-12)
    # The stopping point bounds it by the continuous ramp: v T / 2 = 1.0 * 0.1 / 2 = 50 mrad,
    # which no tick length can exceed (each tick moves at the velocity of its end).
    v0 = np.array([1.0, -0.5, 0.2, 0, 0, 0])
    np.testing.assert_allclose(safety.stopping_point(HOME_Q, v0), HOME_Q + v0 * 0.05, atol=1e-12)
    q_fine, v = HOME_Q, v0
    for _ in range(100):  # the same hold in 1 ms ticks: 49.5 mrad, still within 50
        held = safety.hold(q_fine, v, DT / 10)
        q_fine, v = held.q, held.velocity
    assert 0.045 < q_fine[0] - HOME_Q[0] <= 0.05


def test_position_limit_is_never_exceeded():
    safety = SafetyFilter()
    start = np.array([0.0, -1.0, np.pi - 0.02, 0.0, 0.0, 0.0])
    q, v, commands = start, np.zeros(6), []
    for _ in range(40):
        result = safety.filter_joints(
            start + np.array([0, 0, 0.1, 0, 0, 0]), q, v, DT
        )  # elbow to pi + 0.08
        q, v = result.q, result.velocity
        commands.append(result)
        assert q[2] <= np.pi
        assert safety.stopping_point(q, v)[2] <= np.pi + 1e-12  # a hold ends inside too
    assert commands[0].interventions[0] == "position_limit"
    assert q[2] == pytest.approx(np.pi, abs=1e-9) and np.abs(v).max() < 1e-6


def test_velocity_and_acceleration_limits_hold_over_a_sequence():
    """A 0.45 rad step on three joints, from rest: every command within both limits, the path a
    straight line in joint space, no overshoot, and the time near the hand-computed optimum."""
    safety = SafetyFilter()
    move = np.array([0.45, -0.3, 0.15, 0.0, 0.0, 0.0])
    q, v, qs, velocities = HOME_Q, np.zeros(6), [], []
    for _ in range(60):
        result = safety.filter_joints(HOME_Q + move, q, v, DT)
        q, v = result.q, result.velocity
        qs.append(q - HOME_Q)
        velocities.append(v)
    velocities_ = np.array(velocities)
    assert np.abs(velocities_).max() <= V_MAX * (1 + SLACK)
    assert np.abs(np.diff(np.vstack([np.zeros(6), velocities_]), axis=0)).max() <= A_DT * (
        1 + SLACK
    )
    progress = np.array(qs) @ move / (move @ move)
    np.testing.assert_allclose(np.array(qs), progress[:, None] * move, atol=1e-12)  # straight
    assert progress.max() <= 1.0 + 1e-12  # never past the target
    # First ticks: v = 0.1, 0.2, 0.3 rad/s on the leading joint: 1, 3, 6 mrad.
    np.testing.assert_allclose(np.array(qs)[:3, 0], [0.001, 0.003, 0.006], atol=1e-12)
    # Trapezoid by hand: 0.45 / (pi / 2) + (pi / 2) / 10 = 0.444 s; the tick grid may shave
    # part of a tick (velocity changes at tick starts), never add more than two.
    arrival = (np.argmax(np.abs(progress - 1.0) < 1e-12) + 1) * DT
    assert 0.43 <= arrival <= 0.444 + 2 * DT
    assert safety.counts["velocity_limit"] > 0 and safety.counts["acceleration_limit"] > 0


def test_a_moving_target_is_followed_with_the_braking_lag_and_never_passed():
    """The target may stop dead on any tick, so the command keeps within braking distance of
    it: at v = 0.5 rad/s the lag settles at v^2 / 2a - v dt / 2 = 12.5 - 2.5 = 10 mrad."""
    safety = SafetyFilter()
    q, v = HOME_Q, np.zeros(6)
    for k in range(1, 40):
        target = HOME_Q + np.array([0.5 * k * DT, 0, 0, 0, 0, 0])
        result = safety.filter_joints(target, q, v, DT)
        q, v = result.q, result.velocity
        assert q[0] <= target[0] + 1e-12  # round-off only
    np.testing.assert_allclose(target - q, [0.01, 0, 0, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(v, [0.5, 0, 0, 0, 0, 0], atol=1e-9)
    assert result.interventions == ()
    # The target stops: the command brakes onto it and stops there, never past it.
    for _ in range(20):
        result = safety.filter_joints(target, q, v, DT)
        q, v = result.q, result.velocity
        assert q[0] <= target[0] + 1e-12
    np.testing.assert_allclose(q, target, atol=1e-12)
    assert np.all(v == 0.0)


# -- the braking envelope -------------------------------------------------------------------


def _drive_then_hold(
    safety: SafetyFilter,
    q: np.ndarray,
    target: Any,
    hold_when: Any,
    kinematics: EeToJoint | None = None,
    ticks: int = 300,
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Follow ``target(k)`` until ``hold_when(q)``, then hold until rest: (positions,
    velocities, the tick the hold started), starting at rest at ``q``."""
    v, qs, vs, held_from = np.zeros(6), [q], [np.zeros(6)], -1
    for k in range(ticks):
        if held_from < 0 and hold_when(q):
            held_from = k
        if held_from >= 0:
            result = safety.hold(q, v, DT)
        else:
            result = safety.filter_joints(target(k), q, v, DT, kinematics=kinematics)
        q, v = result.q, result.velocity
        qs.append(q)
        vs.append(v)
    return qs, vs, held_from


def test_a_hold_started_1_cm_from_a_position_limit_stops_inside_within_the_acceleration_limit():
    """Shoulder pan and elbow head for a target 3 rad and 1 rad away, the elbow's clamped to its
    limit pi, 0.5 rad away: the path is a straight line, so near the limit the pan runs 6 times
    as fast as the elbow. Its own braking curve would leave the elbow ~0.26 rad/s 1 cm out (the
    pan at the 1.57 rad/s cap), and a hold, stopping both together in T = 1.57 / 10 s, would
    carry it v T / 2 = 20 mrad: 1 cm past pi. The envelope brakes earlier: a hold begun the
    first tick the elbow is within 1 cm stops inside, every velocity change within a DT."""
    safety = SafetyFilter(SafetyLimits(max_joint_jump_rad=4.0))
    start = np.array([0.0, -1.0, np.pi - 0.5, 0.0, 0.0, 0.0])
    target = start + np.array([3.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    qs, vs, held_from = _drive_then_hold(
        safety, start, lambda k: target, lambda q: np.pi - q[2] <= 0.01
    )
    assert held_from > 0 and np.pi - qs[held_from][2] == pytest.approx(0.01, abs=0.005)
    elbow = np.array([q[2] for q in qs])
    assert elbow.max() <= np.pi and np.abs(vs[-1]).max() == 0.0
    changes = np.abs(np.diff(np.array(vs), axis=0))
    assert changes.max() <= A_DT * (1 + SLACK)
    assert np.abs(np.array(vs)).max() <= V_MAX * (1 + SLACK)
    assert safety.counts["position_limit"] > 0


def test_joint_commands_slow_and_stop_at_the_workspace_boundary():
    """Lowering the shoulder lift at up to 0.6 rad/s drives the TCP down into the table. A joint
    command cannot be clamped into the box; the envelope makes the arm brake so that a hold from
    any command would still end above z = 0.01, and it comes to rest at the boundary."""
    kinematics = EeToJoint()

    def tcp(q: np.ndarray) -> np.ndarray:
        return kinematics.forward(q)[:3, 3]

    def target(k: int) -> np.ndarray:
        return HOME_Q + np.array([0, min(0.6 * k * DT, 0.9), 0, 0, 0, 0])

    safety = SafetyFilter()
    q, v, heights, stops = HOME_Q, np.zeros(6), [], []
    for k in range(1, 200):
        result = safety.filter_joints(target(k), q, v, DT, kinematics=kinematics)
        q, v = result.q, result.velocity
        heights.append(tcp(q)[2])
        stops.append(tcp(safety.stopping_point(q, v))[2])
    assert min(stops) >= 0.01 - 1e-9 and min(heights) >= 0.01 - 1e-9
    assert heights[-1] == pytest.approx(0.01, abs=1e-3) and np.abs(v).max() < 1e-3
    assert safety.counts["workspace"] > 0
    # A hold begun 1 cm above the floor ends above it, decelerating within the limit.
    held_q, held_v, held_from = _drive_then_hold(
        safety, HOME_Q, target, lambda q: tcp(q)[2] < 0.02, kinematics
    )
    assert held_from > 0 and min(tcp(q)[2] for q in held_q) >= 0.01 - 1e-9
    assert np.abs(np.diff(np.array(held_v), axis=0)).max() <= A_DT * (1 + SLACK)


def test_every_intervention_has_a_counter():
    assert set(SafetyFilter().counts) == set(INTERVENTIONS)
    assert len(INTERVENTIONS) == 11


def test_the_stopping_point_memo_is_not_shared_between_kinematics():
    """The filter remembers how far the last command's stopping point lay outside the box, for
    the kinematics that measured it: another kinematics (a new tool offset) measures afresh."""
    kinematics = EeToJoint()
    safety = SafetyFilter()
    q, v = HOME_Q, np.zeros(6)
    for k in range(1, 80):  # down toward the floor, at speed
        target = HOME_Q + np.array([0, min(0.6 * k * DT, 0.9), 0, 0, 0, 0])
        result = safety.filter_joints(target, q, v, DT, kinematics=kinematics)
        q, v = result.q, result.velocity
    longer_tool = np.eye(4)
    longer_tool[2, 3] = 0.645  # a tool 0.5 m longer: its TCP far below the floor
    safety.filter_joints(q, q, v, DT, kinematics=EeToJoint(tool0_to_tcp=longer_tool))
    fresh = SafetyFilter()
    target = HOME_Q + np.array([0, 0.9, 0, 0, 0, 0])
    remembered = safety.filter_joints(target, q, v, DT, kinematics=kinematics)
    alone = fresh.filter_joints(target, q, v, DT, kinematics=kinematics)
    np.testing.assert_array_equal(remembered.q, alone.q)


def test_deep_inside_the_box_no_kinematics_is_needed_and_nothing_changes():
    """Deeper inside the box than the TCP can move (0.95 m per radian of joint motion, summed,
    plus the tool), the stopping point's TCP needs no forward kinematics: the commands are the
    same as with it computed every tick."""
    kinematics = EeToJoint()
    calls = 0

    class Counting(EeToJoint):
        def tcp_position(self, q: np.ndarray) -> np.ndarray:
            nonlocal calls
            calls += 1
            return super().tcp_position(q)

    counting = Counting()
    bounded, exact = SafetyFilter(), SafetyFilter()
    q_b = q_e = HOME_Q
    v_b = v_e = np.zeros(6)
    for k in range(1, 100):  # a slow swing of the wrist, far from every face
        target = HOME_Q + np.array([0, 0, 0, 0, 0.3 * np.sin(k * DT), 0])
        b = bounded.filter_joints(target, q_b, v_b, DT, kinematics=counting)
        e = exact.filter_joints(target, q_e, v_e, DT, kinematics=None)
        q_b, v_b, q_e, v_e = b.q, b.velocity, e.q, e.velocity
        np.testing.assert_array_equal(b.q, e.q)
    assert kinematics.max_lever_m == pytest.approx(1.34, abs=0.01)
    assert calls < 20  # a handful of times, where the depth bound ran low


def test_overflowing_rotations_are_not_rotations():
    from policy_runtime.robots.poses import valid_rot6d

    assert not valid_rot6d(np.array([1e200, 0, 0, 0, 1e200, 0]))
    assert valid_rot6d(np.array([1.0, 0, 0, 0, 1.0, 0]))
