"""The policy server without ROS: observations in by stamp, a chunk out per request.

:class:`PolicyServerCore` keeps the stamped history of every observation key the bundle reads,
and answers a request made at ``t_request`` with the chunk predicted from the window ending at
the newest time all streams have reached (not after ``t_request``): that time is the chunk's
``t_obs``, from which its actions are due. It also describes the policy to the executor
(:class:`PolicyInfo`) and keeps the figures the diagnostics report. The ROS 2 node
(:mod:`policy_runtime.ros.policy_server`) is an adapter around it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from policy_runtime.chunk import ActionChunk, ChunkPrefix
from policy_runtime.inference.runtime import ObservationError, PolicyRuntime
from policy_runtime.serving.config import ServerConfig
from policy_runtime.serving.history import ObservationHistory, Window


class PolicyInfo(BaseModel):
    """What the executor must know about a server's chunks (published latched, as JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    action_space: Literal["ee", "joint"]
    action_dim: int = Field(gt=0)
    #: Actions per chunk and how many to execute before the next request.
    chunk_length: int = Field(gt=0)
    n_action_steps: int = Field(gt=0)
    #: The policy period and action ``i``'s due time ``(i + offset_steps) * dt`` after t_obs.
    dt: float = Field(gt=0)
    offset_steps: int = Field(ge=0)
    obs_keys: tuple[str, ...]

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> PolicyInfo:
        """Parse (never unpickle) and validate; raises ValueError naming the field."""
        return cls.model_validate(json.loads(text))


@dataclass(frozen=True)
class Answer:
    """A request's outcome: the chunk and its ``t_obs``, or None and why."""

    chunk: ActionChunk | None
    t_obs: float | None
    #: Wall-clock seconds the prediction took (0 without one).
    inference_s: float = 0.0
    gaps: tuple[str, ...] = ()
    problem: str | None = None


@dataclass(frozen=True)
class StatsSnapshot:
    chunks: int
    refused: dict[str, int]
    #: Inference time p50 and p99 in seconds (NaN before the first chunk).
    inference_p50_s: float
    inference_p99_s: float
    #: Chunks per second of the clock they were stamped with, recently.
    chunk_rate_hz: float


class ServerStats:
    """Figures for the diagnostics: answered and refused requests, inference times. Written by
    the inference thread, read by the diagnostics timer: every access takes the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.chunks = 0
        self.refused: dict[str, int] = {}
        self._inference_s: deque[float] = deque(maxlen=500)
        self._chunk_times: deque[float] = deque(maxlen=50)

    def chunk(self, t_obs: float, inference_s: float) -> None:
        with self._lock:
            self.chunks += 1
            self._inference_s.append(inference_s)
            self._chunk_times.append(t_obs)

    def refusal(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] = self.refused.get(reason, 0) + 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            inference = np.asarray(list(self._inference_s))
            times = list(self._chunk_times)
            refused = dict(self.refused)
            chunks = self.chunks
        nan = float("nan")
        p50 = float(np.quantile(inference, 0.5)) if inference.size else nan
        p99 = float(np.quantile(inference, 0.99)) if inference.size else nan
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        rate = (len(times) - 1) / span if span > 0 else 0.0
        return StatsSnapshot(chunks, refused, p50, p99, rate)


class PolicyServerCore:
    """Observation history + policy runtime (see the module docs).

    ``seed`` seeds the sampler's noise, re-seeded by :meth:`reset` (an episode is then a pure
    function of the policy, the observations and the seed, as in ``prt eval``);
    ``execution_horizon`` overrides the bundle's ``n_action_steps``.
    """

    def __init__(
        self,
        runtime: PolicyRuntime,
        config: ServerConfig,
        *,
        seed: int = 0,
        inference_steps: int | None = None,
        execution_horizon: int | None = None,
    ) -> None:
        specs = runtime.specs
        self.runtime = runtime
        self.sources = config.for_policy(specs)
        keys = runtime.obs_keys
        self.history = ObservationHistory(
            config.streams(keys),
            runtime.n_obs_steps,
            1.0 / specs.control_hz,
            config.max_gap_periods,
        )
        n_action_steps = execution_horizon or specs.action.n_action_steps
        if not 1 <= n_action_steps <= runtime.chunk_length:
            raise ValueError(
                f"execution horizon {n_action_steps}: the policy's chunks hold "
                f"{runtime.chunk_length} actions"
            )
        self.info = PolicyInfo(
            kind=specs.kind,
            action_space=specs.action.representation,  # type: ignore[arg-type]
            action_dim=specs.action.dim,
            chunk_length=runtime.chunk_length,
            n_action_steps=n_action_steps,
            dt=1.0 / specs.control_hz,
            offset_steps=specs.action.offset_steps,
            obs_keys=tuple(keys),
        )
        self.inference_steps = inference_steps
        self.stats = ServerStats()
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int, since: float) -> None:
        """A new episode: forget the history (and refuse samples stamped before ``since``),
        re-seed the sampler."""
        self.history.clear(since)
        self._rng = np.random.default_rng(seed)

    def observe(self, key: str, stamp: float, value: np.ndarray) -> bool:
        return self.history.add(key, stamp, value)

    def t_obs_for(self, t_request: float) -> float | None:
        """The newest time every stream has reached, capped at ``t_request``."""
        newest = self.history.newest_common_stamp()
        return None if newest is None else min(newest, t_request)

    def answer(self, t_request: float, prefix: ChunkPrefix | None = None) -> Answer:
        """The chunk for a request at ``t_request`` (``prefix``: the executor's committed
        actions, real-time chunking). Never raises on bad data: the answer names the problem."""
        window = self.window_for(t_request)
        if isinstance(window, Answer):
            return window
        return self.predict(window, prefix)

    def window_for(self, t_request: float, exact: bool = False) -> Window | Answer:
        """The observation window a request at ``t_request`` is answered from (a refusal when
        there is none). Cheap: a server takes it under its lock, then predicts outside it.
        ``exact``: the window ends at ``t_request`` itself (a lockstep simulation, where every
        stream's data up to it has been waited for), not at the newest time all streams reached
        (which there could depend on which later message came first)."""
        t_obs = t_request if exact else self.t_obs_for(t_request)
        if t_obs is None:
            missing = [k for k in self.history.keys if self.history.newest_stamp(k) is None]
            return self._refuse("no_observations", f"no sample yet of {missing}")
        if t_request < self.history.since:
            return self._refuse("before_reset", f"a request of {t_request:.3f}, before the reset")
        window = self.history.window(t_obs)
        if window is None:
            return self._refuse("no_observations", f"no window at {t_obs:.3f}")
        return window

    def predict(self, window: Window, prefix: ChunkPrefix | None = None) -> Answer:
        """The chunk predicted from ``window``; draws the sampler's noise (one caller at a
        time)."""
        start = time.perf_counter()
        try:
            chunk = self.runtime.predict(
                window.obs, self._rng, num_inference_steps=self.inference_steps, prefix=prefix
            )
        except ObservationError as exc:
            return self._refuse("bad_observation", str(exc))
        except ValueError as exc:  # a prefix the sampler refuses (NaN, weights outside [0, 1])
            return self._refuse("bad_request", str(exc))
        elapsed = time.perf_counter() - start
        chunk = ActionChunk(chunk.actions, chunk.stamps, self.info.n_action_steps, chunk.dt)
        self.stats.chunk(window.t_obs, elapsed)
        return Answer(chunk, window.t_obs, elapsed, window.gaps)

    def _refuse(self, reason: str, detail: str) -> Answer:
        self.stats.refusal(reason)
        return Answer(None, None, problem=f"{reason}: {detail}")
