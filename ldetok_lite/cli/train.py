"""``ldetok-lite train tokenizer|generator``: the training loop from the command line.

    ldetok-lite train tokenizer --preset tiny --variant ldetok --out runs/tok
    ldetok-lite train tokenizer --preset tiny --out runs/tok --set tokenizer.gamma=2 --set tokenizer_train.steps=2000
    ldetok-lite train generator --preset tiny --family SiT --tokenizer runs/tok --out runs/sit

Re-running the same command with the same ``--out`` resumes from the last complete checkpoint.
The same command runs on many GPUs and nodes under torchrun (see :data:`MULTI_GPU_HELP`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import read_config
from ..config import ConfigError, Preset
from ..io import parse_overrides
from ..presets import PRESET_NAMES, TOKENIZER_VARIANTS, load_preset, tokenizer_recipe
from ..pretrained import from_pretrained
from ..training import distributed, train_generator, train_tokenizer
from .errors import check_out_dir

MULTI_GPU_HELP = """\
multi-GPU and multi-node (torchrun, DDP; batch_size is the GLOBAL batch, split over the processes):
  one node, 8 GPUs:
    torchrun --standalone --nproc_per_node=8 -m ldetok_lite.cli train tokenizer --preset full --out runs/tok
  4 nodes x 8 GPUs (run on every node; NODE_RANK = 0..3, MASTER = the address of node 0):
    torchrun --nnodes=4 --nproc_per_node=8 --node_rank=$NODE_RANK \\
        --master_addr=$MASTER --master_port=29500 \\
        -m ldetok_lite.cli train tokenizer --preset full --out /shared/runs/tok
  (elastic rendezvous instead: --rdzv_backend=c10d --rdzv_endpoint=$MASTER:29500 --rdzv_id=tok)
  --out must be on a file system every node sees: rank 0 writes the checkpoints, every rank reads
  the newest one when the same command is run again (automatic resume, also with another GPU count).
  Fewer GPUs, same recipe: keep the global batch with --set tokenizer_train.batch_size=256
  --set tokenizer_train.grad_accum=4 (the lr follows batch_size x grad_accum).
  Backend: NCCL on GPUs, gloo on the CPU (--device cpu). LDETOK_DIST_TIMEOUT_MIN (default 60)
  sets the collective timeout; LDETOK_DDP_FIND_UNUSED=0 turns off DDP's find_unused_parameters.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = MULTI_GPU_HELP
    sub = parser.add_subparsers(dest="what", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--preset", default="tiny", help=f"one of {', '.join(PRESET_NAMES)}")
    common.add_argument("--config", default=None, metavar="PRESET.json",
                        help="a whole preset saved as JSON (Preset.save_json; the notebooks 20-22 write one); "
                             "replaces --preset")
    common.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, samples)")
    common.add_argument("--seed", type=int, default=None,
                        help="seed of the data, the model and the training (default: the preset's, 0); an explicit "
                             "--set ...seed=N wins over it")
    common.add_argument("--device", default="auto")
    common.add_argument("--set", dest="overrides", action="append", metavar="GROUP.KEY=VALUE",
                        help="override a preset value, e.g. tokenizer.gamma=2.0 (repeatable)")
    common.add_argument("--data-dir", default=None, help="dataset root (imagefolder/cifar10/mnist)")

    t = sub.add_parser("tokenizer", parents=[common], help="train an l-DeTok (or plain) tokenizer",
                       epilog=MULTI_GPU_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--variant", default=None,
                   help="plain | ldetok | mask_only | noise_only | additive | distill | ldetok-distill (sets "
                        "gamma / mask_ratio / distill_weight; default ldetok with --preset, the file's own settings "
                        "with --config)")
    t.add_argument("--init-from", default=None, help="start from this tokenizer run (required by decoder_only)")

    g = sub.add_parser("generator", parents=[common], help="train a generator on a tokenizer's latents",
                       epilog=MULTI_GPU_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--family", required=True, help="DiT | SiT | LightningDiT | MAR | RandomAR | RasterAR")
    g.add_argument("--tokenizer", required=True, help="a trained tokenizer run directory")
    parser.set_defaults(func=run)


def _preset(args):
    if getattr(args, "config", None):
        if not Path(args.config).is_file():
            raise ConfigError(f"--config {args.config!r} is not a file (a preset saved with Preset.save_json)")
        preset = Preset.load_json(args.config)
    else:
        preset = load_preset(args.preset)
    flat = parse_overrides(args.overrides, "--set")
    if args.data_dir:
        if not Path(args.data_dir).is_dir():
            raise ConfigError(f"--data-dir {args.data_dir!r} does not exist")
        flat["data.data_dir"] = args.data_dir
    if args.seed is not None:  # every seed the --set items did not name
        for key in ("data.seed", "tokenizer_train.seed", "generator_train.seed"):
            flat.setdefault(key, args.seed)
    return preset.override(**flat)


def run(args) -> int:
    """Train in this process, or as one rank of a torchrun job (RANK/WORLD_SIZE set)."""
    info = distributed.init(args.device)
    try:
        return _run(args, info)
    finally:
        distributed.cleanup()


def _run(args, info) -> int:
    preset = _preset(args)
    out = check_out_dir(args.out) if info.is_main else Path(args.out)
    quiet = lambda *a, **k: None  # noqa: E731
    dist_kw = dict(rank=info.rank, world_size=info.world_size, log=print if info.is_main else quiet)
    device = info.device if info.backend is not None else args.device
    if info.is_main and info.world_size > 1:
        print(f"torchrun: {info.world_size} processes ({info.backend}), global batch "
              f"{(preset.tokenizer_train if args.what == 'tokenizer' else preset.generator_train).batch_size}",
              flush=True)
    if args.what == "tokenizer":
        name = args.variant if args.variant is not None else (None if args.config else "ldetok")
        if name is not None and name not in TOKENIZER_VARIANTS:
            raise ConfigError(f"--variant {name!r} is not known; allowed: {', '.join(TOKENIZER_VARIANTS)}")
        if name is None:  # --config: the file's own settings
            tok_cfg, train_cfg = preset.tokenizer, preset.tokenizer_train
        else:  # the variant's recipe; explicit --set tokenizer.* values win over it
            tok_cfg, train_cfg, _ = tokenizer_recipe(preset, name, preset.tokenizer_train.seed)
            explicit = {k.split(".", 1)[1]: getattr(preset.tokenizer, k.split(".", 1)[1])
                        for k in parse_overrides(args.overrides, "--set") if k.startswith("tokenizer.")}
            tok_cfg = tok_cfg.replace(**explicit)
        # a warm start (tokenizer.warm_start=plain) trains its plain AE into <out>/warm_start first
        result = train_tokenizer(tok_cfg, train_cfg, preset.data, out, device=device, init_from=args.init_from,
                                 progress="log", **dist_kw)
    else:
        if not Path(args.tokenizer).is_dir():
            raise ConfigError(f"--tokenizer {args.tokenizer!r} is not a directory")
        kind = (read_config(args.tokenizer).get("spec") or {}).get("kind")
        if kind != "tokenizer":
            raise ConfigError(f"--tokenizer {args.tokenizer!r} holds a {kind or 'unknown'} checkpoint, not a "
                              "tokenizer (pass a tokenizer run directory, e.g. from `ldetok-lite train tokenizer`)")
        tokenizer = from_pretrained(args.tokenizer, which="ema")
        result = train_generator(args.family, preset.generator, preset.generator_train, preset.data,
                                 tokenizer, out, device=device, progress="log", **dist_kw)
    if info.is_main:
        print(f"done: {result.out_dir} (step {result.step}, checkpoint {result.checkpoint})", flush=True)
    return 0
