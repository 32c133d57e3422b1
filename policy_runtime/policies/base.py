"""The interface every policy implements, so training, evaluation and export treat them alike.

Inputs are raw (unnormalised) tensors: observations ``(B, n_obs_steps, *shape)`` per key
(images uint8 ``(B, To, H, W, 3)``), actions ``(B, horizon, action_dim)``. A policy normalises
with its own :class:`~policy_runtime.normalization.Normalizer` and returns unnormalised actions.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from policy_runtime.normalization import Normalizer
from policy_runtime.policies.config import PolicyConfig, PolicyKind


class Policy(nn.Module, abc.ABC):
    kind: ClassVar[PolicyKind]

    def __init__(self, config: PolicyConfig, normalizer: Normalizer) -> None:
        super().__init__()
        if config.kind != self.kind:
            raise ValueError(f"config is for a {config.kind!r} policy, not {self.kind!r}")
        self.config = config
        self.normalizer = normalizer
        #: Detached diagnostics of the last ``compute_loss`` (name -> scalar), logged in training.
        self.last_info: dict[str, torch.Tensor] = {}

    def fit_data(self, steps: Mapping[str, np.ndarray], seed: int) -> None:
        """Fit what the policy takes from its training data before training starts (``steps``:
        every training step, raw, ``(N, dim)`` per low-dim key): BeT's k-means bins; nothing
        for the others."""

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: every parameter weight-decayed, unless the policy
        says otherwise (BeT follows minGPT)."""
        return [{"params": list(self.parameters()), "weight_decay": weight_decay}]

    @abc.abstractmethod
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar training loss for a batch of windows (observations + ``action_key``)."""

    @abc.abstractmethod
    def predict_action(
        self,
        obs: dict[str, torch.Tensor],
        noise: torch.Tensor | None = None,
        *,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """``action_pred`` (B, horizon, Da) and ``action`` (B, n_action_steps, Da), unnormalised.

        ``action`` starts at index ``config.chunk_start`` of the prediction: ``n_obs_steps - 1``
        (aligned with the newest observation) unless the config's ``action_start`` says
        otherwise (an imported layout). ``noise`` (B, horizon, Da) fixes the sampler's initial
        noise, so a prediction is reproducible (export parity, golden tests); ``generator``
        seeds any other randomness (DDPM's per-step noise). ``num_inference_steps`` overrides
        the config's. A BeT policy's ``noise`` is the uniforms ``(B, horizon)`` that sample its
        bins.
        """

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss: what DistributedDataParallel calls to synchronise gradients."""
        return self.compute_loss(batch)

    def action_window(self, action_pred: torch.Tensor) -> torch.Tensor:
        start = self.config.chunk_start
        return action_pred[:, start : start + self.config.n_action_steps]
