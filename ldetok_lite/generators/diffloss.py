"""DiffLoss: the per-token diffusion head of MAR and the AR models (official ``models/diffloss.py``; notebook 08).

The backbone (MAR or AR) turns every token position into a condition vector ``z`` (N, W). A small
MLP then models p(x | z) for the continuous token x (N, C) as a Gaussian diffusion:

- :class:`SimpleMLPAdaLN`: ``input_proj`` Linear(C→w); y = TimestepEmbedder(t) + Linear(z);
  ``depth`` residual blocks  x ← x + g·MLP(modulate(LN(x), β, γ))  with (β, γ, g) = Linear(SiLU(y));
  a ``ModulatedLinear`` (:class:`~ldetok_lite.generators.blocks.FinalLayer`) to 2C outputs
  (ε and the variance interpolation v). adaLN and the final layer start at zero.
- :class:`DiffLoss`: 1000-step **cosine** schedule, ε-prediction with learned-range variance, loss
  MSE + VB per row (:class:`~ldetok_lite.generators.diffusion.GaussianDiffusion`), every (x, z)
  pair repeated ``batch_mul`` = 4 times with independent t and ε, optionally weighted per token
  (MAR: only masked tokens count). Sampling: DDPM respaced to ``num_sampling_steps``, temperature
  on the per-step noise, classifier-free guidance on ε only (both branches see the same x_t, so
  they share the initial noise; the variance comes from the conditional branch).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .blocks import FinalLayer, TimestepEmbedder, init_adaln_zero, modulate
from .diffusion import GaussianDiffusion, randn_like_on


class ResBlock(nn.Module):
    """x ← x + gate·MLP(modulate(LN(x), shift, scale)); (shift, scale, gate) = Linear(SiLU(y))."""

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """The DiffLoss network (official ``models/diffloss.py``): (x_t (N, C), t (N,), z (N, W)) → (N, out_channels).

    ``out_channels`` is 2C with learned variance ([ε | v]). :meth:`forward_embedded` takes the
    already projected condition ``cond_embed(z)``, so a caller can embed each z once and reuse it
    (the batch multiplier in training, every step of sampling).
    """

    def __init__(self, in_channels: int, width: int, out_channels: int, cond_channels: int, depth: int):
        super().__init__()
        self.in_channels, self.width, self.out_channels, self.depth = in_channels, width, out_channels, depth
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_channels, width)
        self.input_proj = nn.Linear(in_channels, width)
        self.res_blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final_layer = FinalLayer(width, out_channels)
        init_adaln_zero(self)  # xavier Linear, N(0, .02) time MLP, zero final layer ...
        for blk in self.res_blocks:  # ... and zero adaLN in the residual blocks
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """TimestepEmbedder on the distinct values of t only (a large saving: N is ~10⁴-10⁵ rows
        in training but there are at most 1000 distinct t), gathered back to (N, w)."""
        uniq, inverse = torch.unique(t, return_inverse=True)
        return self.time_embed(uniq)[inverse]

    def forward_embedded(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        y = self.embed_time(t) + c
        h = self.input_proj(x)
        for blk in self.res_blocks:
            h = blk(h, y)
        return self.final_layer(h, y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(x, t, self.cond_embed(z))


def _check_rows(name: str, v, ndim: int = 2):
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(v.shape)}")


class DiffLoss(nn.Module):
    """Per-token diffusion loss and sampler (official ``models/diffloss.py``).

    Args:
        target_channels: token channels C.
        cond_channels: width W of the backbone's condition vectors z.
        width, depth: the MLP head (paper: w1024 d3 for 100-epoch runs, d6/d8 for the final ones).
        num_sampling_steps: default respaced DDPM steps at sampling (paper: 100).
        batch_mul: repeats of each (x, z) pair in training (paper: 4).
        num_timesteps, noise_schedule: the training diffusion (1000, cosine).
        clip_x0: default bound on the implied x̂₀ while sampling (None = off, as in the paper).

    Why ``clip_x0`` exists: with the cosine schedule (β capped at 0.999) ᾱ at the last step is
    ~2e-9, so the first sampling step amplifies the error of ε̂ by 1/√ᾱ ≈ 2·10⁴ in x̂₀ (~600× in
    the posterior mean). A head trained for hundreds of epochs predicts ε̂ precisely enough there;
    a head trained for minutes does not, and its samples blow up. Clamping x̂₀ to the range of
    the (normalized) data removes the blow-up and changes nothing for an accurate head. The CPU
    ``*_tiny`` sizes turn it on; the paper sizes keep it off.
    """

    def __init__(self, target_channels: int, cond_channels: int, width: int = 1024, depth: int = 3,
                 num_sampling_steps: int = 100, batch_mul: int = 4, num_timesteps: int = 1000,
                 noise_schedule: str = "cosine", clip_x0: float | None = None):
        super().__init__()
        for name, v in (("target_channels", target_channels), ("cond_channels", cond_channels),
                        ("width", width), ("depth", depth), ("batch_mul", batch_mul)):
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "depth" else 1):
                raise ValueError(f"{name}={v!r} is invalid; allowed: an int >= {0 if name == 'depth' else 1}")
        self.target_channels = target_channels
        self.batch_mul = batch_mul
        self.clip_x0 = _check_clip(clip_x0)
        self.diffusion = GaussianDiffusion(num_timesteps, noise_schedule, learn_sigma=True)
        self.num_sampling_steps = self.check_steps(num_sampling_steps)
        self.net = SimpleMLPAdaLN(target_channels, width, 2 * target_channels, cond_channels, depth)
        self._respaced: dict[int, GaussianDiffusion] = {}

    def check_steps(self, num_steps) -> int:
        T = self.diffusion.num_timesteps
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= T:
            raise ValueError(f"head num_steps={num_steps!r} is out of range; allowed [1, {T}]")
        return num_steps

    def sampling_diffusion(self, num_steps: int | None = None) -> GaussianDiffusion:
        """The training diffusion respaced to ``num_steps`` (cached)."""
        n = self.num_sampling_steps if num_steps is None else self.check_steps(num_steps)
        if n not in self._respaced:
            self._respaced[n] = self.diffusion.respace(n)
        return self._respaced[n]

    # -- training ---------------------------------------------------------------------------

    def forward(self, target: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None,
                rng: torch.Generator | None = None, return_terms: bool = False):
        """Mean (MSE + VB) over rows, each (target, z) row repeated ``batch_mul`` times.

        ``target`` (N, C), ``z`` (N, W); ``mask`` (N,) optional non-negative weights: the loss is
        Σ w·ℓ / Σ w (MAR passes 1 on masked tokens, 0 elsewhere). Rows with weight 0 are skipped
        entirely, so they cannot change the loss or receive gradients.
        ``return_terms`` also returns ``{"mse", "vb"}`` (weighted means, detached).
        """
        _check_rows("target", target)
        _check_rows("z", z)
        if target.shape[0] != z.shape[0] or target.shape[1] != self.target_channels:
            raise ValueError(f"target {tuple(target.shape)} and z {tuple(z.shape)} do not fit; expected "
                             f"(N, {self.target_channels}) and (N, W) with the same N")
        c = self.net.cond_embed(z)  # embed each z once, then repeat
        target, c = target.repeat(self.batch_mul, 1), c.repeat(self.batch_mul, 1)
        if mask is not None:
            _check_rows("mask", mask, ndim=1)
            if mask.shape[0] * self.batch_mul != target.shape[0]:
                raise ValueError(f"mask has {mask.shape[0]} rows but target has {target.shape[0] // self.batch_mul}")
            w = mask.to(target.dtype).repeat(self.batch_mul)
            keep = w != 0
            target, c, w = target[keep], c[keep], w[keep]
            if target.shape[0] == 0:
                raise ValueError("mask selects no rows; at least one token must carry loss")
        terms = self.diffusion.training_losses(lambda xt, t: self.net.forward_embedded(xt, t, c), target,
                                               rng=rng)
        if mask is None:
            loss = terms["loss"].mean()
            stats = {k: terms[k].detach().mean() for k in ("mse", "vb")}
        else:
            loss = (terms["loss"] * w).sum() / w.sum()
            stats = {k: (terms[k].detach() * w).sum() / w.sum() for k in ("mse", "vb")}
        return (loss, stats) if return_terms else loss

    # -- sampling ---------------------------------------------------------------------------

    def guided_fn(self, c_cond: torch.Tensor, c_uncond: torch.Tensor | None, cfg_scale, clip_x0: float | None = None):
        """model_fn(x_t, t) with guidance on ε: ε_u + s·(ε_c − ε_u); variance from the conditional
        branch. ``cfg_scale`` is a float or a per-row (N,) tensor. Without ``c_uncond`` no guidance.

        ``clip_x0``: clamp the implied x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t to [−clip_x0, clip_x0] and
        return the ε that implies the clamped x̂₀ (see :class:`DiffLoss`)."""
        C = self.target_channels

        def fn(x, t):
            if c_uncond is None:
                out = self.net.forward_embedded(x, t, c_cond)
            else:
                both = self.net.forward_embedded(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c_cond, c_uncond]))
                cond, uncond = both.chunk(2)
                s = cfg_scale.reshape(-1, 1).to(x.dtype) if isinstance(cfg_scale, torch.Tensor) else cfg_scale
                eps = uncond[:, :C] + s * (cond[:, :C] - uncond[:, :C])
                out = torch.cat([eps, cond[:, C:]], dim=1)
            if clip_x0 is not None:
                out = torch.cat([self._clip_eps(x, t, out[:, :C], clip_x0), out[:, C:]], dim=1)
            return out

        return fn

    def _clip_eps(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, bound: float) -> torch.Tensor:
        """ε whose implied x̂₀ is clamped to [−bound, bound]; ``t`` are original step indices."""
        ab = self.diffusion._extract("alphas_cumprod", t, x)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        return (x - ab.sqrt() * x0.clamp(-bound, bound)) / (1 - ab).sqrt()

    @torch.no_grad()
    def sample(self, z: torch.Tensor, temperature: float = 1.0, cfg_scale=1.0, z_uncond: torch.Tensor | None = None,
               num_steps: int | None = None, rng: torch.Generator | None = None,
               noise: torch.Tensor | None = None, clip_x0: float | None | str = "default") -> torch.Tensor:
        """Draw one token per condition row: (N, W) → (N, C).

        With ``z_uncond`` (N, W) the ε of the two branches is combined with scale ``cfg_scale`` (float
        or (N,) tensor) at every step; both branches are evaluated at the same x_t, which is what
        the paper's code does by sharing the initial noise between the halves. ``cfg_scale`` = 1 gives
        the conditional model. ``temperature`` scales the per-step noise (not x_T).
        ``clip_x0``: bound for the implied x̂₀ (``"default"`` = the head's ``clip_x0``; None = off).
        """
        _check_rows("z", z)
        if z_uncond is not None and z_uncond.shape != z.shape:
            raise ValueError(f"z_uncond shape {tuple(z_uncond.shape)} must equal z shape {tuple(z.shape)}")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature={temperature!r} is out of range; allowed (0, inf)")
        if isinstance(cfg_scale, torch.Tensor):
            if cfg_scale.shape != (z.shape[0],):
                raise ValueError(f"cfg_scale tensor must have shape ({z.shape[0]},), got {tuple(cfg_scale.shape)}")
        elif (not isinstance(cfg_scale, (int, float)) or isinstance(cfg_scale, bool)
              or not math.isfinite(cfg_scale) or cfg_scale < 1):
            raise ValueError(f"cfg_scale={cfg_scale!r} is out of range; allowed [1, inf)")
        clip_x0 = self.clip_x0 if isinstance(clip_x0, str) and clip_x0 == "default" else _check_clip(clip_x0)
        diffusion = self.sampling_diffusion(num_steps)
        c = self.net.cond_embed(z)
        cu = None if z_uncond is None else self.net.cond_embed(z_uncond)
        if noise is None:
            noise = randn_like_on((z.shape[0], self.target_channels), z, rng)
        return diffusion.p_sample_loop(self.guided_fn(c, cu, cfg_scale, clip_x0), noise.shape, noise=noise,
                                       temperature=float(temperature), rng=rng)


def _check_clip(v):
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"clip_x0={v!r} is invalid; allowed: None (off) or a number > 0")
    return float(v)
