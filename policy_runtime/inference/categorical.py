"""A BeT policy's sampler in numpy: a bin per step from the softmax of its logits, the action
that bin's (centre + offset).

The same inverse-CDF draw as :func:`policy_runtime.policies.bet.sample_bins` (torch), so a
bundle and the checkpoint it came from choose the same bins from the same uniforms.
"""

from __future__ import annotations

import numpy as np


def sample_bins(logits: np.ndarray, uniforms: np.ndarray, temperature: float) -> np.ndarray:
    """Bin indices ``(...)`` drawn from ``softmax(logits / temperature)`` ``(..., k)`` by
    inverting its CDF at ``uniforms`` ``(...)`` in [0, 1)."""
    z = logits.astype(np.float32) / np.float32(temperature)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    cdf = np.cumsum(z / z.sum(axis=-1, keepdims=True), axis=-1)
    index = (cdf < uniforms[..., None]).sum(axis=-1)
    return np.minimum(index, logits.shape[-1] - 1)


def sample_actions(
    logits: np.ndarray, bin_actions: np.ndarray, uniforms: np.ndarray, temperature: float
) -> np.ndarray:
    """``(B, H, Da)``: per step the action of the bin drawn at its uniform, from ``logits``
    ``(B, H, k)`` and each bin's action ``bin_actions`` ``(B, H, k, Da)``."""
    bins = sample_bins(logits, uniforms, temperature)
    return np.take_along_axis(bin_actions, bins[..., None, None], axis=2)[:, :, 0]
