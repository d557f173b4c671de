"""Build a model from a saved run: the checkpoint's spec, its weights and its latent statistics.

``from_pretrained(dir)`` accepts a checkpoint directory or a run ``out_dir`` (its newest complete
checkpoint), rebuilds the model through ``create_tokenizer`` / ``create_generator`` from the
``spec`` in ``config.json`` and loads the EMA (or online) weights; notebook 03 saves and reloads one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import CONFIG_FILE, CheckpointError, load_tensors, load_weights, resolve_checkpoint
from .device import pick_device
from .generators import create_generator
from .tokenizer import create_tokenizer

__all__ = ["build_from_spec", "from_pretrained", "load_latent_stats", "LATENT_STATS_FILE"]

#: the per-channel latent statistics a generator run stores next to its checkpoints
LATENT_STATS_FILE = "latent_stats.safetensors"
_BUILDERS = {"tokenizer": create_tokenizer, "generator": create_generator}


def build_from_spec(spec: dict) -> nn.Module:
    """A fresh model from ``{"kind", "name", "kwargs"}`` through the registries."""
    if not isinstance(spec, dict) or "kind" not in spec or "name" not in spec:
        raise CheckpointError(f"cannot rebuild a model from spec {spec!r}; expected keys kind, name, kwargs")
    if spec["kind"] not in _BUILDERS:
        raise CheckpointError(f"unknown model kind {spec['kind']!r}; allowed: {', '.join(_BUILDERS)}")
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"the spec's kwargs must be a JSON object, got {type(kwargs).__name__}")
    try:
        return _BUILDERS[spec["kind"]](spec["name"], **kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot rebuild {spec['kind']} {spec['name']!r} from its checkpoint: {e}") from None


def from_pretrained(directory: str | os.PathLike, which: str = "ema", device: str | torch.device = "cpu",
                    log=None) -> nn.Module:
    """Rebuild a model from ``config.json``'s spec and load its weights; returned in eval mode.

    ``directory``: a checkpoint directory or a run ``out_dir`` (its newest complete checkpoint).
    ``which``: ``"ema"`` (default; falls back to the online weights if no EMA was saved) or ``"model"``.
    """
    if which not in ("ema", "model"):
        raise ValueError(f"which={which!r} is not known; allowed: 'ema', 'model'")
    d = resolve_checkpoint(directory, log=log)
    try:
        config = json.loads((d / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {str(d)!r} has an unreadable {CONFIG_FILE}: {e}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {str(d)!r}: {CONFIG_FILE} is not a JSON object")
    model = build_from_spec(config.get("spec"))
    load_weights(model, d, which=which)
    stats = d / LATENT_STATS_FILE
    if stats.is_file() and hasattr(model, "set_latent_stats"):
        s = load_tensors(stats)
        model.set_latent_stats(s["mean"], s["std"])
    model.checkpoint_dir = str(d)
    return model.to(pick_device(device)).eval()


def load_latent_stats(directory: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) saved with a generator run or checkpoint directory (notebook 05 explains them)."""
    d = Path(directory)
    for p in (d / f"extra_{LATENT_STATS_FILE}", d / LATENT_STATS_FILE):
        if p.is_file():
            s = load_tensors(p)
            return s["mean"], s["std"]
    s = load_tensors(resolve_checkpoint(d) / f"extra_{LATENT_STATS_FILE}")
    return s["mean"], s["std"]
