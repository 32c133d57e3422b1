"""Chunk execution: the deployed control loop in real time, and the four modes side by side.

(a) The control loop as the robot runs it (:class:`~policy_runtime.execution.ControlLoop`:
supervisor, watchdog, IK, safety filter, the engine inside) on this machine at 125 Hz (CB3) and
500 Hz (e-series), for joint and end-effector actions, ``--seconds`` per row: absolute
deadlines on ``time.perf_counter``, woken either by sleeping until ``--spin-us`` before the
deadline and spinning from there, or by busy-waiting the whole period (a core of its own: what
a 500 Hz loop on a kernel without real-time scheduling needs; after a sleep this 2-core VM runs
the same code 2-3 times slower; under SCHED_FIFO never busy-wait: the kernel's real-time
throttling then stalls the loop for ~50 ms a second), a simulated arm that follows each
command, chunks from a synthetic policy answering after
``--latency`` (a smooth motion around the home pose; a 5 cm circle for end-effector actions).
Run on the normal scheduler, then on SCHED_FIFO where the process may (a control loop on a
shared machine needs it; the UR driver's own loop runs that way). Reports the period error
(p50/p99/max, goal p99 <= 0.5 ms), the cost of ``ControlLoop.tick`` per tick (p50/p99/max, goal
for joint actions: p99 under 20% of the period) beside the engine's own ``command`` inside it,
and of ``submit`` per chunk; a second table times each engine call per configuration. The
garbage collector is off inside the loop (a collection is a pause a real-time loop must not
take).

(b) Smoothness and tracking of each mode on one stream of chunks, replayed on a fake clock at
the controller rate, at each of ``--replay-latencies``. :func:`evaluate_modes` takes any list of
:class:`RecordedChunk` (chunks recorded from a real policy with their ``t_obs`` and arrival);
here they come from a smooth reference trajectory plus a per-chunk random offset and drift, like
independent samples of a stochastic policy. Reported: tracking error against the reference
(over all ticks, and over the policy step after each chunk arrives), RMS jerk (third difference
of the commanded joints at the controller rate), and the largest tick-to-tick step after a chunk
arrives and elsewhere. RTC runs without sampler guidance here (the chunks are independent), so
it shows only the effect of the frozen prefix.

(c) With ``--policy``: the same on chunks recorded from a real policy (:func:`recorded_stream`).

    python -m bench.execution [--seconds 5] [--latency 0.06] [--fifo-priority 50]
                              [--replay-seconds 30] [--replay-latencies 0.06 0.25]
                              [--policy runs/dp --task push_t --seed 100000]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from policy_runtime.chunk import ActionChunk
from policy_runtime.execution import (
    ActionSpace,
    EeToJoint,
    ExecutionConfig,
    ExecutionEngine,
    ExecutionMode,
    ExecutionStats,
    ExecutorConfig,
    FakeClock,
    Interpolation,
    LoopConfig,
    MonotonicClock,
    Trajectory,
)

POLICY_DT = 0.1  # Diffusion Policy's real UR5 setup: 10 Hz, H 16, Ta 8
HORIZON, N_ACTION = 16, 8
MODES: tuple[ExecutionMode, ...] = ("replace", "temporal_ensemble", "aggregate", "rtc")


@dataclass(frozen=True)
class RecordedChunk:
    """A chunk as the executor received it: predicted from ``t_obs``, handed over at ``arrival``."""

    chunk: ActionChunk
    t_obs: float
    arrival: float


def reference(t: np.ndarray) -> np.ndarray:
    """A smooth joint trajectory (m, 7): slow sines of ~0.3 rad on each joint, gripper in [0, 1]."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    freq = np.array([0.21, 0.17, 0.26, 0.31, 0.23, 0.29, 0.12])
    amplitude = np.array([0.4, 0.3, 0.35, 0.3, 0.25, 0.3, 0.5])
    phase = np.arange(7) * 0.7
    out = amplitude * np.sin(2 * np.pi * freq * t + phase)
    out[:, 6] += 0.5
    return out


def synthetic_chunk(t_obs: float, rng: np.random.Generator, noise: float) -> ActionChunk:
    """The reference from ``t_obs`` on, plus this sample's constant offset and linear drift."""
    steps = np.arange(HORIZON)
    offset = rng.normal(scale=noise, size=7)
    drift = rng.normal(scale=noise / HORIZON, size=7)
    actions = reference(t_obs + steps * POLICY_DT) + offset + steps[:, None] * drift
    actions[:, 6] = np.clip(actions[:, 6], 0.0, 1.0)
    return ActionChunk.from_actions(actions, N_ACTION, POLICY_DT)


def synthetic_stream(
    seconds: float, replan_steps: int, latency: float, noise: float, seed: int = 0
) -> list[RecordedChunk]:
    """An observation every ``replan_steps`` policy steps, answered ``latency`` (+-20%) later."""
    rng = np.random.default_rng(seed)
    stream = []
    for k in range(int(seconds / (replan_steps * POLICY_DT))):
        t_obs = k * replan_steps * POLICY_DT
        delay = latency * rng.uniform(0.8, 1.2)
        stream.append(RecordedChunk(synthetic_chunk(t_obs, rng, noise), t_obs, t_obs + delay))
    return stream


def percentiles(values: np.ndarray, scale: float) -> tuple[str, ...]:
    p50, p99 = np.percentile(values, [50, 99])
    return tuple(f"{v * scale:.3f}" for v in (p50, p99, np.max(values)))


# --- (a) the real-time loop -----------------------------------------------------------------


def sleep_until(deadline: float, spin_s: float) -> None:
    """Sleep until ``spin_s`` before ``deadline`` (the OS wakes late by ~0.1 ms), then spin."""
    remaining = deadline - time.perf_counter()
    if remaining > spin_s:
        time.sleep(remaining - spin_s)
    while time.perf_counter() < deadline:
        pass


#: The simulated arm's start: the cell's home pose (tool down, elbow up).
HOME_Q = np.array([0.0, -1.9, 1.9, -1.571, -1.571, 0.0])


def arm_chunk(t_obs: float, space: ActionSpace, rng: np.random.Generator) -> ActionChunk:
    """A synthetic policy's chunk for the simulated arm, ``t_obs`` seconds into the run: joints
    swinging ~0.15 rad about home, or the TCP on a 5 cm circle through its home pose
    (0.1 m/s), a little noise per chunk."""
    t = t_obs + np.arange(HORIZON) * POLICY_DT
    if space == "joint":
        swing = 0.15 * np.sin(2 * np.pi * 0.2 * t[:, None] + np.arange(6) * 0.7)
        joints = HOME_Q + swing - 0.15 * np.sin(np.arange(6) * 0.7)
        actions = np.hstack([joints + rng.normal(scale=1e-3, size=6), np.full((HORIZON, 1), 0.5)])
    else:
        home = EeToJoint().forward(HOME_Q)
        angle = 2.0 * t[:, None]  # 0.1 m/s on a 5 cm radius
        circle = 0.05 * np.hstack([np.sin(angle), 1 - np.cos(angle), 0 * angle])
        rotation = np.tile(home[:2, :3].reshape(6), (HORIZON, 1))
        actions = np.hstack([home[:3, 3] + circle, rotation, np.full((HORIZON, 1), 0.5)])
    return ActionChunk.from_actions(actions, N_ACTION, POLICY_DT)


@dataclass(frozen=True)
class LoopResult:
    period_error: np.ndarray  # |actual period - nominal| (s), per tick
    lateness: np.ndarray  # wake-up - deadline (s), per tick
    tick_cost: np.ndarray  # ControlLoop.tick (s), per tick
    command_cost: np.ndarray  # engine.command alone (s), per tick
    submit_cost: np.ndarray  # ControlLoop.submit (s), per chunk
    holds: int  # ticks that held (any reason)
    stats: ExecutionStats


def realtime_loop(
    controller_hz: float,
    seconds: float,
    latency: float,
    spin_s: float,
    space: ActionSpace = "joint",
    seed: int = 0,
) -> LoopResult:
    """Tick the deployed control loop (aggregate; cubic for joints) against a synthetic policy
    on the wall clock, the arm following every command.

    The policy is simulated in the loop: a request records ``t_obs``, and the chunk is handed to
    ``submit`` at the first tick after ``t_obs + latency`` (+-20%). Each tick, the engine's own
    ``command`` is timed once on its own (it has no side effect), then the whole tick.
    """
    clock = MonotonicClock()
    executor = ExecutorConfig(loop=LoopConfig(controller_hz=controller_hz))
    interpolation: Interpolation = "cubic" if space == "joint" else "linear"
    execution = executor.execution_for(space, mode="aggregate", interpolation=interpolation)
    loop = executor.build(clock, space, execution=execution)
    engine = loop.engine
    rng = np.random.default_rng(seed)
    period = 1.0 / controller_hz
    n_ticks = int(seconds * controller_hz)
    wake, tick_cost, command_cost = np.empty(n_ticks), np.empty(n_ticks), np.empty(n_ticks)
    submit_cost: list[float] = []
    pending: tuple[float, float] | None = None  # (t_obs, ready)
    q, holds = HOME_Q.copy(), 0
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter() + 0.05
        start_t = clock.now() + 0.05
        for k in range(n_ticks):
            sleep_until(start + k * period, spin_s)
            wake[k] = time.perf_counter()
            t = clock.now()
            loop.observation_received(t)  # the camera's newest frame, as the server stamps it
            before = time.perf_counter()
            engine.command(t)
            command_cost[k] = time.perf_counter() - before
            before = time.perf_counter()
            command = loop.tick(t, q, t)
            tick_cost[k] = time.perf_counter() - before
            if command is not None:
                q, holds = command.q, holds + command.hold
            if pending is not None and t >= pending[1]:
                chunk = arm_chunk(pending[0] - start_t, space, rng)
                before = time.perf_counter()
                loop.submit(chunk, pending[0])
                submit_cost.append(time.perf_counter() - before)
                pending = None
            if pending is None and loop.should_request(t):
                engine.request_started(t)
                pending = (t, t + latency * rng.uniform(0.8, 1.2))
    finally:
        gc.enable()
    return LoopResult(
        period_error=np.abs(np.diff(wake) - period),
        lateness=wake - (start + np.arange(n_ticks) * period),
        tick_cost=tick_cost,
        command_cost=command_cost,
        submit_cost=np.asarray(submit_cost),
        holds=holds,
        stats=engine.stats,
    )


def set_fifo(priority: int) -> bool:
    """Put this process on SCHED_FIFO (0: back to SCHED_OTHER); False where not permitted."""
    if not hasattr(os, "sched_setscheduler"):
        return False
    policy = os.SCHED_FIFO if priority > 0 else os.SCHED_OTHER
    try:
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except PermissionError:
        return False
    return True


def realtime_table(seconds: float, latency: float, spin_us: float, fifo_priority: int) -> Table:
    """Both rates and both action spaces, waking by sleep (then a spin of ``spin_us``) and by
    busy-waiting the whole period, on the normal scheduler; then SCHED_FIFO if allowed."""
    table = Table(
        "controller",
        "actions",
        "scheduler",
        "wake",
        "period error p50 / p99 / max (ms)",
        "ControlLoop.tick p50 / p99 / max (us)",
        "tick p99 / period",
        "engine.command p50 / p99 (us)",
        "submit p50 / max (us)",
        "chunks",
        "run-outs / holds",
        title=f"(a) the deployed control loop in real time, {seconds:g} s per row, aggregate "
        f"(cubic for joints), synthetic policy {latency * 1e3:.0f} ms +-20% (goals: period "
        "error p99 <= 0.5 ms; joint ticks p99 < 20% of the period)",
    )
    schedulers = [("SCHED_OTHER", 0)]
    if fifo_priority:
        schedulers.append((f"SCHED_FIFO {fifo_priority}", fifo_priority))
    for name, priority in schedulers:
        if priority and not set_fifo(priority):
            table.add_row("-", "-", name, "", "not permitted", "", "", "", "", "", "")
            continue
        try:
            for hz in (125.0, 500.0):
                wakes = ((f"sleep + {spin_us:.0f} us spin", spin_us * 1e-6), ("busy-wait", 1 / hz))
                for wake, spin_s in wakes:
                    for space in ("joint", "ee"):
                        r = realtime_loop(hz, seconds, latency, spin_s, space)
                        tick_us = np.percentile(r.tick_cost * 1e6, [50, 99])
                        command_us = np.percentile(r.command_cost * 1e6, [50, 99])
                        submit = r.submit_cost * 1e6
                        table.add_row(
                            f"{hz:.0f} Hz",
                            space,
                            name,
                            wake,
                            " / ".join(percentiles(r.period_error, 1e3)),
                            f"{tick_us[0]:.0f} / {tick_us[1]:.0f} / {r.tick_cost.max() * 1e6:.0f}",
                            f"{tick_us[1] * 1e-6 * hz:.0%}",
                            f"{command_us[0]:.1f} / {command_us[1]:.1f}",
                            f"{np.median(submit):.0f} / {submit.max():.0f}",
                            str(r.stats.chunks_accepted),
                            f"{r.stats.run_outs} / {r.holds}",
                        )
                table.add_section()
        finally:
            if priority:
                set_fifo(0)
    return table


def cost_table(repeats: int = 2000) -> Table:
    """Median cost of command() per action space / interpolation and of submit() per mode."""
    table = Table("call", "configuration", "median (us)", title="engine call costs (median)")
    rng = np.random.default_rng(0)
    chunks = [synthetic_chunk(0.1 * 4 * k, rng, 0.01) for k in range(3)]
    ee = np.zeros((HORIZON, 10))
    ee[:, :3] = rng.normal(size=(HORIZON, 3))
    turn = 0.05 * np.arange(HORIZON)  # about z
    ee[:, 3:9] = np.stack(
        [np.cos(turn), -np.sin(turn), 0 * turn, np.sin(turn), np.cos(turn), 0 * turn], 1
    )
    ee_chunks = [ActionChunk.from_actions(ee, N_ACTION, POLICY_DT)] * 3
    cases: list[tuple[ExecutionMode, ActionSpace, Interpolation]] = [
        ("replace", "joint", "linear"),
        ("replace", "joint", "cubic"),
        ("replace", "ee", "linear"),
        ("temporal_ensemble", "joint", "linear"),
        ("aggregate", "joint", "linear"),
        ("aggregate", "ee", "linear"),
        ("rtc", "joint", "linear"),
    ]
    for mode, space, interpolation in cases:
        clock = FakeClock()
        config = ExecutionConfig(mode=mode, action_space=space, interpolation=interpolation)
        engine = ExecutionEngine(config, clock)
        stream = ee_chunks if space == "ee" else chunks
        submit_times = []
        for repeat in range(repeats // 20):
            engine.reset()
            for k, chunk in enumerate(stream):
                clock.set(max(clock.now(), repeat * 10.0 + 0.4 * k + 0.05))
                before = time.perf_counter()
                engine.submit(chunk, repeat * 10.0 + 0.4 * k)
                submit_times.append(time.perf_counter() - before)
        ticks = clock.now() + np.arange(repeats) * 1e-4
        command_times = []
        for t in ticks:
            before = time.perf_counter()
            engine.command(float(t))
            command_times.append(time.perf_counter() - before)
        label = f"{space}, {interpolation}"
        if mode == "replace":
            table.add_row("command()", label, f"{np.median(command_times) * 1e6:.1f}")
        table.add_row(f"submit() {mode}", label, f"{np.median(submit_times) * 1e6:.0f}")
    return table


# --- (b) the modes side by side -------------------------------------------------------------


@dataclass(frozen=True)
class ModeResult:
    tracking_rms: float  # all ticks
    boundary_tracking_rms: float  # ticks within one policy step after a chunk arrived
    tracking_max: float
    jerk_rms: float
    boundary_step_max: float  # tick-to-tick, within one policy step after a chunk arrived
    other_step_max: float  # tick-to-tick, elsewhere
    stats: ExecutionStats


def replay(
    stream: list[RecordedChunk], config: ExecutionConfig, controller_hz: float
) -> tuple[np.ndarray, np.ndarray, ExecutionStats]:
    """Feed ``stream`` to an engine at its arrival times and tick it at ``controller_hz``,
    from the first arrival to the last action of the stream.

    Returns the tick times (m,), the commands (m, D) (where the engine has none, the last one
    is held, as the robot would) and the engine's stats.
    """
    clock = FakeClock()
    engine = ExecutionEngine(config, clock)
    arrivals = sorted(stream, key=lambda r: r.arrival)
    start = arrivals[0].arrival
    end = max(r.t_obs + r.chunk.stamps[-1] for r in stream)
    ticks = start + np.arange(int((end - start) * controller_hz)) / controller_hz
    commands = np.empty((len(ticks), arrivals[0].chunk.actions.shape[-1]))
    last = arrivals[0].chunk.actions[0]
    i = 0
    for k, t in enumerate(ticks):
        while i < len(arrivals) and arrivals[i].arrival <= t:
            clock.set(arrivals[i].arrival)
            engine.submit(arrivals[i].chunk, arrivals[i].t_obs)
            i += 1
        clock.set(t)
        target = engine.command(float(t))
        last = last if target is None else target
        commands[k] = last
    return ticks, commands, engine.stats


def evaluate_modes(
    stream: list[RecordedChunk],
    reference_fn: Callable[[np.ndarray], np.ndarray],
    controller_hz: float,
    interpolation: Interpolation,
) -> dict[ExecutionMode, ModeResult]:
    """Replay ``stream`` through every mode and measure it against ``reference_fn(ts) -> (m, D)``.

    Joint columns only (the gripper is left out): tracking error in rad (norm over the joints),
    jerk in rad/s^3, steps in rad per tick. The first second is skipped (start-up transient).
    """
    results = {}
    period = 1.0 / controller_hz
    for mode in MODES:
        config = ExecutionConfig(mode=mode, interpolation=interpolation)
        ticks, commands, stats = replay(stream, config, controller_hz)
        keep = ticks >= ticks[0] + 1.0
        ticks, joints = ticks[keep], commands[keep, :6]
        error = np.linalg.norm(joints - reference_fn(ticks)[:, :6], axis=1)
        jerk = np.diff(joints, n=3, axis=0) / period**3
        step = np.linalg.norm(np.diff(joints, axis=0), axis=1)
        after_arrival = np.zeros(len(ticks), dtype=bool)
        for r in stream:
            after_arrival |= (ticks >= r.arrival) & (ticks < r.arrival + r.chunk.dt)
        step_after = after_arrival[1:]
        results[mode] = ModeResult(
            tracking_rms=float(np.sqrt(np.mean(error**2))),
            boundary_tracking_rms=float(np.sqrt(np.mean(error[after_arrival] ** 2))),
            tracking_max=float(error.max()),
            jerk_rms=float(np.sqrt(np.mean(np.sum(jerk**2, axis=1)))),
            boundary_step_max=float(step[step_after].max()),
            other_step_max=float(step[~step_after].max()),
            stats=stats,
        )
    return results


#: The headers of :func:`mode_cells`, in its order.
MODE_COLUMNS = (
    "tracking RMS all / after a chunk (mrad)",
    "tracking max (mrad)",
    "jerk RMS (rad/s^3)",
    "max step after a chunk / elsewhere (mrad)",
    "run-outs / stale chunks",
)


def mode_cells(r: ModeResult) -> tuple[str, ...]:
    """A mode's figures as table cells (mrad, rad/s^3, counts), under :data:`MODE_COLUMNS`."""
    return (
        f"{r.tracking_rms * 1e3:.1f} / {r.boundary_tracking_rms * 1e3:.1f}",
        f"{r.tracking_max * 1e3:.1f}",
        f"{r.jerk_rms:.0f}",
        f"{r.boundary_step_max * 1e3:.2f} / {r.other_step_max * 1e3:.2f}",
        f"{r.stats.run_outs} / {r.stats.stale_chunks}",
    )


def modes_table(args: argparse.Namespace) -> Table:
    table = Table(
        "latency",
        "mode",
        "interp.",
        *MODE_COLUMNS,
        title=f"(b) modes on one stream of {args.replay_seconds:g} s: reference + per-chunk "
        f"offset/drift noise {args.noise * 1e3:.0f} mrad, an observation every "
        f"{args.replan_steps} steps of {POLICY_DT:g} s, latency +-20%, H {HORIZON}, "
        f"Ta {N_ACTION}, controller {args.controller_hz:g} Hz; every mode gets the same chunks "
        "at the same times (rtc without sampler guidance)",
    )
    for latency in args.replay_latencies:
        stream = synthetic_stream(args.replay_seconds, args.replan_steps, latency, args.noise)
        for interpolation in ("linear", "cubic"):
            results = evaluate_modes(stream, reference, args.controller_hz, interpolation)
            for mode, r in results.items():
                table.add_row(f"{latency * 1e3:.0f} ms", mode, interpolation, *mode_cells(r))
        table.add_section()
    return table


def recorded_stream(
    policy: Path, task: str, seed: int, seconds: float, replan_steps: int, latency: float
) -> tuple[list[RecordedChunk], Callable[[np.ndarray], np.ndarray]]:
    """Chunks of a real policy along one of its own sim episodes, in joint space.

    The policy drives the env (receding horizon, ``N_ACTION`` steps per chunk) and is asked for
    a chunk at every policy step; end-effector chunks go through the UR5 IK (each action nearest
    the one before, starting from the commanded joints). Every ``replan_steps``-th chunk forms
    the stream, answered ``latency`` (+-20%) after its observation. The reference is the
    policy's freshest intent: at time t, the newest chunk (observed at or before t) at t, so
    tracking error measures how far an execution mode lags or smooths what the policy wants.
    """
    from sim_bridge.gl import configure_headless_rendering

    configure_headless_rendering()
    from policy_runtime.evaluation.evaluate import env_options, load_runtime
    from policy_runtime.execution import EeToJoint
    from sim_bridge.env import make_env

    runtime = load_runtime(policy)
    env = make_env(task, **env_options(runtime.specs))
    ik = EeToJoint()
    rng = np.random.default_rng(seed)
    obs = env.reset(seed)
    history = [obs] * runtime.n_obs_steps
    dt = env.policy_period_s
    dense: list[Trajectory] = []
    stream: list[RecordedChunk] = []
    plan = np.empty((0, 10))
    for k in range(int(seconds / dt)):
        window = {
            key: np.stack([o[key] for o in history[-runtime.n_obs_steps :]])
            for key in runtime.obs_keys
        }
        chunk = runtime.predict(window, rng)
        q = env.last_action_joint[:6].astype(np.float64)
        joints = []
        for action in chunk.actions:
            solution = ik.solve(action, q)
            q = q if solution.q is None else solution.q
            joints.append(np.append(q, np.clip(action[-1], 0.0, 1.0)))
        t_obs = k * dt
        joint_chunk = ActionChunk.from_actions(np.array(joints), chunk.n_action_steps, dt)
        dense.append(Trajectory(t_obs + joint_chunk.stamps, joint_chunk.actions, "joint"))
        if k % replan_steps == 0:
            arrival = t_obs + latency * rng.uniform(0.8, 1.2)
            stream.append(RecordedChunk(joint_chunk, t_obs, arrival))
        if k % N_ACTION == 0:
            plan = chunk.actions
        history.append(env.step(plan[k % N_ACTION]))
        if env.done:
            break
    env.close()

    def freshest(ts: np.ndarray) -> np.ndarray:
        index = np.clip(np.floor(np.asarray(ts) / dt + 1e-9).astype(int), 0, len(dense) - 1)
        return np.stack([dense[i](float(t)) for i, t in zip(index, ts, strict=True)])

    return stream, freshest


def policy_modes_table(args: argparse.Namespace) -> Table:
    table = Table(
        "latency",
        "mode",
        *MODE_COLUMNS,
        title=f"(c) modes on chunks recorded from {args.policy} on {args.task} (seed "
        f"{args.seed}, {args.replay_seconds:g} s at most), in joint space through the IK; "
        f"reference: the policy's freshest chunk; an observation every {args.replan_steps} "
        f"steps; controller {args.controller_hz:g} Hz, linear interpolation",
    )
    for latency in args.replay_latencies:
        stream, freshest = recorded_stream(
            args.policy, args.task, args.seed, args.replay_seconds, args.replan_steps, latency
        )
        for mode, r in evaluate_modes(stream, freshest, args.controller_hz, "linear").items():
            table.add_row(f"{latency * 1e3:.0f} ms", mode, *mode_cells(r))
        table.add_section()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="real-time loop, per rate")
    parser.add_argument("--latency", type=float, default=0.06, help="simulated inference (s)")
    parser.add_argument("--spin-us", type=float, default=500.0, help="spin before a deadline")
    parser.add_argument(
        "--fifo-priority", type=int, default=50, help="also run on SCHED_FIFO (0: do not)"
    )
    parser.add_argument("--replay-seconds", type=float, default=30.0)
    parser.add_argument(
        "--replay-latencies", type=float, nargs="+", default=[0.06, 0.25], help="for (b), s"
    )
    parser.add_argument("--replan-steps", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.02, help="per-chunk offset (rad)")
    parser.add_argument("--controller-hz", type=float, default=125.0, help="for (b) and (c)")
    parser.add_argument(
        "--policy", type=Path, help="(c): a checkpoint, run or bundle to record chunks from"
    )
    parser.add_argument("--task", default="push_t", help="(c): the task it runs")
    parser.add_argument("--seed", type=int, default=100_000, help="(c): the episode's seed")
    args = parser.parse_args()
    console = Console()
    console.print(realtime_table(args.seconds, args.latency, args.spin_us, args.fifo_priority))
    console.print(cost_table())
    console.print(modes_table(args))
    if args.policy is not None:
        console.print(policy_modes_table(args))


if __name__ == "__main__":
    main()
