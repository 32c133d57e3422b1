"""Diffusion Policy's 1-D temporal U-Net (Chi et al.), rebuilt module for module.

The module tree and parameter names are those of Diffusion Policy's ``ConditionalUnet1D``
(``diffusion_step_encoder.{1,3}``, ``down_modules.{i}.{0,1,2}``, ``mid_modules``, ``up_modules``,
``final_conv.{0,1}``; residual blocks with ``blocks.{0,1}.block.{0,1,2}``, ``cond_encoder.1`` and
``residual_conv``), so a Diffusion Policy ``state_dict`` (its ``model.*`` entries) loads with
``strict=True`` and reproduces its numbers: see ``tests/test_dp_golden.py``. Only the global
(FiLM) conditioning path is implemented; DP's optional local conditioning has no parameters when
unused, so the names still line up. No einops: the one Rearrange in DP's FiLM encoder is replaced
by the parameter-free ``nn.Unflatten`` at the same index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import cast

import torch
from torch import nn


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of the (integer) diffusion step.

    Same formula as DP: frequencies ``exp(-log(10000) * i / (half - 1))``, sines then cosines.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"step embedding size must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freq = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=x.device) * -freq)
        emb = x[:, None] * freqs[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Downsample1d(nn.Module):
    """Halves the horizon: stride-2 Conv1d, kernel 3 (DP keeps it in a ``.conv`` attribute)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    """Doubles the horizon: ConvTranspose1d, kernel 4, stride 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Conv1dBlock(nn.Module):
    """Conv1d (same padding) -> GroupNorm -> Mish, as ``block.{0,1,2}``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks with FiLM from the conditioning vector in between, plus a residual.

    FiLM (Perez et al.): ``Mish -> Linear(cond, 2 * out)`` gives a per-channel scale and bias
    (``cond_predict_scale``) or, without it, ``Linear(cond, out)`` a bias only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_dim: int,
        kernel_size: int = 3,
        n_groups: int = 8,
        cond_predict_scale: bool = False,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                Conv1dBlock(in_channels, out_channels, kernel_size, n_groups=n_groups),
                Conv1dBlock(out_channels, out_channels, kernel_size, n_groups=n_groups),
            ]
        )
        cond_channels = out_channels * 2 if cond_predict_scale else out_channels
        self.cond_predict_scale = cond_predict_scale
        self.out_channels = out_channels
        # Index 2 stands where DP has einops' Rearrange('batch t -> batch t 1'): same names.
        self.cond_encoder = nn.Sequential(
            nn.Mish(), nn.Linear(cond_dim, cond_channels), nn.Unflatten(-1, (cond_channels, 1))
        )
        self.residual_conv: nn.Module = (
            nn.Conv1d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x`` (B, in, T), ``cond`` (B, cond_dim) -> (B, out, T)."""
        out = self.blocks[0](x)
        embed = self.cond_encoder(cond)
        if self.cond_predict_scale:
            embed = embed.reshape(embed.shape[0], 2, self.out_channels, 1)
            out = embed[:, 0] * out + embed[:, 1]
        else:
            out = out + embed
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """Noise (or chunk) predictor over an action chunk, conditioned on step and observation.

    Down path: per level two residual blocks then a stride-2 conv (none at the last level);
    middle: two residual blocks; up path: concatenate the skip, two residual blocks, transposed
    conv (every up level upsamples, as in DP); head: a conv block and a 1x1 conv. The horizon
    must therefore be divisible by ``2 ** (len(down_dims) - 1)``. Every block is conditioned by
    ``[step embedding, global_cond]``. The head's GroupNorm uses 8 groups whatever ``n_groups``
    is, exactly like DP (which does not pass ``n_groups`` there).
    """

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int | None = None,
        diffusion_step_embed_dim: int = 256,
        down_dims: Sequence[int] = (256, 512, 1024),
        kernel_size: int = 3,
        n_groups: int = 8,
        cond_predict_scale: bool = False,
    ) -> None:
        super().__init__()
        if not down_dims:
            raise ValueError("down_dims needs at least one level")
        all_dims = [input_dim, *down_dims]
        start_dim = down_dims[0]
        dsed = diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed),
            nn.Linear(dsed, dsed * 4),
            nn.Mish(),
            nn.Linear(dsed * 4, dsed),
        )
        cond_dim = dsed + (global_cond_dim or 0)
        self.global_cond_dim = global_cond_dim

        def block(dim_in: int, dim_out: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(
                dim_in,
                dim_out,
                cond_dim=cond_dim,
                kernel_size=kernel_size,
                n_groups=n_groups,
                cond_predict_scale=cond_predict_scale,
            )

        in_out = list(pairwise(all_dims))
        mid_dim = all_dims[-1]
        self.mid_modules = nn.ModuleList([block(mid_dim, mid_dim), block(mid_dim, mid_dim)])

        self.down_modules = nn.ModuleList()
        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind >= len(in_out) - 1
            self.down_modules.append(
                nn.ModuleList(
                    [
                        block(dim_in, dim_out),
                        block(dim_out, dim_out),
                        Downsample1d(dim_out) if not is_last else nn.Identity(),
                    ]
                )
            )

        self.up_modules = nn.ModuleList()
        for dim_in, dim_out in reversed(in_out[1:]):
            self.up_modules.append(
                nn.ModuleList(
                    [block(dim_out * 2, dim_in), block(dim_in, dim_in), Upsample1d(dim_in)]
                )
            )

        self.final_conv = nn.Sequential(
            Conv1dBlock(start_dim, start_dim, kernel_size=kernel_size),
            nn.Conv1d(start_dim, input_dim, 1),
        )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        global_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sample`` (B, T, input_dim), ``timestep`` (B,) or scalar, ``global_cond`` (B, C)."""
        if (global_cond is None) != (self.global_cond_dim is None):
            raise ValueError(
                f"global_cond is {'missing' if global_cond is None else 'unexpected'}"
                f" (the network was built with global_cond_dim={self.global_cond_dim})"
            )
        x = sample.transpose(1, 2)  # channels first: (B, input_dim, T)

        timesteps = timestep
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], dtype=torch.long, device=sample.device)
        elif timesteps.ndim == 0:
            timesteps = timesteps[None].to(sample.device)
        # expand (not repeat) keeps the graph ONNX/Core ML friendly, as in DP.
        timesteps = timesteps.expand(sample.shape[0])
        # The sinusoidal features (and a parameter-free encoder's conditioning) come out in
        # float32: compute in the sample's precision, so a half-precision network runs too.
        position, *mlp = self.diffusion_step_encoder
        cond = position(timesteps).to(sample.dtype)
        for layer in mlp:
            cond = layer(cond)
        if global_cond is not None:
            cond = torch.cat([cond, global_cond.to(sample.dtype)], dim=-1)

        skips = []
        for level in self.down_modules:
            resnet, resnet2, downsample = cast(nn.ModuleList, level)
            x = resnet(x, cond)
            x = resnet2(x, cond)
            skips.append(x)
            x = downsample(x)
        for mid in self.mid_modules:
            x = mid(x, cond)
        for level in self.up_modules:
            resnet, resnet2, upsample = cast(nn.ModuleList, level)
            x = torch.cat((x, skips.pop()), dim=1)
            x = resnet(x, cond)
            x = resnet2(x, cond)
            x = upsample(x)
        x = self.final_conv(x)
        return x.transpose(1, 2)
