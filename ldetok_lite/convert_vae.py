"""The paper's convolutional baselines → our ``ConvTok``: SD-VAE and MAR-VAE weights.

- **SD-VAE** (``stabilityai/sd-vae-ft-ema``, the paper's Table 1 baseline) in diffusers' layout:
  a folder with ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or ``.bin``). Our
  keys are diffusers' ``AutoencoderKL`` keys, so it loads with strict keys.
- **MAR-VAE** (``kl16.ckpt`` of the MAR repository, ``models/vae.py``): a ``{"model": state_dict}``
  file in the latent-diffusion layout (``encoder.down.{i}.block.{j}``, ``mid.attn_1.q`` as 1×1
  convolutions, ...). :func:`mar_vae_state_dict` renames it to diffusers' layout.

Files are read through the kit's safe loading (safetensors, or ``torch.load(weights_only=True)``):
a file that carries code is refused. Nothing here downloads: fetch the files yourself (the
Hugging Face model page of ``sd-vae-ft-ema``; the MAR repository's README links ``kl16.ckpt``).
The latent statistics are not part of these files: compute them on your data (notebook 05).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoint import read_official_state_dict, state_dict_mismatch
from .conv_tokenizer import CONV_TOKENIZERS, ConvTok, conv_arch_of_config, create_conv_tokenizer
from .io import FileContentError, load_state_dict_file

__all__ = ["load_sd_vae", "load_mar_vae", "mar_vae_state_dict"]

_SD_HINT = ("SD-VAE in diffusers' layout is the folder of the Hugging Face model stabilityai/sd-vae-ft-ema "
            "(config.json + diffusion_pytorch_model.safetensors); download it first")
_MAR_HINT = "MAR-VAE is kl16.ckpt, linked from the README of github.com/LTH14/mar; download it first"
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _load_into(model: ConvTok, sd: Mapping, where: str, what: str) -> ConvTok:
    """Strict load of a released VAE into ``model``; the [MASK] vector (ours, not in the release) stays zero."""
    sd = dict(sd)
    sd.setdefault("mask_token", torch.zeros_like(model.mask_token))
    report = state_dict_mismatch(model, sd)
    if report:
        raise ValueError(f"{where} does not match {what} ({report})")
    model.load_state_dict(sd, strict=True)
    return model.eval()


def load_sd_vae(path, **corruption) -> ConvTok:
    """SD-VAE (or any diffusers ``AutoencoderKL`` of this architecture) from a diffusers folder, or
    from a bare ``.safetensors`` of ``sd_vae``'s architecture. ``corruption``: ``gamma``,
    ``mask_ratio``, ``use_additive_noise`` for further training. Eval mode."""
    p = Path(path)
    if p.is_dir():
        cfg_file = p / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{str(p)!r} has no config.json; {_SD_HINT}")
        try:
            config = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FileContentError(f"cannot read {str(cfg_file)!r}: {e}") from None
        arch = conv_arch_of_config(config)
        weights = next((p / f for f in _WEIGHT_FILES if (p / f).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{str(p)!r} has none of {', '.join(_WEIGHT_FILES)}; {_SD_HINT}")
        model = create_conv_tokenizer("cnn_custom", **arch, **corruption)
    elif p.is_file():
        weights = p
        model = create_conv_tokenizer("sd_vae", **corruption)
    else:
        raise FileNotFoundError(f"no SD-VAE at {str(p)!r}; {_SD_HINT}")
    sd = load_state_dict_file(weights)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{str(weights)!r} is not a state dict of tensors; is it SD-VAE's weights file?")
    if not any(k.startswith("encoder.down_blocks.") for k in sd):
        raise ValueError(f"{str(weights)!r} does not look like diffusers AutoencoderKL weights (no "
                         f"encoder.down_blocks.* keys); first keys: {', '.join(list(sd)[:5])}")
    return _load_into(model, sd, str(weights), "the SD-VAE architecture of its config")


# --------------------------------------------------------------------------- MAR-VAE (latent-diffusion layout)

_RESNET = {"nin_shortcut": "conv_shortcut"}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _rename(key: str, levels: int) -> str:
    """One latent-diffusion VAE key → diffusers' ``AutoencoderKL`` key."""
    side, rest = key.split(".", 1) if "." in key else (key, "")
    if side not in ("encoder", "decoder"):
        return key  # quant_conv / post_quant_conv keep their names
    rest = re.sub(r"^norm_out\.", "conv_norm_out.", rest)
    rest = re.sub(r"^mid\.block_(\d)\.", lambda m: f"mid_block.resnets.{int(m.group(1)) - 1}.", rest)
    rest = re.sub(r"^mid\.attn_1\.", "mid_block.attentions.0.", rest)
    if side == "encoder":
        rest = re.sub(r"^down\.(\d+)\.block\.", r"down_blocks.\1.resnets.", rest)
        rest = re.sub(r"^down\.(\d+)\.attn\.", r"down_blocks.\1.attentions.", rest)
        rest = re.sub(r"^down\.(\d+)\.downsample\.", r"down_blocks.\1.downsamplers.0.", rest)
    else:  # the decoder's up blocks are stored lowest resolution last; diffusers counts from the lowest
        def up(m):
            return f"up_blocks.{levels - 1 - int(m.group(1))}.{m.group(2)}"
        rest = re.sub(r"^up\.(\d+)\.(block|attn|upsample)", up, rest)
        rest = rest.replace(".block.", ".resnets.", 1).replace(".attn.", ".attentions.", 1)
        rest = re.sub(r"\.upsample\.", ".upsamplers.0.", rest)
    parts = rest.split(".")
    if "resnets" in parts and parts[-2] in _RESNET:
        parts[-2] = _RESNET[parts[-2]]
    if "attentions" in parts and parts[-2] in _ATTN:
        parts[-2:-1] = _ATTN[parts[-2]].split(".")
    return f"{side}.{'.'.join(parts)}"


def mar_vae_state_dict(sd: Mapping, levels: int = 5) -> dict:
    """MAR's ``kl16.ckpt`` weights (latent-diffusion layout, ``levels`` resolutions) in diffusers'
    layout: renamed keys, and attention 1×1 convolutions as the linear weights diffusers uses."""
    out = {}
    for key, value in sd.items():
        new = _rename(key, levels)
        if ".attentions." in new and new.endswith(".weight") and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[new] = value
    return out


def load_mar_vae(path, which: str = "model", **corruption) -> ConvTok:
    """MAR-VAE (``kl16.ckpt``: ``{"model": state_dict}``, or a bare state dict) as a ``mar_vae``
    ``ConvTok`` with strict keys. ``corruption``: ``gamma``, ``mask_ratio``, ``use_additive_noise``."""
    def looks_like(sd: Mapping) -> str | None:
        if "encoder.conv_in.weight" in sd and any(k.startswith("encoder.down.") for k in sd):
            return None
        return (f"does not look like MAR-VAE weights (no encoder.down.* keys of the latent-diffusion layout); "
                f"first keys: {', '.join(list(sd)[:5])}")

    sd, where = read_official_state_dict(path, which, check=looks_like, hint=_MAR_HINT, what="MAR's kl16.ckpt")
    model = create_conv_tokenizer("mar_vae", **corruption)
    levels = len(CONV_TOKENIZERS["mar_vae"]["block_out_channels"])
    return _load_into(model, mar_vae_state_dict(sd, levels), where, "MAR-VAE (kl16)")
