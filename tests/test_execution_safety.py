"""Safety filter, watchdog and control loop of policy_runtime.execution.

Deterministic: time is a tick counter (``t = k * DT``), nothing sleeps, and every expected
number below is worked out by hand in the comments (DT = 10 ms, a = 10 rad/s^2, so the
velocity may change by a * DT = 0.1 rad/s per tick).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pytest
from pydantic import ValidationError

from policy_runtime.execution.control_loop import ControlLoop, JointCommand
from policy_runtime.execution.kinematics import EeToJoint
from policy_runtime.execution.safety import INTERVENTIONS, SafetyFilter, SafetyLimits
from policy_runtime.execution.watchdog import Watchdog, WatchdogConfig
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


class StubEngine:
    """An engine whose target is a function of time; records when it was asked."""

    def __init__(self, target: Callable[[float], np.ndarray | None]) -> None:
        self.target = target
        self.asked: list[float] = []

    def command(self, t: float) -> np.ndarray | None:
        self.asked.append(t)
        return self.target(t)


def make_loop(
    target: Callable[[float], np.ndarray | None],
    action_space: Literal["ee", "joint"] = "joint",
    *,
    watchdog: WatchdogConfig | None = None,
    max_tracking_error_rad: float = 0.2,
    **limits: Any,
) -> ControlLoop:
    return ControlLoop(
        StubEngine(target),
        action_space,
        safety=SafetyFilter(SafetyLimits(**limits)),
        watchdog=Watchdog(watchdog),
        period_s=DT,
        max_tracking_error_rad=max_tracking_error_rad,
    )


def feed(loop: ControlLoop, t: float) -> None:
    """Fresh observation and chunk at ``t``."""
    loop.watchdog.observation_received(t)
    loop.watchdog.chunk_received(t)


def run(
    loop: ControlLoop, ticks: range, fresh: bool = True, follows: bool = True
) -> list[JointCommand]:
    """Tick at ``k * DT``; the measured joints are those last commanded (an arm that follows
    its commands), or stay where the arm is (``follows=False``: an arm that is blocked)."""
    commands = []
    for k in ticks:
        t = k * DT
        if fresh:
            feed(loop, t)
        last = loop.last_command if follows else None
        commands.append(loop.tick(t, HOME_Q if last is None else last.q))
    return commands


def moving_joint_target(speed: float) -> Callable[[float], np.ndarray]:
    """HOME_Q with the shoulder pan moving at ``speed`` rad/s from t = 0, gripper 0.5."""
    return lambda t: np.append(HOME_Q + np.array([speed * t, 0, 0, 0, 0, 0]), 0.5)


def assert_within_limits(commands: list[JointCommand], q0: np.ndarray, v_max: float) -> None:
    """Velocity and acceleration limits on a command sequence starting at rest at ``q0``."""
    q = np.array([q0] + [c.q for c in commands])
    velocity = np.diff(q, axis=0) / DT
    np.testing.assert_allclose(velocity, [c.velocity for c in commands], atol=1e-12)
    assert np.abs(velocity).max() <= v_max * (1 + SLACK)
    change = np.diff(np.vstack([np.zeros(6), velocity]), axis=0)
    assert np.abs(change).max() <= A_DT * (1 + SLACK)


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
    v0 = np.array([1.0, -0.5, 0.2, 0, 0, 0])
    np.testing.assert_allclose(safety.stopping_point(HOME_Q, v0, DT), q, atol=1e-12)


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
    assert commands[0].interventions[0] == "position_limit"
    assert q[2] == np.pi and np.all(v == 0.0)


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


# -- control loop -------------------------------------------------------------------------


def test_control_loop_follows_a_joint_target_within_limits():
    loop = make_loop(moving_joint_target(0.5))
    commands = run(loop, range(1, 41))
    assert not any(c.hold for c in commands)
    assert_within_limits(commands, HOME_Q, V_MAX)
    last = commands[-1]
    np.testing.assert_allclose(
        last.q, HOME_Q + np.array([0.2 - 0.01, 0, 0, 0, 0, 0]), atol=1e-12
    )  # lag
    assert last.gripper == 0.5
    assert last.stop_time_s == pytest.approx(0.05)  # 0.5 rad/s at 10 rad/s^2
    assert isinstance(loop.engine, StubEngine)
    assert loop.engine.asked == [k * DT for k in range(1, 41)]


def test_nan_chunk_holds_and_counts_then_resumes():
    nan_from, nan_until = 0.205, 0.305
    base = moving_joint_target(0.5)

    def target(t: float) -> np.ndarray:
        return np.full(7, np.nan) if nan_from < t < nan_until else base(t)

    loop = make_loop(target)
    commands = run(loop, range(1, 51))
    held = [c for c in commands if c.hold]
    assert [round(c.t, 2) for c in held] == [round(0.21 + i * DT, 2) for i in range(10)]
    assert all(c.reasons == ("non_finite",) for c in held)
    assert loop.safety.counts["non_finite"] == 10 and loop.hold_counts["non_finite"] == 10
    # The hold decelerates from 0.5 rad/s: 0.4, 0.3, 0.2, 0.1, 0 (stop time 0.05 s).
    np.testing.assert_allclose(
        [c.velocity[0] for c in held[:6]], [0.4, 0.3, 0.2, 0.1, 0, 0], atol=1e-9
    )
    assert held[0].stop_time_s == pytest.approx(0.04)
    assert held[0].gripper == 0.5  # the gripper keeps its last command
    assert not commands[-1].hold  # resumed, accelerating again within the limits
    assert_within_limits(commands, HOME_Q, V_MAX)


def test_engine_without_a_command_holds():
    loop = make_loop(lambda t: None)
    command = run(loop, range(1, 3))[-1]
    assert command.hold and command.reasons == ("no_command",)
    np.testing.assert_array_equal(command.q, HOME_Q)
    assert command.gripper is None  # never commanded: leave the gripper alone
    assert loop.hold_counts["no_command"] == 2


def test_watchdog_stale_observation_decelerates_to_rest_in_the_bounded_time():
    """Observations stop at t = 0; with a 0.305 s threshold the first stale tick is t = 0.31.
    The arm runs at 0.5 rad/s, so a = 10 rad/s^2 brings it to rest in 0.05 s: zero velocity at
    t = 0.35, 0.045 s after the threshold was crossed plus at most one tick."""
    loop = make_loop(moving_joint_target(0.5), watchdog=WatchdogConfig(max_observation_age_s=0.305))
    loop.watchdog.observation_received(0.0)
    commands = []
    for k in range(1, 50):
        t = k * DT
        loop.watchdog.chunk_received(t)
        commands.append(loop.tick(t, HOME_Q))
    by_tick = {round(c.t / DT): c for c in commands}
    assert not by_tick[30].hold and by_tick[30].velocity[0] == pytest.approx(0.5)
    assert by_tick[30].stop_time_s == pytest.approx(0.05)
    assert by_tick[31].hold and by_tick[31].reasons == ("observation_stale",)
    speeds = [by_tick[k].velocity[0] for k in range(31, 37)]
    np.testing.assert_allclose(speeds, [0.4, 0.3, 0.2, 0.1, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(
        [by_tick[k].stop_time_s for k in range(31, 36)], [0.04, 0.03, 0.02, 0.01, 0], atol=1e-9
    )
    # Distance while stopping: (0.4 + 0.3 + 0.2 + 0.1) * 10 ms = 10 mrad past the last command.
    np.testing.assert_allclose(by_tick[49].q[0] - by_tick[30].q[0], 0.01, atol=1e-9)
    assert all(by_tick[k].hold for k in range(31, 50))  # no fresh data: stays held

    # Fresh data resumes on the very tick it is seen, from rest within the limits.
    loop.watchdog.observation_received(0.5)
    loop.watchdog.chunk_received(0.5)
    resumed = loop.tick(0.5, HOME_Q)
    assert not resumed.hold and resumed.velocity[0] == pytest.approx(A_DT)


def test_missing_data_and_future_stamps_hold():
    loop = make_loop(moving_joint_target(0.5))
    first = loop.tick(DT, HOME_Q)
    assert first.hold and first.reasons == ("no_observation", "no_chunk")
    loop.watchdog.observation_received(5.0)  # far ahead of t: clocks disagree
    loop.watchdog.chunk_received(2 * DT)
    assert loop.tick(2 * DT, HOME_Q).reasons == ("stamp_in_future",)
    loop.watchdog.observation_received(float("nan"))  # ignored, counted
    assert loop.watchdog.rejected_stamps == 1
    loop.watchdog.observation_received(3 * DT)
    assert not loop.tick(3 * DT, HOME_Q).hold


def test_estop_latches_decelerates_and_needs_a_reset_after_release():
    loop = make_loop(moving_joint_target(0.5))
    run(loop, range(1, 31))  # at 0.5 rad/s
    loop.watchdog.set_estop(True)
    stopping = run(loop, range(31, 40))
    assert all(c.hold and c.reasons == ("estop",) for c in stopping)
    np.testing.assert_allclose(
        [c.velocity[0] for c in stopping[:5]], [0.4, 0.3, 0.2, 0.1, 0.0], atol=1e-9
    )
    assert loop.watchdog.check(0.4).state == "estop"
    assert loop.watchdog.reset() is False  # input still active: refused
    loop.watchdog.set_estop(False)
    released = run(loop, range(40, 43))
    assert all(c.hold and c.reasons == ("estop",) for c in released)  # latched
    np.testing.assert_array_equal(released[-1].q, stopping[-1].q)
    assert loop.watchdog.reset() is True
    after = run(loop, range(43, 46))
    assert not any(c.hold for c in after)
    np.testing.assert_allclose([c.velocity[0] for c in after], [0.1, 0.2, 0.3], atol=1e-9)
    assert loop.hold_counts["estop"] == 12


def test_an_arm_that_stops_following_latches_a_hold_until_reset():
    """At 0.5 rad/s the commands run 0.2 rad ahead of a blocked arm in 0.4 s (plus the ramp):
    the loop then holds, decelerating its commands, and keeps holding after the arm follows
    again; a reset restarts from where the arm is."""
    loop = make_loop(moving_joint_target(0.5), max_tracking_error_rad=0.2)
    run(loop, range(1, 11))  # following, up to 0.05 rad from home
    blocked = loop.last_command
    assert blocked is not None
    stuck = blocked.q
    commands = []
    for k in range(11, 80):
        feed(loop, k * DT)
        commands.append(loop.tick(k * DT, stuck))
    first = next(i for i, c in enumerate(commands) if c.hold)
    gap = commands[first - 1].q - stuck
    assert 0.19 < np.abs(gap).max() <= 0.2 + 1e-9  # the last command still within the bound
    assert all(c.hold and c.reasons == ("tracking_error",) for c in commands[first:])
    np.testing.assert_allclose(  # decelerating from 0.5 rad/s at the acceleration limit
        [c.velocity[0] for c in commands[first : first + 6]], [0.4, 0.3, 0.2, 0.1, 0, 0], atol=1e-9
    )
    latched = run(loop, range(80, 85))  # the arm follows again: still held
    assert all(c.hold and c.reasons == ("tracking_error",) for c in latched)
    assert loop.hold_counts["tracking_error"] == len(commands) - first + 5
    loop.reset()
    resumed = run(loop, range(85, 90), follows=False)
    assert not any(c.hold for c in resumed)
    np.testing.assert_allclose(resumed[0].q, HOME_Q + np.eye(6)[0] * 0.1 * DT, atol=1e-12)
    with pytest.raises(ValueError, match="q_measured must be 6 finite"):
        loop.tick(0.9, np.full(6, np.nan))
    with pytest.raises(ValueError, match="max_tracking_error_rad"):
        make_loop(moving_joint_target(0.5), max_tracking_error_rad=0.0)


def test_a_tick_that_does_not_advance_repeats_the_last_command():
    loop = make_loop(moving_joint_target(0.5))
    command = run(loop, range(1, 5))[-1]
    repeat = loop.tick(command.t, HOME_Q)
    assert repeat.hold and repeat.reasons == ("time_not_advancing",)
    np.testing.assert_array_equal(repeat.q, command.q)
    assert not loop.tick(command.t + DT, HOME_Q).hold


def test_ee_control_loop_follows_a_line_and_clamps_to_the_workspace():
    kinematics = EeToJoint()
    start = kinematics.forward(HOME_Q)  # TCP at (0.35, 0.109, 0.264), pointing down

    def target(t: float) -> np.ndarray:
        position = start[:3, 3] + [0.0, 0.0, -0.2 * t]  # down at 0.2 m/s, into the table
        return ee(position, start[:3, :3], 0.0)

    loop = make_loop(target, action_space="ee")
    commands = run(loop, range(1, 201))
    tcp = [kinematics.forward(c.q) for c in commands]
    # Follows the line while inside the box, trailing by the joints' braking distance (elbow
    # and wrist 1 at ~0.51 rad/s: ~10 mrad each, ~5 mm of TCP), never ahead of the target.
    for k in range(20, 60):
        lag = tcp[k][:3, 3] - target((k + 1) * DT)[:3]
        assert 0.0 < lag[2] < 0.006 and np.abs(lag[:2]).max() < 1e-4
    # Then stops at the workspace floor z = 0.01, never below it.
    assert min(pose[2, 3] for pose in tcp) >= 0.01 - 1e-6
    assert tcp[-1][2, 3] == pytest.approx(0.01, abs=1e-6)
    assert "workspace" in commands[-1].interventions
    assert not any(c.hold for c in commands)
    assert commands[-1].gripper == 0.0
    assert_within_limits(commands, HOME_Q, V_MAX)


def test_ee_jump_and_ik_failure_hold_in_the_control_loop():
    start = EeToJoint().forward(HOME_Q)
    jump = make_loop(lambda t: ee((0.35, 0.109, 1.264), start[:3, :3], 1.0), action_space="ee")
    command = run(jump, range(1, 3))[-1]
    assert command.hold and command.reasons == ("ee_jump",)
    assert jump.safety.counts["ee_jump"] == 2

    limits = list(UR5_POSITION_LIMITS)
    limits[2] = (-0.2, 0.2)  # the home pose is unreachable with this elbow
    narrow = ControlLoop(
        StubEngine(lambda t: ee(start[:3, 3], start[:3, :3], 1.0)),
        "ee",
        kinematics=EeToJoint(limits=tuple(limits)),
        period_s=DT,
    )
    feed(narrow, DT)
    command = narrow.tick(DT, HOME_Q)
    assert command.hold and command.reasons == ("outside_joint_limits",)


def test_joint_commands_may_not_leave_the_workspace():
    """Lowering the shoulder lift at 0.6 rad/s drives the TCP down into the table. A joint
    command cannot be clamped into the box, so one is refused once a hold started from it
    would come to rest below z = 0.01; the arm then brakes and stays above the floor."""
    loop = make_loop(lambda t: np.append(HOME_Q + np.array([0, 0.6 * t, 0, 0, 0, 0]), 1.0))
    commands = run(loop, range(1, 150))
    kinematics = EeToJoint()
    heights = [kinematics.forward(c.q)[2, 3] for c in commands]
    first = next(i for i, c in enumerate(commands) if c.reasons == ("workspace_exit",))
    # Refused while still 6 mm up, about the braking distance at 0.6 rad/s.
    assert heights[first - 1] > 0.015
    assert min(heights) >= 0.01
    assert commands[-1].hold and np.all(commands[-1].velocity == 0.0)
    assert loop.safety.counts["workspace_exit"] == loop.hold_counts["workspace_exit"] > 0
    assert_within_limits(commands, HOME_Q, V_MAX)


def test_bad_engine_output_shape_is_a_programming_error():
    loop = make_loop(lambda t: np.zeros(5))
    feed(loop, DT)
    with pytest.raises(ValueError, match="joint action"):
        loop.tick(DT, HOME_Q)
    ee_loop = make_loop(lambda t: np.zeros(7), action_space="ee")
    feed(ee_loop, DT)
    with pytest.raises(ValueError, match="end-effector action"):
        ee_loop.tick(DT, HOME_Q)
    with pytest.raises(ValueError, match="q_measured"):
        make_loop(lambda t: None).tick(DT, np.full(6, np.nan))
    with pytest.raises(ValueError, match="action_space"):
        ControlLoop(StubEngine(lambda t: None), "cartesian")  # type: ignore[arg-type]


def test_every_intervention_has_a_counter():
    assert set(SafetyFilter().counts) == set(INTERVENTIONS)
    assert len(INTERVENTIONS) == 12
