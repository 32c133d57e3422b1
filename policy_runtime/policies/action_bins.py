"""BeT's action discretisation: k-means centres over the training actions, and each action as
its nearest centre (the bin) plus the residual offset to it.

Fitted on single normalised actions (``(N, action_dim)``, every step of every training episode),
as Behavior Transformers and Diffusion Policy's BeT baseline do. The reference code runs 50
Lloyd iterations of its own from random data points; this uses scikit-learn's k-means (k-means++
seeding, several restarts, run to convergence), deterministic given ``seed``. A bin is decoded as
``centre + offset``, so every action is reconstructed exactly whatever the centres.
"""

from __future__ import annotations

import numpy as np
import torch


def fit_bin_centers(actions: np.ndarray, bins: int, seed: int = 0) -> np.ndarray:
    """``bins`` k-means centres ``(bins, action_dim)`` (float32) of ``actions``
    ``(N, action_dim)``; refused when there are fewer distinct actions than bins."""
    from sklearn.cluster import KMeans

    actions = np.asarray(actions, np.float64)
    if actions.ndim != 2:
        raise ValueError(f"actions must be (N, action_dim), got {actions.shape}")
    distinct = len(np.unique(actions, axis=0))
    if distinct < bins:
        raise ValueError(
            f"k-means: {bins} bins need at least {bins} distinct actions, the data has {distinct}"
        )
    kmeans = KMeans(n_clusters=bins, n_init=4, random_state=seed).fit(actions)
    return np.asarray(kmeans.cluster_centers_, np.float32)


def nearest_bins(actions: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., action_dim)`` actions -> (bin index ``(...)`` int64, offset ``(..., action_dim)``)
    with ``centers[bin] + offset == action``."""
    flat = actions.reshape(-1, actions.shape[-1])
    # Exact distances (not the matrix-product shortcut, whose rounding can pick a farther bin).
    bins = torch.cdist(flat, centers, compute_mode="donot_use_mm_for_euclid_dist").argmin(dim=1)
    offsets = flat - centers[bins]
    return bins.reshape(actions.shape[:-1]), offsets.reshape(actions.shape)
