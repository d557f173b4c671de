"""Training: one loop for tokenizers and generators, their recipes, and what scales them up.

- ``loop.py``: the optimizer step, logging, evaluation and checkpoints, resume (:func:`fit`);
- ``optim.py``: AdamW groups, the lr schedule, the EMA;
- ``batches.py``: reproducible data order, flips and RNG state (exact resume);
- ``tokenizer.py`` / ``generator.py``: the two recipes (:func:`train_tokenizer`, :func:`train_generator`);
- ``distributed.py``, ``accel.py``, ``streaming.py``: torchrun/DDP, compilation and FLOPs, loaders.
"""

from .batches import ImageSource, IndexStream, isolated_rng, rng_state, set_rng_state, step_rng
from .generator import channel_stats, compute_latent_stats, encode_moments, tokenizer_fingerprint, train_generator
from .loop import RUN_MARKER, NonFiniteLossError, OutDirError, TrainResult
from .optim import EMA, lr_at, make_optimizer, no_decay_names, param_groups
from .tokenizer import build_tokenizer, freeze_encoder, train_tokenizer

__all__ = [
    "TrainResult", "NonFiniteLossError", "OutDirError", "RUN_MARKER", "train_tokenizer", "train_generator",
    "build_tokenizer", "freeze_encoder",
    "lr_at", "EMA", "param_groups", "no_decay_names", "make_optimizer", "compute_latent_stats", "channel_stats",
    "encode_moments", "tokenizer_fingerprint", "IndexStream", "ImageSource", "rng_state", "set_rng_state",
    "isolated_rng", "step_rng",
]
