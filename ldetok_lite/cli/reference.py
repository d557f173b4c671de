"""``ldetok-lite reference list|build``: the reference models shipped in ``reference/``.

    ldetok-lite reference list                  # each set and model: verified?, steps, training time, metrics, size
    ldetok-lite reference build LightningDiT --dataset shapes-large   # the command that makes (or remakes) one
    ldetok-lite reference build --all           # every missing one of the default set, tokenizers first
"""

from __future__ import annotations

import argparse

from ..config import SHAPES_DATASETS
from ..experiments.reference import (
    REFERENCE_BUDGET_MB,
    build_reference,
    list_references,
    reference_dataset,
    reference_megabytes,
    reference_summary,
)
from ..presets import PRESET_NAMES, REFERENCE_NAMES, reference_recipe
from .errors import CliError, check_out_dir


def cmd_list(args) -> int:
    datasets = [args.dataset] if args.dataset else list(SHAPES_DATASETS)
    failed = False
    for dataset in datasets:
        rows = list_references(args.root, dataset)
        default = " (the default)" if dataset == reference_dataset() else ""
        print(f"reference/{dataset}{default}: {sum(r['megabytes'] for r in rows):.1f} MB")
        for r in rows:
            info = r["info"] or {}
            status = "ok" if r["status"] == "ok" else ("missing" if r["status"] == "missing" else "FAILS CHECK")
            what = (reference_summary(info) if info else
                    f"build: ldetok-lite reference build {r['name']} --dataset {dataset}")
            print(f"  {r['name']:<17} {status:<11} {r['megabytes']:5.1f} MB  {what}")
            if status == "FAILS CHECK":
                print(f"      {r['status']}")
        failed |= any(r["status"] not in ("ok", "missing") for r in rows)
    print(f"total {reference_megabytes(args.root):.1f} MB of {REFERENCE_BUDGET_MB:.0f} MB")
    return 1 if failed else 0


def cmd_build(args) -> int:
    names = list(REFERENCE_NAMES) if args.all else args.names
    if not names:
        raise CliError("name the models to build (e.g. LightningDiT) or pass --all; "
                       f"allowed: {', '.join(REFERENCE_NAMES)}")
    for name in names:
        reference_recipe(name)  # every name is checked before anything trains
    if args.preset is not None and args.preset not in PRESET_NAMES:
        raise CliError(f"--preset {args.preset!r} is not known; allowed: {', '.join(PRESET_NAMES)}")
    check_out_dir(args.work_dir, "--work-dir")
    for name in names:
        build_reference(name, root=args.root, work_dir=args.work_dir, preset=args.preset, num_images=args.num_images,
                        force=args.force, device=args.device, dataset=args.dataset)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="reference_command", required=True)
    p_list = sub.add_parser("list", help="each reference model: verified or not, provenance, metrics, size")
    p_list.add_argument("--root", default=None, help="reference folder (default: the checkout's reference/)")
    p_list.add_argument("--dataset", choices=SHAPES_DATASETS, default=None, help="one set only (default: every set)")
    p_list.set_defaults(func=cmd_list)
    p_build = sub.add_parser("build", help="train, measure (float16) and write reference models")
    p_build.add_argument("names", nargs="*", help=f"models to build: {', '.join(REFERENCE_NAMES)}")
    p_build.add_argument("--all", action="store_true", help="every model (present, verified ones are kept)")
    p_build.add_argument("--force", action="store_true", help="rebuild models that are present")
    p_build.add_argument("--root", default=None, help="reference folder (default: the checkout's reference/)")
    p_build.add_argument("--work-dir", default="runs/reference",
                         help="training runs (resumed when interrupted; default runs/reference)")
    p_build.add_argument("--dataset", choices=SHAPES_DATASETS, default=None,
                         help="the data the models train on, and the set they join (default: the recipe's, "
                              "the tiny preset's data)")
    p_build.add_argument("--preset", default=None, help="replace the recipe's preset (e.g. smoke for a quick check)")
    p_build.add_argument("--num-images", type=int, default=500, help="images per recorded metric (default 500)")
    p_build.add_argument("--device", default="cpu")
    p_build.set_defaults(func=cmd_build)
