"""Chunk scheduling: stale actions, the four modes at chunk boundaries, interpolation, requests.

Expected values are worked out by hand from small chunks whose actions are 0, 1, 2, ... (every
joint and the gripper carry the same number, so one column tells the story). The policy period
is 0.125 s (a power of two) so stamps are exact in binary and boundaries are not blurred by
rounding. No test sleeps: time is a FakeClock.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from pydantic import ValidationError

from policy_runtime.chunk import ActionChunk
from policy_runtime.execution import (
    ExecutionConfig,
    ExecutionEngine,
    FakeClock,
    MonotonicClock,
    Trajectory,
    blend_actions,
    matrix_from_quaternion,
    quaternion_from_matrix,
    rtc_prefix_weights,
)
from policy_runtime.robots.poses import matrix_from_rot6d, rot6d_from_matrix

DT = 0.125
MARGIN = 0.01


def joint_chunk(values: list[float], n_action_steps: int = 4, dt: float = DT) -> ActionChunk:
    """A joint chunk whose 7 columns all equal ``values``."""
    actions = np.repeat(np.asarray(values, dtype=np.float64)[:, None], 7, axis=1)
    return ActionChunk.from_actions(actions, n_action_steps, dt)


def make(mode: str = "replace", **overrides) -> tuple[ExecutionEngine, FakeClock]:
    clock = FakeClock()
    config = ExecutionConfig(
        mode=mode, latency_margin_s=overrides.pop("margin", MARGIN), **overrides
    )
    return ExecutionEngine(config, clock), clock


def arrive(engine: ExecutionEngine, clock: FakeClock, chunk: ActionChunk, t_obs: float, at: float):
    clock.set(at)
    return engine.submit(chunk, t_obs)


def value(engine: ExecutionEngine, t: float) -> float:
    """The commanded number at ``t`` (all 7 columns carry it)."""
    command = engine.command(t)
    assert command is not None, f"no command at t={t}"
    np.testing.assert_allclose(command, command[0], atol=1e-12)
    return float(command[0])


def rotz(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def ee_actions(positions: np.ndarray, rotations: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    return np.concatenate([positions, rot6d_from_matrix(rotations), gripper[:, None]], axis=1)


# --- stale actions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latency", "margin", "n_stale", "first_value"),
    [
        (0.0, 0.0, 0, 0.0),  # nothing has passed
        (0.0, MARGIN, 1, 1.0),  # action 0 is due now: inside the 10 ms margin
        (1.5 * DT, MARGIN, 2, 2.0),  # due 0, 0.125 < 0.1875 + 0.01
        (3 * DT, MARGIN, 4, 4.0),  # due 0 .. 0.375 < 0.385
        (3 * DT, 0.0, 3, 3.0),  # action 3 is due exactly now: still allowed without margin
    ],
)
def test_stale_actions_are_dropped_at_each_latency(latency, margin, n_stale, first_value):
    engine, clock = make(margin=margin)
    t_obs = 1.0
    report = arrive(engine, clock, joint_chunk(list(range(8))), t_obs, t_obs + latency)
    assert report.accepted
    assert report.delay == pytest.approx(latency)
    assert (report.stale_dropped, report.used) == (n_stale, 8 - n_stale)
    assert engine.stats.stale_actions_dropped == n_stale
    # The first usable action is held until it is due, then the plan is followed.
    assert value(engine, t_obs + latency) == pytest.approx(first_value)
    assert value(engine, t_obs + first_value * DT) == pytest.approx(first_value)
    assert value(engine, t_obs + (first_value + 0.5) * DT) == pytest.approx(first_value + 0.5)


def test_whole_stale_chunk_is_reported_and_the_plan_continues():
    engine, clock = make()
    arrive(engine, clock, joint_chunk(list(range(16))), 0.875, 0.9)  # plan until 2.75
    report = arrive(engine, clock, joint_chunk([50 + i for i in range(8)]), 1.0, 2.0)
    # Its last action was due at 1.875 < 2.0 + margin: nothing left to use.
    assert report.status == "stale" and not report.accepted
    assert (report.stale_dropped, report.used) == (8, 0)
    stats = engine.stats
    assert (stats.stale_chunks, stats.chunks_accepted) == (1, 1)
    assert stats.stale_actions_dropped == 1 + 8
    # Still the first chunk: value (t - 0.875) / 0.125.
    assert value(engine, 2.0) == pytest.approx(9.0)
    assert value(engine, 2.0625) == pytest.approx(9.5)


def test_chunk_from_the_future_is_refused_and_reset_recovers_from_a_clock_jump():
    engine, clock = make()
    arrive(engine, clock, joint_chunk(list(range(8))), 5.0, 5.05)
    # The simulation was reset and its clock restarted: stamps from before 5.0 are "old"...
    report = arrive(engine, clock, joint_chunk([1.0] * 8), 0.5, 5.1)
    assert report.status == "out_of_order"
    # ...and a stamp after the engine's clock is no latency at all: refused, not measured.
    report = arrive(engine, clock, joint_chunk([1.0] * 8), 6.0, 5.2)
    assert report.status == "future" and report.delay == pytest.approx(-0.8)
    assert engine.stats.future_chunks == 1
    assert engine.stats.latency_max_s == pytest.approx(0.05)  # neither is a latency
    engine.reset()
    assert arrive(engine, clock, joint_chunk([1.0] * 8), 5.2, 5.25).accepted


def test_out_of_order_chunk_is_ignored():
    engine, clock = make()
    arrive(engine, clock, joint_chunk(list(range(8))), 0.5, 0.55)
    report = arrive(engine, clock, joint_chunk([90.0] * 8), 0.25, 0.6)
    assert report.status == "out_of_order"
    assert engine.stats.out_of_order_chunks == 1
    assert value(engine, 0.75) == pytest.approx(2.0)


def test_plan_run_out_returns_none_and_is_counted_once():
    engine, clock = make()
    assert engine.command(0.0) is None  # no chunk yet: not a run-out
    arrive(engine, clock, joint_chunk(list(range(8))), 0.0, 0.05)
    assert value(engine, 0.875) == pytest.approx(7.0)
    assert engine.command(0.88) is None
    assert engine.command(0.9) is None
    assert engine.stats.run_outs == 1
    arrive(engine, clock, joint_chunk([10 + i for i in range(8)]), 0.9, 0.95)
    assert engine.command(0.95) is not None
    assert engine.command(2.0) is None
    assert engine.stats.run_outs == 2


# --- the four modes at a chunk boundary -------------------------------------------------------
# Chunk A: t_obs 0, actions 0..7, arrives at 0.05 (A0 stale): A(t) = t / 0.125 from 0.125 on.
# Chunk B: t_obs 0.5, actions 10..17, arrives at 0.55 (B0 stale): B_i due at 0.5 + 0.125 i.
# At the switch (0.55) every mode starts from A(0.55) = 4.4: the command does not jump.


def test_replace_mode_switches_to_the_new_chunk():
    engine, clock = make("replace")
    arrive(engine, clock, joint_chunk(list(range(8))), 0.0, 0.05)
    assert value(engine, 0.3) == pytest.approx(2.4)
    report = arrive(engine, clock, joint_chunk([10 + i for i in range(8)]), 0.5, 0.55)
    assert (report.stale_dropped, report.used) == (1, 7)
    expected = {0.55: 4.4, 0.5875: (4.4 + 11) / 2, 0.625: 11, 0.6875: 11.5, 0.75: 12, 1.375: 17}
    for t, v in expected.items():
        assert value(engine, t) == pytest.approx(v), t
    assert engine.command(1.4) is None


def test_aggregate_mode_blends_overlapping_steps():
    engine, clock = make("aggregate", aggregate_old_weight=0.3)
    arrive(engine, clock, joint_chunk(list(range(8))), 0.0, 0.05)
    arrive(engine, clock, joint_chunk([10 + i for i in range(8)]), 0.5, 0.55)
    # Overlap (A ends at 0.875): 0.3 * A + 0.7 * B; after it, B alone.
    expected = {
        0.55: 4.4,
        0.625: 0.3 * 5 + 0.7 * 11,  # 9.2
        0.75: 0.3 * 6 + 0.7 * 12,  # 10.2
        0.875: 0.3 * 7 + 0.7 * 13,  # 11.2
        1.0: 14,
        1.125: 15,
        0.5875: (4.4 + 9.2) / 2,
    }
    for t, v in expected.items():
        assert value(engine, t) == pytest.approx(v), t


def test_temporal_ensemble_weights_oldest_prediction_first():
    m = 0.5
    engine, clock = make("temporal_ensemble", ensemble_decay=m)
    b = math.exp(-m)  # weight of the second-oldest prediction of a step
    arrive(engine, clock, joint_chunk(list(range(8))), 0.0, 0.05)
    arrive(engine, clock, joint_chunk([10 + i for i in range(8)]), 0.5, 0.55)
    v075 = (6 + 12 * b) / (1 + b)
    v0875 = (7 + 13 * b) / (1 + b)
    assert value(engine, 0.625) == pytest.approx((5 + 11 * b) / (1 + b))
    assert value(engine, 0.75) == pytest.approx(v075)
    assert value(engine, 0.875) == pytest.approx(v0875)
    assert value(engine, 1.0) == pytest.approx(14)  # only B predicted it
    before = v075 + 0.4 * (v0875 - v075)  # the plan at 0.8, before C arrives

    # Chunk C: t_obs 0.75, actions 20..27, arrives at 0.8 (C0 stale).
    arrive(engine, clock, joint_chunk([20 + i for i in range(8)]), 0.75, 0.8)
    assert value(engine, 0.8) == pytest.approx(before)
    # 0.875: A (7), B (13), C (21) with weights 1, e^-m, e^-2m.
    assert value(engine, 0.875) == pytest.approx((7 + 13 * b + 21 * b * b) / (1 + b + b * b))
    # 1.0: A has no prediction, so B is now the oldest (weight 1) and C second (e^-m).
    assert value(engine, 1.0) == pytest.approx((14 + 22 * b) / (1 + b))
    assert value(engine, 1.5) == pytest.approx(26)  # only C reaches that far


def test_rtc_skips_the_actions_that_ran_during_inference():
    engine, clock = make("rtc")
    assert engine.rtc_prefix(0.0) is None  # nothing committed before the first chunk
    # A arrives 0.2 s late: A0 and A1 are stale, the plan is A2..A7 at 0.25..0.875.
    report = arrive(engine, clock, joint_chunk(list(range(8))), 0.0, 0.2)
    assert report.stale_dropped == 2

    prefix = engine.rtc_prefix(0.5)
    assert prefix is not None
    # d = ceil((max delay 0.2 + margin 0.01) / 0.125) = ceil(1.68) = 2.
    assert prefix.delay_steps == 2
    # The plan covers 0.5, 0.625, 0.75, 0.875 of the new grid: 4 of 8, so s = 4.
    assert prefix.execution_horizon == 4
    np.testing.assert_allclose(prefix.actions[:, 0], [4, 5, 6, 7, 7, 7, 7, 7])
    f = [c * (math.exp(c) - 1) / (math.e - 1) for c in (2 / 3, 1 / 3)]
    np.testing.assert_allclose(prefix.weights, [1, 1, f[0], f[1], 0, 0, 0, 0])

    # B arrives at 0.55: B0 is stale; B1 (due 0.625) is fresh but runs during inference, so the
    # committed A at 0.625 (5) is kept; B2.. are used.
    report = arrive(engine, clock, joint_chunk([10 + i for i in range(8)]), 0.5, 0.55)
    assert (report.stale_dropped, report.rtc_skipped, report.used) == (1, 1, 6)
    assert engine.stats.rtc_actions_skipped == 1
    expected = {0.55: 4.4, 0.5875: (4.4 + 5) / 2, 0.625: 5, 0.6875: 8.5, 0.75: 12, 1.375: 17}
    for t, v in expected.items():
        assert value(engine, t) == pytest.approx(v), t


def test_rtc_skips_the_d_it_handed_out():
    engine, clock = make("rtc")
    arrive(engine, clock, joint_chunk(list(range(8))), 0.0, 0.2)
    prefix = engine.rtc_prefix(0.5)
    assert prefix is not None and prefix.delay_steps == 2
    # A lost request's chunk turns up in between, 0.45 s late and stale; its delay makes the
    # estimate ceil((0.45 + 0.01) / 0.125) = 4, which would skip B1..B3.
    assert arrive(engine, clock, joint_chunk([0.0, 0.0], 2), 0.0, 0.45).status == "stale"
    report = arrive(engine, clock, joint_chunk([10 + i for i in range(8)]), 0.5, 0.55)
    assert (report.stale_dropped, report.rtc_skipped) == (1, 1)


def test_rtc_without_a_prefix_estimates_d_from_the_delays():
    engine, clock = make("rtc")
    arrive(engine, clock, joint_chunk(list(range(8))), 0.0, 0.2)
    report = arrive(engine, clock, joint_chunk([10 + i for i in range(8)]), 0.5, 0.55)
    assert (report.stale_dropped, report.rtc_skipped) == (1, 1)
    assert value(engine, 0.625) == pytest.approx(5)


@pytest.mark.parametrize(
    ("d", "s", "horizon", "expected_c"),
    [
        # c = (H - s - i) / (H - s - d + 1) for d <= i < H - s, W = c (e^c - 1) / (e - 1).
        (2, 4, 10, [None, None, 4 / 5, 3 / 5, 2 / 5, 1 / 5, 0, 0, 0, 0]),
        (0, 5, 8, [3 / 4, 2 / 4, 1 / 4, 0, 0, 0, 0, 0]),
        (5, 6, 8, [None, None, 0, 0, 0, 0, 0, 0]),  # d > H - s: H - s wins
    ],
)
def test_rtc_prefix_weights(d, s, horizon, expected_c):
    expected = [1.0 if c is None else c * (math.exp(c) - 1) / (math.e - 1) for c in expected_c]
    np.testing.assert_allclose(rtc_prefix_weights(d, s, horizon), expected, atol=1e-12)


@pytest.mark.parametrize(
    ("mode", "overrides", "new_weight", "angle"),
    [
        # Chordal mean of I (0.3) and Rz(90) (0.7): the xy block sums to [[0.3, -0.7], [0.7, 0.3]],
        # whose nearest rotation turns by atan2(0.7, 0.3).
        ("aggregate", {"aggregate_old_weight": 0.3}, 0.7, math.atan2(0.7, 0.3)),
        # Plain mean (m = 0) of two predictions: halfway, 45 degrees.
        ("temporal_ensemble", {"ensemble_decay": 0.0}, 0.5, math.pi / 4),
    ],
)
def test_modes_blend_end_effector_rotations_on_so3(mode, overrides, new_weight, angle):
    engine, clock = make(mode, action_space="ee", **overrides)
    n = 8
    old = ee_actions(np.zeros((n, 3)), np.stack([np.eye(3)] * n), np.zeros(n))
    new = ee_actions(np.ones((n, 3)), np.stack([rotz(math.pi / 2)] * n), np.ones(n))
    arrive(engine, clock, ActionChunk.from_actions(old, 4, DT), 0.0, 0.05)
    arrive(engine, clock, ActionChunk.from_actions(new, 4, DT), 0.5, 0.55)
    command = engine.command(0.75)  # both chunks predicted this step
    assert command is not None
    np.testing.assert_allclose(command[3:9], rot6d_from_matrix(rotz(angle)), atol=1e-12)
    np.testing.assert_allclose(command[:3], [new_weight] * 3)
    assert command[9] == pytest.approx(new_weight)
    # Between waypoints too, the command is a rotation.
    rows = engine.command(0.8)[3:9].reshape(2, 3)
    np.testing.assert_allclose(rows @ rows.T, np.eye(2), atol=1e-12)


def test_blend_actions_weights_and_validation():
    rotations = np.stack([np.eye(3), rotz(math.pi / 2)])[:, None]
    actions = ee_actions(np.array([[0.0, 0, 0], [2.0, 0, 0]]), rotations[:, 0], np.array([0, 1.0]))
    mean = blend_actions(actions[:, None], np.array([[1.0], [1.0]]), "ee")[0]
    np.testing.assert_allclose(mean[3:9], rot6d_from_matrix(rotz(math.pi / 4)), atol=1e-12)
    np.testing.assert_allclose(mean[[0, 9]], [1.0, 0.5])
    with pytest.raises(ValueError, match="positive sum"):
        blend_actions(actions[:, None], np.zeros((2, 1)), "ee")


# --- request timing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "overrides", "expected"),
    [
        # Chunk: t_obs 0, H 16, 8 steps to execute, dt 0.1, delay 0.23; lead = 0.23 + 0.01.
        ("replace", {}, 0.8 - 0.24),  # arrive by the end of the 8 executed steps
        ("aggregate", {}, 0.8 - 0.24),
        ("temporal_ensemble", {}, 0.1),  # one inference per policy step
        ("rtc", {}, 0.8),  # s steps after the observation; d absorbs the delay
        ("replace", {"execution_horizon": 16}, 1.5 - 0.24),  # capped: lead before the plan ends
    ],
)
def test_next_request_time(mode, overrides, expected):
    engine, clock = make(mode, request_margin_s=0.01, **overrides)
    assert engine.next_request_time() == -math.inf
    assert engine.should_request(0.0)
    engine.request_started(0.0)
    assert not engine.should_request(0.01)
    arrive(engine, clock, joint_chunk(list(range(16)), n_action_steps=8, dt=0.1), 0.0, 0.23)
    assert engine.next_request_time() == pytest.approx(expected)
    assert not engine.should_request(expected - 1e-3)
    assert engine.should_request(expected + 1e-9)


@pytest.mark.parametrize(
    ("mode", "overrides"),
    [
        ("replace", {}),
        ("replace", {"execution_horizon": 16}),  # whole chunks: the run-out guard decides
        ("aggregate", {}),
        ("temporal_ensemble", {}),
        ("rtc", {}),
    ],
)
@pytest.mark.parametrize("controller_hz", [125.0, 500.0])
def test_requests_keep_the_plan_alive_with_one_in_flight(mode, overrides, controller_hz):
    """A policy answering with varying latency, ticked at the controller rate for 20 s."""
    latencies = [0.15, 0.23, 0.18, 0.2]
    worst = max(latencies)
    engine, clock = make(mode, request_margin_s=0.01, **overrides)
    period = 1.0 / controller_hz
    pending: tuple[float, float] | None = None  # (t_obs, arrival)
    requests: list[float] = []
    leads: list[float] = []
    for tick in range(int(20 * controller_hz)):
        t = tick * period
        clock.set(t)
        if pending is not None and t >= pending[1]:
            chunk = joint_chunk([float(i) for i in range(16)], n_action_steps=8, dt=0.1)
            assert engine.submit(chunk, pending[0]).accepted
            pending = None
        if engine.should_request(t):
            assert pending is None  # never a second one in flight
            engine.request_started(t)
            if engine.plan is not None:
                leads.append(engine.plan.end - t)
            requests.append(t)
            pending = (t, t + latencies[len(requests) % len(latencies)])
        if t > worst:  # once the first chunk is in, there is always a target
            assert engine.command(t) is not None
    stats = engine.stats
    assert stats.run_outs == 0
    # The measured delay is the latency rounded up to the tick the chunk was handed over at.
    measured = stats.latency_max_s
    assert worst <= measured <= worst + period + 1e-9
    # Every request left at least the worst delay before the plan would run out.
    assert min(leads) >= measured
    # Not more often than needed: the mode's interval, to within a controller tick. The first
    # chunk's delay is already the worst latency, so the lead (delay + 0.01) is between
    # worst + 0.01 and measured + 0.01 from then on.
    intervals = np.diff(requests)
    if mode == "temporal_ensemble":  # one per step (0.1 s), but only one in flight: back to back
        assert intervals.min() >= min(latencies) - 1e-9
        assert intervals.max() <= measured + period + 1e-9
        return
    if overrides:  # the guard: the lead before the plan's end
        assert min(leads) <= measured + 0.01 + period + 1e-9
    executed = 1.5 if overrides else 0.8
    if mode == "rtc":
        shortest, longest = executed, executed + period
    else:
        shortest, longest = executed - measured - 0.01, executed - worst - 0.01 + period
    assert intervals.min() >= shortest - 1e-9
    assert intervals.max() <= longest + 1e-9


def test_a_lost_request_times_out():
    engine, _ = make(request_timeout_s=1.0)
    engine.request_started(0.0)
    with pytest.raises(RuntimeError, match="in flight"):
        engine.request_started(0.5)
    assert not engine.should_request(0.99)
    assert engine.should_request(1.0)
    engine.request_started(1.0)
    assert engine.stats.requests_lost == 1


def test_stats_latency_and_reset():
    engine, clock = make()
    for i, delay in enumerate([0.05, 0.2, 0.1]):
        arrive(engine, clock, joint_chunk(list(range(8))), i * 1.0, i * 1.0 + delay)
    stats = engine.stats
    assert stats.chunks_accepted == 3
    assert stats.latency_p50_s == pytest.approx(0.1)
    assert stats.latency_max_s == pytest.approx(0.2)
    engine.request_started(2.2)
    engine.reset()
    assert engine.plan is None and engine.command(2.2) is None
    assert engine.should_request(2.2)  # no plan, nothing in flight: ask now
    assert engine.stats.chunks_accepted == 3  # counters survive an episode reset


# --- interpolation --------------------------------------------------------------------------


@pytest.mark.parametrize("controller_hz", [125.0, 500.0])
def test_linear_interpolation_is_exact_between_waypoints(controller_hz):
    rng = np.random.default_rng(0)
    times = 2.0 + 0.1 * np.arange(9)
    values = rng.normal(size=(9, 7))
    trajectory = Trajectory(times, values, "joint", "linear")
    ticks = np.arange(1.9, 3.0, 1 / controller_hz)  # starts before and ends after: held
    expected = np.stack([np.interp(ticks, times, values[:, j]) for j in range(7)], axis=1)
    np.testing.assert_allclose(trajectory.sample(ticks), expected, atol=1e-12)
    np.testing.assert_allclose(np.stack([trajectory(t) for t in ticks]), expected, atol=1e-12)


@pytest.mark.parametrize("controller_hz", [125.0, 500.0])
def test_cubic_passes_through_waypoints_and_is_c1(controller_hz):
    times = np.array([0.0, 0.1, 0.2, 0.35, 0.4])  # uneven, as a splice makes them
    joints = np.array([0.0, 1.0, 0.5, 2.0, 2.0])
    gripper = np.array([0.0, 0.0, 1.0, 1.0, 0.0])  # open/close steps
    values = np.concatenate([np.repeat(joints[:, None], 6, axis=1), gripper[:, None]], axis=1)
    trajectory = Trajectory(times, values, "joint", "cubic")
    np.testing.assert_allclose(trajectory.sample(times), values, atol=1e-12)
    # Catmull-Rom tangents at the interior waypoints, by hand; zero at both ends.
    tangents = [0.0, (0.5 - 0.0) / 0.2, (2.0 - 1.0) / 0.25, (2.0 - 0.5) / 0.2, 0.0]
    h = 1e-7
    for t, m in zip(times, tangents, strict=True):
        # Same slope from both sides (held, so zero, outside the ends).
        left = (trajectory(t) - trajectory(t - h))[0] / h
        right = (trajectory(t + h) - trajectory(t))[0] / h
        assert left == pytest.approx(m, abs=1e-4)
        assert right == pytest.approx(m, abs=1e-4)
        assert trajectory.velocity(t)[0] == pytest.approx(m)
    ticks = np.arange(0.0, 0.4, 1 / controller_hz)
    sampled = trajectory.sample(ticks)
    np.testing.assert_allclose(sampled, np.stack([trajectory(t) for t in ticks]), atol=1e-12)

    # C1 at the controller rate: the velocity changes by O(period) from tick to tick (halving
    # with twice the rate), where the linear one jumps by the same amount at any rate.
    def largest_velocity_change(kind: str, hz: float) -> float:
        ts = np.arange(0.0, 0.4, 1 / hz)
        q = Trajectory(times, values, "joint", kind).sample(ts)[:, 0]
        return float(np.abs(np.diff(np.diff(q) * hz)).max())

    cubic_ratio = largest_velocity_change("cubic", 2 * controller_hz) / largest_velocity_change(
        "cubic", controller_hz
    )
    linear_ratio = largest_velocity_change("linear", 2 * controller_hz) / largest_velocity_change(
        "linear", controller_hz
    )
    assert cubic_ratio < 0.6
    assert linear_ratio == pytest.approx(1.0)
    # The gripper stays linear: no overshoot outside [0, 1].
    assert sampled[:, 6].min() >= 0.0 and sampled[:, 6].max() <= 1.0
    np.testing.assert_allclose(trajectory(0.25)[6], 1.0)


def test_cubic_start_velocity_and_engine_splice_are_c1():
    trajectory = Trajectory(
        np.array([0.0, 0.1]), np.zeros((2, 7)), "joint", "cubic", start_velocity=np.full(7, 2.0)
    )
    np.testing.assert_allclose(trajectory.velocity(0.0), [2, 2, 2, 2, 2, 2, 0])
    engine, clock = make(interpolation="cubic")
    arrive(engine, clock, joint_chunk([0, 1, 3, 6, 10, 15, 21, 28]), 0.0, 0.05)
    before = engine.plan
    assert before is not None
    arrive(engine, clock, joint_chunk([5, 3, 2, 1, 0, 0, 0, 0]), 0.375, 0.42)
    after = engine.plan
    assert after is not None
    np.testing.assert_allclose(after(0.42), before(0.42), atol=1e-12)
    np.testing.assert_allclose(after.velocity(0.42)[:6], before.velocity(0.42)[:6], atol=1e-9)


@pytest.mark.parametrize("controller_hz", [125.0, 500.0])
def test_slerp_keeps_unit_rotations_and_hits_the_midpoint(controller_hz):
    positions = np.array([[0.0, 0.0, 0.0], [0.2, -0.4, 0.1]])
    rotations = np.stack([np.eye(3), rotz(math.pi / 2)])
    values = ee_actions(positions, rotations, np.array([0.0, 1.0]))
    trajectory = Trajectory(np.array([0.0, 0.1]), values, "ee")
    ticks = np.arange(-0.02, 0.12, 1 / controller_hz)
    for command in trajectory.sample(ticks):
        rows = command[3:9].reshape(2, 3)
        np.testing.assert_allclose(rows @ rows.T, np.eye(2), atol=1e-12)
    half = math.sqrt(0.5)  # Rz(45 degrees): cos = sin = sqrt(1/2)
    mid = trajectory(0.05)
    np.testing.assert_allclose(mid[3:9], [half, -half, 0, half, half, 0], atol=1e-12)
    np.testing.assert_allclose(mid[:3], [0.1, -0.2, 0.05])
    assert mid[9] == pytest.approx(0.5)
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    np.testing.assert_allclose(trajectory(0.025)[3:9], [c, -s, 0, s, c, 0], atol=1e-12)
    np.testing.assert_allclose(trajectory.sample(np.array([0.05]))[0], mid, atol=1e-12)
    # Held outside the waypoints.
    np.testing.assert_allclose(trajectory(-1.0), values[0])
    np.testing.assert_allclose(trajectory(1.0)[3:9], values[1, 3:9], atol=1e-12)


def test_slerp_takes_the_short_way():
    rotations = np.stack([rotz(math.radians(170)), rotz(math.radians(-170))])
    values = ee_actions(np.zeros((2, 3)), rotations, np.zeros(2))
    trajectory = Trajectory(np.array([0.0, 1.0]), values, "ee")
    # 20 degrees through 180, not 340 through 0.
    for command in (trajectory(0.5), trajectory.sample(np.array([0.5]))[0]):
        np.testing.assert_allclose(command[3:9], [-1, 0, 0, 0, -1, 0], atol=1e-12)


def test_quaternion_round_trip_including_half_turns():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(200, 4))
    rotations = np.concatenate(
        [
            matrix_from_quaternion(q),
            np.diag([1.0, -1, -1])[None],  # half turns about x, y, z
            np.diag([-1.0, 1, -1])[None],
            np.diag([-1.0, -1, 1])[None],
        ]
    )
    quats = quaternion_from_matrix(rotations)
    np.testing.assert_allclose(np.linalg.norm(quats, axis=1), 1.0)
    assert np.all(quats[:, 0] >= 0)
    np.testing.assert_allclose(matrix_from_quaternion(quats), rotations, atol=1e-12)
    np.testing.assert_allclose(matrix_from_rot6d(rot6d_from_matrix(rotations)), rotations)


# --- configuration and input errors ---------------------------------------------------------


def test_config_rejects_unknown_fields_and_cubic_poses():
    with pytest.raises(ValidationError, match="latency_margin"):
        ExecutionConfig(latency_margin=0.01)
    with pytest.raises(ValidationError, match="interpolation='cubic'"):
        ExecutionConfig(action_space="ee", interpolation="cubic")
    with pytest.raises(ValidationError, match="aggregate_old_weight"):
        ExecutionConfig(aggregate_old_weight=1.5)


@pytest.mark.parametrize(
    ("actions", "detail"),
    [
        (np.zeros((8, 10)), r"actions must be \(n, 7\) for action_space='joint', got \(8, 10\)"),
        (np.zeros((2, 8, 7)), r"actions must be \(n, 7\).*got \(2, 8, 7\)"),
        (np.where(np.eye(8, 7) > 0, np.nan, 0.0), r"actions\[0, 0\] is nan"),
        (np.full((8, 7), np.inf), r"actions\[0, 0\] is inf"),
    ],
)
def test_bad_chunks_are_refused_without_raising_and_end_the_request(actions, detail):
    """A bad chunk is counted and reported; the request it answered is over, so the next
    request starts at once (not after ``request_timeout_s``) and a good chunk is taken."""
    engine, clock = make()
    clock.set(1.0)
    engine.request_started(0.9)
    chunk = ActionChunk(actions, np.arange(actions.shape[-2]) * DT, 4, DT)
    report = engine.submit(chunk, 0.9)
    assert report.status == "invalid" and re.search(detail, report.detail)
    assert engine.stats.invalid_chunks == 1 and engine.plan is None
    assert engine.should_request(1.0)
    engine.request_started(1.0)
    assert engine.submit(joint_chunk(list(range(8))), 1.0).accepted


def test_bad_stamps_and_rotations_are_refused():
    engine, clock = make()
    clock.set(1.0)
    stamps = np.array([0.0, 0.1, 0.1, 0.3])
    report = engine.submit(ActionChunk(np.zeros((4, 7)), stamps, 2, DT), 0.9)
    assert report.status == "invalid" and report.detail == "stamps must be finite and increasing"
    assert engine.submit(joint_chunk([0.0] * 4), float("nan")).detail == "t_obs is nan"
    ee_engine, ee_clock = make(action_space="ee")
    ee_clock.set(1.0)
    degenerate = np.zeros((4, 10))
    degenerate[:, 3] = 1.0  # the second row of the 6D rotation is zero
    report = ee_engine.submit(ActionChunk.from_actions(degenerate, 2, DT), 0.9)
    assert report.status == "invalid" and report.detail == "actions[0] has no valid rotation"
    with pytest.raises(ValueError, match="mode='rtc'"):
        engine.rtc_prefix(1.0)


def test_clocks():
    clock = FakeClock(start=2.0)
    assert clock.advance(0.5) == 2.5
    clock.set(3.0)
    assert clock.now() == 3.0
    with pytest.raises(ValueError, match="never goes back"):
        clock.set(2.9)
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(-0.1)
    monotonic = MonotonicClock()
    assert monotonic.now() <= monotonic.now()
