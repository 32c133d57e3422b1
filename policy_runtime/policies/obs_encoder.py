"""Raw observation windows -> the U-Net's global conditioning vector.

Diffusion Policy conditions globally (FiLM) on the features of the last ``n_obs_steps``
observations, flattened step-major: ``(B, To, F) -> (B, To * F)``. Per step, features are laid out
like DP's multi-image encoder: every camera's encoder output (in ``image_keys`` order), then the
normalised low-dim keys (in ``obs_keys`` order, each flattened). For low-dim-only policies this is
exactly DP's ``nobs[:, :To].reshape(B, -1)``. A BeT policy reads the same features per step
(:meth:`ObservationEncoder.steps`), one transformer token each.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from policy_runtime.normalization import Normalizer
from policy_runtime.policies.config import PolicyConfig
from policy_runtime.policies.vision import ImageEncoder


class ObservationEncoder(nn.Module):
    """Normalises and encodes ``{key: (B, To, *shape)}`` into ``(B, To * per_step_features)``.

    Windows must hold exactly ``n_obs_steps`` steps (the sampler's ``key_first_k`` gives that):
    a longer window is refused rather than trimmed, so a data-pipeline mistake cannot silently
    condition on the wrong steps.
    """

    def __init__(self, config: PolicyConfig, normalizer: Normalizer) -> None:
        super().__init__()
        self.config = config
        self.normalizer = normalizer
        for key in config.image_keys:
            if "." in key:
                raise ValueError(f"image key {key!r} may not contain '.' (a module name)")
        self.image_encoders = nn.ModuleDict(
            {
                key: ImageEncoder(
                    key,
                    normalizer,
                    config.obs_shapes[key],
                    feature_dim=config.image_feature_dim,
                    crop_shape=config.crop_shape,
                    feature_relu=config.image_feature_relu,
                )
                for key in config.image_keys
            }
        )
        self.per_step_dim = config.low_dim_size + config.image_feature_dim * len(config.image_keys)
        self.output_dim = config.n_obs_steps * self.per_step_dim

    def check(self, obs: Mapping[str, torch.Tensor]) -> int:
        """The batch size, after checking every key is ``(B, To, *shape)`` with one ``B``."""
        to = self.config.n_obs_steps
        batch: int | None = None
        for key in [*self.config.image_keys, *self.config.obs_keys]:
            if key not in obs:
                raise ValueError(f"observation key {key!r} is missing (got {sorted(obs)})")
            shape = tuple(obs[key].shape)
            expected = (to, *self.config.obs_shapes[key])
            if shape[1:] != expected or (batch is not None and shape[0] != batch):
                want = ", ".join(str(d) for d in (batch or "B", *expected))
                raise ValueError(f"observation {key!r} must be ({want}), got {shape}")
            batch = shape[0]
        assert batch is not None  # the config guarantees at least one key
        return batch

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        features = self.steps(obs)
        return features.reshape(features.shape[0], -1)

    def steps(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The features of each observation step, ``(B, To, per_step_dim)``."""
        b = self.check(obs)
        to = self.config.n_obs_steps
        # Low-dim features take the encoders' precision (float32 for a low-dim-only policy).
        dtype = next((p.dtype for p in self.parameters()), torch.float32)
        features = []
        for key in self.config.image_keys:
            images = obs[key].reshape(b * to, *self.config.obs_shapes[key])
            features.append(self.image_encoders[key](images).reshape(b, to, -1))
        for key in self.config.obs_keys:
            x = self.normalizer.normalize(key, obs[key].to(dtype))
            features.append(x.reshape(b, to, -1))
        return torch.cat(features, dim=-1)
