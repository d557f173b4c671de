"""``ldetok-lite bench compare``: the paper's tokenizer × generator table (issue 10).

    ldetok-lite bench compare --preset smoke --seeds 1 --tokenizers plain ldetok --generators SiT
    ldetok-lite bench compare --preset compare --seeds 3 --out runs/compare-long     # hours on CPU
    ldetok-lite bench compare --preset tiny --seeds 1 --sweeps --generators MAR SiT

``--preset``: smoke | tiny | small | full (the presets as they are) or ``compare`` (the longer,
warm-started comparison; see ``ldetok_lite.compare``). ``--seeds N`` runs seeds 0..N-1
(``--seed-list`` picks them). Trained models are reused from ``--cache-dir``; cells already in
``--out``/rows.jsonl are skipped, so an interrupted run continues where it stopped. Writes
summary.json, table.csv, tokenizers.csv, ratios.csv, table.txt, comparison.png (and sweeps.csv /
sweeps.png with ``--sweeps``) into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json

from ldetok_lite.compare import GENERATOR_FAMILIES, PLAN_NAMES, SWEEP_FAMILIES, TOKENIZER_ORDER


def _override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set {text!r} must look like group.key=value")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", choices=PLAN_NAMES,
                        help="smoke | tiny | small | full, or compare (longer, warm-started; hours on 2 CPU cores)")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds (0..N-1)")
    parser.add_argument("--seed-list", type=int, nargs="+", default=None, help="explicit seeds (overrides --seeds)")
    parser.add_argument("--out", default=None, help="run directory (default runs/compare-<preset>)")
    parser.add_argument("--cache-dir", default="runs/cache", help="trained tokenizers and generators")
    parser.add_argument("--feature-cache-dir", default=None, help="FID feature network cache (default: fid's)")
    parser.add_argument("--tokenizers", nargs="+", default=list(TOKENIZER_ORDER),
                        help="variants: plain mask_only noise_only ldetok additive, or g<gamma>-m<M>[-add]")
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
    parser.add_argument("--set", dest="overrides", type=_override, action="append", default=[],
                        metavar="GROUP.KEY=VALUE", help="preset override, e.g. generator_train.steps=500")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--no-robustness", action="store_true", help="skip the latent-noise PSNR / smoothness")
    parser.add_argument("--quiet", action="store_true", help="only the final table")


def run(args) -> int:
    from ldetok_lite.compare import compare_plan, format_table, run_comparison

    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds} must be >= 1")
    seeds = tuple(args.seed_list) if args.seed_list else tuple(range(args.seeds))
    plan = compare_plan(args.preset, warm_start_steps=args.warm_start_steps, num_images=args.num_images,
                        overrides=dict(args.overrides) or None, decoder_finetune_steps=args.decoder_finetune_steps)
    out = args.out or f"runs/compare-{plan.name}"
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
