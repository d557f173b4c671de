"""Tokenizer losses: reconstruction, KL, perceptual (LPIPS-VGG, ConvNeXt logits) and a PatchGAN.

Everything follows the official ``utils/losses.py`` (``ReconstructionLoss``) with the values in
effect there, not the CLI's dead defaults (``utils/builders.py`` never passes the GAN weight):

    L_G = rec(x̂, x) + w_p · perceptual(x̂, x) + w_kl · KL + w_gan · d(step) · (−mean D(x̂))
    L_D = d(step) · ½ (mean ReLU(1 − D(x)) + mean ReLU(1 + D(x̂)))            (hinge)

with images in **[0, 1]** (the reconstruction is not clamped), d(step) = 1 once
``step >= gan_start_step``, and no adaptive GAN weight. Every term can be switched off with a
zero weight; the ``tiny`` preset uses reconstruction + KL only, so it needs no downloaded weights.

Perceptual networks are never downloaded implicitly: the LPIPS linear heads ship inside the
``lpips`` wheel, the VGG16 / ConvNeXt-S backbones are found by ``ldetok_lite.assets`` (the
torchvision cache or an explicit path), or a clear error says how to get them.
``lpips-random`` (a random VGG trunk) exists for offline tests only.
Taught in ``notebooks/03_train_tokenizer.ipynb``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _compat
from .assets import MissingWeightsError, resolve
from .io import load_state_dict_file

PERCEPTUAL_NETS = ("lpips-vgg", "lpips-convnext", "lpips-random")
RECON_LOSSES = ("mse", "l1", "l2+l1")


# ----------------------------------------------------------------------------------------------
# reconstruction and KL
# ----------------------------------------------------------------------------------------------


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Pixel loss in [0, 1] space, mean over every pixel (official ``ReconstructionLoss``).

    ``kind``: ``mse`` (the paper), ``l1``, or ``l2+l1`` (their sum).
    """
    if kind not in RECON_LOSSES:
        raise ValueError(f"recon_loss={kind!r} is not known; allowed: {', '.join(RECON_LOSSES)}")
    if recon.shape != target.shape:
        raise ValueError(f"recon shape {tuple(recon.shape)} does not match target shape {tuple(target.shape)}")
    recon, target = recon.float(), target.float()
    if kind == "mse":
        return F.mse_loss(recon, target)
    if kind == "l1":
        return F.l1_loss(recon, target)
    return F.mse_loss(recon, target) + F.l1_loss(recon, target)


def kl_loss(kl: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-sample KL (Σ over tokens × channels; official
    ``DiagonalGaussianDistribution.kl`` and ``ReconstructionLoss``)."""
    return kl.float().mean()


# ----------------------------------------------------------------------------------------------
# perceptual: LPIPS-VGG16 and ConvNeXt-S logits
# ----------------------------------------------------------------------------------------------


def _weights(name: str, path) -> Path:
    """The backbone file of asset ``name`` (``ldetok_lite.assets``), with the offline alternatives."""
    try:
        return resolve(name, path)
    except MissingWeightsError as e:
        raise MissingWeightsError(f"{e} Or switch the term off (perceptual_weight=0), or use "
                                  "perceptual_net='lpips-random' for offline tests only (a random backbone is not "
                                  "a perceptual metric).") from None


def build_lpips(net: str = "lpips-vgg", vgg_path: str | os.PathLike | None = None) -> nn.Module:
    """The ``lpips`` package's LPIPS-VGG16 (v0.1) without any implicit download, frozen, in eval mode.

    The linear heads come from the wheel (``lpips/weights/v0.1/vgg.pth``). The VGG16 trunk comes
    from ``vgg_path`` or the torchvision cache; ``net="lpips-random"`` keeps a random trunk.
    """
    import lpips  # noqa: PLC0415 (heavy import, only when asked)

    if net not in PERCEPTUAL_NETS:
        raise ValueError(f"perceptual_net={net!r} is not known; allowed: {', '.join(PERCEPTUAL_NETS)}")
    random_trunk = net == "lpips-random"
    vgg_file = None
    if not random_trunk:
        vgg_file = _weights("vgg16", vgg_path)
    # pnet_rand=True: never lets torchvision download; pretrained=False: we load the heads ourselves.
    with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" from inside lpips
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)
    heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    model.load_state_dict(load_state_dict_file(heads), strict=False)
    if vgg_file is not None:
        state = load_state_dict_file(vgg_file)
        # torchvision names features.{i}.*; lpips keeps the same module index inside slice1..5.
        mapped = {}
        for k in range(1, 6):
            part = getattr(model.net, f"slice{k}")
            for name, _ in part.named_parameters():
                mapped[f"net.slice{k}.{name}"] = state[f"features.{name}"]
        missing = model.load_state_dict(mapped, strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"unexpected VGG keys: {missing.unexpected_keys[:3]}")
    model.eval().requires_grad_(False)
    return model


class ConvNeXtLogits(nn.Module):
    """MSE between ConvNeXt-S ImageNet logits of two [0, 1] images resized to 224 (official ``utils/losses.py``)."""

    def __init__(self, weights_path: str | os.PathLike | None = None):
        super().__init__()
        import torchvision

        path = _weights("convnext_small", weights_path)
        self.net = torchvision.models.convnext_small(weights=None)
        self.net.load_state_dict(load_state_dict_file(path))
        self.net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def _logits(self, x):
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std)

    def forward(self, recon, target):
        self.net.eval()
        return F.mse_loss(self._logits(recon), self._logits(target))


class PerceptualLoss(nn.Module):
    """(1·LPIPS + w_c·ConvNeXt-logit MSE) / (1 + w_c), on [0, 1] images (official ``utils/losses.py``).

    ``net``: ``lpips-vgg`` (LPIPS only), ``lpips-convnext`` (the paper: w_c = 0.1), ``lpips-random``
    (random VGG trunk: offline tests only).
    """

    def __init__(self, net: str = "lpips-vgg", vgg_path=None, convnext_path=None, convnext_weight: float = 0.1):
        super().__init__()
        self.lpips = build_lpips(net, vgg_path)
        self.convnext = ConvNeXtLogits(convnext_path) if net == "lpips-convnext" else None
        self.convnext_weight = float(convnext_weight) if self.convnext is not None else 0.0

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.lpips.eval()  # forced to eval each call, as in the reference
        loss = self.lpips(recon.float(), target.float(), normalize=True).mean()
        if self.convnext is not None:
            loss = (loss + self.convnext_weight * self.convnext(recon.float(), target.float())) / (
                1.0 + self.convnext_weight
            )
        return loss


# ----------------------------------------------------------------------------------------------
# PatchGAN discriminator and hinge loss
# ----------------------------------------------------------------------------------------------


class NLayerDiscriminator(nn.Sequential):
    """PatchGAN (official ``utils/losses.py``): conv k4 s2 ×n_layers, then k4 s1, then a 1-channel k4 s1 head.

    PyTorch default init (no N(0, 0.02)), BatchNorm, LeakyReLU 0.2; it sees [0, 1] images.
    A 256² input gives 30×30 logits, a 32² input 2×2.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3):
        if n_layers < 1:
            raise ValueError(f"n_layers={n_layers} must be >= 1")
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        super().__init__(*layers)


def discriminator_layers_for(img_size: int) -> int:
    """3 layers (the paper) when the image is at least 32 px, fewer for smaller images (output ≥ 1×1)."""
    n = 3
    while n > 1 and img_size // (2**n) < 3:
        n -= 1
    return n


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """½ (mean ReLU(1 − D(x)) + mean ReLU(1 + D(x̂)))."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def generator_gan_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """−mean D(x̂): the generator side of the hinge GAN."""
    return -logits_fake.float().mean()


# ----------------------------------------------------------------------------------------------
# the combined loss module
# ----------------------------------------------------------------------------------------------


class ReconstructionLoss(nn.Module):
    """The tokenizer objective of official ``utils/losses.py``, every term optional.

    ``generator_loss(recon, target, kl, step)`` -> (loss, metrics) and
    ``discriminator_loss(recon, target, step)`` -> (loss, metrics) or None before the start step.
    Only ``self.discriminator`` is trainable (its own optimizer, see ``train.py``).
    """

    def __init__(self, recon_loss: str = "mse", recon_weight: float = 1.0, perceptual_weight: float = 1.0,
                 perceptual_net: str = "lpips-vgg", kl_weight: float = 1e-6, gan_weight: float = 0.1,
                 gan_start_step: int = 0, img_size: int = 32, disc_ndf: int = 64, vgg_path=None,
                 convnext_path=None):
        super().__init__()
        if recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss={recon_loss!r} is not known; allowed: {', '.join(RECON_LOSSES)}")
        for name, v in (("recon_weight", recon_weight), ("perceptual_weight", perceptual_weight),
                        ("kl_weight", kl_weight), ("gan_weight", gan_weight)):
            if not (v >= 0):
                raise ValueError(f"{name}={v!r} is out of range; allowed [0, inf)")
        if gan_start_step < 0:
            raise ValueError(f"gan_start_step={gan_start_step!r} is out of range; allowed [0, inf)")
        self.recon_kind = recon_loss
        self.recon_weight = float(recon_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.kl_weight = float(kl_weight)
        self.gan_weight = float(gan_weight)
        self.gan_start_step = int(gan_start_step)
        self.perceptual = (
            PerceptualLoss(perceptual_net, vgg_path, convnext_path) if self.perceptual_weight > 0 else None
        )
        self.discriminator = (
            NLayerDiscriminator(3, disc_ndf, discriminator_layers_for(img_size)) if self.gan_weight > 0 else None
        )

    @classmethod
    def from_config(cls, tok_cfg, img_size: int = 32, **kw) -> "ReconstructionLoss":
        """Build from a ``TokenizerConfig`` (fields recon_loss, *_weight, perceptual_net, gan_start_step)."""
        return cls(recon_loss=tok_cfg.recon_loss, perceptual_weight=tok_cfg.perceptual_weight,
                   perceptual_net=tok_cfg.perceptual_net, kl_weight=tok_cfg.kl_weight,
                   gan_weight=tok_cfg.gan_weight, gan_start_step=tok_cfg.gan_start_step, img_size=img_size, **kw)

    def gan_active(self, step: int) -> bool:
        """d(step): the GAN terms are on from ``gan_start_step`` (inclusive) when the weight is > 0."""
        return self.discriminator is not None and step >= self.gan_start_step

    def generator_loss(self, recon: torch.Tensor, target: torch.Tensor, kl: torch.Tensor | None, step: int):
        """Weighted sum for the tokenizer update; ``metrics`` holds each unweighted term as a float."""
        with torch.autocast(device_type=recon.device.type, enabled=False):
            recon, target = recon.float(), target.float()
            rec = reconstruction_loss(recon, target, self.recon_kind)
            total = self.recon_weight * rec
            metrics = {"rec_loss": rec.detach()}
            with torch.no_grad():
                metrics["psnr"] = -10.0 * torch.log10(F.mse_loss(recon, target).clamp_min(1e-10))
            if kl is not None and self.kl_weight > 0:
                k = kl_loss(kl)
                total = total + self.kl_weight * k
                metrics["kl_loss"] = k.detach()
            if self.perceptual is not None:
                p = self.perceptual(recon, target)
                total = total + self.perceptual_weight * p
                metrics["perceptual_loss"] = p.detach()
            if self.gan_active(step):
                d = self.discriminator
                was = [p.requires_grad for p in d.parameters()]
                d.requires_grad_(False)  # D frozen for the generator pass (BatchNorm stays in train mode)
                try:
                    g = generator_gan_loss(d(recon))
                finally:
                    for p, r in zip(d.parameters(), was):
                        p.requires_grad_(r)
                total = total + self.gan_weight * g
                metrics["gan_loss"] = g.detach()
            metrics["loss"] = total.detach()
        return total, metrics

    def discriminator_loss(self, recon: torch.Tensor, target: torch.Tensor, step: int):
        """Hinge loss on (target, recon.detach()), or ``None`` before the start step / without a GAN."""
        if not self.gan_active(step):
            return None
        with torch.autocast(device_type=recon.device.type, enabled=False):
            d = self.discriminator
            lr_, lf_ = d(target.detach().float()), d(recon.detach().float())
            loss = hinge_d_loss(lr_, lf_)
            return loss, {"d_loss": loss.detach(), "logits_real": lr_.detach().mean(),
                          "logits_fake": lf_.detach().mean()}


def __getattr__(name: str):  # names that moved to another module in this release (ldetok_lite._compat)
    return _compat.moved_attribute(__name__, name)
