"""MAR: masked autoregression with a per-token diffusion head (official ``models/mar.py``; notebook 08).

Tokens are the latent grid read row-major (patch 1): (B, C, h, w) → (B, L = h·w, C).

Training (:meth:`MAR.loss`): one random order per sample; one mask rate per batch from a normal
truncated to [0.7, 1] (loc 1, scale 0.25); the first ⌈L·rate⌉ positions of each order are masked.
The MAE-style **encoder** sees ``buffer_size`` class-embedding slots plus the visible tokens; the
**decoder** refills the masked places with a mask token and outputs one condition z per token;
:class:`~ldetok_lite.generators.diffloss.DiffLoss` is trained on the **masked tokens only**.

Sampling (:meth:`MAR.sample`): start fully masked; at step s of S keep
⌊L·cos(π/2·(s+1)/S)⌋ tokens masked (clamped to [1, #masked − 1]) and sample the others with the
head; the last step samples all that remain. Guidance: a doubled batch whose second half uses the
null-class embedding (the paper's ``fake_latent``), with the linear schedule
cfg_s = 1 + (cfg − 1)·(L − mask_len)/L.

The order/mask helpers here are shared with the AR models (``ar.py``) and the order viewer.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
from timm.layers import Mlp
from timm.models.vision_transformer import Block

from .base import Generator, register
from .blocks import LabelEmbedder
from .diffloss import DiffLoss

# ---------------------------------------------------------------------------------------------
# Tokens, orders and masks
# ---------------------------------------------------------------------------------------------


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) → (B, h·w, C), row-major (patch size 1, as in the paper)."""
    return latents.flatten(2).transpose(1, 2)


def unpatchify(tokens: torch.Tensor, size: int) -> torch.Tensor:
    """(B, L, C) → (B, C, size, size)."""
    b, n, c = tokens.shape
    if n != size * size:
        raise ValueError(f"{n} tokens cannot form a {size}x{size} grid")
    return tokens.transpose(1, 2).reshape(b, c, size, size)


def _randfloat(shape, device, rng):
    gdev = rng.device if rng is not None else device
    return torch.rand(shape, generator=rng, device=gdev).to(device)


def raster_orders(batch: int, seq_len: int, device=None) -> torch.Tensor:
    """The raster (row-major) order for every sample: (B, L) = arange(L)."""
    return torch.arange(seq_len, device=device).unsqueeze(0).expand(batch, seq_len).contiguous()


def random_orders(batch: int, seq_len: int, device=None, rng: torch.Generator | None = None) -> torch.Tensor:
    """An independent uniformly random permutation of range(L) per sample: (B, L) int64.

    ``orders[b, i]`` is the grid position generated at step i.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    return torch.argsort(_randfloat((batch, seq_len), device, rng), dim=1)


def invert_orders(orders: torch.Tensor) -> torch.Tensor:
    """The inverse permutations: ``inv[b, orders[b, i]] = i`` (the step of each grid position)."""
    inv = torch.empty_like(orders)
    steps = torch.arange(orders.shape[1], device=orders.device).expand_as(orders)
    return inv.scatter_(1, orders, steps)


def to_order(tokens: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Grid-ordered tokens (B, L, C) → generation order: ``out[:, i] = tokens[:, orders[:, i]]``."""
    return torch.gather(tokens, 1, orders.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def from_order(tokens_ord: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_order`: put tokens in generation order back on the grid."""
    out = torch.empty_like(tokens_ord)
    return out.scatter_(1, orders.unsqueeze(-1).expand(-1, -1, tokens_ord.shape[-1]), tokens_ord)


def mask_by_order(num_masked: int, orders: torch.Tensor) -> torch.Tensor:
    """Bool (B, L): True at the first ``num_masked`` positions of each order (MAR convention)."""
    b, n = orders.shape
    if not 0 <= num_masked <= n:
        raise ValueError(f"num_masked={num_masked} is out of range; allowed [0, {n}]")
    mask = torch.zeros(b, n, dtype=torch.bool, device=orders.device)
    return mask.scatter_(1, orders[:, :num_masked], True)


def truncnorm_icdf(u: torch.Tensor, low: float, high: float, loc: float, scale: float) -> torch.Tensor:
    """Inverse CDF of N(loc, scale²) truncated to [low, high], at u ∈ [0, 1]."""
    ndtr = torch.special.ndtr
    a = ndtr(torch.tensor((low - loc) / scale, dtype=torch.float64))
    b = ndtr(torch.tensor((high - loc) / scale, dtype=torch.float64))
    p = a + (b - a) * u.double()
    return (loc + scale * torch.special.ndtri(p)).clamp(low, high)


def sample_mask_rate(rng: torch.Generator | None = None, low: float = 0.7, high: float = 1.0,
                     loc: float = 1.0, scale: float = 0.25) -> float:
    """One MAR training mask rate from the truncated normal (paper: [0.7, 1], loc 1, scale 0.25)."""
    if not 0 <= low < high <= 1:
        raise ValueError(f"mask-rate range [{low}, {high}] is invalid; allowed 0 <= low < high <= 1")
    u = torch.rand((), generator=rng, device=rng.device if rng is not None else "cpu")
    return float(truncnorm_icdf(u.cpu(), low, high, loc, scale))


def num_masked_for_rate(rate: float, seq_len: int) -> int:
    """⌈L·rate⌉ tokens are masked in training."""
    return min(seq_len, int(math.ceil(seq_len * rate)))


def cosine_mask_len(step: int, num_steps: int, seq_len: int) -> int:
    """Tokens still masked after sampling step ``step`` (0-based) of ``num_steps``:
    ⌊L·cos(π/2·(step+1)/num_steps)⌋ (before clamping to [1, #masked − 1])."""
    return int(math.floor(seq_len * math.cos(math.pi / 2.0 * (step + 1) / num_steps)))


def mar_schedule(num_steps: int, seq_len: int) -> list[int]:
    """Number of tokens generated at each MAR step (sums to L): the cosine schedule with the
    paper's clamping. Useful for plots and for the order viewer."""
    masked, out = seq_len, []
    for s in range(num_steps):
        mask_len = max(1, min(masked - 1, cosine_mask_len(s, num_steps, seq_len)))
        n_new = masked if s == num_steps - 1 else masked - mask_len
        out.append(n_new)
        masked -= n_new
    return out


def linear_cfg(cfg_scale: float, frac: float) -> float:
    """The linear guidance schedule 1 + (cfg_scale − 1)·frac, frac = share of tokens already known."""
    return 1.0 + (cfg_scale - 1.0) * frac


def token_steps(trajectory: list[torch.Tensor]) -> torch.Tensor:
    """(B, h, w) int: the step at which each token first appears in a MAR/AR trajectory
    (``generate(..., return_trajectory=True)``; entry 0 is the empty canvas)."""
    known = torch.stack([(t != 0).any(dim=1) for t in trajectory])  # (S+1, B, h, w)
    return known.float().argmax(dim=0)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class MlpWithoutDropout(Mlp):
    """timm's ``Mlp`` with its dropout fixed at 0. timm's ``Block`` hands its ``proj_drop`` to the
    MLP as well; the official MAR runs all pass ``--no_dropout_in_mlp`` (``models/layers.py``,
    ``Block``), so only the attention and its output projection keep their dropout."""

    def __init__(self, *args, drop=0.0, **kwargs):
        super().__init__(*args, drop=0.0, **kwargs)



class MAR(Generator):
    """MAR (official ``models/mar.py``) with a DiffLoss head (official ``models/diffloss.py``).

    Args beyond :class:`Generator`'s: ``hidden_size``, ``depth`` (blocks in the encoder and again
    in the decoder), ``num_heads``, ``buffer_size`` (class-embedding slots), ``dropout``
    (attention and attention-projection dropout; the MLP has none, as in every official README run), ``head_width``,
    ``head_depth``, ``head_steps`` (default head DDPM steps at sampling), ``batch_mul``,
    ``num_iter`` (default MAR steps), ``mask_rate_min`` (0.7), ``clip_x0`` (the head's x̂₀ bound while
    sampling; None in the paper, 5 at ``tiny``: see :class:`~ldetok_lite.generators.diffloss.DiffLoss`).

    ``generate(labels, cfg_scale, num_steps=num_iter, temperature, rng, return_trajectory,
    head_steps=None, cfg_schedule="linear"|"constant", force_guidance=False)``; ``force_guidance`` runs
    the doubled (conditional + unconditional) batch even at cfg_scale 1 (a check: it must equal cfg_scale 1).
    """

    family = "MAR"

    def __init__(self, in_channels=16, input_size=16, num_classes=1000, label_drop=0.1, *, hidden_size=768,
                 depth=12, num_heads=12, buffer_size=64, dropout=0.1, head_width=1024, head_depth=6,
                 head_steps=100, batch_mul=4, num_iter=64, mask_rate_min=0.7, clip_x0=None):
        super().__init__(in_channels, input_size, num_classes, label_drop)
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        if not isinstance(buffer_size, int) or buffer_size < 0:
            raise ValueError(f"buffer_size={buffer_size!r} is invalid; allowed: an int >= 0")
        if not 0 <= mask_rate_min < 1:
            raise ValueError(f"mask_rate_min={mask_rate_min!r} is out of range; allowed [0, 1)")
        self.seq_len = input_size * input_size
        self.hidden_size, self.depth, self.num_heads = hidden_size, depth, num_heads
        self.buffer_size = buffer_size
        self.mask_rate_min = float(mask_rate_min)
        self.max_num_steps = self.seq_len
        if not isinstance(num_iter, int) or not 1 <= num_iter <= self.seq_len:
            raise ValueError(f"num_iter={num_iter!r} is out of range; allowed [1, {self.seq_len}]")
        self.default_num_steps = num_iter
        W, n = hidden_size, buffer_size + self.seq_len

        # the class embedding; its null row (id num_classes) plays the paper's ``fake_latent``
        self.y_embedder = LabelEmbedder(num_classes, W, label_drop)
        self.z_proj = nn.Linear(in_channels, W)
        self.z_proj_ln = nn.LayerNorm(W, eps=1e-6)
        self.encoder_pos_embed = nn.Parameter(torch.zeros(1, n, W))

        def blocks():
            return nn.ModuleList(
                Block(W, num_heads, mlp_ratio=4.0, qkv_bias=True, proj_drop=dropout, attn_drop=dropout,
                      norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), mlp_layer=MlpWithoutDropout)
                for _ in range(depth))

        self.encoder_blocks = blocks()
        self.encoder_norm = nn.LayerNorm(W, eps=1e-6)
        self.decoder_embed = nn.Linear(W, W)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, W))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n, W))
        self.decoder_blocks = blocks()
        self.decoder_norm = nn.LayerNorm(W, eps=1e-6)
        self.diffusion_pos_embed = nn.Parameter(torch.zeros(1, self.seq_len, W))
        self.initialize_weights()
        self.diffloss = DiffLoss(in_channels, W, width=head_width, depth=head_depth,
                                 num_sampling_steps=head_steps, batch_mul=batch_mul, clip_x0=clip_x0)

    def initialize_weights(self):
        """xavier-uniform Linear (zero bias), N(0, 0.02) embeddings and tokens, LayerNorm (1, 0)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.y_embedder.embedding_table.weight, self.encoder_pos_embed, self.mask_token,
                  self.decoder_pos_embed, self.diffusion_pos_embed):
            nn.init.normal_(p, std=0.02)

    # -- the backbone ---------------------------------------------------------------------------

    def _keep(self, mask: torch.Tensor) -> torch.Tensor:
        buf = torch.ones(mask.shape[0], self.buffer_size, dtype=torch.bool, device=mask.device)
        return torch.cat([buf, ~mask], dim=1)

    def forward_encoder(self, tokens: torch.Tensor, mask: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, C), mask (B, L) bool (True = masked, same count per row), class_emb (B, W)
        → encoded buffer + visible tokens (B, buffer + #visible, W)."""
        b = tokens.shape[0]
        h = self.z_proj(tokens)
        buf = class_emb.unsqueeze(1).expand(b, self.buffer_size, self.hidden_size)
        h = self.z_proj_ln(torch.cat([buf.to(h.dtype), h], dim=1) + self.encoder_pos_embed)
        h = h[self._keep(mask)].reshape(b, -1, self.hidden_size)
        for blk in self.encoder_blocks:
            h = blk(h)
        return self.encoder_norm(h)

    def forward_decoder(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoded tokens → one condition per grid token (B, L, W) for the diffusion head."""
        b = h.shape[0]
        h = self.decoder_embed(h)
        full = self.mask_token.to(h.dtype).expand(b, self.buffer_size + self.seq_len, self.hidden_size).clone()
        full[self._keep(mask)] = h.reshape(-1, self.hidden_size)
        x = full + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        return x[:, self.buffer_size:] + self.diffusion_pos_embed

    def conditions(self, tokens, mask, class_emb):
        """z (B, L, W) for every token given the visible ones."""
        return self.forward_decoder(self.forward_encoder(tokens, mask, class_emb), mask)

    # -- training -------------------------------------------------------------------------------

    def training_mask(self, batch: int, device, rng: torch.Generator | None = None):
        """(orders (B, L), mask (B, L) bool, rate): random orders and one truncated-normal rate."""
        orders = random_orders(batch, self.seq_len, device, rng)
        rate = sample_mask_rate(rng, low=self.mask_rate_min)
        return orders, mask_by_order(num_masked_for_rate(rate, self.seq_len), orders), rate

    def loss(self, latents, labels, rng: torch.Generator | None = None, return_terms: bool = False):
        tokens = patchify(latents)
        b = tokens.shape[0]
        _, mask, _ = self.training_mask(b, tokens.device, rng)
        if self.training:
            labels = self.y_embedder.drop(labels, rng)
        class_emb = self.y_embedder.embedding_table(labels)
        z = self.conditions(tokens, mask, class_emb)
        return self.diffloss(tokens.reshape(-1, self.in_channels), z.reshape(-1, self.hidden_size),
                             mask=mask.reshape(-1), rng=rng, return_terms=return_terms)

    # -- sampling -------------------------------------------------------------------------------

    def sample(self, labels, cfg_scale, num_steps, temperature, rng, return_trajectory, head_steps=None,
               cfg_schedule="linear", force_guidance=False):
        if cfg_schedule not in ("linear", "constant"):
            raise ValueError(f"cfg_schedule={cfg_schedule!r} is not known; allowed: linear, constant")
        if head_steps is not None:
            self.diffloss.check_steps(head_steps)
        b, L, dev = labels.shape[0], self.seq_len, labels.device
        guided = cfg_scale != 1.0 or bool(force_guidance)  # force: run the doubled batch even at cfg 1
        orders = random_orders(b, L, dev, rng)
        mask = torch.ones(b, L, dtype=torch.bool, device=dev)
        tokens = torch.zeros(b, L, self.in_channels, device=dev)
        class_emb = self.y_embedder.embedding_table(labels)
        if guided:
            null = torch.full_like(labels, self.null_class)
            class_emb = torch.cat([class_emb, self.y_embedder.embedding_table(null)])
        traj = [unpatchify(tokens, self.input_size)] if return_trajectory else None
        for step in range(num_steps):
            x_in, m_in = (torch.cat([tokens, tokens]), torch.cat([mask, mask])) if guided else (tokens, mask)
            z = self.conditions(x_in, m_in, class_emb)
            n_masked = int(mask[0].sum())
            mask_len = max(1, min(n_masked - 1, cosine_mask_len(step, num_steps, L)))
            if step == num_steps - 1:
                to_pred, mask_next = mask, torch.zeros_like(mask)
            else:
                mask_next = mask_by_order(mask_len, orders)
                to_pred = mask & ~mask_next
            s = linear_cfg(cfg_scale, (L - mask_len) / L) if cfg_schedule == "linear" else cfg_scale
            z_c = z[:b][to_pred]
            z_u = z[b:][to_pred] if guided else None
            new = self.diffloss.sample(z_c, temperature=temperature, cfg_scale=s, z_uncond=z_u, num_steps=head_steps,
                                       rng=rng)
            tokens = tokens.clone()
            tokens[to_pred] = new.to(tokens.dtype)
            mask = mask_next
            if traj is not None:
                traj.append(unpatchify(tokens, self.input_size))
        out = unpatchify(tokens, self.input_size)
        return (out, traj) if return_trajectory else out


# ---------------------------------------------------------------------------------------------
# Sizes and registry
# ---------------------------------------------------------------------------------------------

# MAR_SIZE_DICT of the paper code (width, depth per encoder/decoder, heads); head d6 w1024 (base)
# and d8 w1280 (large) are the README's final runs; huge takes the MAR paper's d12 w1536 head.
# ``tiny`` is ours for the CPU (8×8×8 latents; head batch ×1 instead of ×4: 54 ms per step at
# batch 64 on 2 cores against 73 ms at ×2, so that 3000 steps fit in 3 minutes).
MAR_SIZES = {
    "tiny": dict(hidden_size=64, depth=2, num_heads=4, buffer_size=4, dropout=0.0, head_width=48,
                 head_depth=2, head_steps=25, num_iter=16, clip_x0=5.0, batch_mul=1),
    "base": dict(hidden_size=768, depth=12, num_heads=12, buffer_size=64, dropout=0.1, head_width=1024,
                 head_depth=6, head_steps=100, num_iter=64),
    "large": dict(hidden_size=1024, depth=16, num_heads=16, buffer_size=64, dropout=0.1, head_width=1280,
                  head_depth=8, head_steps=100, num_iter=64),
    "huge": dict(hidden_size=1280, depth=20, num_heads=16, buffer_size=64, dropout=0.1, head_width=1536,
                 head_depth=12, head_steps=100, num_iter=64),
}
TINY_DEFAULTS = dict(in_channels=8, input_size=8, num_classes=10)
PAPER_DEFAULTS = dict(in_channels=16, input_size=16, num_classes=1000)


def _factory(cls, sizes: dict, size: str, **fixed):
    defaults = TINY_DEFAULTS if size == "tiny" else PAPER_DEFAULTS

    def make(**overrides):
        return cls(**{**defaults, **sizes[size], **fixed, **overrides})

    make.__doc__ = f"{cls.__name__} at size {size!r}: {sizes[size]} {fixed or ''}"
    return make


for _size in MAR_SIZES:
    register(f"MAR_{_size}")(_factory(MAR, MAR_SIZES, _size))
