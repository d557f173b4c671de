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

import torch
from torch import nn

from . import _compat
from .autoencoder import DiagonalGaussian, LatentAutoencoder
from .config import check_num_params, suggest
from .conv_tokenizer import CONV_TOKENIZERS, create_conv_tokenizer
from .corruption import random_mask_indices
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

#: training defaults of the README recipe (official README recipe; ``main_reconstruction.py``): γ = 3, M = 0.7.
DEFAULT_GAMMA = 3.0
DEFAULT_MASK_RATIO = 0.7


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


class DeTok(LatentAutoencoder):
    """The l-DeTok tokenizer (official ``models/detok.py``). Build one with :func:`create_tokenizer`.

    - ``forward(x)``: the training forward (random mask ratio per batch, τ per sample, posterior
      sample, noise on the visible latents); returns ``(recon, kl)``. In ``eval()`` mode it is a
      clean reconstruction instead (the official code still masks in eval mode: official ``DeTok.encode``).
    - ``encode`` / ``decode``: explicit corruption arguments, nothing implicit.
    - ``tokenize`` / ``detokenize`` / ``reconstruct``: inference, no masking, no noise.

    The checks, the training forward and the inference API are shared with the convolutional
    tokenizer (``autoencoder.LatentAutoencoder``).
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
        self._set_corruption(gamma, mask_ratio, use_additive_noise)
        for key, size in (("encoder", encoder), ("decoder", decoder)):
            if size not in SIZES:
                raise ValueError(f"{key}={size!r} is not a known size; allowed: {', '.join(SIZES)}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.seq_len = self.grid_size**2
        self.token_channels = token_channels
        self.scale_factor = 1.0
        self.encoder = Encoder(img_size, patch_size, *SIZES[encoder], token_channels)
        self.decoder = Decoder(img_size, patch_size, *SIZES[decoder], token_channels)
        self._init_latent_stats(token_channels)
        self.apply(_init_weights)
        self.spec = {"kind": "tokenizer", "name": f"detok_custom_{encoder}_{decoder}", "kwargs": {}}

    def reference_weight(self) -> torch.Tensor:
        return self.encoder.latent_head.weight

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
        mask_ratio = self._check_mask_ratio(mask_ratio)
        moments, ids_restore = self.encoder(x * 2.0 - 1.0, mask_ratio, mask_noise, rng)
        posterior = DiagonalGaussian(moments)
        z = posterior.sample(rng) if sampling else posterior.mean
        return self._add_noise(z, noise_tau, gamma, noise, rng), ids_restore, posterior

    def decode(self, z, ids_restore=None) -> torch.Tensor:
        """Latent tokens ``(B, L, C)`` → images in [0, 1]-space, **not** clamped (for losses).

        With ``ids_restore`` the missing positions get the [MASK] token; without it ``L`` must be
        the full ``N``.
        """
        z = self._check_decoder_input(z, ids_restore)
        return self.decoder(z, ids_restore) * 0.5 + 0.5


# ============================================================================================
# factory
# ============================================================================================


def create_tokenizer(name: str = "detok_tiny", **overrides) -> LatentAutoencoder:
    """Build a tokenizer by name (``detok_SS`` … ``detok_XLXL``, ``detok_tiny``, ``detok_small_cpu``;
    the convolutional ``cnn_tiny``, ``sd_vae``, ``mar_vae``: ``conv_tokenizer``).

    ``overrides``: ``img_size``, ``patch_size``, ``token_channels``, ``gamma``, ``mask_ratio``,
    ``use_additive_noise``; ``align_dim`` > 0 adds the projection of semantic distillation to a
    teacher of that width (:meth:`LatentAutoencoder.attach_aligner`; notebook 12). Explicit sizes
    are checked on the meta device first: more than ``config.MAX_PARAMS`` parameters raise
    ``ValueError`` before anything is allocated. Build on the meta device
    (``with torch.device("meta"):``) to inspect large sizes without allocating them.
    """
    align_dim = overrides.pop("align_dim", 0)
    if isinstance(align_dim, bool) or not isinstance(align_dim, int) or align_dim < 0:
        raise ValueError(f"align_dim={align_dim!r} is out of range; allowed an int >= 0 (0: no distillation)")
    model = create_conv_tokenizer(name, **overrides) if name in CONV_TOKENIZERS or name == "cnn_custom" else \
        _create_vit_tokenizer(name, **overrides)
    if align_dim:
        model.attach_aligner(align_dim)
        model.spec["kwargs"]["align_dim"] = align_dim
    return model


def _create_vit_tokenizer(name: str, **overrides) -> DeTok:
    if name not in TOKENIZERS:
        known = [*TOKENIZERS, *CONV_TOKENIZERS]
        raise ValueError(f"unknown tokenizer {name!r}{suggest(name, known)}; allowed: {', '.join(known)}")
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
