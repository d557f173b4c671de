"""``ldetok-lite train tokenizer|generator``: the training loop from the command line.

    ldetok-lite train tokenizer --preset tiny --variant ldetok --out runs/tok
    ldetok-lite train tokenizer --preset tiny --out runs/tok --set tokenizer.gamma=2 --set tokenizer_train.steps=2000
    ldetok-lite train generator --preset tiny --family SiT --tokenizer runs/tok --out runs/sit

Re-running the same command with the same ``--out`` resumes from the last complete checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import PRESET_NAMES, ConfigError, load_preset


def _overrides(items: list[str] | None) -> dict:
    from .cli import _parse_value

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like group.key=value, e.g. tokenizer.gamma=2.0")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value.strip())
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--preset", default="tiny", help=f"one of {', '.join(PRESET_NAMES)}")
    common.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, samples)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--device", default="auto")
    common.add_argument("--set", dest="overrides", action="append", metavar="GROUP.KEY=VALUE",
                        help="override a preset value, e.g. tokenizer.gamma=2.0 (repeatable)")
    common.add_argument("--data-dir", default=None, help="dataset root (imagefolder/cifar10/mnist)")

    t = sub.add_parser("tokenizer", parents=[common], help="train an l-DeTok (or plain) tokenizer")
    t.add_argument("--variant", default="ldetok",
                   help="plain | ldetok | mask_only | noise_only | additive (sets gamma / mask_ratio)")
    t.add_argument("--init-from", default=None, help="start from this tokenizer run (required by decoder_only)")

    g = sub.add_parser("generator", parents=[common], help="train a generator on a tokenizer's latents")
    g.add_argument("--family", required=True, help="DiT | SiT | LightningDiT | MAR | RandomAR | RasterAR")
    g.add_argument("--tokenizer", required=True, help="a trained tokenizer run directory")


def _preset(args):
    preset = load_preset(args.preset)
    flat = _overrides(args.overrides)
    if args.data_dir:
        if not Path(args.data_dir).is_dir():
            raise ConfigError(f"--data-dir {args.data_dir!r} does not exist")
        flat["data.data_dir"] = args.data_dir
    flat.update({"data.seed": args.seed, "tokenizer_train.seed": args.seed, "generator_train.seed": args.seed})
    return preset.override(**flat)


def run(args) -> int:
    from . import train

    preset = _preset(args)
    out = Path(args.out)
    if args.what == "tokenizer":
        from .artifacts import TOKENIZER_VARIANTS

        if args.variant not in TOKENIZER_VARIANTS:
            raise ConfigError(f"--variant {args.variant!r} is not known; allowed: {', '.join(TOKENIZER_VARIANTS)}")
        explicit = {k.split(".", 1)[1] for k in _overrides(args.overrides) if k.startswith("tokenizer.")}
        variant = {k: v for k, v in TOKENIZER_VARIANTS[args.variant].items() if k not in explicit}
        tok_cfg = preset.tokenizer.replace(**variant)
        result = train.train_tokenizer(tok_cfg, preset.tokenizer_train, preset.data, out, device=args.device,
                                       init_from=args.init_from, progress="log")
    else:
        from .checkpoint import from_pretrained

        if not Path(args.tokenizer).is_dir():
            raise ConfigError(f"--tokenizer {args.tokenizer!r} is not a directory")
        tokenizer = from_pretrained(args.tokenizer, which="ema")
        result = train.train_generator(args.family, preset.generator, preset.generator_train, preset.data,
                                       tokenizer, out, device=args.device, progress="log")
    print(f"done: {result.out_dir}")
    return 0
