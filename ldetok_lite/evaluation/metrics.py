"""Features → statistics → FID / IS / KID / precision-recall, through one public route.

``compute_metrics(images, reference, ...)`` extracts features of ``images`` (one pass; a stream
of samples is never held in memory), takes the reference as images, a folder, a dataset, or FID
statistics (an ADM-style ``.npz`` such as ``adm_in256_stats.npz``, or a dict), and computes the
metrics with torch-fidelity's own functions (``fid_statistics_to_metric``,
``isc_features_to_metric``, ...). PyPI torch-fidelity has no ``fid_statistics_file`` argument
(that is the LTH14 fork the official code uses), which is why the route goes through features.
:func:`save_fid_stats` writes statistics files for any image set. Taught in notebook 10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id

from ..io import atomic_write
from .feature_net import FeatureNet, device_kwargs, net_for
from .sources import ImageStream, check_count, prepare

__all__ = ["compute_metrics", "class_accuracy", "extract_features", "features_to_metrics", "fid_stats",
           "compute_fid_stats", "save_fid_stats", "load_fid_stats", "fid_between_stats", "load_stats_dict"]

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
# Features
# ============================================================================================

def _features(prepared, net: FeatureNet, layers, batch_size: int, device) -> dict[str, torch.Tensor]:
    tf_input, extra, _ = prepared
    kw = {**net.tf_kwargs(), **device_kwargs(device), "input1": tf_input,
          **{f"input1_{k}": v for k, v in extra.items()}, "batch_size": batch_size, "cache": False,
          "verbose": False, "save_cpu_ram": True}
    extractor = create_feature_extractor(net.extractor, list(layers), **kw)
    feats = extract_featuresdict_from_input_id(1, extractor, **kw)
    return {k: v.float().cpu() for k, v in feats.items()}


def extract_features(source, *, feature_net: str | FeatureNet = "shapes-cnn", layers: tuple[str, ...] | None = None,
                     num_images: int | None = None, batch_size: int = 100, device: str = "auto",
                     quantize: str = "round") -> dict[str, torch.Tensor]:
    """{layer: (N, D) float CPU tensor} for a source (default layers: the FID layer and the IS logits)."""
    check_count(batch_size, "batch_size")
    prepared = prepare(source, "images", num_images, quantize)
    net = net_for(feature_net, source)
    layers = tuple(layers) if layers else tuple(dict.fromkeys((net.fid_layer, net.isc_layer)))
    return _features(prepared, net, layers, batch_size, device)


# ============================================================================================
# Statistics
# ============================================================================================

def _stats64(stats: dict, name: str = "statistics") -> dict:
    """float64 ``mu`` (D,) / ``sigma`` (D, D), checked: right shapes, D >= 1, all finite."""
    try:
        out = {k: np.asarray(stats[k], dtype=np.float64) for k in ("mu", "sigma")}
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: mu/sigma are not numeric arrays ({e})") from None
    d = out["mu"].shape
    if len(d) != 1 or d[0] < 1 or out["sigma"].shape != (d[0], d[0]):
        raise ValueError(f"{name}: mu {out['mu'].shape} / sigma {out['sigma'].shape} are not (D,) / (D, D) "
                         "with D >= 1")
    for k, v in out.items():
        if not np.isfinite(v).all():
            raise ValueError(f"{name}: {k} contains NaN or Inf values, so they are not valid FID statistics "
                             "(computed from fewer than 2 images, or from features with NaN?)")
    return out


def _check_features(features, name: str = "features", least: int = 2) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[0] < least \
            or features.shape[1] < 1:
        raise ValueError(f"{name} must be a (N, D) tensor with N >= {least} and D >= 1, got "
                         f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}")
    if features.is_meta:
        raise ValueError(f"{name} is on the meta device (no values); allowed a CPU or GPU tensor")
    bad = int((~torch.isfinite(features)).any(1).sum())
    if bad:
        raise ValueError(f"{name} has NaN or Inf values in {bad} of {features.shape[0]} rows; allowed finite "
                         "features (are the images or the feature network broken?)")
    return features


def fid_stats(features: torch.Tensor, name: str = "features") -> dict:
    """{"mu", "sigma"} (float64) of (N, D) features via torch-fidelity's ``fid_features_to_statistics``."""
    _check_features(features, name)
    return _stats64(fid_features_to_statistics(features.double().cpu()), f"statistics of {name}")


def compute_fid_stats(source, *, feature_net: str | FeatureNet = "shapes-cnn", **kwargs) -> dict:
    """FID statistics of an image source (kwargs as :func:`extract_features`)."""
    net = net_for(feature_net, source)
    feats = extract_features(source, feature_net=net, layers=(net.fid_layer,), **kwargs)[net.fid_layer]
    return {**fid_stats(feats), "feature_net": net.key, "layer": net.fid_layer, "num_images": feats.shape[0]}


def save_fid_stats(path: str | Path, source, *, feature_net: str | FeatureNet = "shapes-cnn", **kwargs) -> Path:
    """Write an ADM-style ``.npz`` (``mu``, ``sigma``; plus ``feature_net``, ``layer``,
    ``num_images``) for any image source or dataset; atomic. Returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path={str(path)!r} must end in .npz")
    stats = compute_fid_stats(source, feature_net=feature_net, **kwargs)
    arrays = {"mu": stats["mu"], "sigma": stats["sigma"], "feature_net": np.array(stats["feature_net"]),
              "layer": np.array(stats["layer"]), "num_images": np.array(stats["num_images"])}
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_fid_stats(path: str | Path, feature_net: FeatureNet | None = None) -> dict:
    """Read a statistics ``.npz`` (ours or ADM's reference batches: only ``mu``/``sigma`` are
    needed). With ``feature_net``, a file made by another network raises ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID statistics file {str(path)!r} does not exist; write one with "
                                "ldetok_lite.evaluation.save_fid_stats(path, images)")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"mu", "sigma"} <= keys:
                raise ValueError(f"{str(path)!r} has keys {sorted(keys)}; a FID statistics file needs 'mu' and "
                                 "'sigma'")
            out = {"mu": np.asarray(f["mu"], dtype=np.float64), "sigma": np.asarray(f["sigma"], dtype=np.float64)}
            for k in ("feature_net", "layer", "num_images"):
                if k in keys:
                    out[k] = f[k].item()
    except ValueError:
        raise
    except Exception as e:  # a truncated or foreign file: zipfile/numpy errors of many kinds
        raise ValueError(f"cannot read the FID statistics file {str(path)!r} (truncated or not an .npz?): "
                         f"{type(e).__name__}: {e}") from None
    out.update(_stats64(out, f"the statistics in {str(path)!r}"))
    if feature_net is not None and out.get("feature_net") not in (None, feature_net.key):
        raise ValueError(f"{str(path)!r} was made with feature network {out['feature_net']!r}, not "
                         f"{feature_net.key!r}; FIDs from different networks or weights are not comparable")
    return out


def load_stats_dict(stats, feature_net: FeatureNet | None = None, name: str = "statistics") -> dict:
    """A path to a statistics file or a dict with mu/sigma -> checked float64 statistics."""
    if isinstance(stats, (str, Path)):
        return load_fid_stats(stats, feature_net)
    if not isinstance(stats, dict) or "mu" not in stats or "sigma" not in stats:
        raise TypeError("stats must be a .npz path or a dict with 'mu' and 'sigma'")
    if feature_net is not None and stats.get("feature_net") not in (None, feature_net.key):
        raise ValueError(f"statistics were made with {stats['feature_net']!r}, not {feature_net.key!r}")
    return _stats64(stats, name)


def fid_between_stats(stats1: dict, stats2: dict) -> float:
    """FID from two {"mu", "sigma"} dicts (torch-fidelity's ``fid_statistics_to_metric``)."""
    for name, st in (("stats1", stats1), ("stats2", stats2)):
        if not isinstance(st, dict) or "mu" not in st or "sigma" not in st:
            raise TypeError(f"{name} must be a dict with 'mu' and 'sigma', got {type(st).__name__}")
    s1, s2 = _stats64(stats1, "stats1 (FID statistics)"), _stats64(stats2, "stats2 (FID statistics)")
    if s1["mu"].shape != s2["mu"].shape:
        raise ValueError(f"statistics have different feature sizes: {s1['mu'].shape[0]} vs {s2['mu'].shape[0]} "
                         "(made with different feature networks or layers?)")
    return float(fid_statistics_to_metric(s1, s2, verbose=False)[torch_fidelity.KEY_METRIC_FID])


# ============================================================================================
# Metrics
# ============================================================================================

def features_to_metrics(features: dict[str, torch.Tensor], feature_net: FeatureNet, *,
                        reference: dict | None = None, isc: bool = False, kid: bool = False, prc: bool = False,
                        labels: torch.Tensor | None = None, **metric_kwargs) -> dict:
    """Metrics from extracted features, with torch-fidelity's metric functions.

    ``reference``: FID statistics ({"mu", "sigma"}) or reference features ({layer: (M, D)}, which
    also allows KID and precision/recall). ``labels``: the classes the images should show, for
    ``class_accuracy`` with a classifier network (shapes-cnn). ``metric_kwargs`` go to
    torch-fidelity (``kid_subsets``, ``rng_seed``, ...).
    """
    out = {}
    if reference is not None:
        f1 = features[feature_net.fid_layer]
        ref_feats = reference.get(feature_net.fid_layer)
        stats2 = fid_stats(ref_feats, "reference features") if ref_feats is not None else \
            load_stats_dict(reference, feature_net, "reference statistics")
        out["fid"] = fid_between_stats(fid_stats(f1, "image features"), stats2)
        if (kid or prc) and ref_feats is None:
            raise ValueError("kid and prc need reference images (features), not only statistics")
        kw = {"kid_subset_size": min(1000, len(f1), 0 if ref_feats is None else len(ref_feats)), "verbose": False,
              **metric_kwargs}
        nb = kw.get("prc_neighborhood", 3)
        if prc and min(len(f1), len(ref_feats)) <= nb:
            raise ValueError(f"prc with prc_neighborhood={nb} needs more than {nb} images per set, got "
                             f"{len(f1)} images and {len(ref_feats)} reference images")
        if kid:
            res = kid_features_to_metric(f1, ref_feats, **kw)
            out.update({_TF_KEYS[k]: float(v) for k, v in res.items()})
        if prc:
            res = prc_features_to_metric(f1, ref_feats, **kw)
            out.update({_TF_KEYS[k]: float(v) for k, v in res.items()})
    elif kid or prc:
        raise ValueError("kid and prc need reference images")
    if isc:
        logits = _check_features(features[feature_net.isc_layer], "logits for the Inception Score", least=1)
        res = isc_features_to_metric(logits, splits=min(10, len(logits)), shuffle=True,
                                     rng_seed=metric_kwargs.get("rng_seed", 2020))
        out.update({_TF_KEYS[k]: float(v) for k, v in res.items()})
    if labels is not None and feature_net.has_classifier:
        logits = _check_features(features[feature_net.isc_layer], "logits for the class accuracy", least=1)
        labels = torch.as_tensor(labels).long().cpu()[:logits.shape[0]]
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {logits.shape[0]} images")
        out["class_accuracy"] = float((logits.argmax(1) == labels).float().mean())
    return out


def _is_stats(reference) -> bool:
    if isinstance(reference, dict):
        return True
    return isinstance(reference, (str, Path)) and Path(reference).suffix == ".npz"


def compute_metrics(images, reference=None, *, fid: bool = True, isc: bool = False, kid: bool = False,
                    prc: bool = False, labels: torch.Tensor | None = None,
                    feature_net: str | FeatureNet = "shapes-cnn", num_images: int | None = None,
                    batch_size: int = 100, device: str = "auto", quantize: str = "round", **metric_kwargs) -> dict:
    """FID / IS / KID / precision-recall (and class accuracy) of ``images`` against ``reference``.

    ``images``: the generated or reconstructed set (any source, see ``sources.py``);
    ``reference``: the real set as a source, or FID statistics (a ``.npz`` path or a dict; then
    KID and precision/recall are not available). Returns the keys that apply: ``fid``,
    ``is_mean``, ``is_std``, ``kid_mean``, ``kid_std``, ``precision``, ``recall``, ``f_score``,
    ``class_accuracy`` (with ``labels``, or an :class:`ImageStream`'s own labels, and the shapes
    network). A string ``feature_net`` is resolved at the size of a tensor ``images`` (else 32 px);
    pass a :class:`FeatureNet` to choose seed, cache or extractor settings.
    """
    check_count(batch_size, "batch_size")
    if labels is None and isinstance(images, ImageStream):
        labels = images.labels
    if not (fid or isc or kid or prc or labels is not None):
        raise ValueError("ask for at least one of fid, isc, kid, prc (or pass labels for the class accuracy)")
    paired = fid or kid or prc
    if paired and reference is None:
        raise ValueError("fid, kid and prc compare two sets: pass reference (images, a folder, a dataset, or FID "
                         "statistics)")
    stats_ref = paired and _is_stats(reference)
    if stats_ref and (kid or prc):
        raise ValueError("kid and prc need reference images, not only statistics")
    sizes = [tuple(t.shape[-2:]) for t in (images, reference) if isinstance(t, torch.Tensor) and t.dim() == 4]
    if len(sizes) == 2 and sizes[0] != sizes[1]:
        raise ValueError(f"images are {sizes[0][0]}x{sizes[0][1]} but the reference images are "
                         f"{sizes[1][0]}x{sizes[1][1]}; allowed: both sets at the same size (resize one of them)")
    first = prepare(images, "images", num_images, quantize)  # checked before the network is resolved
    second = prepare(reference, "reference", None, quantize) if paired and not stats_ref else None
    for name, p in (("images", first), ("reference", second)):
        if p is not None and p[2] < 2 and paired:
            raise ValueError(f"{name} has {p[2]} image; FID/KID need at least 2 per set")
    net = net_for(feature_net, images)  # may train the shapes network (once)
    layers = ([net.fid_layer] if paired else []) + ([net.isc_layer] if isc or labels is not None else [])
    feats = _features(first, net, tuple(dict.fromkeys(layers)), batch_size, device)
    ref = None
    if paired:
        ref = load_stats_dict(reference, net) if stats_ref else _features(second, net, (net.fid_layer,), batch_size,
                                                                           device)
    return features_to_metrics(feats, net, reference=ref, isc=isc, kid=kid, prc=prc, labels=labels,
                               **metric_kwargs)


def class_accuracy(images, labels, *, feature_net: str | FeatureNet = "shapes-cnn", **kwargs) -> float:
    """Fraction of ``images`` that the shapes network classifies as ``labels``: whether a
    class-conditional generator draws the class it was asked for (notebooks 05-09)."""
    net = net_for(feature_net, images)
    if not net.has_classifier:
        raise ValueError(f"feature_net {net.name!r} has no classifier over the dataset's classes; use 'shapes-cnn'")
    return compute_metrics(images, fid=False, labels=labels, feature_net=net, **kwargs)["class_accuracy"]
