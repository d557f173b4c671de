"""Shared generator building blocks (official ``models/layers.py``, ``models/lightningdit.py``).

- :func:`modulate`: adaLN ``x·(1 + scale) + shift``; the condition may be per sample (B, W) or
  per token (B, N, W) (the AR models use per-token conditions).
- :class:`TimestepEmbedder`: 256-d sinusoid ``[cos | sin]`` (max period 1e4) → Linear-SiLU-Linear.
- :class:`LabelEmbedder`: a table of ``num_classes + 1`` rows; the last row is the null class used
  for label dropout in training and for the unconditional branch of classifier-free guidance.
- :func:`sincos_pos_embed_2d`: the fixed MAE/DiT 2-D sin-cos position embedding.
- :class:`RotaryEmbedding2D`: EVA-style 2-D RoPE for LightningDiT (a true rotation: both elements
  of a pair share one angle; row angles in the first half of the head dim, column angles in the
  second).
- :class:`Attention`: SDPA attention with optional RoPE, qk-norm, causal masking and a KV cache.
- :class:`AdaLNBlock`: the adaLN-Zero transformer block (DiT: LayerNorm without affine + GELU MLP;
  LightningDiT: RMSNorm + SwiGLU + RoPE).
- :class:`FinalLayer`: ``ModulatedLinear`` — norm, adaLN shift/scale, Linear.

Notebook 05 draws the sin-cos table; notebook 07 checks that the RoPE is norm-preserving.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp, SwiGLU

# ---------------------------------------------------------------------------------------------
# Conditioning
# ---------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x·(1 + scale) + shift``; shift/scale are (B, W) (broadcast over tokens) or (B, N, W)."""
    if shift.ndim == x.ndim - 1:
        shift, scale = shift.unsqueeze(1), scale.unsqueeze(1)
    return x * (1 + scale) + shift


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features ``[cos(t·f_k) | sin(t·f_k)]``, f_k = max_period^(−k/(dim/2)).

    ``t`` may be integer diffusion steps (DiT) or floats in [0, 1] (SiT/LightningDiT).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """t (B,) → (B, W): sinusoid of ``freq_dim`` then Linear-SiLU-Linear (official ``models/layers.py``)."""

    def __init__(self, hidden_size: int, freq_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim, self.max_period)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels → (B, W) with a null row at index ``num_classes``.

    In training mode each label is replaced by the null class with probability ``dropout_prob``
    (label dropout, which makes classifier-free guidance possible).
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float = 0.1):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = float(dropout_prob)
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    @property
    def null_id(self) -> int:
        return self.num_classes

    def drop(self, labels: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        """Replace labels by the null id with probability ``dropout_prob``."""
        if self.dropout_prob <= 0:
            return labels
        gdev = rng.device if rng is not None else labels.device
        u = torch.rand(labels.shape, generator=rng, device=gdev).to(labels.device)
        return torch.where(u < self.dropout_prob, torch.full_like(labels, self.null_id), labels)

    def forward(self, labels: torch.Tensor, train: bool | None = None) -> torch.Tensor:
        train = self.training if train is None else train
        if train:
            labels = self.drop(labels)
        return self.embedding_table(labels)


# ---------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------


def sincos_pos_embed_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(L,) positions → (L, dim) ``[sin(p·ω_k) | cos(p·ω_k)]``, ω_k = 10000^(−k/(dim/2))."""
    if dim % 2:
        raise ValueError(f"dim={dim} must be even for a sin-cos embedding")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double().reshape(-1)[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> torch.Tensor:
    """The MAE/DiT fixed 2-D table (grid², dim), row-major tokens; the first half of the
    channels encodes the column coordinate, the second half the row coordinate."""
    if dim % 4:
        raise ValueError(f"dim={dim} must be divisible by 4 for a 2-D sin-cos embedding")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    emb = torch.cat([sincos_pos_embed_1d(dim // 2, cols), sincos_pos_embed_1d(dim // 2, rows)], dim=1)
    return emb.float()


class RotaryEmbedding2D(nn.Module):
    """EVA-style 2-D RoPE over a ``grid_size × grid_size`` token grid (official ``models/layers.py``,
    ``VisionRotaryEmbeddingFast``, used by ``models/lightningdit.py``).

    For head dim D: D/4 frequencies θ^(−2k/(D/2)) (θ = 1e4) over integer positions; each is used
    by one adjacent pair (interleaved), rows in the first D/2 channels and columns in the last
    D/2. ``freqs_cos``/``freqs_sin`` are (grid², D) persistent buffers, as in the official code.
    """

    def __init__(self, head_dim: int, grid_size: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"head_dim={head_dim} must be divisible by 4 for 2-D RoPE")
        half = head_dim // 2
        freqs = 1.0 / theta ** (torch.arange(0, half, 2, dtype=torch.float32) / half)  # (D/4,)
        pos = torch.arange(grid_size, dtype=torch.float32)
        f = torch.outer(pos, freqs).repeat_interleave(2, dim=-1)  # (G, D/2), pairs share an angle
        rows = f[:, None, :].expand(grid_size, grid_size, half)
        cols = f[None, :, :].expand(grid_size, grid_size, half)
        angles = torch.cat([rows, cols], dim=-1).reshape(grid_size * grid_size, head_dim)
        self.register_buffer("freqs_cos", angles.cos())
        self.register_buffer("freqs_sin", angles.sin())

    @staticmethod
    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        """(x0, x1, x2, x3, …) → (−x1, x0, −x3, x2, …)."""
        x = x.reshape(*x.shape[:-1], -1, 2)
        x1, x2 = x.unbind(-1)
        return torch.stack([-x2, x1], dim=-1).flatten(-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate q or k of shape (B, heads, N, D) with N = grid²."""
        cos = self.freqs_cos.to(x.dtype)
        sin = self.freqs_sin.to(x.dtype)
        return x * cos + self.rotate_half(x) * sin


# ---------------------------------------------------------------------------------------------
# Transformer pieces
# ---------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention (SDPA), qkv bias, optional qk-norm, RoPE, causal mask, KV cache.

    ``kv_cache``: a dict that is filled with (and extended by) this call's keys and values under
    ``"k"``/``"v"``; queries then attend to every cached key (for AR decoding, one step at a time).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = False,
                 norm_layer=nn.LayerNorm):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: nn.Module | None = None, causal: bool = False,
                kv_cache: dict | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        if kv_cache is not None:
            if "k" in kv_cache:
                k = torch.cat([kv_cache["k"], k], dim=2)
                v = torch.cat([kv_cache["v"], v], dim=2)
            kv_cache["k"], kv_cache["v"] = k, v
        is_causal = causal and k.shape[2] == n and n > 1
        # with a cache, a block of new queries sees all past keys and the causal part of its own
        mask = None
        if causal and not is_causal and n > 1:
            past = k.shape[2] - n
            mask = torch.ones(n, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def _norm(kind: str, dim: int, affine: bool) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=1e-6, elementwise_affine=affine)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, elementwise_affine=affine)
    raise ValueError(f"norm={kind!r} is not known; allowed: layernorm, rmsnorm")


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero (DiT paper §3.2; official ``models/layers.py``).

    ``x ← x + g₁·Attn(modulate(norm(x), β₁, γ₁))``, ``x ← x + g₂·MLP(modulate(norm(x), β₂, γ₂))``,
    with (β₁, γ₁, g₁, β₂, γ₂, g₂) = Linear(SiLU(c)) zero-initialised, so every block starts as the
    identity. ``norm``: ``layernorm`` (no affine, eps 1e-6) or ``rmsnorm`` (affine);
    ``mlp``: ``gelu`` (timm ``Mlp``, exact GELU) or ``swiglu`` (timm ``SwiGLU``, hidden 2/3·ratio·W).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm: str = "layernorm",
                 mlp: str = "gelu", qk_norm: bool = False):
        super().__init__()
        affine = norm == "rmsnorm"
        self.norm1 = _norm(norm, dim, affine)
        self.attn = Attention(dim, num_heads, qkv_bias=True, qk_norm=qk_norm,
                              norm_layer=(lambda d: _norm(norm, d, True)))
        self.norm2 = _norm(norm, dim, affine)
        if mlp == "gelu":
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        elif mlp == "swiglu":
            self.mlp = SwiGLU(dim, int(2 / 3 * dim * mlp_ratio), act_layer=nn.SiLU)
        else:
            raise ValueError(f"mlp={mlp!r} is not known; allowed: gelu, swiglu")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: nn.Module | None = None, causal: bool = False,
                kv_cache: dict | None = None, c_index: torch.Tensor | None = None) -> torch.Tensor:
        """``c``: (B, W) or per token (B, T, W). With ``c_index`` (B,), ``c`` holds only the U distinct
        conditions and sample b uses ``c[c_index[b]]``: the same result, with the modulation
        computed U times instead of B times (the AR models' per-token conditions repeat per class)."""
        mod = self.adaLN_modulation(c)
        if c_index is not None:
            mod = mod.index_select(0, c_index)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        if gate1.ndim == x.ndim - 1:
            gate1, gate2 = gate1.unsqueeze(1), gate2.unsqueeze(1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), rope=rope, causal=causal,
                                  kv_cache=kv_cache)
        x = x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x


class FinalLayer(nn.Module):
    """``ModulatedLinear``: norm → adaLN shift/scale from c → Linear(W → out) (official ``models/layers.py``)."""

    def __init__(self, dim: int, out_dim: int, norm: str = "layernorm"):
        super().__init__()
        self.norm_final = _norm(norm, dim, affine=(norm == "rmsnorm"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def init_adaln_zero(module: nn.Module) -> None:
    """DiT init: xavier-uniform Linear weights (zero bias), then zero every adaLN modulation and the
    final projection, N(0, 0.02) for label tables and timestep MLPs (official ``models/dit.py``, ``diffusion/``)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, LabelEmbedder):
            nn.init.normal_(m.embedding_table.weight, std=0.02)
        elif isinstance(m, TimestepEmbedder):
            nn.init.normal_(m.mlp[0].weight, std=0.02)
            nn.init.normal_(m.mlp[2].weight, std=0.02)
        elif isinstance(m, (AdaLNBlock, FinalLayer)):
            nn.init.zeros_(m.adaLN_modulation[-1].weight)
            nn.init.zeros_(m.adaLN_modulation[-1].bias)
            if isinstance(m, FinalLayer):
                nn.init.zeros_(m.linear.weight)
                nn.init.zeros_(m.linear.bias)
