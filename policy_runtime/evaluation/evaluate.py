"""Evaluate a policy in simulation: success rate with a Wilson interval, a log, videos.

Episode ``i`` runs seed ``start_seed + i`` and is a pure function of (policy, task, variant,
options, seed): the policy's sampler noise is seeded from the episode seed too. Workers (local
processes or Ray actors, each loading the policy once) compute episodes for consecutive seeds
and the main process collects them strictly in seed order, so ``eval_log.json`` is the same
whatever the number of workers (torch's numbers can depend on its thread count, which
``torch_threads`` pins in every worker).

Chunks run through the deployed execution stack by default (engine, supervisor, watchdog, IK,
safety filter, at the controller rate inside the simulation: see
:mod:`policy_runtime.evaluation.rollout`), with the limits of an executor config
(:class:`~policy_runtime.execution.ExecutorConfig`, the defaults unless ``executor_config``
names a file), and each episode reports what the stack did (interventions, holds).

Policies come from loaders keyed by what the path holds (:data:`LOADERS`): a training
checkpoint (``config.json`` + ``model.safetensors``, or a run directory) through the torch
backend, or an exported bundle (``manifest.json``, or a ``.zip``) on onnxruntime; both behind
the runtime's ``predict`` interface, so they are evaluated by the same loop with the same
noise. Importing this module imports no torch.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from policy_runtime.chunk import ChunkPrefix
from policy_runtime.evaluation.rollout import run_policy_episode
from policy_runtime.evaluation.stats import wilson_interval
from policy_runtime.execution import ExecutorConfig
from policy_runtime.inference.manifest import MANIFEST_FILE
from policy_runtime.inference.providers import RuntimeOptions
from policy_runtime.inference.runtime import OnnxPolicy, PolicyRuntime
from policy_runtime.inference.specs import PolicySpecs
from policy_runtime.parallel import ordered_results

if TYPE_CHECKING:
    from policy_runtime.evaluation.perception import Perception
    from sim_bridge.env import SimEnv

#: ``sync`` or an execution-engine mode.
ExecutionChoice = Literal["sync", "replace", "temporal_ensemble", "aggregate", "rtc"]
#: Where a low-dim policy's object state comes from (``EvalConfig.object_state``).
ObjectStateSource = Literal["sim", "marker"]
EXECUTION_MODES: tuple[str, ...] = get_args(ExecutionChoice)
LOG_FILE = "eval_log.json"
LOG_FORMAT = "policy_runtime.eval_log"
LOG_VERSION = 1

#: ``loader(path) -> runtime``: the policy behind the runtime interface (``predict``).
PolicyLoader = Callable[[Path], PolicyRuntime]


# --- policy loaders ------------------------------------------------------------------------


def _is_checkpoint(path: Path) -> bool:
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return True
    # A training run directory: its best (else latest) checkpoint.
    return any((path / "checkpoints" / f"{n}.txt").is_file() for n in ("best", "latest"))


def _is_bundle(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file() or (path.is_file() and zipfile.is_zipfile(path))


def policy_format(path: Path) -> str:
    """``"checkpoint"`` or ``"bundle"``: which loader of :data:`LOADERS` reads ``path``."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--policy {path}: no such file or directory")
    for name, detect in FORMATS.items():
        if detect(path):
            return name
    raise ValueError(
        f"--policy {path}: neither a checkpoint (config.json + model.safetensors, or a training "
        "run directory) nor a policy bundle (manifest.json, or a .zip of one)"
    )


def load_runtime(path: Path) -> PolicyRuntime:
    """The policy at ``path`` with the loader its format calls for."""
    return LOADERS[policy_format(path)](Path(path))


def load_checkpoint_runtime(path: Path) -> PolicyRuntime:
    """A training checkpoint (torch, EMA weights) through the torch backend."""
    from policy_runtime.inference.torch_backend import load_torch_policy

    return load_torch_policy(path)


def load_bundle_at(path: Path, backend: str, precision: str, force: bool) -> PolicyRuntime:
    """A bundle on the given backend and precision (one thread, as :func:`load_bundle_runtime`);
    an unchecked precision is refused unless ``force``."""
    from policy_runtime.inference import load_policy

    return load_policy(path, options=_bundle_options(backend, precision, force))


def _bundle_options(backend: str, precision: str, force: bool) -> RuntimeOptions:
    """How evaluation loads a bundle: one thread (see :func:`load_bundle_runtime`)."""
    return RuntimeOptions(
        intra_op_threads=1,
        inter_op_threads=1,
        backend=backend,
        precision=precision,
        force_precision=force,
    )


def runtime_choice(config: EvalConfig) -> dict[str, str] | None:
    """The backend and precision ``config``'s bundle will run at on this machine (what its log
    records under ``policy.runtime``), without loading it; None for a checkpoint."""
    if config.loader is not None or policy_format(config.policy) != "bundle":
        return None
    from policy_runtime.inference.backends import choose_backend
    from policy_runtime.inference.manifest import BundleFiles, read_manifest

    options = _bundle_options(
        config.backend or "auto", config.precision or "auto", config.force_precision
    )
    choice = choose_backend(options, read_manifest(BundleFiles(config.policy)))
    return {"backend": choice.backend, "precision": choice.precision}


def load_bundle_runtime(path: Path) -> PolicyRuntime:
    """An exported bundle as deployed (its backend and precision chosen automatically): one
    intra-op thread, as the torch backend gets (one worker per core; numbers that do not depend
    on the thread count)."""
    return load_bundle_at(path, "auto", "auto", force=False)


#: How each format is recognised, in the order they are tried.
FORMATS: dict[str, Callable[[Path], bool]] = {"checkpoint": _is_checkpoint, "bundle": _is_bundle}
#: The loader of each format (replace or add an entry to plug another one in).
LOADERS: dict[str, PolicyLoader] = {
    "checkpoint": load_checkpoint_runtime,
    "bundle": load_bundle_runtime,
}


class RuntimePolicyFn:
    """A :class:`~policy_runtime.inference.runtime.PolicyRuntime` as the loop's ``policy_fn``:
    batch of one, sampler noise from a numpy generator seeded by ``reset(seed)`` (so an episode's
    chunks are reproducible, and a bundle and its checkpoint draw the same noise)."""

    def __init__(self, runtime: PolicyRuntime, inference_steps: int | None = None) -> None:
        if inference_steps is not None and inference_steps < 1:
            raise ValueError(f"inference steps must be >= 1, got {inference_steps}")
        self.runtime = runtime
        self.inference_steps = inference_steps
        self._rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def __call__(
        self, window: dict[str, np.ndarray], prefix: ChunkPrefix | None = None
    ) -> np.ndarray:
        chunk = self.runtime.predict(
            window, self._rng, num_inference_steps=self.inference_steps, prefix=prefix
        )
        return chunk.actions


# --- configuration, records, report --------------------------------------------------------


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run. ``workers``, ``ray_address`` and ``out`` say how it runs, everything
    else what it measures (and goes into the log)."""

    policy: Path
    task: str
    variant: str | None = None
    episodes: int = 50
    start_seed: int = 100_000
    workers: int = 1
    ray_address: str | None = None
    #: Directory for ``eval_log.json`` and videos; None writes nothing.
    out: Path | None = None
    #: Videos (mp4) of the first ``videos`` episodes, from ``video_camera`` at ``video_size``.
    videos: int = 0
    video_camera: str = "front"
    video_size: tuple[int, int] = (240, 320)
    inference_steps: int | None = None
    #: A BeT policy's sampling temperature (None: its bundle's or checkpoint's).
    temperature: float | None = None
    domain_rand: frozenset[str] = frozenset()
    #: A bundle's backend and precision (None: automatic,
    #: :mod:`policy_runtime.inference.backends`); ``force_precision`` runs one the bundle has no
    #: passed closed-loop check for (what ``prt calibrate-precision`` does to check it).
    backend: str | None = None
    precision: str | None = None
    force_precision: bool = False
    #: End episodes after this many steps (None: the task's own limit).
    max_steps: int | None = None
    #: How chunks are executed: an :class:`~policy_runtime.execution.ExecutionEngine` mode
    #: (``replace``: Diffusion Policy's receding horizon), or ``sync`` (the plain loop, no
    #: engine); and the simulated inference latency, from an observation to its chunk.
    execution: ExecutionChoice = "replace"
    inference_latency_s: float = 0.0
    #: Actions executed from each chunk before the next observation is acted on (Diffusion
    #: Policy's action horizon ``T_a``); None: the policy's ``n_action_steps``. At most the
    #: chunk's length (``horizon - n_obs_steps + 1``, or from the bundle's ``action.start``).
    execution_horizon: int | None = None
    #: Run the deployed stack (supervisor, watchdog, IK, safety filter) between the engine and
    #: the cell; False feeds the engine's targets to the cell directly (engine modes only).
    safety: bool = True
    #: The executor config (YAML) whose limits, watchdog and controller rate the stack runs
    #: with; None: the defaults (``config/executor_ur5.yaml``, a CB3 at 125 Hz).
    executor_config: Path | None = None
    #: torch intra-op threads in every worker (None: torch's default, all cores). One thread
    #: by default: batch-one inference gains little from more, parallel workers use the cores,
    #: and torch's numbers can depend on the thread count (conv layers do), so the default gives
    #: the same episodes in-process, in worker processes and in Ray actors.
    torch_threads: int | None = 1
    #: Where the policy's object state comes from: ``sim`` (the simulator's exact state) or
    #: ``marker`` (estimated from the object's markers in the tracking cameras, as a real cell
    #: does; :mod:`policy_runtime.evaluation.perception`), with the camera poses of
    #: ``camera_calibrations`` (``prt calibrate`` YAMLs; a camera without one: its true pose).
    object_state: ObjectStateSource = "sim"
    camera_calibrations: tuple[Path, ...] = ()
    #: Loads the policy in each worker; None picks by what ``policy`` holds (:data:`LOADERS`).
    #: Must pickle (a module-level function) to reach worker processes.
    loader: PolicyLoader | None = None

    def __post_init__(self) -> None:
        from sim_bridge.randomization import parse_factors

        object.__setattr__(self, "policy", Path(self.policy))
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))
        if self.executor_config is not None:
            object.__setattr__(self, "executor_config", Path(self.executor_config))
        if self.object_state not in get_args(ObjectStateSource):
            raise ValueError(
                f"object_state must be one of {get_args(ObjectStateSource)}, got "
                f"{self.object_state!r}"
            )
        if self.camera_calibrations:
            if self.object_state != "marker":
                raise ValueError("camera calibrations are used by --object-state marker only")
            paths = tuple(Path(path) for path in self.camera_calibrations)
            object.__setattr__(self, "camera_calibrations", paths)
        if self.object_state == "marker" and self.execution == "sync":
            raise ValueError(
                "--object-state marker needs an execution engine mode (not sync): a lost "
                "marker holds the arm through the deployed stack"
            )
        object.__setattr__(self, "domain_rand", parse_factors(self.domain_rand))
        checks = {
            "episodes": (self.episodes, 1),
            "workers": (self.workers, 1),
            "videos": (self.videos, 0),
            "inference_steps": (self.inference_steps, 1),
            "max_steps": (self.max_steps, 1),
            "execution_horizon": (self.execution_horizon, 1),
            "torch_threads": (self.torch_threads, 1),
        }
        if self.execution not in EXECUTION_MODES:
            raise ValueError(f"execution must be one of {EXECUTION_MODES}, got {self.execution!r}")
        if self.inference_latency_s < 0 or (self.inference_latency_s and self.execution == "sync"):
            raise ValueError(
                f"inference latency {self.inference_latency_s} s: must be >= 0, and needs an "
                "execution engine mode (not sync)"
            )
        for name, (value, least) in checks.items():
            if value is not None and value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        if self.force_precision and self.precision is None:
            raise ValueError("--force-precision needs --precision (the precision to force)")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        height, width = self.video_size
        if height < 16 or width < 16 or height % 16 or width % 16:
            raise ValueError(
                f"video size {height}x{width}: height and width must be multiples of 16 "
                "(e.g. 240x320)"
            )

    def executor(self) -> ExecutorConfig:
        """The executor config the stack runs with (the file's, or the defaults)."""
        if self.executor_config is None:
            return ExecutorConfig()
        return ExecutorConfig.load(self.executor_config)

    def summary(self) -> dict[str, Any]:
        """What the run measures (the log's ``config``): no worker count, no output path."""
        loader = self.loader
        # A temperature only when set: logs of runs without one read as before it existed.
        temperature = {} if self.temperature is None else {"temperature": self.temperature}
        runtime = {
            name: value
            for name, value in (
                ("backend", self.backend),
                ("precision", self.precision),
                ("force_precision", self.force_precision or None),
            )
            if value is not None
        }
        return {
            "policy": str(self.policy),
            "loader": None if loader is None else f"{loader.__module__}.{loader.__qualname__}",
            "task": self.task,
            "variant": self.variant,
            "episodes": self.episodes,
            "start_seed": self.start_seed,
            "inference_steps": self.inference_steps,
            **temperature,
            **runtime,
            "domain_rand": sorted(self.domain_rand),
            "max_steps": self.max_steps,
            "execution": self.execution,
            "inference_latency_s": self.inference_latency_s,
            "execution_horizon": self.execution_horizon,
            "safety": self.safety and self.execution != "sync",
            "executor": self.executor().model_dump(mode="json"),
            "torch_threads": self.torch_threads,
            "object_state": self.object_state,
            "camera_calibrations": [str(path) for path in self.camera_calibrations],
            "videos": self.videos,
            "video_camera": self.video_camera,
            "video_size": list(self.video_size),
        }


@dataclass(frozen=True)
class EpisodeRecord:
    seed: int
    variant: str
    success: bool
    score: float
    steps: int
    policy_calls: int
    actions_sha256: str
    #: What the deployed stack did (see :class:`~policy_runtime.evaluation.rollout.
    #: PolicyEpisodeResult`); empty without it.
    interventions: dict[str, int] = field(default_factory=dict)
    holds: dict[str, int] = field(default_factory=dict)
    #: Policy periods whose object state the marker tracker lost (``object_state: marker``).
    observations_lost: int = 0


@dataclass(frozen=True)
class EvaluatedEpisode:
    record: EpisodeRecord
    #: (steps + 1, H, W, 3) uint8 when this episode is filmed.
    frames: np.ndarray | None = None


@dataclass
class EvalReport:
    config: EvalConfig
    policy: PolicySpecs
    records: list[EpisodeRecord] = field(default_factory=list)
    wall_time_s: float = 0.0
    #: The backend and precision a bundle ran at (None for a checkpoint on torch).
    runtime: dict[str, str] | None = None
    log_path: Path | None = None
    video_paths: list[Path] = field(default_factory=list)

    @property
    def episodes(self) -> int:
        return len(self.records)

    @property
    def successes(self) -> int:
        return sum(r.success for r in self.records)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.records else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """Wilson 95% interval of the success rate."""
        return wilson_interval(self.successes, self.episodes)

    @property
    def mean_score(self) -> float:
        return float(np.mean([r.score for r in self.records])) if self.records else 0.0

    def totals(self, field_name: str) -> dict[str, int]:
        """``interventions`` or ``holds`` summed over the episodes, by reason."""
        totals: dict[str, int] = {}
        for record in self.records:
            for reason, count in getattr(record, field_name).items():
                totals[reason] = totals.get(reason, 0) + count
        return dict(sorted(totals.items()))

    def summary(self) -> dict[str, Any]:
        low, high = self.interval
        interventions = self.totals("interventions")
        n = max(self.episodes, 1)
        return {
            "episodes": self.episodes,
            "successes": self.successes,
            "success_rate": self.success_rate,
            "success_interval_95": [low, high],
            "mean_score": self.mean_score,
            "mean_steps": float(np.mean([r.steps for r in self.records])) if self.records else 0,
            "interventions_per_episode": sum(interventions.values()) / n,
            "episodes_with_interventions": sum(bool(r.interventions) for r in self.records),
            "interventions": interventions,
            "holds": self.totals("holds"),
            "observations_lost": sum(r.observations_lost for r in self.records),
        }

    def log(self) -> dict[str, Any]:
        """``eval_log.json``: the same for the same run whatever the workers (no timings)."""
        policy = self.policy
        return {
            "format": LOG_FORMAT,
            "version": LOG_VERSION,
            "config": self.config.summary(),
            "policy": {
                "kind": policy.kind,
                "obs_keys": [k.key for k in policy.obs.keys if k.kind == "low_dim"],
                "image_keys": [k.key for k in policy.obs.keys if k.kind == "image"],
                "action_dim": policy.action.dim,
                "horizon": policy.action.horizon,
                "n_obs_steps": policy.obs.n_obs_steps,
                "n_action_steps": policy.action.n_action_steps,
                "sampler": policy.sampler.kind,
                "num_inference_steps": self.config.inference_steps
                or policy.sampler.num_inference_steps,
                **({} if self.runtime is None else {"runtime": self.runtime}),
            },
            "summary": self.summary(),
            "episodes": [
                {
                    "seed": r.seed,
                    "variant": r.variant,
                    "success": r.success,
                    "score": r.score,
                    "steps": r.steps,
                    "policy_calls": r.policy_calls,
                    "actions_sha256": r.actions_sha256,
                    "interventions": r.interventions,
                    "holds": r.holds,
                    "observations_lost": r.observations_lost,
                }
                for r in self.records
            ],
            "videos": [p.name for p in self.video_paths],
        }


# --- workers -------------------------------------------------------------------------------


def env_options(policy: PolicySpecs) -> dict[str, Any]:
    """``make_env`` options a policy needs: its cameras at its image size, its action space."""
    cameras, sizes = [], set()
    for key in policy.obs.keys:
        if key.kind != "image":
            continue
        if not key.key.endswith("_rgb"):
            raise ValueError(f"image key {key.key!r} is not a camera image ('<camera>_rgb')")
        cameras.append(key.key.removesuffix("_rgb"))
        sizes.add(tuple(key.shape[:2]))
    if len(sizes) > 1:
        raise ValueError(f"the policy's cameras have different image sizes {sorted(sizes)}")
    if policy.action.representation not in ("ee", "joint"):
        raise ValueError(
            f"action_dim {policy.action.dim} is neither an end-effector action (10: position, "
            "6D rotation, gripper) nor a joint action (7)"
        )
    options: dict[str, Any] = {
        "cameras": tuple(cameras),
        "action_space": policy.action.representation,
    }
    if sizes:
        options["image_size"] = sizes.pop()
    return options


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Pin torch's intra-op threads (when torch is in use) and restore them afterwards."""
    if threads is None or "torch" not in sys.modules:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class EvalWorker:
    """Loads the policy once and runs episodes for seeds; the same class runs in-process, in a
    worker process, or as a Ray actor. With ``variant="all"`` the variant cycles with the seed
    (seed modulo the number of variants), as in data generation."""

    def __init__(self, config: EvalConfig) -> None:
        from sim_bridge.gl import configure_headless_rendering
        from sim_bridge.tasks import make_task

        if config.workers > 1:
            # One worker per core: each renders on one thread (Mesa uses every core otherwise).
            os.environ.setdefault("LP_NUM_THREADS", "1")
        configure_headless_rendering()
        self.config = config
        if config.backend is not None or config.precision is not None:
            self.runtime = load_bundle_at(
                config.policy,
                config.backend or "auto",
                config.precision or "auto",
                config.force_precision,
            )
        else:
            self.runtime = (config.loader or load_runtime)(config.policy)
        if config.temperature is not None:
            self.runtime.set_temperature(config.temperature)
        self.policy_fn = RuntimePolicyFn(self.runtime, config.inference_steps)
        executor = config.executor()
        self.options = env_options(self.runtime.specs)
        self.options["control_hz"] = executor.loop.controller_hz
        self.keys = tuple(self.runtime.obs_keys)
        mode = config.execution
        self.execution = (
            None
            if mode == "sync"
            else executor.execution_for(self.options["action_space"], mode=mode)
        )
        self.executor = executor if config.safety and mode != "sync" else None
        if config.object_state == "marker":
            self.options["block_marker"] = True
        self._envs: dict[str, SimEnv] = {}
        self._perceptions: dict[str, Perception] = {}
        task = make_task(config.task, None if config.variant == "all" else config.variant)
        self._variants = task.variants if config.variant == "all" else (task.variant,)

    def variant(self, seed: int) -> str:
        if self.config.variant != "all":
            return self._variants[0]
        return self._variants[seed % len(self._variants)]

    def env(self, seed: int) -> SimEnv:
        from sim_bridge.env import make_env

        variant = self.variant(seed)
        if variant not in self._envs:
            self._envs[variant] = make_env(
                self.config.task, variant, domain_rand=self.config.domain_rand, **self.options
            )
        return self._envs[variant]

    def perception(self, seed: int) -> Perception | None:
        """The env's perception (``object_state: marker``), built once per env."""
        if self.config.object_state == "sim":
            return None
        variant = self.variant(seed)
        if variant not in self._perceptions:
            from policy_runtime.evaluation.perception import MarkerPerception

            self._perceptions[variant] = MarkerPerception(
                self.env(seed), self.config.camera_calibrations
            )
        return self._perceptions[variant]

    def check(self) -> None:
        """Fail early on a policy that does not fit the task (keys, camera) or the execution
        horizon."""
        runtime = self.runtime
        if (self.config.execution_horizon or 0) > runtime.chunk_length:
            raise ValueError(
                f"execution horizon {self.config.execution_horizon}: the policy's chunks hold "
                f"{runtime.chunk_length} actions (horizon {runtime.specs.action.horizon} from "
                f"index {runtime.chunk_start}); pick at most {runtime.chunk_length}"
            )
        env = self.env(self.config.start_seed)
        obs = env.reset(self.config.start_seed)
        missing = [key for key in self.keys if key not in obs]
        if missing:
            raise ValueError(
                f"the policy reads observation key(s) {missing} that task {self.config.task!r} "
                f"does not provide; it provides {sorted(obs)}"
            )
        if self.config.videos:
            env.render(self.config.video_camera, 16, 16)
        self.perception(self.config.start_seed)

    def run(self, seed: int) -> EvaluatedEpisode:
        config = self.config
        env = self.env(seed)
        filmed = seed < config.start_seed + config.videos
        with _torch_threads(config.torch_threads):
            result = run_policy_episode(
                env,
                self.policy_fn,
                seed,
                n_obs_steps=self.runtime.n_obs_steps,
                n_action_steps=config.execution_horizon or self.runtime.specs.action.n_action_steps,
                keys=self.keys,
                video_camera=config.video_camera if filmed else None,
                video_size=config.video_size,
                max_steps=config.max_steps,
                execution=self.execution,
                executor=self.executor,
                inference_latency_s=config.inference_latency_s,
                action_offset_steps=self.runtime.specs.action.offset_steps,
                perception=self.perception(seed),
            )
        record = EpisodeRecord(
            seed=seed,
            variant=self.variant(seed),
            success=bool(result.success),
            score=float(result.score),
            steps=result.steps,
            policy_calls=result.policy_calls,
            actions_sha256=result.actions_sha256,
            interventions=result.interventions,
            holds=result.holds,
            observations_lost=result.observations_lost,
        )
        return EvaluatedEpisode(record, result.frames)

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


# --- the run -------------------------------------------------------------------------------


def check_config(config: EvalConfig) -> None:
    """Reject what can be rejected without loading anything: the policy path, task, variant,
    output path, the video writer. Raises ValueError naming the bad input."""
    from sim_bridge.tasks import make_task

    if config.loader is None:
        kind = policy_format(config.policy)
        if kind != "bundle" and (config.backend or config.precision):
            raise ValueError(
                f"--backend/--precision: {config.policy} is a {kind}; they choose how a bundle runs"
            )
        # An unknown backend or an unchecked precision fails here, before any worker.
        runtime_choice(config)
    elif config.backend or config.precision:
        raise ValueError("--backend/--precision choose how a bundle loads; a custom loader decides")
    elif not config.policy.exists():
        raise ValueError(f"--policy {config.policy}: no such file or directory")
    make_task(config.task, None if config.variant == "all" else config.variant)
    config.executor()  # a bad executor config fails here, naming the file and the field
    if config.out is not None and config.out.exists() and not config.out.is_dir():
        raise ValueError(f"--out {config.out}: exists and is not a directory")
    if config.videos and config.out is not None:
        try:
            import imageio.v2  # noqa: F401
            import imageio_ffmpeg  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                "--videos needs imageio and imageio-ffmpeg: pip install 'policy_runtime[train]'"
            ) from exc


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """An H.264 mp4 of ``frames`` (T, H, W, 3) uint8."""
    import imageio.v2 as imageio

    imageio.mimwrite(path, list(frames), fps=fps, codec="libx264", quality=8)


def evaluate(
    config: EvalConfig, on_episode: Callable[[EpisodeRecord, int], None] | None = None
) -> EvalReport:
    """Run ``config.episodes`` episodes from ``config.start_seed``; write the log and videos.

    Bad settings fail before anything is written (``config.out`` is created when the first
    episode arrives). ``on_episode(record, done)`` follows progress.
    """
    check_config(config)
    start = time.perf_counter()
    local = EvalWorker(config)
    try:
        local.check()
        report = EvalReport(config, local.runtime.specs)
        ran = local.runtime
        if isinstance(ran, OnnxPolicy):  # what a plain `prt eval` chose on this machine
            report.runtime = {"backend": ran.backend, "precision": ran.precision}
        seeds = iter(range(config.start_seed, config.start_seed + config.episodes))
        fps = local.env(config.start_seed).options.policy_hz
        results = ordered_results(
            EvalWorker, config, seeds, config.workers, config.ray_address, local
        )
        for episode in results:
            report.records.append(episode.record)
            if config.out is not None:
                config.out.mkdir(parents=True, exist_ok=True)
                if episode.frames is not None:
                    path = config.out / f"episode_{episode.record.seed}.mp4"
                    write_video(path, episode.frames, fps)
                    report.video_paths.append(path)
            if on_episode is not None:
                on_episode(episode.record, len(report.records))
        results.close()
    finally:
        local.close()
    report.wall_time_s = time.perf_counter() - start
    if config.out is not None:
        report.log_path = config.out / LOG_FILE
        report.log_path.write_text(json.dumps(report.log(), indent=2) + "\n")
    return report
