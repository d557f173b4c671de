"""Optimisation: AdamW parameter groups, the learning-rate schedule and the EMA of the weights.

As the official code (``utils/builders.py``, ``create_optimizer_and_scaler``; ``utils/misc.py``,
``adjust_learning_rate``; ``models/ema.py``): no weight decay for 1-D parameters and names
containing ln, bias, embedding, norm, gamma, embed, token or diffloss; linear warm-up then a half
cosine (or a constant lr); an EMA with constant decay that *copies* frozen parameters.
Taught in notebooks/03_train_tokenizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..checkpoint import CheckpointError, model_state, unwrap
from ..config import TrainConfig

__all__ = ["NO_DECAY_KEYS", "param_groups", "no_decay_names", "make_optimizer", "warmup_steps", "lr_at", "EMA"]

NO_DECAY_KEYS = ("ln", "bias", "embedding", "norm", "gamma", "embed", "token", "diffloss")

def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay for params with ndim < 2 or a name containing one of NO_DECAY_KEYS
    (so ``patch_embed``, ``positional_embedding`` and ``mask_token`` get none)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or any(k in name for k in NO_DECAY_KEYS):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def no_decay_names(model: nn.Module) -> list[str]:
    """Names of the trainable parameters that get no weight decay (for tests and notebooks)."""
    return [n for n, p in model.named_parameters()
            if p.requires_grad and (p.ndim < 2 or any(k in n for k in NO_DECAY_KEYS))]


def make_optimizer(model: nn.Module, train_cfg: TrainConfig, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; ``fused`` (default: when every parameter is on CUDA) uses
    the single-kernel implementation, the same update as the default one up to float round-off."""
    groups = param_groups(model, train_cfg.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=train_cfg.effective_lr, betas=(train_cfg.beta1, train_cfg.beta2),
                             weight_decay=train_cfg.weight_decay,
                             **({"fused": True} if fused else {}))


def warmup_steps(train_cfg: TrainConfig) -> int:
    return int(train_cfg.warmup_frac * train_cfg.steps)


def lr_at(step: int, train_cfg: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    Linear warmup ``lr·step/W`` for ``step < W = int(warmup_frac·steps)`` (step 0 → 0, as the
    reference's per-iteration schedule), then ``cosine``: ``min_lr + (lr − min_lr)·½(1 + cos(π·t))``
    with ``t = (step − W)/(steps − W)``, or ``constant``: ``lr``.
    """
    base, total, w = train_cfg.effective_lr, train_cfg.steps, warmup_steps(train_cfg)
    if step < w:
        return base * step / w
    if train_cfg.lr_schedule == "constant":
        return base
    t = (step - w) / max(1, total - w)
    return train_cfg.min_lr + (base - train_cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


class EMA:
    """Exponential moving average of a model's state (``models/ema.py``: constant decay, no warmup).

    Trainable parameters: ``e ← decay·e + (1 − decay)·p``. Frozen parameters and buffers are
    copied from the live model (so in decoder-only fine-tuning the EMA encoder equals the online
    encoder, as in the official fine-tune). ``state_dict()`` has the model's key names.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay={decay!r} is out of range; allowed [0, 1]")
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model_state(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        m = unwrap(model)
        params = dict(m.named_parameters())
        avg_s, avg_p = [], []
        for k, v in m.state_dict().items():
            s = self.shadow[k]
            p = params.get(k)
            if p is not None and p.requires_grad and s.is_floating_point():
                avg_s.append(s)
                avg_p.append(p.detach())
            else:
                s.copy_(v)
        if avg_s:  # the same two ops per tensor as s.mul_(d).add_(p, alpha=1-d), in a few kernels
            torch._foreach_mul_(avg_s, self.decay)
            torch._foreach_add_(avg_s, avg_p, alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(sd)
        if missing:
            raise CheckpointError(f"EMA state is missing {sorted(missing)[:3]}")
        for k in self.shadow:
            self.shadow[k].copy_(sd[k])

    def copy_to(self, model: nn.Module) -> nn.Module:
        unwrap(model).load_state_dict(self.shadow)
        return model
