"""The paper's tokenizer × generator comparison and its γ / M / noise-type sweeps (notebook 10).

    plan = compare_plan("tiny")                           # or smoke | small | full | compare
    res = run_comparison(plan, seeds=(0, 1, 2), out_dir="runs/compare-tiny")
    res.summary["ratios"]["SiT"]                          # gFID(l-DeTok) / gFID(plain AE)

Every tokenizer and generator comes from the one model cache (``cache.py``), so the comparison
at ``tiny`` reuses the notebooks' models and a re-run reuses every finished one. Every plan ends
each tokenizer with the paper's decoder-only second stage (``presets.decoder_finetune``):
reconstructions improve while the encoder, and so the latents and every generator trained on
them, stay the same. Measured: rFID and PSNR/SSIM of each tokenizer on held-out images, its
robustness to latent noise and the smoothness of its latents (``analysis.py``), gFID / IS /
class accuracy of each generator (cfg 1, class-balanced samples) against the training data's
statistics, with the plan's feature network (``evaluation``). Outputs (``out_dir``):
``rows.jsonl`` (one line per measured cell, appended as the run goes) and the table files of
``table.write_outputs``. :func:`load_comparison` reads a run directory back (also a partial one).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..analysis import neighbour_correlation, noise_robustness
from ..data import make_dataset
from ..device import pick_device
from ..evaluation import evaluate_generator, evaluate_tokenizer, get_feature_net, reference_stats
from ..io import append_jsonl, read_jsonl
from ..presets import (
    GENERATOR_FAMILIES,
    SWEEP_FAMILIES,
    SWEEPS,
    TOKENIZER_ORDER,
    ComparePlan,
    compare_plan,
    variant_name,
    variant_settings,
)
from .cache import finetune_decoder, generator_family, get_generator, get_tokenizer
from .table import format_table, summarize, summarize_sweeps, write_outputs

__all__ = ["CompareResult", "run_comparison"]


def _quiet(log):
    return (lambda *a, **k: None) if log is None else log


@dataclass
class CompareResult:
    """What :func:`run_comparison` returns (``rows`` also in ``out_dir/rows.jsonl``)."""

    out_dir: Path
    rows: list[dict]
    summary: dict
    sweeps: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


def _check_names(values, allowed, what) -> tuple:
    values = tuple(values)
    for v in values:
        if v not in allowed:
            raise ValueError(f"{what} {v!r} is not known; allowed: {', '.join(allowed)}")
    if not values:
        raise ValueError(f"{what}s: give at least one")
    return values


def run_comparison(plan: ComparePlan | str, seeds: Iterable[int] = (0,), out_dir="runs/compare", cache_dir=None,
                   tokenizers: Iterable[str] = TOKENIZER_ORDER, generators: Iterable[str] = GENERATOR_FAMILIES,
                   sweeps: bool = False, sweep_families: Iterable[str] = SWEEP_FAMILIES, device="auto",
                   log: Callable | None = print, progress: str = "log", feature_cache_dir=None,
                   robustness: bool = True) -> CompareResult:
    """Train (or reuse) every tokenizer and every generator on its latents, measure them, and
    write the table (see the module docstring). Order: plain and ldetok first (every seed; per seed
    the tokenizers, then the generators family by family, so a partial run gives ratios early),
    then the other variants (and the sweeps' variants) the same way.
    Cells already measured in ``out_dir/rows.jsonl`` with the same plan are skipped; a tokenizer
    whose cells are all measured is not even loaded, so rows measured elsewhere need no model cache.

    ``sweeps``: also the γ / M / noise-type sweeps for ``sweep_families`` (MAR and SiT).
    ``cache_dir``: trained models (default ``runs/cache``, the notebook series' cache).
    ``feature_cache_dir``: the shapes-cnn feature network's cache (default: the kit's cache).
    """
    t_start = time.time()
    plan = compare_plan(plan) if isinstance(plan, str) else plan
    if not isinstance(plan, ComparePlan):
        raise TypeError(f"plan must be a ComparePlan or a plan name, got {type(plan).__name__}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"seeds={seeds} must be one or more ints >= 0")
    tokenizers = tuple(tokenizers)
    for v in tokenizers:
        variant_settings(v)
    # families in any case ("sit" is "SiT"): the cache's folders use one spelling
    generators = tuple(generators)
    generators = _check_names(map(generator_family, generators), GENERATOR_FAMILIES, "generator family") \
        if generators else ()
    sweep_families = _check_names(map(generator_family, sweep_families), GENERATOR_FAMILIES, "generator family") \
        if sweeps else ()
    say = _quiet(log)
    dev = pick_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else Path("runs/cache")
    p = plan.preset
    data = p.data
    meta = {"plan": plan.to_dict(), "seeds": list(seeds), "tokenizers": list(tokenizers),
            "generators": list(generators), "sweeps": bool(sweeps), "device": str(dev),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    plan_key = hashlib.sha256(json.dumps(plan.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    rows_path = out / "rows.jsonl"
    rows = [r for r in read_jsonl(rows_path) if r.get("plan_key") == plan_key]
    done = {(r["kind"], r.get("family"), r["variant"], r["seed"]) for r in rows}

    # the cells: (variant, [families]) in order; the sweeps add variants for their families
    cells: list[tuple[str, list[str]]] = [(v, list(generators)) for v in tokenizers]
    if sweeps:
        for points in SWEEPS.values():
            for _, (g, m, add) in points:
                v = variant_name(g, m, add)
                entry = next((c for c in cells if c[0] == v), None)
                if entry is None:
                    cells.append((v, list(sweep_families)))
                else:
                    entry[1].extend(f for f in sweep_families if f not in entry[1])

    net = get_feature_net(p.eval.feature_net, img_size=data.img_size, seed=data.seed,
                          cache_dir=feature_cache_dir, extractor=plan.extractor, log=say, dataset=data.dataset)
    n_img, bs = plan.eval_images, p.eval.batch_size
    ref = None
    val_x = None

    def record(row: dict) -> None:
        row = {"plan_key": plan_key, "plan": plan.name, **row}
        rows.append(row)
        append_jsonl(rows_path, row)

    def flush() -> CompareResult:
        summary = summarize(rows)
        sw = summarize_sweeps(rows) if sweeps else {}
        meta["elapsed_s"] = round(time.time() - t_start, 1)
        paths = write_outputs(summary, out, meta=meta, sweeps=sw)
        return CompareResult(out, list(rows), summary, sw, paths, time.time() - t_start)

    # plain and ldetok first (the ratio), then the other variants; generators family by family
    primary = [c for c in cells if c[0] in ("plain", "ldetok")]
    groups = [g for g in (primary, [c for c in cells if c[0] not in ("plain", "ldetok")]) if g]
    fam_order = list(dict.fromkeys([*generators, *sweep_families]))
    for group in groups:  # every seed of plain/ldetok before the other variants
        for seed in seeds:
            toks: dict[str, tuple] = {}
            for variant, fams in group:
                if {("tokenizer", None, variant, seed), *(("generator", f, variant, seed) for f in fams)} <= done:
                    continue  # every cell of this tokenizer measured (rows.jsonl): no model needed
                tok = get_tokenizer(p, variant, cache_dir, seed=seed, device=dev, log=say, progress=progress)
                ft = None
                if plan.decoder_finetune_steps:
                    ft = finetune_decoder(p, variant, tok, seed=seed, steps=plan.decoder_finetune_steps, device=dev,
                                          log=say, progress=progress)
                toks[variant] = (tok, ft)
                if ("tokenizer", None, variant, seed) in done:
                    continue
                t0 = time.time()
                final = tok if ft is None else ft
                r = evaluate_tokenizer(final, data, net, num_images=n_img, batch_size=bs, seed=seed, device=dev)
                row = {"kind": "tokenizer", "variant": variant, "seed": seed, **variant_settings(variant),
                       "rfid": r["rfid"], "psnr": r["psnr"], "ssim": r.get("ssim"), "train_s": tok.train_seconds,
                       "warm_start_s": tok.warm_start_seconds, "eval_s": time.time() - t0, "run_dir": tok.run_dir}
                if ft is not None:  # before the fine-tune too: what the second stage bought
                    r0 = evaluate_tokenizer(tok, data, net, num_images=n_img, batch_size=bs, seed=seed, device=dev)
                    row.update(rfid_pretrain=r0["rfid"], psnr_pretrain=r0["psnr"], finetune_s=ft.train_seconds,
                               train_s=tok.train_seconds + ft.train_seconds, finetune_dir=ft.run_dir,
                               eval_s=time.time() - t0)
                if robustness:
                    if val_x is None:
                        ds = make_dataset(data.replace(hflip=False, num_val=max(64, data.num_val)), "val")
                        val_x = torch.stack([ds[i][0] for i in range(64)])
                    row["noise_psnr"] = noise_robustness(final, val_x, taus=(0.5,), gamma=3.0)[0]
                    row["neighbour_corr"] = neighbour_correlation(final, val_x)
                say(f"[compare] tokenizer {variant} s{seed}: rFID {row['rfid']:.2f}  PSNR {row['psnr']:.2f} dB"
                    + (f" (before the decoder fine-tune {row['rfid_pretrain']:.2f} / {row['psnr_pretrain']:.2f} dB)"
                       if ft is not None else "")
                    + (f"  PSNR@tau0.5 {row['noise_psnr']:.1f}  neighbour corr {row['neighbour_corr']:.2f}"
                       if robustness else ""))
                record(row)
                flush()
            for fam in fam_order:
                for variant, fams in group:
                    if fam not in fams or ("generator", fam, variant, seed) in done:
                        continue
                    tok, ft = toks[variant]
                    gen = get_generator(p, fam, variant, cache_dir, seed=seed, device=dev, log=say, progress=progress,
                                        tokenizer=tok)
                    if ft is not None:  # same encoder, same latents: decode the samples with the tuned decoder
                        ft.set_latent_stats(*tok.latent_stats)
                        tok = ft
                    if ref is None:
                        ref = reference_stats(data, net, cache_dir=feature_cache_dir, num_images=max(n_img, min(
                            data.num_train, 5000)), batch_size=bs, device=dev, log=say)
                    t0 = time.time()
                    res = evaluate_generator(gen, tok, data, net, num_images=n_img, batch_size=bs, cfg_scales=(1.0,),
                                             steps=p.generator.num_sampling_steps or None,
                                             temperature=p.generator.temperature, ref_stats=ref, seed=seed,
                                             device=dev, log=lambda *a: None)[0]
                    row = {"kind": "generator", "family": fam, "variant": variant, "seed": seed,
                           "gfid": res["gfid"], "is_mean": res.get("is_mean"),
                           "class_accuracy": res.get("class_accuracy"), "train_s": gen.train_seconds,
                           "eval_s": time.time() - t0, "run_dir": gen.run_dir}
                    say(f"[compare] {fam} on {variant} s{seed}: gFID {row['gfid']:.2f}"
                        + (f"  class acc {row['class_accuracy']:.2f}" if row["class_accuracy"] is not None else ""))
                    record(row)
                    flush()
                    del gen
    result = flush()
    if log is not None:
        log(format_table(result.summary))
        log(f"[compare] outputs in {out} ({result.elapsed_s:.0f} s)")
    return result
