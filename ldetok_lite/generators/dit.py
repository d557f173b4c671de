"""DiT: a transformer with adaLN-Zero blocks trained as a Gaussian diffusion (official ``models/dit.py``;
notebook 05).

:class:`AdaLNTransformer` is the backbone shared by DiT, SiT and LightningDiT: patch-embed the
latent grid (Conv2d, patch 1 in the paper), add a 2-D position embedding, condition every block on
c = t_emb + y_emb through adaLN-Zero, project back with a ``ModulatedLinear`` and un-patchify.
Subclasses choose the objective (diffusion or flow), the sampler and how guidance combines.

:class:`DiT`: ADM diffusion with 1000 steps, **linear** β (the paper's builder never passes the
cosine schedule), ε-prediction with learned-range variance (2C outputs), loss MSE + VB, respaced
ancestral sampling. Classifier-free guidance runs a doubled batch with the null class and guides
**all C ε channels**; the variance half comes from the conditional branch. Guidance is applied
only when cfg_scale > 1.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import Generator, register
from .blocks import (
    AdaLNBlock,
    FinalLayer,
    LabelEmbedder,
    RotaryEmbedding2D,
    TimestepEmbedder,
    init_adaln_zero,
    sincos_pos_embed_2d,
)
from .diffusion import GaussianDiffusion

# The paper code's SIZE_DICT (official ``models/model_utils.py``): width, depth, heads. ``tiny`` is ours for the CPU:
# the 8×8×8 latents of detok_tiny in 2×2 patches (16 tokens), so width 128 costs what width 64 on
# 64 tokens does (~0.07 s per step at batch 64 on 2 threads; the tiny preset's 2000 steps take about
# 2.5 minutes). At equal compute it gave clearer shapes than width 64 at patch 1.
SIZES = {
    "tiny": dict(hidden_size=128, depth=4, num_heads=4, patch_size=2),
    "small": dict(hidden_size=512, depth=8, num_heads=8),
    "base": dict(hidden_size=768, depth=12, num_heads=12),
    "large": dict(hidden_size=1024, depth=24, num_heads=16),
    "xl": dict(hidden_size=1152, depth=28, num_heads=16),
    "huge": dict(hidden_size=1280, depth=32, num_heads=16),
}
# Defaults of the CPU sizes: the detok_tiny latent grid and the embedded 10-class data.
TINY_DEFAULTS = dict(in_channels=8, input_size=8, num_classes=10)
# Flow models at the tiny size see t·1000 in the timestep embedder (the range DiT's integer steps
# cover). With t in [0, 1] only the few fastest sinusoids vary, and a model this small learns its
# time conditioning slowly (lower loss at equal steps in our CPU runs); paper sizes keep t as is.
FLOW_TINY_DEFAULTS = dict(TINY_DEFAULTS, time_scale=1000.0)
PAPER_DEFAULTS = dict(in_channels=16, input_size=16, num_classes=1000)


class AdaLNTransformer(Generator):
    """Latent-grid transformer conditioned on (t, y) (official ``models/dit.py``, ``models/sit.py``,
    ``models/lightningdit.py``).

    Args beyond :class:`Generator`'s: ``hidden_size``, ``depth``, ``num_heads``, ``mlp_ratio``,
    ``patch_size`` (1 in the paper), ``out_channels`` (default C), ``norm`` (layernorm|rmsnorm),
    ``mlp`` (gelu|swiglu), ``qk_norm``, ``rope`` (EVA 2-D RoPE), ``learned_pos`` (trainable
    position embedding initialised with sin-cos; otherwise a fixed sin-cos buffer), ``time_scale``
    (the timestep embedder sees ``t·time_scale``; 1 everywhere in the paper's code).
    """

    def __init__(self, in_channels=16, input_size=16, num_classes=1000, label_drop=0.1, *, hidden_size=768,
                 depth=12, num_heads=12, mlp_ratio=4.0, patch_size=1, out_channels=None, norm="layernorm",
                 mlp="gelu", qk_norm=False, rope=False, learned_pos=False, time_scale=1.0):
        super().__init__(in_channels, input_size, num_classes, label_drop)
        if not isinstance(patch_size, int) or patch_size < 1 or input_size % patch_size:
            raise ValueError(f"patch_size={patch_size!r} is invalid; allowed: an int >= 1 dividing "
                             f"input_size={input_size}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        self.hidden_size, self.depth, self.num_heads = hidden_size, depth, num_heads
        self.patch_size = patch_size
        if not isinstance(time_scale, (int, float)) or isinstance(time_scale, bool) or not time_scale > 0:
            raise ValueError(f"time_scale={time_scale!r} is out of range; allowed (0, inf)")
        self.time_scale = float(time_scale)
        self.out_channels = out_channels or in_channels
        self.grid = input_size // patch_size
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, label_drop)
        pos = sincos_pos_embed_2d(hidden_size, self.grid).unsqueeze(0)
        if learned_pos:
            self.pos_embed = nn.Parameter(pos.clone())
        else:
            self.register_buffer("pos_embed", pos, persistent=False)
        self.rope = RotaryEmbedding2D(hidden_size // num_heads, self.grid) if rope else None
        self.blocks = nn.ModuleList(
            AdaLNBlock(hidden_size, num_heads, mlp_ratio, norm=norm, mlp=mlp, qk_norm=qk_norm) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size * patch_size * self.out_channels, norm=norm)
        init_adaln_zero(self)
        w = self.x_embedder.weight  # like a Linear on the flattened patch (DiT)
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p²·C_out) → (B, C_out, h, w)."""
        b, p, g, c = x.shape[0], self.patch_size, self.grid, self.out_channels
        x = x.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, g * p, g * p)

    def net(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The network: (B, C, h, w), t (B,), labels (B,) → (B, C_out, h, w).

        Label dropout happens inside ``y_embedder`` in training mode.
        """
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)
        c = self.t_embedder(t * self.time_scale if self.time_scale != 1.0 else t) + self.y_embedder(y)
        for block in self.blocks:
            h = block(h, c, rope=self.rope)
        return self.unpatchify(self.final_layer(h, c))

    # -- classifier-free guidance -------------------------------------------------------------

    def combine_guidance(self, cond: torch.Tensor, uncond: torch.Tensor, cfg_scale: float, t: torch.Tensor):
        """u + s·(c − u) on every output channel (SiT/LightningDiT override details)."""
        return uncond + cfg_scale * (cond - uncond)

    def guided_net(self, x, t, y, cfg_scale: float = 1.0, force_double: bool = False, **guidance) -> torch.Tensor:
        """The network with classifier-free guidance: a doubled batch (labels, null class) when
        ``cfg_scale > 1`` (or ``force_double``), combined by :meth:`combine_guidance` (which gets
        ``guidance``, e.g. SiT's ``interval_start``)."""
        if cfg_scale == 1.0 and not force_double:
            return self.net(x, t, y)
        null = torch.full_like(y, self.null_class)
        out = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        return self.combine_guidance(cond, uncond, cfg_scale, t, **guidance)


class DiT(AdaLNTransformer):
    """DiT with ADM Gaussian diffusion (official ``models/dit.py``, ``diffusion/``).

    Extra args: ``num_timesteps`` (1000), ``noise_schedule`` (``linear`` as in the paper's builder,
    or ``cosine``), ``learn_sigma`` (True: 2C outputs, loss MSE + VB).
    ``generate(num_steps=…)`` respaces to that many ancestral steps (default 100, the official
    ``--num_sampling_steps``; max 1000).
    """

    family = "DiT"
    default_num_steps = 100

    def __init__(self, in_channels=16, input_size=16, num_classes=1000, label_drop=0.1, *, num_timesteps=1000,
                 noise_schedule="linear", learn_sigma=True, **kw):
        kw.setdefault("out_channels", in_channels * (2 if learn_sigma else 1))
        super().__init__(in_channels, input_size, num_classes, label_drop, **kw)
        self.diffusion = GaussianDiffusion(num_timesteps, noise_schedule, learn_sigma=learn_sigma)
        self.max_num_steps = num_timesteps

    def combine_guidance(self, cond, uncond, cfg_scale, t):
        """Guide the ε half on all C channels; keep the conditional branch's variance half."""
        c = self.in_channels
        eps = uncond[:, :c] + cfg_scale * (cond[:, :c] - uncond[:, :c])
        return torch.cat([eps, cond[:, c:]], dim=1)

    def loss(self, latents, labels):
        terms = self.diffusion.training_losses(lambda xt, t: self.net(xt, t, labels), latents)
        return terms["loss"].mean()

    def sample(self, labels, cfg_scale, num_steps, temperature, rng, return_trajectory):
        diffusion = self.diffusion.respace(num_steps)
        noise = self.initial_noise(labels.shape[0], rng)
        return diffusion.p_sample_loop(lambda x, t: self.guided_net(x, t, labels, cfg_scale), noise.shape, noise=noise,
                                       temperature=temperature, rng=rng,
                                       return_trajectory=return_trajectory)


def _factory(cls, size: str, defaults: dict, **fixed):
    def make(**overrides):
        kw = {**defaults, **SIZES[size], **fixed, **overrides}
        return cls(**kw)

    make.__doc__ = f"{cls.__name__} at size {size!r}: {SIZES[size]}"
    return make


for _size in ("tiny", "base", "large", "xl", "huge"):
    register(f"DiT_{_size}")(_factory(DiT, _size, TINY_DEFAULTS if _size == "tiny" else PAPER_DEFAULTS))
