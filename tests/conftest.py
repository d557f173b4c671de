"""Shared fixtures. Tests run on the CPU, offline, with 2 threads."""

from __future__ import annotations

import os
from pathlib import Path

# Must precede the torch import: with 2 cores shared by several processes (pytest, notebook kernels,
# torchrun workers), OpenMP spin-waiting makes small steps many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models: one intra-op thread is faster (and much faster on a busy machine).

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache folder for the whole session, so notebooks share trained smoke tokenizers."""
    return tmp_path_factory.mktemp("cache")
