"""Visuomotor policies (torch): diffusion (DDPM/DDIM), one-step drifting and BeT.

Importing this package does not import torch: :class:`PolicyConfig` is what checkpoints, bundles
and the deploy runtime read. :func:`make_policy` imports the torch implementations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from policy_runtime.policies.config import PolicyConfig, PolicyKind

if TYPE_CHECKING:
    from policy_runtime.normalization import Normalizer
    from policy_runtime.policies.base import Policy


def make_policy(config: PolicyConfig, normalizer: Normalizer) -> Policy:
    """The torch policy ``config.kind`` describes."""
    if config.kind == "diffusion":
        from policy_runtime.policies.diffusion import DiffusionPolicy

        return DiffusionPolicy(config, normalizer)
    if config.kind == "bet":
        from policy_runtime.policies.bet import BeTPolicy

        return BeTPolicy(config, normalizer)
    from policy_runtime.policies.drifting import DriftingPolicy

    return DriftingPolicy(config, normalizer)


__all__ = ["PolicyConfig", "PolicyKind", "make_policy"]
