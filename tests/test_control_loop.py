"""The control loop of policy_runtime.execution: real-time step limits, the supervisor, following
the measured arm, and every bad input held and counted, never raised.

Deterministic: a fake clock, nothing sleeps. The loop runs a 100 Hz controller (DT = 10 ms)
with the default limits (v = pi/2 rad/s, a = 10 rad/s^2: the velocity changes by at most
a DT = 0.1 rad/s per full tick); every expected number is worked out in the comments. Chunks
go through the real engine: a straight line on the shoulder pan, offset 0 (action 0 due at the
observation), so the target at ``t`` is ``start + speed * (t - t_obs)``.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from policy_runtime.execution import (
    ActionChunk,
    ControlLoop,
    ExecutorConfig,
    FakeClock,
    JointCommand,
    LoopConfig,
    SafetyLimits,
    Supervisor,
    WatchdogConfig,
)
from policy_runtime.execution.kinematics import EeToJoint
from policy_runtime.robots.poses import rot6d_from_matrix

DT = 0.01
V_MAX = np.pi / 2
ACCEL = 10.0
A_DT = ACCEL * DT
HOME_Q = np.array([0.0, -1.9, 1.9, -1.571, -1.571, 0.0])
PAN = np.eye(6)[0]
SLACK = 1e-9
REPO = Path(__file__).resolve().parents[1]


def line(speed: float, start: np.ndarray = HOME_Q, seconds: float = 20.0) -> np.ndarray:
    """Joint actions (n, 7) every 0.1 s: the shoulder pan moving at ``speed`` rad/s, gripper 0.5."""
    steps = np.arange(int(seconds / 0.1) + 1)[:, None]
    return np.hstack([start + speed * 0.1 * steps * PAN, np.full((len(steps), 1), 0.5)])


def chunk(actions: np.ndarray) -> ActionChunk:
    return ActionChunk.from_actions(np.asarray(actions, dtype=np.float64), 8, 0.1)


#: A workspace box the shoulder pan's lines stay inside (the default box is the table cell's,
#: which a pan of ~0.7 rad leaves: its own tests are the end-effector ones below).
WIDE_BOX = {"workspace_min_m": (-2.0, -2.0, -2.0), "workspace_max_m": (2.0, 2.0, 2.0)}


class Rig:
    """A loop on a fake clock and an arm that follows its commands exactly (unless told)."""

    def __init__(
        self,
        action_space: str = "joint",
        *,
        loop: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        watchdog: dict[str, Any] | None = None,
        clock: Any = None,
    ) -> None:
        self.clock = clock or FakeClock(0.0)
        config = ExecutorConfig(
            # No latency margin: a chunk's action 0, due at its observation, is the first
            # target, so the target is exactly the line from the start.
            execution={"latency_margin_s": 0.0},
            loop=LoopConfig(controller_hz=1.0 / DT, **(loop or {})),
            limits=SafetyLimits(**(WIDE_BOX if limits is None else limits)),
            # Long chunks in these tests: the plan's age is tested on its own.
            watchdog=WatchdogConfig(**{"max_chunk_age_s": 100.0, **(watchdog or {})}),
        )
        self.loop: ControlLoop = config.build(self.clock, action_space)  # type: ignore[arg-type]
        self.q = HOME_Q.copy()  # the measured arm
        self.blocked = False
        self._encoder = np.random.default_rng(0)

    def tick(self, t: float, *, observe: bool = True, **measurement: Any) -> JointCommand | None:
        """A tick at ``t`` with a fresh observation; the measured joints are the arm's (or
        ``q=``, with ``stamp=``); an unblocked arm then moves to the command."""
        if math.isfinite(t) and (t > self.clock.now() or not isinstance(self.clock, FakeClock)):
            self.clock.set(t)
        if observe and math.isfinite(t):
            self.loop.observation_received(t)
        q = measurement.get("q", self.q)
        if self.blocked and "q" not in measurement:
            # A real encoder is never bit for bit still: a blocked arm reads a little noise
            # (a feed that repeats one value exactly is a frozen feed).
            q = q + self._encoder.normal(scale=1e-6, size=6)
        command = self.loop.tick(t, q, measurement.get("stamp", t))
        if command is not None and not self.blocked and "q" not in measurement:
            self.q = command.q.copy()
        return command

    def run(self, ticks: range | list[float], **kwargs: Any) -> list[JointCommand]:
        times = [k * DT for k in ticks] if isinstance(ticks, range) else ticks
        commands = [self.tick(t, **kwargs) for t in times]
        assert all(c is not None for c in commands)
        return commands  # type: ignore[return-value]

    def begin(self) -> None:
        """A first sample (only an anchor: nothing is commanded until the next one agrees),
        then the first tick at 0: at rest, waiting for a chunk."""
        assert self.tick(-DT) is None
        first = self.tick(0.0)
        assert first is not None and first.reasons == ("resuming",) and first.state == "resuming"

    def start(self, speed: float = 0.5) -> None:
        """:meth:`begin`, then a chunk observed at 0 is taken."""
        self.begin()
        report = self.loop.submit(chunk(line(speed)), 0.0)
        assert report.accepted, report
        assert self.loop.state == "running"


def real_time_limits(commands: list[JointCommand]) -> tuple[float, float]:
    """The largest joint speed and acceleration of the commands actually sent (repeats are
    the same command), per second of real time between them."""
    sent = [c for c in commands if not c.repeat]
    t = np.array([c.t for c in sent])
    q = np.array([c.q for c in sent])
    velocity = np.diff(q, axis=0) / np.diff(t)[:, None]
    acceleration = np.diff(velocity, axis=0) / np.diff(t)[1:, None]
    return float(np.abs(velocity).max()), float(np.abs(acceleration).max())


# -- limits per second of real time ----------------------------------------------------------


def test_ticks_at_four_times_the_controller_rate_move_no_faster_per_second():
    """Ticks every 2.5 ms for a 10 ms controller, a target running away at 1.75 rad/s. Granting
    each call a full period, as the loop did, moves at 4 x pi/2 = 6.3 rad/s. Here a tick less
    than half a period after the last command repeats it, so a new step goes out every 5 ms,
    limited over those 5 ms: never faster than pi/2 rad/s nor more than 10 rad/s^2, and the loop
    reports that it ticks at another rate than the controller's."""
    rig = Rig()
    rig.start(speed=1.75)
    commands = rig.run([k * DT / 4 for k in range(1, 401)])  # 1 s
    speed, acceleration = real_time_limits(commands)
    assert speed <= V_MAX * (1 + SLACK) and acceleration <= ACCEL * (1 + SLACK)
    assert [c.repeat for c in commands[:4]] == [True, False, True, False]
    assert rig.loop.counts["tick_too_early"] == 200
    # At the cap for the last half second: pi/2 * 0.5 s of motion, no more.
    half = commands[199].q[0], commands[-1].q[0]
    assert half[1] - half[0] == pytest.approx(V_MAX * 0.5, rel=1e-9)
    stats = rig.loop.tick_stats()
    assert stats.rate_mismatch and stats.rate_mismatch_ticks > 0
    assert stats.interval_p50_s == pytest.approx(DT / 4)

    # A burst of 1000 ticks 1 us apart: one step, then the same command 999 times.
    burst = rig.run([1.01 + k * 1e-6 for k in range(1000)])
    assert all(c.repeat for c in burst[1:]) and not burst[0].repeat
    assert np.abs(burst[-1].q - burst[0].q).max() == 0.0
    assert burst[0].q[0] - commands[-1].q[0] <= V_MAX * DT * (1 + SLACK)
    speed, acceleration = real_time_limits(commands + burst + rig.run([1.02, 1.03]))
    assert speed <= V_MAX * (1 + SLACK) and acceleration <= ACCEL * (1 + SLACK)


def test_a_late_tick_never_licenses_a_longer_step():
    """At the pi/2 rad/s cap, a tick 5 periods late: the controller held the last command for
    4 of those periods, so the arm averaged pi/10 rad/s over them, and the step starts from
    there: (pi/10 + 0.1) rad/s * 10 ms = 4.14 mrad, where granting the late tick its whole
    50 ms would have stepped 5 * 15.7 mrad. The next tick accelerates by 0.1 rad/s again."""
    rig = Rig()
    rig.start(speed=1.75)
    commands = rig.run(range(1, 101))
    assert commands[-1].velocity[0] == pytest.approx(V_MAX)
    late = rig.tick(1.05)
    assert late is not None and not late.hold
    assert late.q[0] - commands[-1].q[0] == pytest.approx((np.pi / 10 + A_DT) * DT, rel=1e-9)
    following = rig.tick(1.06)
    assert following is not None
    assert following.q[0] - late.q[0] == pytest.approx((np.pi / 10 + 2 * A_DT) * DT, rel=1e-9)
    assert rig.loop.tick_stats().late_ticks == 1


# -- following the measured arm -----------------------------------------------------------


def test_a_gap_the_servo_lag_cannot_explain_holds_re_anchors_and_waits_for_a_fresh_chunk():
    """At 0.5 rad/s the servo lag explains 0.02 + 0.1 * 0.5 = 0.07 rad. The arm is knocked
    0.1 rad back and stays there. The first such sample is not believed (10 rad/s is no arm's
    motion: more than pi rad/s over 10 ms plus 0.05 rad), the next one is: the loop drops the
    plan (following it now would race to catch up) and decelerates, 0.1 rad/s a tick; at rest
    for the servo lag's 0.1 s it re-anchors to the arm, and a fresh chunk from there resumes."""
    rig = Rig()
    rig.start(speed=0.5)
    rig.run(range(1, 51))
    knocked = rig.q - 0.1 * PAN
    rig.q, rig.blocked = knocked, True
    holding = rig.run(range(51, 56))
    assert [c.reasons for c in holding] == [
        ("invalid_measurement",),
        ("tracking_lag",),
        ("resuming",),
        ("resuming",),
        ("resuming",),
    ]
    np.testing.assert_allclose([c.velocity[0] for c in holding], [0.4, 0.3, 0.2, 0.1, 0.0])
    assert rig.loop.state == "resuming" and rig.loop.engine.plan is None
    at_rest = rig.run(range(56, 66))
    assert all(np.array_equal(c.q, holding[-1].q) for c in at_rest[:-1])  # 0.1 s at rest
    np.testing.assert_allclose(at_rest[-1].q, knocked, atol=1e-5)  # then where the arm is
    assert rig.loop.counts["resync"] == 1
    rig.blocked = False
    assert rig.loop.submit(chunk(line(0.5, start=rig.q)), 0.65).accepted
    resumed = rig.run(range(66, 70))
    assert not any(c.hold for c in resumed)
    assert resumed[0].q[0] - at_rest[-1].q[0] == pytest.approx(A_DT * DT)  # from rest


def test_an_arm_that_keeps_lagging_latches_a_stop_and_resumes_from_where_it_is():
    """A driver that stopped forwarding commands (fresh joint states, an arm that does not move):
    each fresh chunk sets the commands off again, the gap outgrows what the servo lag explains,
    the loop holds and re-anchors. The third time within 5 s it latches a tracking stop instead
    of pushing again; its commands come to rest and then are the measured joints; once the
    driver follows again and the operator resets, a fresh chunk starts one acceleration step
    from them."""
    rig = Rig()
    rig.start(speed=0.5)
    rig.blocked = True  # the arm stays at home
    k, starts = 1, 0
    while rig.loop.state != "stopped" and k < 300:
        t = k * DT
        command = rig.tick(t)
        assert command is not None
        assert np.abs(command.q - rig.q).max() < 0.1  # never far ahead of the arm
        if rig.loop.state == "resuming" and np.abs(command.q - rig.q).max() < 1e-4:
            assert rig.loop.submit(chunk(line(0.5, start=rig.q)), t).accepted
            starts += 1
        k += 1
    assert rig.loop.state == "stopped" and starts == 2
    transition = rig.loop.supervisor.last_transition
    assert transition is not None and transition.reasons == ("tracking_error",)
    stopped = rig.run(range(k, k + 30))
    assert stopped[0].reasons == ("tracking_error",)
    assert all(c.state == "stopped" for c in stopped)
    np.testing.assert_allclose(stopped[-1].q, HOME_Q, atol=1e-5)  # at rest: where the arm is
    rig.blocked = False  # the driver follows again: still stopped (latched)
    assert rig.run(range(k + 30, k + 33))[-1].state == "stopped"
    assert rig.loop.reset().ok
    t = (k + 32) * DT
    assert rig.loop.submit(chunk(line(0.5)), t).accepted
    first = rig.tick(t + DT)
    assert first is not None and not first.hold
    assert np.abs(first.q - rig.q).max() <= V_MAX * DT + 1e-5


def test_a_jump_in_the_measured_joints_latches_a_tracking_stop_after_three_samples():
    """The measured joints jump 0.25 rad away and stay there (a protective stop moved the arm,
    a driver reporting another arm). The jump itself is not believed (one sample); the next
    sample drops the plan (a lag), and the third fresh sample more than 0.2 rad from the
    commands latches a stop. The commands decelerate within the limits, and at rest they go
    where the arm is."""
    rig = Rig()
    rig.start(speed=0.5)
    moving = rig.run(range(1, 31))
    away = rig.q - 0.25 * PAN
    rig.q, rig.blocked = away, True
    commands = rig.run(range(31, 60))
    assert commands[0].reasons == ("invalid_measurement",)
    assert commands[1].reasons == ("tracking_lag",)
    first_stop = next(i for i, c in enumerate(commands) if c.state == "stopped")
    assert first_stop == 3 and commands[first_stop].reasons == ("tracking_error",)
    assert rig.loop.engine.plan is None
    before_resync = [c for c in commands if not np.allclose(c.q, away, atol=1e-5)]
    speed, acceleration = real_time_limits(moving + before_resync)
    assert speed <= V_MAX * (1 + SLACK) and acceleration <= ACCEL * (1 + SLACK)
    np.testing.assert_allclose(commands[-1].q, away, atol=1e-5)


def test_stale_or_corrupt_samples_are_never_commanded():
    """A frozen feed (the same sample and stamp) while the arm moves on, a NaN feed, and one
    sample in degrees: the loop holds, decelerating within the limits, and never re-anchors to
    (or jumps toward) a sample it cannot trust."""
    for bad in ("frozen", "nan", "degrees"):
        rig = Rig()
        rig.start(speed=1.5)
        moving = rig.run(range(1, 31))
        q_frozen = rig.q.copy()
        commands = []
        for k in range(31, 80):
            t = k * DT
            if bad == "frozen":
                command = rig.tick(t, q=q_frozen, stamp=0.30)
            elif bad == "nan":
                command = rig.tick(t, q=np.full(6, np.nan))
            else:
                command = rig.tick(t, q=np.degrees(rig.q) if k == 31 else rig.q)
            assert command is not None
            rig.q = command.q.copy()  # the arm is where it is commanded
            commands.append(command)
        speed, acceleration = real_time_limits(moving + commands)
        assert speed <= V_MAX * (1 + SLACK) and acceleration <= ACCEL * (1 + SLACK), bad
        assert rig.loop.counts["resync"] == 0, bad
        assert np.abs(np.array([c.q for c in commands])).max() < 2 * np.pi, bad


# -- the supervisor -----------------------------------------------------------------------


def test_estop_reset_and_resume_from_the_measured_pose():
    """E-stop mid-motion at 0.5 rad/s: the commands decelerate by 0.1 rad/s a tick to rest and
    the plan is dropped. A reset is refused while the input is active; releasing it keeps the
    stop latched; after the reset, nothing moves until a fresh chunk (observed after the reset)
    that starts near the arm, and the motion then starts from the measured joints."""
    rig = Rig()
    rig.start(speed=0.5)
    rig.run(range(1, 31))
    rig.loop.set_estop(True)
    stopping = rig.run(range(31, 40))
    assert all(c.state == "stopped" and c.reasons == ("estop",) for c in stopping)
    np.testing.assert_allclose(
        [c.velocity[0] for c in stopping[:6]], [0.4, 0.3, 0.2, 0.1, 0.0, 0.0], atol=1e-9
    )
    assert rig.loop.engine.plan is None
    refused = rig.loop.reset()
    assert not refused.ok and "e-stop input is still active" in refused.reason
    rig.loop.set_estop(False)
    latched = rig.run(range(40, 43))
    assert all(c.state == "stopped" for c in latched)
    at_rest = latched[-1].q

    assert rig.loop.reset().ok and rig.loop.state == "resuming"
    # The operator moved the arm 0.03 rad while it was stopped: three samples agree, and the
    # commands, at rest for longer than the servo lag, go to it.
    nudged = at_rest + 0.03 * PAN
    rig.q, rig.blocked = nudged, True
    waiting = rig.run(range(43, 50))
    assert all(c.hold and c.reasons == ("resuming",) for c in waiting)
    assert [np.array_equal(c.q, at_rest) for c in waiting] == [True, True] + [False] * 5
    assert all(np.allclose(c.q, nudged, atol=1e-5) for c in waiting[2:])  # no motion else
    stale = rig.loop.submit(chunk(line(0.5, start=rig.q)), 0.41)
    assert stale.status == "not_fresh" and "before the resume began" in stale.detail
    far = rig.loop.submit(chunk(line(0.5, start=rig.q + 0.5 * PAN)), 0.49)
    assert far.status == "far_from_arm"
    assert "0.500 rad from the arm on shoulder_pan_joint" in far.detail
    assert rig.loop.engine.should_request(0.49)  # each refusal ended its request
    assert rig.loop.submit(chunk(line(0.5, start=rig.q)), 0.49).accepted
    rig.blocked = False
    first = rig.tick(0.50)
    assert first is not None and not first.hold and first.state == "running"
    # From the measured joints at rest: one tick at 0.1 rad/s.
    np.testing.assert_allclose(first.q, nudged + A_DT * DT * PAN, atol=1e-5)
    counts = rig.loop.counts
    assert (counts["chunk_not_fresh"], counts["chunk_far_from_arm"]) == (1, 1)
    assert rig.loop.supervisor.entries["stopped"] == 1


def test_stale_observations_hold_drop_the_plan_and_need_a_fresh_chunk():
    """Observations stop at t = 0.3; with a 0.305 s limit the first stale tick is t = 0.61. The
    arm at 0.5 rad/s decelerates to rest in 0.05 s; the plan is dropped, so fresh observations
    alone do not move it: a chunk observed after they came back does."""
    rig = Rig(watchdog={"max_observation_age_s": 0.305})
    rig.start(speed=0.5)
    rig.run(range(1, 31))
    quiet = rig.run(range(31, 70), observe=False)
    by_tick = {round(c.t / DT): c for c in quiet}
    assert not by_tick[60].hold and by_tick[61].reasons == ("observation_stale",)
    assert by_tick[61].state == "holding" and rig.loop.engine.plan is None
    np.testing.assert_allclose(
        [by_tick[k].velocity[0] for k in range(61, 67)], [0.4, 0.3, 0.2, 0.1, 0.0, 0.0], atol=1e-9
    )
    back = rig.run(range(70, 73))
    assert all(c.reasons == ("resuming",) for c in back)
    assert rig.loop.submit(chunk(line(0.5, start=rig.q)), 0.72).accepted
    assert not rig.run(range(73, 75))[-1].hold


def test_a_frozen_joint_state_feed_holds_within_its_configured_time():
    """The driver keeps handing over the sample stamped 0.3 s (or nothing new): with a limit of
    45 ms the first frozen tick is 0.35 (50 ms on), the loop holds, and a new sample resumes the
    inputs (then a fresh chunk resumes the motion)."""
    rig = Rig(watchdog={"max_joint_state_age_s": 0.045})
    rig.start(speed=0.5)
    rig.run(range(1, 31))
    frozen = rig.run(range(31, 40), q=rig.q.copy(), stamp=0.30)
    by_tick = {round(c.t / DT): c for c in frozen}
    assert not by_tick[34].hold
    assert by_tick[35].reasons == ("joint_states_stale",) and by_tick[35].state == "holding"
    assert rig.loop.counts["joint_states_stale"] == 5
    last = rig.loop.last_command
    assert last is not None
    rig.q = last.q  # the arm followed the commands all along; a new sample says so
    assert rig.tick(0.40) is not None and rig.loop.state == "resuming"


def test_a_feed_repeating_one_sample_with_new_stamps_is_frozen():
    """A driver that lost the arm and republishes its last sample with fresh stamps: while the
    commands move on by more than 0.02 rad, joints that stay bit for bit the same for longer
    than the joint states may be old (50 ms) are a frozen feed, not an arm: hold, never
    re-anchor to them."""
    rig = Rig()
    rig.start(speed=0.5)
    rig.run(range(1, 31))
    cached = rig.q.copy()
    commands = rig.run(range(31, 60), q=cached)
    frozen = [c for c in commands if "joint_states_frozen" in c.reasons]
    assert frozen and frozen[0].state == "holding" and rig.loop.counts["resync"] == 0
    assert not np.allclose(commands[-1].q, cached)


def test_a_single_glitch_at_rest_is_not_commanded():
    """At rest, one sample 0.04 rad off (within the plausibility tolerance) and back: a re-anchor
    needs the arm elsewhere on 3 samples in a row, at rest for the servo lag's 0.1 s."""
    rig = Rig()
    rig.begin()
    rig.run(range(1, 30))
    glitch = rig.tick(0.30, q=HOME_Q + 0.04 * PAN)
    assert glitch is not None
    after = rig.run(range(31, 40))
    assert all(np.array_equal(c.q, HOME_Q) for c in [glitch, *after])
    assert rig.loop.counts["resync"] == 0


def test_a_lagging_servo_does_not_trip_the_lag_check_when_the_commands_stop():
    """An arm that follows its commands 70 ms late (a servoj lookahead past the UR driver's
    default): at the moment the commands stop it is still v * 0.07 s behind them, which the
    bound, taken from the fastest the commands moved over the last 0.1 s, explains."""
    rig = Rig()
    rig.begin()
    move_and_stop = line(1.0, seconds=2.0)
    move_and_stop[6:, 0] = move_and_stop[5, 0]  # 0.5 rad in 0.5 s, then still
    assert rig.loop.submit(chunk(move_and_stop), 0.0).accepted
    history = [HOME_Q.copy()] * 7
    encoder = np.random.default_rng(1)  # a real encoder's noise (identical values: frozen)
    for k in range(1, 150):
        command = rig.tick(k * DT, q=history[-7] + encoder.normal(scale=1e-6, size=6))
        assert command is not None
        history.append(command.q.copy())
    assert rig.loop.counts["tracking_lag"] == 0 and rig.loop.state == "running"


def test_nothing_is_commanded_until_two_samples_agree():
    """A driver's first message all zeros (uninitialised), then the arm at home: the zeros are
    never commanded; the command starts from home once two samples agree."""
    rig = Rig()
    assert rig.tick(-2 * DT, q=np.zeros(6)) is None
    assert rig.tick(-DT) is None  # home: 1.9 rad from the zeros, no arm moves so fast
    first = rig.tick(0.0)
    assert first is not None and np.array_equal(first.q, HOME_Q)


@pytest.mark.parametrize(
    ("measurement", "reason"),
    [
        ({"q": np.full(6, np.nan)}, "invalid_measurement"),
        ({"q": np.zeros(5)}, "invalid_measurement"),
        ({"q": "not joints"}, "invalid_measurement"),
        ({"stamp": float("nan")}, "invalid_measurement"),
    ],
)
def test_bad_measurements_hold_without_raising(measurement: dict[str, Any], reason: str):
    rig = Rig()
    rig.start(speed=0.5)
    before = rig.run(range(1, 21))[-1]
    bad = rig.tick(0.21, **measurement)
    assert bad is not None and bad.hold and bad.reasons == (reason,)
    assert bad.velocity[0] == pytest.approx(before.velocity[0] - A_DT)  # decelerating
    assert rig.loop.counts[reason] == 1 and rig.loop.state == "running"
    assert not rig.run(range(22, 25))[-1].hold  # the next valid sample follows the plan again


def test_bad_times_repeat_the_last_command_without_raising():
    rig = Rig()
    assert rig.loop.tick(float("nan"), HOME_Q, 0.0) is None  # nothing sent yet: nothing to send
    rig.start(speed=0.5)
    last = rig.run(range(1, 5))[-1]
    for t, reason in ((float("nan"), "invalid_time"), (last.t, "time_not_advancing")):
        repeat = rig.tick(t)
        assert repeat is not None and repeat.repeat and repeat.reasons == (reason,)
        np.testing.assert_array_equal(repeat.q, last.q)
    assert rig.loop.tick(0.05, HOME_Q, 0.05) is not None
    assert rig.loop.tick(0.06, HOME_Q, float("inf")) is not None
    assert rig.loop.counts["invalid_time"] == 2 and rig.loop.counts["time_not_advancing"] == 1


@pytest.mark.parametrize(
    ("actions", "detail"),
    [
        (np.where(np.arange(7) == 3, np.nan, line(0.5)[:16]), "actions[0, 3] is nan"),
        (line(0.5)[:16, :5], "actions must be (n, 7) for action_space='joint', got (16, 5)"),
    ],
)
def test_a_bad_chunk_holds_and_the_next_valid_one_is_taken_at_once(
    actions: np.ndarray, detail: str
):
    """A NaN or wrongly shaped chunk: refused with the reason, the plan dropped, the arm
    decelerates; the request it answered is over, so the next one starts at once (not after
    the engine's 1 s request timeout) and a valid chunk resumes the motion."""
    rig = Rig()
    rig.start(speed=0.5)
    rig.run(range(1, 31))
    rig.loop.engine.request_started(0.30)
    report = rig.loop.submit(ActionChunk.from_actions(actions, 8, 0.1), 0.30)
    assert report.status == "invalid" and report.detail == detail
    assert rig.loop.state == "resuming" and rig.loop.engine.plan is None
    held = rig.run(range(31, 34))
    assert all(c.hold and c.reasons == ("resuming",) for c in held)
    np.testing.assert_allclose([c.velocity[0] for c in held], [0.4, 0.3, 0.2], atol=1e-9)
    assert rig.loop.should_request(0.33)
    rig.loop.engine.request_started(0.33)
    assert rig.loop.submit(chunk(line(0.5, start=rig.q)), 0.33).accepted
    assert rig.loop.state == "running" and rig.loop.counts["invalid_chunk"] == 1


def test_an_estop_pulse_between_two_ticks_still_stops():
    rig = Rig()
    rig.start(speed=0.5)
    rig.run(range(1, 11))
    rig.loop.set_estop(True)
    rig.loop.set_estop(False)  # released before the next tick
    command = rig.tick(0.11)
    assert command is not None and command.state == "stopped" and command.reasons == ("estop",)
    assert rig.loop.reset().ok  # released: the reset is taken


def test_a_clock_that_stops_brakes_instead_of_freezing_and_a_clock_reset_starts_over():
    """Repeating the last command for long is a dead stop on the real controller: after two
    repeats a bad time holds, decelerating a period's worth per tick, and drops the plan. One
    tick 10^6 s ahead, then the right time again: more than 0.5 s back is a clock reset, and the
    loop waits for a fresh chunk on the new clock."""

    class SimClock:  # ROS time under /clock: it goes back when the simulation restarts
        def __init__(self) -> None:
            self.t = 0.0

        def now(self) -> float:
            return self.t

        def set(self, t: float) -> None:
            self.t = t

    rig = Rig(clock=SimClock())
    rig.start(speed=0.5)
    rig.run(range(1, 31))
    bad = [rig.tick(float("nan")) for _ in range(8)]
    assert [c.repeat for c in bad if c is not None] == [True, True] + [False] * 6
    np.testing.assert_allclose([c.velocity[0] for c in bad[2:]], [0.4, 0.3, 0.2, 0.1, 0, 0])
    assert rig.loop.counts["resync"] == 0  # no sample is trusted without a time
    assert rig.loop.state == "holding" and rig.loop.engine.plan is None
    assert rig.loop.counts["invalid_time"] == 8
    resumed = rig.run(range(31, 33))
    assert rig.loop.state == "resuming" and all(c.reasons == ("resuming",) for c in resumed)

    outlier = rig.tick(1e6)
    assert outlier is not None and outlier.reasons == ("resuming",)
    # The right time again, 10^6 s back: a clock reset. Every stamp of the old clock is
    # forgotten (the observation, the joint states, the chunk): until new ones come, it holds.
    after = rig.tick(0.33)
    assert after is not None and not after.repeat and rig.loop.counts["clock_reset"] == 1
    assert after.reasons == ("no_observation", "no_joint_states", "invalid_measurement")
    assert rig.run(range(34, 35))[-1].reasons == ("resuming",)
    assert rig.loop.submit(chunk(line(0.5, start=rig.q)), 0.34).accepted
    assert not rig.run(range(35, 37))[-1].hold


@pytest.mark.parametrize(
    "arguments",
    [
        (None, HOME_Q, 0.0),
        ("0.1", HOME_Q, 0.0),
        (np.array([0.1, 0.2]), HOME_Q, 0.0),
        (10**400, HOME_Q, 0.0),
        (complex(1, 1), HOME_Q, 0.0),
        (0.5, None, 0.5),
        (0.5, [0.0] * 5, 0.5),
        (0.5, [10**400] * 6, 0.5),
        (0.5, ["a"] * 6, 0.5),
        (0.5, HOME_Q, "0.5"),
        (0.5, HOME_Q, None),
        (0.5, HOME_Q, 10**400),
    ],
)
def test_no_input_makes_tick_raise(arguments: tuple[Any, Any, Any]):
    rig = Rig()
    rig.start(speed=0.5)
    rig.run(range(1, 5))
    rig.loop.observation_received(0.5)
    command = rig.loop.tick(*arguments)
    assert command is not None and (command.hold or command.repeat)


@pytest.mark.parametrize(
    ("chunk_", "t_obs"),
    [
        (None, 0.05),
        ("a chunk", 0.05),
        (ActionChunk(np.array([[None] * 7] * 4), np.arange(4) * 0.1, 2, 0.1), 0.05),
        (ActionChunk(np.array([["a"] * 7] * 4), np.arange(4) * 0.1, 2, 0.1), 0.05),
        (ActionChunk(line(0.5)[:4], np.arange(4) * 1e-9, 2, 0.1), 1.7e9),
        (chunk(line(0.5)), None),
        (chunk(line(0.5)), "0.05"),
        (chunk(line(0.5)), 10**400),
    ],
)
def test_no_chunk_makes_submit_raise(chunk_: Any, t_obs: Any):
    rig = Rig()
    rig.start(speed=0.5)
    rig.run(range(1, 5))
    rig.loop.engine.request_started(0.04)
    report = rig.loop.submit(chunk_, t_obs)
    assert report.status == "invalid" and report.detail
    assert rig.loop.state == "resuming"  # the running plan was dropped for a fresh one
    assert rig.loop.should_request(0.05)  # the request is over


def test_chunks_while_holding_are_refused_and_end_their_request():
    rig = Rig()
    rig.start(speed=0.5)
    rig.loop.set_estop(True)
    rig.run(range(1, 3))
    assert not rig.loop.should_request(0.03)  # a stopped loop asks for nothing
    report = rig.loop.submit(chunk(line(0.5)), 0.02)
    assert report.status == "holding" and report.detail == "stopped"


def test_supervisor_transitions():
    supervisor = Supervisor()
    assert supervisor.state == "resuming" and supervisor.resume_since == -math.inf
    supervisor.resumed(0.1)
    assert supervisor.state == "running"
    assert supervisor.update(0.2, (), ("observation_stale",), ()) is True  # drop the plan
    assert supervisor.state == "holding" and not supervisor.accepts_chunks
    assert supervisor.update(0.3, (), (), ()) is False
    assert (supervisor.state, supervisor.resume_since) == ("resuming", 0.3)
    supervisor.resumed(0.4)
    assert supervisor.update(0.5, (), (), ("chunk_stale",)) is True
    assert supervisor.state == "resuming"
    assert supervisor.update(0.6, ("estop",), (), ()) is True
    assert supervisor.update(0.7, (), (), ()) is False and supervisor.state == "stopped"
    assert not supervisor.reset(0.8, estop_active=True).ok
    assert supervisor.reset(0.8, estop_active=False).ok and supervisor.resume_since == 0.8
    assert "nothing to reset" in supervisor.reset(0.9, estop_active=False).reason
    assert supervisor.entries == {"running": 2, "holding": 1, "stopped": 1, "resuming": 3}


# -- end effector ---------------------------------------------------------------------------


def ee_line(start: np.ndarray, velocity: np.ndarray, seconds: float = 5.0) -> np.ndarray:
    steps = np.arange(int(seconds / 0.1) + 1)[:, None]
    positions = start[:3, 3] + 0.1 * steps * velocity
    rotation = np.tile(rot6d_from_matrix(start[:3, :3]), (len(steps), 1))
    return np.hstack([positions, rotation, np.zeros((len(steps), 1))])


def test_ee_loop_follows_a_line_into_the_table_and_stops_at_the_workspace_floor():
    """The TCP target goes down at 0.2 m/s, into the table: the loop follows it, trailing by the
    joints' braking distance (~5 mm), then stops at the floor z = 0.01, never below it; an
    e-stop 1 cm above the floor stops above it too (the braking envelope checks the hold's
    stopping point against the box in end-effector mode as well)."""
    kinematics = EeToJoint()
    start = kinematics.forward(HOME_Q)  # TCP at (0.35, 0.109, 0.264), pointing down
    for estop_at in (None, 0.02):
        rig = Rig("ee", limits={})
        rig.begin()
        actions = ee_line(start, np.array([0.0, 0.0, -0.2]))
        assert rig.loop.submit(ActionChunk.from_actions(actions, 8, 0.1), 0.0).accepted
        commands = []
        for k in range(1, 200):
            command = rig.tick(k * DT)
            assert command is not None
            commands.append(command)
            if estop_at is not None and kinematics.forward(command.q)[2, 3] < estop_at:
                rig.loop.set_estop(True)
        heights = [kinematics.forward(c.q)[2, 3] for c in commands]
        assert min(heights) >= 0.01 - 1e-6
        speed, acceleration = real_time_limits(commands)
        assert speed <= V_MAX * (1 + SLACK) and acceleration <= ACCEL * (1 + SLACK)
        if estop_at is None:
            for k in range(20, 60):
                lag = heights[k] - (start[2, 3] - 0.2 * (k + 1) * DT)
                assert 0.0 < lag < 0.006
            assert heights[-1] == pytest.approx(0.01, abs=1e-3)
            assert "workspace" in commands[-1].interventions and commands[-1].gripper == 0.0
        else:
            assert commands[-1].state == "stopped" and not np.any(commands[-1].velocity)


def test_ee_jump_and_ik_failure_hold():
    start = EeToJoint().forward(HOME_Q)
    rig = Rig("ee", limits={})
    rig.begin()
    actions = ee_line(start, np.zeros(3))
    jumped = actions.copy()
    jumped[5:, 2] += 1.0  # the plan jumps 1 m up half a second in
    assert rig.loop.submit(ActionChunk.from_actions(actions, 8, 0.1), 0.0).accepted
    assert rig.loop.submit(ActionChunk.from_actions(jumped, 8, 0.1), 0.0).accepted
    commands = rig.run(range(1, 60))
    assert any(c.reasons == ("ee_jump",) for c in commands)
    assert rig.loop.safety.counts["ee_jump"] > 0

    # An elbow limited to +-0.2 rad: no IK branch reaches the home pose inside the limits.
    limits = ((-6.3, 6.3),) * 2 + ((-0.2, 0.2),) + ((-6.3, 6.3),) * 3
    clock = FakeClock(0.0)
    narrow = ExecutorConfig(limits=SafetyLimits(joint_position_limits=limits)).build(
        clock, "ee", kinematics=EeToJoint(limits=limits)
    )
    narrow.observation_received(0.0)
    narrow.tick(-DT, HOME_Q, -DT)
    narrow.tick(0.0, HOME_Q, 0.0)
    assert narrow.submit(ActionChunk.from_actions(actions, 8, 0.1), 0.0).accepted
    clock.set(DT)
    narrow.observation_received(DT)
    command = narrow.tick(DT, HOME_Q, DT)
    assert command is not None and command.reasons == ("outside_joint_limits",)


# -- the configuration ----------------------------------------------------------------------


def test_the_shipped_executor_configs_state_the_defaults():
    import yaml

    stated = yaml.safe_load((REPO / "config" / "executor_ur5.yaml").read_text())
    for section, model in ExecutorConfig.model_fields.items():
        fields = set(model.annotation.model_fields) - {"action_space"}  # type: ignore[union-attr]
        assert set(stated[section]) == fields, section  # every setting written out
    assert ExecutorConfig.load(REPO / "config" / "executor_ur5.yaml") == ExecutorConfig()
    e_series = ExecutorConfig.load(REPO / "config" / "executor_ur5e.yaml")
    assert e_series.loop.controller_hz == 500.0
    assert e_series.model_copy(update={"loop": LoopConfig()}) == ExecutorConfig()


def test_a_bad_executor_config_is_refused_naming_the_file_and_field(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop:\n  controller_hz: -125\nlimits:\n  velocity_fraction: 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml: loop.controller_hz: .*limits.velocity_"):
        ExecutorConfig.load(bad)
    with pytest.raises(ValueError, match=r"missing\.yaml"):
        ExecutorConfig.load(tmp_path / "missing.yaml")
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        ExecutorConfig.load(bad)


def test_the_execution_package_imports_without_onnxruntime_zarr_or_torch():
    """What a control process needs is numpy and pydantic: the chunks it consumes are a plain
    type, not the inference runtime's."""
    code = (
        "import sys, policy_runtime.execution\n"
        "heavy = {'onnxruntime', 'zarr', 'torch', 'mujoco', 'rclpy'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_stopped_robot_program_latches_a_stop_the_commands_follow_the_arm_and_a_reset_resumes():
    """The program stops while moving: the loop stops (decelerating, latched) and from then on
    commands where the arm is, wherever it is put (an operator, a simulation's reset: 0.6 rad
    away, far beyond the tracking limit, and no tracking stop). The program running again
    does not resume (a chunk is refused); the operator's reset does, by a chunk that starts at
    the arm."""
    rig = Rig()
    rig.start(speed=0.5)
    rig.run(range(1, 11))
    rig.loop.set_robot_state(program_running=False, speed_scaling_percent=100.0)
    held = rig.run(range(11, 20))
    assert all(c.hold and c.reasons == ("program_stopped",) for c in held)
    assert all(c.state == "stopped" for c in held)
    moved = rig.q + 0.6 * PAN
    for k in range(20, 30):
        command = rig.tick(k * DT, q=moved)
        assert command is not None and command.state == "stopped"
    np.testing.assert_allclose(command.q, moved)  # following the arm, at rest
    assert rig.loop.counts["tracking_error"] == 0
    rig.q = moved.copy()
    rig.loop.set_robot_state(program_running=True, speed_scaling_percent=100.0)
    assert rig.run(range(30, 40))[-1].reasons == ("program_stopped",)
    assert not rig.loop.submit(chunk(line(0.5, start=moved)), 39 * DT).accepted
    np.testing.assert_allclose(rig.q, moved)
    assert rig.loop.reset().ok
    assert rig.run(range(40, 42))[-1].reasons == ("resuming",)
    assert rig.loop.submit(chunk(line(0.5, start=moved)), 41 * DT).accepted
    rig.run(range(42, 50))
    assert rig.loop.state == "running" and rig.q[0] > moved[0]


def test_a_program_that_was_never_running_holds_and_resumes_when_it_runs():
    """Before the loop has moved the arm (the program not yet started on the pendant), the
    program being off only holds: no reset is needed once it runs."""
    rig = Rig()
    rig.begin()
    rig.loop.set_robot_state(program_running=False, speed_scaling_percent=100.0)
    assert rig.run(range(1, 4))[-1].reasons == ("program_not_running",)
    rig.loop.set_robot_state(program_running=True, speed_scaling_percent=100.0)
    assert rig.run(range(4, 6))[-1].reasons == ("resuming",)
    assert rig.loop.submit(chunk(line(0.5)), 5 * DT).accepted


def test_a_reset_right_after_the_program_stops_answers_that_stop():
    """The operator's reset may come before the loop has ticked since the program stopped (a
    simulation's next episode): the stop is latched and cleared by that reset, not left to
    latch at the next tick."""
    rig = Rig()
    rig.start(speed=0.5)
    rig.run(range(1, 5))
    rig.loop.set_robot_state(program_running=False, speed_scaling_percent=100.0)
    assert rig.loop.reset().ok
    assert rig.run(range(5, 8))[-1].reasons == ("program_not_running",)
    rig.loop.set_robot_state(program_running=True, speed_scaling_percent=100.0)
    assert rig.run(range(8, 10))[-1].reasons == ("resuming",)


def test_a_reset_while_the_program_is_off_resumes_once_it_runs():
    """The operator resets before starting the program again (a simulation's next episode):
    the loop holds until the program runs, then resumes without another reset."""
    rig = Rig()
    rig.start(speed=0.5)
    rig.run(range(1, 5))
    rig.loop.set_robot_state(program_running=False, speed_scaling_percent=100.0)
    assert rig.run(range(5, 8))[-1].state == "stopped"
    assert rig.loop.reset().ok
    assert rig.run(range(8, 10))[-1].reasons == ("program_not_running",)
    rig.loop.set_robot_state(program_running=True, speed_scaling_percent=100.0)
    assert rig.run(range(10, 12))[-1].reasons == ("resuming",)


def test_speed_scaling_below_the_threshold_holds_until_it_is_back():
    rig = Rig(watchdog={"min_speed_scaling_percent": 90.0})
    rig.start(speed=0.5)
    rig.run(range(1, 11))
    rig.loop.set_robot_state(program_running=True, speed_scaling_percent=50.0)
    assert rig.run(range(11, 13))[-1].reasons == ("speed_scaling_low",)
    rig.loop.set_robot_state(program_running=True, speed_scaling_percent=float("nan"))
    assert rig.run(range(13, 15))[-1].reasons == ("speed_scaling_low",)  # not a number: low
    rig.loop.set_robot_state(program_running=True, speed_scaling_percent=100.0)
    assert rig.run(range(15, 17))[-1].reasons == ("resuming",)
