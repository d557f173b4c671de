"""Measurements behind ``ldetok-lite bench speed``: training img/s and MFU, the official recipe against ours.

    ldetok-lite bench speed                                   # detok_BB at 256² and every generator at base size
    ldetok-lite bench speed --models detok_BB --tok-batch 128 --steps 30
    ldetok-lite bench speed --device cpu --models detok_tiny,SiT_tiny --img 32 --latent-size 8 --steps 3  # CPU

One step is a whole optimizer step on random data: forward under autocast, loss, backward,
(clip,) AdamW, EMA. Tokenizers: the l-DeTok step of official training step (γ 3, M 0.7, posterior
sample, MSE + 1e-6 KL; no perceptual/GAN term, their networks need downloads) with grad-clip 3.
Generators: ``loss = model(latents, labels)`` on ``(B, 16, img/16, img/16)`` latents, 1000 classes,
no clipping (the official ``--use_aligned_schedule``). Modes, measured in the same process on fresh models:

- ``official``: the official code's recipe (``main_reconstruction.py``): bf16 autocast, a ``GradScaler`` (on, as in the
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

import statistics
import time

import torch

from ..config import TrainConfig
from ..device import autocast
from ..generators import create_generator
from ..tokenizer import create_tokenizer
from ..training.accel import compile_blocks, count_flops, tokenizer_train_flops
from ..training.optim import EMA, make_optimizer, param_groups

__all__ = ["DEFAULT_MODELS", "MODES", "flops_per_image", "measure"]

DEFAULT_MODELS = "detok_BB,DiT_base,SiT_base,LightningDiT_base,MAR_base,RandomAR_base,RasterAR_base"
MODES = ("official", "fast")

# models and steps
# ----------------------------------------------------------------------------------------------


def _is_tokenizer(name: str) -> bool:
    return name.startswith("detok_")


def _build(name: str, args, dev):
    torch.manual_seed(args.seed)
    if _is_tokenizer(name):
        kw = {"img_size": args.img, "gamma": 3.0, "mask_ratio": 0.7}
        if name != "detok_tiny":
            kw["token_channels"] = args.latent_channels
        return create_tokenizer(name, **kw).to(dev).train()

    g = args.latent_size or max(1, args.img // 16)
    return create_generator(name, in_channels=args.latent_channels, input_size=g,
                            num_classes=args.num_classes).to(dev).train()


def _inputs(name: str, model, batch: int, args, dev):
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
        with torch.no_grad():
            for s, p in zip(self.shadow, self.params):
                s.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)


def _make_step(name: str, model, mode: str, dev, precision: str, compile_on: bool):
    """A closure running one optimizer step in ``mode`` (model, optimizer, EMA are built here)."""


    tok = _is_tokenizer(name)
    clip = 3.0 if tok else 0.0
    ema_decay = 0.999 if tok else 0.9999
    train_cfg = TrainConfig(blr=1e-4, batch_size=256, weight_decay=1e-4 if tok else 0.0, grad_clip=clip)
    params = [p for p in model.parameters() if p.requires_grad]
    if mode == "official":
        opt = torch.optim.AdamW(param_groups(model, train_cfg.weight_decay), lr=train_cfg.effective_lr,
                                betas=(0.9, 0.95))
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
        opt = make_optimizer(model, train_cfg)
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
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def flops_per_image(name: str, args, dev) -> float:
    """Model FLOPs (forward + backward) per image of one training step (``accel``)."""


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
