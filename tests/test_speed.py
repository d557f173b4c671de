"""Speed pieces on the CPU: FLOP accounting, regional compile, the speed benchmark at tiny sizes."""

from __future__ import annotations

import json

import pytest
import torch

from ldetok_lite.cli import main
from ldetok_lite.corruption import num_kept
from ldetok_lite.tokenizer import create_tokenizer
from ldetok_lite.training import accel


@pytest.fixture(autouse=True)
def one_thread():
    """Correctness, not speed: one intra-op thread (two spin-waiting threads on a shared 2-core
    machine make these steps 10x slower); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_flop_counter_sees_cpu_attention():
    q = torch.randn(1, 2, 16, 8)
    flops = accel.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert flops == 2 * 2 * (2 * 16 * 16 * 8)  # QK^T and AV, 2 heads, multiply-add = 2


def test_tokenizer_flops_are_the_exact_expectation_over_the_mask_ratio():
    torch.manual_seed(0)
    tok = create_tokenizer("detok_tiny", img_size=32).train()
    x = torch.rand(1, 3, 32, 32)
    counted = {m: accel.count_flops(accel._tokenizer_step, tok, x, m) for m in (0.0, 0.2, 0.6)}
    assert counted[0.0] > counted[0.2] > counted[0.6] > 0
    curve = accel.tokenizer_flops_curve(tok, 32)  # fitted at mask ratios 0, 0.35, 0.7
    for m, f in counted.items():  # exact at token counts it was not fitted on
        assert curve(num_kept(tok.seq_len, m)) == pytest.approx(f, rel=1e-9)
    expected = accel.tokenizer_train_flops(tok, 32)
    assert curve(num_kept(tok.seq_len, 0.7)) < expected < counted[0.0]
    assert accel.tokenizer_train_flops(tok, 32, mask_ratio=0.0) == counted[0.0]


def test_mfu_and_peaks():
    assert accel.mfu(1e9, 100.0, 1e12) == pytest.approx(0.1)
    assert accel.mfu(1e9, 100.0, None) is None
    assert accel.peak_flops("cpu") is None
    assert dict(accel.PEAK_FLOPS)["H200"] == 989.4e12


@pytest.mark.slow
def test_regional_compile_keeps_names_and_results():
    """Blocks compiled in place (dynamo traces them; the eager backend keeps the test fast): same
    parameter names, same outputs, and two token counts (two mask ratios) run through one module."""
    torch.manual_seed(0)
    tok = create_tokenizer("detok_tiny", img_size=32).eval()
    keys = list(tok.state_dict())
    x = torch.rand(2, 3, 32, 32)
    g = torch.Generator().manual_seed(1)
    noises = [torch.rand(2, tok.seq_len, generator=g) for _ in range(3)]

    def outputs():
        with torch.no_grad():
            return [tok.decode(*tok.encode(x, mask_ratio=m, mask_noise=nz)[:2])
                    for m, nz in zip((0.3, 0.6, 0.5), noises)]

    eager = outputs()
    n = accel.compile_blocks(tok, backend="eager")
    assert n == len(tok.encoder.transformer) + len(tok.decoder.transformer)
    assert accel.compile_blocks(tok, backend="eager") == 0  # idempotent
    assert list(tok.state_dict()) == keys
    for c, e in zip(outputs(), eager):
        torch.testing.assert_close(c, e)


@pytest.mark.slow
def test_speed_benchmark_runs_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "speed.json"
    rc = main(["bench", "speed", "--device", "cpu", "--models", "detok_tiny,SiT_tiny", "--img", "32",
               "--latent-size", "8", "--latent-channels", "8", "--num-classes", "10", "--tok-batch", "4",
               "--gen-batch", "4", "--steps", "2", "--warmup", "1", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "speed-up of fast over official" in text and "GFLOP/img" in text
    res = json.loads(out.read_text())
    assert set(res["speedup"]) == {"detok_tiny", "SiT_tiny"}
    assert all(r["img_per_s"] > 0 and r["gflop_per_img"] > 0 for r in res["rows"])
