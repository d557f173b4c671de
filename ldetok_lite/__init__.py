"""ldetok_lite: a teaching and exploration kit for l-DeTok (Latent Denoising Makes Good Visual Tokenizers).

Public names are imported lazily, so ``import ldetok_lite`` is fast and a notebook only pays for
what it uses::

    from ldetok_lite import create_tokenizer, interpolative_noise, load_preset

The layout (README, "The library"): the teaching core flat in the order the notebooks teach it
(``config``, ``presets``, ``corruption``, ``tokenizer``, ``losses``, ``generators``, ...), and one
package per wing: ``training``, ``evaluation``, ``experiments``, ``cli``.
"""

from __future__ import annotations

import importlib

from . import _compat

__version__ = "0.2.0"

_PUBLIC = {
    # configs, presets and device
    "Preset": "config", "DataConfig": "config", "TokenizerConfig": "config", "TrainConfig": "config",
    "GeneratorConfig": "config", "EvalConfig": "config", "ConfigError": "config", "load_preset": "presets",
    "pick_device": "device", "seed_everything": "device", "autocast": "device",
    # data
    "ShapesDataset": "data", "SHAPES_CLASSES": "data", "sample_photos": "data", "make_dataset": "data",
    "make_loader": "data",
    # corruption (notebooks/01)
    "interpolative_noise": "corruption", "additive_noise": "corruption", "sample_tau": "corruption",
    "sample_mask_ratio": "corruption", "random_mask": "corruption",
    # tokenizer (notebooks/02)
    "create_tokenizer": "tokenizer", "DeTok": "tokenizer", "load_official_checkpoint": "convert",
    # training, checkpoints and the model cache (notebooks/03)
    "train_tokenizer": "training", "train_generator": "training", "get_tokenizer": "experiments.cache",
    "get_generator": "experiments.cache", "from_pretrained": "pretrained", "save_pretrained": "checkpoint",
    "psnr": "metrics", "ssim": "metrics", "load_reference": "experiments.reference",
    # generators (notebooks/05-09)
    "create_generator": "generators", "decode_latents": "generators", "list_generators": "generators",
    # evaluation, figures and notebooks
    "compute_metrics": "evaluation", "class_accuracy": "evaluation", "image_grid": "viz", "setup": "notebook",
}

__all__ = sorted(_PUBLIC) + ["__version__"]
_compat.install()


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ldetok_lite' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
