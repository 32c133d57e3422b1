"""Scripted-expert data generation into a dataset store: parallel, resumable, reproducible.

Episode ``i`` of a run is a pure function of (task, options, seed): workers (local processes or
Ray actors) compute episodes for consecutive seeds, and the main process writes them strictly in
seed order, so the store holds the same bytes whatever the number of workers. Re-running the
same command continues after the last committed seed; a store made with other settings is
refused (the settings are part of the schema's provenance).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from policy_runtime.data import DatasetSchema, DatasetWriter, EpisodeDataset, FieldSpec
from policy_runtime.parallel import ordered_results
from sim_bridge.randomization import parse_factors

if TYPE_CHECKING:
    from sim_bridge.env import SimEnv

#: Units and frames of the keys the simulation records (for the schema).
KEY_UNITS: dict[str, tuple[str, str]] = {
    "joint_pos": ("rad", ""),
    "joint_vel": ("rad/s", ""),
    "ee_pose": ("m, rot6d", "base_link"),
    "gripper": ("opening 0..1", ""),
    "action": ("", "base_link"),
    "action_ee": ("m, rot6d, opening 0..1", "base_link"),
    "action_joint": ("rad, opening 0..1", ""),
    "timestamp": ("s", ""),
}
EPISODE_KEYS = {
    "seed": FieldSpec(shape=(), dtype="int64"),
    "success": FieldSpec(shape=(), dtype="bool"),
    "score": FieldSpec(shape=(), dtype="float32"),
}


@dataclass(frozen=True)
class DatagenConfig:
    """One data-generation run. Everything but ``episodes``, ``out``, ``start_seed``,
    ``workers`` and ``ray_address`` defines the data and is stored as provenance."""

    task: str
    episodes: int
    out: Path
    variant: str | None = None
    start_seed: int = 0
    workers: int = 1
    ray_address: str | None = None
    domain_rand: frozenset[str] = frozenset()
    keep_failed: bool = False
    obs: tuple[str, ...] | None = None
    image_size: tuple[int, int] = (96, 96)
    policy_hz: float = 10.0
    control_hz: float = 125.0
    action: Literal["ee", "joint"] = "ee"
    cameras: tuple[str, ...] = field(default=("front", "wrist"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain_rand", parse_factors(self.domain_rand))
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    def provenance(self) -> dict[str, Any]:
        settings = asdict(self)
        for transient in ("episodes", "out", "start_seed", "workers", "ray_address"):
            settings.pop(transient)
        settings["domain_rand"] = sorted(self.domain_rand)
        settings["obs"] = list(self.obs) if self.obs is not None else None
        settings["image_size"] = list(self.image_size)
        settings["cameras"] = list(self.cameras)
        return {"generator": "sim_bridge.datagen", **settings}


@dataclass(frozen=True)
class GeneratedEpisode:
    seed: int
    success: bool
    score: float
    arrays: dict[str, np.ndarray]


class EpisodeWorker:
    """Builds envs once and generates episodes for seeds; the same class runs in-process, in a
    worker process, or as a Ray actor. With ``variant="all"`` the variant cycles with the seed
    (seed modulo the number of variants), so one store serves a multi-variant policy."""

    def __init__(self, config: DatagenConfig) -> None:
        from sim_bridge.gl import configure_headless_rendering

        if config.workers > 1:
            # Mesa's software rasteriser spreads one render over every core; with one worker
            # per core that oversubscribes the machine, so each worker renders on one thread.
            os.environ.setdefault("LP_NUM_THREADS", "1")
        configure_headless_rendering()
        from sim_bridge.experts import expert_for

        self.config = config
        self.expert = expert_for(config.task)
        self._envs: dict[str | None, SimEnv] = {}

    def variant(self, seed: int) -> str | None:
        from sim_bridge.tasks import TASKS, make_task

        if self.config.variant != "all":
            return self.config.variant
        make_task(self.config.task)  # loads the registry
        variants = TASKS[self.config.task].variants
        return variants[seed % len(variants)]

    def env(self, seed: int) -> SimEnv:
        from sim_bridge.env import make_env

        variant = self.variant(seed)
        if variant not in self._envs:
            config = self.config
            cameras = config.cameras
            if config.obs is not None:
                cameras = tuple(c for c in cameras if f"{c}_rgb" in config.obs)
            self._envs[variant] = make_env(
                config.task,
                variant,
                cameras=cameras,
                image_size=config.image_size,
                policy_hz=config.policy_hz,
                control_hz=config.control_hz,
                domain_rand=config.domain_rand,
            )
        return self._envs[variant]

    def run(self, seed: int) -> GeneratedEpisode:
        from sim_bridge.rollout import run_expert_episode

        result = run_expert_episode(self.env(seed), self.expert, seed)
        return GeneratedEpisode(seed, result.success, result.score, self._select(result.arrays))

    def first_observation(self, seed: int) -> dict[str, np.ndarray]:
        """What an episode records per step, without running one (for the schema)."""
        from sim_bridge.env import JOINT_ACTION_DIM

        env = self.env(seed)
        obs = env.reset(seed)
        arrays = {key: value[None] for key, value in obs.items()}
        arrays["action_ee"] = env.last_action_ee[None]
        arrays["action_joint"] = np.zeros((1, JOINT_ACTION_DIM), np.float32)
        arrays["timestamp"] = np.zeros(1)
        return self._select(arrays)

    def close(self) -> None:
        for env in self._envs.values():
            env.close()

    def _select(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = self.config.obs
        episode = {
            key: value
            for key, value in arrays.items()
            if key in ("action_ee", "action_joint", "timestamp") or keep is None or key in keep
        }
        if keep is not None:
            missing = sorted(set(keep) - set(episode))
            if missing:
                raise ValueError(
                    f"--obs names key(s) {missing} the task does not observe; it observes "
                    f"{sorted(set(arrays) - {'action_ee', 'action_joint', 'timestamp'})}"
                )
        episode["action"] = episode[f"action_{self.config.action}"]
        return episode


def build_schema(config: DatagenConfig, sample: dict[str, np.ndarray]) -> DatasetSchema:
    keys = {}
    for key, value in sample.items():
        unit, frame = KEY_UNITS.get(key, ("", ""))
        if key.endswith("_rgb"):
            frame = key.removesuffix("_rgb")
        keys[key] = FieldSpec(
            shape=tuple(value.shape[1:]), dtype=str(value.dtype), unit=unit, frame=frame
        )
    return DatasetSchema(
        keys=keys,
        episode_keys=EPISODE_KEYS,
        control_hz=config.policy_hz,
        # The recorded command of a step is the target the env reached at the step's end.
        action_offset_steps=1,
        robot="ur5",
        task=config.task,
        source="scripted expert (sim_bridge)",
        provenance=config.provenance(),
    )


@dataclass
class DatagenReport:
    written: int = 0
    attempted: int = 0
    succeeded: int = 0
    stored: int = 0
    next_seed: int = 0


def generate(
    config: DatagenConfig, on_episode: Callable[[DatagenReport], None] | None = None
) -> DatagenReport:
    """Fill ``config.out`` up to ``config.episodes`` episodes; returns what was done.

    Bad settings (task, variant, obs keys, an unwritable path, a store with another schema) fail
    before anything is written.
    """
    from sim_bridge.tasks import make_task

    # Bad names fail here, before any store exists.
    make_task(config.task, None if config.variant == "all" else config.variant)
    local = EpisodeWorker(config)
    try:
        schema = build_schema(config, local.first_observation(config.start_seed))
        return _fill(config, schema, local, on_episode)
    finally:
        local.close()


def _fill(
    config: DatagenConfig,
    schema: DatasetSchema,
    local: EpisodeWorker,
    on_episode: Callable[[DatagenReport], None] | None,
) -> DatagenReport:
    created = not config.out.exists()
    try:
        return _append(config, schema, local, on_episode)
    except BaseException:
        # A run that dies before its first episode leaves no empty store behind.
        if created and config.out.exists() and EpisodeDataset.open(config.out).n_episodes == 0:
            shutil.rmtree(config.out)
        raise


def _append(
    config: DatagenConfig,
    schema: DatasetSchema,
    local: EpisodeWorker,
    on_episode: Callable[[DatagenReport], None] | None,
) -> DatagenReport:
    with DatasetWriter(config.out, schema) as writer:
        report = DatagenReport(stored=writer.n_episodes)
        report.next_seed = config.start_seed
        if writer.n_episodes:
            stored_seeds = EpisodeDataset.open(config.out).episode_info("seed")
            report.next_seed = int(stored_seeds.max()) + 1
        remaining = config.episodes - writer.n_episodes
        if remaining <= 0:
            return report
        limit = remaining if config.keep_failed else 4 * remaining + 16
        seeds = iter(range(report.next_seed, report.next_seed + limit))
        results = ordered_results(
            EpisodeWorker, config, seeds, config.workers, config.ray_address, local
        )
        for episode in results:
            report.attempted += 1
            report.succeeded += episode.success
            report.next_seed = episode.seed + 1
            if episode.success or config.keep_failed:
                info = {"seed": episode.seed, "success": episode.success, "score": episode.score}
                writer.add_episode(episode.arrays, info)
                report.written += 1
                report.stored += 1
            if on_episode is not None:
                on_episode(report)
            if report.stored >= config.episodes:
                break
        results.close()
    if report.stored < config.episodes:
        raise RuntimeError(
            f"only {report.succeeded} of {report.attempted} episodes succeeded; "
            f"{config.out} holds {report.stored} of {config.episodes} (rerun to continue, or "
            "pass --keep-failed)"
        )
    return report
