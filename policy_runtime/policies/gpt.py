"""minGPT (Karpathy) as Behavior Transformers use it: a causal transformer over a window of
continuous observation features.

Per step: a linear token embedding of the features plus a learned position embedding, dropout,
``n_layer`` pre-LayerNorm blocks (causal multi-head self-attention, then a 4x GELU MLP, each
with a residual connection and dropout), a final LayerNorm. Weights start as minGPT's: normal
(0, 0.02) for linear layers and the position embedding, zero biases. Attention is written out
(matmul, mask, softmax) so the ONNX export is plain operators on any opset.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    mask: torch.Tensor

    def __init__(self, embed_dim: int, heads: int, block_size: int, dropout: float) -> None:
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.attn_drop = nn.Dropout(dropout)
        self.resid_drop = nn.Dropout(dropout)
        mask = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        # (B, heads, T, head_dim)
        q, k, v = (z.reshape(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        att = att.masked_fill(~self.mask[:t, :t], float("-inf"))
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, embed_dim: int, heads: int, block_size: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim)
        self.attn = CausalSelfAttention(embed_dim, heads, block_size, dropout)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, 4 * embed_dim),
            nn.GELU(),
            nn.Linear(4 * embed_dim, embed_dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class MinGPT(nn.Module):
    """``(B, T, input_dim)`` features, ``T <= block_size`` -> ``(B, T, embed_dim)``; step ``t``
    sees steps ``0..t`` only."""

    def __init__(
        self,
        input_dim: int,
        block_size: int,
        layers: int,
        heads: int,
        embed_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok_emb = nn.Linear(input_dim, embed_dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, block_size, embed_dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(Block(embed_dim, heads, block_size, dropout) for _ in range(layers))
        )
        self.ln_f = nn.LayerNorm(embed_dim)
        self.apply(_init_weights)
        nn.init.normal_(self.pos_emb, mean=0.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t > self.block_size:
            raise ValueError(f"a window of {t} steps exceeds the block size {self.block_size}")
        h = self.drop(self.tok_emb(x) + self.pos_emb[:, :t])
        return self.ln_f(self.blocks(h))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
