"""The training loop: lr schedule, EMA, no-decay groups, resume exactness, decoder-only, NaN stop."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ldetok_lite import checkpoint as ckpt
from ldetok_lite import training as T
from ldetok_lite.config import DataConfig, TokenizerConfig, TrainConfig
from ldetok_lite.io import safe_torch_load
from ldetok_lite.training import loop

ROOT = Path(__file__).resolve().parents[1]
TOK = TokenizerConfig()  # detok_tiny, γ 3, M 0.7, MSE + KL
TRAIN = TrainConfig(steps=6, batch_size=8, blr=1e-3, warmup_frac=0.34, log_every=2, ckpt_every=2, ema_decay=0.9)
DATA = DataConfig(num_train=48, num_val=8)
QUIET = dict(device="cpu", progress="none", log=lambda *a: None)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------- schedule


def test_lr_schedule_values():
    cfg = TrainConfig(steps=100, batch_size=64, blr=4e-3, warmup_frac=0.1, min_lr=1e-5)
    base = 4e-3 * 64 / 256
    assert cfg.effective_lr == pytest.approx(base)
    assert T.lr_at(0, cfg) == 0.0
    assert T.lr_at(5, cfg) == pytest.approx(base * 0.5)
    assert T.lr_at(10, cfg) == pytest.approx(base)
    mid = 10 + 45
    assert T.lr_at(mid, cfg) == pytest.approx(1e-5 + (base - 1e-5) * 0.5)
    assert T.lr_at(100, cfg) == pytest.approx(1e-5)
    const = cfg.replace(lr_schedule="constant", lr=2e-4, warmup_frac=0.0)
    assert all(T.lr_at(s, const) == 2e-4 for s in (0, 50, 99))
    accum = cfg.replace(grad_accum=4)
    assert accum.effective_lr == pytest.approx(4 * base)


def test_no_decay_groups_follow_spec():
    from ldetok_lite.tokenizer import create_tokenizer

    m = create_tokenizer("detok_tiny")
    names = set(T.no_decay_names(m))
    for n in ("encoder.positional_embedding", "decoder.mask_token", "encoder.patch_embed.0.weight",
              "decoder.decoder_embed.weight", "encoder.ln_pre.weight", "encoder.latent_head.bias"):
        assert n in names
    assert "encoder.latent_head.weight" not in names
    groups = T.param_groups(m, 1e-4)
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_ema_update_and_frozen_copy():
    m = torch.nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.fill_(0.0)
        m.bias.fill_(0.0)
    ema = T.EMA(m, decay=0.9)
    with torch.no_grad():
        m.weight.fill_(1.0)
        m.bias.fill_(1.0)
    m.bias.requires_grad_(False)  # frozen params are copied (the official models/ema.py)
    ema.update(m)
    assert torch.allclose(ema.state_dict()["weight"], torch.full((2, 2), 0.1))
    assert torch.equal(ema.state_dict()["bias"], torch.ones(2))
    ema.update(m)
    assert torch.allclose(ema.state_dict()["weight"], torch.full((2, 2), 0.19))


def test_index_stream_is_reproducible_and_resumable():
    a = T.IndexStream(10, 3, seed=1)
    seq = [a.next().tolist() for _ in range(7)]
    assert sorted(sum(seq[:3], [])) == sorted(set(sum(seq[:3], [])))  # one epoch: no repeats
    b = T.IndexStream(10, 3, seed=1)
    for _ in range(4):
        b.next()
    c = T.IndexStream(10, 3, seed=1)
    c.load_state(b.state())
    assert [c.next().tolist() for _ in range(3)] == seq[4:]
    r0, r1 = T.IndexStream(12, 3, 0, rank=0, world_size=2), T.IndexStream(12, 3, 0, rank=1, world_size=2)
    assert not set(r0.next().tolist()) & set(r1.next().tolist())
    with pytest.raises(ValueError, match="batch_size"):
        T.IndexStream(2, 3, 0)


def test_rng_state_round_trip_is_weights_only(tmp_path):
    s = T.rng_state()
    torch.save(s, tmp_path / "s.pt")
    a = torch.rand(3)
    T.set_rng_state(safe_torch_load(tmp_path / "s.pt"))
    assert torch.equal(torch.rand(3), a)


# ---------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    res = T.train_tokenizer(TOK, TRAIN, DATA, out, **QUIET)
    return res, out


def test_run_writes_everything(reference_run):
    res, out = reference_run
    assert res.step == 6 and res.checkpoint == ckpt.checkpoint_dir(out, 6)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "split" not in r] == [2, 4, 6]
    assert {"loss", "rec_loss", "kl_loss", "lr", "grad_norm", "psnr"} <= set(rows[0])
    assert rows[-1]["split"] == "val" and "psnr_ema" in rows[-1]
    assert list((out / "samples").glob("*.png"))
    kept = ckpt.list_checkpoints(out)
    assert [p.name for p in kept] == ["step_0000004", "step_0000006"]  # keep 2
    assert not res.ema_model.training
    # a finished run is just reloaded
    again = T.train_tokenizer(TOK, TRAIN, DATA, out, **QUIET)
    assert again.resumed_from == 6 and _same(again.model.state_dict(), res.model.state_dict())


def test_interrupted_run_resumes_bit_identical(reference_run, tmp_path):
    ref, _ = reference_run

    class Crash(Exception):
        pass

    def crash_at_5(step, metrics):
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        T.train_tokenizer(TOK, TRAIN, DATA, tmp_path, callback=crash_at_5, **QUIET)
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000004"
    res = T.train_tokenizer(TOK, TRAIN, DATA, tmp_path, **QUIET)
    assert res.resumed_from == 4
    assert _same(res.model.state_dict(), ref.model.state_dict())
    assert _same(res.ema_model.state_dict(), ref.ema_model.state_dict())


KILL_SCRIPT = textwrap.dedent("""
    import os, random, shutil, signal, sys, time
    import torch
    torch.set_num_threads(1)
    import safetensors.torch
    from ldetok_lite import checkpoint as ckpt
    from ldetok_lite import training as T
    from ldetok_lite.config import DataConfig, TokenizerConfig, TrainConfig
    mode, out = sys.argv[1], sys.argv[2]
    tok = TokenizerConfig(gan_weight=0.1, gan_start_step=2)
    train = TrainConfig(steps=6, batch_size=8, blr=1e-3, warmup_frac=0.34, log_every=2, ckpt_every=2,
                        ema_decay=0.9, grad_accum=2)
    data = DataConfig(num_train=48, num_val=8)

    def die(why):
        print(f"killed at {why}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    # Kill points: every file operation of a checkpoint write (before it; for file writes also after
    # the write with the file torn to half its size) and the end of every step. Each has a label
    # "step/phase/kind/n" that is the same in a fresh and in a resumed process, so a label from the
    # reference run's trace names one moment of the run (mode "label:<label>").
    target = mode.split(":", 1)[1] if mode.startswith("label:") else None
    where = {"step": 0, "phase": "train"}
    counts, trace = {}, []

    def event(kind, path=None):
        if where["phase"] == "train" and kind != "step":
            return  # metrics/sample writes are not labelled (they are rewritten on resume anyway)
        key = (where["step"], where["phase"], kind)
        counts[key] = counts.get(key, 0) + 1
        label = "/".join(map(str, key)) + f"/{counts[key]}"
        trace.append(label)
        if label == target:
            if hasattr(path, "fileno"):  # an open temporary file (io.atomic_write): tear it in place
                path.flush()
                os.ftruncate(path.fileno(), path.tell() // 2)
            elif path is not None:
                raw = open(path, "rb").read()
                open(path, "wb").write(raw[: len(raw) // 2])
            die(label)

    def wrap(owner, name, kind, written=None):
        real = getattr(owner, name)
        def f(*a, **k):
            event(kind)
            r = real(*a, **k)
            if written is not None:
                event(kind + "-torn", path=written(a))
            return r
        setattr(owner, name, f)

    wrap(os, "replace", "replace")
    wrap(os, "fsync", "fsync")
    wrap(shutil, "rmtree", "rmtree")
    wrap(safetensors.torch, "save_file", "save_file", written=lambda a: a[1])
    wrap(torch, "save", "torch_save", written=lambda a: a[1])
    for name, phase in (("save_pretrained", "ckpt"), ("prune_checkpoints", "prune")):
        def phased(*a, _real=getattr(ckpt, name), _phase=phase, **k):
            where["phase"] = _phase
            try:
                return _real(*a, **k)
            finally:
                where["phase"] = "train"
        setattr(ckpt, name, phased)

    def cb(step, m):
        where["step"] = step
        event("step")
        if mode == "callback" and step == 3:
            die("step 3")

    if mode == "mid-write":
        real = ckpt._finish_dir
        def dying(tmp, final):
            if final.name == "step_0000004":
                die("finish_dir")   # files written, manifest not yet
            return real(tmp, final)
        ckpt._finish_dir = dying
    print("ready", flush=True)
    t0 = time.time()
    T.train_tokenizer(tok, train, data, out, device="cpu", progress="none", callback=cb,
                      log=lambda *a: print(*a, flush=True))
    print(f"done train_s={time.time() - t0:.3f}", flush=True)
    print("trace " + " ".join(trace), flush=True)
""")


@pytest.fixture(scope="module")
def kill_script(tmp_path_factory):
    """The script, its environment, and one uninterrupted reference run of it (and its stdout)."""
    base = tmp_path_factory.mktemp("kill")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = base / "kill.py"
    script.write_text(KILL_SCRIPT)
    ref = subprocess.run([sys.executable, str(script), "none", str(base / "ref")], env=env, capture_output=True,
                         text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return script, env, base / "ref", ref.stdout


def _same_final_weights(ref_dir, run_dir):
    for name in ("model.safetensors", "ema.safetensors", "extra_aux.safetensors"):
        a = ckpt.load_tensors(ckpt.checkpoint_dir(ref_dir, 6) / name)
        b = ckpt.load_tensors(ckpt.checkpoint_dir(run_dir, 6) / name)
        assert _same(a, b), name


@pytest.mark.parametrize("mode,expect", [("callback", "step_0000002"), ("mid-write", "step_0000002")])
def test_sigkilled_process_resumes_bit_identical(tmp_path, kill_script, mode, expect):
    script, env, ref_dir, _ = kill_script
    run_dir = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(script), mode, str(run_dir)], env=env, capture_output=True,
                            text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert ckpt.latest_checkpoint(run_dir).name == expect
    again = subprocess.run([sys.executable, str(script), "none", str(run_dir)], env=env, capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp" in p.name]
    _same_final_weights(ref_dir, run_dir)


def _complete(run_dir) -> list[Path]:
    out = []
    for d in ckpt.list_checkpoints(run_dir):
        try:
            ckpt.verify_checkpoint(d)
            out.append(d)
        except ckpt.CheckpointError:
            pass
    return out


def test_sigkill_at_random_points_resumes_bit_identical(tmp_path, kill_script):
    """Issue 8: SIGKILL a real training process four times: at three random labelled moments of
    the run (the first always inside the first checkpoint's write; the others between steps, before
    a checkpoint file operation, after a torn file write, or while pruning) and once at a random
    time from outside, after the newest complete checkpoint was truncated. Every restart resumes
    from the last complete checkpoint (the truncated one is reported and skipped) and the final
    weights equal the uninterrupted run's bit for bit. ``LDETOK_KILL_SEED`` replays a draw."""
    import random
    import signal
    import time

    script, env, ref_dir, ref_out = kill_script
    seed = int(os.environ.get("LDETOK_KILL_SEED", time.time_ns() % 2**31))
    rng = random.Random(seed)
    trace = next(line for line in ref_out.splitlines() if line.startswith("trace ")).split()[1:]
    train_s = float(next(line for line in ref_out.splitlines() if line.startswith("done ")).split("=")[1])

    def at(label):
        return int(label.split("/")[0])

    # three moments, in run order: during the first checkpoint's write, anywhere in steps 3-4, from step 5 on
    first = rng.choice([lb for lb in trace if at(lb) == 2 and "/ckpt/" in lb])
    second = rng.choice([lb for lb in trace[trace.index(first) + 1:] if at(lb) in (3, 4)])
    third = rng.choice([lb for lb in trace[trace.index(second) + 1:] if at(lb) >= 5])
    run_dir = tmp_path / "run"
    info = f"seed {seed} (rerun with LDETOK_KILL_SEED={seed}); kills at {first}, {second}, {third}"
    cmd = [sys.executable, str(script)]

    for label in (first, second, third):
        latest = ckpt.latest_checkpoint(run_dir) if run_dir.exists() else None
        p = subprocess.run([*cmd, f"label:{label}", str(run_dir)], env=env, capture_output=True, text=True)
        assert p.returncode == -9 and f"killed at {label}" in p.stdout, (info, p.stdout[-1500:], p.stderr[-1500:])
        if latest is not None:  # it resumed from the last complete checkpoint before it was killed
            assert f"resuming from {latest} " in p.stdout, (info, p.stdout[-1500:])

    # truncate the newest complete checkpoint: it must be reported and the previous one used
    complete = _complete(run_dir)
    assert len(complete) >= 2, (info, complete)
    victim = complete[-1] / "ema.safetensors"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])

    # a kill at a random time, from outside, then a run to the end
    proc = subprocess.Popen([*cmd, "none", str(run_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    delay = rng.uniform(0.0, train_s)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate()
    assert proc.returncode in (0, -9), (info, err[-1500:])
    final = subprocess.run([*cmd, "none", str(run_dir)], env=env, capture_output=True, text=True)
    assert final.returncode == 0, (info, final.stderr[-2000:])
    logs = rest + final.stdout
    assert "skipping checkpoint" in logs and "truncated" in logs, (info, logs[-2000:])
    assert f"resuming from {complete[-2]} " in logs, (info, logs[-2000:])
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp" in p.name or ".old" in p.name]
    _same_final_weights(ref_dir, run_dir)


def test_changed_settings_refuse_to_resume(reference_run):
    _, out = reference_run
    with pytest.raises(ckpt.CheckpointError, match="other settings"):
        T.train_tokenizer(TOK.replace(gamma=1.0), TRAIN, DATA, out, **QUIET)


def test_decoder_only_freezes_encoder(reference_run, tmp_path):
    ref, ref_dir = reference_run
    ft_cfg = TOK.replace(gamma=0.0, mask_ratio=0.0, decoder_only=True)
    with pytest.raises(ValueError, match="init_from"):
        T.train_tokenizer(ft_cfg, TRAIN.replace(steps=2), DATA, tmp_path / "x", **QUIET)
    res = T.train_tokenizer(ft_cfg, TRAIN.replace(steps=3, ckpt_every=0), DATA, tmp_path / "ft", init_from=ref_dir,
                            **QUIET)
    before, after = ref.model.state_dict(), res.model.state_dict()
    enc = [k for k in after if not k.startswith("decoder.")]
    dec = [k for k in after if k.startswith("decoder.")]
    assert all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in dec)
    assert all(not p.requires_grad for n, p in res.model.named_parameters() if n.startswith("encoder."))
    # as the official fine-tune: the EMA encoder is the online (not the EMA) pre-training encoder
    ema = res.ema_model.state_dict()
    assert all(torch.equal(ema[k], before[k]) for k in enc)


def test_non_finite_loss_stops_and_keeps_last_good(tmp_path, monkeypatch):
    from ldetok_lite.losses import ReconstructionLoss

    real = ReconstructionLoss.generator_loss

    def poisoned(self, recon, target, kl, step):
        loss, m = real(self, recon, target, kl, step)
        return (loss * float("nan") if step == 2 else loss), m  # 0-based step 2 = step 3

    monkeypatch.setattr(ReconstructionLoss, "generator_loss", poisoned)
    msgs = []
    with pytest.raises(T.NonFiniteLossError, match="at step 3") as e:
        T.train_tokenizer(TOK, TRAIN, DATA, tmp_path, device="cpu", progress="none", log=msgs.append)
    assert e.value.step == 3 and "step_0000002" in str(e.value)
    last = ckpt.latest_checkpoint(tmp_path)
    assert last.name == "step_0000002"
    w = ckpt.load_tensors(last / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values())
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["event"] == "non_finite"


def test_callback_gets_floats_and_can_stop(tmp_path):
    seen = []

    def cb(step, metrics):
        seen.append((step, metrics))
        return step < 3

    res = T.train_tokenizer(TOK, TRAIN.replace(ckpt_every=0), DATA, tmp_path, callback=cb, **QUIET)
    assert res.stopped_early and res.step == 3 and [s for s, _ in seen] == [1, 2, 3]
    assert all(isinstance(v, float) and math.isfinite(v) for v in seen[0][1].values())
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000003"


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="train_cfg"):
        T.train_tokenizer(TOK, {"steps": 3}, DATA, tmp_path / "never", **QUIET)
    with pytest.raises(ValueError, match="progress"):
        loop._resolve_progress("bars")
