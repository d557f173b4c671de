"""Reliability with files: no code runs from a weights file, no user file is lost or written
through a planted link, a finished training survives a failing evaluation, and the command line
answers every operating-system refusal with one line.

The payloads are real: a pickle whose ``__reduce__`` calls ``os.system`` to create a marker file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from ldetok_lite import checkpoint as C
from ldetok_lite import training as T
from ldetok_lite.cli import main as cli_main
from ldetok_lite.config import DataConfig, TokenizerConfig, TrainConfig
from ldetok_lite.evaluation import get_feature_net, save_png_folder
from ldetok_lite.io import FileContentError, UnsafeFileError, safe_torch_load, write_json_atomic, write_jsonl_atomic
from ldetok_lite.pretrained import from_pretrained, load_latent_stats
from ldetok_lite.tokenizer import create_tokenizer

TOK = TokenizerConfig()
TRAIN = TrainConfig(steps=4, batch_size=8, blr=1e-3, warmup_frac=0.25, log_every=2, ckpt_every=2, ema_decay=0.9)
DATA = DataConfig(num_train=32, num_val=8)
QUIET = dict(device="cpu", progress="none", log=lambda *a: None)


class SystemCall:
    """A pickled object whose loading runs ``touch marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload(path: Path, marker: Path) -> Path:
    torch.save({"weights": torch.ones(2), "hook": SystemCall(marker)}, path)
    return path


def cli(*argv, capsys) -> tuple[int, str]:
    code = cli_main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip()


# ------------------------------------------------------------------------------------------------
# 1-2: weights files that carry code
# ------------------------------------------------------------------------------------------------


def test_inception_weights_with_code_never_run(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "PWNED"
    evil = payload(tmp_path / "inception.pth", marker)
    monkeypatch.setenv("LDETOK_CACHE", str(tmp_path / "cache"))
    # a given path, the environment variable, and a file planted in the torch hub cache
    with pytest.raises(UnsafeFileError, match=r"contains pickled code or Python objects \(posix\.system\)"):
        get_feature_net("inception", img_size=64, inception_weights=str(evil))
    monkeypatch.setenv("LDETOK_INCEPTION_WEIGHTS", str(evil))
    with pytest.raises(UnsafeFileError, match="refused"):
        get_feature_net("inception", img_size=64)
    monkeypatch.delenv("LDETOK_INCEPTION_WEIGHTS")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    payload(hub / "weights-inception-2015-12-05-6726825d.pth", marker)
    with pytest.raises(UnsafeFileError, match="refused"):
        get_feature_net("inception", img_size=64)
    for name in ("vgg16-397923af.pth", "convnext_small-0c510722.pth"):  # the perceptual backbones
        payload(hub / name, marker)
    from ldetok_lite.losses import ConvNeXtLogits, build_lpips

    with pytest.raises(UnsafeFileError):
        build_lpips("lpips-vgg")
    with pytest.raises(UnsafeFileError):
        ConvNeXtLogits()
    tok = tmp_path / "tok"
    C.save_pretrained(create_tokenizer("detok_tiny"), C.checkpoint_dir(tok, 1))
    code, err = cli("evaluate", "--tokenizer", tok, "--feature-net", "inception", "--inception-weights", evil,
                    "--preset", "smoke", "--num-images", 4, capsys=capsys)
    assert code == 2 and err.startswith("ldetok-lite: error: refused") and "Traceback" not in err
    assert not marker.exists()


def test_a_refused_pickle_is_named_as_code_not_as_corruption(tmp_path):
    marker = tmp_path / "PWNED"
    with pytest.raises(UnsafeFileError) as e:
        safe_torch_load(payload(tmp_path / "evil.pth", marker))
    msg = str(e.value)
    assert "contains pickled code" in msg and "could run a program" in msg
    assert "truncated" not in msg and "corrupt" not in msg and "weights_only=False" not in msg.split("never")[0]
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# 3: user files are never deleted
# ------------------------------------------------------------------------------------------------


def test_training_refuses_a_folder_with_a_foreign_metrics_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"my": "own notes"}\n')
    with pytest.raises(T.OutDirError, match=r"already holds metrics\.jsonl, not written by a training run"):
        T.train_tokenizer(TOK, TRAIN, DATA, out, **QUIET)
    assert (out / "metrics.jsonl").read_text() == '{"my": "own notes"}\n'
    assert not (out / "checkpoints").exists()


def test_a_kit_run_that_never_reached_a_checkpoint_starts_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / T.RUN_MARKER).write_text("{}")  # the kit's own run, killed before its first checkpoint
    (out / "metrics.jsonl").write_text('{"step": 99, "loss": 1.0}\n')
    T.train_tokenizer(TOK, TRAIN, DATA, out, **QUIET)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert 99 not in steps and steps[0] == 2


def test_pruning_removes_only_the_kits_own_leftovers(tmp_path):
    m = create_tokenizer("detok_tiny")
    root = tmp_path / C.CKPT_SUBDIR
    for s in (1, 2, 3):
        C.save_pretrained(m, C.checkpoint_dir(tmp_path, s))
    mine = [root / "my.old.backup", root / "step_0000009.tmp_user", root / "notes.tmp"]
    for d in mine:
        d.mkdir()
        (d / "precious.txt").write_text("keep me")
    leftover = root / "step_0000004.tmpk2j4_x9a"  # an interrupted save: kit file names only
    leftover.mkdir()
    (leftover / C.MODEL_FILE).write_bytes(b"partial")
    (leftover / ".config.json.0123456789ab.tmp").write_bytes(b"{")
    C.prune_checkpoints(tmp_path, keep=2)
    assert not leftover.exists()
    assert all((d / "precious.txt").read_text() == "keep me" for d in mine)
    assert [p.name for p in C.list_checkpoints(tmp_path)] == ["step_0000002", "step_0000003"]


# ------------------------------------------------------------------------------------------------
# 4: a failing final evaluation loses nothing
# ------------------------------------------------------------------------------------------------


def test_finished_training_is_saved_before_the_final_evaluation(tmp_path, monkeypatch):
    from ldetok_lite.training import tokenizer as tt

    real = tt.save_sample_figure

    def broken(*a, **k):
        raise RuntimeError("the figure could not be drawn")

    monkeypatch.setattr(tt, "save_sample_figure", broken)
    with pytest.raises(RuntimeError, match="could not be drawn"):
        T.train_tokenizer(TOK, TRAIN.replace(ckpt_every=0), DATA, tmp_path, **QUIET)
    assert C.latest_checkpoint(tmp_path).name == "step_0000004"  # the whole run is on disk
    monkeypatch.setattr(tt, "save_sample_figure", real)
    again = T.train_tokenizer(TOK, TRAIN.replace(ckpt_every=0), DATA, tmp_path, **QUIET)
    assert again.resumed_from == 4 and again.final_metrics["step"] == 4 and "psnr_ema" in again.final_metrics
    assert list((tmp_path / "samples").glob("*step0000004.png"))


# ------------------------------------------------------------------------------------------------
# 5: no write through a planted link
# ------------------------------------------------------------------------------------------------


def test_outputs_never_write_through_planted_links(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("metrics.jsonl.tmp", "summary.json.tmp", "config.json.tmp", "000000.png"):
        (out / name).symlink_to(victim)
    write_jsonl_atomic(out / "metrics.jsonl", [{"a": 1}])
    write_json_atomic(out / "summary.json", {"a": 1})
    write_json_atomic(out / "config.json", {"a": 1})
    save_png_folder(torch.rand(1, 3, 8, 8), out)
    ckroot = out / C.CKPT_SUBDIR
    ckroot.mkdir()
    (ckroot / f"step_0000001.tmp{os.getpid()}").symlink_to(tmp_path, target_is_directory=True)
    C.save_pretrained(create_tokenizer("detok_tiny"), C.checkpoint_dir(out, 1))
    assert victim.read_text() == "original" and (out / "000000.png").is_file()
    assert not (out / "000000.png").is_symlink()
    from ldetok_lite.io import append_jsonl

    (out / "log.jsonl").symlink_to(victim)
    with pytest.raises(FileContentError, match="symbolic link"):
        append_jsonl(out / "log.jsonl", {"a": 1})
    from ldetok_lite.experiments.fullscale import stream_subprocess

    (out / "torchrun.log").symlink_to(victim)
    with pytest.raises(FileContentError, match="symbolic link"):
        stream_subprocess([sys.executable, "-c", "print(1)"], out / "torchrun.log", log=lambda *a: None)
    assert victim.read_text() == "original"


# ------------------------------------------------------------------------------------------------
# 6: silent wrong results
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_tokenizers_and_a_generator(tmp_path_factory):
    from ldetok_lite.config import GeneratorConfig

    root = tmp_path_factory.mktemp("fp")
    a = T.train_tokenizer(TOK.replace(warm_start="none"), TRAIN, DATA, root / "tok_a", **QUIET)
    b = T.train_tokenizer(TOK.replace(warm_start="none"), TRAIN.replace(seed=1), DATA, root / "tok_b", **QUIET)
    tok = from_pretrained(root / "tok_a")
    gen_train = TrainConfig(steps=2, batch_size=8, lr=1e-4, lr_schedule="constant", warmup_frac=0.0, log_every=1)
    T.train_generator("SiT", GeneratorConfig(num_sampling_steps=2), gen_train, DATA, tok, root / "gen", eval_samples=0,
                      **QUIET)
    return root / "tok_a", root / "tok_b", root / "gen", a, b


def test_evaluate_refuses_a_generator_decoded_by_another_tokenizer(two_tokenizers_and_a_generator, tmp_path, capsys):
    tok_a, tok_b, gen, _, _ = two_tokenizers_and_a_generator
    code, err = cli("evaluate", "--generator", gen, "--tokenizer", tok_b, "--preset", "smoke", "--num-images", 4,
                    "--cache-dir", tmp_path, capsys=capsys)
    assert code == 2 and "was trained on the latents of" in err and "not of this tokenizer" in err
    code, err = cli("evaluate", "--generator", gen, "--tokenizer", tok_a, "--which", "model", "--preset", "smoke",
                    "--num-images", 4, "--cache-dir", tmp_path, capsys=capsys)
    assert code == 2 and "--which model" in err  # the online weights are another tokenizer too


def test_an_explicit_set_seed_is_not_overwritten_by_the_seed_default(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = cli("train", "tokenizer", "--preset", "smoke", "--out", out, "--set", "tokenizer_train.steps=2",
                    "--set", "tokenizer_train.seed=7", "--set", "tokenizer.warm_start=none", "--device", "cpu",
                    capsys=capsys)
    assert code == 0, err
    configs = C.read_config(out)["configs"]
    assert configs["tokenizer_train"]["seed"] == 7 and configs["data"]["seed"] == 0
    out2 = tmp_path / "run2"
    code, err = cli("train", "tokenizer", "--preset", "smoke", "--out", out2, "--seed", "3", "--set",
                    "tokenizer_train.steps=2", "--set", "tokenizer.warm_start=none", "--device", "cpu", capsys=capsys)
    configs = C.read_config(out2)["configs"]
    assert code == 0 and configs["tokenizer_train"]["seed"] == 3 and configs["data"]["seed"] == 3


# ------------------------------------------------------------------------------------------------
# 7: operating-system refusals are one line, found before any work
# ------------------------------------------------------------------------------------------------


def test_unusable_output_locations_are_one_line_up_front(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for argv, want in [
        (("train", "tokenizer", "--preset", "smoke", "--out", a_file), "is a file, not a folder"),
        (("train", "tokenizer", "--preset", "smoke", "--out", a_file / "sub"), "which is a file, not a folder"),
        (("run", "00", "--preset", "smoke", "--out", a_file), "is a file, not a folder"),
        (("bench", "compare", "--plan", "smoke", "--out", a_file), "is a file, not a folder"),
        (("evaluate", "--tokenizer", tmp_path, "--out", tmp_path), "is a folder; give a file name"),
    ]:
        code, err = cli(*argv, capsys=capsys)
        assert code == 2 and err.startswith("ldetok-lite: error:") and want in err, (argv, err)
        assert "Traceback" not in err
    tok = tmp_path / "tok"
    C.save_pretrained(create_tokenizer("detok_tiny"), C.checkpoint_dir(tok, 1))
    calls = []
    monkeypatch.setattr("ldetok_lite.cli.evaluate.evaluate_tokenizer", lambda *a, **k: calls.append(1))
    code, err = cli("evaluate", "--tokenizer", tok, "--out", tmp_path, capsys=capsys)
    assert code == 2 and not calls  # refused before computing anything


def test_a_full_disk_is_one_line_that_says_disk(tmp_path, capsys, monkeypatch):
    import errno

    from ldetok_lite import io as lio

    real_fdopen = os.fdopen

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(lio.os, "fdopen", lambda *a, **k: FullFile(real_fdopen(*a, **k)))
    code, err = cli("train", "tokenizer", "--preset", "smoke", "--out", tmp_path / "run", "--set",
                    "tokenizer_train.steps=2", "--set", "tokenizer.warm_start=none", "--device", "cpu", capsys=capsys)
    assert code == 2 and "the disk is full" in err and "Traceback" not in err


def test_notebook_runner_refusals_are_one_line(tmp_path, capsys, monkeypatch):
    code, err = cli("run", "00", "--preset", "smoke", "--out", tmp_path / "a", "--kernel", "nosuchkernel",
                    capsys=capsys)
    assert code == 2 and "--kernel 'nosuchkernel' is not installed; installed: python3" in err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "00_welcome.ipynb").symlink_to(tmp_path / "victim.ipynb")
    code, err = cli("run", "00", "--preset", "smoke", "--out", tmp_path / "b", capsys=capsys)
    assert code == 2 and "is a symbolic link" in err and not (tmp_path / "victim.ipynb").exists()
    monkeypatch.chdir(tmp_path)  # an explicit notebook file runs from anywhere
    from ldetok_lite.cli import run as run_cli

    nb = Path(run_cli.__file__).resolve().parents[2] / "notebooks" / "00_welcome.ipynb"
    assert run_cli.find_notebooks([str(nb)]) == [nb]


@pytest.mark.slow
def test_a_cell_timeout_is_one_line(tmp_path, capsys):
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                          "language": "python"}})
    params = nbformat.v4.new_code_cell('preset = "tiny"\nseed = 0\nout_dir = ""\ninteractive = True')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import time\ntime.sleep(30)")]
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    t0 = time.monotonic()
    code, err = cli("run", path, "--preset", "smoke", "--out", tmp_path / "out", "--timeout", "2", capsys=capsys)
    assert code == 2 and "a cell ran longer than --timeout 2 s" in err and "Traceback" not in err
    assert time.monotonic() - t0 < 25, "the cell was not stopped at the timeout"


def test_truncated_reference_statistics_fail_before_any_work(tmp_path, capsys):
    bad = tmp_path / "ref.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    tok = tmp_path / "tok"
    C.save_pretrained(create_tokenizer("detok_tiny"), C.checkpoint_dir(tok, 1))
    code, err = cli("evaluate", "--generator", tok, "--tokenizer", tok, "--ref-stats", bad, capsys=capsys)
    assert code == 2 and "--ref-stats: cannot read the FID statistics file" in err


# ------------------------------------------------------------------------------------------------
# 9: checkpoints read only what their manifest lists, inside their folder
# ------------------------------------------------------------------------------------------------


def test_manifest_names_cannot_leave_the_checkpoint(tmp_path):
    d = C.save_pretrained(create_tokenizer("detok_tiny"), tmp_path / "ck")
    man = json.loads((d / C.MANIFEST).read_text())
    (tmp_path / "outside.bin").write_bytes(b"secret")
    for name in ("../outside.bin", "/etc/hostname", "sub/../../outside.bin"):
        bad = dict(man, files={**man["files"], name: {"size": 6, "sha256": "0" * 64}})
        (d / C.MANIFEST).write_text(json.dumps(bad))
        with pytest.raises(C.CheckpointError, match="which is not a file of the checkpoint folder"):
            from_pretrained(d)


def test_files_the_manifest_does_not_list_are_never_read(tmp_path):
    from ldetok_lite.io import save_tensors_atomic

    torch.manual_seed(0)
    online = create_tokenizer("detok_tiny")
    d = C.save_pretrained(online, tmp_path / "ck")  # no EMA saved
    planted = {k: torch.zeros_like(v) for k, v in online.state_dict().items()}
    save_tensors_atomic(d / C.EMA_FILE, planted)  # added afterwards, not in the manifest
    loaded = from_pretrained(d)  # which="ema" falls back to the listed online weights
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in online.state_dict().items())
    save_tensors_atomic(d / "extra_latent_stats.safetensors", {"mean": torch.zeros(8), "std": torch.ones(8)})
    with pytest.raises(C.CheckpointError, match="not listed in its manifest"):
        load_latent_stats(d)
    (d / "linked.safetensors").symlink_to(d / C.MODEL_FILE)
    man = json.loads((d / C.MANIFEST).read_text())
    man["files"]["linked.safetensors"] = man["files"][C.MODEL_FILE]
    (d / C.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(C.CheckpointError, match="is a symbolic link"):
        C.verify_checkpoint(d)
