"""``ldetok-lite bench speed``: training img/s and MFU, the official recipe against ours, in one run.

    ldetok-lite bench speed                                   # detok_BB at 256² and every generator at base size
    ldetok-lite bench speed --models detok_BB --tok-batch 128 --steps 30
    ldetok-lite bench speed --device cpu --models detok_tiny,SiT_tiny --img 32 --latent-size 8 --steps 3  # CPU

One step is a whole optimizer step on random data: forward under autocast, loss, backward,
(clip,) AdamW, EMA. Tokenizers: the l-DeTok step of DETOK_SPEC §6.4 (γ 3, M 0.7, posterior
sample, MSE + 1e-6 KL; no perceptual/GAN term, their networks need downloads) with grad-clip 3.
Generators: ``loss = model(latents, labels)`` on ``(B, 16, img/16, img/16)`` latents, 1000 classes,
no clipping (the aligned schedule, §3.4). Modes, measured in the same process on fresh models:

- ``official``: the official code's recipe (§3.1): bf16 autocast, a ``GradScaler`` (on, as in the
  reference), the default (foreach) AdamW, a per-tensor EMA loop, eager, TF32 on.
- ``fast``: ours: bf16 autocast, fused AdamW (``train.make_optimizer``), the foreach EMA of
  ``train.EMA``, no scaler (bf16 needs none), regional ``torch.compile`` of the transformer blocks
  (``--compile``, on by default on CUDA), TF32 on.

Reported: median ms/step over ``--steps`` timed steps (after warm-up; compile time reported
apart), img/s, model GFLOP per image (``accel``: matmul/conv/attention FLOPs of forward + backward,
counted with ``torch.utils.flop_counter``; for tokenizers the exact expectation over the random
mask ratio), MFU against ``--peak-tflops`` (default: the GPU's dense bf16 peak, 989.4 for
H100/H200 SXM) and the speed-up of ``fast`` over ``official``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

DEFAULT_MODELS = "detok_BB,DiT_base,SiT_base,LightningDiT_base,MAR_base,RandomAR_base,RasterAR_base"
MODES = ("official", "fast")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})")
    parser.add_argument("--img", type=int, default=256, help="image size (tokenizers); generators use img/16 latents")
    parser.add_argument("--tok-batch", type=int, default=64, help="tokenizer batch per step (default 64)")
    parser.add_argument("--gen-batch", type=int, default=128, help="generator batch per step (default 128)")
    parser.add_argument("--latent-size", type=int, default=0, help="generators' latent grid (0: img/16)")
    parser.add_argument("--latent-channels", type=int, default=16)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (at least 8 when compiling)")
    parser.add_argument("--modes", default="official,fast", help="comma-separated: official, fast")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="regional torch.compile in the fast mode (auto: on with CUDA)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="autocast (auto: bf16 on CUDA, fp32 on the CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak for MFU in TFLOP/s (default: the GPU's dense bf16 peak; none on the CPU)")
    parser.add_argument("--flop-samples", type=int, default=3, help="generators: counted steps averaged for FLOPs")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu | mps")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


# ----------------------------------------------------------------------------------------------
# models and steps
# ----------------------------------------------------------------------------------------------


def _is_tokenizer(name: str) -> bool:
    return name.startswith("detok_")


def _build(name: str, args, dev):
    import torch

    torch.manual_seed(args.seed)
    if _is_tokenizer(name):
        from ..tokenizer import create_tokenizer

        kw = {"img_size": args.img, "gamma": 3.0, "mask_ratio": 0.7}
        if name != "detok_tiny":
            kw["token_channels"] = args.latent_channels
        return create_tokenizer(name, **kw).to(dev).train()
    from ..generators import create_generator

    g = args.latent_size or max(1, args.img // 16)
    return create_generator(name, in_channels=args.latent_channels, input_size=g,
                            num_classes=args.num_classes).to(dev).train()


def _inputs(name: str, model, batch: int, args, dev):
    import torch

    gen = torch.Generator(device=dev).manual_seed(args.seed)
    if _is_tokenizer(name):
        return (torch.rand(batch, 3, args.img, args.img, device=dev, generator=gen),)
    g = args.latent_size or max(1, args.img // 16)
    z = torch.randn(batch, args.latent_channels, g, g, device=dev, generator=gen)
    y = torch.randint(0, args.num_classes, (batch,), device=dev, generator=gen)
    return z, y


def _loss(name: str, model, inputs):
    if _is_tokenizer(name):
        (x,) = inputs
        recon, kl = model(x)
        return (recon.float() - x).pow(2).mean() + 1e-6 * kl.float().mean()
    return model(*inputs)


class _LoopEMA:
    """The reference's EMA: one update per parameter tensor, in a Python loop."""

    def __init__(self, model, decay):
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]

    def update(self):
        import torch

        with torch.no_grad():
            for s, p in zip(self.shadow, self.params):
                s.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)


def _make_step(name: str, model, mode: str, dev, precision: str, compile_on: bool):
    """A closure running one optimizer step in ``mode`` (model, optimizer, EMA are built here)."""
    import torch

    from ..config import TrainConfig
    from ..device import autocast
    from ..train import EMA, make_optimizer, param_groups

    tok = _is_tokenizer(name)
    clip = 3.0 if tok else 0.0
    ema_decay = 0.999 if tok else 0.9999
    cfg = TrainConfig(blr=1e-4, batch_size=256, weight_decay=1e-4 if tok else 0.0, grad_clip=clip)
    params = [p for p in model.parameters() if p.requires_grad]
    if mode == "official":
        opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.effective_lr, betas=(0.9, 0.95))
        scaler = torch.amp.GradScaler(dev.type, enabled=dev.type == "cuda")
        ema = _LoopEMA(model, ema_decay)

        def step(inputs):
            opt.zero_grad(set_to_none=True)
            with autocast(dev, precision):
                loss = _loss(name, model, inputs)
            scaler.scale(loss).backward()
            if clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, clip)
            scaler.step(opt)
            scaler.update()
            ema.update()
            return loss
    else:
        from ..accel import compile_blocks

        opt = make_optimizer(model, cfg)
        ema = EMA(model, ema_decay)
        if compile_on:
            compile_blocks(model)

        def step(inputs):
            opt.zero_grad(set_to_none=True)
            with autocast(dev, precision):
                loss = _loss(name, model, inputs)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
            opt.step()
            ema.update(model)
            return loss
    return step


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def flops_per_image(name: str, args, dev) -> float:
    """Model FLOPs (forward + backward) per image of one training step (``accel``)."""
    import torch

    from ..accel import count_flops, tokenizer_train_flops

    model = _build(name, args, dev)
    if _is_tokenizer(name):
        return tokenizer_train_flops(model, args.img, batch=1, device=dev)
    b = min(args.gen_batch, 8)
    total = 0.0
    torch.manual_seed(args.seed)
    for _ in range(max(1, args.flop_samples)):
        inputs = _inputs(name, model, b, args, dev)
        total += count_flops(lambda: _loss(name, model, inputs).backward()) / b
        model.zero_grad(set_to_none=True)
    return total / max(1, args.flop_samples)


def measure(name: str, mode: str, args, dev, precision: str, compile_on: bool) -> dict:
    import torch

    model = _build(name, args, dev)
    batch = args.tok_batch if _is_tokenizer(name) else args.gen_batch
    step = _make_step(name, model, mode, dev, precision, compile_on and mode == "fast")
    inputs = _inputs(name, model, batch, args, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    warm = max(args.warmup, 8 if (compile_on and mode == "fast") else 0)
    t0 = time.perf_counter()
    for _ in range(warm):
        step(inputs)
    _sync(dev)
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        loss = step(inputs)
        _sync(dev)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    out = {"model": name, "mode": mode, "batch": batch, "ms_per_step": med * 1e3,
           "ms_min": min(times) * 1e3, "img_per_s": batch / med, "warmup_s": warm_s, "warmup_steps": warm,
           "compiled": bool(compile_on and mode == "fast"), "loss": float(loss.detach().float()),
           "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    if dev.type == "cuda":
        out["max_mem_GiB"] = torch.cuda.max_memory_allocated(dev) / 2**30
    del model, step
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def run(args) -> int:
    import torch

    from ..accel import fast_cuda, mfu, peak_flops
    from ..device import autocast_dtype, describe_device, pick_device

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.steps < 1 or args.tok_batch < 1 or args.gen_batch < 1:
        print("error: --steps, --tok-batch and --gen-batch must be >= 1")
        return 2
    dev = pick_device(args.device)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"error: unknown mode(s) {bad}; allowed: {', '.join(MODES)}")
        return 2
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    compile_on = args.compile == "on" or (args.compile == "auto" and dev.type == "cuda")
    precision = args.precision
    if dev.type == "cuda":
        fast_cuda()  # TF32 + cudnn.benchmark: both modes (the official code sets them too)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(dev)
    dtype = autocast_dtype(dev, precision)
    print(f"bench speed | {describe_device(dev)} | torch {torch.__version__} | autocast "
          f"{dtype if dtype is not None else 'off (fp32)'} | compile in fast mode: {compile_on} | peak "
          f"{f'{peak / 1e12:.1f} TFLOP/s' if peak else 'n/a (pass --peak-tflops)'}", flush=True)
    rows = []
    for name in names:
        try:
            fl = flops_per_image(name, args, dev)
        except Exception as e:  # counting must not stop the timing
            print(f"  {name}: FLOP count failed ({type(e).__name__}: {e})")
            fl = float("nan")
        for mode in modes:
            try:
                r = measure(name, mode, args, dev, precision, compile_on)
            except Exception as e:
                print(f"  {name} {mode}: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})", flush=True)
                rows.append({"model": name, "mode": mode, "error": f"{type(e).__name__}: {e}"})
                continue
            r["gflop_per_img"] = fl / 1e9
            r["mfu"] = mfu(fl, r["img_per_s"], peak)
            rows.append(r)
            mfu_s = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            print(f"  {name:<18} {mode:<8} batch {r['batch']:>4} | {r['ms_per_step']:8.1f} ms/step | "
                  f"{r['img_per_s']:8.1f} img/s | {r['gflop_per_img']:7.2f} GFLOP/img | MFU {mfu_s}"
                  + (f" | {r['max_mem_GiB']:.1f} GiB" if "max_mem_GiB" in r else "")
                  + f" | warm-up {r['warmup_s']:.1f} s", flush=True)
    speedups = {}
    for name in names:
        by = {r["mode"]: r for r in rows if r["model"] == name and "img_per_s" in r}
        if "official" in by and "fast" in by:
            speedups[name] = by["fast"]["img_per_s"] / by["official"]["img_per_s"]
    if speedups:
        print("speed-up of fast over official (same batch, same device):")
        for name, s in speedups.items():
            print(f"  {name:<18} x{s:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"device": describe_device(dev), "torch": torch.__version__,
                                               "peak_flops": peak, "compile": compile_on, "rows": rows,
                                               "speedup": speedups, "args": vars(args)}, indent=2, default=str))
    return 0 if all("error" not in r for r in rows) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ldetok-lite bench speed", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
