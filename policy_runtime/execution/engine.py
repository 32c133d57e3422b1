"""Chunk scheduling: which predicted action the robot is sent at every controller tick, and when.

The policy predicts chunks of ``H`` actions from observations stamped ``t_obs``; action ``i`` is
due at ``t_obs + i * dt`` (the architecture's time rule). By the time a chunk arrives, inference
has taken ``now - t_obs`` seconds and its first actions are already in the past. The engine:

0. refuses a chunk that is not a plan (NaN or inf, the wrong shape, a degenerate rotation,
   stamps that do not increase): it is counted and reported, never raised, and it ends the
   request in flight like any answer, so the next request need not wait for a timeout;
1. drops every action due before ``now + latency_margin_s`` (Diffusion Policy's wall-clock
   scheme: never command an action whose stamp has passed) and counts them; a chunk with nothing
   left is reported and ignored, and the robot goes on with the plan it had;
2. merges the remaining actions into the plan according to the mode (below);
3. splices the new plan onto the old one at ``now`` (a waypoint with the old plan's current
   target, and for a cubic its velocity), so the command never jumps when a chunk arrives;
4. answers :meth:`ExecutionEngine.command` at each controller tick by interpolating the plan
   (:mod:`policy_runtime.execution.interpolation`), or ``None`` once the plan has run out;
5. says when to ask for the next chunk (:meth:`ExecutionEngine.should_request`), from the
   measured delays, so the plan does not run out while at most one request is in flight.

Modes, one per deployment (``ExecutionConfig.mode``):

* ``replace`` (receding horizon, Diffusion Policy): the new chunk's future actions replace the
  plan. The chunk is meant to execute ``n_action_steps`` actions; its other actions are a fallback
  tail, used only if the next chunk is late. Right for fast, reactive policies and low latency
  (a one-step drifting policy): every chunk is used as predicted, nothing lags. Independent
  samples of a multimodal policy can disagree, which shows as a kink at each switch.
* ``temporal_ensemble`` (ACT): each due time gets the weighted mean of every chunk that predicted
  it, weights ``exp(-m * i)`` with ``i = 0`` the oldest prediction. Smoothest, but it lags (old
  predictions keep a say) and it costs an inference every policy step; averaging two modes of a
  multimodal policy gives an action neither mode would take. Right for unimodal policies with
  cheap inference.
* ``aggregate`` (LeRobot async): where the new chunk overlaps the plan, ``w_old * old +
  (1 - w_old) * new`` (default 0.3 / 0.7). Right for asynchronous inference with moderate latency:
  smoother switches than ``replace`` at one inference per chunk, less lag than the ensemble.
* ``rtc`` (real-time chunking, Black et al. 2025): the actions that execute while the next chunk
  is computed (the first ``d`` of it) keep their committed values, and the sampler is guided
  toward the rest of the plan (:meth:`ExecutionEngine.rtc_prefix` gives it the prefix and the
  soft mask; the guidance itself is the sampler's). Right for large inference delays with
  diffusion/flow policies, where ``replace`` would switch to a chunk that disagrees with what the
  robot is already doing. Without guidance it is ``replace`` with a frozen prefix.

numpy only; time comes from the injected :class:`~policy_runtime.execution.clock.Clock`. The
engine answers ``command(t)`` at any ``t``: the controller rate is the control loop's
(:class:`~policy_runtime.execution.control_loop.LoopConfig`), stated there once. Not
thread-safe: call it from one thread, or under one lock. ``command`` costs a few microseconds and
``submit`` tens to hundreds (``python -m bench.execution``), less than one 500 Hz tick, so a
control loop can take a chunk between two ticks.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from policy_runtime.chunk import ActionChunk
from policy_runtime.execution.clock import Clock
from policy_runtime.execution.interpolation import (
    ACTION_DIMS,
    ActionSpace,
    Interpolation,
    Trajectory,
    blend_actions,
)
from policy_runtime.robots.poses import valid_rot6d

ExecutionMode = Literal["replace", "temporal_ensemble", "aggregate", "rtc"]
#: What became of a chunk: the engine's verdicts, then the control loop's (a chunk the
#: loop's state does not take, one observed before a resume began, one that starts too far from
#: the arm to resume with).
SubmitStatus = Literal[
    "accepted",
    "stale",
    "out_of_order",
    "future",
    "invalid",
    "holding",
    "not_fresh",
    "far_from_arm",
]

#: Stamps closer than this are one instant: sums of ``dt`` drift by ~1e-16 s, ticks are >= 1 ms.
TIME_EPS = 1e-9


class ExecutionConfig(BaseModel):
    """How chunks become controller commands; one per deployment (see the module doc for modes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ExecutionMode = "replace"
    action_space: ActionSpace = "joint"
    #: Between waypoints: ``linear``, or ``cubic`` (C1, joint actions only).
    interpolation: Interpolation = "linear"
    #: Actions due before ``now + latency_margin_s`` are dropped (Diffusion Policy uses ~10 ms:
    #: the time from the command to the controller acting on it).
    latency_margin_s: float = Field(default=0.01, ge=0)
    #: Actions of a chunk to execute before the next observation (replace, aggregate) and the RTC
    #: execution horizon ``s``; None = the chunk's ``n_action_steps``.
    execution_horizon: int | None = Field(default=None, ge=1)
    #: Temporal ensemble: weight ``exp(-m * i)`` of the ``i``-th oldest prediction of a step
    #: (ACT's 0.01 is nearly a plain mean; larger trusts old predictions more).
    ensemble_decay: float = Field(default=0.01, ge=0)
    #: Aggregate: weight of the plan on steps the new chunk overlaps (LeRobot: 0.3).
    aggregate_old_weight: float = Field(default=0.3, ge=0, le=1)
    #: Request timing plans for this quantile of the recent delays (1.0 = the max, the safe one).
    request_latency_quantile: float = Field(default=1.0, gt=0, le=1)
    #: Extra lead on top of the latency estimate when timing a request.
    request_margin_s: float = Field(default=0.01, ge=0)
    #: A request unanswered for this long is counted lost and another may start.
    request_timeout_s: float = Field(default=1.0, gt=0)
    #: Recent delays kept for the latency estimate and the stats.
    latency_window: int = Field(default=50, ge=1)

    @model_validator(mode="after")
    def _cubic_needs_joints(self) -> ExecutionConfig:
        if self.interpolation == "cubic" and self.action_space != "joint":
            raise ValueError(
                "interpolation='cubic' needs action_space='joint' "
                "(end-effector actions interpolate linearly with SLERP)"
            )
        return self


@dataclass(frozen=True)
class SubmitReport:
    """What became of one chunk."""

    #: accepted; stale (no action of it was still usable); out_of_order (observed before the
    #: plan's chunk); future (``t_obs`` after now: the clocks disagree, e.g. a sim reset);
    #: invalid (not a plan: ``detail`` says why); and the control loop's refusals (see
    #: :data:`SubmitStatus`).
    status: SubmitStatus
    #: Engine clock when it arrived.
    arrival: float
    #: ``arrival - t_obs``: observation age + inference + transport (NaN for an invalid chunk).
    delay: float
    #: Actions due before ``arrival + latency_margin_s``, dropped.
    stale_dropped: int
    #: RTC: future actions replaced by the committed ones (they execute during inference).
    rtc_skipped: int
    #: Actions of the chunk that entered the plan.
    used: int
    #: Why a chunk was refused, in words (names the field, the distance, ...); "" otherwise.
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


@dataclass(frozen=True)
class ExecutionStats:
    """Counters since the engine was made (``reset`` keeps them), and recent latency."""

    chunks_accepted: int = 0
    #: Chunks of which every action was stale (or, with RTC, committed) on arrival.
    stale_chunks: int = 0
    out_of_order_chunks: int = 0
    future_chunks: int = 0
    #: Chunks refused as no plan at all (NaN/inf, wrong shape, bad rotation or stamps).
    invalid_chunks: int = 0
    stale_actions_dropped: int = 0
    rtc_actions_skipped: int = 0
    #: Times the plan ran out (``command`` returned None after a plan): the robot idled.
    run_outs: int = 0
    requests_lost: int = 0
    #: Over the last ``latency_window`` chunks; NaN before the first.
    latency_p50_s: float = math.nan
    latency_max_s: float = math.nan


@dataclass(frozen=True)
class RtcPrefix:
    """What a real-time-chunking sampler needs to guide the chunk predicted from ``t_obs``."""

    t_obs: float
    #: Y (H, D): the plan at the chunk's due times ``t_obs + (i + offset) * dt``, held at its
    #: last value past its end.
    actions: np.ndarray
    #: W (H,): 1 for ``i < d``, decaying to 0 at ``H - s``, 0 after (:func:`rtc_prefix_weights`).
    weights: np.ndarray
    #: d: actions of the chunk that will be due before it arrives (from the max recent delay).
    delay_steps: int
    #: s: steps of the new grid past the end of the plan (the plan has no action for them).
    execution_horizon: int


def rtc_prefix_weights(delay_steps: int, execution_horizon: int, horizon: int) -> np.ndarray:
    """Real-time chunking's soft mask W over a chunk of ``horizon`` steps.

    ``W[i] = 1`` for ``i < d`` (those actions execute during inference whatever the sampler
    does), ``c * (e^c - 1) / (e - 1)`` with ``c = (H - s - i) / (H - s - d + 1)`` for
    ``d <= i < H - s`` (an exponential decay: trust the plan less the further it looks ahead),
    ``0`` for ``i >= H - s`` (the plan has nothing there). Where ``d > H - s``, ``H - s`` wins.
    """
    if not 0 <= execution_horizon <= horizon:
        raise ValueError(f"execution_horizon must be in [0, {horizon}], got {execution_horizon}")
    if delay_steps < 0:
        raise ValueError(f"delay_steps must be >= 0, got {delay_steps}")
    end = horizon - execution_horizon
    start = min(delay_steps, end)
    i = np.arange(horizon, dtype=np.float64)
    c = np.clip((end - i) / (end - start + 1), 0.0, 1.0)
    w = c * np.expm1(c) / (math.e - 1)
    w[i < start] = 1.0
    w[i >= end] = 0.0
    return w


class _ChunkInfo(NamedTuple):
    """The last accepted chunk, which request timing and the RTC grid are anchored to."""

    t_obs: float
    dt: float
    #: The chunk's stamps (seconds after ``t_obs``): where the next chunk's grid lies.
    stamps: np.ndarray
    execute_steps: int

    @property
    def horizon(self) -> int:
        return len(self.stamps)


class ExecutionEngine:
    """Merges arriving chunks into one stamped plan and interpolates it at controller ticks."""

    def __init__(self, config: ExecutionConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self._stats = ExecutionStats()
        self._delays: deque[float] = deque(maxlen=config.latency_window)
        self._plan: Trajectory | None = None
        #: Temporal ensemble: each chunk still covering the future, oldest first.
        self._chunks: list[Trajectory] = []
        self._last: _ChunkInfo | None = None
        self._ran_out = False
        self._in_flight_since: float | None = None
        #: RTC: (t_obs, d) of the last prefix handed out, so the chunk skips the d it was told.
        self._rtc_issued: tuple[float, int] | None = None

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def plan(self) -> Trajectory | None:
        """The current plan (absolute stamps), or None before the first chunk or after reset."""
        return self._plan

    @property
    def stats(self) -> ExecutionStats:
        """A snapshot of the counters with the recent latency percentiles."""
        if not self._delays:
            return self._stats
        delays = np.asarray(self._delays)
        return dataclasses.replace(
            self._stats,
            latency_p50_s=float(np.median(delays)),
            latency_max_s=float(delays.max()),
        )

    def reset(self) -> None:
        """Forget the plan and any request in flight; keep the latency history (the policy did
        not get faster) and the counters. Call it for a new episode and whenever the clock jumps
        back (a sim reset): until then, chunks observed before the plan's are refused."""
        self._plan = None
        self._chunks = []
        self._last = None
        self._ran_out = False
        self._in_flight_since = None
        self._rtc_issued = None

    def chunk_problem(self, chunk: ActionChunk, t_obs: float) -> str | None:
        """Why ``chunk`` (observed at ``t_obs``) is no plan at all, or None when it is one.
        Anything may come in here (a decoded message): nothing is assumed of its types."""
        space = self.config.action_space
        if not isinstance(chunk, ActionChunk):
            return f"not an ActionChunk: {type(chunk).__name__}"
        if isinstance(t_obs, (str, bytes)):
            return f"t_obs is {t_obs!r}"
        try:
            t = float(t_obs)
            actions = np.asarray(chunk.actions, dtype=np.float64)
            stamps = np.asarray(chunk.stamps, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            return "t_obs, actions and stamps must be numbers"
        if not math.isfinite(t):
            return f"t_obs is {t}"
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIMS[space]:
            return (
                f"actions must be (n, {ACTION_DIMS[space]}) for action_space={space!r}, "
                f"got {actions.shape}"
            )
        if not np.all(np.isfinite(actions)):
            bad = np.argwhere(~np.isfinite(actions))[0]
            return f"actions[{bad[0]}, {bad[1]}] is {actions[bad[0], bad[1]]}"
        if stamps.shape != (len(actions),) or not (
            np.all(np.isfinite(stamps)) and np.all(np.diff(t + stamps) > 0)
        ):
            return "stamps must be finite and increasing"
        if space == "ee" and not np.all(valid_rot6d(actions[:, 3:9])):
            return f"actions[{int(np.argmin(valid_rot6d(actions[:, 3:9])))}] has no valid rotation"
        return None

    def first_usable_action(self, chunk: ActionChunk, t_obs: float) -> np.ndarray | None:
        """The action of a valid ``chunk`` that would be executed first if it were submitted
        now: the first one due at or after ``now + latency_margin_s`` (None: all stale)."""
        fresh = np.flatnonzero(self._fresh(chunk.absolute_stamps(t_obs), self._clock.now()))
        return np.asarray(chunk.actions[fresh[0]], dtype=np.float64) if len(fresh) else None

    def _fresh(self, due: np.ndarray, now: float) -> np.ndarray:
        """Which of the due times ``due`` are still usable at ``now`` (plus the margin)."""
        return due >= now + self.config.latency_margin_s - TIME_EPS

    def submit(self, chunk: ActionChunk, t_obs: float) -> SubmitReport:
        """Merge ``chunk``, predicted from observations whose newest stamp is ``t_obs``.

        Ends the request in flight, whatever becomes of the chunk; never raises on a bad chunk
        (it is refused as ``invalid``, with the reason in ``detail``).
        """
        cfg = self.config
        now = self._clock.now()
        self._in_flight_since = None
        problem = self.chunk_problem(chunk, t_obs)
        if problem is not None:
            self._count(invalid_chunks=1)
            return SubmitReport("invalid", now, math.nan, 0, 0, 0, detail=problem)
        t_obs = float(t_obs)
        actions = np.asarray(chunk.actions, dtype=np.float64)
        delay = now - t_obs
        if delay < -TIME_EPS:  # not a latency: the stamps and the engine use different clocks
            self._count(future_chunks=1)
            return SubmitReport("future", now, delay, 0, 0, 0)
        if self._last is not None and t_obs < self._last.t_obs:
            # A lost request's late answer, or a clock that jumped back: no latency to learn.
            self._count(out_of_order_chunks=1)
            return SubmitReport("out_of_order", now, delay, 0, 0, 0)
        rtc_delay = self._rtc_delay_for(t_obs, chunk)  # before this delay joins the history
        self._delays.append(delay)

        due = chunk.absolute_stamps(t_obs)
        fresh = self._fresh(due, now)
        used = fresh.copy()
        old = self._plan
        if cfg.mode == "rtc" and old is not None:
            # Steps that run during inference keep the plan's (committed) actions, where it has any.
            committed = (np.arange(len(due)) < rtc_delay) & (due <= old.end + TIME_EPS)
            used &= ~committed
        n_stale = int(np.count_nonzero(~fresh))
        n_skipped = int(np.count_nonzero(fresh & ~used))
        if not used.any():
            self._count(stale_chunks=1, stale_actions_dropped=n_stale)
            return SubmitReport("stale", now, delay, n_stale, n_skipped, 0)

        times, new = due[used], actions[used]
        if cfg.mode == "temporal_ensemble":
            self._chunks = [c for c in self._chunks if c.end >= now]
            self._chunks.append(Trajectory(due, actions, cfg.action_space, cfg.interpolation))
        values = self._merge(times, new)
        self._plan = self._splice(now, times, values, keep_old=cfg.mode == "rtc")
        execute = min(cfg.execution_horizon or chunk.n_action_steps, len(due))
        self._last = _ChunkInfo(t_obs, chunk.dt, np.asarray(chunk.stamps, np.float64), execute)
        self._ran_out = False
        self._rtc_issued = None
        self._count(chunks_accepted=1, stale_actions_dropped=n_stale, rtc_actions_skipped=n_skipped)
        return SubmitReport("accepted", now, delay, n_stale, n_skipped, len(times))

    def command(self, t: float) -> np.ndarray | None:
        """The action-space target at controller tick ``t``, or None: no plan yet, or the plan
        has run out (the caller holds the robot; each run-out is counted once)."""
        plan = self._plan
        if plan is None:
            return None
        if t > plan.end + TIME_EPS:
            if not self._ran_out:
                self._ran_out = True
                self._count(run_outs=1)
            return None
        return plan(t)

    def rtc_prefix(self, t_obs: float) -> RtcPrefix | None:
        """The committed prefix and soft mask for the chunk about to be predicted from ``t_obs``.

        None before the first chunk (nothing committed: sample unguided). The ``d`` handed out
        here is the one :meth:`submit` skips when that chunk arrives.
        """
        if self.config.mode != "rtc":
            raise ValueError(f"rtc_prefix needs mode='rtc', the engine runs {self.config.mode!r}")
        plan, last = self._plan, self._last
        if plan is None or last is None:
            return None
        grid = t_obs + last.stamps
        s = last.horizon - int(np.count_nonzero(grid <= plan.end + TIME_EPS))
        d = self._delay_steps(last.dt, float(last.stamps[0]))
        self._rtc_issued = (t_obs, d)
        return RtcPrefix(t_obs, plan.sample(grid), rtc_prefix_weights(d, s, last.horizon), d, s)

    def next_request_time(self) -> float:
        """When to take the next observation and start inference (-inf: now).

        With ``L`` the latency estimate plus ``request_margin_s``, the earliest of: the time the
        mode wants a new chunk (replace/aggregate: ``L`` before the chunk's executed steps end;
        temporal ensemble: one policy step after the last observation, ACT's rate; RTC: ``s``
        steps after it), and ``L`` before the plan ends, so it never runs out.
        """
        plan, last = self._plan, self._last
        if plan is None or last is None:
            return -math.inf
        lead = self._latency_estimate() + self.config.request_margin_s
        mode = self.config.mode
        if mode == "temporal_ensemble":
            wanted = last.t_obs + last.dt
        elif mode == "rtc":
            wanted = last.t_obs + last.execute_steps * last.dt
        else:
            wanted = last.t_obs + last.execute_steps * last.dt - lead
        return min(wanted, plan.end - lead)

    def should_request(self, t: float) -> bool:
        """Whether to start a request at ``t``: it is time, and none is in flight."""
        since = self._in_flight_since
        if since is not None and t - since < self.config.request_timeout_s:
            return False
        return t >= self.next_request_time()

    def request_ended(self) -> None:
        """The request in flight was answered by a chunk that never reached :meth:`submit`
        (the control loop refused it): another may start at once."""
        self._in_flight_since = None

    def request_started(self, t: float) -> None:
        """Record a request started at ``t``; the next :meth:`submit` ends it."""
        since = self._in_flight_since
        if since is not None:
            if t - since < self.config.request_timeout_s:
                raise RuntimeError(f"a request has been in flight since {since}: one at a time")
            self._count(requests_lost=1)
        self._in_flight_since = t

    def _count(self, **increments: int) -> None:
        self._stats = dataclasses.replace(
            self._stats, **{k: getattr(self._stats, k) + v for k, v in increments.items()}
        )

    def _latency_estimate(self) -> float:
        if not self._delays:
            return 0.0
        return float(np.quantile(np.asarray(self._delays), self.config.request_latency_quantile))

    def _delay_steps(self, dt: float, first_due: float) -> int:
        """RTC's d: actions of a chunk (the first due ``first_due`` after its observation) that
        fall before the first one still usable on arrival, from the max recent delay
        (conservative) plus the latency margin."""
        if not self._delays:
            return 0
        late = max(self._delays) + self.config.latency_margin_s - first_due
        return max(0, math.ceil(late / dt - TIME_EPS))

    def _rtc_delay_for(self, t_obs: float, chunk: ActionChunk) -> int:
        issued = self._rtc_issued
        if issued is not None and abs(issued[0] - t_obs) <= TIME_EPS:
            return issued[1]
        return self._delay_steps(chunk.dt, float(chunk.stamps[0]))

    def _merge(self, times: np.ndarray, new: np.ndarray) -> np.ndarray:
        """The plan's values at ``times`` (the new chunk's used stamps), per mode."""
        cfg, old = self.config, self._plan
        if cfg.mode == "aggregate" and old is not None:
            w_old = np.where(times <= old.end + TIME_EPS, cfg.aggregate_old_weight, 0.0)
            return blend_actions(
                np.stack([old.sample(times), new]), np.stack([w_old, 1 - w_old]), cfg.action_space
            )
        if cfg.mode == "temporal_ensemble":
            covered = np.stack(
                [(c.start - TIME_EPS <= times) & (times <= c.end + TIME_EPS) for c in self._chunks]
            )
            rank = np.cumsum(covered, axis=0) - 1  # 0 = the oldest prediction of that step
            weights = np.where(covered, np.exp(-cfg.ensemble_decay * rank), 0.0)
            predictions = np.stack([c.sample(times) for c in self._chunks])
            return blend_actions(predictions, weights, cfg.action_space)
        return new

    def _splice(
        self, now: float, times: np.ndarray, values: np.ndarray, keep_old: bool
    ) -> Trajectory:
        """The new plan: from the old plan's target at ``now`` (and, RTC, its waypoints before
        the new ones) to the new waypoints, so the command is continuous across the switch."""
        cfg, old = self.config, self._plan
        if old is None:
            return Trajectory(times, values, cfg.action_space, cfg.interpolation)
        if times[0] > now + TIME_EPS:
            kept = (old.times > now + TIME_EPS) & (old.times < times[0] - TIME_EPS) & keep_old
            times = np.concatenate([[now], old.times[kept], times])
            values = np.concatenate([old(now)[None], old.values[kept], values])
        start_velocity = old.velocity(now) if cfg.interpolation == "cubic" else None
        return Trajectory(times, values, cfg.action_space, cfg.interpolation, start_velocity)
