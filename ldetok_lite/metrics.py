"""Reconstruction metrics: PSNR, SSIM (gaussian window, torch) and LPIPS.

All take float images in [0, 1], shape (B, 3, H, W) (or (3, H, W)), and return one value per
image with ``reduction="none"`` or the batch mean (default). The official code logs
``psnr = −10·log10(MSE)`` of the whole batch (``utils/losses.py``); here the mean of per-image PSNRs is
the default, which is what tables usually report (``reduction="batch"`` gives the reference's).
Distribution metrics (rFID/gFID, IS, KID, precision/recall) live in ``ldetok_lite.evaluation``.
Used in ``notebooks/03_train_tokenizer.ipynb`` and ``04_latent_explorer.ipynb``.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from .losses import build_lpips

REDUCTIONS = ("mean", "none", "batch")


def _check_pair(x: torch.Tensor, y: torch.Tensor, name_x: str = "x", name_y: str = "y"):
    for name, t in ((name_x, x), (name_y, y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {t.dtype}")
        if t.dim() not in (3, 4):
            raise ValueError(f"{name} must have shape (B, C, H, W) or (C, H, W), got {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); allowed at least one image of at "
                             "least one pixel")
        if t.is_meta:
            raise ValueError(f"{name} is on the meta device (no values); allowed a tensor on the CPU or a GPU")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if y.dim() == 3:
        y = y.unsqueeze(0)
    if x.shape != y.shape:
        raise ValueError(f"{name_x} shape {tuple(x.shape)} does not match {name_y} shape {tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError(f"{name_x}/{name_y} contain NaN or Inf values")
    return x.float(), y.float().to(x.device)


def _check_positive(name: str, value) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} is out of range; allowed a finite float > 0")
    return float(value)


def _reduce(v: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return v
    return v.mean()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB: 10·log10(range² / MSE), per image then averaged.

    ``reduction``: ``mean`` (mean of per-image PSNR), ``none`` (B,), ``batch`` (PSNR of the batch MSE,
    as the reference logs it). Identical images give a large finite value (MSE clamped at 1e-10·range²).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not known; allowed: {', '.join(REDUCTIONS)}")
    _check_positive("data_range", data_range)
    x, y = _check_pair(x, y)
    if reduction == "batch":
        mse = F.mse_loss(x, y).clamp_min(1e-10 * data_range**2)
        return 10.0 * torch.log10(data_range**2 / mse)
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-10 * data_range**2)
    return _reduce(10.0 * torch.log10(data_range**2 / mse), reduction)


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    """Normalised 1-D gaussian of ``size`` taps (11 taps at σ 1.5 = scikit-image's truncate 3.5)."""
    r = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, reduction: str = "mean") -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with a gaussian window, per channel then averaged.

    Local statistics use a separable gaussian over the *valid* region (no padding) and population
    (co)variances; this equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)``. Images must be at least ``win_size`` px.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction={reduction!r} is not known; allowed: mean, none")
    if not isinstance(win_size, int) or isinstance(win_size, bool) or win_size % 2 != 1 or win_size < 3:
        raise ValueError(f"win_size={win_size!r} must be an odd integer >= 3")
    for name, value in (("data_range", data_range), ("sigma", sigma), ("k1", k1), ("k2", k2)):
        _check_positive(name, value)
    x, y = _check_pair(x, y)
    b, c, h, w = x.shape
    if h < win_size or w < win_size:
        raise ValueError(f"images of {h}x{w} are smaller than the SSIM window win_size={win_size}")
    g = gaussian_window(win_size, sigma, x.device)
    gh = g.view(1, 1, win_size, 1).expand(c, 1, win_size, 1)
    gw = g.view(1, 1, 1, win_size).expand(c, 1, 1, win_size)

    def blur(t):
        return F.conv2d(F.conv2d(t, gh, groups=c), gw, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return _reduce(s.flatten(1).mean(1), reduction)


_LPIPS_CACHE: dict = {}


def lpips_distance(x: torch.Tensor, y: torch.Tensor, net: str = "lpips-vgg", vgg_path=None,
                   reduction: str = "mean") -> torch.Tensor:
    """LPIPS-VGG distance between [0, 1] images (lower is closer), no gradients.

    Needs the torchvision VGG16 weights (``ldetok_lite.losses.MissingWeightsError`` says how to get
    them); ``net="lpips-random"`` uses a random trunk (tests only: not a perceptual metric).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction={reduction!r} is not known; allowed: mean, none")
    x, y = _check_pair(x, y)
    key = (net, str(vgg_path), str(x.device))
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE[key] = build_lpips(net, vgg_path).to(x.device)
    model = _LPIPS_CACHE[key]
    with torch.no_grad():
        d = model(x, y, normalize=True).flatten()
    return _reduce(d, reduction)


@torch.no_grad()
def reconstruction_metrics(x: torch.Tensor, recon: torch.Tensor, lpips_net: str | None = None) -> dict:
    """{"psnr", "ssim"(, "lpips")} as floats for a batch of [0, 1] images and their reconstructions."""
    out = {"psnr": float(psnr(recon.clamp(0, 1), x)), "ssim": float(ssim(recon.clamp(0, 1), x))}
    if lpips_net:
        out["lpips"] = float(lpips_distance(recon.clamp(0, 1), x, net=lpips_net))
    return out
