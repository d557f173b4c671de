"""ldetok_lite: a teaching and exploration kit for l-DeTok (Latent Denoising Makes Good Visual Tokenizers).

Public names are imported lazily, so ``import ldetok_lite`` is fast and a notebook only pays for
what it uses::

    from ldetok_lite import create_tokenizer, interpolative_noise, load_preset
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    # config and device
    "load_preset": "config", "Preset": "config", "DataConfig": "config", "TokenizerConfig": "config",
    "TrainConfig": "config", "GeneratorConfig": "config", "EvalConfig": "config", "ConfigError": "config",
    "pick_device": "device", "seed_everything": "device", "autocast": "device",
    # data
    "ShapesDataset": "data", "SHAPES_CLASSES": "data", "sample_photos": "data", "make_dataset": "data",
    "make_loader": "data",
    # corruption (notebooks/01)
    "interpolative_noise": "corruption", "additive_noise": "corruption", "sample_tau": "corruption",
    "sample_mask_ratio": "corruption", "random_mask": "corruption",
    # tokenizer (notebooks/02)
    "create_tokenizer": "tokenizer", "load_official_checkpoint": "tokenizer", "DeTok": "tokenizer",
    # training and checkpoints (notebooks/03)
    "train_tokenizer": "train", "train_generator": "train", "get_tokenizer": "artifacts",
    "get_generator": "artifacts", "from_pretrained": "checkpoint", "save_pretrained": "checkpoint",
    "psnr": "metrics", "ssim": "metrics",
    # generators (notebooks/05-09)
    "create_generator": "generators", "decode_latents": "generators", "list_generators": "generators",
    # viz and notebooks
    "image_grid": "viz", "setup": "notebook",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ldetok_lite' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
