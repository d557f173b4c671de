"""Latent corruptions of l-DeTok as pure functions (paper §3; official ``models/detok.py``,
``Encoder.mae_random_masking`` and ``DeTok.encode``).

Two corruptions make the tokenizer's latent space robust:

- **latent noise** (paper eq. 1): ``z' = (1 - τ)·z + τ·γ·ε`` (interpolative, the paper's choice)
  or ``z' = z + τ·γ·ε`` (additive, the ablation), with τ ~ U[0, 1) per sample and ε ~ N(0, I);
- **random masking** (MAE): a fraction ``m = max(0, U(-0.1, M))`` of the patch tokens is dropped
  at the encoder input, the decoder fills them with [MASK] tokens.

Every function takes tensors and an optional ``rng`` (a ``torch.Generator``) and returns tensors; none reads
``model.training``. The model decides when to call them. Notebook ``01_latent_corruption``
builds each one from scratch and checks it against these.
"""

from __future__ import annotations

import math
import numbers

import torch

from . import _compat

__all__ = [
    "interpolative_noise",
    "additive_noise",
    "sample_tau",
    "sample_mask_ratio",
    "random_mask",
    "random_mask_indices",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _draw(kind: str, shape, rng, device, dtype=torch.float32) -> torch.Tensor:
    """Draw ``rand``/``randn`` on the rng's device (so seeds reproduce), then move."""
    fn = torch.randn if kind == "randn" else torch.rand
    if rng is None:
        return fn(shape, device=device, dtype=dtype)
    if not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator or None, got {type(rng).__name__}")
    out = fn(shape, generator=rng, device=rng.device, dtype=dtype)
    return out.to(device) if device is not None else out


def _check_gamma(gamma) -> float:
    if not _is_number(gamma) or not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma={gamma!r} is out of range; allowed a finite float >= 0")
    return float(gamma)


def _check_latent(z) -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"z must be a floating tensor (the latents), got dtype {z.dtype}")
    return z


def _float32_at_least(z: torch.Tensor) -> torch.Tensor:
    """``z`` in float32 when it is bf16/fp16: τ, ε and the mix are float32 under autocast, as in
    the official code (``torch.rand``/``torch.randn`` default to float32 and promote the latent)."""
    return z.to(torch.promote_types(z.dtype, torch.float32))


def _tau_for(z: torch.Tensor, tau) -> torch.Tensor | float:
    """Validate τ and shape a per-sample τ ``[B]`` to broadcast over the other dims of ``z``."""
    if _is_number(tau):
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau={tau!r} is out of range; allowed [0, 1]")
        return float(tau)
    if not isinstance(tau, torch.Tensor):
        raise TypeError(f"tau must be a float or a tensor of shape [B], got {type(tau).__name__}")
    if (tau.numel() == 0 and z.numel() != 0) or not torch.is_floating_point(tau):
        raise ValueError(f"tau must be a non-empty floating tensor, got dtype {tau.dtype} shape {tuple(tau.shape)}")
    if not tau.is_meta and tau.numel():  # meta tensors carry no values to check
        lo, hi = float(tau.min()), float(tau.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(f"tau has values in [{lo:.4g}, {hi:.4g}], out of range; allowed [0, 1]")
    if tau.ndim == 0:
        return tau.to(device=z.device, dtype=z.dtype)
    if tau.ndim == 1:
        if tau.shape[0] != z.shape[0]:
            raise ValueError(
                f"tau has shape {tuple(tau.shape)} but z has batch size {z.shape[0]}; "
                "allowed a float or a per-sample tensor of shape [B]"
            )
        tau = tau.reshape(-1, *([1] * (z.ndim - 1)))
    try:
        torch.broadcast_shapes(tau.shape, z.shape)
    except RuntimeError:
        raise ValueError(f"tau of shape {tuple(tau.shape)} does not broadcast to z of shape {tuple(z.shape)}") from None
    return tau.to(device=z.device, dtype=z.dtype)


def _noise_for(z: torch.Tensor, noise, rng) -> torch.Tensor:
    if noise is None:
        return _draw("randn", z.shape, rng, z.device, z.dtype)
    if not isinstance(noise, torch.Tensor) or noise.shape != z.shape:
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor shaped like z {tuple(z.shape)}, got {shape}")
    return noise.to(device=z.device, dtype=z.dtype)


# --------------------------------------------------------------------------------------------
# latent noise
# --------------------------------------------------------------------------------------------


@_compat.renamed_keywords(generator="rng")
def interpolative_noise(z, tau, gamma, noise=None, rng=None) -> torch.Tensor:
    """``(1 - τ)·z + τ·γ·ε`` (paper eq. 1; official ``DeTok.encode``).

    ``tau``: a float in [0, 1] or a per-sample tensor of shape ``[B]`` broadcast over the other
    dims of ``z``. ``noise`` is ε (before γ); drawn from ``rng`` when not given. At τ = 1
    the result is pure noise γ·ε whatever ``z`` is: the signal is truly destroyed. A bf16/fp16 ``z``
    (autocast) gives a float32 result: τ, ε and the mix are computed in float32.
    """
    _check_latent(z)
    gamma = _check_gamma(gamma)
    z = _float32_at_least(z)
    tau = _tau_for(z, tau)
    eps = _noise_for(z, noise, rng)
    return (1.0 - tau) * z + tau * gamma * eps


@_compat.renamed_keywords(generator="rng")
def additive_noise(z, tau, gamma, noise=None, rng=None) -> torch.Tensor:
    """``z + τ·γ·ε``: the additive ablation (official ``DeTok.encode``). Arguments as in
    :func:`interpolative_noise`. The signal ``z`` survives at every τ, only diluted."""
    _check_latent(z)
    gamma = _check_gamma(gamma)
    z = _float32_at_least(z)
    tau = _tau_for(z, tau)
    eps = _noise_for(z, noise, rng)
    return z + tau * gamma * eps


@_compat.renamed_keywords(generator="rng")
def sample_tau(batch_size, rng=None, device=None) -> torch.Tensor:
    """τ ~ U[0, 1), one value per sample: a float32 tensor of shape ``[batch_size]``."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is out of range; allowed an int >= 1")
    return _draw("rand", (batch_size,), rng, device)


# --------------------------------------------------------------------------------------------
# random masking
# --------------------------------------------------------------------------------------------


@_compat.renamed_keywords(generator="rng")
def sample_mask_ratio(max_ratio, rng=None) -> float:
    """``m = max(0, U(-0.1, M))`` with ``M = max_ratio`` in [0, 1) (official ``Encoder.mae_random_masking``).

    One value per batch. P(m = 0) = 0.1 / (M + 0.1) (12.5 % at M = 0.7) and m < M always.
    Drawn with torch (from ``rng`` when given), not Python's ``random`` as the official
    code does, so a seeded rng reproduces it.
    """
    if not _is_number(max_ratio) or not 0.0 <= max_ratio < 1.0:
        raise ValueError(f"max_ratio={max_ratio!r} is out of range; allowed [0, 1)")
    u = float(_draw("rand", (), rng, None, torch.float64))
    return max(0.0, -0.1 + u * (float(max_ratio) + 0.1))


def num_kept(num_tokens: int, ratio: float) -> int:
    """``⌈N·(1 - ratio)⌉``, at least 1 (rounded to 9 decimals first, so that e.g.
    ``N = 10, ratio = 0.7`` keeps 3 and not 4 because of float round-off)."""
    return max(1, math.ceil(round(num_tokens * (1.0 - ratio), 9)))


@_compat.renamed_keywords(generator="rng")
def random_mask_indices(batch_size, num_tokens, ratio, noise=None, rng=None, device=None):
    """The index part of :func:`random_mask`: ``(ids_keep (B, L), mask (B, N), ids_restore (B, N))``.

    The tokenizer uses it to gather its tokens *and* their RoPE rows with the same indices.
    """
    if not _is_number(ratio) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio={ratio!r} is out of range; allowed [0, 1)")
    for name, value, lo in (("batch_size", batch_size, 0), ("num_tokens", num_tokens, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise ValueError(f"{name}={value!r} is out of range; allowed an int >= {lo}")
    if noise is None:
        noise = _draw("rand", (batch_size, num_tokens), rng, device)
    elif not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (batch_size, num_tokens):
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor of shape ({batch_size}, {num_tokens}), got {shape}")
    else:
        noise = noise.to(device) if device is not None else noise
    keep = num_kept(num_tokens, ratio)
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(batch_size, num_tokens, device=noise.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # back to the original order; 1 = masked
    return ids_keep, mask, ids_restore


@_compat.renamed_keywords(generator="rng")
def random_mask(tokens, ratio, noise=None, rng=None):
    """MAE random masking: ``(kept (B, L, ...), mask (B, N), ids_restore (B, N))``.

    Per sample, the token order is ``argsort(noise)`` (``noise`` ~ U[0, 1) of shape ``(B, N)``,
    drawn when not given) and the first ``L = ⌈N·(1 - ratio)⌉`` tokens are kept. ``mask`` is 1
    where a token was dropped, in the original order; ``ids_restore`` undoes the shuffle:
    ``cat(kept, dropped)[:, ids_restore] == tokens``. For a fixed ``noise`` the masks are nested
    as ``ratio`` grows. ``ratio`` must be in [0, 1); 0 still shuffles (all tokens kept).
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim < 3:
        got = f"shape {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a tensor of shape (B, N, C) (a batch of token sequences), got {got}; "
                         "for one sequence (N, C) pass tokens[None]")
    b, n = tokens.shape[:2]
    if n == 0:
        raise ValueError(f"tokens has shape {tuple(tokens.shape)} with no tokens; allowed (B, N, ...) with N >= 1")
    ids_keep, mask, ids_restore = random_mask_indices(b, n, ratio, noise, rng, tokens.device)
    index = ids_keep.reshape(*ids_keep.shape, *([1] * (tokens.ndim - 2))).expand(-1, -1, *tokens.shape[2:])
    kept = torch.gather(tokens, 1, index)
    return kept, mask.to(tokens.dtype) if tokens.is_floating_point() else mask, ids_restore
