"""Build a model from a saved run: the checkpoint's spec, its weights and its latent statistics.

``from_pretrained(dir)`` accepts a checkpoint directory or a run ``out_dir`` (its newest complete
checkpoint), rebuilds the model through ``create_tokenizer`` / ``create_generator`` from the
``spec`` in ``config.json`` and loads the EMA (or online) weights; notebook 03 saves and reloads one.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
import torch.nn as nn

from .checkpoint import (
    CheckpointError,
    listed_file,
    load_tensors,
    load_weights,
    manifest_files,
    read_config,
    resolve_checkpoint,
)
from .config import DataConfig
from .device import pick_device
from .generators import create_generator
from .tokenizer import create_tokenizer

__all__ = ["build_from_spec", "from_pretrained", "load_latent_stats", "LATENT_STATS_FILE", "tokenizer_fingerprint",
           "check_tokenizer_of"]

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
    config = read_config(d)
    model = build_from_spec(config.get("spec"))
    load_weights(model, d, which=which)
    if LATENT_STATS_FILE in manifest_files(d) and hasattr(model, "set_latent_stats"):
        s = load_tensors(listed_file(d, LATENT_STATS_FILE))
        model.set_latent_stats(s["mean"], s["std"])
    model.checkpoint_dir = str(d)
    return model.to(pick_device(device)).eval()


def load_latent_stats(directory: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) saved with a generator run or checkpoint directory (notebook 05 explains them); read
    from the verified checkpoint, never from a file its manifest does not list."""
    d = resolve_checkpoint(directory)
    s = load_tensors(listed_file(d, f"extra_{LATENT_STATS_FILE}"))
    return s["mean"], s["std"]


def tokenizer_fingerprint(tokenizer: nn.Module, data_cfg: DataConfig) -> str:
    """16 hex digits naming a tokenizer's weights and the data it encodes (latent caches, and the
    check that a generator is decoded by the tokenizer it was trained on)."""
    h = hashlib.sha256()
    h.update(json.dumps(getattr(tokenizer, "spec", None), sort_keys=True).encode())
    h.update(json.dumps(data_cfg.to_dict(), sort_keys=True).encode())
    for k, v in sorted(tokenizer.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def check_tokenizer_of(generator_dir: str | os.PathLike, tokenizer: nn.Module) -> None:
    """Raise ``ValueError`` unless ``tokenizer`` is the one the generator of ``generator_dir`` was
    trained on (same weights and data settings, by :func:`tokenizer_fingerprint`): a generator's
    latents decoded by another tokenizer give meaningless images and metrics. Runs that stored no
    fingerprint are not checked."""
    configs = read_config(generator_dir).get("configs") or {}
    stored = (configs.get("tokenizer_spec") or {}).get("fingerprint")
    data = configs.get("data")
    if not stored or not isinstance(data, dict):
        return
    if tokenizer_fingerprint(tokenizer, DataConfig.from_dict(data)) != stored:
        trained_on = (configs.get("tokenizer_spec") or {}).get("checkpoint") or "another tokenizer"
        raise ValueError(f"the generator in {str(generator_dir)!r} was trained on the latents of {trained_on}, not "
                         "of this tokenizer (other weights, or its online weights instead of the EMA): its samples "
                         "would decode to meaningless images. Pass the tokenizer it was trained with")
