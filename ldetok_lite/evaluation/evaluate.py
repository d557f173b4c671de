"""Evaluating trained models: rFID/PSNR/SSIM of a tokenizer and gFID/IS/class accuracy of a
generator (official ``utils/train_utils.py``, ``evaluate_tokenizer`` / ``evaluate_generator``).

- rFID: reconstruct held-out images (posterior mean, no mask, no noise) and compare them with
  the originals; PSNR/SSIM are averaged per image (``ldetok_lite.metrics``).
- gFID/IS: class-balanced samples (the official label order), decoded by the tokenizer, against
  ADM's ImageNet-256 statistics (the paper's reference), the training distribution's statistics
  (cached as an ADM-style ``.npz``) or a given statistics file; one run per guidance scale. With
  the offline shapes network the class accuracy of the samples is reported as well.
- :func:`evaluate_protocol`: a guidance search, then the final count at the best scale and at 1.0
  (``presets.eval_protocol``; official ``main_diffusion.py``).
``ldetok-lite evaluate`` runs these from the command line; notebooks 10 and 22 use them.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from .. import _compat
from ..assets import resolve
from ..config import SHAPES_DATASETS, DataConfig
from ..data import make_dataset
from ..metrics import psnr, ssim
from ..presets import EvalProtocol
from .feature_net import default_cache_dir
from .metrics import extract_features, features_to_metrics, load_fid_stats, save_fid_stats
from .sources import generator_source, reconstruction_source

_GENERATED = (*SHAPES_DATASETS, "photos")  # embedded data sets, generated to any size

__all__ = ["EvaluateError", "eval_images", "evaluate_tokenizer", "reference_stats", "resolve_reference",
           "evaluate_generator", "evaluate_protocol"]


class EvaluateError(ValueError):
    """A bad option or an unsuitable model or data set; the message says what to change."""


def _fail(msg: str):
    raise EvaluateError(msg)


def eval_images(data: DataConfig, split: str, n: int, seed: int):
    """``n`` images of ``split`` (embedded data: generated to size; others: a seeded subset)."""
    if data.dataset in _GENERATED:
        data = data.replace(**({"num_val": n} if split == "val" else {"num_train": max(n, data.num_train)}))
    ds = make_dataset(data, split)
    if n > len(ds):
        _fail(f"--num-images {n} is more than the {len(ds)} images of the {split} split")
    if n < len(ds) and not hasattr(ds, "images_uint8"):
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
        return Subset(ds, idx.tolist())
    return ds if n == len(ds) else _first(ds, n)


def _first(ds, n):
    sub = Subset(ds, list(range(n)))
    if hasattr(ds, "images_uint8"):
        sub.images_uint8 = ds.images_uint8[:n]
    return sub


def evaluate_tokenizer(tokenizer, data: DataConfig, net, *, num_images: int, batch_size: int, seed: int = 0,
                       kid: bool = False, prc: bool = False, quantize: str = "round", device="auto") -> dict:
    """rFID (+KID/PRC) of reconstructions vs the originals, and mean per-image PSNR/SSIM."""
    if tokenizer.img_size != data.img_size:
        _fail(f"the tokenizer works at {tokenizer.img_size} px but the data is {data.img_size} px")
    t0 = time.time()
    originals = eval_images(data, "val", num_images, seed)
    sums = {"psnr": 0.0, "ssim": 0.0, "n": 0}

    def on_batch(x, recon):
        sums["psnr"] += float(psnr(recon, x, reduction="none").sum())
        if min(x.shape[-2:]) >= 11:
            sums["ssim"] += float(ssim(recon, x, reduction="none").sum())
        sums["n"] += x.shape[0]

    kw = dict(feature_net=net, batch_size=batch_size, device=device, quantize=quantize)
    ref = extract_features(originals, layers=(net.fid_layer,), **kw)
    stream = reconstruction_source(tokenizer, originals, on_batch=on_batch)
    feats = extract_features(stream, layers=(net.fid_layer,), **kw)
    out = features_to_metrics(feats, net, reference=ref, kid=kid, prc=prc)
    res = {"rfid": out.pop("fid"), **out,
           "psnr": sums["psnr"] / max(sums["n"], 1),
           "ssim": sums["ssim"] / max(sums["n"], 1) if data.img_size >= 11 else None,
           "num_images": num_images, "seconds": round(time.time() - t0, 2)}
    return res


def reference_stats(data: DataConfig, net, *, cache_dir, num_images: int, batch_size: int, seed: int = 0,
                    device="auto", log=print) -> Path:
    """ADM-style statistics of the training split (cached under ``<cache>/fid/``)."""
    key = json.dumps({"data": data.to_dict(), "net": net.key, "n": num_images, "seed": seed}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = Path(cache_dir or default_cache_dir()) / "fid" / f"ref_{data.dataset}{data.img_size}_{digest}.npz"
    if not path.is_file():
        log(f"[evaluate] reference statistics of {num_images} training images -> {path}")
        images = eval_images(data, "train", num_images, seed)
        save_fid_stats(path, images, feature_net=net, batch_size=batch_size, device=device)
    return path


@_compat.renamed_keywords(cfg_list="cfg_scales")
def evaluate_generator(generator, tokenizer, data: DataConfig, net, *, num_images: int, batch_size: int,
                       cfg_scales, steps: int | None, temperature: float, ref_stats: str | Path | None = None,
                       cache_dir=None, seed: int = 0, kid: bool = False, prc: bool = False, quantize: str = "round",
                       device="auto", log=print) -> list[dict]:
    """gFID / IS (/ class accuracy, KID, PRC) for each guidance scale in ``cfg_scales``."""
    if ref_stats is None:
        n_ref = max(num_images, min(data.num_train, 50_000)) if data.dataset in _GENERATED else num_images
        ref_stats = reference_stats(data, net, cache_dir=cache_dir, num_images=n_ref, batch_size=batch_size,
                                    seed=seed, device=device, log=log)
    ref = load_fid_stats(ref_stats, net)
    ref_feats = None
    if kid or prc:
        ref_feats = extract_features(eval_images(data, "train", num_images, seed), feature_net=net,
                                         layers=(net.fid_layer,), batch_size=batch_size, device=device)
    rows = []
    for cfg_scale in cfg_scales:
        t0 = time.time()
        stream = generator_source(generator, tokenizer, num_images, cfg_scale=cfg_scale, num_steps=steps or None,
                                      temperature=temperature, seed=seed)
        feats = extract_features(stream, feature_net=net, batch_size=batch_size, device=device,
                                     quantize=quantize)
        out = features_to_metrics(feats, net, reference=ref, isc=True, labels=stream.labels)
        if ref_feats is not None:
            extra = features_to_metrics(feats, net, reference=ref_feats, kid=kid, prc=prc)
            out.update({k: v for k, v in extra.items() if k != "fid"})
        row = {"cfg_scale": cfg_scale, "steps": steps or None, "temperature": temperature, "gfid": out.pop("fid"),
               **out,
               "num_images": num_images, "seconds": round(time.time() - t0, 2)}
        log(f"[evaluate] cfg {cfg_scale}: gFID {row['gfid']:.3f}  IS {row['is_mean']:.3f}"
            + (f"  class acc {row['class_accuracy']:.3f}" if "class_accuracy" in row else ""))
        rows.append(row)
    return rows


def resolve_reference(reference: str | Path | None, net) -> Path | None:
    """The gFID reference statistics file for ``reference``: ``adm`` (ADM's ImageNet-256 statistics,
    found by ``assets.resolve``; a clear error says how to get them), ``train`` or None (computed
    from the training images by :func:`evaluate_generator`), or a path to an ``.npz``."""
    if reference in (None, "", "train"):
        return None
    if reference == "adm":
        if net.name != "inception":
            _fail(f"ADM's ImageNet-256 statistics are Inception-v3 features; the feature network is {net.name!r} "
                  "(use feature_net inception, or reference 'train')")
        return resolve("adm_in256_stats")
    path = Path(reference)
    if not path.is_file():
        _fail(f"reference statistics {str(path)!r} do not exist; allowed: 'adm', 'train' or the path of an .npz")
    return path


def evaluate_protocol(generator, tokenizer, data: DataConfig, net, protocol: EvalProtocol, *, batch_size: int,
                      reference: str | Path | None = None, cache_dir=None, seed: int = 0, kid: bool = False,
                      prc: bool = False, device="auto", log=print) -> dict:
    """Search ``protocol.cfg_scales`` on ``search_images``, then (with more final images or other final
    steps) measure ``final_images`` at the best scale and at 1.0 (official ``main_diffusion.py``).

    ``reference``: as :func:`resolve_reference`; None takes ``protocol.reference``. Returns
    ``{"search": rows, "best": row, "final": rows, "protocol": {...}}``.
    """
    ref = resolve_reference(protocol.reference if reference is None else reference, net)
    limit = getattr(generator, "max_num_steps", None)

    def capped(steps):
        return min(steps, limit) if steps and limit else steps

    kw = dict(batch_size=batch_size, temperature=protocol.temperature, ref_stats=ref, cache_dir=cache_dir, seed=seed,
              quantize=protocol.quantize, kid=kid, prc=prc, device=device, log=log)
    log(f"[evaluate] guidance search over {list(protocol.cfg_scales)} on {protocol.search_images} images"
        + (f", {capped(protocol.search_steps)} steps" if protocol.search_steps else ""))
    search = evaluate_generator(generator, tokenizer, data, net, num_images=protocol.search_images,
                                cfg_scales=protocol.cfg_scales, steps=capped(protocol.search_steps), **kw)
    best = min(search, key=lambda r: r["gfid"])
    final = []
    final_steps = capped(protocol.final_steps)
    if protocol.final_images > protocol.search_images or final_steps != capped(protocol.search_steps):
        log(f"[evaluate] final count: {protocol.final_images} images at guidance {best['cfg_scale']} and 1.0"
            + (f", {final_steps} steps" if final_steps else ""))
        final = evaluate_generator(generator, tokenizer, data, net, num_images=protocol.final_images,
                                   cfg_scales=sorted({best["cfg_scale"], 1.0}, reverse=True), steps=final_steps, **kw)
    return {"search": search, "best": best, "final": final,
            "protocol": {**protocol.__dict__, "reference": str(ref) if ref else "train"}}
