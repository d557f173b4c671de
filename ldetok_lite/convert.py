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

from .checkpoint import read_official_state_dict, state_dict_mismatch
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


def load_official_checkpoint(path, name: str = "detok_BB", which: str = "model_ema", **overrides) -> DeTok:
    """Load an official l-DeTok release ``.pth`` (a dict with ``model`` / ``model_ema``).

    Read with ``torch.load(weights_only=True)`` and loaded with strict keys into
    ``create_tokenizer(name, **overrides)``; ``name="auto"`` infers the size from the file. A bare
    state dict (keys ``encoder.*``/``decoder.*``) or an already-loaded dict works too. Returns the
    tokenizer in eval mode. Latent statistics are not in the checkpoint: call
    ``set_latent_stats`` (the release's ``stats.pkl``, first ``token_channels`` entries).
    """
    def looks_like(sd: Mapping) -> str | None:
        if "encoder.ln_pre.weight" in sd and "decoder.ln_pre.weight" in sd:
            return None
        return f"does not look like DeTok weights (no encoder./decoder. keys); first keys: {', '.join(list(sd)[:5])}"

    sd, where = read_official_state_dict(path, which, check=looks_like,
                                         hint="the official l-DeTok weights are linked from the README of "
                                              "github.com/Jiawei-Yang/DeTok (Hugging Face); download them first",
                                         what="an official l-DeTok .pth file")
    guess = infer_official_config(sd)
    if name == "auto":
        if "name" not in guess:
            raise ValueError(f"could not infer the tokenizer size of {where}; pass name= explicitly")
        name = guess["name"]
        for key in ("img_size", "patch_size", "token_channels"):
            overrides.setdefault(key, guess[key])
    model = create_tokenizer(name, **overrides)
    report = state_dict_mismatch(model, sd)
    if report:
        hint = ", ".join(f"{k}={v!r}" for k, v in guess.items())
        raise ValueError(f"{where} does not match {name} ({report}). The file looks like: {hint}")
    model.load_state_dict(sd, strict=True)
    return model.eval()
