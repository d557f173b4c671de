"""Measurements behind ``ldetok-lite bench tokenizer`` and ``bench generator``: median times of
training steps and sampling calls, the KV-cache and latent-cache speed-ups. Each returns a dict of
figures; ``cli/bench.py`` prints them. Timings are medians over repeats of the same run.

- tokenizer step: the official training step (γ 3, M 0.7, posterior sample, MSE + 1e-6·KL,
  backward; no perceptual/GAN term, their networks need downloads). Reference (official code,
  2-vCPU host, 2 threads): ``detok_SS``, img 64, batch 8: 208-221 ms/step.
- generator step: ``loss = model(latents, labels)``, backward, AdamW on random latents (with
  cached latents that is the whole step); sampling: ``model.generate`` on a batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..device import autocast, pick_device
from ..generators import create_generator
from ..tokenizer import create_tokenizer

__all__ = ["measure_tokenizer", "build", "measure_training", "measure_sampling", "report_kv_cache",
           "report_latent_cache", "EXTRA_REPORTS"]

#: hooks ``(args, model, result_dict) -> None`` run after the standard generator measurements.
EXTRA_REPORTS: list[Callable] = []


def measure_tokenizer(model_name="detok_SS", img=64, batch=8, steps=30, warmup=3, gamma=3.0, mask_ratio=0.7,
            optimizer=False, device="cpu", precision="fp32", seed=0, patch=None) -> dict:
    """Time ``steps`` training steps; returns a dict with ``ms_per_step`` (median) and more."""


    dev = pick_device(device)
    torch.manual_seed(seed)
    overrides = dict(img_size=img, gamma=gamma, mask_ratio=mask_ratio)
    if patch is not None:
        overrides["patch_size"] = patch
    model = create_tokenizer(model_name, **overrides).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-4) if optimizer else None
    x = torch.rand(batch, 3, img, img, device=dev)
    gen = torch.Generator().manual_seed(seed)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elif dev.type == "mps":
            torch.mps.synchronize()

    def step():
        with autocast(dev, precision):
            recon, kl = model(x, rng=gen)
            loss = F.mse_loss(recon.float(), x) + 1e-6 * kl.float().mean()
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup):
        step()
    sync()
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = statistics.median(times)
    return {
        "model": model_name, "img": img, "patch": model.patch_size, "tokens": model.seq_len, "batch": batch,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "device": str(dev),
        "threads": torch.get_num_threads(), "steps": steps, "ms_per_step": round(med * 1e3, 1),
        "ms_min": round(min(times) * 1e3, 1), "ms_p90": round(sorted(times)[int(0.9 * (len(times) - 1))] * 1e3, 1),
        "img_per_s": round(batch / med, 1), "optimizer": optimizer,
        # process CPU time per step (all threads): a load-robust figure on shared machines with --threads 1
        "cpu_ms_per_step": round(statistics.median(cpu) * 1e3, 1),
    }



def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def build(args: argparse.Namespace):
    """The model named by ``args.model`` with the shape overrides, on the chosen device."""


    dev = pick_device(args.device)
    torch.manual_seed(args.seed)
    overrides = {k: v for k, v in (("in_channels", args.in_channels), ("input_size", args.input_size),
                                   ("num_classes", args.num_classes)) if v is not None}
    return create_generator(args.model, **overrides).to(dev), dev


def measure_training(model, dev, batch: int, steps: int, warmup: int = 2, precision: str = "fp32",
                     optimizer: bool = True, seed: int = 0) -> dict:
    """Median seconds per training step on random latents and labels."""


    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *model.latent_shape, generator=g).to(dev)
    y = torch.randint(0, model.num_classes, (batch,), generator=g).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0) if optimizer else None
    model.train()

    def step():
        with autocast(dev, precision):
            loss = model(x, y)
        loss.float().backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"train_ms_per_step": round(med * 1e3, 1), "train_ms_min": round(min(times) * 1e3, 1),
            "train_img_per_s": round(batch / med, 1)}


def measure_sampling(model, dev, batch: int, num_steps: int | None, repeats: int = 3, cfg_scale: float = 1.0,
                     precision: str = "fp32", seed: int = 0, warmup: bool = True, **sampler_kwargs) -> dict:
    """Median seconds per ``generate`` call (after one untimed warm-up call unless ``warmup`` is False)."""


    labels = torch.arange(batch) % model.num_classes
    times, nfe = [], None

    def call(i):
        gen = torch.Generator().manual_seed(seed + i)
        with autocast(dev, precision):
            model.generate(labels, cfg_scale=cfg_scale, num_steps=num_steps, rng=gen, **sampler_kwargs)

    if warmup:
        call(-1)
        _sync(dev)
    for i in range(repeats):
        t0 = time.perf_counter()
        call(i)
        _sync(dev)
        times.append(time.perf_counter() - t0)
        nfe = getattr(model, "last_nfe", None)
    med = statistics.median(times)
    steps = num_steps or model.default_num_steps
    return {"sample_batch": batch, "sample_steps": steps, "sample_nfe": nfe, "cfg_scale": cfg_scale,
            "sample_s_per_call": round(med, 3), "sample_img_per_s": round(batch / med, 2)}



def report_kv_cache(args: argparse.Namespace, model, result: dict) -> None:
    """``--compare-kv-cache`` (Generators II): time ``generate`` of an AR model with
    ``use_kv_cache=True`` (one new token per step through the backbone) and ``False`` (the whole
    prefix recomputed every step, as the paper's code does); same batch, head steps and seeds."""
    if not getattr(args, "compare_kv_cache", False):
        return
    if getattr(model, "family", "") not in ("RasterAR", "RandomAR"):
        raise ValueError(f"--compare-kv-cache needs an AR model (RasterAR_* or RandomAR_*), got {args.model!r}")
    dev, batch = model.device, args.sample_batch or args.batch
    rows = {}
    for use in (True, False):
        rows[use] = measure_sampling(model, dev, batch, args.sample_steps, args.sample_repeats, args.cfg_scale,
                                     args.precision, args.seed, warmup=args.warmup > 0, use_kv_cache=use)
    speedup = rows[False]["sample_s_per_call"] / max(rows[True]["sample_s_per_call"], 1e-12)
    for use, tag in ((True, "kv_cache"), (False, "no_cache")):
        result[f"{tag}_s_per_call"] = rows[use]["sample_s_per_call"]
        result[f"{tag}_img_per_s"] = rows[use]["sample_img_per_s"]
    result.update(kv_cache_speedup=round(speedup, 2), kv_tokens=model.seq_len, kv_head_steps=rows[True]["sample_steps"])
    result.setdefault("extra_lines", []).append(
        f"KV cache, batch {batch}, {model.seq_len} tokens, {rows[True]['sample_steps']} head steps, "
        f"cfg {args.cfg_scale:g}: "
        f"with cache {rows[True]['sample_s_per_call']:.3f} s/call ({rows[True]['sample_img_per_s']:.2f} img/s) | "
        f"without {rows[False]['sample_s_per_call']:.3f} s/call ({rows[False]['sample_img_per_s']:.2f} img/s) | "
        f"speed-up {speedup:.1f}x")


EXTRA_REPORTS.append(report_kv_cache)


def report_latent_cache(args: argparse.Namespace, model, result: dict) -> None:
    """``--compare-latent-cache TOKENIZER`` (Generators I, item 6): a generator training step whose
    latents come from ``tokenizer.tokenize(x, sampling=True)`` on the fly, against one that samples
    them as μ + σ·ε from posterior moments cached once (what ``train_generator`` does with
    ``cache_latents``); same batch, interleaved, medians of ``--steps`` each. The tokenizer's weights
    are random: the cost does not depend on them."""
    name = getattr(args, "compare_latent_cache", None)
    if not name:
        return


    dev, batch = model.device, args.batch
    tok = create_tokenizer(name).to(dev).eval().requires_grad_(False)
    shape = (tok.token_channels, tok.grid_size, tok.grid_size)
    if shape != tuple(model.latent_shape):
        raise ValueError(f"--compare-latent-cache {name!r} makes latents {shape}, but {args.model} expects "
                         f"{tuple(model.latent_shape)}; pick a tokenizer with matching latents (detok_tiny for *_tiny)")
    g = torch.Generator().manual_seed(args.seed)
    images = torch.rand(batch, 3, tok.img_size, tok.img_size, generator=g).to(dev)
    mu, sd = torch.randn(batch, *shape, generator=g).to(dev), torch.rand(batch, *shape, generator=g).to(dev)
    y = torch.randint(0, model.num_classes, (batch,), generator=g).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0)
    model.train()

    def step(on_the_fly: bool) -> float:
        t0 = time.perf_counter()
        with autocast(dev, args.precision):
            if on_the_fly:
                with torch.no_grad():
                    z = tok.tokenize(images, sampling=True)
            else:
                z = mu + sd * torch.randn(mu.shape, device=dev)
            loss = model(z.float(), y)
        loss.float().backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        _sync(dev)
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        step(True), step(False)
    times = {True: [], False: []}
    for _ in range(args.steps):
        for mode in (True, False):
            times[mode].append(step(mode))
    fly, cached = statistics.median(times[True]), statistics.median(times[False])
    result.update(on_the_fly_ms_per_step=round(fly * 1e3, 1), cached_latents_ms_per_step=round(cached * 1e3, 1),
                  latent_cache_speedup=round(fly / cached, 2))
    result.setdefault("extra_lines", []).append(
        f"latents from {name} on the fly {fly * 1e3:.1f} ms/step | cached moments {cached * 1e3:.1f} ms/step | "
        f"speed-up {fly / cached:.2f}x (batch {batch}, medians of {args.steps} interleaved steps)")


EXTRA_REPORTS.append(report_latent_cache)
