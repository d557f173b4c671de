"""``ldetok-lite bench tokenizer|generator|compare|speed``: commands that print measured figures.

    ldetok-lite bench tokenizer --model detok_SS --img 64 --batch 8
    ldetok-lite bench generator --model SiT_tiny [--compare-kv-cache | --compare-latent-cache detok_tiny]
    ldetok-lite bench compare --plan tiny --seeds 3 --tokenizers plain ldetok --generators SiT
    ldetok-lite bench speed                      # detok_BB and every generator at base size, on a GPU

The measurements live in ``ldetok_lite.experiments`` (``bench.py``, ``speed.py``, ``compare.py``);
this module parses options and prints. ``bench compare`` writes the comparison's table files
(summary.json, table.csv, tokenizers.csv, ratios.csv, table.txt, comparison.png, and with
``--sweeps`` sweeps.csv / sweeps.png) into ``--out``; an interrupted run continues where it stopped.
A comparison split over processes or machines (``--tokenizers`` or ``--seed-list`` shares, one
``--out`` each) is joined with ``--merge DIR ... --out DIR``.
"""

from __future__ import annotations

import argparse
import json

import torch

from ..device import autocast_dtype, describe_device, pick_device
from ..experiments.bench import EXTRA_REPORTS, build, measure_sampling, measure_tokenizer, measure_training
from ..experiments.compare import run_comparison
from ..experiments.speed import DEFAULT_MODELS, MODES, flops_per_image, measure
from ..experiments.table import format_table, merge_comparisons
from ..io import parse_overrides, write_json_atomic
from ..presets import GENERATOR_FAMILIES, PLAN_NAMES, SWEEP_FAMILIES, TOKENIZER_ORDER, compare_plan
from ..training.accel import fast_cuda, mfu, peak_flops
from .errors import CliError, check_out_dir, check_out_file

# ---------------------------------------------------------------------------- tokenizer

def add_tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
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



def run_tokenizer(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for name in ("steps", "batch"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} {getattr(args, name)} must be >= 1")
    results = []
    for _ in range(max(1, args.repeats)):
        try:
            results.append(measure_tokenizer(args.model, args.img, args.batch, args.steps, args.warmup, args.gamma,
                                   args.mask_ratio, args.optimizer, args.device, args.precision, args.seed,
                                   args.patch))
        except ValueError as e:
            raise CliError(str(e)) from None
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


# ---------------------------------------------------------------------------- generator

def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="SiT_tiny", help="generator name, e.g. DiT_tiny, SiT_base, LightningDiT_xl")
    parser.add_argument("--batch", type=int, default=128, help="training batch size (default 128, the tiny preset)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed training steps before each measurement; 0 also skips the untimed sampling call")
    parser.add_argument("--sample-batch", type=int, default=None, help="images per sampling call (default: --batch)")
    parser.add_argument("--sample-steps", type=int, default=None,
                        help="sampling steps (default: the model's default, e.g. 250)")
    parser.add_argument("--sample-repeats", type=int, default=3, help="timed sampling calls (median reported)")
    parser.add_argument("--cfg-scale", "--cfg", dest="cfg_scale", type=float, default=1.0,
                        help="guidance scale for sampling (>1 doubles the batch)")
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
                             "in the same run (uses --sample-batch, --sample-steps = head steps, --cfg-scale)")



def run_generator(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for name in ("batch", "steps", "sample_repeats", "sample_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} {value} must be >= 1")
    if args.warmup < 0:
        raise CliError(f"--warmup {args.warmup} must be >= 0")
    try:
        model, dev = build(args)
        if not args.no_sampling:  # sampling options are checked before the training measurement runs
            model.check_sampling_args(args.cfg_scale, args.sample_steps, 1.0)
            model._check_sampler_kwargs({"sampler": args.sampler} if args.sampler else {})
        result = {"model": args.model, "params_M": round(model.num_params() / 1e6, 2),
                  "latent_shape": list(model.latent_shape), "device": str(dev), "threads": torch.get_num_threads(),
                  "precision": args.precision, "batch": args.batch}
        result.update(measure_training(model, dev, args.batch, args.steps, args.warmup, args.precision,
                                       not args.no_optimizer, args.seed))
        if not args.no_sampling:
            kw = {"sampler": args.sampler} if args.sampler else {}
            result.update(measure_sampling(model, dev, args.sample_batch or args.batch, args.sample_steps,
                                           args.sample_repeats, args.cfg_scale, args.precision, args.seed,
                                           warmup=args.warmup > 0, **kw))
        for report in EXTRA_REPORTS:
            report(args, model, result)
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
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
        print(f"  sampling, batch {result['sample_batch']}, {result['sample_steps']} steps{nfe}, "
              f"cfg {args.cfg_scale:g}: "
              f"median {result['sample_s_per_call']:.3f} s/call over {args.sample_repeats} calls | "
              f"{result['sample_img_per_s']:.2f} img/s")
    for key in result.get("extra_lines", []):
        print(f"  {key}")
    return 0


# ---------------------------------------------------------------------------- compare

def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", "--preset", dest="plan", default="tiny", choices=PLAN_NAMES,
                        help="a preset (smoke | tiny | tiny-long | small | full) or compare (longer, warm-started; "
                             "hours on 2 CPU cores)")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds (0..N-1)")
    parser.add_argument("--seed-list", type=int, nargs="+", default=None, help="explicit seeds (overrides --seeds)")
    parser.add_argument("--out", default=None, help="run directory (default runs/compare-<preset>)")
    parser.add_argument("--cache-dir", default="runs/cache", help="trained tokenizers and generators")
    parser.add_argument("--feature-cache-dir", default=None, help="FID feature network cache (default: fid's)")
    parser.add_argument("--tokenizers", nargs="+", default=list(TOKENIZER_ORDER),
                        help="variants: plain mask_only noise_only ldetok additive (the default), distill "
                             "ldetok-distill (semantic distillation), g<gamma>-m<M>[-add]; a cnn- prefix (cnn-plain, "
                             "cnn-ldetok) trains the convolutional tokenizer")
    parser.add_argument("--generators", nargs="*", default=list(GENERATOR_FAMILIES), choices=GENERATOR_FAMILIES,
                        help="generator families (none: tokenizers only)")
    parser.add_argument("--sweeps", action="store_true", help="also the gamma / M / noise-type sweeps")
    parser.add_argument("--sweep-generators", nargs="+", default=list(SWEEP_FAMILIES), choices=GENERATOR_FAMILIES,
                        help="families for the sweeps (default: the paper's MAR SiT; at --preset tiny MAR is too "
                             "short-trained to rank tokenizers, so use SiT RandomAR: README, comparison)")
    parser.add_argument("--num-images", type=int, default=None, help="images per FID (default: the plan's)")
    parser.add_argument("--warm-start-steps", type=int, default=None,
                        help="plain-AE warm start every variant continues from (default: the plan's; 0 = none)")
    parser.add_argument("--decoder-finetune-steps", type=int, default=None,
                        help="decoder-only second stage of every tokenizer, gamma 0, M 0: matched rFID, same latents "
                             "(default: the plan's; 0 = none)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="GROUP.KEY=VALUE", help="preset override, e.g. generator_train.steps=500 (repeatable)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--no-robustness", action="store_true", help="skip the latent-noise PSNR / smoothness")
    parser.add_argument("--quiet", action="store_true", help="only the final table")
    parser.add_argument("--merge", nargs="+", metavar="DIR", default=None,
                        help="train nothing: join these comparison folders (each measured a share of the tokenizers "
                             "or seeds, one plan) into --out and write its table")


def run_compare(args) -> int:
    if args.merge:
        if not args.out:
            raise CliError("--merge needs --out, the folder that receives the joined rows and table")
        out = check_out_dir(args.out)
        try:
            merged = merge_comparisons(args.merge, out)
        except ValueError as e:
            raise CliError(str(e)) from None
        print(format_table(merged))
        print(f"[compare] joined {len(merged['rows'])} rows from {', '.join(args.merge)} into {out}")
        return 0
    if args.seeds < 1:
        raise CliError(f"--seeds {args.seeds} must be >= 1")
    seeds = tuple(args.seed_list) if args.seed_list else tuple(range(args.seeds))
    plan = compare_plan(args.plan, warm_start_steps=args.warm_start_steps, num_images=args.num_images,
                        overrides=parse_overrides(args.overrides, "--set") or None,
                        decoder_finetune_steps=args.decoder_finetune_steps)
    out = str(check_out_dir(args.out or f"runs/compare-{plan.name}"))
    if args.cache_dir:
        check_out_dir(args.cache_dir, "--cache-dir")
    print(f"[compare] plan {plan.name}: seeds {list(seeds)}, tokenizers {args.tokenizers}, generators "
          f"{args.generators}{', sweeps ' + str(args.sweep_generators) if args.sweeps else ''} -> {out}")
    res = run_comparison(plan, seeds=seeds, out_dir=out, cache_dir=args.cache_dir, tokenizers=args.tokenizers,
                         generators=args.generators, sweeps=args.sweeps, sweep_families=args.sweep_generators,
                         device=args.device, log=None if args.quiet else print, progress="log",
                         feature_cache_dir=args.feature_cache_dir, robustness=not args.no_robustness)
    if args.quiet:
        print(format_table(res.summary))
    print(f"[compare] wrote {', '.join(sorted(p.name for p in res.paths.values()))} to {res.out_dir}")
    return 0


# ---------------------------------------------------------------------------- speed

def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
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


def run_speed(args) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.steps < 1 or args.tok_batch < 1 or args.gen_batch < 1:
        raise CliError("--steps, --tok-batch and --gen-batch must be >= 1")
    if args.json:
        check_out_file(args.json, "--json")
    dev = pick_device(args.device)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise CliError(f"unknown mode(s) {bad}; allowed: {', '.join(MODES)}")
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
        write_json_atomic(args.json, {"device": describe_device(dev), "torch": torch.__version__,
                                               "peak_flops": peak, "compile": compile_on, "rows": rows,
                                    "speedup": speedups, "args": {k: str(v) for k, v in vars(args).items()}})
    return 0 if all("error" not in r for r in rows) else 1


def add_arguments(bench: argparse.ArgumentParser) -> None:
    sub = bench.add_subparsers(dest="bench", required=True)
    for name, help_text, add, run in (
            ("tokenizer", "tokenizer forward+backward ms/step and img/s", add_tokenizer_arguments, run_tokenizer),
            ("generator", "generator training and sampling img/s", add_generator_arguments, run_generator),
            ("compare", "the tokenizer x generator comparison table", add_compare_arguments, run_compare),
            ("speed", "img/s and MFU at the paper's sizes vs the official recipe", add_speed_arguments, run_speed)):
        p = sub.add_parser(name, help=help_text)
        add(p)
        p.set_defaults(func=run)
