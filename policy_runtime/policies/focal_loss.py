"""Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"), BeT's bin loss.

``FL(p_t) = -(1 - p_t)^gamma * log(p_t)``, ``p_t`` the softmax probability of the true class:
cross-entropy that down-weights the bins the model already predicts well, so rare modes are
not drowned by common ones. ``gamma = 0`` is cross-entropy. Averaged over all predictions (no
class weights), as the BeT reference code does.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean focal loss of ``logits`` ``(N, C)`` against class indices ``target`` ``(N,)``."""
    log_pt = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
    return (-((1.0 - log_pt.exp()) ** gamma) * log_pt).mean()
