"""The policy loop in simulation: the one place where a policy drives an env episode.

Keep the last ``n_obs_steps`` observations (at the start, the first observation repeated), ask
the policy for chunks, and step the env until ``env.done`` (success or the task's step limit)
or ``max_steps``. Chunks are executed by the robot's own
:class:`~policy_runtime.execution.ExecutionEngine` on sim time: it decides when to ask for the
next chunk, drops actions whose time has passed, and blends chunks as its mode says. A
simulated ``inference_latency_s`` delivers each chunk that long after its observation while the
env keeps executing the plan, which is how the robot sees a slow policy. With no latency and
``replace`` mode this is Diffusion Policy's synchronous receding horizon (execute
``n_action_steps``, re-plan). ``execution=None`` runs that synchronous loop without the engine,
the reference the engine is tested against.

Torch-free: a policy is any callable from an observation window to an action chunk (numpy).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from policy_runtime.execution import ExecutionConfig, ExecutionEngine, FakeClock
from policy_runtime.inference.chunk import ActionChunk, ChunkPrefix

if TYPE_CHECKING:
    from sim_bridge.env import SimEnv

#: ``policy_fn(window) -> chunk``: ``window[key]`` is ``(n_obs_steps, *shape)``, oldest first;
#: the chunk is ``(>= n_action_steps, action_dim)`` of unnormalised actions, the first of which
#: is due now.
#: Real-time chunking calls ``policy_fn(window, prefix)`` with the engine's committed prefix
#: (:class:`~policy_runtime.inference.chunk.ChunkPrefix`); every other mode ``policy_fn(window)``.
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
    #: sha256 (hex, 16 digits) of every executed action: equal digests, identical behaviour.
    actions_sha256: str = ""
    #: Video frames ``(steps + 1, H, W, 3)`` uint8: after reset, then after every step.
    frames: np.ndarray | None = None


def _run_engine(
    env: SimEnv,
    request: Callable[[ChunkPrefix | None], np.ndarray],
    act: Callable[[np.ndarray], None],
    finished: Callable[[], bool],
    n_action_steps: int,
    config: ExecutionConfig,
    latency: float,
) -> int:
    """The engine on sim time, stepping at the policy rate; returns the chunks requested.

    At each policy step (``t = steps * period``, the policy grid; the env's own clock rounds
    each period to whole controller ticks): deliver a chunk whose simulated inference has
    ended, start a request when the engine asks for one (one in flight), then execute the
    engine's target for ``t`` (holding the last command while there is none).
    """
    dt = env.policy_period_s
    clock = FakeClock(0.0)
    engine = ExecutionEngine(config, clock)
    pending: tuple[float, float, ActionChunk] | None = None  # (arrival, t_obs, chunk)
    calls = 0
    while not finished():
        t = env.steps * dt
        clock.set(t)
        if pending is not None and pending[0] <= t + 1e-9:
            engine.submit(pending[2], pending[1])
            pending = None
        if pending is None and engine.should_request(t):
            engine.request_started(t)
            prefix = engine.rtc_prefix(t) if config.mode == "rtc" else None
            chunk = ActionChunk.from_actions(request(prefix), n_action_steps, dt)
            calls += 1
            if latency > 0:
                pending = (t + latency, t, chunk)
            else:
                engine.submit(chunk, t)
        target = engine.command(t)
        if target is None:  # no chunk yet, or the plan ran out: hold the last command
            target = env.last_action_ee if config.action_space == "ee" else env.last_action_joint
        act(target)
    return calls


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
    inference_latency_s: float = 0.0,
) -> PolicyEpisodeResult:
    """Reset ``env`` with ``seed`` and let ``policy_fn`` act until the episode ends.

    ``keys`` are the observation keys the policy reads (low-dim then image keys); the window
    holds only those. ``video_camera`` records a frame of that camera at ``video_size`` (H, W)
    after reset and after every step. ``max_steps`` ends the episode earlier than the task's
    own limit (a quick look; such an episode counts as failed unless it succeeded).
    ``execution`` configures the engine that executes the chunks (None: the synchronous loop);
    ``inference_latency_s`` is the simulated time from an observation to its chunk.
    """
    if n_obs_steps < 1 or n_action_steps < 1:
        raise ValueError(
            f"n_obs_steps and n_action_steps must be >= 1, got {n_obs_steps}, {n_action_steps}"
        )
    if inference_latency_s < 0:
        raise ValueError(f"inference_latency_s must be >= 0, got {inference_latency_s}")
    if inference_latency_s and execution is None:
        raise ValueError("a simulated inference latency needs the execution engine")
    if isinstance(policy_fn, SeededPolicyFn):
        policy_fn.reset(seed)
    obs = env.reset(seed)
    missing = [key for key in keys if key not in obs]
    if missing:
        raise ValueError(
            f"the policy reads observation key(s) {missing} that task {env.task.name!r} does "
            f"not provide; it provides {sorted(obs)}"
        )
    history: deque[dict[str, np.ndarray]] = deque([obs] * n_obs_steps, maxlen=n_obs_steps)
    height, width = video_size
    frames: list[np.ndarray] = []

    def record() -> None:
        if video_camera is not None:
            frames.append(env.render(video_camera, width, height))

    def finished() -> bool:
        return env.done or (max_steps is not None and env.steps >= max_steps)

    record()
    digest = hashlib.sha256()

    def request(prefix: ChunkPrefix | None) -> np.ndarray:
        window = {key: np.stack([o[key] for o in history]) for key in keys}
        chunk = np.asarray(policy_fn(window) if prefix is None else policy_fn(window, prefix))
        if chunk.ndim != 2 or chunk.shape[0] < n_action_steps:
            raise ValueError(
                f"the policy returned an action chunk of shape {chunk.shape}; expected "
                f"(>= {n_action_steps}, action_dim)"
            )
        return chunk

    def act(action: np.ndarray) -> None:
        digest.update(np.asarray(action, np.float64).tobytes())
        history.append(env.step(action))
        record()

    calls = 0
    if execution is None:
        while not finished():
            chunk = request(None)
            calls += 1
            for action in chunk[:n_action_steps]:
                act(action)
                if finished():
                    break
    else:
        calls = _run_engine(
            env, request, act, finished, n_action_steps, execution, inference_latency_s
        )
    return PolicyEpisodeResult(
        seed=seed,
        success=env.success(),
        score=env.score(),
        steps=env.steps,
        policy_calls=calls,
        actions_sha256=digest.hexdigest()[:16],
        frames=np.stack(frames) if frames else None,
    )
