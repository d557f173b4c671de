"""Speed switches and model-FLOPs accounting (used by the training loop and ``bench speed``).

- :func:`compile_blocks`: *regional* ``torch.compile`` of every transformer block (each child of
  an ``nn.ModuleList``). Compiling the whole model would specialise on the tokenizer's random
  mask ratio (a Python float, a different token count every batch) and recompile until the cache
  limit; a block only sees tensors, whose changing length becomes one dynamic shape. Parameter
  names (checkpoints) are unchanged.
- :func:`fast_cuda`: TF32 matmuls/convolutions and cuDNN autotuning.
- FLOPs: :func:`count_flops` runs a step under ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls, convolutions and attention, forward and backward; the CPU attention kernels are
  added here since torch only registers the GPU ones). :func:`tokenizer_train_flops` gives the
  *expected* FLOPs of one l-DeTok training step, exact over the random mask ratio
  ``m = max(0, U(-0.1, M))``: FLOPs are a quadratic in the number of kept tokens (linear layers +
  attention), so three counted points fix it and the expectation is an average over ``m``.
- :data:`PEAK_FLOPS`: dense bf16 peak per GPU model, for MFU = achieved model FLOP/s / peak.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils import flop_counter as fc

from ..corruption import num_kept
from ..device import enable_tf32

#: dense bf16 tensor-core peak FLOP/s by GPU name fragment (first match wins; from vendor sheets).
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4e12), ("H200", 989.4e12), ("H100", 989.4e12), ("H800", 989.4e12), ("B200", 2250e12),
    ("B100", 1750e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("A6000", 155e12),
    ("4090", 165e12), ("3090", 71e12), ("V100", 125e12),
)


def peak_flops(device: torch.device | str) -> float | None:
    """Dense bf16 peak of ``device`` (None for the CPU or an unknown GPU: pass it yourself)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for frag, peak in PEAK_FLOPS:
        if frag in name:
            return peak
    return None


def fast_cuda() -> None:
    """TF32 for fp32 matmuls/convolutions and cuDNN autotuning (the official code sets both)."""
    enable_tf32()
    torch.backends.cudnn.benchmark = True


def compile_blocks(model: nn.Module, **compile_kwargs) -> int:
    """``torch.compile`` every child of every ``nn.ModuleList`` in ``model`` in place (regional
    compilation); returns how many blocks were compiled."""
    n = 0
    for mod in list(model.modules()):
        if isinstance(mod, nn.ModuleList):
            for child in mod:
                if not getattr(child, "_ldetok_compiled", False):
                    child.compile(**compile_kwargs)
                    child._ldetok_compiled = True
                    n += 1
    return n


# ----------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------


def _cpu_attention_formulas() -> dict:
    aten = torch.ops.aten
    out = {}
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None:
        def f(query, key, value, *args, out_shape=None, **kwargs):
            return fc.sdpa_flop_count(query, key, value)

        out[fwd] = f
    if bwd is not None:
        def b(grad_out, query, key, value, *args, out_shape=None, **kwargs):
            return fc.sdpa_backward_flop_count(grad_out, query, key, value)

        out[bwd] = b
    return out


def count_flops(fn, *args, **kwargs) -> int:
    """Total FLOPs (multiply-add = 2) of the matmuls, convolutions and attention ``fn`` runs,
    backward included when ``fn`` calls it. Elementwise work is not counted (the MFU convention)."""
    with fc.FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas()) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def _tokenizer_step(model, x: torch.Tensor, m: float) -> None:
    tau = torch.rand(x.shape[0], device=x.device) if model.gamma > 0 else None
    z, ids, post = model.encode(x, mask_ratio=m, noise_tau=tau, sampling=True)
    recon = model.decode(z, ids)
    loss = (recon.float() - x).pow(2).mean() + 1e-6 * post.kl().float().mean()
    loss.backward()


def tokenizer_flops_curve(model, img_size: int, batch: int = 1, device="cpu", max_ratio: float | None = None):
    """``k -> FLOPs per image`` of one training step with ``k`` kept tokens: the quadratic through
    three counted steps (mask ratios 0, M/2, M), exact because only attention is quadratic in k."""
    M = model.mask_ratio if max_ratio is None else max_ratio
    x = torch.rand(batch, 3, img_size, img_size, device=device)
    was = model.training
    model.train()
    try:
        ratios = (0.0, M / 2, M) if M > 0 else (0.0,)
        ks = [num_kept(model.seq_len, m) for m in ratios]
        fs = [count_flops(_tokenizer_step, model, x, m) / batch for m in ratios]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    pts = sorted(dict(zip(ks, fs)).items())

    def curve(k: float) -> float:  # Lagrange form through the distinct points
        total = 0.0
        for i, (ki, fi) in enumerate(pts):
            li = 1.0
            for j, (kj, _) in enumerate(pts):
                if j != i:
                    li *= (k - kj) / (ki - kj)
            total += fi * li
        return total

    return curve


def tokenizer_train_flops(model, img_size: int, batch: int = 1, mask_ratio: float | None = None,
                          device="cpu", grid: int = 2001) -> float:
    """Expected FLOPs per image of one training step (forward + backward) of an l-DeTok tokenizer.

    With ``M = mask_ratio`` (default ``model.mask_ratio``) the kept token count is
    ``k(m) = ⌈N(1 − m)⌉`` with ``m = max(0, U(−0.1, M))``; :func:`tokenizer_flops_curve` is
    averaged over ``grid`` evenly spaced values of U.
    """
    M = model.mask_ratio if mask_ratio is None else mask_ratio
    curve = tokenizer_flops_curve(model, img_size, batch, device, M)
    if M <= 0:
        return float(curve(model.seq_len))
    us = [-0.1 + (M + 0.1) * (i + 0.5) / grid for i in range(grid)]
    return float(sum(curve(num_kept(model.seq_len, max(0.0, u))) for u in us) / grid)


def mfu(flops_per_image: float, images_per_s: float, peak: float | None) -> float | None:
    """Model-FLOPs utilisation: achieved model FLOP/s over the peak (None without a peak)."""
    if not peak or not math.isfinite(images_per_s):
        return None
    return flops_per_image * images_per_s / peak


__all__ = ["PEAK_FLOPS", "peak_flops", "fast_cuda", "compile_blocks", "count_flops", "tokenizer_flops_curve",
           "tokenizer_train_flops", "mfu"]
