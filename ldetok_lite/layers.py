"""Transformer pieces shared by the tokenizer and the generators.

Sections (append new pieces in their own section; keep the official parameter names, which are
what makes official checkpoints load):

1. Norms and MLPs: ``RMSNorm``, ``SwiGLU`` (official ``models/detok.py``, ``get_rope_tensor`` and ``Block``)
2. The DeTok 2-D RoPE: ``rope_frequencies``, ``rope_table``, ``rotate_half``, ``apply_rope``
   (official ``models/detok.py``, ``get_rope_tensor``, reproduced exactly, quirk included; taught in
   ``02_tokenizer``)
3. Attention and the pre-norm block: ``Attention``, ``Block`` (official ``models/detok.py``, ``Block``)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RMSNorm",
    "SwiGLU",
    "swiglu_hidden",
    "rope_frequencies",
    "rope_table",
    "rotate_half",
    "apply_rope",
    "Attention",
    "Block",
]


# ============================================================================================
# 1. Norms and MLPs
# ============================================================================================


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` with the DeTok default ``eps = 1e-6`` and a learned weight (key ``weight``)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__(dim, eps=eps)


def swiglu_hidden(width: int) -> int:
    """The SwiGLU hidden size of the official code: ``int(2/3 · 4 · width)`` (2048 for 768)."""
    return int(2 / 3 * 4 * width)


class SwiGLU(nn.Module):
    """``w3(SiLU(x1) ⊙ x2)`` with ``(x1, x2) = w12(x).chunk(2)``; both linears have a bias.

    Official keys ``w12`` (dim → 2·hidden; rows [0, hidden) are the SiLU gate) and ``w3``.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


# ============================================================================================
# 2. The DeTok 2-D RoPE (official ``models/detok.py``, ``get_rope_tensor`` and ``Block``)
# ============================================================================================
#
# For head_dim D: D/4 frequencies log-spaced from 7 down to 7e-4, repeated to D/2 values in the
# *half-split* layout [f, f]. Rows use the first D/2 dims, columns the last D/2. Positions are
# normalised to [0, 1] (``linspace``). The table is cat(cos, sin). It is then applied with the
# *interleaved* rotate_half (pairs (0,1), (2,3), ...), so the two elements of a pair get different
# angles: not a true rotation (norms are not preserved). Official weights were trained with
# exactly this, so we reproduce it bit for bit: the same float32 operations in the same order
# (exponents and positions from ``linspace``, the frequencies times 2π before the positions).


def rope_frequencies(head_dim: int) -> torch.Tensor:
    """``f_k = 7 · (7 / 7e-4)^(-k / (D/4 - 1))`` for ``k = 0 … D/4 - 1``, then ``[f, f]`` (D/2 values)."""
    if head_dim % 4 != 0 or head_dim < 8:
        raise ValueError(f"head_dim={head_dim} is not allowed for the DeTok RoPE; use a multiple of 4, >= 8")
    exponents = torch.linspace(0.0, -1.0, head_dim // 4)  # -k / (D/4 - 1)
    f = 7.0 * (7.0 / 7e-4) ** exponents
    return torch.cat([f, f])


def rope_table(head_dim: int, grid_h: int, grid_w: int | None = None) -> torch.Tensor:
    """The RoPE table ``cat(cos(angle), sin(angle))`` of shape ``(1, grid_h·grid_w, 2·head_dim)``.

    Token ``n = h·grid_w + w`` (row-major) has ``angle[d] = 2π·u·F[d]`` for ``d < D/2`` and
    ``2π·v·F[d - D/2]`` otherwise, with ``u = h/(grid_h - 1)``, ``v = w/(grid_w - 1)``.
    """
    grid_w = grid_h if grid_w is None else grid_w
    freqs = rope_frequencies(head_dim) * 2 * math.pi  # angular frequencies
    u = torch.linspace(0.0, 1.0, grid_h)[:, None].expand(grid_h, grid_w).reshape(-1, 1)
    v = torch.linspace(0.0, 1.0, grid_w)[None, :].expand(grid_h, grid_w).reshape(-1, 1)
    angle = torch.cat([u * freqs, v * freqs], dim=1)  # (N, D)
    return torch.cat([angle.cos(), angle.sin()], dim=1)[None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The *interleaved* rotate_half: ``(x0, x1, x2, x3, …) → (-x1, x0, -x3, x2, …)``."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x·cos + rotate_half(x)·sin`` (the official formula; see the section note)."""
    return x * cos + rotate_half(x) * sin


# ============================================================================================
# 3. Attention and the pre-norm block
# ============================================================================================


class Attention(nn.Module):
    """Multi-head self-attention with fused ``qkv`` (rows [q; k; v], heads contiguous) and ``proj``.

    ``rope``: a table ``(1 or B, L, 2·head_dim)`` from :func:`rope_table` (gathered for the visible
    tokens when masking), applied to q and k. Non-causal SDPA with scale ``1/√head_dim``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            cos, sin = rope.to(qkv.dtype).unsqueeze(1).chunk(2, dim=-1)  # (1|B, 1, L, D) each
            q, k = apply_rope(qkv[:2], cos, sin).unbind(0)  # q and k in one go
        else:
            q, k = qkv[0], qkv[1]
        out = F.scaled_dot_product_attention(q, k, qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    RMSNorm and SwiGLU as in DeTok; keys ``norm1``, ``attn``, ``norm2``, ``mlp``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int | None = None):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, swiglu_hidden(dim) if mlp_hidden is None else mlp_hidden)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))
