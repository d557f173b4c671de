"""A torchrun entry point for tests/test_distributed.py (not a test module itself).

    torchrun --nproc_per_node=2 tests/ddp_worker.py MODE train tokenizer ... [-- MODE train ...]

Each ``--``-separated segment is one ``ldetok-lite`` command run in the same process group (so
a test pays for the process start-up once). ``MODE`` is ``plain`` or ``deterministic``: the
latter replaces the tokenizer's training forward by its deterministic part (posterior mean, no
mask, no noise), so that a 2-process run can be compared with a 1-process run of the same global
batch; with random corruption each rank draws its own noise (seed + rank) and the two agree in
distribution only.
"""

import sys

from ldetok_lite import cli
from ldetok_lite.cli import train as train_cli
from ldetok_lite.tokenizer import DeTok
from ldetok_lite.training import distributed

_RANDOM_FORWARD = DeTok.forward


def deterministic_forward(self, x, rng=None):
    z, ids_restore, posterior = self.encode(x)
    return self.decode(z, ids_restore), posterior.kl()


def _segments(argv):
    seg = []
    for a in argv:
        if a == "--":
            yield seg
            seg = []
        else:
            seg.append(a)
    if seg:
        yield seg


if __name__ == "__main__":
    info = distributed.init("cpu")
    parser = cli.build_parser()
    try:
        for mode, *argv in _segments(sys.argv[1:]):
            if mode not in ("plain", "deterministic"):
                raise SystemExit(f"unknown mode {mode!r}; use plain | deterministic")
            DeTok.forward = deterministic_forward if mode == "deterministic" else _RANDOM_FORWARD
            args = parser.parse_args(argv)
            train_cli._run(args, info)
            distributed.barrier()
    finally:
        distributed.cleanup()
