"""A policy's interface (observations, actions, sampler) as the manifest states it.

Export writes these specs into the bundle; the torch backend derives the same ones from a
checkpoint, so both backends of :mod:`policy_runtime.inference` present one interface and
check observations the same way. Torch-free: it reads only the policy's config and normaliser.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policy_runtime.inference.manifest import (
    ActionSpec,
    AffineSpec,
    ObsKeySpec,
    ObsSpec,
    SamplerSpec,
)
from policy_runtime.normalization import Normalizer
from policy_runtime.policies.config import BETA_END, BETA_START, PolicyConfig

#: Action dims of the two action spaces the runtime knows (see :mod:`policy_runtime.robots.poses`).
REPRESENTATIONS = {10: "ee", 7: "joint"}


@dataclass(frozen=True)
class PolicySpecs:
    kind: str
    control_hz: float
    obs: ObsSpec
    action: ActionSpec
    sampler: SamplerSpec


def random_observations(
    obs: ObsSpec, batch: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``(batch, n_obs_steps, *shape)`` per key, spread over the range the policy was trained on
    (uniform in its normalised [-1, 1]; images: any pixels): the inputs of export parity,
    open-loop precision figures and timings."""
    out = {}
    for key in obs.keys:
        shape = (batch, obs.n_obs_steps, *key.shape)
        if key.dtype == "uint8":
            out[key.key] = rng.integers(0, 256, shape, dtype=np.uint8)
            continue
        scale, offset = key.normalization.arrays()
        normalised = rng.uniform(-1, 1, shape).astype(np.float32)
        out[key.key] = ((normalised - offset.reshape(key.shape)) / scale.reshape(key.shape)).astype(
            np.float32
        )
    return out


def _affine(normalizer: Normalizer, key: str) -> AffineSpec:
    m = normalizer.maps[key]
    return AffineSpec(scale=[float(v) for v in m.scale], offset=[float(v) for v in m.offset])


def specs_from_config(config: PolicyConfig, normalizer: Normalizer) -> PolicySpecs:
    # Cameras first, then low-dim keys: the order the observation encoder reads them in.
    keys = [
        ObsKeySpec(
            key=key,
            shape=tuple(config.obs_shapes[key]),
            dtype="uint8" if image else "float32",
            kind="image" if image else "low_dim",
            normalization=_affine(normalizer, key),
        )
        for image, names in ((True, config.image_keys), (False, config.obs_keys))
        for key in names
    ]
    action_map = normalizer.maps[config.action_key]
    # The range the normaliser maps to [-1, 1]: the training actions' min and max (a constant
    # dim, which the normaliser maps to 0 with scale 1: its value +-1).
    low = (-1.0 - action_map.offset) / action_map.scale
    high = (1.0 - action_map.offset) / action_map.scale
    action = ActionSpec(
        key=config.action_key,
        dim=config.action_dim,
        horizon=config.horizon,
        n_action_steps=config.n_action_steps,
        offset_steps=config.action_offset_steps,
        start=config.action_start,
        representation=REPRESENTATIONS.get(config.action_dim, "other"),  # type: ignore[arg-type]
        normalization=_affine(normalizer, config.action_key),
        low=[float(v) for v in low],
        high=[float(v) for v in high],
    )
    if config.kind == "drifting":
        sampler = SamplerSpec(kind="one_step", num_inference_steps=1)
    elif config.kind == "bet":
        sampler = SamplerSpec(
            kind="categorical", num_inference_steps=1, temperature=config.bet_temperature
        )
    else:
        sampler = SamplerSpec(
            kind=config.sampler,
            num_inference_steps=config.num_inference_steps,
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,  # type: ignore[arg-type]
            beta_start=BETA_START,
            beta_end=BETA_END,
            prediction_type=config.prediction_type,
            clip_sample=config.clip_sample,
        )
    return PolicySpecs(
        kind=config.kind,
        control_hz=config.control_hz,
        obs=ObsSpec(n_obs_steps=config.n_obs_steps, keys=keys, image_crop=config.crop_shape),
        action=action,
        sampler=sampler,
    )
