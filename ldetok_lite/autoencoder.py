"""What every tokenizer of the kit shares: input checks, the latent Gaussian, the training forward
with latent denoising, latent normalisation and the inference API (``tokenize`` / ``detokenize`` /
``reconstruct``). The ViT tokenizer (``tokenizer.DeTok``, notebook 02) and the convolutional one
(``conv_tokenizer.ConvTok``) implement ``encode`` / ``decode`` on top of it, so the
trainer, the losses, the generators and the widgets take either.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from . import _compat
from .corruption import _check_gamma, _tau_for, additive_noise, interpolative_noise, sample_mask_ratio, sample_tau
from .distill import LatentAligner

__all__ = ["LatentAutoencoder", "DiagonalGaussian", "IMAGE_RANGE_SLACK"]

#: allowed image values: [0, 1] with room for resampling overshoot; 0..255 and [-1, 1] images fall outside
IMAGE_RANGE_SLACK = (-0.5, 1.5)


class DiagonalGaussian:
    """``N(mean, exp(logvar))`` per token and channel, from moments ``(B, L, 2C)``; ``logvar`` is
    clamped to [-30, 20] as in the official code. ``kl()`` is summed over tokens and channels, one
    value per sample (covering the visible tokens only when masking)."""

    def __init__(self, moments: torch.Tensor):
        self.moments = moments
        self.mean, logvar = moments.chunk(2, dim=-1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, rng: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std·ε`` (reparameterised; ε drawn from ``rng`` when given), in float32 (or wider)
        whatever the moments' dtype: under bf16 autocast the official ``DiagonalGaussianDistribution.sample``
        runs with autocast off and a float32 ε."""
        dtype = torch.promote_types(self.mean.dtype, torch.float32)
        if rng is None:
            eps = torch.randn(self.mean.shape, device=self.mean.device, dtype=dtype)
        else:
            eps = torch.randn(self.mean.shape, generator=rng, device=rng.device, dtype=dtype).to(self.mean.device)
        return self.mean.to(dtype) + self.std.to(dtype) * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL to N(0, I): ``0.5·Σ(μ² + σ² - 1 - logvar)``, shape ``(B,)``, in float32."""
        mean, logvar = self.mean.float(), self.logvar.float()
        per = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
        return per.flatten(1).sum(dim=1)


def _as_stats(value, channels: int, name: str) -> torch.Tensor:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        t = torch.full((channels,), float(value))
    else:
        try:
            t = torch.as_tensor(value, dtype=torch.float32).detach().flatten().cpu()
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a float or a vector of {channels} floats, "
                            f"got {type(value).__name__}") from None
        if t.numel() == 1:
            t = t.expand(channels).clone()
        if t.numel() != channels:
            raise ValueError(f"{name} has {t.numel()} values; allowed 1 or token_channels={channels}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


class LatentAutoencoder(nn.Module):
    """The tokenizer interface. A subclass sets ``img_size``, ``patch_size`` (pixels per latent
    position), ``grid_size``, ``seq_len``, ``token_channels``, ``gamma``, ``mask_ratio``,
    ``use_additive_noise`` and ``scale_factor``, calls :meth:`_init_latent_stats`, and implements:

    - ``encode(x, mask_ratio, noise_tau, sampling, gamma, rng, *, mask_noise, noise)`` →
      ``(z (B, L, C) visible latent tokens, ids_restore or None, DiagonalGaussian)``;
    - ``decode(z, ids_restore=None)`` → images in [0, 1]-space, unclamped;
    - ``reference_weight()``: a parameter whose device and dtype the inputs must match.

    ``DECODER_PREFIXES``: the parameter names a decoder-only fine-tune trains (all others freeze).
    """

    DECODER_PREFIXES: tuple[str, ...] = ("decoder.",)

    def _init_latent_stats(self, channels: int) -> None:
        # latent channel statistics for the generators (non-persistent, as in the official code)
        self.register_buffer("latent_mean", torch.zeros(channels), persistent=False)
        self.register_buffer("latent_std", torch.ones(channels), persistent=False)

    def reference_weight(self) -> torch.Tensor:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    # ---------------------------------------------------------------- input checks

    def _check_images(self, x, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a float tensor (B, 3, H, W) in [0, 1], got {type(x).__name__}")
        if not torch.is_floating_point(x):
            raise ValueError(f"{name} has dtype {x.dtype}; allowed a float tensor in [0, 1] "
                             "(for uint8 images use x.float() / 255)")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{name} has shape {tuple(x.shape)}; allowed (B, 3, H, W) RGB images")
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size or h != self.img_size or w != self.img_size:
            fix = f"build the tokenizer with img_size={h}" if h == w and not h % self.patch_size else "crop them"
            size = self.img_size
            raise ValueError(f"{name} has size {h}x{w}; allowed {size}x{size} (img_size={size}, "
                             f"patch_size={self.patch_size}): resize the images or {fix}")
        x = self._to_model(x, name)
        lo, hi = (float(v) for v in torch.aminmax(x.detach())) if x.numel() and not x.is_meta else (0.0, 1.0)
        if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN propagates: one reduction checks both
            raise ValueError(f"{name} contains NaN or Inf values; allowed finite images in [0, 1]")
        if lo < IMAGE_RANGE_SLACK[0] or hi > IMAGE_RANGE_SLACK[1]:
            raise ValueError(f"{name} has values in [{lo:.3g}, {hi:.3g}]; allowed images in [0, 1] "
                             "(0..255 images: divide by 255; [-1, 1] images: (x + 1) / 2)")
        return x

    def _to_model(self, t: torch.Tensor, name: str) -> torch.Tensor:
        """``t`` on the model's device, cast to its parameter dtype unless autocast (which casts) is on."""
        p = self.reference_weight()
        if t.is_meta and not p.is_meta:
            raise ValueError(f"{name} is on the meta device (a tensor without values); allowed a tensor on "
                             f"{p.device}, the tokenizer's device")
        if t.device != p.device:
            raise ValueError(f"{name} is on {t.device} but the tokenizer is on {p.device}; allowed a tensor on "
                             f"{p.device} (move it with .to({str(p.device)!r}) or move the tokenizer)")
        if t.dtype != p.dtype and not torch.is_autocast_enabled(t.device.type):
            t = t.to(p.dtype)
        return t

    def _check_latents(self, z, name: str = "z", channels_first: bool = False) -> torch.Tensor:
        c = self.token_channels
        if not isinstance(z, torch.Tensor) or not torch.is_floating_point(z):
            raise TypeError(f"{name} must be a float tensor, got "
                            f"{z.dtype if isinstance(z, torch.Tensor) else type(z).__name__}")
        if channels_first:
            want = (c, self.grid_size, self.grid_size)
            if z.ndim != 4 or tuple(z.shape[1:]) != want:
                raise ValueError(f"{name} has shape {tuple(z.shape)}; allowed (B, {c}, {self.grid_size}, "
                                 f"{self.grid_size}) normalised latents")
        elif z.ndim != 3 or z.shape[-1] != c:
            raise ValueError(f"{name} has shape {tuple(z.shape)}; allowed (B, L, {c}) latent tokens")
        return self._to_model(z, name)

    def _set_corruption(self, gamma, mask_ratio, use_additive_noise) -> None:
        """Check and keep the training corruption: γ ≥ 0 (paper eq. 1), M in [0, 1), additive or interpolative."""
        if not isinstance(gamma, numbers.Real) or isinstance(gamma, bool) or not 0 <= gamma < math.inf:
            raise ValueError(f"gamma={gamma!r} is out of range; allowed a finite float >= 0")
        self.mask_ratio = self._check_mask_ratio(mask_ratio)
        if not isinstance(use_additive_noise, bool):
            raise ValueError(f"use_additive_noise={use_additive_noise!r} must be a bool")
        self.gamma, self.use_additive_noise = float(gamma), use_additive_noise

    def _check_mask_ratio(self, mask_ratio) -> float:
        if not isinstance(mask_ratio, numbers.Real) or isinstance(mask_ratio, bool) or not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio={mask_ratio!r} is out of range; allowed [0, 1)")
        return float(mask_ratio)

    def _add_noise(self, z, noise_tau, gamma, noise, rng) -> torch.Tensor:
        """Latent denoising's corruption of the (visible) latents (paper eq. 1): interpolative or
        additive with ``gamma`` (default ``self.gamma``; none when γ = 0 or ``noise_tau`` is None)."""
        gamma = self.gamma if gamma is None else _check_gamma(gamma)
        if noise_tau is not None and gamma > 0:
            corrupt = additive_noise if self.use_additive_noise else interpolative_noise
            return corrupt(z, noise_tau, gamma, noise=noise, rng=rng)
        if noise_tau is not None:
            _tau_for(z, noise_tau)  # checked all the same: γ = 0 adds no noise
        return z

    def _check_decoder_input(self, z, ids_restore) -> torch.Tensor:
        """``z`` (B, L, C) checked and on the model; ``ids_restore`` (B, N) int64 when tokens were masked."""
        z = self._check_latents(z)
        if ids_restore is None and z.shape[1] != self.seq_len:
            raise ValueError(f"z has {z.shape[1]} tokens but the decoder needs {self.seq_len} "
                             "(pass ids_restore from encode() when tokens were masked)")
        want = (z.shape[0], self.seq_len)
        if ids_restore is not None and not (isinstance(ids_restore, torch.Tensor) and ids_restore.shape == want
                                            and ids_restore.dtype == torch.long and ids_restore.device == z.device):
            got = (f"{tuple(ids_restore.shape)} {ids_restore.dtype} on {ids_restore.device}"
                   if isinstance(ids_restore, torch.Tensor) else type(ids_restore).__name__)
            raise ValueError(f"ids_restore is {got}; allowed shape {want}, torch.int64, on {z.device} (from encode())")
        return z

    # ---------------------------------------------------------------- training forward

    @_compat.renamed_keywords(generator="rng")
    def forward(self, x, rng: torch.Generator | None = None, align_to: torch.Tensor | None = None):
        """Training forward: ``(recon (B, 3, H, W) in [0,1]-space unclamped, kl (B,))``.

        In train mode: m = max(0, U(-0.1, M)) once per batch, τ ~ U[0, 1) per sample (when
        γ > 0), posterior sample, noise on the visible latents, decoder with [MASK] tokens
        (official ``DeTok.encode`` / ``DeTok.forward``). In eval mode: no mask, no noise, posterior mean.

        ``align_to``: a teacher's feature map ``(B, D, H', W')`` (semantic distillation; needs
        :meth:`attach_aligner`): a third item, ``(alignment loss, its parts)``, of the clean latents
        (the posterior mean, before noise) at the positions the encoder kept.
        """
        if self.training:
            if not isinstance(x, torch.Tensor):
                self._check_images(x)  # a TypeError naming x; encode() checks tensors in full
            m = sample_mask_ratio(self.mask_ratio, rng)
            tau = sample_tau(x.shape[0], rng, x.device) if self.gamma > 0 else None
            z, ids_restore, posterior = self.encode(x, m, tau, sampling=True, rng=rng)
        else:
            z, ids_restore, posterior = self.encode(x)
        out = self.decode(z, ids_restore), posterior.kl()
        if align_to is None:
            return out
        return (*out, self.align(posterior.mean, ids_restore, align_to))

    # ---------------------------------------------------------------- semantic distillation

    def attach_aligner(self, teacher_dim: int) -> None:
        """Add the trainable projection of semantic distillation (``distill.LatentAligner``,
        ``aligner.*`` in the state dict) from the latent channels to a teacher's ``teacher_dim``."""
        self.aligner = LatentAligner(self.token_channels, teacher_dim)

    def align(self, z: torch.Tensor, ids_restore, features: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """VA-VAE's alignment loss of latent tokens ``z`` (B, L, C) with the teacher map ``features``;
        when the encoder dropped tokens (L < N), the teacher's tokens at the kept positions."""
        if getattr(self, "aligner", None) is None:
            raise ValueError("align_to needs the aligner: build the tokenizer with align_dim=<teacher width> "
                             "(create_tokenizer) or call attach_aligner(teacher_dim)")
        ids_keep = None
        if z.shape[1] < self.seq_len:
            if ids_restore is None:
                raise ValueError(f"z has {z.shape[1]} of {self.seq_len} tokens but no ids_restore to place them")
            ids_keep = torch.argsort(ids_restore, dim=1)[:, :z.shape[1]]
        return self.aligner(z, features, grid=self.grid_size, ids_keep=ids_keep)

    # ---------------------------------------------------------------- inference API

    def normalize_z(self, z: torch.Tensor) -> torch.Tensor:
        """``(z - mean)·scale_factor / std`` over the channel (last) dim (official ``DeTok.normalize_z``)."""
        return (z - self.latent_mean) * self.scale_factor / self.latent_std

    def denormalize_z(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std / self.scale_factor + self.latent_mean

    @_compat.renamed_keywords(generator="rng")
    def tokenize(self, x, sampling: bool = False, rng: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] → normalised channels-first latents ``(B, C, h, w)``; no mask, no noise."""
        z, _, _ = self.encode(x, sampling=sampling, rng=rng)
        z = self.normalize_z(z)
        return z.transpose(1, 2).unflatten(2, (self.grid_size, self.grid_size))

    def detokenize(self, z) -> torch.Tensor:
        """Normalised latents ``(B, C, h, w)`` → images in [0, 1] (clamped)."""
        z = self._check_latents(z, channels_first=True)
        z = self.denormalize_z(z.flatten(2).transpose(1, 2))
        return self.decode(z).clamp(0.0, 1.0)

    def reconstruct(self, x) -> torch.Tensor:
        """Encode (posterior mean, no mask, no noise) and decode; images in [0, 1] (clamped)."""
        z, _, _ = self.encode(x)
        return self.decode(z).clamp(0.0, 1.0)

    def set_latent_stats(self, mean, std) -> None:
        """Per-channel (vector of ``token_channels``) or global (float) latent statistics used by
        ``tokenize``/``detokenize``. Unlike the official ``reset_stats``, floats work."""
        c = self.token_channels
        mean_t = _as_stats(mean, c, "mean")
        std_t = _as_stats(std, c, "std")
        if (std_t <= 0).any():
            raise ValueError(f"std must be > 0, got {std_t.tolist()}")
        self.latent_mean = mean_t.to(self.latent_mean.device)
        self.latent_std = std_t.to(self.latent_std.device)

    @property
    def latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean.clone(), self.latent_std.clone()

    def extra_repr(self) -> str:
        return (f"img_size={self.img_size}, patch_size={self.patch_size}, token_channels={self.token_channels}, "
                f"gamma={self.gamma}, mask_ratio={self.mask_ratio}, use_additive_noise={self.use_additive_noise}")
