"""Drifting policy: Diffusion Policy's U-Net as a one-step generator trained by drifting.

The network and observation conditioning are the diffusion policy's; the U-Net always sees the
same (constant) step, so it is a plain conditional map noise -> action chunk. Training draws
``drift_samples`` noise chunks per observation, generates them in one batched pass, and applies
:func:`~policy_runtime.policies.drifting_loss.drifting_loss` with the demonstration chunk as the
single positive and the observation's other generated chunks as negatives. Inference is one
forward pass (1 NFE), deterministic given the noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch

from policy_runtime.normalization import Normalizer
from policy_runtime.policies.base import Policy
from policy_runtime.policies.config import PolicyConfig, PolicyKind
from policy_runtime.policies.diffusion import build_unet, initial_noise, normalized_action_chunk
from policy_runtime.policies.drifting_loss import drifting_loss
from policy_runtime.policies.obs_encoder import ObservationEncoder

#: The step the U-Net's embedding always sees; any constant works, 0 keeps DP's layout.
GENERATOR_TIMESTEP = 0


class DriftingPolicy(Policy):
    """``obs_encoder`` -> global conditioning; ``model`` maps noise to a normalised chunk.

    After ``compute_loss``, ``last_info`` holds the loss's detached diagnostics
    (``distance_scale`` and the per-temperature raw force RMS ``force_rms/<R>``, which falls as
    training converges while the loss itself stays near a constant because of the force
    rescaling).
    """

    kind: ClassVar[PolicyKind] = "drifting"

    def __init__(self, config: PolicyConfig, normalizer: Normalizer) -> None:
        super().__init__(config, normalizer)
        self.obs_encoder = ObservationEncoder(config, normalizer)
        self.model = build_unet(config, self.obs_encoder.output_dim)

    def _condition(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.obs_encoder({k: v.to(device) for k, v in obs.items()})

    def generate(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """One forward pass: noise (N, horizon, Da) and conditioning (N, C) -> normalised chunk."""
        return self.model(noise, GENERATOR_TIMESTEP, global_cond=cond)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Drifting loss of ``drift_samples`` generated chunks per observation vs the demo."""
        cond = self._condition(batch)
        positives = normalized_action_chunk(self.config, self.normalizer, batch)
        positives = positives.to(device=cond.device, dtype=cond.dtype)
        b, horizon, action_dim = positives.shape
        g = self.config.drift_samples
        noise = torch.randn(b * g, horizon, action_dim, device=cond.device, dtype=cond.dtype)
        generated = self.generate(noise, cond.repeat_interleave(g, dim=0))
        loss, info = drifting_loss(
            generated.reshape(b, g, horizon * action_dim),
            positives.reshape(b, 1, horizon * action_dim),
            self.config.drift_temperatures,
            per_timestep=self.config.drift_per_timestep,
            action_dim=action_dim,
        )
        self.last_info = info
        return loss

    @torch.no_grad()
    def predict_action(
        self,
        obs: dict[str, torch.Tensor],
        noise: torch.Tensor | None = None,
        *,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """One generator pass from ``noise`` (or fresh Gaussian noise drawn with ``generator``).

        ``num_inference_steps`` is accepted so callers can treat both policy kinds alike; a
        drifting policy always takes exactly one step.
        """
        cond = self._condition(obs)
        nchunk = self.generate(initial_noise(self.config, noise, cond, cond.dtype, generator), cond)
        action_pred = self.normalizer.unnormalize(self.config.action_key, nchunk)
        return {"action_pred": action_pred, "action": self.action_window(action_pred)}
