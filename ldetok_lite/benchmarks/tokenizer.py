"""``ldetok-lite bench tokenizer``: forward + backward speed of one tokenizer training step.

The step is the one of DETOK_SPEC §6.4, so figures compare with the official code: train mode,
random mask ratio ``m = max(0, U(-0.1, M))``, posterior sample, interpolative noise with γ = 3,
loss = MSE in [0, 1] + 1e-6·KL, ``backward()``, ``zero_grad``. No perceptual/GAN term, no
optimiser step (add one with ``--optimizer``). Reports the median over ``--steps`` timed steps
after ``--warmup`` steps. Reference (official code, 2-vCPU host, 2 threads): ``detok_SS``,
img 64, batch 8: 208-221 ms/step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from . import fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="detok_SS", help="tokenizer name (detok_SS ... detok_XLXL, detok_tiny)")
    parser.add_argument("--img", type=int, default=64, help="image size (default 64)")
    parser.add_argument("--patch", type=int, default=None, help="patch size (default: the model's)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="timed steps (median reported; >= 20 recommended)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="repeat the timed run; the best median is reported")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (0 = leave as is)")
    parser.add_argument("--gamma", type=float, default=3.0)
    parser.add_argument("--mask-ratio", type=float, default=0.7, help="M of the random mask ratio (0 = no masking)")
    parser.add_argument("--optimizer", action="store_true", help="also time an AdamW step")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    parser.add_argument("--precision", default="fp32", help="fp32 | bf16 | auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")


def measure(model_name="detok_SS", img=64, batch=8, steps=30, warmup=3, gamma=3.0, mask_ratio=0.7,
            optimizer=False, device="cpu", precision="fp32", seed=0, patch=None) -> dict:
    """Time ``steps`` training steps; returns a dict with ``ms_per_step`` (median) and more."""
    import torch
    import torch.nn.functional as F

    from ..device import autocast, pick_device
    from ..tokenizer import create_tokenizer

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
            recon, kl = model(x, generator=gen)
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


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for name in ("steps", "batch"):
        if getattr(args, name) < 1:
            return fail(f"--{name} {getattr(args, name)} must be >= 1")
    results = []
    for _ in range(max(1, args.repeats)):
        try:
            results.append(measure(args.model, args.img, args.batch, args.steps, args.warmup, args.gamma,
                                   args.mask_ratio, args.optimizer, args.device, args.precision, args.seed,
                                   args.patch))
        except ValueError as e:
            return fail(str(e))
    best = min(results, key=lambda r: r["ms_per_step"])
    best["medians_ms"] = [r["ms_per_step"] for r in results]
    if args.json:
        print(json.dumps(best))
        return 0
    print(f"bench tokenizer: {best['model']} ({best['params_M']}M params) img {best['img']} patch {best['patch']} "
          f"({best['tokens']} tokens) batch {best['batch']} | {best['device']}, {best['threads']} threads")
    print(f"  train step (gamma={args.gamma}, M={args.mask_ratio}, MSE + 1e-6 KL, fwd+bwd"
          f"{' + AdamW' if args.optimizer else ''}): median {best['ms_per_step']:.1f} ms/step "
          f"(min {best['ms_min']:.1f}, p90 {best['ms_p90']:.1f}) over {best['steps']} steps | "
          f"{best['img_per_s']:.1f} img/s | process CPU {best['cpu_ms_per_step']:.1f} ms/step")
    if len(results) > 1:
        medians = ", ".join(f"{m:.1f}" for m in best["medians_ms"])
        print(f"  medians of {len(results)} repeats (best reported): {medians} ms")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ldetok-lite bench tokenizer", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
