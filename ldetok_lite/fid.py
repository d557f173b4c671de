"""Distribution metrics: rFID, gFID, IS, KID and precision/recall on top of PyPI ``torch-fidelity``.

Taught in notebooks/10_compare_tokenizers; the reference protocol is DETOK_SPEC §5.

- **Inputs** ("sources"): float tensors in [0, 1] of shape (N, 3, H, W) (uint8 tensors pass as
  they are), folders of PNG/JPEG files, datasets yielding images or ``(image, label)``, or images
  produced on the fly: a callable ``fn(n) -> (n, 3, H, W)`` with ``num_images=``, or an
  :class:`ImageStream` (see :func:`generator_source`, :func:`reconstruction_source`).
  ``input1`` is the generated/reconstructed set, ``input2`` the reference (torch-fidelity's
  precision/recall convention).
- **uint8 conversion rounds**: ``round(x * 255)``. The official code truncates
  (``(x * 255).to(uint8)``, DETOK_SPEC §5), which darkens every image by half a level on average;
  pass ``quantize="truncate"`` to reproduce it.
- **Feature networks** (:func:`get_feature_net`): ``"shapes-cnn"``, a small CNN the kit trains once
  (``ldetok_lite.feature_net``; its names are re-exported here) on the embedded shapes data and
  caches (offline, a minute on a CPU), registered with
  torch-fidelity as ``ldetok-shapes-cnn``; its FID features pool several depths so that it sees
  both blur and pixel noise; and ``"inception"``, torch-fidelity's ``inception-v3-compat`` (the
  paper's numbers), whose weights are found in the torch hub cache or at an explicit path and are
  never downloaded implicitly (:func:`resolve_inception_weights`).
- **Statistics files**: ``.npz`` with ``mu`` / ``sigma`` (the ADM reference format, e.g.
  ``adm_in256_stats.npz``). PyPI torch-fidelity has no ``fid_statistics_file`` argument (that is
  LTH14's fork), so :func:`fid_from_stats` extracts features and calls torch-fidelity's own
  ``fid_features_to_statistics`` / ``fid_statistics_to_metric``; :func:`save_fid_stats` writes such
  files for any image set. Both paths give the same FID (tests/test_fid.py).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity import GenerativeModelBase
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id

from ldetok_lite.feature_net import (  # noqa: F401  (re-exported: the offline network lives in feature_net.py)
    EXTRACTOR_PRESETS,
    SHAPES_EXTRACTOR,
    SHAPES_FEATURES,
    ExtractorSettings,
    MissingWeightsError,
    ShapesCNN,
    ShapesFeatureExtractor,
    default_cache_dir,
    extractor_info,
    extractor_settings,
    get_shapes_extractor,
    load_shapes_extractor,
    save_shapes_extractor,
    train_shapes_extractor,
)

FEATURE_NETS = ("shapes-cnn", "inception")
QUANTIZE = ("round", "truncate")
INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILENAME}"
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")
_TF_KEYS = {
    torch_fidelity.KEY_METRIC_FID: "fid",
    torch_fidelity.KEY_METRIC_ISC_MEAN: "is_mean",
    torch_fidelity.KEY_METRIC_ISC_STD: "is_std",
    torch_fidelity.KEY_METRIC_KID_MEAN: "kid_mean",
    torch_fidelity.KEY_METRIC_KID_STD: "kid_std",
    torch_fidelity.KEY_METRIC_PRECISION: "precision",
    torch_fidelity.KEY_METRIC_RECALL: "recall",
    torch_fidelity.KEY_METRIC_F_SCORE: "f_score",
}


# ============================================================================================
# Inputs: validation, uint8 conversion, sources
# ============================================================================================

def to_uint8(images: torch.Tensor, name: str = "images", quantize: str = "round") -> torch.Tensor:
    """Float images in [0, 1], shape (N, 3, H, W) -> uint8 on the same device.

    Rounds (``round(x * 255)``); the official code truncates (``(x * 255).to(uint8)``), which
    ``quantize="truncate"`` reproduces. Values within half a level outside [0, 1] are clamped;
    anything further out, NaN/Inf, a wrong shape or an integer dtype other than uint8 raises.
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize={quantize!r} is not known; allowed: {', '.join(QUANTIZE)}")
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] < 1 or min(images.shape[2:]) < 1:
        raise ValueError(f"{name} must have shape (N, 3, H, W) with N >= 1, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"{name} must be float in [0, 1] or uint8, got dtype {images.dtype}")
    x = images.detach().float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    tol = 0.5 / 255
    if lo < -tol or hi > 1 + tol:
        raise ValueError(f"{name} values span [{lo:.4g}, {hi:.4g}], out of range; allowed [0, 1] "
                         "(clamp decoder outputs with .clamp(0, 1); uint8 images pass as they are)")
    x = x * 255
    x = x.round() if quantize == "round" else x.floor()
    return x.clamp_(0, 255).to(torch.uint8)


class ImageStream:
    """Images produced on the fly, ``fn(n) -> (n, 3, H, W)`` in [0, 1], ``num_images`` in all.

    Each metric call consumes the stream from the start (``reset()`` is called first; ``fn`` may
    define ``reset`` itself). ``labels`` (optional, (num_images,)) are the classes the images were
    asked for, used for the class accuracy of a conditional generator.
    """

    def __init__(self, fn: Callable[[int], torch.Tensor], num_images: int, labels: torch.Tensor | None = None,
                 name: str = "stream"):
        if not callable(fn):
            raise TypeError(f"fn must be callable (n) -> images, got {type(fn).__name__}")
        _check_count(num_images, "num_images")
        if labels is not None and len(labels) != num_images:
            raise ValueError(f"labels has {len(labels)} entries, expected num_images={num_images}")
        self.fn, self.num_images, self.labels, self.name = fn, num_images, labels, name
        self.produced = 0

    def reset(self) -> None:
        self.produced = 0
        if hasattr(self.fn, "reset"):
            self.fn.reset()

    def next(self, n: int) -> torch.Tensor:
        images = self.fn(n)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] != n:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{self.name}: fn({n}) must return {n} images (n, 3, H, W), got {shape}")
        self.produced += n
        return images


def _check_count(n, name: str, lo: int = 1) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < lo:
        raise ValueError(f"{name}={n!r} must be an int >= {lo}")


class _UInt8Images(Dataset):
    """A uint8 tensor (N, 3, H, W) as the dataset torch-fidelity expects (items are images)."""

    def __init__(self, images: torch.Tensor):
        self.images = images.cpu()

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i]


class _DatasetImages(Dataset):
    """Any dataset yielding an image or ``(image, label)``; items converted to uint8 one by one."""

    def __init__(self, ds: Dataset, n: int, quantize: str):
        self.ds, self.n, self.quantize = ds, n, quantize

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        item = self.ds[i]
        img = item[0] if isinstance(item, (tuple, list)) else item
        return to_uint8(img[None], name=f"dataset item {i}", quantize=self.quantize)[0].cpu()


class _StreamModel(GenerativeModelBase):
    """Adapts an :class:`ImageStream` to torch-fidelity's generative-model input (noise only sets n)."""

    def __init__(self, stream: ImageStream, quantize: str):
        super().__init__()
        self.stream, self.quantize = stream, quantize

    @property
    def z_size(self):
        return 1

    @property
    def z_type(self):
        return "normal"

    @property
    def num_classes(self):
        return 0  # labels are the stream's business (torch-fidelity's conditional path uses np.int)

    def forward(self, noise):
        images = self.stream.next(noise.shape[0])
        return to_uint8(images, name=self.stream.name, quantize=self.quantize).to(noise.device)


def _folder_images(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)


def _prepare(source, name: str, num_images: int | None, quantize: str):
    """A source -> (torch-fidelity input, extra kwargs, number of images)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_dir():
            raise FileNotFoundError(f"{name}: image folder {str(path)!r} does not exist")
        n = len(_folder_images(path))
        if n == 0:
            raise ValueError(f"{name}: folder {str(path)!r} has no images ({', '.join(IMAGE_EXTENSIONS)}; "
                             "sub-folders are not searched)")
        if num_images is not None and num_images != n:
            raise ValueError(f"{name}: num_images={num_images} but folder {str(path)!r} holds {n} images")
        return str(path), {}, n
    if isinstance(source, torch.Tensor):
        images = to_uint8(source, name=name, quantize=quantize)
        if num_images is not None:
            if num_images > images.shape[0]:
                raise ValueError(f"{name}: num_images={num_images} but only {images.shape[0]} images were given")
            images = images[:num_images]
        return _UInt8Images(images), {}, images.shape[0]
    if isinstance(source, ImageStream) or (callable(source) and not isinstance(source, Dataset)):
        if not isinstance(source, ImageStream):
            if num_images is None:
                raise ValueError(f"{name} is a callable (n) -> images; pass num_images= to say how many to draw")
            source = ImageStream(source, num_images, name=name)
        n = source.num_images if num_images is None else num_images
        _check_count(n, "num_images")
        if n > source.num_images:
            raise ValueError(f"{name}: num_images={n} but the stream makes only {source.num_images}")
        source.reset()
        return _StreamModel(source, quantize), {"model_num_samples": n}, n
    if isinstance(source, Dataset):
        total = len(source)
        n = total if num_images is None else num_images
        if n > total:
            raise ValueError(f"{name}: num_images={n} but the dataset holds {total} images")
        if hasattr(source, "images_uint8"):  # the embedded datasets: one fast path, no per-item flips
            return _UInt8Images(source.images_uint8[:n]), {}, n
        return _DatasetImages(source, n, quantize), {}, n
    raise TypeError(f"{name} must be a tensor (N, 3, H, W), an image folder, a Dataset, an ImageStream or a "
                    f"callable (n) -> images; got {type(source).__name__}")


def _tf_inputs(input1, input2, num_images, quantize) -> tuple[dict, list[int]]:
    sizes = [tuple(t.shape[-2:]) for t in (input1, input2) if isinstance(t, torch.Tensor) and t.dim() == 4]
    if len(sizes) == 2 and sizes[0] != sizes[1]:
        raise ValueError(f"input1 images are {sizes[0][0]}x{sizes[0][1]} but input2 images are "
                         f"{sizes[1][0]}x{sizes[1][1]}; allowed: both sets at the same size (resize one of them)")
    kw, counts = {}, []
    for slot, src in ((1, input1), (2, input2)):
        if src is None:
            continue
        tf_input, extra, n = _prepare(src, f"input{slot}", num_images if slot == 1 else None, quantize)
        if n < 2:
            raise ValueError(f"input{slot} has {n} image; FID/KID need at least 2 per set")
        kw[f"input{slot}"] = tf_input
        kw.update({f"input{slot}_{k}": v for k, v in extra.items()})
        counts.append(n)
    return kw, counts


def save_png_folder(images: torch.Tensor, folder: str | Path, start: int = 0, quantize: str = "round") -> list[Path]:
    """Write images ((N, 3, H, W) in [0, 1]) as ``folder/{start+i:06d}.png`` (lossless), as the
    official evaluation does before computing metrics on the folder."""
    from PIL import Image

    u8 = to_uint8(images, quantize=quantize).cpu().permute(0, 2, 3, 1).numpy()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(u8):
        p = folder / f"{start + i:06d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths




# ============================================================================================
# Feature networks: shapes-cnn and Inception
# ============================================================================================

def resolve_inception_weights(path: str | Path | None = None) -> Path:
    """The Inception-v3 (FID) weights file: ``path``, else ``$LDETOK_INCEPTION_WEIGHTS``, else the
    torch hub cache (``<torch hub dir>/checkpoints/{INCEPTION_FILENAME}``, where torch-fidelity's
    own download puts it). Nothing is downloaded: a missing file raises :class:`MissingWeightsError`
    with instructions."""
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME
    if path:
        candidates = [Path(path)]
    else:
        env = os.environ.get("LDETOK_INCEPTION_WEIGHTS")
        candidates = ([Path(env)] if env else []) + [hub_file]
    for c in candidates:
        if c.is_file():
            return c
    looked = ", ".join(repr(str(c)) for c in candidates)
    raise MissingWeightsError(
        f"Inception-v3 FID weights not found (looked at {looked}). This kit never downloads implicitly. "
        f"With internet, fetch them once into the torch hub cache: python -c \"import torch; "
        f"torch.hub.load_state_dict_from_url('{INCEPTION_URL}')\" or download {INCEPTION_URL} anywhere and pass "
        "inception_weights=PATH (CLI --inception-weights PATH, or set LDETOK_INCEPTION_WEIGHTS). "
        "Offline, use feature_net='shapes-cnn' (trained on the embedded data)."
    )


@dataclass(frozen=True)
class FeatureNet:
    """A resolved feature network: torch-fidelity extractor name, weights file and layers.

    ``key`` identifies network and weights; it is stored in statistics files so that FIDs from
    different networks are never compared by mistake.
    """

    name: str
    extractor: str
    weights_path: str
    fid_layer: str
    isc_layer: str
    key: str

    @property
    def has_classifier(self) -> bool:
        """True when ``isc_layer`` are logits over the dataset's own classes (class accuracy)."""
        return self.name == "shapes-cnn"

    def tf_kwargs(self) -> dict:
        return {"feature_extractor": self.extractor, "feature_extractor_weights_path": self.weights_path,
                "feature_layer_fid": self.fid_layer, "feature_layer_kid": self.fid_layer,
                "feature_layer_prc": self.fid_layer, "feature_layer_isc": self.isc_layer}


def _file_digest(path: Path, limit: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(limit))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:12]


def get_feature_net(name: str | FeatureNet = "shapes-cnn", *, img_size: int = 32, seed: int = 0,
                    cache_dir: str | Path | None = None, extractor: ExtractorSettings | str = "tiny",
                    inception_weights: str | Path | None = None, train: bool = True,
                    log: Callable | None = print) -> FeatureNet:
    """Resolve a feature network. ``"shapes-cnn"``: the offline network for ``img_size``/``seed``
    (trained and cached when missing, settings ``extractor``). ``"inception"``: the paper's
    Inception-v3 features (2048-d pool, IS on logits) from :func:`resolve_inception_weights`."""
    if isinstance(name, FeatureNet):
        return name
    if name == "shapes-cnn":
        path = get_shapes_extractor(img_size, seed, cache_dir, extractor, train=train, log=log)
        return FeatureNet("shapes-cnn", SHAPES_EXTRACTOR, str(path), "multi", "logits",
                          f"shapes-cnn:{path.stem}:{_file_digest(path)}")
    if name == "inception":
        path = resolve_inception_weights(inception_weights)
        return FeatureNet("inception", INCEPTION_EXTRACTOR, str(path), "2048", "logits_unbiased",
                          f"inception-v3-compat:{_file_digest(path)}")
    raise ValueError(f"feature_net={name!r} is not known; allowed: {', '.join(FEATURE_NETS)}")


def _net_for(feature_net, input1) -> FeatureNet:
    if isinstance(feature_net, FeatureNet):
        return feature_net
    size = 32
    if isinstance(input1, torch.Tensor) and input1.dim() == 4:
        size = int(input1.shape[-1])
    return get_feature_net(feature_net, img_size=size if size in (16, 32, 64, 128, 256, 512) else 32)


def _device_kwargs(device) -> dict:
    from ldetok_lite.device import pick_device

    return {"cuda": pick_device(device).type == "cuda"}


# ============================================================================================
# Metrics between image sets (torch-fidelity's calculate_metrics)
# ============================================================================================

def compute_metrics(input1, input2=None, *, fid: bool = True, isc: bool = False, kid: bool = False,
                    prc: bool = False, feature_net: str | FeatureNet = "shapes-cnn", num_images: int | None = None,
                    batch_size: int = 100, device: str = "auto", quantize: str = "round", verbose: bool = False,
                    **tf_kwargs) -> dict:
    """FID / IS / KID / precision-recall of ``input1`` (generated or reconstructed) against
    ``input2`` (reference) through ``torch_fidelity.calculate_metrics``.

    Returns a dict with the keys that apply: ``fid``, ``is_mean``, ``is_std``, ``kid_mean``,
    ``kid_std``, ``precision``, ``recall``, ``f_score``. All metrics use ``feature_net``'s features
    (precision/recall too; torch-fidelity's default for PRC would be VGG16). ``num_images`` limits
    or sets (for a callable) the size of ``input1``. Extra keyword arguments go to torch-fidelity
    (e.g. ``kid_subsets``, ``isc_splits``, ``rng_seed``). No file cache is written. A string
    ``feature_net`` is resolved by :func:`get_feature_net` at the size of a tensor ``input1``
    (else 32 px); pass a :class:`FeatureNet` to choose seed, cache or extractor settings.
    """
    _check_count(batch_size, "batch_size")
    if not (fid or isc or kid or prc):
        raise ValueError("ask for at least one of fid, isc, kid, prc")
    if (fid or kid or prc) and input2 is None:
        raise ValueError("fid, kid and prc compare two sets: pass input2 (the reference images)")
    inputs, counts = _tf_inputs(input1, input2 if (fid or kid or prc) else None, num_images, quantize)
    net = _net_for(feature_net, input1)  # after the inputs are checked: it may train the shapes network
    kw = {**net.tf_kwargs(), **_device_kwargs(device), **inputs, "batch_size": batch_size, "fid": fid,
          "isc": isc, "kid": kid, "prc": prc, "cache": False, "verbose": verbose, "save_cpu_ram": True,
          "kid_subset_size": min(1000, *counts), "isc_splits": min(10, counts[0])}
    kw.update(tf_kwargs)
    out = torch_fidelity.calculate_metrics(**kw)
    return {_TF_KEYS.get(k, k): float(v) for k, v in out.items()}


def fid(input1, input2, **kwargs) -> float:
    """FID between two image sets (rFID: reconstructions vs originals; gFID: samples vs data).
    Keyword arguments as :func:`compute_metrics`."""
    return compute_metrics(input1, input2, fid=True, **kwargs)["fid"]


# ============================================================================================
# Features, statistics files, and FID against statistics
# ============================================================================================

def extract_features(source, *, feature_net: str | FeatureNet = "shapes-cnn", layers: tuple[str, ...] | None = None,
                     num_images: int | None = None, batch_size: int = 100, device: str = "auto",
                     quantize: str = "round", verbose: bool = False) -> dict[str, torch.Tensor]:
    """{layer: (N, D) float CPU tensor} for a source, through torch-fidelity's feature extractor
    (default layers: the FID layer and the IS logits)."""
    _check_count(batch_size, "batch_size")
    inputs, counts = _tf_inputs(source, None, num_images, quantize)
    net = _net_for(feature_net, source)
    layers = tuple(layers) if layers else tuple(dict.fromkeys((net.fid_layer, net.isc_layer)))
    kw = {**net.tf_kwargs(), **_device_kwargs(device), **inputs, "batch_size": batch_size, "cache": False,
          "verbose": verbose, "save_cpu_ram": True}
    extractor = create_feature_extractor(net.extractor, list(layers), **kw)
    feats = extract_featuresdict_from_input_id(1, extractor, **kw)
    return {k: v.float().cpu() for k, v in feats.items()}


def _stats64(stats: dict) -> dict:
    return {"mu": np.asarray(stats["mu"], dtype=np.float64), "sigma": np.asarray(stats["sigma"], dtype=np.float64)}


def fid_stats(features: torch.Tensor) -> dict:
    """{"mu", "sigma"} (float64) of (N, D) features via torch-fidelity's ``fid_features_to_statistics``."""
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be a (N, D) tensor with N >= 2, got {getattr(features, 'shape', features)}")
    return _stats64(fid_features_to_statistics(features.double().cpu()))


def compute_fid_stats(source, *, feature_net: str | FeatureNet = "shapes-cnn", **kwargs) -> dict:
    """FID statistics of an image source (kwargs as :func:`extract_features`)."""
    net = _net_for(feature_net, source)
    feats = extract_features(source, feature_net=net, layers=(net.fid_layer,), **kwargs)[net.fid_layer]
    return {**fid_stats(feats), "feature_net": net.key, "layer": net.fid_layer, "num_images": feats.shape[0]}


def save_fid_stats(path: str | Path, source, *, feature_net: str | FeatureNet = "shapes-cnn", **kwargs) -> Path:
    """Write an ADM-style ``.npz`` (``mu``, ``sigma``; plus ``feature_net``, ``layer``,
    ``num_images``) for any image source or dataset; atomic. Returns the path."""
    stats = compute_fid_stats(source, feature_net=feature_net, **kwargs)
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path={str(path)!r} must end in .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, mu=stats["mu"], sigma=stats["sigma"], feature_net=np.array(stats["feature_net"]),
             layer=np.array(stats["layer"]), num_images=np.array(stats["num_images"]))
    os.replace(tmp, path)
    return path


def load_fid_stats(path: str | Path, feature_net: FeatureNet | None = None) -> dict:
    """Read a statistics ``.npz`` (ours or ADM's reference batches: only ``mu``/``sigma`` are
    needed). With ``feature_net``, a file made by another network raises ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID statistics file {str(path)!r} does not exist; write one with "
                                "ldetok_lite.fid.save_fid_stats(path, images)")
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if not {"mu", "sigma"} <= keys:
            raise ValueError(f"{str(path)!r} has keys {sorted(keys)}; a FID statistics file needs 'mu' and 'sigma'")
        out = _stats64({"mu": f["mu"], "sigma": f["sigma"]})
        for k in ("feature_net", "layer", "num_images"):
            if k in keys:
                out[k] = f[k].item()
    d = out["mu"].shape
    if len(d) != 1 or out["sigma"].shape != (d[0], d[0]):
        raise ValueError(f"{str(path)!r}: mu {out['mu'].shape} / sigma {out['sigma'].shape} are not (D,) / (D, D)")
    if feature_net is not None and out.get("feature_net") not in (None, feature_net.key):
        raise ValueError(f"{str(path)!r} was made with feature network {out['feature_net']!r}, not "
                         f"{feature_net.key!r}; FIDs from different networks or weights are not comparable")
    return out


def fid_between_stats(stats1: dict, stats2: dict) -> float:
    """FID from two {"mu", "sigma"} dicts (torch-fidelity's ``fid_statistics_to_metric``)."""
    s1, s2 = _stats64(stats1), _stats64(stats2)
    if s1["mu"].shape != s2["mu"].shape:
        raise ValueError(f"statistics have different feature sizes: {s1['mu'].shape[0]} vs {s2['mu'].shape[0]} "
                         "(made with different feature networks or layers?)")
    return float(fid_statistics_to_metric(s1, s2, verbose=False)[torch_fidelity.KEY_METRIC_FID])


def features_to_metrics(features: dict[str, torch.Tensor], feature_net: FeatureNet, *,
                        reference: dict | None = None, isc: bool = False, kid: bool = False, prc: bool = False,
                        labels: torch.Tensor | None = None, **tf_kwargs) -> dict:
    """Metrics from extracted features, with torch-fidelity's metric functions.

    ``reference``: FID statistics ({"mu", "sigma"}) or reference features ({layer: (M, D)}, which
    also allows KID and precision/recall). ``labels``: the classes the images should show, for
    ``class_accuracy`` with a classifier network (shapes-cnn).
    """
    out = {}
    if reference is not None:
        f1 = features[feature_net.fid_layer]
        ref_feats = reference.get(feature_net.fid_layer)
        stats2 = fid_stats(ref_feats) if ref_feats is not None else load_stats_dict(reference, feature_net)
        out["fid"] = fid_between_stats(fid_stats(f1), stats2)
        if (kid or prc) and ref_feats is None:
            raise ValueError("kid and prc need reference features, not only statistics")
        kw = {"kid_subset_size": min(1000, len(f1), 0 if ref_feats is None else len(ref_feats)), "verbose": False,
              **tf_kwargs}
        if kid:
            res = kid_features_to_metric(f1, ref_feats, **kw)
            out.update({_TF_KEYS[k]: float(v) for k, v in res.items()})
        if prc:
            res = prc_features_to_metric(f1, ref_feats, **kw)
            out.update({_TF_KEYS[k]: float(v) for k, v in res.items()})
    elif kid or prc:
        raise ValueError("kid and prc need reference features")
    if isc:
        logits = features[feature_net.isc_layer]
        res = isc_features_to_metric(logits, splits=min(10, len(logits)), shuffle=True,
                                     rng_seed=tf_kwargs.get("rng_seed", 2020))
        out.update({_TF_KEYS[k]: float(v) for k, v in res.items()})
    if labels is not None and feature_net.has_classifier:
        logits = features[feature_net.isc_layer]
        labels = torch.as_tensor(labels).long().cpu()
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {logits.shape[0]} images")
        out["class_accuracy"] = float((logits.argmax(1) == labels).float().mean())
    return out


def load_stats_dict(stats, feature_net: FeatureNet | None = None) -> dict:
    """A path to a statistics file or a dict with mu/sigma -> checked float64 statistics."""
    if isinstance(stats, (str, Path)):
        return load_fid_stats(stats, feature_net)
    if not isinstance(stats, dict) or "mu" not in stats or "sigma" not in stats:
        raise TypeError("stats must be a .npz path or a dict with 'mu' and 'sigma'")
    if feature_net is not None and stats.get("feature_net") not in (None, feature_net.key):
        raise ValueError(f"statistics were made with {stats['feature_net']!r}, not {feature_net.key!r}")
    return _stats64(stats)


def metrics_vs_stats(input1, stats, *, feature_net: str | FeatureNet = "shapes-cnn", isc: bool = False,
                     labels: torch.Tensor | None = None, **kwargs) -> dict:
    """FID of ``input1`` against precomputed statistics (a ``.npz`` path or dict), plus IS and
    class accuracy when asked (``labels``; defaults to an ImageStream's labels). One pass over the
    images; kwargs as :func:`extract_features`."""
    net = _net_for(feature_net, input1)
    ref = load_stats_dict(stats, net)
    feats = extract_features(input1, feature_net=net, **kwargs)
    if labels is None and isinstance(input1, ImageStream):
        labels = input1.labels
    if labels is not None:
        labels = torch.as_tensor(labels)[:feats[net.fid_layer].shape[0]]
    return features_to_metrics(feats, net, reference=ref, isc=isc, labels=labels)


def class_accuracy(images, labels, *, feature_net: str | FeatureNet = "shapes-cnn", **kwargs) -> float:
    """Fraction of ``images`` that the shapes network classifies as ``labels`` (the accuracy of a
    class-conditional generator's samples; kwargs as :func:`extract_features`)."""
    net = _net_for(feature_net, images)
    if not net.has_classifier:
        raise ValueError(f"feature_net {net.name!r} has no classifier over the dataset's classes; use 'shapes-cnn'")
    feats = extract_features(images, feature_net=net, layers=(net.isc_layer,), **kwargs)
    return features_to_metrics(feats, net, labels=labels)["class_accuracy"]


def fid_from_stats(input1, stats, **kwargs) -> float:
    """FID of ``input1`` against a statistics file/dict (same value as the image path)."""
    return metrics_vs_stats(input1, stats, **kwargs)["fid"]


# ============================================================================================
# Images on the fly: reconstructions and generator samples
# ============================================================================================

def _images_of(images) -> torch.Tensor | Dataset:
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        return images
    if isinstance(images, Dataset):
        return images
    raise TypeError(f"images must be a tensor (N, 3, H, W) or a Dataset, got {type(images).__name__}")


def reconstruction_source(tokenizer: nn.Module, images, num_images: int | None = None,
                          on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> ImageStream:
    """Reconstructions ``tokenizer.reconstruct(x)`` of ``images`` (a tensor or dataset, in order),
    made batch by batch; ``on_batch(originals, reconstructions)`` sees each batch (PSNR/SSIM)."""
    from ldetok_lite.device import autocast

    images = _images_of(images)
    total = len(images)
    n = total if num_images is None else num_images
    _check_count(n, "num_images")
    if n > total:
        raise ValueError(f"num_images={n} but only {total} images were given")
    device = next(tokenizer.parameters()).device

    class _Recon:
        pos = 0

        def reset(self):
            self.pos = 0

        @torch.no_grad()
        def __call__(self, k):
            if isinstance(images, torch.Tensor):
                x = images[self.pos:self.pos + k]
            else:
                items = [images[i] for i in range(self.pos, self.pos + k)]
                x = torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])
            if x.dtype == torch.uint8:
                x = x.float() / 255.0
            self.pos += k
            x = x.to(device)
            with autocast(device):  # bf16 on CUDA (as the official rFID), fp32 elsewhere
                recon = tokenizer.reconstruct(x).float().clamp(0, 1)
            if on_batch is not None:
                on_batch(x, recon)
            return recon

    return ImageStream(_Recon(), n, name="reconstructions")


def class_balanced_labels(num_images: int, num_classes: int) -> torch.Tensor:
    """``num_images`` labels in class order, balanced (the official 50 per class for 50k, §5)."""
    _check_count(num_images, "num_images")
    _check_count(num_classes, "num_classes")
    return torch.arange(num_images) * num_classes // num_images


def generator_source(generator: nn.Module, tokenizer: nn.Module, num_images: int, *, cfg: float = 1.0,
                     num_steps: int | None = None, temperature: float = 1.0, num_classes: int | None = None,
                     seed: int = 0) -> ImageStream:
    """Class-balanced samples of a latent generator decoded by ``tokenizer``, made batch by batch
    (``generator.generate(labels, cfg, num_steps, temperature, generator=g)`` then
    ``generators.decode_latents``). Deterministic from ``seed``; ``.labels`` gives the classes."""
    if not (isinstance(cfg, (int, float)) and cfg >= 1.0):
        raise ValueError(f"cfg={cfg!r} is out of range; allowed >= 1 (1 = no guidance)")
    if num_steps is not None:
        _check_count(num_steps, "num_steps")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} must be > 0")
    if num_classes is None:
        num_classes = int(getattr(generator, "num_classes", None) or
                          (getattr(generator, "spec", None) or {}).get("kwargs", {}).get("num_classes", 10))
    from ldetok_lite.device import autocast

    labels = class_balanced_labels(num_images, num_classes)
    device = next(generator.parameters()).device
    try:
        from ldetok_lite.generators import decode_latents
    except ImportError:  # the registry may not exist yet: decode with the tokenizer directly
        def decode_latents(tok, z):
            return tok.detokenize(z)

    class _Samples:
        pos = 0

        def reset(self):
            self.pos = 0

        @torch.no_grad()
        def __call__(self, k):
            y = labels[self.pos:self.pos + k].to(device)
            g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + self.pos)
            self.pos += k
            with autocast(device):
                z = generator.generate(y, cfg=float(cfg), num_steps=num_steps, temperature=float(temperature),
                                       generator=g)
            return decode_latents(tokenizer, z.float()).float().clamp(0, 1)

    return ImageStream(_Samples(), num_images, labels=labels, name="samples")
