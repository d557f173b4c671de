"""The ``ldetok-lite`` command: run notebooks headless, train, evaluate, benchmark, check the setup.

    ldetok-lite run [NOTEBOOK ...] --preset tiny --out runs/demo [-p name value ...]
    ldetok-lite doctor
    ldetok-lite presets [NAME]
    ldetok-lite train tokenizer|generator ...
    ldetok-lite evaluate ...
    ldetok-lite bench tokenizer|generator|compare|speed ...
    ldetok-lite reference list|build ...

One entry point (:func:`main`) and one error convention (``errors.py``): a user's mistake is one
line on stderr and exit code 2. Multi-GPU and multi-node training use torchrun around
``ldetok-lite train`` (README, "Multi-GPU and multi-node training").
"""

from __future__ import annotations

import argparse
import os
import sys

from . import bench, doctor, evaluate, reference, run, train
from .errors import CliError, user_message

__all__ = ["main", "build_parser", "CliError"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldetok-lite", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_arguments(sub.add_parser("run", help="execute notebooks headless with papermill"))
    doctor.add_doctor_arguments(sub.add_parser("doctor", help="versions, device, widget front end, offline assets"))
    doctor.add_presets_arguments(sub.add_parser("presets", help="list presets or print one as JSON"))
    train.add_arguments(sub.add_parser("train", help="train a tokenizer or a generator (torchrun for multi-GPU)"))
    evaluate.add_arguments(sub.add_parser("evaluate", help="rFID/PSNR/SSIM of a tokenizer, gFID/IS of a generator"))
    bench.add_arguments(sub.add_parser("bench", help="benchmarks that print figures"))
    reference.add_arguments(sub.add_parser("reference", help="the reference models shipped in reference/: list, build"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as e:
        message = user_message(e)
        if os.environ.get("LDETOK_DEBUG") or message is None:
            raise
        print(f"ldetok-lite: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ldetok-lite: interrupted", file=sys.stderr)
        return 130
