"""``ldetok-lite bench generator``: training and sampling throughput of one generator.

    ldetok-lite bench generator --model SiT_tiny [--batch 128] [--steps 20] [--sample-steps 50]

Training: one step = ``loss = model(latents, labels)``, ``backward()``, AdamW step, ``zero_grad``
on random normalized latents of the model's shape (the tokenizer is not involved: with cached
latents, DETOK_SPEC §3.4, that is the whole step). Sampling: ``model.generate(labels, cfg,
num_steps)`` on a batch. Both report the **median** over the timed repeats of the same run, as
ms and img/s. Defaults fit a CPU and the ``*_tiny`` sizes; use ``--device cuda --precision bf16``
and ``--model DiT_base`` on a GPU.

``--compare-latent-cache TOKENIZER`` adds the cached-latents speed-up; ``--compare-kv-cache`` the
AR KV-cache speed-up. Extending: add flags in :func:`add_arguments`, and a
function ``report(args, model, result) -> None`` to :data:`EXTRA_REPORTS`; ``run`` calls each after
the standard measurements with the built model and the result dict (add keys for ``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

from . import fail

#: hooks ``(args, model, result_dict) -> None`` run after the standard measurements.
EXTRA_REPORTS: list[Callable] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="SiT_tiny", help="generator name, e.g. DiT_tiny, SiT_base, LightningDiT_xl")
    parser.add_argument("--batch", type=int, default=128, help="training batch size (default 128, the tiny preset)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed training steps before each measurement; 0 also skips the untimed sampling call")
    parser.add_argument("--sample-batch", type=int, default=None, help="images per sampling call (default: --batch)")
    parser.add_argument("--sample-steps", type=int, default=None,
                        help="sampling steps (default: the model's default, e.g. 250)")
    parser.add_argument("--sample-repeats", type=int, default=3, help="timed sampling calls (median reported)")
    parser.add_argument("--cfg", type=float, default=1.0, help="guidance scale for sampling (>1 doubles the batch)")
    parser.add_argument("--sampler", default=None, help="SiT/LightningDiT: dopri5 | euler (default: the model's)")
    parser.add_argument("--in-channels", type=int, default=None, help="latent channels (default: the model's)")
    parser.add_argument("--input-size", type=int, default=None, help="latent grid size (default: the model's)")
    parser.add_argument("--num-classes", type=int, default=None, help="classes (default: the model's)")
    parser.add_argument("--no-optimizer", action="store_true", help="time forward+backward only")
    parser.add_argument("--no-sampling", action="store_true", help="skip the sampling measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (0 = leave as is)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    parser.add_argument("--precision", default="fp32", help="fp32 | bf16 | auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    parser.add_argument("--compare-latent-cache", metavar="TOKENIZER", default=None,
                        help="also time a training step whose latents TOKENIZER (e.g. detok_tiny) computes on the "
                             "fly against one that samples them from cached posterior moments, in the same run")
    parser.add_argument("--compare-kv-cache", action="store_true",
                        help="AR models (RasterAR_*/RandomAR_*): sampling img/s with and without the KV cache "
                             "in the same run (uses --sample-batch, --sample-steps = head steps, --cfg)")


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def build(args: argparse.Namespace):
    """The model named by ``args.model`` with the shape overrides, on the chosen device."""
    import torch

    from ..device import pick_device
    from ..generators import create_generator

    dev = pick_device(args.device)
    torch.manual_seed(args.seed)
    overrides = {k: v for k, v in (("in_channels", args.in_channels), ("input_size", args.input_size),
                                   ("num_classes", args.num_classes)) if v is not None}
    return create_generator(args.model, **overrides).to(dev), dev


def measure_training(model, dev, batch: int, steps: int, warmup: int = 2, precision: str = "fp32",
                     optimizer: bool = True, seed: int = 0) -> dict:
    """Median seconds per training step on random latents and labels."""
    import torch

    from ..device import autocast

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


def measure_sampling(model, dev, batch: int, num_steps: int | None, repeats: int = 3, cfg: float = 1.0,
                     precision: str = "fp32", seed: int = 0, warmup: bool = True, **sampler_kwargs) -> dict:
    """Median seconds per ``generate`` call (after one untimed warm-up call unless ``warmup`` is False)."""
    import torch

    from ..device import autocast

    labels = torch.arange(batch) % model.num_classes
    times, nfe = [], None

    def call(i):
        gen = torch.Generator().manual_seed(seed + i)
        with autocast(dev, precision):
            model.generate(labels, cfg=cfg, num_steps=num_steps, generator=gen, **sampler_kwargs)

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
    return {"sample_batch": batch, "sample_steps": steps, "sample_nfe": nfe, "cfg": cfg,
            "sample_s_per_call": round(med, 3), "sample_img_per_s": round(batch / med, 2)}


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for name in ("batch", "steps", "sample_repeats", "sample_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return fail(f"--{name.replace('_', '-')} {value} must be >= 1")
    if args.warmup < 0:
        return fail(f"--warmup {args.warmup} must be >= 0")
    try:
        model, dev = build(args)
        if not args.no_sampling:  # sampling options are checked before the training measurement runs
            model.check_sampling_args(args.cfg, args.sample_steps, 1.0)
            model._check_sampler_kwargs({"sampler": args.sampler} if args.sampler else {})
        result = {"model": args.model, "params_M": round(model.num_params() / 1e6, 2),
                  "latent_shape": list(model.latent_shape), "device": str(dev), "threads": torch.get_num_threads(),
                  "precision": args.precision, "batch": args.batch}
        result.update(measure_training(model, dev, args.batch, args.steps, args.warmup, args.precision,
                                       not args.no_optimizer, args.seed))
        if not args.no_sampling:
            kw = {"sampler": args.sampler} if args.sampler else {}
            result.update(measure_sampling(model, dev, args.sample_batch or args.batch, args.sample_steps,
                                           args.sample_repeats, args.cfg, args.precision, args.seed,
                                           warmup=args.warmup > 0, **kw))
        for report in EXTRA_REPORTS:
            report(args, model, result)
    except (ValueError, TypeError) as e:
        return fail(str(e))
    if args.json:
        print(json.dumps(result))
        return 0
    shape = "x".join(map(str, result["latent_shape"]))
    print(f"bench generator: {result['model']} ({result['params_M']}M params) latents {shape} | "
          f"{result['device']}, {result['threads']} threads, {result['precision']}")
    opt = "" if args.no_optimizer else " + AdamW"
    print(f"  training (fwd+bwd{opt}), batch {args.batch}: median {result['train_ms_per_step']:.1f} ms/step "
          f"(min {result['train_ms_min']:.1f}) over {args.steps} steps | {result['train_img_per_s']:.1f} img/s")
    if not args.no_sampling:
        nfe = f", {result['sample_nfe']} network evaluations" if result.get("sample_nfe") else ""
        print(f"  sampling, batch {result['sample_batch']}, {result['sample_steps']} steps{nfe}, cfg {args.cfg:g}: "
              f"median {result['sample_s_per_call']:.3f} s/call over {args.sample_repeats} calls | "
              f"{result['sample_img_per_s']:.2f} img/s")
    for key in result.get("extra_lines", []):
        print(f"  {key}")
    return 0


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
        rows[use] = measure_sampling(model, dev, batch, args.sample_steps, args.sample_repeats, args.cfg,
                                     args.precision, args.seed, warmup=args.warmup > 0, use_kv_cache=use)
    speedup = rows[False]["sample_s_per_call"] / max(rows[True]["sample_s_per_call"], 1e-12)
    for use, tag in ((True, "kv_cache"), (False, "no_cache")):
        result[f"{tag}_s_per_call"] = rows[use]["sample_s_per_call"]
        result[f"{tag}_img_per_s"] = rows[use]["sample_img_per_s"]
    result.update(kv_cache_speedup=round(speedup, 2), kv_tokens=model.seq_len, kv_head_steps=rows[True]["sample_steps"])
    result.setdefault("extra_lines", []).append(
        f"KV cache, batch {batch}, {model.seq_len} tokens, {rows[True]['sample_steps']} head steps, cfg {args.cfg:g}: "
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
    import torch

    from ..device import autocast
    from ..tokenizer import create_tokenizer

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ldetok-lite bench generator", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
