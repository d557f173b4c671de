"""What denoising training does to a tokenizer, measured: robustness to corrupted latents,
smoothness of the latent grid, and its principal components. One definition each, used by the
widgets, notebooks 04 and 10 and the comparison.

- :func:`corrupt_and_decode`: encode, corrupt the visible latents with interpolative (or
  additive) noise at τ, γ (paper eq. 1) and optional masking, decode.
- :func:`noise_robustness`: the decoder's PSNR on such latents, per τ, with a fixed ε.
- :func:`neighbour_correlation`: how alike neighbouring latent tokens are.
- :func:`latent_pca`: the latent grid on its first three principal components.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .corruption import additive_noise, interpolative_noise, num_kept
from .metrics import psnr

__all__ = ["corrupt_and_decode", "noise_robustness", "robustness_curves", "neighbour_correlation", "latent_pca",
           "pca_rgb", "linear_probe", "latent_probe"]


def _device_of(module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def corrupt_and_decode(tokenizer, images: torch.Tensor, tau: float = 0.0, gamma: float = 3.0,
                       mask_ratio: float = 0.0, noise: torch.Tensor | None = None,
                       mask_noise: torch.Tensor | None = None, use_additive_noise: bool = False,
                       rng: torch.Generator | None = None, cache: dict | None = None, key=None) -> torch.Tensor:
    """Encode (posterior mean, ``mask_ratio`` of the tokens dropped at the encoder input), corrupt
    the visible latents with τ/γ (interpolative unless ``use_additive_noise``), decode; [0, 1].

    ``noise`` (B, N, C) and ``mask_noise`` (B, N) fix ε and the mask order (drawn from ``rng``
    when not given). ``cache``/``key``: reuse encodings across calls (the latent explorer).
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau={tau!r} is out of range; allowed [0, 1]")
    if not 0.0 <= gamma:
        raise ValueError(f"gamma={gamma!r} is out of range; allowed [0, inf)")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio!r} is out of range; allowed [0, 1)")
    tokenizer.eval()
    dev = _device_of(tokenizer)
    x = images.to(dev).float()
    b, n, c = x.shape[0], tokenizer.seq_len, tokenizer.token_channels
    if mask_noise is None and mask_ratio > 0:
        mask_noise = torch.rand(b, n, generator=rng)
    if noise is None:
        noise = torch.randn(b, n, c, generator=rng)
    noise = noise.to(dev)
    mask_noise = mask_noise.to(dev) if mask_noise is not None else None
    ck = None if cache is None else (key, round(float(mask_ratio), 6))
    if ck is not None and ck in cache:
        z, ids_restore = cache[ck]
    else:
        z, ids_restore, _ = tokenizer.encode(x, mask_ratio=float(mask_ratio), mask_noise=mask_noise)
        if cache is not None:
            cache[ck] = (z, ids_restore)
    if ids_restore is not None:  # ε of the visible tokens, in the order the encoder kept them
        ids_keep = torch.argsort(mask_noise, dim=1, stable=True)[:, :num_kept(n, float(mask_ratio))]
        noise = torch.gather(noise, 1, ids_keep[..., None].expand(-1, -1, c))
    if tau > 0:  # (γ = 0 interpolative only shrinks the latent; additive γ = 0 leaves it)
        z = (additive_noise if use_additive_noise else interpolative_noise)(z, float(tau), float(gamma), noise=noise)
    return tokenizer.decode(z, ids_restore).clamp(0, 1)


@torch.no_grad()
def noise_robustness(tokenizer, images: torch.Tensor, taus: Iterable[float] = (0.0, 0.25, 0.5, 0.75),
                     gamma: float = 3.0, mask_ratio: float = 0.0, seed: int = 0, use_additive_noise: bool = False,
                     batch_size: int = 256) -> list[float]:
    """Mean per-image PSNR (dB) of decoding corrupted latents against the clean ``images``, for
    each τ: how well the decoder copes with the imperfect latents a generator produces
    (notebook 04). Every τ uses the same ε and mask order, drawn from ``seed``."""
    b, n, c = images.shape[0], tokenizer.seq_len, tokenizer.token_channels
    out = []
    for tau in taus:
        rng = torch.Generator().manual_seed(seed)
        mask_noise = torch.rand(b, n, generator=rng) if mask_ratio > 0 else None
        noise = torch.randn(b, n, c, generator=rng)
        vals = []
        for i in range(0, b, batch_size):
            chunk = images[i:i + batch_size]
            dec = corrupt_and_decode(tokenizer, chunk, float(tau), gamma, mask_ratio, noise=noise[i:i + batch_size],
                                     mask_noise=None if mask_noise is None else mask_noise[i:i + batch_size],
                                     use_additive_noise=use_additive_noise)
            vals.append(psnr(dec, chunk.to(dec.device), reduction="none").cpu())
        out.append(float(torch.cat(vals).mean()))
    return out


def robustness_curves(tokenizers: dict, images: torch.Tensor, taus=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                      mask_ratios=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), gamma: float = 3.0,
                      seed: int = 0) -> dict:
    """{name: {"tau": [(τ, PSNR)...], "mask": [(m, PSNR)...]}} for each tokenizer (notebook 04)."""
    out = {}
    for name, tok in tokenizers.items():
        out[name] = {
            "tau": list(zip(map(float, taus), noise_robustness(tok, images, taus, gamma=gamma, seed=seed))),
            "mask": [(float(m), noise_robustness(tok, images, (0.0,), gamma=gamma, mask_ratio=float(m), seed=seed)[0])
                     for m in mask_ratios],
        }
    return out


@torch.no_grad()
def neighbour_correlation(tokenizer, images: torch.Tensor) -> float:
    """Mean Pearson correlation of each latent channel between horizontally and vertically
    adjacent tokens (posterior means, each channel standardised over the images): a measure of
    how smooth, and so how predictable, the latent grid is (notebook 04)."""
    z = tokenizer.tokenize(images.to(_device_of(tokenizer))).float()  # (B, C, h, w)
    z = (z - z.mean(dim=(0, 2, 3), keepdim=True)) / z.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    vals = []
    for a, b in ((z[..., :, :-1], z[..., :, 1:]), (z[..., :-1, :], z[..., 1:, :])):
        a = a.transpose(0, 1).reshape(z.shape[1], -1)
        b = b.transpose(0, 1).reshape(z.shape[1], -1)
        a = a - a.mean(1, keepdim=True)
        b = b - b.mean(1, keepdim=True)
        vals.append((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12))
    return float(torch.stack(vals).mean())


@torch.no_grad()
def pca_rgb(maps: torch.Tensor) -> torch.Tensor:
    """Feature maps ``(B, C, h, w)`` on their first 3 principal components, fitted over every position
    of the batch and scaled to [0, 1] per component: ``(B, 3, h, w)``, to show as colours."""
    if maps.ndim != 4 or maps.shape[1] < 3:
        raise ValueError(f"maps has shape {tuple(maps.shape)}; allowed (B, C >= 3, h, w)")
    b, c, h, w = maps.shape
    flat = maps.float().cpu().permute(0, 2, 3, 1).reshape(-1, c)
    flat = flat - flat.mean(0)
    _, _, v = torch.linalg.svd(flat, full_matrices=False)
    proj = flat @ v[:3].T
    lo, hi = proj.amin(0), proj.amax(0)
    proj = (proj - lo) / (hi - lo).clamp_min(1e-8)
    return proj.reshape(b, h, w, 3).permute(0, 3, 1, 2)


@torch.no_grad()
def latent_pca(tokenizer, images: torch.Tensor) -> torch.Tensor:
    """The latent grid (posterior means) as :func:`pca_rgb` colours: (B, 3, h, w). Smooth,
    object-shaped colour fields mean neighbouring tokens carry related codes (notebook 04)."""
    tokenizer.eval()
    z, _, _ = tokenizer.encode(images.to(_device_of(tokenizer)).float())  # (B, N, C)
    return pca_rgb(z.transpose(1, 2).unflatten(2, (tokenizer.grid_size, tokenizer.grid_size)))


@torch.no_grad()
def linear_probe(features_train: torch.Tensor, labels_train: torch.Tensor, features_test: torch.Tensor,
                 labels_test: torch.Tensor, ridge: float = 1e-2) -> float:
    """Accuracy of a ridge-regression classifier (one-hot targets, closed form
    ``W = (XᵀX + λI)⁻¹ XᵀY`` on standardised features with a bias) fitted on ``features_train``
    (B, D) and scored on ``features_test``: how much class information a representation carries
    in linearly readable form (notebook 12 reads latents with it)."""
    if features_train.ndim != 2 or features_test.ndim != 2 or features_train.shape[1] != features_test.shape[1]:
        raise ValueError(f"features are {tuple(features_train.shape)} and {tuple(features_test.shape)}; allowed "
                         "(B, D) and (B', D)")
    if not ridge > 0:
        raise ValueError(f"ridge={ridge!r} is out of range; allowed > 0")
    xtr, xte = features_train.double(), features_test.double()
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    xtr = torch.cat([xtr, torch.ones(len(xtr), 1, dtype=xtr.dtype)], 1)
    xte = torch.cat([xte, torch.ones(len(xte), 1, dtype=xte.dtype)], 1)
    k = int(max(labels_train.max(), labels_test.max())) + 1
    y = torch.nn.functional.one_hot(labels_train.long(), k).double()
    w = torch.linalg.solve(xtr.T @ xtr + ridge * len(xtr) * torch.eye(xtr.shape[1], dtype=xtr.dtype), xtr.T @ y)
    return float(((xte @ w).argmax(1) == labels_test.long()).double().mean())


@torch.no_grad()
def latent_probe(tokenizer, images_train: torch.Tensor, labels_train: torch.Tensor, images_test: torch.Tensor,
                 labels_test: torch.Tensor, batch_size: int = 256) -> float:
    """:func:`linear_probe` on a tokenizer's whole latent grids (posterior means, flattened)."""
    def feats(x):
        return torch.cat([tokenizer.tokenize(c.to(_device_of(tokenizer))).float().flatten(1).cpu()
                          for c in x.split(batch_size)])
    return linear_probe(feats(images_train), labels_train, feats(images_test), labels_test)
