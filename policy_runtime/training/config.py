"""Training configuration: a YAML file plus ``key=value`` overrides, validated by pydantic.

Dotted keys reach nested fields (``model.down_dims=[32,64,128]``); values are parsed as YAML, so
numbers, lists and booleans need no quoting. Every field is stored with each checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policy_runtime.policies.config import PolicyKind
from policy_runtime.validation import field_problems


class ModelOverrides(BaseModel):
    """Network and sampler settings passed on to :class:`PolicyConfig` (unset = its default)."""

    model_config = ConfigDict(extra="forbid")

    down_dims: tuple[int, ...] | None = None
    kernel_size: int | None = None
    step_embed_dim: int | None = None
    n_groups: int | None = None
    image_feature_dim: int | None = None
    crop_shape: tuple[int, int] | None = None
    num_train_timesteps: int | None = None
    prediction_type: str | None = None
    sampler: str | None = None
    num_inference_steps: int | None = None
    drift_samples: int | None = None
    drift_temperatures: tuple[float, ...] | None = None
    drift_per_timestep: bool | None = None
    bet_bins: int | None = None
    bet_layers: int | None = None
    bet_heads: int | None = None
    bet_embed_dim: int | None = None
    bet_dropout: float | None = None
    bet_offsets: bool | None = None
    bet_focal_gamma: float | None = None
    bet_offset_weight: float | None = None
    bet_temperature: float | None = None
    bet_relative_to: str | None = None

    def as_policy_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class TrainConfig(BaseModel):
    """One training run. ``steps`` counts optimiser steps (the schedule's length)."""

    model_config = ConfigDict(extra="forbid")

    data: Path
    out: Path
    policy: PolicyKind = "diffusion"
    #: Low-dim observation keys (default: every non-image observation key of the dataset).
    obs_keys: list[str] | None = None
    image_keys: list[str] = Field(default_factory=list)
    action_key: str = "action"
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    model: ModelOverrides = Field(default_factory=ModelOverrides)
    #: Normalisation: a low-dim dimension spanning less than this in the data (in its own units:
    #: 2 cm, ~1 degree of a rotation entry) is scaled as if it spanned this much, so its noise
    #: is not blown up to [-1, 1] (see ``policy_runtime.normalization``). 0 is Diffusion Policy's
    #: plain min-max.
    norm_min_range: float = Field(0.02, ge=0)

    steps: int = Field(20_000, gt=0)
    batch_size: int = Field(256, gt=0)
    #: Batches gathered ahead on a background thread (pinned memory on CUDA); the batches a
    #: run sees do not depend on it (0: gathered when needed).
    prefetch_batches: int = Field(2, ge=0)
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 1e-6
    #: Gradients rescaled to at most this global norm before each step (None: not clipped;
    #: the BeT reference code clips at 1.0).
    grad_clip_norm: float | None = Field(None, gt=0)
    warmup_steps: int = 500
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    val_ratio: float = 0.02
    seed: int = 42
    device: str = "auto"

    log_every: int = Field(50, gt=0)
    checkpoint_every: int = Field(2_000, gt=0)
    #: Periodic evaluation in simulation (0 disables): episodes on this task, from this seed.
    eval_every: int = 0
    eval_task: str | None = None
    eval_episodes: int = 20
    eval_start_seed: int = 100_000
    #: Checkpoints kept besides the latest: the best ``top_k`` by evaluation success.
    top_k: int = 3


def load_config(path: Path | None, overrides: Sequence[str], **fixed: Any) -> TrainConfig:
    """Merge a YAML file, ``key=value`` overrides and ``fixed`` fields into a TrainConfig.

    Errors name the file, the override or the field that is wrong.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read the config ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a training config is a YAML mapping")
        values.update(loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        target = values
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ValueError(f"override {item!r}: {parent!r} is not a section")
        target[leaf] = yaml.safe_load(raw)
    values.update({k: v for k, v in fixed.items() if v is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        raise ValueError(f"invalid training config: {field_problems(exc)}") from None
