"""Device choice, mixed precision and seeding.

One rule everywhere in the kit: the library never calls ``.cuda()``. Tensors are created on
the device of their inputs, and a run picks its device once with :func:`pick_device`.
bf16 autocast is used on CUDA only; on the CPU we stay in float32 (bf16 is slower there).
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def pick_device(prefer: str | torch.device | None = "auto") -> torch.device:
    """Return the device to run on: CUDA, then Apple MPS, then the CPU.

    ``prefer`` may name one explicitly (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); asking
    for a device that is not available raises ``ValueError`` instead of failing later.
    """
    if isinstance(prefer, torch.device):
        prefer = str(prefer)
    if prefer in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(prefer, str):
        raise TypeError(f"device must be a string or torch.device, got {type(prefer).__name__}")
    kind = prefer.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"device={prefer!r} is not known; use one of {', '.join(DEVICE_CHOICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={prefer!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device={prefer!r} was asked for but MPS is not available here; use 'auto' or 'cpu'")
    return torch.device(prefer)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None means plain float32).

    ``auto`` is bf16 on CUDA and float32 elsewhere; ``bf16`` forces bf16; ``fp32`` disables it.
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision={precision!r} is not known; use 'auto', 'bf16' or 'fp32'")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.device(device).type == "cuda" else None


def autocast(device: torch.device | str, precision: str = "auto"):
    """A context manager: bf16 autocast on CUDA (or when forced), a no-op otherwise."""
    device = torch.device(device)
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed Python, NumPy and torch (all devices). Multi-process runs use ``seed + rank``.

    Returns the seed actually used.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    s = seed + int(rank)
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)
    os.environ.setdefault("PYTHONHASHSEED", str(s))
    return s


def enable_tf32() -> None:
    """Allow TF32 matmuls and convolutions on Ampere+ GPUs (no effect on the CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def describe_device(device: torch.device | None = None) -> str:
    """One line naming the device, for notebook headers and ``ldetok-lite doctor``."""
    device = pick_device() if device is None else torch.device(device)
    if device.type == "cuda":
        idx = device.index or 0
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)}, {torch.cuda.device_count()} visible)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"
