"""The paper's tokenizer × generator comparison and its γ / M / noise-type sweeps (issue 10).

Taught in notebooks/10_compare_tokenizers; the protocol is DETOK_SPEC §5 and the paper's tables
(gFID of six generators on l-DeTok latents vs on a plain autoencoder's latents).

    plan = compare_plan("compare")                       # or smoke | tiny | small | full
    res = run_comparison(plan, seeds=(0, 1, 2), out_dir="runs/compare-long")
    res.summary["ratios"]["SiT"]                          # gFID(l-DeTok) / gFID(plain AE)

- **Plans** (:class:`ComparePlan`): a :class:`~ldetok_lite.config.Preset` plus comparison-only
  settings. ``smoke`` | ``tiny`` | ``small`` | ``full`` are the presets as they are: every
  tokenizer trains from scratch with the preset's budget (at ``tiny`` the l-DeTok tokenizer has
  not converged, TOY_SCALE_NOTES). ``compare`` is the longer CPU comparison (hours on 2 cores,
  minutes on one GPU): one plain AE is trained first (``warm_start_steps``, shared by all seeds),
  then every variant, the plain AE included, continues from it for ``tokenizer_train.steps``
  with its own γ / M / noise type. All tokenizers thus start from the same converged weights and
  end at comparable reconstruction quality; rFID is reported beside every gFID.
  Every plan ends each tokenizer with the paper's second stage (DETOK_SPEC §3.2:
  ``decoder_finetune_steps``, by default half the tokenizer's steps; decoder only, γ = 0, M = 0,
  half the lr): reconstruction improves while the encoder, and so the latents and every
  generator trained on them, stay exactly the same. This is how the paper's tokenizers reach
  matched rFID; the table shows rFID before and after it.
- **Variants**: the five named ones of :data:`ldetok_lite.artifacts.TOKENIZER_VARIANTS` (plain,
  mask_only, noise_only, ldetok, additive) and any ``g{γ}-m{M}[-add]`` built by
  :func:`variant_name` (the sweeps).
- **Caching**: unmodified ``smoke``/``tiny``/``small``/``full`` plans with named variants use the
  notebook series' cache (``artifacts.get_tokenizer`` / ``get_generator``); everything else
  lives under ``cache_dir/compare/`` in directories named by a hash of their settings, so a
  re-run reuses every finished model and resumes interrupted ones.
- **Metrics**: rFID and PSNR/SSIM of each tokenizer on held-out images, gFID / IS / class
  accuracy of each generator (cfg 1, class-balanced samples) against the training data's
  statistics, with the preset's feature network (offline ``shapes-cnn`` at smoke/tiny,
  Inception at small/full); see ``ldetok_lite.benchmarks.evaluate``.
- **Outputs** (``out_dir``): ``rows.jsonl`` (one line per measured cell, appended as the run
  goes), ``summary.json``, ``table.csv`` (one row per generator × tokenizer), ``ratios.csv``,
  ``comparison.png`` (ratio bars next to the paper's), and with sweeps ``sweeps.csv`` /
  ``sweeps.png``. :func:`load_comparison` reads a run directory back (also a partial one).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn

from . import artifacts
from .config import PRESET_NAMES, Preset, load_preset

GENERATOR_FAMILIES = ("DiT", "SiT", "LightningDiT", "MAR", "RandomAR", "RasterAR")
TOKENIZER_ORDER = ("plain", "mask_only", "noise_only", "ldetok", "additive")
PLAN_NAMES = PRESET_NAMES + ("compare",)

#: The paper's gFIDs (l-DeTok, baseline) behind the ratios quoted in issue 10.
PAPER_GFID = {
    "own no-noise baseline": {"MAR": (2.65, 3.31), "SiT": (5.50, 6.97)},
    "vs MAR-VAE": {"MAR": (2.43, 3.71), "RandomAR": (5.22, 11.78), "RasterAR": (4.46, 7.99),
                   "SiT": (5.13, 6.26), "DiT": (6.58, 8.20), "LightningDiT": (3.63, 3.98)},
}
PAPER_RATIOS = {k: {f: round(a / b, 3) for f, (a, b) in v.items()} for k, v in PAPER_GFID.items()}

#: The paper's sweeps (l-DeTok paper, ablation tables): the swept value and (γ, M, additive).
SWEEPS = {
    "gamma": [(g, (float(g), 0.7, False)) for g in (0, 1, 2, 3, 4)],
    "mask_ratio": [(m, (3.0, m, False)) for m in (0.0, 0.5, 0.7, 0.9)],
    "noise_type": [("interpolative", (3.0, 0.7, False)), ("additive", (3.0, 0.7, True))],
}
SWEEP_FAMILIES = ("MAR", "SiT")


# ============================================================================================
# Variants and plans
# ============================================================================================

def variant_name(gamma: float, mask_ratio: float, additive: bool = False) -> str:
    """The name of a tokenizer variant with explicit settings: named variants keep their name
    (``(3, 0.7, False)`` -> ``"ldetok"``), others are ``g{γ}-m{M}`` (+ ``-add``)."""
    gamma, mask_ratio = float(gamma), float(mask_ratio)
    if gamma < 0:
        raise ValueError(f"gamma={gamma} is out of range; allowed >= 0")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio} is out of range; allowed [0, 1)")
    for name, v in artifacts.TOKENIZER_VARIANTS.items():
        if (float(v["gamma"]), float(v["mask_ratio"]), bool(v.get("use_additive_noise", False))) == (
                gamma, mask_ratio, bool(additive)):
            return name
    return f"g{gamma:g}-m{mask_ratio:g}" + ("-add" if additive else "")


_CUSTOM = re.compile(r"^g([0-9.]+)-m([0-9.]+)(-add)?$")


def variant_settings(name: str) -> dict:
    """``{"gamma", "mask_ratio", "use_additive_noise"}`` of a named or ``g{γ}-m{M}[-add]`` variant."""
    if name in artifacts.TOKENIZER_VARIANTS:
        return {"use_additive_noise": False, **artifacts.TOKENIZER_VARIANTS[name]}
    m = _CUSTOM.match(str(name))
    if m is None:
        raise ValueError(f"tokenizer variant {name!r} is not known; allowed: {', '.join(artifacts.TOKENIZER_VARIANTS)}"
                         " or 'g<gamma>-m<mask_ratio>[-add]' (e.g. 'g2-m0.7')")
    gamma, mask = float(m.group(1)), float(m.group(2))
    variant_name(gamma, mask)  # range checks
    return {"gamma": gamma, "mask_ratio": mask, "use_additive_noise": bool(m.group(3))}


@dataclass(frozen=True)
class ComparePlan:
    """What the comparison trains and how it measures (see the module docstring).

    ``warm_start_steps``: steps of the shared plain AE every variant continues from (0: each
    tokenizer trains from scratch). ``decoder_finetune_steps``: the decoder-only second stage of
    every tokenizer (0: none; see the module docstring). ``num_images``: images per rFID / gFID (default: the preset's
    ``eval.num_images``). ``extractor``: shapes-cnn training settings (smoke | tiny).
    """

    name: str
    preset: Preset
    warm_start_steps: int = 0
    num_images: int = 0
    extractor: str = "tiny"
    notes: str = ""
    decoder_finetune_steps: int = 0

    @property
    def eval_images(self) -> int:
        return self.num_images or self.preset.eval.num_images

    @property
    def uses_series_cache(self) -> bool:
        """True when the notebook series' cached tokenizers/generators are the same models."""
        return (self.warm_start_steps == 0 and self.preset.name == self.name
                and self.preset == load_preset(self.preset.name))

    def to_dict(self) -> dict:
        return {"name": self.name, "preset": self.preset.to_dict(), "warm_start_steps": self.warm_start_steps,
                "decoder_finetune_steps": self.decoder_finetune_steps, "num_images": self.eval_images,
                "extractor": self.extractor, "notes": self.notes}


def _compare_long() -> ComparePlan:
    # tiny's data, models and recipes; longer, and warm-started (TOY_SCALE_NOTES "Lessons"):
    # plain AE 2000 steps (~PSNR 32 dB), then each variant 2000 more with its own γ/M, then a
    # 1000-step decoder-only fine-tune (matched rFID); generators 3000 steps; 1000 images per FID.
    p = load_preset("tiny").override(**{
        "tokenizer_train.steps": 2000, "tokenizer_train.warmup_frac": 0.02, "tokenizer_train.blr": 2e-3,
        "generator_train.steps": 3000, "eval.num_images": 1000,
    })
    return ComparePlan("compare", p, warm_start_steps=2000, extractor="tiny", decoder_finetune_steps=1000,
                       notes="tiny models; shared plain-AE warm start (2000 steps) + 2000 steps per variant "
                             "+ 1000 decoder-only; generators 3000 steps; shapes-cnn FID on 1000 images")


def compare_plan(name: str = "tiny", *, warm_start_steps: int | None = None, num_images: int | None = None,
                 overrides: dict | None = None, decoder_finetune_steps: int | None = None) -> ComparePlan:
    """The plan called ``name`` (smoke | tiny | small | full | compare), with optional changes:
    ``warm_start_steps``, ``num_images``, ``decoder_finetune_steps`` (default: half the tokenizer's
    steps, as the paper's 100 of 200 epochs; 0 = none) and dotted preset ``overrides``
    (``{"generator_train.steps": 500}``)."""
    if name == "compare":
        plan = _compare_long()
    elif name in PRESET_NAMES:
        p = load_preset(name)  # the paper fine-tunes the decoder for half the pre-training epochs
        plan = ComparePlan(name, p, extractor="smoke" if name == "smoke" else "tiny",
                           decoder_finetune_steps=max(1, p.tokenizer_train.steps // 2))
    else:
        raise ValueError(f"plan {name!r} is not known; allowed: {', '.join(PLAN_NAMES)}")
    preset = plan.preset.override(**overrides) if overrides else plan.preset
    ws = plan.warm_start_steps if warm_start_steps is None else int(warm_start_steps)
    if ws < 0:
        raise ValueError(f"warm_start_steps={ws} is out of range; allowed >= 0")
    n = plan.num_images if num_images is None else int(num_images)
    if n and n < 2:
        raise ValueError(f"num_images={n} must be >= 2 (FID needs a covariance)")
    ft = plan.decoder_finetune_steps if decoder_finetune_steps is None else int(decoder_finetune_steps)
    if ft < 0:
        raise ValueError(f"decoder_finetune_steps={ft} is out of range; allowed >= 0")
    return ComparePlan(plan.name, preset, ws, n, plan.extractor, plan.notes, ft)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


# ============================================================================================
# Trained models (cached)
# ============================================================================================

def _tok_configs(plan: ComparePlan, variant: str, seed: int):
    p = plan.preset
    # the plan's own warm start (``warm_start_steps``) replaces the preset's ``tokenizer.warm_start``;
    # without one, the preset's (tiny: the corrupted variants continue from this seed's plain AE)
    tok = p.tokenizer.replace(**variant_settings(variant))
    is_plain = tok.gamma == 0 and tok.mask_ratio == 0 and not tok.use_additive_noise
    if plan.warm_start_steps > 0 or is_plain:
        tok = tok.replace(warm_start="none")
    return tok, p.tokenizer_train.replace(seed=seed), p.data


def _base_dir(plan: ComparePlan, cache_dir) -> Path:
    p = plan.preset
    cfg = {"tok": p.tokenizer.as_plain().to_dict(),
           "train": p.tokenizer_train.replace(steps=plan.warm_start_steps, seed=0).to_dict(), "data": p.data.to_dict()}
    return Path(cache_dir) / "compare" / "tokenizers" / f"{plan.name}-base{plan.warm_start_steps}-{_digest(cfg)}"


def tokenizer_run_dir(plan: ComparePlan, variant: str, cache_dir, seed: int = 0) -> Path:
    """Where the comparison keeps (or finds) the ``variant`` tokenizer of ``seed``."""
    if plan.uses_series_cache and variant in artifacts.TOKENIZER_VARIANTS:
        return artifacts.tokenizer_dir(plan.preset, variant, cache_dir, seed)
    tok, train, data = _tok_configs(plan, variant, seed)
    cfg = {"tok": tok.to_dict(), "train": train.to_dict(), "data": data.to_dict(), "warm": plan.warm_start_steps}
    return Path(cache_dir) / "compare" / "tokenizers" / f"{plan.name}-{variant}-s{seed}-{_digest(cfg)}"


def _train_quiet(log):
    return (lambda *a, **k: None) if log is None else log


def get_tokenizer(plan: ComparePlan, variant: str, cache_dir, seed: int = 0, device="auto",
                  log: Callable | None = print, progress: str = "log") -> tuple[nn.Module, dict]:
    """The ``variant`` tokenizer of ``plan`` (trained, resumed, or loaded) and
    ``{"run_dir", "train_s", "warm_start_s"}``. EMA weights, eval mode."""
    from .train import train_tokenizer

    log = _train_quiet(log)
    variant_settings(variant)
    if plan.uses_series_cache and variant in artifacts.TOKENIZER_VARIANTS:
        t0 = time.time()
        tok = artifacts.get_tokenizer(plan.preset, variant, cache_dir, seed=seed, device=device, log=log,
                                      progress=progress)
        return tok, {"run_dir": tok.run_dir, "train_s": _elapsed(tok.run_dir, time.time() - t0), "warm_start_s": 0.0}
    tok_cfg, train_cfg, data_cfg = _tok_configs(plan, variant, seed)
    init_from, warm_s = None, 0.0
    if plan.warm_start_steps > 0:
        base = _base_dir(plan, cache_dir)
        base_cfg = tok_cfg.as_plain()
        log(f"[compare] warm start: plain AE, {plan.warm_start_steps} steps ({base.name})")
        res = train_tokenizer(base_cfg, train_cfg.replace(steps=plan.warm_start_steps, seed=0), data_cfg, base,
                              device=device, progress=progress, log=log)
        init_from, warm_s = res.checkpoint, res.elapsed_s
    elif tok_cfg.warm_start == "plain":  # the preset's warm start: this seed's plain AE of the same plan
        from . import checkpoint as ckpt

        base_tok, base_info = get_tokenizer(plan, "plain", cache_dir, seed=seed, device=device, log=log,
                                            progress=progress)
        init_from, warm_s = ckpt.latest_checkpoint(base_tok.run_dir, log=lambda *_: None), base_info["train_s"]
        log(f"[compare] {variant} s{seed} continues from the plain AE ({init_from})")
    run_dir = tokenizer_run_dir(plan, variant, cache_dir, seed)
    log(f"[compare] tokenizer {variant} s{seed}: γ={tok_cfg.gamma} M={tok_cfg.mask_ratio}"
        f"{' additive' if tok_cfg.use_additive_noise else ''}, {train_cfg.steps} steps ({run_dir.name})")
    res = train_tokenizer(tok_cfg, train_cfg, data_cfg, run_dir, device=device, init_from=init_from,
                          progress=progress, log=log)
    model = res.ema_model.eval()
    model.run_dir = str(run_dir)
    model.variant = variant
    model.checkpoint_dir = str(res.checkpoint) if res.checkpoint else None
    return model, {"run_dir": str(run_dir), "train_s": res.elapsed_s, "warm_start_s": warm_s}


def finetune_decoder(plan: ComparePlan, variant: str, tokenizer: nn.Module, seed: int = 0, device="auto",
                      log: Callable | None = print, progress: str = "log") -> tuple[nn.Module, dict]:
    """The paper's second tokenizer stage (DETOK_SPEC §3.2) on a trained ``tokenizer``: the decoder
    alone trains ``plan.decoder_finetune_steps`` more steps on clean latents (γ = 0, M = 0, half the
    lr, 5 % warmup). It starts from the EMA weights, so the encoder, the latents and every
    generator trained on them stay exactly as they were; only reconstructions change.
    Returns ``(tokenizer, {"run_dir", "finetune_s"})``."""
    from . import checkpoint as ckpt
    from .train import train_tokenizer

    log = _train_quiet(log)
    steps = plan.decoder_finetune_steps
    if steps < 1:
        raise ValueError(f"plan {plan.name!r} has decoder_finetune_steps={steps}; allowed >= 1 here")
    p = plan.preset
    tok_cfg = p.tokenizer.replace(**variant_settings(variant), warm_start="none").replace(
        decoder_only=True, gamma=0.0, mask_ratio=0.0, use_additive_noise=False)
    t = p.tokenizer_train
    train_cfg = t.replace(steps=steps, seed=seed, warmup_frac=0.05, blr=t.blr / 2, lr=t.lr / 2)
    src = ckpt.latest_checkpoint(tokenizer.run_dir, log=lambda *_: None)
    if src is None:
        raise ValueError(f"tokenizer {variant!r} has no finished checkpoint in {tokenizer.run_dir}")
    run_dir = Path(tokenizer.run_dir).with_name(f"{Path(tokenizer.run_dir).name}-ft{steps}")
    log(f"[compare] decoder fine-tune {variant} s{seed}: {steps} steps, γ=0 M=0 ({run_dir.name})")
    res = train_tokenizer(tok_cfg, train_cfg, p.data, run_dir, device=device, init_from=src, init_weights="ema",
                          progress=progress, log=log)
    model = res.ema_model.eval()
    before, after = tokenizer.encoder.state_dict(), model.encoder.state_dict()
    if any(not torch.equal(before[k].to(v.device), v) for k, v in after.items()):
        raise RuntimeError(f"the decoder fine-tune of {variant!r} changed the encoder ({run_dir}); "
                           "its latents would no longer match the generators")
    model.run_dir, model.variant = str(run_dir), variant
    return model, {"run_dir": str(run_dir), "finetune_s": res.elapsed_s}


def _elapsed(run_dir, fallback: float) -> float:
    from . import checkpoint as ckpt

    try:
        latest = ckpt.latest_checkpoint(run_dir, log=lambda *_: None)
        return float(ckpt.load_train_state(latest).get("elapsed_s", fallback))
    except Exception:
        return fallback


def get_generator(plan: ComparePlan, family: str, variant: str, tokenizer: nn.Module, cache_dir, seed: int = 0,
                  device="auto", log: Callable | None = print, progress: str = "log") -> tuple[nn.Module, dict]:
    """The ``family`` generator trained on ``tokenizer``'s latents (trained, resumed or loaded);
    sets the generator's latent statistics on ``tokenizer``. Returns ``(generator, info)``."""
    from . import checkpoint as ckpt
    from .train import _tokenizer_fingerprint, train_generator

    log = _train_quiet(log)
    if family not in GENERATOR_FAMILIES:
        raise ValueError(f"generator family {family!r} is not known; allowed: {', '.join(GENERATOR_FAMILIES)}")
    p = plan.preset
    if plan.uses_series_cache and variant in artifacts.TOKENIZER_VARIANTS:
        t0 = time.time()
        gen = artifacts.get_generator(p, family, variant, cache_dir, seed=seed, device=device, log=log,
                                      progress=progress, tokenizer=tokenizer)
        return gen, {"run_dir": gen.run_dir, "train_s": _elapsed(gen.run_dir, time.time() - t0)}
    gen_cfg, train_cfg = p.generator, p.generator_train.replace(seed=seed)
    fp = _tokenizer_fingerprint(tokenizer, p.data)
    cfg = {"gen": gen_cfg.to_dict(), "train": train_cfg.to_dict(), "data": p.data.to_dict(), "tok": fp}
    run_dir = Path(cache_dir) / "compare" / "generators" / f"{plan.name}-{family}-{variant}-s{seed}-{_digest(cfg)}"
    log(f"[compare] generator {family}_{gen_cfg.size} on {variant} s{seed}: {train_cfg.steps} steps ({run_dir.name})")
    # one latent cache per tokenizer (named by its fingerprint), shared by its six generators
    train = partial(train_generator, family, gen_cfg, train_cfg, p.data, tokenizer, run_dir, device=device,
                    progress=progress, log=log, latent_cache_dir=Path(cache_dir) / "compare" / "latents")
    try:
        res = train()
    except ckpt.CheckpointError as e:  # a run of other settings sits there: move it aside
        artifacts.move_aside(run_dir, f"does not resume ({e})", log)
        res = train()
    gen = res.ema_model.eval()
    gen.run_dir = str(run_dir)
    return gen, {"run_dir": str(run_dir), "train_s": res.elapsed_s}


# ============================================================================================
# Mechanisms visible at any budget: robustness and latent smoothness
# ============================================================================================

@torch.no_grad()
def noise_robustness(tokenizer: nn.Module, images: torch.Tensor, taus: Iterable[float] = (0.0, 0.25, 0.5, 0.75),
                     gamma: float = 3.0, seed: int = 0) -> list[float]:
    """PSNR (dB) of decoding latents corrupted by interpolative noise x' = (1-τ)x + τγε (paper
    eq. 1) for each τ: how well the decoder copes with noisy latents (TOY_SCALE_NOTES)."""
    from .metrics import psnr

    dev = next(tokenizer.parameters()).device
    x = images.to(dev)
    out = []
    for tau in taus:
        if not 0.0 <= float(tau) <= 1.0:
            raise ValueError(f"tau={tau} is out of range; allowed [0, 1]")
        g = torch.Generator(device=dev).manual_seed(seed)
        z, ids, _ = tokenizer.encode(x, mask_ratio=0.0, noise_tau=float(tau), gamma=float(gamma), generator=g)
        out.append(float(psnr(tokenizer.decode(z, ids).clamp(0, 1), x)))
    return out


@torch.no_grad()
def neighbour_correlation(tokenizer: nn.Module, images: torch.Tensor) -> float:
    """Mean Pearson correlation of each latent channel between horizontally and vertically
    adjacent tokens (posterior mean, per-channel standardized): a measure of latent smoothness."""
    dev = next(tokenizer.parameters()).device
    z = tokenizer.tokenize(images.to(dev)).float()  # (B, C, h, w)
    z = (z - z.mean(dim=(0, 2, 3), keepdim=True)) / z.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    pairs = [(z[..., :, :-1], z[..., :, 1:]), (z[..., :-1, :], z[..., 1:, :])]
    vals = []
    for a, b in pairs:
        a = a.transpose(0, 1).reshape(z.shape[1], -1)
        b = b.transpose(0, 1).reshape(z.shape[1], -1)
        a = a - a.mean(1, keepdim=True)
        b = b - b.mean(1, keepdim=True)
        vals.append((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12))
    return float(torch.stack(vals).mean())


# ============================================================================================
# The table: pure functions of the measured rows
# ============================================================================================

def _mean_std(values) -> tuple[float, float, int]:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return float("nan"), float("nan"), 0
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s, len(v)


def summarize(rows: list[dict], baseline: str = "plain", target: str = "ldetok") -> dict:
    """The paper's table from measured rows (see :func:`run_comparison`).

    ``rows``: dicts with ``kind`` "tokenizer" (``variant``, ``seed``, ``rfid``, ``psnr``, ...) or
    "generator" (``family``, ``variant``, ``seed``, ``gfid``, ...). Returns ``{"tokenizers":
    {variant: {rfid_mean, rfid_std, psnr_mean, ..., n}}, "generators": {family: {variant:
    {gfid_mean, gfid_std, n, rfid_mean, ...}}}, "ratios": {family: {mean, std, n, per_seed,
    of_means}}, "paper_ratios", "beats_baseline"}``. The ratio gFID(target)/gFID(baseline) is
    taken per seed (paired) and then averaged; ``of_means`` is the ratio of the mean gFIDs.
    """
    toks: dict[str, dict] = {}
    by_tok: dict[str, list] = {}
    for r in rows:
        if r.get("kind") == "tokenizer":
            by_tok.setdefault(r["variant"], []).append(r)
    for v, rs in by_tok.items():
        d = {"n": len(rs), "seeds": sorted(r["seed"] for r in rs)}
        for key in ("rfid", "psnr", "ssim", "train_s", "noise_psnr", "neighbour_corr", "rfid_pretrain",
                    "psnr_pretrain", "finetune_s"):
            m, s, n = _mean_std(r.get(key) for r in rs)
            if n:
                d[f"{key}_mean"], d[f"{key}_std"] = m, s
        for key in ("gamma", "mask_ratio", "use_additive_noise"):
            if key in rs[0]:
                d[key] = rs[0][key]
        toks[v] = d
    gens: dict[str, dict] = {}
    cells: dict[tuple, list] = {}
    for r in rows:
        if r.get("kind") == "generator":
            cells.setdefault((r["family"], r["variant"]), []).append(r)
    for (fam, v), rs in cells.items():
        d = {"n": len(rs), "seeds": sorted(r["seed"] for r in rs)}
        for key in ("gfid", "is_mean", "class_accuracy", "train_s", "eval_s"):
            m, s, n = _mean_std(r.get(key) for r in rs)
            if n:
                d[f"{key}_mean"], d[f"{key}_std"] = m, s
        if v in toks and "rfid_mean" in toks[v]:
            d["rfid_mean"], d["rfid_std"] = toks[v]["rfid_mean"], toks[v]["rfid_std"]
        gens.setdefault(fam, {})[v] = d
    ratios = {}
    for fam, per in gens.items():
        if baseline not in per or target not in per:
            continue
        base = {r["seed"]: r["gfid"] for r in cells[(fam, baseline)]}
        tgt = {r["seed"]: r["gfid"] for r in cells[(fam, target)]}
        per_seed = {s: tgt[s] / base[s] for s in sorted(set(base) & set(tgt)) if base[s] and base[s] > 0}
        m, s, n = _mean_std(per_seed.values())
        of_means = per[target]["gfid_mean"] / per[baseline]["gfid_mean"] if per[baseline].get("gfid_mean") else None
        ratios[fam] = {"mean": m, "std": s, "n": n, "per_seed": per_seed, "of_means": of_means,
                       "paper_vs_own_baseline": PAPER_RATIOS["own no-noise baseline"].get(fam),
                       "paper_vs_mar_vae": PAPER_RATIOS["vs MAR-VAE"].get(fam)}
    beats = {fam: (r["mean"] < 0.99) if r["n"] else None for fam, r in ratios.items()}
    return {"baseline": baseline, "target": target, "tokenizers": toks, "generators": gens, "ratios": ratios,
            "beats_baseline": beats, "paper_ratios": PAPER_RATIOS, "paper_gfid": PAPER_GFID}


def summarize_sweeps(rows: list[dict]) -> dict:
    """{sweep: {family: [{"value", "variant", "gfid_mean", "gfid_std", "rfid_mean", "n"}]}} from
    rows that carry ``sweep`` / ``sweep_value`` (generator rows) and tokenizer rows (rFID)."""
    tok_rfid: dict[str, list] = {}
    for r in rows:
        if r.get("kind") == "tokenizer":
            tok_rfid.setdefault(r["variant"], []).append(r.get("rfid"))
    out: dict[str, dict] = {}
    for sweep, points in SWEEPS.items():
        for fam in sorted({r["family"] for r in rows if r.get("kind") == "generator"}):
            series = []
            for value, (g, m, add) in points:
                v = variant_name(g, m, add)
                gf = [r["gfid"] for r in rows if r.get("kind") == "generator" and r["family"] == fam
                      and r["variant"] == v]
                if not gf:
                    continue
                gm, gs, n = _mean_std(gf)
                rm, rs, _ = _mean_std(tok_rfid.get(v, []))
                series.append({"value": value, "variant": v, "gfid_mean": gm, "gfid_std": gs, "n": n,
                               "rfid_mean": rm, "rfid_std": rs})
            if len(series) > 1:
                out.setdefault(sweep, {})[fam] = series
    return out


def _fmt(m, s=None, nd=2) -> str:
    if m is None or (isinstance(m, float) and not math.isfinite(m)):
        return "-"
    return f"{m:.{nd}f}" + (f" ± {s:.{nd}f}" if s else "")


def format_table(summary: dict) -> str:
    """The summary as plain text: tokenizers (rFID, PSNR), then gFID per generator and tokenizer
    with the tokenizer's rFID beside it, then the ratios next to the paper's."""
    ft = any("rfid_pretrain_mean" in d for d in summary["tokenizers"].values())
    lines = ["tokenizer        rFID              PSNR (dB)        train s   seeds"
             + ("   before the decoder fine-tune: rFID / PSNR" if ft else "")]
    for v in _ordered(summary["tokenizers"]):
        d = summary["tokenizers"][v]
        lines.append(f"{v:<16} {_fmt(d.get('rfid_mean'), d.get('rfid_std')):<17} "
                     f"{_fmt(d.get('psnr_mean'), d.get('psnr_std')):<16} {d.get('train_s_mean', 0):>7.0f}   {d['n']}"
                     + (f"       {_fmt(d.get('rfid_pretrain_mean'))} / {_fmt(d.get('psnr_pretrain_mean'))}"
                        if ft else ""))
    lines.append("")
    lines.append("generator     tokenizer        gFID              (rFID)    IS     class acc  train s  seeds")
    for fam in _ordered_fams(summary["generators"]):
        for v in _ordered(summary["generators"][fam]):
            d = summary["generators"][fam][v]
            lines.append(f"{fam:<13} {v:<16} {_fmt(d.get('gfid_mean'), d.get('gfid_std')):<17} "
                         f"({_fmt(d.get('rfid_mean'))}) {_fmt(d.get('is_mean_mean')):>8} "
                         f"{_fmt(d.get('class_accuracy_mean')):>8} {d.get('train_s_mean', 0):>8.0f}  {d['n']}")
    if summary["ratios"]:
        lines.append("")
        lines.append(f"gFID({summary['target']}) / gFID({summary['baseline']})   ours (mean ± std over seeds)   "
                     "paper (own baseline / vs MAR-VAE)   beats?")
        for fam in _ordered_fams(summary["ratios"]):
            r = summary["ratios"][fam]
            p1, p2 = r.get("paper_vs_own_baseline"), r.get("paper_vs_mar_vae")
            lines.append(f"{fam:<13} {_fmt(r['mean'], r['std'], 3):<22} n={r['n']}      "
                         f"{_fmt(p1, None, 3):>6} / {_fmt(p2, None, 3):<6}          "
                         f"{'yes' if summary['beats_baseline'].get(fam) else 'no'}")
    return "\n".join(lines)


def _ordered(names) -> list[str]:
    return sorted(names, key=lambda v: (TOKENIZER_ORDER.index(v) if v in TOKENIZER_ORDER else 99, v))


def _ordered_fams(names) -> list[str]:
    return sorted(names, key=lambda f: (GENERATOR_FAMILIES.index(f) if f in GENERATOR_FAMILIES else 99, f))


# ============================================================================================
# Outputs
# ============================================================================================

def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _csv_text(header: list[str], rows: list[list]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow(["" if (x is None or (isinstance(x, float) and not math.isfinite(x))) else
                    (round(x, 5) if isinstance(x, float) else x) for x in r])
    return buf.getvalue()


def write_outputs(summary: dict, out_dir, meta: dict | None = None, sweeps: dict | None = None) -> dict[str, Path]:
    """Write ``summary.json``, ``table.csv``, ``ratios.csv``, ``comparison.png`` (and with
    ``sweeps`` ``sweeps.csv`` / ``sweeps.png``, else ``tokenizers.csv`` always) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    payload = {"meta": meta or {}, **summary}
    if sweeps:
        payload["sweeps"] = sweeps
    paths["json"] = out / "summary.json"
    _atomic_write(paths["json"], json.dumps(payload, indent=2, default=str))
    trows = []
    for fam in _ordered_fams(summary["generators"]):
        for v in _ordered(summary["generators"][fam]):
            d = summary["generators"][fam][v]
            ratio = summary["ratios"].get(fam, {}) if v == summary["target"] else {}
            trows.append([fam, v, d.get("gfid_mean"), d.get("gfid_std"), d["n"], d.get("rfid_mean"),
                          summary["tokenizers"].get(v, {}).get("psnr_mean"), d.get("is_mean_mean"),
                          d.get("class_accuracy_mean"), ratio.get("mean"), ratio.get("std"), d.get("train_s_mean"),
                          d.get("eval_s_mean")])
    paths["csv"] = out / "table.csv"
    _atomic_write(paths["csv"], _csv_text(
        ["generator", "tokenizer", "gfid_mean", "gfid_std", "seeds", "tokenizer_rfid", "tokenizer_psnr", "is",
         "class_accuracy", "ratio_mean", "ratio_std", "train_s", "eval_s"], trows))
    paths["tokenizers_csv"] = out / "tokenizers.csv"
    _atomic_write(paths["tokenizers_csv"], _csv_text(
        ["tokenizer", "gamma", "mask_ratio", "additive", "rfid_mean", "rfid_std", "psnr_mean", "psnr_std", "seeds",
         "train_s"],
        [[v, d.get("gamma"), d.get("mask_ratio"), d.get("use_additive_noise"), d.get("rfid_mean"), d.get("rfid_std"),
          d.get("psnr_mean"), d.get("psnr_std"), d["n"], d.get("train_s_mean")]
         for v, d in ((v, summary["tokenizers"][v]) for v in _ordered(summary["tokenizers"]))]))
    paths["ratios_csv"] = out / "ratios.csv"
    _atomic_write(paths["ratios_csv"], _csv_text(
        ["generator", "ratio_mean", "ratio_std", "seeds", "ratio_of_means", "paper_vs_own_baseline", "paper_vs_mar_vae",
         "beats_baseline"],
        [[f, r["mean"], r["std"], r["n"], r["of_means"], r["paper_vs_own_baseline"], r["paper_vs_mar_vae"],
          summary["beats_baseline"].get(f)] for f, r in ((f, summary["ratios"][f])
                                                         for f in _ordered_fams(summary["ratios"]))]))
    paths["table_txt"] = out / "table.txt"
    _atomic_write(paths["table_txt"], format_table(summary) + "\n")
    paths["png"] = out / "comparison.png"
    plot_comparison(summary).savefig(paths["png"], dpi=110, bbox_inches="tight")
    if sweeps:
        paths["sweeps_csv"] = out / "sweeps.csv"
        _atomic_write(paths["sweeps_csv"], _csv_text(
            ["sweep", "generator", "value", "tokenizer", "gfid_mean", "gfid_std", "seeds", "tokenizer_rfid"],
            [[s, f, p["value"], p["variant"], p["gfid_mean"], p["gfid_std"], p["n"], p["rfid_mean"]]
             for s, fams in sweeps.items() for f, pts in fams.items() for p in pts]))
        paths["sweeps_png"] = out / "sweeps.png"
        plot_sweeps(sweeps).savefig(paths["sweeps_png"], dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close("all")
    return paths


def plot_comparison(summary: dict):
    """Left: gFID per generator for each tokenizer (error bars: std over seeds; rFID in the
    legend). Right: the ratio gFID(l-DeTok)/gFID(plain) per generator next to the paper's."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    fams = _ordered_fams(summary["generators"])
    variants = _ordered({v for f in fams for v in summary["generators"][f]})
    ax = axes[0]
    w = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        xs, ys, es = [], [], []
        for j, f in enumerate(fams):
            d = summary["generators"][f].get(v)
            if d and "gfid_mean" in d:
                xs.append(j + (i - (len(variants) - 1) / 2) * w)
                ys.append(d["gfid_mean"])
                es.append(d.get("gfid_std", 0.0))
        rf = summary["tokenizers"].get(v, {}).get("rfid_mean")
        ax.bar(xs, ys, w, yerr=es, capsize=2, label=f"{v} (rFID {_fmt(rf, None, 1)})")
    ax.set_xticks(range(len(fams)), fams, rotation=20)
    ax.set_ylabel("gFID (lower is better)")
    ax.set_title("gFID per generator and tokenizer")
    if fams:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no generator measured yet", ha="center", va="center", transform=ax.transAxes)
    ax = axes[1]
    rfams = _ordered_fams(summary["ratios"])
    if rfams:
        x = range(len(rfams))
        ours = [summary["ratios"][f]["mean"] for f in rfams]
        err = [summary["ratios"][f]["std"] for f in rfams]
        p_own = [summary["ratios"][f]["paper_vs_own_baseline"] or float("nan") for f in rfams]
        p_vae = [summary["ratios"][f]["paper_vs_mar_vae"] or float("nan") for f in rfams]
        ax.bar([i - 0.27 for i in x], ours, 0.27, yerr=err, capsize=2, label="this run")
        ax.bar(list(x), p_own, 0.27, label="paper vs own baseline")
        ax.bar([i + 0.27 for i in x], p_vae, 0.27, label="paper vs MAR-VAE")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(0.85, color="gray", ls="--", lw=0.8, label="goal 0.85")
        ax.set_xticks(list(x), rfams, rotation=20)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no ratio yet (needs plain and ldetok\nfor the same generator)", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_title(f"gFID({summary['target']}) / gFID({summary['baseline']})  (< 1: {summary['target']} wins)")
    fig.tight_layout()
    return fig


def plot_sweeps(sweeps: dict):
    """gFID against γ, M and the noise type (one panel per sweep; rFID annotated)."""
    import matplotlib.pyplot as plt

    names = [s for s in SWEEPS if s in sweeps]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.2 * max(len(names), 1), 3.6), squeeze=False)
    for ax, s in zip(axes[0], names):
        for fam, pts in sweeps[s].items():
            xs = list(range(len(pts))) if s == "noise_type" else [p["value"] for p in pts]
            ax.errorbar(xs, [p["gfid_mean"] for p in pts], yerr=[p["gfid_std"] for p in pts], marker="o",
                        capsize=2, label=fam)
            for x, p in zip(xs, pts):
                ax.annotate(f"r{_fmt(p['rfid_mean'], None, 1)}", (x, p["gfid_mean"]), fontsize=6,
                            textcoords="offset points", xytext=(3, 3))
            if s == "noise_type":
                ax.set_xticks(xs, [str(p["value"]) for p in pts])
        ax.set_xlabel({"gamma": "noise strength γ (M = 0.7)", "mask_ratio": "max mask ratio M (γ = 3)",
                       "noise_type": "noise type (γ = 3, M = 0.7)"}[s])
        ax.set_ylabel("gFID (r = tokenizer rFID)")
        ax.legend(fontsize=7)
    fig.suptitle("the paper's sweeps (paper: best near γ = 3, M = 0.7-0.9, interpolative)")
    fig.tight_layout()
    return fig


# ============================================================================================
# The run
# ============================================================================================

@dataclass
class CompareResult:
    """What :func:`run_comparison` returns (``rows`` also in ``out_dir/rows.jsonl``)."""

    out_dir: Path
    rows: list[dict]
    summary: dict
    sweeps: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by an interrupted write
    return rows


def load_comparison(out_dir) -> dict | None:
    """A run directory's summary (recomputed from ``rows.jsonl``, so partial runs work too);
    ``None`` when the directory holds no rows. Keys as :func:`summarize` plus ``sweeps``, ``meta``."""
    out = Path(out_dir)
    rows = _read_rows(out / "rows.jsonl")
    if not rows:
        return None
    meta = {}
    if (out / "summary.json").is_file():
        try:
            meta = json.loads((out / "summary.json").read_text()).get("meta", {})
        except json.JSONDecodeError:
            pass
    return {**summarize(rows), "sweeps": summarize_sweeps(rows), "meta": meta, "rows": rows}


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
    Cells already measured in ``out_dir/rows.jsonl`` with the same plan are skipped.

    ``sweeps``: also the γ / M / noise-type sweeps for ``sweep_families`` (MAR and SiT).
    ``cache_dir``: trained models (default ``runs/cache``, the notebook series' cache).
    ``feature_cache_dir``: the shapes-cnn feature network's cache (default: ``fid``'s).
    """
    from .benchmarks.evaluate import evaluate_generator, evaluate_tokenizer, reference_stats
    from .device import pick_device
    from . import fid

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
    generators = _check_names(generators, GENERATOR_FAMILIES, "generator family") if tuple(generators) else ()
    sweep_families = _check_names(sweep_families, GENERATOR_FAMILIES, "generator family") if sweeps else ()
    say = _train_quiet(log)
    dev = pick_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else Path("runs/cache")
    p = plan.preset
    data = p.data
    meta = {"plan": plan.to_dict(), "seeds": list(seeds), "tokenizers": list(tokenizers),
            "generators": list(generators), "sweeps": bool(sweeps), "device": str(dev),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    plan_key = _digest(plan.to_dict())
    rows_path = out / "rows.jsonl"
    rows = [r for r in _read_rows(rows_path) if r.get("plan_key") == plan_key]
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

    net = fid.get_feature_net(p.eval.feature_net, img_size=data.img_size, seed=data.seed,
                              cache_dir=feature_cache_dir, extractor=plan.extractor, log=say)
    n_img, bs = plan.eval_images, p.eval.batch_size
    ref = None
    val_x = None

    def record(row: dict) -> None:
        row = {"plan_key": plan_key, "plan": plan.name, **row}
        rows.append(row)
        with open(rows_path, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")

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
            for variant, _ in group:
                tok, info = get_tokenizer(plan, variant, cache_dir, seed=seed, device=dev, log=log,
                                          progress=progress)
                ft = ft_info = None
                if plan.decoder_finetune_steps:
                    ft, ft_info = finetune_decoder(plan, variant, tok, seed=seed, device=dev, log=log,
                                                   progress=progress)
                toks[variant] = (tok, ft)
                if ("tokenizer", None, variant, seed) in done:
                    continue
                t0 = time.time()
                final = tok if ft is None else ft
                r = evaluate_tokenizer(final, data, net, num_images=n_img, batch_size=bs, seed=seed, device=dev)
                row = {"kind": "tokenizer", "variant": variant, "seed": seed, **variant_settings(variant),
                       "rfid": r["rfid"], "psnr": r["psnr"], "ssim": r.get("ssim"), "train_s": info["train_s"],
                       "warm_start_s": info.get("warm_start_s", 0.0), "eval_s": time.time() - t0,
                       "run_dir": info["run_dir"]}
                if ft is not None:  # before the fine-tune too: what the second stage bought
                    r0 = evaluate_tokenizer(tok, data, net, num_images=n_img, batch_size=bs, seed=seed, device=dev)
                    row.update(rfid_pretrain=r0["rfid"], psnr_pretrain=r0["psnr"], finetune_s=ft_info["finetune_s"],
                               train_s=info["train_s"] + ft_info["finetune_s"], finetune_dir=ft_info["run_dir"],
                               eval_s=time.time() - t0)
                if robustness:
                    if val_x is None:
                        from .data import make_dataset

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
                    gen, ginfo = get_generator(plan, fam, variant, tok, cache_dir, seed=seed, device=dev, log=log,
                                               progress=progress)
                    if ft is not None:  # same encoder, same latents: decode the samples with the tuned decoder
                        ft.set_latent_stats(*tok.latent_stats)
                        tok = ft
                    if ref is None:
                        ref = reference_stats(data, net, cache_dir=feature_cache_dir, num_images=max(n_img, min(
                            data.num_train, 5000)), batch_size=bs, device=dev, log=say)
                    t0 = time.time()
                    res = evaluate_generator(gen, tok, data, net, num_images=n_img, batch_size=bs, cfg_list=(1.0,),
                                             steps=p.generator.num_sampling_steps or None,
                                             temperature=p.generator.temperature, ref_stats=ref, seed=seed,
                                             device=dev, log=lambda *a: None)[0]
                    row = {"kind": "generator", "family": fam, "variant": variant, "seed": seed,
                           "gfid": res["gfid"], "is_mean": res.get("is_mean"),
                           "class_accuracy": res.get("class_accuracy"), "train_s": ginfo["train_s"],
                           "eval_s": time.time() - t0, "run_dir": ginfo["run_dir"]}
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


__all__ = ["GENERATOR_FAMILIES", "TOKENIZER_ORDER", "PLAN_NAMES", "PAPER_GFID", "PAPER_RATIOS", "SWEEPS",
           "SWEEP_FAMILIES", "ComparePlan", "CompareResult", "compare_plan", "variant_name", "variant_settings",
           "tokenizer_run_dir", "get_tokenizer", "finetune_decoder", "get_generator", "noise_robustness",
           "neighbour_correlation",
           "summarize", "summarize_sweeps", "format_table", "write_outputs", "plot_comparison", "plot_sweeps",
           "load_comparison", "run_comparison"]
