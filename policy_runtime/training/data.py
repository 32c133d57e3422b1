"""From a dataset store to what training needs: the policy's description, the normaliser fitted
on the data, and train/validation windows (split by episode)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from policy_runtime.data import EpisodeDataset, SequenceSampler, split_episodes
from policy_runtime.normalization import Normalizer
from policy_runtime.policies.config import PolicyConfig
from policy_runtime.training.config import TrainConfig

#: Keys a dataset records that are never observations.
NON_OBSERVATION_KEYS = {"action", "action_ee", "action_joint", "timestamp"}


@dataclass
class TrainingData:
    policy_config: PolicyConfig
    normalizer: Normalizer
    train: SequenceSampler
    val: SequenceSampler | None
    #: Every step of the training episodes, raw, per low-dim key (observations and the action,
    #: ``(N, dim)`` each): what a policy fits before training (BeT's bins).
    train_steps: dict[str, np.ndarray]


def _is_image(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return dtype == np.uint8 and len(shape) == 3 and shape[-1] == 3


def prepare(config: TrainConfig) -> TrainingData:
    """Open the dataset, check every configured key exists, fit the normaliser, cut windows."""
    ds = EpisodeDataset.open(config.data)
    specs = {row.key: (row.shape[1:], np.dtype(row.dtype)) for row in ds.info()}
    obs_keys = config.obs_keys
    if obs_keys is None:
        obs_keys = sorted(
            k
            for k, (shape, dtype) in specs.items()
            if k not in NON_OBSERVATION_KEYS and not _is_image(shape, dtype)
        )
    for field, keys in (
        ("obs_keys", obs_keys),
        ("image_keys", config.image_keys),
        ("action_key", [config.action_key]),
    ):
        missing = [k for k in keys if k not in specs]
        if missing:
            raise ValueError(
                f"{config.data}: the config's {field} names {missing}, which the dataset does "
                f"not have (it has {sorted(specs)})"
            )
    for key in config.image_keys:
        if not _is_image(*specs[key]):
            raise ValueError(
                f"{config.data}: image key {key!r} is {specs[key]}, not (H, W, 3) uint8"
            )
    if ds.n_episodes == 0:
        raise ValueError(f"{config.data}: the dataset has no episodes")

    low_dim = [*obs_keys, config.action_key]
    normalizer = Normalizer.fit(
        {k: ds.stats(k) for k in low_dim}, tuple(config.image_keys), config.norm_min_range
    )
    arrays = ds.load([*low_dim, *config.image_keys])
    action_shape = specs[config.action_key][0]
    policy_config = PolicyConfig(
        kind=config.policy,
        obs_keys=obs_keys,
        image_keys=config.image_keys,
        obs_shapes={k: tuple(specs[k][0]) for k in [*obs_keys, *config.image_keys]},
        action_key=config.action_key,
        action_dim=int(np.prod(action_shape)),
        horizon=config.horizon,
        n_obs_steps=config.n_obs_steps,
        n_action_steps=config.n_action_steps,
        # Diffusion Policy's stores carry no schema; its PushT and real-robot data run at 10 Hz.
        control_hz=ds.schema.control_hz if ds.schema is not None else 10.0,
        action_offset_steps=ds.schema.action_offset_steps if ds.schema is not None else 0,
        **config.model.as_policy_fields(),
    )
    val_mask = split_episodes(ds.n_episodes, config.val_ratio, config.seed)
    obs_window_keys = [*obs_keys, *config.image_keys]

    def sampler(mask: np.ndarray) -> SequenceSampler:
        return SequenceSampler.for_policy(
            arrays,
            ds.episode_ends,
            config.horizon,
            config.n_obs_steps,
            config.n_action_steps,
            obs_keys=obs_window_keys,
            episode_mask=mask,
        )

    train = sampler(~val_mask)
    if len(train) == 0:
        raise ValueError(
            f"{config.data}: no training window of horizon {config.horizon} fits the episodes"
        )
    val = sampler(val_mask) if val_mask.any() else None
    rows = np.repeat(~val_mask, np.diff(ds.episode_ends, prepend=0))
    # Rows after the last episode end: none.
    train_steps = {k: arrays[k][: len(rows)][rows].reshape(int(rows.sum()), -1) for k in low_dim}
    return TrainingData(
        policy_config, normalizer, train, val if val and len(val) else None, train_steps
    )


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Sampler output as tensors: images stay uint8, everything else becomes float32."""
    return {
        k: torch.from_numpy(v if v.dtype == np.uint8 else v.astype(np.float32)).to(device)
        for k, v in batch.items()
    }
