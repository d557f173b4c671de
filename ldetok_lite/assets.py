"""Every external weight or statistics file the kit may use, where it is looked for, and how to get it.

Nothing downloads implicitly. Each asset is found at an explicit path, in an environment
variable, in the kit's cache (``$LDETOK_CACHE``, default ``data/cache``) or in the torch hub cache
(``~/.cache/torch/hub/checkpoints``, where torchvision and torch-fidelity put their downloads).
A missing file raises :class:`MissingWeightsError`, which says where the kit looked and the command
that fetches it on a machine with internet. ``ldetok-lite doctor`` prints :func:`list_assets`.

Weights handed to another library are checked first (:func:`verified_weights`): the file must load
with ``torch.load(weights_only=True)``, i.e. hold tensors and plain containers only, and the
library then reads a copy that the kit wrote itself, so a planted file that carries code never runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .io import atomic_write, load_state_dict_file, repo_root, sha256_file

__all__ = ["MissingWeightsError", "Asset", "ASSETS", "cache_dir", "hub_dir", "resolve", "verified_weights",
           "list_assets"]


class MissingWeightsError(FileNotFoundError):
    """A weights or statistics file is not on disk; the message says where we looked and what to do."""


@dataclass(frozen=True)
class Asset:
    """One external file: its usual file name, what it is for, how to get it, where it may be."""

    name: str
    filename: str
    what: str
    how: str
    env: str = ""  # an environment variable that may hold its path
    in_hub: bool = True  # looked for in the torch hub cache
    in_cache: str = ""  # sub-folder of the kit's cache it may be in


_TV = "python -c \"import torchvision; torchvision.models.{}(weights='IMAGENET1K_V1')\""
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
ADM_STATS_URL = ("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
                 "VIRTUAL_imagenet256_labeled.npz")

ASSETS: dict[str, Asset] = {a.name: a for a in (
    Asset("vgg16", "vgg16-397923af.pth", "LPIPS backbone, torchvision VGG16 (perceptual loss)", _TV.format("vgg16")),
    Asset("convnext_small", "convnext_small-0c510722.pth", "ConvNeXt-S logits (the paper's second perceptual term)",
          _TV.format("convnext_small")),
    Asset("inception", "weights-inception-2015-12-05-6726825d.pth",
          "Inception-v3 FID weights, torch-fidelity's (rFID/gFID on real images)",
          f"download {INCEPTION_URL} (torch-fidelity's own release) and pass its path",
          env="LDETOK_INCEPTION_WEIGHTS"),
    Asset("adm_in256_stats", "VIRTUAL_imagenet256_labeled.npz",
          "ADM's ImageNet-256 reference statistics (the paper's gFID reference)",
          f"download {ADM_STATS_URL} (the ADM evaluation suite's reference batch; the official code calls "
          "its mu/sigma adm_in256_stats.npz) into the cache's fid/ folder or pass its path",
          env="LDETOK_ADM_STATS", in_hub=False, in_cache="fid"),
)}


def cache_dir() -> Path:
    """The kit's cache: ``$LDETOK_CACHE``, else ``data/cache`` at the repository root."""
    env = os.environ.get("LDETOK_CACHE")
    return Path(env) if env else repo_root() / "data" / "cache"


def hub_dir() -> Path:
    """torch's hub checkpoint folder, where torchvision and torch-fidelity keep their downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _candidates(asset: Asset, path) -> list[Path]:
    if path:
        return [Path(path).expanduser()]
    out = []
    if asset.env and os.environ.get(asset.env):
        out.append(Path(os.environ[asset.env]).expanduser())
    if asset.in_cache:
        out.append(cache_dir() / asset.in_cache / asset.filename)
        if asset.name == "adm_in256_stats":  # the official code's name for the same statistics
            out.append(cache_dir() / asset.in_cache / "adm_in256_stats.npz")
    if asset.in_hub:
        out.append(hub_dir() / asset.filename)
    return out


def resolve(name: str, path: str | os.PathLike | None = None) -> Path:
    """The file of asset ``name``: ``path`` when given (it must exist), else the first one found
    in the asset's environment variable, the kit's cache or the torch hub cache."""
    if name not in ASSETS:
        raise ValueError(f"asset {name!r} is not known; allowed: {', '.join(ASSETS)}")
    asset = ASSETS[name]
    candidates = _candidates(asset, path)
    for c in candidates:
        if c.is_file():
            return c
    looked = ", ".join(repr(str(c)) for c in candidates)
    given = "the path given" if path else "the usual places"
    raise MissingWeightsError(
        f"{asset.what}: not found at {given} ({looked}). This kit never downloads implicitly. "
        f"With internet: {asset.how}" + (f", or set {asset.env}" if asset.env else "") + ".")


def verified_weights(name: str, path: str | os.PathLike | None = None) -> Path:
    """``resolve(name, path)``, checked to hold tensors only (``weights_only=True``), then copied
    into ``<cache>/verified/`` as a file the kit wrote itself; returns the copy's path. Give that
    path to libraries that unpickle their weights without ``weights_only``."""
    src = resolve(name, path)
    state = load_state_dict_file(src)  # UnsafeFileError when it carries code
    digest = sha256_file(src)
    out = cache_dir() / "verified" / f"{Path(src).stem}-{digest[:16]}.pth"
    if not out.is_file():
        atomic_write(out, lambda f: torch.save(state, f))
    return out


def list_assets() -> list[tuple[str, bool, str]]:
    """(what, present, path or how to get it) for every asset, for ``ldetok-lite doctor``."""
    rows = []
    for a in ASSETS.values():
        try:
            rows.append((a.what, True, str(resolve(a.name))))
        except MissingWeightsError:
            rows.append((a.what, False, a.how + (f" (or set {a.env})" if a.env else "")))
    try:
        import lpips

        heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
        rows.append(("LPIPS linear layers (ship with the lpips package)", heads.is_file(), str(heads)))
    except ImportError:
        rows.append(("LPIPS linear layers", False, "pip install lpips"))
    return rows
