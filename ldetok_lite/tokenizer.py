"""The l-DeTok tokenizer: a ViT encoder and a ViT decoder with latent denoising (official ``models/detok.py``).

The encoder patchifies the image (conv patch embedding + learned absolute positions), drops a
random fraction of the tokens (MAE masking, training only), runs pre-norm blocks with the
official 2-D RoPE, and predicts a diagonal Gaussian over ``token_channels`` per patch. The
decoder embeds the (noised) latents, fills dropped positions with a learned [MASK] token, runs
its own blocks and maps each token to a ``patch × patch × 3`` pixel patch (1×1 conv) followed by
a 3×3 conv. Parameter names and shapes are the official ones (official checkpoint keys), so
:func:`load_official_checkpoint` loads the released ``.pth`` files with strict keys.

Images in the public API are in [0, 1]; the model maps them to [-1, 1] internally. Notebook
``02_tokenizer`` builds it step by step.

Official weights: the l-DeTok release files (``detok-BB-*.pth``, a dict with ``model`` and
``model_ema``) are linked from the official repository's README (GitHub ``Jiawei-Yang/DeTok``,
Hugging Face). Download them yourself; nothing here downloads.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from . import _compat
from .config import check_num_params, suggest
from .corruption import (
    _check_gamma,
    _tau_for,
    additive_noise,
    interpolative_noise,
    random_mask_indices,
    sample_mask_ratio,
    sample_tau,
)
from .layers import Block, RMSNorm, rope_table, swiglu_hidden

__all__ = ["DeTok", "Encoder", "Decoder", "DiagonalGaussian", "TOKENIZERS", "SIZES", "create_tokenizer"]

# ============================================================================================
# sizes (official ``models/model_utils.py``, ``SIZE_DICT``) and named tokenizers
# ============================================================================================

#: (width, layers, heads) of each official size; ``head_dim = width / heads``.
SIZES: dict[str, tuple[int, int, int]] = {
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "xl": (1152, 28, 16),
    "huge": (1280, 32, 16),
    # CPU sizes (ours): head_dim 32, so the RoPE keeps 8 frequencies per axis.
    "tiny": (128, 3, 4),
    "mini": (192, 4, 6),
}

_LETTERS = {"S": "small", "B": "base", "L": "large", "XL": "xl"}

#: name -> architecture and default image settings. First letter(s) = encoder, then decoder.
TOKENIZERS: dict[str, dict] = {
    f"detok_{e}{d}": dict(encoder=_LETTERS[e], decoder=_LETTERS[d], img_size=256, patch_size=16,
                          token_channels=16)
    for e, d in [("S", "S"), ("S", "B"), ("S", "L"), ("B", "S"), ("B", "B"), ("B", "L"),
                 ("L", "S"), ("L", "B"), ("L", "L"), ("XL", "XL")]
}
# CPU sizes: 32 px / patch 4 (8×8 tokens) and 64 px / patch 8 (8×8 tokens).
TOKENIZERS["detok_tiny"] = dict(encoder="tiny", decoder="tiny", img_size=32, patch_size=4, token_channels=8)
TOKENIZERS["detok_small_cpu"] = dict(encoder="mini", decoder="mini", img_size=64, patch_size=8, token_channels=16)

#: overrides ``create_tokenizer`` accepts (everything else is fixed by the name).
OVERRIDES = ("img_size", "patch_size", "token_channels", "gamma", "mask_ratio", "use_additive_noise")

#: overrides that change the number of parameters: given explicitly, the model is sized on the meta device first
SIZE_OVERRIDES = ("img_size", "patch_size", "token_channels")

#: allowed image values: [0, 1] with room for resampling overshoot; 0..255 and [-1, 1] images fall outside
IMAGE_RANGE_SLACK = (-0.5, 1.5)

#: training defaults of the README recipe (official README recipe; ``main_reconstruction.py``): γ = 3, M = 0.7.
DEFAULT_GAMMA = 3.0
DEFAULT_MASK_RATIO = 0.7


# ============================================================================================
# the latent distribution (official ``DiagonalGaussianDistribution`` and ``Encoder.mae_random_masking``)
# ============================================================================================


class DiagonalGaussian:
    """``N(mean, exp(logvar))`` per token and channel, from moments ``(B, L, 2C)``; ``logvar`` is
    clamped to [-30, 20] as in the official code. ``kl()`` is summed over tokens and channels, one
    value per sample (covering the visible tokens only when masking)."""

    def __init__(self, moments: torch.Tensor):
        self.moments = moments
        self.mean, logvar = moments.chunk(2, dim=-1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, rng: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std·ε`` (reparameterised; ε drawn from ``rng`` when given), in float32 (or wider)
        whatever the moments' dtype: under bf16 autocast the official ``DiagonalGaussianDistribution.sample``
        runs with autocast off and a float32 ε."""
        dtype = torch.promote_types(self.mean.dtype, torch.float32)
        if rng is None:
            eps = torch.randn(self.mean.shape, device=self.mean.device, dtype=dtype)
        else:
            eps = torch.randn(self.mean.shape, generator=rng, device=rng.device, dtype=dtype).to(self.mean.device)
        return self.mean.to(dtype) + self.std.to(dtype) * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL to N(0, I): ``0.5·Σ(μ² + σ² - 1 - logvar)``, shape ``(B,)``, in float32."""
        mean, logvar = self.mean.float(), self.logvar.float()
        per = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
        return per.flatten(1).sum(dim=1)


# ============================================================================================
# encoder and decoder (official ``models/detok.py``, ``Encoder``; ``models/detok.py``, ``Decoder``)
# ============================================================================================


class _ImageToTokens(nn.Module):
    """(B, W, h, w) → (B, h·w, W), row-major (``n = h·grid + w``). No parameters."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class _TokensToGrid(nn.Module):
    """(B, h·w, W) → (B, W, h, w). No parameters."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def forward(self, x):
        return x.transpose(1, 2).unflatten(2, (self.grid, self.grid))


class _Unpatchify(nn.Module):
    """(B, p·p·3, h, w) → (B, 3, h·p, w·p), channel index ``(p1·p + p2)·3 + c`` (official ``Decoder``)."""

    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch

    def forward(self, x):
        b, _, h, w = x.shape
        p = self.patch
        x = x.view(b, p, p, 3, h, w).permute(0, 3, 4, 1, 5, 2)  # b c h p1 w p2
        return x.reshape(b, 3, h * p, w * p)


class Encoder(nn.Module):
    """Image in [-1, 1] → Gaussian moments ``(B, L, 2C)`` of the visible tokens (official ``Encoder``)."""

    def __init__(self, img_size: int, patch_size: int, width: int, layers: int, heads: int,
                 token_channels: int):
        super().__init__()
        self.grid_size = img_size // patch_size
        self.seq_len = self.grid_size**2
        self.patch_embed = nn.Sequential(nn.Conv2d(3, width, patch_size, patch_size), _ImageToTokens())
        self.positional_embedding = nn.Parameter(width**-0.5 * torch.randn(1, self.seq_len, width))
        self.ln_pre = RMSNorm(width)
        self.transformer = nn.ModuleList(Block(width, heads, swiglu_hidden(width)) for _ in range(layers))
        self.ln_post = RMSNorm(width)
        self.latent_head = nn.Linear(width, 2 * token_channels)
        self.register_buffer("rope_tensor", rope_table(width // heads, self.grid_size), persistent=False)

    def forward(self, x, mask_ratio: float = 0.0, mask_noise=None, rng=None):
        """Returns ``(moments (B, L, 2C), ids_restore (B, N) or None)``. Masking happens after the
        absolute positions are added; the RoPE rows of the kept tokens go with them."""
        tokens = self.patch_embed(x) + self.positional_embedding
        rope = self.rope_tensor
        ids_restore = None
        if mask_ratio > 0:
            b, n, w = tokens.shape
            ids_keep, _, ids_restore = random_mask_indices(b, n, mask_ratio, mask_noise, rng, x.device)
            tokens = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, w))
            rope = torch.gather(rope.expand(b, -1, -1), 1, ids_keep[..., None].expand(-1, -1, rope.shape[-1]))
        h = self.ln_pre(tokens)
        for block in self.transformer:
            h = block(h, rope)
        return self.latent_head(self.ln_post(h)), ids_restore


class Decoder(nn.Module):
    """Latents ``(B, L, C)`` (+ ``ids_restore`` when masked) → image in [-1, 1] (official ``Decoder``)."""

    def __init__(self, img_size: int, patch_size: int, width: int, layers: int, heads: int,
                 token_channels: int):
        super().__init__()
        self.grid_size = img_size // patch_size
        self.seq_len = self.grid_size**2
        self.positional_embedding = nn.Parameter(width**-0.5 * torch.randn(1, self.seq_len, width))
        self.mask_token = nn.Parameter(width**-0.5 * torch.randn(1, 1, width))
        self.decoder_embed = nn.Linear(token_channels, width)
        self.ln_pre = RMSNorm(width)
        self.transformer = nn.ModuleList(Block(width, heads, swiglu_hidden(width)) for _ in range(layers))
        self.ln_post = RMSNorm(width)
        self.ffn = nn.Sequential(
            _TokensToGrid(self.grid_size),
            nn.Conv2d(width, patch_size * patch_size * 3, 1),
            _Unpatchify(patch_size),
        )
        self.conv_out = nn.Conv2d(3, 3, 3, padding=1)
        self.register_buffer("rope_tensor", rope_table(width // heads, self.grid_size), persistent=False)

    def forward(self, z, ids_restore=None):
        x = self.decoder_embed(z)
        if ids_restore is not None:
            b, keep, w = x.shape
            # The official code appends N + 1 - L mask tokens, one more than needed (a leftover of
            # MAE's cls token); the extra one is never gathered. Same count here, same result.
            fill = self.mask_token.to(x.dtype).expand(b, self.seq_len + 1 - keep, w)
            x = torch.cat([x, fill], dim=1)
            x = torch.gather(x, 1, ids_restore[..., None].expand(-1, -1, w))
        x = self.ln_pre(x + self.positional_embedding)
        for block in self.transformer:
            x = block(x, self.rope_tensor)
        return self.conv_out(self.ffn(self.ln_post(x)))


# ============================================================================================
# the tokenizer
# ============================================================================================


def _init_weights(module: nn.Module) -> None:
    """official ``DeTok._init_weights``: trunc-normal(0.02) weights and zero biases for Linear/Conv; norms stay 1."""
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _as_stats(value, channels: int, name: str) -> torch.Tensor:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        t = torch.full((channels,), float(value))
    else:
        try:
            t = torch.as_tensor(value, dtype=torch.float32).detach().flatten().cpu()
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a float or a vector of {channels} floats, "
                            f"got {type(value).__name__}") from None
        if t.numel() == 1:
            t = t.expand(channels).clone()
        if t.numel() != channels:
            raise ValueError(f"{name} has {t.numel()} values; allowed 1 or token_channels={channels}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


class DeTok(nn.Module):
    """The l-DeTok tokenizer (official ``models/detok.py``). Build one with :func:`create_tokenizer`.

    - ``forward(x)``: the training forward (random mask ratio per batch, τ per sample, posterior
      sample, noise on the visible latents); returns ``(recon, kl)``. In ``eval()`` mode it is a
      clean reconstruction instead (the official code still masks in eval mode: official ``DeTok.encode``).
    - ``encode`` / ``decode``: explicit corruption arguments, nothing implicit.
    - ``tokenize`` / ``detokenize`` / ``reconstruct``: inference, no masking, no noise.
    """

    def __init__(self, encoder: str = "small", decoder: str = "base", img_size: int = 256, patch_size: int = 16,
                 token_channels: int = 16, gamma: float = DEFAULT_GAMMA, mask_ratio: float = DEFAULT_MASK_RATIO,
                 use_additive_noise: bool = False):
        super().__init__()
        for key, value in (("img_size", img_size), ("patch_size", patch_size), ("token_channels", token_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key}={value!r} is out of range; allowed an int >= 1")
        if img_size % patch_size != 0:
            raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch_size}")
        if not isinstance(gamma, numbers.Real) or isinstance(gamma, bool) or not 0 <= gamma < math.inf:
            raise ValueError(f"gamma={gamma!r} is out of range; allowed a finite float >= 0")
        if not isinstance(mask_ratio, numbers.Real) or isinstance(mask_ratio, bool) or not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio={mask_ratio!r} is out of range; allowed [0, 1)")
        if not isinstance(use_additive_noise, bool):
            raise ValueError(f"use_additive_noise={use_additive_noise!r} must be a bool")
        for key, size in (("encoder", encoder), ("decoder", decoder)):
            if size not in SIZES:
                raise ValueError(f"{key}={size!r} is not a known size; allowed: {', '.join(SIZES)}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.seq_len = self.grid_size**2
        self.token_channels = token_channels
        self.gamma = float(gamma)
        self.mask_ratio = float(mask_ratio)
        self.use_additive_noise = use_additive_noise
        self.scale_factor = 1.0
        self.encoder = Encoder(img_size, patch_size, *SIZES[encoder], token_channels)
        self.decoder = Decoder(img_size, patch_size, *SIZES[decoder], token_channels)
        # Latent channel statistics for the generators (non-persistent, as in the official code).
        self.register_buffer("latent_mean", torch.zeros(token_channels), persistent=False)
        self.register_buffer("latent_std", torch.ones(token_channels), persistent=False)
        self.apply(_init_weights)
        self.spec = {"kind": "tokenizer", "name": f"detok_custom_{encoder}_{decoder}", "kwargs": {}}

    # ---------------------------------------------------------------- input checks

    def _check_images(self, x, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a float tensor (B, 3, H, W) in [0, 1], got {type(x).__name__}")
        if not torch.is_floating_point(x):
            raise ValueError(f"{name} has dtype {x.dtype}; allowed a float tensor in [0, 1] "
                             "(for uint8 images use x.float() / 255)")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{name} has shape {tuple(x.shape)}; allowed (B, 3, H, W) RGB images")
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size or h != self.img_size or w != self.img_size:
            fix = f"build the tokenizer with img_size={h}" if h == w and not h % self.patch_size else "crop them"
            size = self.img_size
            raise ValueError(f"{name} has size {h}x{w}; allowed {size}x{size} (img_size={size}, "
                             f"patch_size={self.patch_size}): resize the images or {fix}")
        x = self._to_model(x, name)
        lo, hi = (float(v) for v in torch.aminmax(x.detach())) if x.numel() and not x.is_meta else (0.0, 1.0)
        if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN propagates: one reduction checks both
            raise ValueError(f"{name} contains NaN or Inf values; allowed finite images in [0, 1]")
        if lo < IMAGE_RANGE_SLACK[0] or hi > IMAGE_RANGE_SLACK[1]:
            raise ValueError(f"{name} has values in [{lo:.3g}, {hi:.3g}]; allowed images in [0, 1] "
                             "(0..255 images: divide by 255; [-1, 1] images: (x + 1) / 2)")
        return x

    def _to_model(self, t: torch.Tensor, name: str) -> torch.Tensor:
        """``t`` on the model's device, cast to its parameter dtype unless autocast (which casts) is on."""
        p = self.encoder.latent_head.weight
        if t.is_meta and not p.is_meta:
            raise ValueError(f"{name} is on the meta device (a tensor without values); allowed a tensor on "
                             f"{p.device}, the tokenizer's device")
        if t.device != p.device:
            raise ValueError(f"{name} is on {t.device} but the tokenizer is on {p.device}; allowed a tensor on "
                             f"{p.device} (move it with .to({str(p.device)!r}) or move the tokenizer)")
        if t.dtype != p.dtype and not torch.is_autocast_enabled(t.device.type):
            t = t.to(p.dtype)
        return t

    def _check_latents(self, z, name: str = "z", channels_first: bool = False) -> torch.Tensor:
        c = self.token_channels
        if not isinstance(z, torch.Tensor) or not torch.is_floating_point(z):
            raise TypeError(f"{name} must be a float tensor, got "
                            f"{z.dtype if isinstance(z, torch.Tensor) else type(z).__name__}")
        if channels_first:
            want = (c, self.grid_size, self.grid_size)
            if z.ndim != 4 or tuple(z.shape[1:]) != want:
                raise ValueError(f"{name} has shape {tuple(z.shape)}; allowed (B, {c}, {self.grid_size}, "
                                 f"{self.grid_size}) normalised latents")
        elif z.ndim != 3 or z.shape[-1] != c:
            raise ValueError(f"{name} has shape {tuple(z.shape)}; allowed (B, L, {c}) latent tokens")
        return self._to_model(z, name)

    # ---------------------------------------------------------------- encode / decode

    @_compat.renamed_keywords(generator="rng")
    def encode(self, x, mask_ratio: float = 0.0, noise_tau=None, sampling: bool = False, gamma=None,
               rng: torch.Generator | None = None, *, mask_noise=None, noise=None):
        """Images ``x`` in [0, 1] → ``(z (B, L, C), ids_restore (B, N) or None, posterior)``.

        - ``mask_ratio`` in [0, 1): fraction of patch tokens dropped at the encoder input
          (``L = ⌈N·(1 - mask_ratio)⌉``; ``ids_restore`` is None when 0). ``mask_noise`` (B, N)
          fixes the drop order (nested masks as the ratio grows).
        - ``sampling``: posterior sample instead of its mean.
        - ``noise_tau``: None (no noise), a float or a per-sample tensor ``[B]``; applied after
          sampling to the visible latents with ``gamma`` (default ``self.gamma``; no noise when
          γ = 0), interpolative or additive per ``use_additive_noise``. ``noise`` fixes ε.
        """
        x = self._check_images(x)
        if not isinstance(mask_ratio, numbers.Real) or isinstance(mask_ratio, bool) or not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio={mask_ratio!r} is out of range; allowed [0, 1)")
        gamma = self.gamma if gamma is None else _check_gamma(gamma)
        moments, ids_restore = self.encoder(x * 2.0 - 1.0, float(mask_ratio), mask_noise, rng)
        posterior = DiagonalGaussian(moments)
        z = posterior.sample(rng) if sampling else posterior.mean
        if noise_tau is not None and gamma > 0:
            corrupt = additive_noise if self.use_additive_noise else interpolative_noise
            z = corrupt(z, noise_tau, gamma, noise=noise, rng=rng)
        elif noise_tau is not None:
            _tau_for(z, noise_tau)  # checked all the same: γ = 0 adds no noise
        return z, ids_restore, posterior

    def decode(self, z, ids_restore=None) -> torch.Tensor:
        """Latent tokens ``(B, L, C)`` → images in [0, 1]-space, **not** clamped (for losses).

        With ``ids_restore`` the missing positions get the [MASK] token; without it ``L`` must be
        the full ``N``.
        """
        z = self._check_latents(z)
        if ids_restore is None and z.shape[1] != self.seq_len:
            raise ValueError(f"z has {z.shape[1]} tokens but the decoder needs {self.seq_len} "
                             "(pass ids_restore from encode() when tokens were masked)")
        want = (z.shape[0], self.seq_len)
        if ids_restore is not None and not (isinstance(ids_restore, torch.Tensor) and ids_restore.shape == want
                                            and ids_restore.dtype == torch.long and ids_restore.device == z.device):
            got = (f"{tuple(ids_restore.shape)} {ids_restore.dtype} on {ids_restore.device}"
                   if isinstance(ids_restore, torch.Tensor) else type(ids_restore).__name__)
            raise ValueError(f"ids_restore is {got}; allowed shape {want}, torch.int64, on {z.device} (from encode())")
        return self.decoder(z, ids_restore) * 0.5 + 0.5

    @_compat.renamed_keywords(generator="rng")
    def forward(self, x, rng: torch.Generator | None = None):
        """Training forward: ``(recon (B, 3, H, W) in [0,1]-space unclamped, kl (B,))``.

        In train mode: m = max(0, U(-0.1, M)) once per batch, τ ~ U[0, 1) per sample (when
        γ > 0), posterior sample, noise on the visible latents, decoder with [MASK] tokens
        (official ``DeTok.encode`` / ``DeTok.forward``). In eval mode: no mask, no noise, posterior mean.
        """
        if self.training:
            if not isinstance(x, torch.Tensor):
                self._check_images(x)  # a TypeError naming x; encode() checks tensors in full
            m = sample_mask_ratio(self.mask_ratio, rng)
            tau = sample_tau(x.shape[0], rng, x.device) if self.gamma > 0 else None
            z, ids_restore, posterior = self.encode(x, m, tau, sampling=True, rng=rng)
        else:
            z, ids_restore, posterior = self.encode(x)
        return self.decode(z, ids_restore), posterior.kl()

    # ---------------------------------------------------------------- inference API

    def normalize_z(self, z: torch.Tensor) -> torch.Tensor:
        """``(z - mean)·scale_factor / std`` over the channel (last) dim (official ``DeTok.normalize_z``)."""
        return (z - self.latent_mean) * self.scale_factor / self.latent_std

    def denormalize_z(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std / self.scale_factor + self.latent_mean

    @_compat.renamed_keywords(generator="rng")
    def tokenize(self, x, sampling: bool = False, rng: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] → normalised channels-first latents ``(B, C, h, w)``; no mask, no noise."""
        z, _, _ = self.encode(x, sampling=sampling, rng=rng)
        z = self.normalize_z(z)
        return z.transpose(1, 2).unflatten(2, (self.grid_size, self.grid_size))

    def detokenize(self, z) -> torch.Tensor:
        """Normalised latents ``(B, C, h, w)`` → images in [0, 1] (clamped)."""
        z = self._check_latents(z, channels_first=True)
        z = self.denormalize_z(z.flatten(2).transpose(1, 2))
        return self.decode(z).clamp(0.0, 1.0)

    def reconstruct(self, x) -> torch.Tensor:
        """Encode (posterior mean, no mask, no noise) and decode; images in [0, 1] (clamped)."""
        z, _, _ = self.encode(x)
        return self.decode(z).clamp(0.0, 1.0)

    def set_latent_stats(self, mean, std) -> None:
        """Per-channel (vector of ``token_channels``) or global (float) latent statistics used by
        ``tokenize``/``detokenize``. Unlike the official ``reset_stats``, floats work."""
        c = self.token_channels
        mean_t = _as_stats(mean, c, "mean")
        std_t = _as_stats(std, c, "std")
        if (std_t <= 0).any():
            raise ValueError(f"std must be > 0, got {std_t.tolist()}")
        self.latent_mean = mean_t.to(self.latent_mean.device)
        self.latent_std = std_t.to(self.latent_std.device)

    @property
    def latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean.clone(), self.latent_std.clone()

    def extra_repr(self) -> str:
        return (f"img_size={self.img_size}, patch_size={self.patch_size}, token_channels={self.token_channels}, "
                f"gamma={self.gamma}, mask_ratio={self.mask_ratio}, use_additive_noise={self.use_additive_noise}")


# ============================================================================================
# factory
# ============================================================================================


def create_tokenizer(name: str = "detok_tiny", **overrides) -> DeTok:
    """Build a tokenizer by name (``detok_SS`` … ``detok_XLXL``, ``detok_tiny``, ``detok_small_cpu``).

    ``overrides``: ``img_size``, ``patch_size``, ``token_channels``, ``gamma``, ``mask_ratio``,
    ``use_additive_noise``. Explicit sizes are checked on the meta device first: more than
    ``config.MAX_PARAMS`` parameters raise ``ValueError`` before anything is allocated. Build on the
    meta device (``with torch.device("meta"):``) to inspect large sizes without allocating them.
    """
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}{suggest(name, TOKENIZERS)}; allowed: {', '.join(TOKENIZERS)}")
    bad = [k for k in overrides if k not in OVERRIDES]
    if bad:
        raise ValueError(f"unknown tokenizer override {bad[0]!r}; allowed: {', '.join(OVERRIDES)}")
    arch = dict(TOKENIZERS[name])
    kwargs = dict(gamma=DEFAULT_GAMMA, mask_ratio=DEFAULT_MASK_RATIO, use_additive_noise=False)
    kwargs.update({k: arch.pop(k) for k in ("img_size", "patch_size", "token_channels")})
    kwargs.update(overrides)
    check_num_params(lambda: DeTok(encoder=arch["encoder"], decoder=arch["decoder"], **kwargs),
                     f"create_tokenizer({name!r})", {k: overrides[k] for k in SIZE_OVERRIDES if k in overrides})
    model = DeTok(encoder=arch["encoder"], decoder=arch["decoder"], **kwargs)
    model.spec = {"kind": "tokenizer", "name": name, "kwargs": dict(overrides)}
    return model


def __getattr__(name: str):  # names that moved to another module in this release (ldetok_lite._compat)
    return _compat.moved_attribute(__name__, name)
