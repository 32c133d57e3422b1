"""The policy loop in simulation: the one place where a policy drives an env episode.

Keep the last ``n_obs_steps`` observations (at the start, the first observation repeated), ask
the policy for chunks, and step the env until ``env.done`` (success or the task's step limit)
or ``max_steps``. By default the chunks go through the deployed execution stack, exactly as on
the robot: the :class:`~policy_runtime.execution.ExecutionEngine` (when to ask for the next
chunk, which actions are still due, how chunks blend) and the
:class:`~policy_runtime.execution.ControlLoop` (supervisor, watchdog, IK, safety filter) built
from an :class:`~policy_runtime.execution.ExecutorConfig`, ticked at the controller rate inside
the simulation on sim time, the cell applying each tick's joint command as the real position
controller does. ``executor=None`` takes the stack out and feeds the engine's targets straight
to the cell (IK for end-effector actions), to measure what the limits change.

Chunks are requested at observation times (every policy period, when the engine asks for one;
one in flight); a simulated ``inference_latency_s`` delivers each chunk that long after its
observation while the arm keeps executing the plan, which is how the robot sees a slow policy.
Each chunk's actions are due at their stamps, ``(i + action_offset_steps) * dt`` after its
observation (the bundle's timing). ``execution=None`` runs Diffusion Policy's synchronous loop
instead (execute ``n_action_steps`` actions with ``env.step``, each reached at the end of its
period, then re-plan), with no engine and no stack: the reference the engine is tested against.

Torch-free: a policy is any callable from an observation window to an action chunk (numpy).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from policy_runtime.chunk import ActionChunk, ChunkPrefix
from policy_runtime.execution import (
    ControlLoop,
    EeToJoint,
    ExecutionConfig,
    ExecutionEngine,
    ExecutorConfig,
    FakeClock,
)

if TYPE_CHECKING:
    from policy_runtime.evaluation.perception import Perception
    from sim_bridge.env import SimEnv

#: ``policy_fn(window) -> chunk``: ``window[key]`` is ``(n_obs_steps, *shape)``, oldest first;
#: the chunk is ``(>= n_action_steps, action_dim)`` of unnormalised actions, action ``i`` due
#: ``i + action_offset_steps`` policy steps after the observation.
#: Real-time chunking calls ``policy_fn(window, prefix)`` with the engine's committed prefix
#: (:class:`~policy_runtime.chunk.ChunkPrefix`); every other mode ``policy_fn(window)``.
PolicyFn = Callable[..., np.ndarray]


@runtime_checkable
class SeededPolicyFn(Protocol):
    """A policy function with randomness of its own (e.g. a sampler's noise): ``reset(seed)``
    runs before every episode, so an episode is a pure function of (policy, env, seed)."""

    def reset(self, seed: int) -> None: ...

    def __call__(self, window: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass
class PolicyEpisodeResult:
    seed: int
    success: bool
    score: float
    #: Env steps executed (policy periods).
    steps: int
    #: Chunks requested from the policy.
    policy_calls: int
    #: sha256 (hex, 16 digits) of every command sent (each action of the synchronous loop, each
    #: tick's joint command of the engine): equal digests, identical behaviour.
    actions_sha256: str = ""
    #: Video frames ``(steps + 1, H, W, 3)`` uint8: after reset, then after every step.
    frames: np.ndarray | None = None
    #: With the deployed stack: what the safety filter changed or refused (commands per
    #: intervention), and the control loop's ticks per hold reason and events (chunks refused,
    #: re-anchorings); only the non-zero ones. Empty without the stack.
    interventions: dict[str, int] = field(default_factory=dict)
    holds: dict[str, int] = field(default_factory=dict)
    #: Policy periods whose observation perception lost (0 without perception).
    observations_lost: int = 0


@dataclass
class _EngineRun:
    """What one episode's engine loop reports."""

    calls: int
    loop: ControlLoop | None


def _run_engine(
    env: SimEnv,
    request: Callable[[ChunkPrefix | None], np.ndarray],
    record_command: Callable[[np.ndarray, float | None], None],
    observed: Callable[[dict[str, np.ndarray]], bool],
    fresh: bool,
    finished: Callable[[], bool],
    chunk_form: tuple[int, int],
    config: ExecutionConfig,
    executor: ExecutorConfig | None,
    latency: float,
) -> _EngineRun:
    """The engine (and, given ``executor``, the control loop) on sim time at the controller rate.

    Per policy period: the observation taken at its start is fresh input (the watchdog's); then
    at every controller tick: the loop's command for the measured joints goes to the cell; a
    chunk whose simulated inference has ended is handed over; and at the period's first tick
    (the observation time) a request starts when the engine asks for one, one in flight.
    ``chunk_form`` is ``(n_action_steps, action_offset_steps)``. ``observed`` takes each
    period's observation and says whether it was fresh (``fresh``: the first one's); a period
    whose observation was lost (perception) feeds the watchdog nothing and asks for no chunk.
    """
    n_action_steps, offset_steps = chunk_form
    dt = env.policy_period_s
    clock = FakeClock(env.time)
    loop = (
        None if executor is None else executor.build(clock, config.action_space, execution=config)
    )
    engine = loop.engine if loop is not None else ExecutionEngine(config, clock)
    if loop is not None:
        # The arm at rest before the episode, as a robot's joint states flow before a policy
        # starts: the loop trusts a sample once the next agrees with it.
        before = env.time - env.cell.control_period_s
        loop.tick(before, env.cell.joint_positions, before)
    kinematics = EeToJoint()
    pending: list[tuple[float, float, ActionChunk]] = []  # (arrival, t_obs, chunk)
    calls = 0

    def submit(chunk: ActionChunk, t_obs: float) -> None:
        if loop is not None:
            loop.submit(chunk, t_obs)
        else:
            engine.submit(chunk, t_obs)

    def command_of(t: float, q_measured: np.ndarray) -> tuple[np.ndarray, float | None] | None:
        if loop is not None:
            command = loop.tick(t, q_measured, t)
            return None if command is None else (command.q, command.gripper)
        target = engine.command(t)
        if target is None:
            return None
        if config.action_space == "joint":
            return target[:6], float(target[6]) if len(target) > 6 else None
        solution = kinematics.solve(target, q_near=env.last_action_joint[:6].astype(np.float64))
        return None if solution.q is None else (solution.q, solution.gripper)

    while not finished():
        t_obs = env.time
        if loop is not None and fresh:
            loop.observation_received(t_obs)
        first_tick = True

        def controller(
            t: float, q_measured: np.ndarray, fresh: bool = fresh
        ) -> tuple[np.ndarray, float | None] | None:
            nonlocal first_tick, calls
            clock.set(t)
            command = command_of(t, q_measured)
            if command is not None:
                record_command(*command)
            while pending and pending[0][0] <= t + 1e-9:
                _, stamp, chunk = pending.pop(0)
                submit(chunk, stamp)
            wants = loop.should_request(t) if loop is not None else engine.should_request(t)
            if first_tick and fresh and not pending and wants:
                engine.request_started(t)
                prefix = engine.rtc_prefix(t) if config.mode == "rtc" else None
                actions = request(prefix)
                chunk = ActionChunk.from_actions(actions, n_action_steps, dt, offset_steps)
                calls += 1
                if latency > 0:
                    pending.append((t + latency, t, chunk))
                else:
                    submit(chunk, t)
            first_tick = False
            return command

        fresh = observed(env.step_controlled(controller))
    return _EngineRun(calls, loop)


def run_policy_episode(
    env: SimEnv,
    policy_fn: PolicyFn,
    seed: int,
    *,
    n_obs_steps: int,
    n_action_steps: int,
    keys: Sequence[str],
    video_camera: str | None = None,
    video_size: tuple[int, int] = (240, 320),
    max_steps: int | None = None,
    execution: ExecutionConfig | None = None,
    executor: ExecutorConfig | None = None,
    inference_latency_s: float = 0.0,
    action_offset_steps: int = 0,
    perception: Perception | None = None,
) -> PolicyEpisodeResult:
    """Reset ``env`` with ``seed`` and let ``policy_fn`` act until the episode ends.

    ``keys`` are the observation keys the policy reads (low-dim then image keys); the window
    holds only those. ``video_camera`` records a frame of that camera at ``video_size`` (H, W)
    after reset and after every step. ``max_steps`` ends the episode earlier than the task's
    own limit (a quick look; such an episode counts as failed unless it succeeded).
    ``execution`` configures the engine that executes the chunks (None: the synchronous loop);
    ``executor`` the deployed stack around it (None: none, the engine drives the cell);
    ``inference_latency_s`` is the simulated time from an observation to its chunk, and
    ``action_offset_steps`` the policy's action timing (its bundle's ``offset_steps``).
    ``perception`` turns each observation into the one the policy sees, or loses it
    (:mod:`policy_runtime.evaluation.perception`): needs the engine, which then waits for a
    fresh one before asking for a chunk.
    """
    if n_obs_steps < 1 or n_action_steps < 1:
        raise ValueError(
            f"n_obs_steps and n_action_steps must be >= 1, got {n_obs_steps}, {n_action_steps}"
        )
    if inference_latency_s < 0:
        raise ValueError(f"inference_latency_s must be >= 0, got {inference_latency_s}")
    if (inference_latency_s or executor is not None or perception) and execution is None:
        raise ValueError(
            "a simulated inference latency, the deployed stack or perception needs the engine"
        )
    if execution is not None and env.options.action_space != execution.action_space:
        raise ValueError(
            f"the engine plans {execution.action_space!r} actions, the env takes "
            f"{env.options.action_space!r} ones"
        )
    if executor is not None and executor.loop.controller_hz != env.options.cell.control_hz:
        raise ValueError(
            f"the executor config's controller runs at {executor.loop.controller_hz:g} Hz, the "
            f"simulated cell at {env.options.cell.control_hz:g} Hz"
        )
    if isinstance(policy_fn, SeededPolicyFn):
        policy_fn.reset(seed)
    obs = env.reset(seed)
    missing = [key for key in keys if key not in obs]
    if missing:
        raise ValueError(
            f"the policy reads observation key(s) {missing} that task {env.task.name!r} does "
            f"not provide; it provides {sorted(obs)}"
        )
    history: deque[dict[str, np.ndarray]] = deque(maxlen=n_obs_steps)
    height, width = video_size
    frames: list[np.ndarray] = []

    def record() -> None:
        if video_camera is not None:
            frames.append(env.render(video_camera, width, height))

    def finished() -> bool:
        return env.done or (max_steps is not None and env.steps >= max_steps)

    digest = hashlib.sha256()
    lost = 0

    def request(prefix: ChunkPrefix | None) -> np.ndarray:
        window = {key: np.stack([o[key] for o in history]) for key in keys}
        chunk = np.asarray(policy_fn(window) if prefix is None else policy_fn(window, prefix))
        if chunk.ndim != 2 or chunk.shape[0] < n_action_steps:
            raise ValueError(
                f"the policy returned an action chunk of shape {chunk.shape}; expected "
                f"(>= {n_action_steps}, action_dim)"
            )
        return chunk

    def observed(obs: dict[str, np.ndarray]) -> bool:
        """Keep the observation the policy sees (at the start: repeated to fill the window);
        False when perception lost it."""
        nonlocal lost
        record()
        seen = obs if perception is None else perception(env, obs)
        if seen is None:
            lost += 1
            return False
        history.extend([seen] * (n_obs_steps if not history else 1))
        return True

    def record_command(q: np.ndarray, gripper: float | None) -> None:
        digest.update(np.asarray(q, np.float64).tobytes())
        digest.update(np.float64(np.nan if gripper is None else gripper).tobytes())

    fresh = observed(obs)
    calls = 0
    interventions: dict[str, int] = {}
    holds: dict[str, int] = {}
    if execution is None:
        while not finished():
            chunk = request(None)
            calls += 1
            for action in chunk[:n_action_steps]:
                digest.update(np.asarray(action, np.float64).tobytes())
                observed(env.step(action))
                if finished():
                    break
    else:
        run = _run_engine(
            env,
            request,
            record_command,
            observed,
            fresh,
            finished,
            (n_action_steps, action_offset_steps),
            execution,
            executor,
            inference_latency_s,
        )
        calls = run.calls
        if run.loop is not None:
            interventions = {k: v for k, v in run.loop.safety.counts.items() if v}
            holds = {k: v for k, v in run.loop.counts.items() if v}
    return PolicyEpisodeResult(
        seed=seed,
        success=env.success(),
        score=env.score(),
        steps=env.steps,
        policy_calls=calls,
        actions_sha256=digest.hexdigest()[:16],
        frames=np.stack(frames) if frames else None,
        interventions=interventions,
        holds=holds,
        observations_lost=lost,
    )
