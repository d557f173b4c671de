"""Multi-process training with torchrun (gloo on the CPU): same result as one process, and resume.

Each torchrun launch costs ~10-20 s on 2 busy cores (two Python processes importing torch), so
the module runs three launches in all and is marked ``slow`` (it still runs in ``make test``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ldetok_lite.checkpoint import latest_checkpoint, load_tensors
from ldetok_lite.training import distributed as du
from ldetok_lite.training.batches import IndexStream, flip_mask

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"
SMALL = ["--preset", "smoke", "--device", "cpu", "--set", "tokenizer_train.steps=4",
         "--set", "tokenizer_train.log_every=1"]


@pytest.fixture(autouse=True)
def one_thread():
    """As the torchrun processes (OMP_NUM_THREADS=1): one intra-op thread in this process too."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _torchrun(nproc: int, args: list[str], timeout: int = 240) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "LDETOK_DIST_TIMEOUT_MIN": "3"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), *args]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"torchrun failed ({p.returncode}):\n{out[-4000:]}"
    return out


def _weights(run_dir: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None, f"no checkpoint in {run_dir}"
    return load_tensors(ckpt / name)


def _rows(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


# ---------------------------------------------------------------------------------------------
# fast unit checks of the sharding rules
# ---------------------------------------------------------------------------------------------


def test_rank_slices_make_the_global_batch():
    n, global_batch, world = 100, 8, 2
    one = IndexStream(n, global_batch, seed=3)
    ranks = [IndexStream(n, global_batch // world, seed=3, rank=r, world_size=world) for r in range(world)]
    for _ in range(30):  # crosses epoch boundaries
        assert torch.equal(one.next(), torch.cat([s.next() for s in ranks]))
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    full = flip_mask(8, g())
    assert torch.equal(full, torch.cat([flip_mask(4, g(), r, 2) for r in range(2)]))


def test_per_rank_batch_and_single_process_defaults():
    assert du.per_rank_batch(1024, 8) == 128
    with pytest.raises(ValueError, match="does not split"):
        du.per_rank_batch(10, 4)
    assert not du.launched_by_torchrun() or "RANK" in os.environ
    info = du.init("cpu") if not du.launched_by_torchrun() else None
    if info is not None:
        assert (info.rank, info.world_size, info.backend) == (0, 1, None)
    assert du.all_reduce_mean({"a": 1.5}) == {"a": 1.5}
    assert du.gather_objects(3) == [3] and du.broadcast_object("x") == "x" and du.any_true(True)


# ---------------------------------------------------------------------------------------------
# torchrun runs
# ---------------------------------------------------------------------------------------------

DET_ARGS = ["train", "tokenizer", *SMALL, "--variant", "plain"]
GAN_ARGS = ["train", "tokenizer", *SMALL, "--set", "tokenizer.gan_weight=0.1", "--set", "tokenizer_train.ckpt_every=2"]


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    """One torchrun launch, two trainings on 2 ranks: deterministic (for the 1-process
    comparison) and l-DeTok corruption + GAN with a step-2 checkpoint (for the resume test)."""
    root = tmp_path_factory.mktemp("ddp")
    det, gan = root / "det", root / "gan"
    out = _torchrun(2, ["deterministic", *DET_ARGS, "--out", str(det), "--", "plain", *GAN_ARGS, "--out", str(gan)])
    assert "torchrun: 2 processes (gloo), global batch 16" in out
    return det, gan


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(two_rank_runs, tmp_path, monkeypatch):
    """Deterministic forward (no random corruption): DDP with 2 x 8 images = 1 process with 16."""
    two, _ = two_rank_runs
    import ddp_worker  # tests/ is on sys.path (pytest's rootdir insertion)

    from ldetok_lite import cli
    from ldetok_lite.tokenizer import DeTok

    monkeypatch.setattr(DeTok, "forward", ddp_worker.deterministic_forward)
    one = tmp_path / "one"
    assert cli.main([*DET_ARGS, "--out", str(one)]) == 0

    for name in ("model.safetensors", "ema.safetensors"):
        w1, w2 = _weights(one, name), _weights(two, name)
        assert w1.keys() == w2.keys()
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=2e-5, msg=f"{name}:{k}")
    r1, r2 = _rows(one), _rows(two)
    assert [r["step"] for r in r1] == [r["step"] for r in r2] == [1, 2, 3, 4]
    for a, b in zip(r1, r2):  # the logged loss of the 2-process run is the mean over ranks
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["lr"] == pytest.approx(a["lr"])


@pytest.mark.slow
def test_resume_under_torchrun_is_exact(two_rank_runs, tmp_path):
    """l-DeTok corruption + GAN on 2 ranks: a run resumed from its step-2 checkpoint ends with
    the same weights (model, EMA, discriminator) as the uninterrupted run."""
    _, full = two_rank_runs
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_0000004")
    out = _torchrun(2, ["plain", *GAN_ARGS, "--out", str(resumed)])
    assert "resuming from" in out and "step 2/4" in out
    state = torch.load(latest_checkpoint(full) / "train_state.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2
    for name in ("model.safetensors", "ema.safetensors", "extra_aux.safetensors"):
        a, b = _weights(full, name), _weights(resumed, name)
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
    assert [r["step"] for r in _rows(resumed)] == [1, 2, 3, 4]


def test_prefetched_image_folder_gives_the_loop_its_batches(tmp_path):
    """ImageFolder data read ahead by persistent workers (streaming.StreamLoader) hands the loop
    exactly the batches of its IndexStream (from a resumed position too), without touching the
    global RNG; other indices (evaluation) are loaded directly."""
    import numpy as np
    from PIL import Image

    from ldetok_lite.config import DataConfig
    from ldetok_lite.data import make_dataset
    from ldetok_lite.training import ImageSource

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / f"class{c}").mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"class{c}" / f"{i}.png")
    ds = make_dataset(DataConfig(dataset="imagefolder", data_dir=str(tmp_path), img_size=32, hflip=False), "train")
    direct, fast = ImageSource(ds, 0), ImageSource(ds, 2)
    stream = IndexStream(len(ds), 4, seed=1, rank=1, world_size=2)
    stream.load_state({"epoch": 0, "pos": 1})
    rng_before = torch.get_rng_state()
    fast.start_prefetch(stream)
    try:
        for _ in range(4):  # crosses an epoch boundary (2 batches per epoch and rank)
            idx = stream.next()
            (x0, y0), (x1, y1) = direct.get(idx), fast.get(idx)
            assert torch.equal(x0, x1) and torch.equal(y0, y1)
        assert fast.prefetch.hits == 4
        assert torch.equal(torch.get_rng_state(), rng_before)
        other = torch.tensor([0, 1, 2])
        assert torch.equal(fast.get(other)[0], direct.get(other)[0]) and fast.prefetch.misses == 1
    finally:
        fast.stop_prefetch()
