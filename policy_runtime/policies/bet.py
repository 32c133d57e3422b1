"""Behavior Transformers (Shafiullah et al. 2022): k-means action bins, a causal minGPT over the
observation window, a bin classifier and a residual offset per bin.

Each action (normalised) is its nearest k-means centre (the bin) plus an offset
(:mod:`~policy_runtime.policies.action_bins`). The transformer reads one token per observation
step (the features the other policies condition on, images included) and, at each step, predicts
for that step's action and the ``bet_predicted_steps - 1`` after it: ``k`` bin logits and ``k``
offsets (one per bin). Training: focal loss on the true bin plus ``bet_offset_weight`` times the
MSE of the true bin's predicted offset (the offsets of the other bins get no gradient).
Sampling: a bin from ``softmax(logits / bet_temperature)``, the action its centre plus its offset.
With ``bet_relative_to`` the actions are binned relative to an observation of the step that
predicts them (the end-effector pose for pose actions), which the graph adds back.

With ``horizon == n_obs_steps`` each step predicts its own action (the paper's form, and Diffusion
Policy's BeT baseline: To 3, one action executed per step); a longer horizon lets the newest step
predict a chunk for the executor. The predicted sequence is laid out like the other policies'
(``horizon`` actions from the oldest observation's step): step ``t < To - 1`` contributes its own
action, the newest step the rest, so the chunk starts at the newest observation's step.

Sampling is inverse-CDF on caller-given uniforms ``(B, horizon)`` (``noise``), so the exported
bundle, whose runtime samples in numpy from the caller's ``rng``, reproduces this exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from policy_runtime.normalization import Normalizer
from policy_runtime.policies.action_bins import fit_bin_centers, nearest_bins
from policy_runtime.policies.base import Policy
from policy_runtime.policies.config import PolicyConfig, PolicyKind
from policy_runtime.policies.diffusion import normalized_action_chunk
from policy_runtime.policies.focal_loss import focal_loss
from policy_runtime.policies.gpt import MinGPT
from policy_runtime.policies.obs_encoder import ObservationEncoder


def sample_bins(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float) -> torch.Tensor:
    """Bin indices ``(...)`` drawn from ``softmax(logits / temperature)`` ``(..., k)`` by
    inverting its CDF at ``uniforms`` ``(...)`` in [0, 1)."""
    cdf = torch.cumsum(F.softmax(logits / temperature, dim=-1), dim=-1)
    index = (cdf < uniforms[..., None]).sum(dim=-1)
    return index.clamp(max=logits.shape[-1] - 1)


class BeTPolicy(Policy):
    """``obs_encoder`` -> per-step tokens -> ``gpt`` -> ``head`` (bin logits, offsets)."""

    kind: ClassVar[PolicyKind] = "bet"
    bin_centers: torch.Tensor

    def __init__(self, config: PolicyConfig, normalizer: Normalizer) -> None:
        super().__init__(config, normalizer)
        self.obs_encoder = ObservationEncoder(config, normalizer)
        self.gpt = MinGPT(
            self.obs_encoder.per_step_dim,
            block_size=config.n_obs_steps,
            layers=config.bet_layers,
            heads=config.bet_heads,
            embed_dim=config.bet_embed_dim,
            dropout=config.bet_dropout,
        )
        k, da, m = config.bet_bins, config.action_dim, config.bet_predicted_steps
        per_bin = 1 + (da if config.bet_offsets else 0)
        self.head = nn.Linear(config.bet_embed_dim, m * k * per_bin, bias=False)
        nn.init.normal_(self.head.weight, mean=0.0, std=0.02)
        #: k-means centres of the normalised training actions, set by :meth:`fit_data`.
        self.register_buffer("bin_centers", torch.zeros(k, da))

    def fit_data(self, steps: Mapping[str, np.ndarray], seed: int) -> None:
        """Fit the bins: k-means over the training steps' normalised actions (relative to the
        ``bet_relative_to`` observation of the same step when set)."""
        as_tensor = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in steps.items()}
        actions = self.normalizer.normalize(
            self.config.action_key, as_tensor[self.config.action_key]
        )
        anchor = self.anchor(as_tensor)
        if anchor is not None:
            actions = actions - anchor
        centers = fit_bin_centers(actions.numpy(), self.config.bet_bins, seed)
        self.bin_centers.copy_(torch.from_numpy(centers))

    def anchor(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """What the actions are relative to, per step, normalised like them ``(..., Da)``: the
        ``bet_relative_to`` observation ``(..., *shape)`` on the action's first dims (zero on
        the rest); None for absolute actions.

        The action map is affine per dim, so ``normalize(a) - anchor`` is ``a - obs`` scaled:
        the bins see the motion, and ``bin + offset + anchor`` is the normalised action."""
        key = self.config.bet_relative_to
        if key is None:
            return None
        value = obs[key].to(self.bin_centers.device, torch.float32)
        value = value.reshape(*value.shape[: value.ndim - len(self.config.obs_shapes[key])], -1)
        rest = self.config.action_dim - value.shape[-1]
        padded = F.pad(value, (0, rest))
        normalized = self.normalizer.normalize(self.config.action_key, padded)
        return F.pad(normalized[..., : value.shape[-1]], (0, rest))

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """minGPT's rule over the whole policy (image encoders included): biases, normalisation
        layers' weights and the position embedding are not decayed, every other weight is."""
        keep = {id(self.gpt.pos_emb)}
        for module in self.modules():
            norm = isinstance(module, nn.LayerNorm | nn.GroupNorm)
            for name, param in module.named_parameters(recurse=False):
                if norm or name == "bias":
                    keep.add(id(param))
        return [
            {
                "params": [p for p in self.parameters() if id(p) not in keep],
                "weight_decay": weight_decay,
            },
            {"params": [p for p in self.parameters() if id(p) in keep], "weight_decay": 0.0},
        ]

    def heads(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per observation step and predicted step: bin logits ``(B, To, m, k)`` and each bin's
        action, centre + offset, ``(B, To, m, k, Da)`` (normalised; the centre alone without
        an offset head)."""
        device = self.bin_centers.device
        tokens = self.obs_encoder.steps({k: v.to(device) for k, v in obs.items()})
        out = self.head(self.gpt(tokens))
        b, to = out.shape[:2]
        k, da, m = self.config.bet_bins, self.config.action_dim, self.config.bet_predicted_steps
        out = out.reshape(b, to, m, k, -1)
        logits = out[..., 0]
        bin_actions = self.bin_centers.to(out.dtype).expand(b, to, m, k, da)
        if self.config.bet_offsets:
            bin_actions = bin_actions + out[..., 1:]
        anchor = self.anchor(obs)
        if anchor is not None:  # (B, To, Da): step t's actions are relative to its observation
            bin_actions = bin_actions + anchor[:, :, None, None].to(out.dtype)
        return logits, bin_actions

    def on_horizon(self, per_step: torch.Tensor) -> torch.Tensor:
        """``(B, To, m, ...)`` per observation step -> ``(B, horizon, ...)``: each older step's
        own action, then the newest step's ``m``."""
        return torch.cat([per_step[:, :-1, 0], per_step[:, -1]], dim=1)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Focal loss on the true bins + ``bet_offset_weight`` x MSE of the true bins' offsets."""
        logits, bin_actions = self.heads(batch)
        chunk = normalized_action_chunk(self.config, self.normalizer, batch).to(logits.device)
        to, m = self.config.n_obs_steps, self.config.bet_predicted_steps
        # Step t predicts the window's actions t .. t + m - 1.
        index = torch.arange(to, device=chunk.device)[:, None] + torch.arange(
            m, device=chunk.device
        )
        target = chunk[:, index]  # (B, To, m, Da)
        anchor = self.anchor(batch)
        relative = target if anchor is None else target - anchor[:, :, None]
        bins, _ = nearest_bins(relative, self.bin_centers)
        k = self.config.bet_bins
        bin_loss = focal_loss(logits.reshape(-1, k), bins.reshape(-1), self.config.bet_focal_gamma)
        chosen = bin_actions.gather(
            3, bins[..., None, None].expand(*bins.shape, 1, target.shape[-1])
        ).squeeze(3)
        offset_mse = F.mse_loss(chosen, target)
        loss = bin_loss
        if self.config.bet_offsets:
            loss = loss + self.config.bet_offset_weight * offset_mse
        accuracy = (logits.argmax(-1) == bins).float().mean()
        self.last_info = {
            "focal": bin_loss.detach(),
            "offset_mse": offset_mse.detach(),
            "bin_accuracy": accuracy.detach(),
        }
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
        """Sample a bin per predicted step: ``noise`` is the uniforms ``(B, horizon)`` in [0, 1)
        that choose them (drawn with ``generator`` when None). ``num_inference_steps`` is
        accepted so callers treat every kind alike; BeT takes one pass."""
        logits, bin_actions = self.heads(obs)
        logits, bin_actions = self.on_horizon(logits), self.on_horizon(bin_actions)
        b, horizon = logits.shape[:2]
        if noise is None:
            device = generator.device if generator is not None else logits.device
            noise = torch.rand(b, horizon, generator=generator, device=device)
        elif tuple(noise.shape) != (b, horizon):
            raise ValueError(
                f"noise (the bins' uniforms) must be ({b}, {horizon}), got {tuple(noise.shape)}"
            )
        bins = sample_bins(logits, noise.to(logits.device), self.config.bet_temperature)
        da = self.config.action_dim
        chunk = bin_actions.gather(2, bins[..., None, None].expand(b, horizon, 1, da)).squeeze(2)
        action_pred = self.normalizer.unnormalize(self.config.action_key, chunk)
        return {"action_pred": action_pred, "action": self.action_window(action_pred)}
