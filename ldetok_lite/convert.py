"""Official checkpoints → our models: the released l-DeTok tokenizer files.

The official ``.pth`` release files are ``save_checkpoint`` dicts (official ``utils/misc.py``)
with the weights under ``model`` and ``model_ema``. They are read with
``torch.load(weights_only=True)``: a file that carries code is refused, never run. Our parameter
names and shapes are the official ones (``models/detok.py``), so the tokenizer loads with strict
keys. Download the files yourself (the official repository's README, GitHub
``Jiawei-Yang/DeTok``, links them on Hugging Face); nothing here downloads. Notebook 02 loads one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .io import FileContentError, UnsafeFileError, safe_torch_load
from .tokenizer import SIZES, TOKENIZERS, DeTok, create_tokenizer

__all__ = ["load_official_checkpoint", "infer_official_config"]


def infer_official_config(state_dict: Mapping) -> dict:
    """Guess ``name``, ``img_size``, ``patch_size``, ``token_channels`` from DeTok weights."""
    sd = state_dict

    def size_of(prefix: str) -> str | None:
        width = sd[f"{prefix}.ln_pre.weight"].shape[0]
        depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(rf"{prefix}\.transformer\.(\d+)\.", k))),
                        default=-1)
        return next((size for size, arch in SIZES.items() if arch[:2] == (width, depth)), None)

    enc, dec = size_of("encoder"), size_of("decoder")
    patch = sd["encoder.patch_embed.0.weight"].shape[-1]
    grid = math.isqrt(sd["encoder.positional_embedding"].shape[1])
    out = {"img_size": grid * patch, "patch_size": patch, "token_channels": sd["decoder.decoder_embed.weight"].shape[1]}
    for name, arch in TOKENIZERS.items():
        if (arch["encoder"], arch["decoder"]) == (enc, dec):
            out["name"] = name
            break
    return out


def _shape_report(model: nn.Module, sd: Mapping) -> str:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {expected[k]}" for k in expected
             if k in sd and tuple(sd[k].shape) != expected[k]]
    lines = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            lines.append(f"{label} ({len(items)}): {', '.join(items[:5])}{more}")
    return "; ".join(lines)


def load_official_checkpoint(path, name: str = "detok_BB", which: str = "model_ema", **overrides) -> DeTok:
    """Load an official l-DeTok release ``.pth`` (a dict with ``model`` / ``model_ema``).

    Read with ``torch.load(weights_only=True)`` and loaded with strict keys into
    ``create_tokenizer(name, **overrides)``; ``name="auto"`` infers the size from the file. A bare
    state dict (keys ``encoder.*``/``decoder.*``) or an already-loaded dict works too. Returns the
    tokenizer in eval mode. Latent statistics are not in the checkpoint: call
    ``set_latent_stats`` (the release's ``stats.pkl``, first ``token_channels`` entries).
    """
    if isinstance(path, Mapping):
        ckpt, where = path, "the given dict"
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no checkpoint at {str(p)!r}; the official l-DeTok weights are linked from the "
                                    "README of github.com/Jiawei-Yang/DeTok (Hugging Face); download them first")
        where = str(p)
        try:  # torch.load(weights_only=True); a pickled Python object is refused, never run
            ckpt = safe_torch_load(p)
        except UnsafeFileError:
            raise
        except FileContentError as e:
            raise FileContentError(f"{e}; is it an official l-DeTok .pth file?") from None
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{where} holds a {type(ckpt).__name__}, not a checkpoint dict with 'model'/'model_ema'")
    if any(isinstance(k, str) and k.startswith(("encoder.", "decoder.")) for k in ckpt):
        sd = ckpt  # a bare state dict
    elif which in ckpt:
        sd = ckpt[which]
    else:
        raise ValueError(f"{where} has no entry {which!r}; it has: {', '.join(map(str, list(ckpt)[:10]))} "
                         "(use which='model' or which='model_ema')")
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{where}[{which!r}] is not a state dict of tensors")
    if "encoder.ln_pre.weight" not in sd or "decoder.ln_pre.weight" not in sd:
        raise ValueError(f"{where} does not look like DeTok weights (no encoder./decoder. keys); "
                         f"first keys: {', '.join(list(sd)[:5])}")
    guess = infer_official_config(sd)
    if name == "auto":
        if "name" not in guess:
            raise ValueError(f"could not infer the tokenizer size of {where}; pass name= explicitly")
        name = guess["name"]
        for key in ("img_size", "patch_size", "token_channels"):
            overrides.setdefault(key, guess[key])
    model = create_tokenizer(name, **overrides)
    report = _shape_report(model, sd)
    if report:
        hint = ", ".join(f"{k}={v!r}" for k, v in guess.items())
        raise ValueError(f"{where} does not match {name} ({report}). The file looks like: {hint}")
    model.load_state_dict(sd, strict=True)
    return model.eval()
