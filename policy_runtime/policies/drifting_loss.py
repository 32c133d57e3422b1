"""The drifting loss (Deng et al. 2026, "Generative Modeling via Drifting") for action chunks.

A one-step generator is trained so that its samples move along a *drift field* that attracts
them toward data (positives) and repels them from each other (negatives: the other generated
samples of the same observation). The field is built without gradients, and the loss pulls each
sample toward ``stop_grad(sample + field)``; when the generated distribution equals the data
distribution, attraction and repulsion balance and the field vanishes.

Per observation (batch row) with generated ``x_1..x_G`` and positives ``y^+``:

- distances from every generated sample to every target (the G generated, then the P positives);
  the pair of a sample with itself gets a large constant added, so it is no neighbour of itself;
- scale ``s`` = mean distance over the batch; distances are divided by ``s`` (so temperatures are
  relative to the data's spread) and samples by ``max(s / sqrt(S), 1e-3)`` (S = feature size);
- per temperature R: logits ``-D / R``; affinity ``sqrt(softmax over targets * softmax over
  generated samples)``; attraction to positives weighted by the negatives' total affinity and
  repulsion from negatives weighted by the positives' total affinity, ``F_i = sum_j c_ij (y_j -
  x_i)``; each temperature's F is rescaled to unit RMS over the batch, then they are summed;
- loss = mean squared difference between the normalised sample and ``stop_grad(it + F)``.

The default temperatures add a long-range 4.0 to the paper's (0.02, 0.05, 0.2): see
:data:`~policy_runtime.policies.config.DRIFT_TEMPERATURES` for the rows it rescues.

The per-timestep variant treats every horizon step as its own problem (S = action dim, with its
own scale and RMS) and averages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from policy_runtime.policies.config import DRIFT_TEMPERATURES

#: Added to a sample's (scale-normalised) distance to itself: exp(-1e4 / R) is 0 in float32 for
#: any temperature R below 100.
SELF_MASK = 1e4
#: Floors that keep degenerate batches (all samples equal, zero force) finite.
SCALE_FLOOR = 1e-3
FORCE_RMS_FLOOR = 1e-4


@dataclass(frozen=True)
class _Drift:
    """The field for grouped samples ``(K, B, G, S)``: statistics are per group k."""

    force: torch.Tensor  # (K, B, G, S), in units of the normalised samples
    input_scale: torch.Tensor  # (K, 1, 1, 1): normalised sample = sample / input_scale
    info: dict[str, torch.Tensor]


def _check(generated: torch.Tensor, positives: torch.Tensor, temperatures: Sequence[float]) -> None:
    if generated.ndim != 3 or positives.ndim != 3:
        raise ValueError(
            f"generated (B, G, S) and positives (B, P, S) must be 3-D, got"
            f" {tuple(generated.shape)} and {tuple(positives.shape)}"
        )
    if generated.shape[0] != positives.shape[0] or generated.shape[2] != positives.shape[2]:
        raise ValueError(
            f"generated {tuple(generated.shape)} and positives {tuple(positives.shape)} must"
            " agree in batch (B) and feature size (S)"
        )
    if generated.shape[1] < 1 or positives.shape[1] < 1:
        raise ValueError("need at least one generated and one positive sample per row")
    if not temperatures or min(temperatures) <= 0:
        raise ValueError(f"temperatures must be positive, got {tuple(temperatures)}")


def _group(x: torch.Tensor, per_timestep: bool, action_dim: int | None) -> torch.Tensor:
    """(B, N, S) -> (K, B, N, S'): K = 1 (whole chunk) or K = horizon with S' = action dim."""
    if not per_timestep:
        return x.unsqueeze(0)
    if action_dim is None or action_dim <= 0 or x.shape[2] % action_dim:
        raise ValueError(
            f"per_timestep needs an action_dim dividing the feature size {x.shape[2]},"
            f" got {action_dim}"
        )
    b, n, s = x.shape
    return x.reshape(b, n, s // action_dim, action_dim).permute(2, 0, 1, 3)


def _ungroup(x: torch.Tensor, per_timestep: bool) -> torch.Tensor:
    """Inverse of :func:`_group`."""
    if not per_timestep:
        return x.squeeze(0)
    k, b, n, d = x.shape
    return x.permute(1, 2, 0, 3).reshape(b, n, k * d)


@torch.no_grad()
def _drift(
    gen: torch.Tensor, pos: torch.Tensor, temperatures: Sequence[float], rescale: bool = True
) -> _Drift:
    """The drift field of grouped generated ``(K, B, G, S)`` toward positives ``(K, B, P, S)``."""
    gen, pos = gen.detach().float(), pos.detach().float()
    k, b, g, s = gen.shape
    n = g + pos.shape[2]
    targets = torch.cat([gen, pos], dim=2)  # negatives first, then positives
    dist = torch.cdist(
        gen.reshape(k * b, g, s),
        targets.reshape(k * b, n, s),
        compute_mode="donot_use_mm_for_euclid_dist",
    ).reshape(k, b, g, n)
    scale = dist.mean(dim=(1, 2, 3), keepdim=True)  # per group, over the whole batch
    input_scale = (scale / math.sqrt(s)).clamp_min(SCALE_FLOOR)
    dist = dist / scale.clamp_min(SCALE_FLOOR)
    dist[..., :g] += SELF_MASK * torch.eye(g, device=gen.device, dtype=gen.dtype)
    gen_n, targets_n = gen / input_scale, targets / input_scale

    info = {"distance_scale": scale.mean()}
    total = torch.zeros_like(gen_n)
    for temperature in temperatures:
        logits = -dist / temperature
        # Geometric mean of the two normalisations: over targets (rows) and over generated
        # samples (columns), so neither a crowded target nor a crowded sample dominates.
        affinity = torch.sqrt(logits.softmax(dim=-1) * logits.softmax(dim=-2))
        aff_neg, aff_pos = affinity[..., :g], affinity[..., g:]
        coef = torch.cat(
            [
                -aff_neg * aff_pos.sum(dim=-1, keepdim=True),
                aff_pos * aff_neg.sum(dim=-1, keepdim=True),
            ],
            dim=-1,
        )
        # F_i = sum_j coef_ij (y_j - x_i)
        force = coef @ targets_n - coef.sum(dim=-1, keepdim=True) * gen_n
        rms = force.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
        info[f"force_rms/{temperature:g}"] = rms.mean()
        total += force / rms.clamp_min(FORCE_RMS_FLOOR) if rescale else force
    return _Drift(total, input_scale, info)


def drift_field(
    generated: torch.Tensor,
    positives: torch.Tensor,
    temperatures: Sequence[float] = DRIFT_TEMPERATURES,
    per_timestep: bool = False,
    action_dim: int | None = None,
    rescale: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The force on each generated sample, (B, G, S), in normalised-sample units, and info.

    ``rescale`` False skips the per-temperature unit-RMS rescaling, so the magnitude shows how
    far the generated set is from equilibrium. ``info``: ``distance_scale`` (mean distance) and
    ``force_rms/<R>`` (each temperature's RMS before rescaling).
    """
    _check(generated, positives, temperatures)
    drift = _drift(
        _group(generated, per_timestep, action_dim),
        _group(positives, per_timestep, action_dim),
        temperatures,
        rescale,
    )
    return _ungroup(drift.force, per_timestep), drift.info


def drifting_loss(
    generated: torch.Tensor,
    positives: torch.Tensor,
    temperatures: Sequence[float] = DRIFT_TEMPERATURES,
    per_timestep: bool = False,
    action_dim: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Scalar loss (gradient flows into ``generated`` only) and detached info (see drift_field).

    ``generated`` (B, G, S): G samples per observation; ``positives`` (B, P, S): the data for
    the same observation (a policy has P = 1: the demonstration chunk). ``per_timestep`` needs
    ``action_dim`` to split S = horizon * action_dim.
    """
    _check(generated, positives, temperatures)
    gen = _group(generated, per_timestep, action_dim)
    drift = _drift(gen, _group(positives, per_timestep, action_dim), temperatures)
    gen_n = gen.float() / drift.input_scale
    goal = (gen_n + drift.force).detach()
    loss = (gen_n - goal).square().mean()
    return loss, drift.info
