"""Causal AR models with a per-token diffusion head: RasterAR and RandomAR (official ``models/ardiff.py``; notebook 09).

One class, :class:`ARDiff` (the paper's ``ARDiff``), in two orders: ``raster`` (row-major, the
same for every sample) and ``random`` (a fresh permutation per sample, every step and every image).

Sequence (L = h·w tokens, order o): inputs ``[BOS, x_o0, …, x_o(L−2)]``; position i predicts
``x_oi``. Every input gets
- the embedding of its token (BOS is a learned token, the same for every class: the class enters
  only through adaLN and the final layer, as in the official ``models/ardiff.py``),
- ``pos_embed`` of its **own** grid position (index 0 for BOS, 1 + o_(i−1) otherwise), and
- ``target_pos_embed`` of the position **to be predicted**, o_i (target-aware, as in RandAR),
then ``ln_pre``. Blocks are causal adaLN blocks conditioned per token on class embedding + a learned
per-step embedding. A LayerNorm modulated by the class embedding (zero-initialised, so it starts
as the plain LayerNorm) gives the DiffLoss condition z_i.

Sampling takes L sequential steps with a **KV cache** (one new token per step through the
backbone); ``use_kv_cache=False`` recomputes the whole prefix every step (what the paper's code
does) and must give the same result for the same seed. Guidance uses the linear schedule
cfg_i = 1 + (cfg − 1)·i/L, so the first token is sampled unguided.

``generate(num_steps=…)`` sets the **diffusion-head** steps (an AR model always takes one step per
token; there is nothing else to trade for speed).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import Generator, register
from .blocks import AdaLNBlock, LabelEmbedder, modulate
from .diffloss import DiffLoss
from .mar import (
    PAPER_DEFAULTS,
    TINY_DEFAULTS,
    _factory,
    from_order,
    linear_cfg,
    patchify,
    random_orders,
    raster_orders,
    to_order,
    unpatchify,
)

ORDERS = ("raster", "random")


def distinct_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, W) distinct rows of ``x`` (B, W), taken from ``x`` itself so gradients flow, and the
    (B,) index with ``distinct[index] == x``."""
    uniq, inv = torch.unique(x.detach(), dim=0, return_inverse=True)
    first = torch.full((uniq.shape[0],), x.shape[0], device=x.device, dtype=inv.dtype)
    first = first.scatter_reduce(0, inv, torch.arange(x.shape[0], device=x.device, dtype=inv.dtype), "amin")
    return x[first], inv


class ARDiff(Generator):
    """Decoder-only causal transformer + DiffLoss (official ``models/ardiff.py``).

    Args beyond :class:`Generator`'s: ``order`` (raster | random), ``hidden_size``, ``depth``,
    ``num_heads``, ``mlp_ratio``, ``head_width``, ``head_depth``, ``head_steps`` (default head
    DDPM steps = ``generate``'s default ``num_steps``), ``batch_mul``, ``clip_x0`` (the head's x̂₀
    bound while sampling; None in the paper, 5 at ``tiny``; see ``DiffLoss``).

    ``generate(labels, cfg_scale, num_steps=head steps, temperature, rng, return_trajectory,
    use_kv_cache=True, cfg_schedule="linear"|"constant", force_guidance=False)``; ``force_guidance`` runs
    the doubled batch even at cfg_scale 1 (a check: it must equal cfg_scale 1).
    """

    family = "ARDiff"

    def __init__(self, in_channels=16, input_size=16, num_classes=1000, label_drop=0.1, *, order="raster",
                 hidden_size=768, depth=12, num_heads=12, mlp_ratio=4.0, head_width=1024, head_depth=3,
                 head_steps=100, batch_mul=4, clip_x0=None):
        super().__init__(in_channels, input_size, num_classes, label_drop)
        if order not in ORDERS:
            raise ValueError(f"order={order!r} is not known; allowed: {', '.join(ORDERS)}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        self.order = order
        self.family = "RasterAR" if order == "raster" else "RandomAR"
        self.seq_len = L = input_size * input_size
        self.hidden_size, self.depth, self.num_heads = hidden_size, depth, num_heads
        W = hidden_size
        self.y_embedder = LabelEmbedder(num_classes, W, label_drop)  # null row = ``fake_latent``
        self.x_embedder = nn.Linear(in_channels, W)
        self.bos_token = nn.Parameter(torch.zeros(1, 1, W))  # the first input of every sequence
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, W))  # 0: BOS, 1 + j: grid position j
        self.target_pos_embed = nn.Parameter(torch.zeros(1, L, W))
        self.timesteps_embeddings = nn.Parameter(torch.zeros(1, L + 1, W))  # per AR step
        self.ln_pre = nn.LayerNorm(W, eps=1e-6)
        self.blocks = nn.ModuleList(AdaLNBlock(W, num_heads, mlp_ratio, norm="layernorm") for _ in range(depth))
        for blk in self.blocks:  # ARDiff's blocks use LayerNorm with affine parameters
            blk.norm1 = nn.LayerNorm(W, eps=1e-6)
            blk.norm2 = nn.LayerNorm(W, eps=1e-6)
        self.final_norm = nn.LayerNorm(W, eps=1e-6, elementwise_affine=False)
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(W, 2 * W))
        self.initialize_weights()
        self.diffloss = DiffLoss(in_channels, W, width=head_width, depth=head_depth,
                                 num_sampling_steps=head_steps, batch_mul=batch_mul, clip_x0=clip_x0)
        self.default_num_steps = head_steps
        self.max_num_steps = self.diffloss.diffusion.num_timesteps

    def initialize_weights(self):
        """As ``ARDiff.initialize_weights``: xavier-uniform Linear, N(0, 0.02) embeddings and BOS, zero
        adaLN in every block and in the final layer (blocks start as the identity, z as a LayerNorm)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.y_embedder.embedding_table.weight, self.bos_token, self.pos_embed, self.target_pos_embed,
                  self.timesteps_embeddings):
            nn.init.normal_(p, std=0.02)
        for lin in [blk.adaLN_modulation[-1] for blk in self.blocks] + [self.final_adaLN[-1]]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # -- orders ---------------------------------------------------------------------------------

    def orders(self, batch: int, device=None, rng: torch.Generator | None = None) -> torch.Tensor:
        """(B, L) generation orders: raster, or one fresh random permutation per sample."""
        if self.order == "raster":
            return raster_orders(batch, self.seq_len, device)
        return random_orders(batch, self.seq_len, device, rng)

    # -- the backbone ---------------------------------------------------------------------------

    def embed(self, inputs: torch.Tensor, orders: torch.Tensor, start: int) -> torch.Tensor:
        """Add own and target positions to input embeddings (B, T, W) at steps start..start+T−1."""
        T = inputs.shape[1]
        steps = torch.arange(start, start + T, device=inputs.device)
        prev = orders[:, (steps - 1).clamp(min=0)] + 1  # own grid position of input i is o_(i−1)
        own = torch.where(steps == 0, torch.zeros_like(prev), prev)
        pos = self.pos_embed[0][own]
        target = self.target_pos_embed[0][orders[:, steps]]
        return self.ln_pre(inputs + pos + target)

    def run(self, h: torch.Tensor, class_emb: torch.Tensor, start: int, caches: list | None = None,
            classes: tuple | None = None) -> torch.Tensor:
        """Causal blocks over steps start..start+T−1 (with optional per-block KV caches) → z (B, T, W).

        The per-token adaLN condition (class embedding + step embedding) repeats for every sample of
        a class, so each block computes its modulation once per distinct class and gathers it
        (``c_index``): the same result, and at ``tiny`` (10 classes, batch 64) far fewer rows.
        ``classes``: ``distinct_rows(class_emb)`` when the caller has it (sampling: once, not per step)."""
        T = h.shape[1]
        distinct, inv = distinct_rows(class_emb) if classes is None else classes
        c = distinct.unsqueeze(1) + self.timesteps_embeddings[:, start:start + T]
        for i, blk in enumerate(self.blocks):
            h = blk(h, c, causal=True, kv_cache=None if caches is None else caches[i], c_index=inv)
        shift, scale = self.final_adaLN(class_emb).chunk(2, dim=-1)
        return modulate(self.final_norm(h), shift, scale)

    def inputs(self, tokens_ord: torch.Tensor) -> torch.Tensor:
        """[BOS, embed(x_o0), …] for the first 1 + tokens_ord.shape[1] steps."""
        bos = self.bos_token.to(tokens_ord.dtype).expand(tokens_ord.shape[0], 1, -1)
        return torch.cat([bos, self.x_embedder(tokens_ord)], dim=1)

    def conditions(self, tokens: torch.Tensor, orders: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: z (B, L, W) for every step given grid tokens (B, L, C) and orders."""
        tokens_ord = to_order(tokens, orders)
        h = self.embed(self.inputs(tokens_ord[:, :-1]), orders, 0)
        return self.run(h, class_emb, 0)

    # -- training -------------------------------------------------------------------------------

    def loss(self, latents, labels, rng: torch.Generator | None = None, return_terms: bool = False):
        tokens = patchify(latents)
        orders = self.orders(tokens.shape[0], tokens.device, rng)
        if self.training:
            labels = self.y_embedder.drop(labels, rng)
        z = self.conditions(tokens, orders, self.y_embedder.embedding_table(labels))
        target = to_order(tokens, orders)
        return self.diffloss(target.reshape(-1, self.in_channels), z.reshape(-1, self.hidden_size),
                             rng=rng, return_terms=return_terms)

    # -- sampling -------------------------------------------------------------------------------

    def sample(self, labels, cfg_scale, num_steps, temperature, rng, return_trajectory, use_kv_cache=True,
               cfg_schedule="linear", force_guidance=False):
        if cfg_schedule not in ("linear", "constant"):
            raise ValueError(f"cfg_schedule={cfg_schedule!r} is not known; allowed: linear, constant")
        if not isinstance(use_kv_cache, bool):
            raise TypeError(f"use_kv_cache must be a bool, got {type(use_kv_cache).__name__}")
        b, L, dev = labels.shape[0], self.seq_len, labels.device
        guided = cfg_scale != 1.0 or bool(force_guidance)  # force: run the doubled batch even at cfg 1
        orders = self.orders(b, dev, rng)
        class_emb = self.y_embedder.embedding_table(labels)
        if guided:  # second half: the unconditional branch; both halves share the tokens
            null = torch.full_like(labels, self.null_class)
            class_emb = torch.cat([class_emb, self.y_embedder.embedding_table(null)])
            orders_in = torch.cat([orders, orders])
        else:
            orders_in = orders
        classes = distinct_rows(class_emb)  # one host sync per call, not one per step
        tokens_ord = torch.zeros(b, L, self.in_channels, device=dev)
        caches = [{} for _ in self.blocks] if use_kv_cache else None
        traj = [unpatchify(from_order(tokens_ord, orders), self.input_size)] if return_trajectory else None
        for i in range(L):
            if use_kv_cache:  # only the newest input goes through the backbone
                prev = tokens_ord[:, i - 1:i]
                prev = torch.cat([prev, prev]) if guided else prev
                x = self.bos_token.expand(prev.shape[0], 1, -1) if i == 0 else self.x_embedder(prev)
                z = self.run(self.embed(x, orders_in, i), class_emb, i, caches, classes)[:, 0]
            else:  # recompute the whole prefix
                known = tokens_ord[:, :i]
                h = self.embed(self.inputs(torch.cat([known, known]) if guided else known), orders_in, 0)
                z = self.run(h, class_emb, 0, classes=classes)[:, -1]
            s = linear_cfg(cfg_scale, i / L) if cfg_schedule == "linear" else cfg_scale
            tok = self.diffloss.sample(z[:b], temperature=temperature, cfg_scale=s, z_uncond=z[b:] if guided else None,
                                       num_steps=num_steps, rng=rng)
            tokens_ord = tokens_ord.clone()
            tokens_ord[:, i] = tok.to(tokens_ord.dtype)
            if traj is not None:
                traj.append(unpatchify(from_order(tokens_ord, orders), self.input_size))
        out = unpatchify(from_order(tokens_ord, orders), self.input_size)
        return (out, traj) if return_trajectory else out


# SIZE_DICT of the paper code (ARDiff_base 150.13M, ARDiff_large 477.65M with the d3 w1024 head);
# ``tiny`` is ours for the CPU (8×8×8 latents): depth 2 and head batch ×1 instead of ×4 keep a
# 3000-step run under 3 minutes on 2 cores (55 ms/step at batch 64, against 82 ms at depth 3, ×2).
AR_SIZES = {
    "tiny": dict(hidden_size=64, depth=2, num_heads=4, head_width=48, head_depth=2, head_steps=25, clip_x0=5.0,
                 batch_mul=1),
    "base": dict(hidden_size=768, depth=12, num_heads=12, head_width=1024, head_depth=3, head_steps=100),
    "large": dict(hidden_size=1024, depth=24, num_heads=16, head_width=1024, head_depth=3, head_steps=100),
    "xl": dict(hidden_size=1152, depth=28, num_heads=16, head_width=1024, head_depth=3, head_steps=100),
    "huge": dict(hidden_size=1280, depth=32, num_heads=16, head_width=1024, head_depth=3, head_steps=100),
}

for _size in AR_SIZES:
    register(f"RasterAR_{_size}")(_factory(ARDiff, AR_SIZES, _size, order="raster"))
    register(f"RandomAR_{_size}")(_factory(ARDiff, AR_SIZES, _size, order="random"))

__all__ = ["ARDiff", "AR_SIZES", "ORDERS", "PAPER_DEFAULTS", "TINY_DEFAULTS"]
