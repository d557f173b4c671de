"""A convolutional tokenizer: the KL autoencoder of SD-VAE and MAR-VAE with latent denoising.

The paper's claim that l-DeTok is architecture-agnostic (a CNN tokenizer trained with the same
corruption improves MAR-B from 3.32 to 2.82 gFID) and its two baselines, SD-VAE (``sd-vae-ft-ema``)
and MAR-VAE (``kl16.ckpt``), are all this architecture: ResNet blocks with down/up-sampling and a
middle attention block. The blocks are diffusers' ``Encoder`` / ``Decoder`` (the library the
official l-DeTok code depends on too), so the state dict has diffusers' ``AutoencoderKL`` keys and
SD-VAE loads with strict keys.

Corruption on a latent *map* (our choice, and why):

- noise: exactly as for the ViT, interpolative (paper eq. 1) or additive, on every latent position;
- masking: a convolution cannot skip input patches the way the ViT encoder drops tokens (its
  receptive field would leak the hidden pixels, and zeroed patches change the statistics it sees).
  So the encoder sees the whole image and the mask is applied to the latent map: a fraction m of
  the positions is replaced by a learned [MASK] vector before the decoder, which must fill them in
  (its middle attention block sees the whole map). ``mask_ratio=0`` gives the noise-only variant.

The KL term covers every latent position (the encoder computes them all).
"""

from __future__ import annotations

import torch
from torch import nn

from . import _compat
from .autoencoder import DiagonalGaussian, LatentAutoencoder
from .config import check_num_params, suggest
from .corruption import random_mask_indices

__all__ = ["ConvTok", "CONV_TOKENIZERS", "CONV_OVERRIDES", "create_conv_tokenizer", "conv_arch_of_config"]

#: name -> architecture (diffusers ``AutoencoderKL`` arguments) and default image settings
CONV_TOKENIZERS: dict[str, dict] = {
    # ours, for the CPU: 32 px → the 8×8×8 latent grid of detok_tiny (two downsamplings)
    "cnn_tiny": dict(block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8,
                     down_block_types=("DownEncoderBlock2D",) * 3, img_size=32, token_channels=8),
    # SD-VAE (``stabilityai/sd-vae-ft-ema``): f8, 4 channels
    "sd_vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                   down_block_types=("DownEncoderBlock2D",) * 4, img_size=256, token_channels=4),
    # MAR-VAE (``kl16.ckpt`` of the MAR repository, ``models/vae.py``): f16, 16 channels,
    # ch 128 × (1, 1, 2, 2, 4), attention after each ResNet block of the encoder's 16×16 level
    "mar_vae": dict(block_out_channels=(128, 128, 256, 256, 512), layers_per_block=2, norm_num_groups=32,
                    down_block_types=("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",), img_size=256,
                    token_channels=16),
}

#: overrides ``create_tokenizer`` accepts for a convolutional name
CONV_OVERRIDES = ("img_size", "patch_size", "token_channels", "gamma", "mask_ratio", "use_additive_noise",
                  "block_out_channels", "layers_per_block", "norm_num_groups", "down_block_types")
_DOWN_BLOCKS = ("DownEncoderBlock2D", "AttnDownEncoderBlock2D")


def _diffusers_blocks():
    """diffusers' VAE encoder and decoder (imported on first use: diffusers takes seconds to import)."""
    try:
        from diffusers.models.autoencoders.vae import Decoder, Encoder
    except ImportError as e:  # pragma: no cover - diffusers is a dependency
        raise ImportError("the convolutional tokenizer needs diffusers (pip install 'diffusers>=0.30')") from e
    return Encoder, Decoder


class ConvTok(LatentAutoencoder):
    """The convolutional KL autoencoder with latent denoising. Build one with ``create_tokenizer``
    (``cnn_tiny``, ``sd_vae``, ``mar_vae``); load released weights with
    ``convert_vae.load_sd_vae`` / ``convert_vae.load_mar_vae``.

    Same interface as ``DeTok``: ``forward`` (training, ``(recon, kl)``), ``encode`` / ``decode``
    with latent tokens ``(B, h·w, C)`` in row-major order, ``tokenize`` / ``detokenize`` /
    ``reconstruct``, latent statistics. ``patch_size`` is the downsampling factor (pixels per
    latent position).
    """

    DECODER_PREFIXES = ("decoder.", "post_quant_conv.", "mask_token")

    def __init__(self, block_out_channels=(16, 32, 64), layers_per_block: int = 1, norm_num_groups: int = 8,
                 down_block_types=None, img_size: int = 32, token_channels: int = 8, gamma: float = 3.0,
                 mask_ratio: float = 0.7, use_additive_noise: bool = False):
        super().__init__()
        channels = tuple(block_out_channels)
        if not channels or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels):
            raise ValueError(f"block_out_channels={block_out_channels!r} is out of range; allowed ints >= 1")
        down = tuple(down_block_types) if down_block_types is not None else ("DownEncoderBlock2D",) * len(channels)
        if len(down) != len(channels) or any(t not in _DOWN_BLOCKS for t in down):
            raise ValueError(f"down_block_types={down_block_types!r}: allowed {len(channels)} of "
                             f"{', '.join(_DOWN_BLOCKS)} (one per block_out_channels entry)")
        for key, value in (("img_size", img_size), ("token_channels", token_channels),
                           ("layers_per_block", layers_per_block), ("norm_num_groups", norm_num_groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key}={value!r} is out of range; allowed an int >= 1")
        if any(c % norm_num_groups for c in channels):
            raise ValueError(f"norm_num_groups={norm_num_groups} must divide every block_out_channels {channels}")
        factor = 2 ** (len(channels) - 1)
        if img_size % factor:
            raise ValueError(f"img_size={img_size} is not divisible by the downsampling factor {factor} "
                             f"({len(channels)} levels)")
        self._set_corruption(gamma, mask_ratio, use_additive_noise)
        self.img_size, self.patch_size = img_size, factor
        self.grid_size = img_size // factor
        self.seq_len = self.grid_size**2
        self.token_channels = token_channels
        self.scale_factor = 1.0
        Encoder, Decoder = _diffusers_blocks()
        self.encoder = Encoder(in_channels=3, out_channels=token_channels, down_block_types=down,
                               block_out_channels=channels, layers_per_block=layers_per_block,
                               norm_num_groups=norm_num_groups, act_fn="silu", double_z=True)
        self.decoder = Decoder(in_channels=token_channels, out_channels=3,
                               up_block_types=("UpDecoderBlock2D",) * len(channels), block_out_channels=channels,
                               layers_per_block=layers_per_block, norm_num_groups=norm_num_groups, act_fn="silu")
        self.quant_conv = nn.Conv2d(2 * token_channels, 2 * token_channels, 1)
        self.post_quant_conv = nn.Conv2d(token_channels, token_channels, 1)
        # the [MASK] vector that fills masked latent positions (not part of SD-VAE / MAR-VAE: zeros there)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, token_channels))
        self._init_latent_stats(token_channels)
        self.arch = dict(block_out_channels=list(channels), layers_per_block=layers_per_block,
                         norm_num_groups=norm_num_groups, down_block_types=list(down))
        self.spec = {"kind": "tokenizer", "name": "cnn_custom", "kwargs": dict(self.arch, img_size=img_size,
                                                                              token_channels=token_channels)}

    def reference_weight(self) -> torch.Tensor:
        return self.quant_conv.weight

    @_compat.renamed_keywords(generator="rng")
    def encode(self, x, mask_ratio: float = 0.0, noise_tau=None, sampling: bool = False, gamma=None,
               rng: torch.Generator | None = None, *, mask_noise=None, noise=None):
        """Images ``x`` in [0, 1] → ``(z (B, L, C), ids_restore (B, N) or None, posterior)``.

        The whole image is encoded; noise (``noise_tau``, ``gamma``, ``noise``) goes on every
        position, then ``mask_ratio`` of the positions are dropped (``mask_noise`` (B, N) fixes
        which, as for the ViT) and ``decode`` fills them with the [MASK] vector.
        """
        x = self._check_images(x)
        mask_ratio = self._check_mask_ratio(mask_ratio)
        moments = self.quant_conv(self.encoder(x * 2.0 - 1.0))
        posterior = DiagonalGaussian(moments.flatten(2).transpose(1, 2))
        z = posterior.sample(rng) if sampling else posterior.mean
        z = self._add_noise(z, noise_tau, gamma, noise, rng)
        ids_restore = None
        if mask_ratio > 0:
            b, n, c = z.shape
            ids_keep, _, ids_restore = random_mask_indices(b, n, mask_ratio, mask_noise, rng, z.device)
            z = torch.gather(z, 1, ids_keep[..., None].expand(-1, -1, c))
        return z, ids_restore, posterior

    def decode(self, z, ids_restore=None) -> torch.Tensor:
        """Latent tokens ``(B, L, C)`` → images in [0, 1]-space, **not** clamped (for losses); with
        ``ids_restore`` the missing positions get the [MASK] vector."""
        z = self._check_decoder_input(z, ids_restore)
        if ids_restore is not None:
            b, keep, c = z.shape
            fill = self.mask_token.to(z.dtype).expand(b, self.seq_len - keep, c)
            z = torch.gather(torch.cat([z, fill], dim=1), 1, ids_restore[..., None].expand(-1, -1, c))
        grid = z.transpose(1, 2).unflatten(2, (self.grid_size, self.grid_size))
        return self.decoder(self.post_quant_conv(grid)) * 0.5 + 0.5


def create_conv_tokenizer(name: str = "cnn_tiny", **overrides) -> ConvTok:
    """A convolutional tokenizer by name (:data:`CONV_TOKENIZERS`) with :data:`CONV_OVERRIDES`;
    ``patch_size``, if given, must equal the architecture's downsampling factor."""
    if name not in CONV_TOKENIZERS and name != "cnn_custom":
        raise ValueError(f"unknown tokenizer {name!r}{suggest(name, CONV_TOKENIZERS)}; "
                         f"allowed: {', '.join(CONV_TOKENIZERS)}")
    bad = [k for k in overrides if k not in CONV_OVERRIDES]
    if bad:
        raise ValueError(f"unknown tokenizer override {bad[0]!r} for {name!r}; allowed: {', '.join(CONV_OVERRIDES)}")
    kwargs = dict(CONV_TOKENIZERS.get(name, CONV_TOKENIZERS["cnn_tiny"]))
    kwargs.update({k: v for k, v in overrides.items() if k != "patch_size"})
    patch = overrides.get("patch_size")
    factor = 2 ** (len(kwargs["block_out_channels"]) - 1)
    if patch is not None and patch != factor:
        raise ValueError(f"patch_size={patch!r} does not match {name!r}, which downsamples by {factor} "
                         f"({len(kwargs['block_out_channels'])} levels); allowed patch_size={factor}")
    check_num_params(lambda: ConvTok(**kwargs), f"create_tokenizer({name!r})",
                     {k: overrides[k] for k in ("img_size", "token_channels", "block_out_channels") if k in overrides})
    model = ConvTok(**kwargs)
    model.spec = {"kind": "tokenizer", "name": name, "kwargs": {k: list(v) if isinstance(v, tuple) else v
                                                                  for k, v in overrides.items()}}
    return model


def conv_arch_of_config(config: dict) -> dict:
    """``ConvTok`` arguments from a diffusers ``AutoencoderKL`` ``config.json`` (SD-VAE's layout);
    ``ValueError`` naming the field for anything this tokenizer cannot represent."""
    if not isinstance(config, dict) or config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        got = config.get("_class_name") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"config.json describes {got!r}; allowed a diffusers AutoencoderKL (SD-VAE's layout)")
    fixed = {"in_channels": 3, "out_channels": 3, "act_fn": "silu", "use_quant_conv": True,
             "use_post_quant_conv": True, "mid_block_add_attention": True}
    for key, want in fixed.items():
        if config.get(key, want) != want:
            raise ValueError(f"config.json has {key}={config[key]!r}; allowed {want!r}")
    ups = config.get("up_block_types", ["UpDecoderBlock2D"])
    if any(t != "UpDecoderBlock2D" for t in ups):
        raise ValueError(f"config.json has up_block_types={ups!r}; allowed only UpDecoderBlock2D")
    return dict(block_out_channels=list(config.get("block_out_channels", [64])),
                layers_per_block=int(config.get("layers_per_block", 1)),
                norm_num_groups=int(config.get("norm_num_groups", 32)),
                down_block_types=list(config.get("down_block_types", ["DownEncoderBlock2D"])),
                img_size=int(config.get("sample_size", 256)), token_channels=int(config.get("latent_channels", 4)))
