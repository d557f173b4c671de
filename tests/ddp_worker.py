"""A torchrun entry point for tests/test_distributed.py (not a test module itself).

    torchrun --nproc_per_node=2 tests/ddp_worker.py deterministic train tokenizer --preset smoke --out DIR ...

``deterministic`` replaces the tokenizer's training forward by its deterministic part (posterior
mean, no mask, no noise), so that a 2-process run can be compared with a 1-process run of the
same global batch: with random corruption each rank draws its own noise (seed + rank), and the
two runs agree in distribution only. Everything after the mode word goes to ``ldetok-lite``.
"""

import sys

from ldetok_lite import cli
from ldetok_lite.tokenizer import DeTok


def deterministic_forward(self, x, generator=None):
    z, ids_restore, posterior = self.encode(x)
    return self.decode(z, ids_restore), posterior.kl()


if __name__ == "__main__":
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode == "deterministic":
        DeTok.forward = deterministic_forward
    elif mode != "plain":
        raise SystemExit(f"unknown mode {mode!r}; use deterministic | plain")
    sys.exit(cli.main(argv))
