"""The interface every policy implements, so training, evaluation and export treat them alike.

Inputs are raw (unnormalised) tensors: observations ``(B, n_obs_steps, *shape)`` per key
(images uint8 ``(B, To, H, W, 3)``), actions ``(B, horizon, action_dim)``. A policy normalises
with its own :class:`~policy_runtime.normalization.Normalizer` and returns unnormalised actions.
"""

from __future__ import annotations

import abc
from typing import ClassVar

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
        the config's.
        """

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss: what DistributedDataParallel calls to synchronise gradients."""
        return self.compute_loss(batch)

    def action_window(self, action_pred: torch.Tensor) -> torch.Tensor:
        start = self.config.chunk_start
        return action_pred[:, start : start + self.config.n_action_steps]
