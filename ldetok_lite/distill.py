"""Semantic distillation, VA-VAE style: align a tokenizer's latents with a frozen teacher's features.

The paper contrasts l-DeTok with tokenizers distilled from a vision encoder (VA-VAE, MAETok):
they help diffusion models and hurt autoregressive ones. VA-VAE's "vision foundation alignment"
loss (Yao et al., 2025, *Reconstruction vs. Generation*) has two terms on the latents ``z``
projected to the teacher's width, ``z' = W z``, and the teacher's features ``f`` at the same
``N`` positions:

    L_mcos = 1/N   Σ_i    ReLU(1 − m1 − cos(z'_i, f_i))                        (margin cosine)
    L_mdms = 1/N²  Σ_i,j  ReLU(|cos(z'_i, z'_j) − cos(f_i, f_j)| − m2)         (margin distance matrix)

with margins m1 = 0.5 and m2 = 0.25: pairs already close enough cost nothing. The first aligns
each position with the teacher; the second only asks the latents to share the teacher's
*relational* structure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["vf_alignment_loss", "LatentAligner", "COS_MARGIN", "DISTMAT_MARGIN"]

#: VA-VAE's margins m1 (cosine) and m2 (distance matrix)
COS_MARGIN = 0.5
DISTMAT_MARGIN = 0.25


def _check_margin(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 2.0:
        raise ValueError(f"{name}={value!r} is out of range; allowed a float in [0, 2) (cosines lie in [-1, 1])")
    return float(value)


def vf_alignment_loss(z_proj: torch.Tensor, teacher: torch.Tensor, cos_margin: float = COS_MARGIN,
                      distmat_margin: float = DISTMAT_MARGIN, cos_weight: float = 1.0,
                      distmat_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """``cos_weight · L_mcos + distmat_weight · L_mdms`` (module docstring) and both parts, for
    projected latents ``z_proj`` and teacher features ``teacher``, both ``(B, N, D)``; averaged
    over the batch."""
    for name, t in (("z_proj", z_proj), ("teacher", teacher)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3 or not torch.is_floating_point(t):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} is {got}; allowed a float tensor (B, N, D)")
    if z_proj.shape != teacher.shape:
        raise ValueError(f"z_proj has shape {tuple(z_proj.shape)} but teacher has {tuple(teacher.shape)}; project the "
                         "latents to the teacher's width and bring both to the same positions (LatentAligner)")
    m1, m2 = _check_margin("cos_margin", cos_margin), _check_margin("distmat_margin", distmat_margin)
    teacher = teacher.detach().to(z_proj.dtype)
    mcos = F.relu(1.0 - m1 - F.cosine_similarity(z_proj, teacher, dim=-1)).mean()
    zn, fn = F.normalize(z_proj, dim=-1), F.normalize(teacher, dim=-1)
    mdms = F.relu((zn @ zn.transpose(1, 2) - fn @ fn.transpose(1, 2)).abs() - m2).mean()
    return cos_weight * mcos + distmat_weight * mdms, {"vf_mcos": float(mcos.detach()), "vf_mdms": float(mdms.detach())}


class LatentAligner(nn.Module):
    """The trainable part of the alignment: ``W`` (a linear map from ``token_channels`` to the
    teacher's ``teacher_dim``, VA-VAE's projection). ``forward(z, features)`` takes the latent
    tokens ``(B, h·w, C)`` and the teacher's feature map ``(B, D, H, W)`` (resized to ``h×w``
    by area averaging when it differs) and returns :func:`vf_alignment_loss`."""

    def __init__(self, token_channels: int, teacher_dim: int, cos_margin: float = COS_MARGIN,
                 distmat_margin: float = DISTMAT_MARGIN, cos_weight: float = 1.0, distmat_weight: float = 1.0):
        super().__init__()
        for name, v in (("token_channels", token_channels), ("teacher_dim", teacher_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r} is out of range; allowed an int >= 1")
        self.proj = nn.Linear(token_channels, teacher_dim)
        self.margins = (_check_margin("cos_margin", cos_margin), _check_margin("distmat_margin", distmat_margin))
        self.weights = (float(cos_weight), float(distmat_weight))

    def forward(self, z: torch.Tensor, features: torch.Tensor, grid: int | None = None,
                ids_keep: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """``grid``: the latent grid's side (default: ``z`` holds the whole square grid);
        ``ids_keep`` (B, L): the grid positions of ``z``'s tokens when the encoder dropped some."""
        if features.ndim != 4 or features.shape[1] != self.proj.out_features:
            raise ValueError(f"features has shape {tuple(features.shape)}; allowed (B, {self.proj.out_features}, H, W)")
        grid = grid or round(z.shape[1] ** 0.5)
        if ids_keep is None and grid * grid != z.shape[1]:
            raise ValueError(f"z has {z.shape[1]} tokens; allowed a square grid of latent tokens (B, h·w, C)")
        if features.shape[-2:] != (grid, grid):
            features = F.adaptive_avg_pool2d(features, grid)
        teacher = features.flatten(2).transpose(1, 2)
        if ids_keep is not None:
            teacher = torch.gather(teacher, 1, ids_keep[..., None].expand(-1, -1, teacher.shape[-1]))
        return vf_alignment_loss(self.proj(z), teacher, *self.margins, *self.weights)
