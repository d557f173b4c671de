"""The tokenizer × generator comparison: table maths, variants and plans, an end-to-end smoke run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from ldetok_lite import analysis
from ldetok_lite import presets as P
from ldetok_lite.experiments import cache, compare
from ldetok_lite.experiments import table as C
from ldetok_lite.experiments.compare import run_comparison


def _rows():
    rows = []
    for seed, (p_sit, l_sit, p_mar, l_mar) in enumerate([(10.0, 8.0, 20.0, 22.0), (12.0, 9.0, 18.0, 18.0)]):
        rows += [
            {"kind": "tokenizer", "variant": "plain", "seed": seed, "rfid": 1.0 + seed, "psnr": 30.0 + seed},
            {"kind": "tokenizer", "variant": "ldetok", "seed": seed, "rfid": 2.0, "psnr": 28.0},
            {"kind": "generator", "family": "SiT", "variant": "plain", "seed": seed, "gfid": p_sit},
            {"kind": "generator", "family": "SiT", "variant": "ldetok", "seed": seed, "gfid": l_sit},
            {"kind": "generator", "family": "MAR", "variant": "plain", "seed": seed, "gfid": p_mar},
            {"kind": "generator", "family": "MAR", "variant": "ldetok", "seed": seed, "gfid": l_mar},
        ]
    rows.append({"kind": "generator", "family": "DiT", "variant": "plain", "seed": 0, "gfid": 5.0})  # no pair
    return rows


def test_summarize_table_and_ratios():
    s = C.summarize(_rows())
    assert s["tokenizers"]["plain"]["rfid_mean"] == pytest.approx(1.5)
    assert s["tokenizers"]["plain"]["rfid_std"] == pytest.approx(math.sqrt(0.5))
    assert s["tokenizers"]["ldetok"]["psnr_std"] == 0.0
    assert s["generators"]["SiT"]["plain"]["gfid_mean"] == pytest.approx(11.0)
    assert s["generators"]["SiT"]["ldetok"]["rfid_mean"] == pytest.approx(2.0)  # rFID beside every gFID
    sit = s["ratios"]["SiT"]
    per = [8.0 / 10.0, 9.0 / 12.0]  # paired per seed, then averaged
    assert sit["per_seed"] == {0: pytest.approx(per[0]), 1: pytest.approx(per[1])}
    assert sit["mean"] == pytest.approx(sum(per) / 2)
    assert sit["std"] == pytest.approx(abs(per[0] - per[1]) / math.sqrt(2))
    assert sit["of_means"] == pytest.approx(8.5 / 11.0)
    assert sit["paper_vs_own_baseline"] == pytest.approx(5.50 / 6.97, abs=1e-3)
    assert s["ratios"]["MAR"]["mean"] == pytest.approx((22 / 20 + 1.0) / 2)
    assert "DiT" not in s["ratios"]  # needs both tokenizers
    assert s["beats_baseline"] == {"SiT": True, "MAR": False}
    text = C.format_table(s)
    assert "SiT" in text and "0.789" in text and "beats" in text


def test_write_outputs_and_load(tmp_path):
    rows = _rows()
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = C.write_outputs(C.summarize(rows), tmp_path, meta={"plan": "synthetic"})
    for key in ("json", "csv", "ratios_csv", "tokenizers_csv", "png"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    with open(paths["ratios_csv"]) as f:
        ratios = {r["generator"]: r for r in csv.DictReader(f)}
    assert float(ratios["SiT"]["ratio_mean"]) == pytest.approx((0.8 + 0.75) / 2, abs=1e-4)
    loaded = C.load_comparison(tmp_path)
    assert loaded["ratios"]["SiT"]["n"] == 2
    # the folder reused with another plan: only the newest plan's rows count
    older = [{**r, "plan_key": "old", "gfid": 99.0} if "gfid" in r else {**r, "plan_key": "old"} for r in rows]
    newer = [{**r, "plan_key": "new"} for r in rows]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in older + newer))
    again = C.load_comparison(tmp_path)
    assert again["generators"]["SiT"]["plain"]["gfid_mean"] == pytest.approx(11.0) and len(again["rows"]) == len(rows)
    assert C.load_comparison(tmp_path / "missing") is None
    # the notebooks' fallback: the first folder with rows wins, named as given
    assert C.load_first_comparison(tmp_path / "missing", tmp_path)[0] == tmp_path
    assert C.load_first_comparison(tmp_path / "missing") == (None, None)


def test_merge_joins_folders_measured_apart(tmp_path, capsys):
    from ldetok_lite.cli import main

    rows = [{**r, "plan_key": "k1", "plan": "tiny"} for r in _rows()]
    for name, share in (("a", [r for r in rows if r["seed"] == 0]), ("b", [r for r in rows if r["seed"] == 1])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in share + rows[:1]))
    recipe = {"name": "tiny", "preset": {"data": {"dataset": "shapes-large"}}}
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"meta": {"plan": recipe}}))
    assert main(["bench", "compare", "--merge", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--out", str(tmp_path / "joined")]) == 0
    joined = C.load_comparison(tmp_path / "joined")
    assert len(joined["rows"]) == len(rows)  # the cell in both folders is kept once
    assert joined["ratios"] == C.summarize(rows)["ratios"] and joined["ratios"]["SiT"]["n"] == 2
    assert (tmp_path / "joined" / "table.csv").is_file() and "joined 13 rows" in capsys.readouterr().out
    assert joined["meta"]["plan"] == recipe  # the recipe behind the rows survives the merge
    # another plan's rows, a folder without rows, no --out: clear errors, nothing written
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "rows.jsonl").write_text(json.dumps({**rows[0], "plan_key": "k2"}) + "\n")
    for argv, needle in ((["--merge", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "x")],
                          "different plans"),
                         (["--merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")], "no rows.jsonl"),
                         (["--merge", str(tmp_path / "a")], "--merge needs --out")):
        assert main(["bench", "compare", *argv]) != 0
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "x" / "rows.jsonl").exists()


def test_pairs_beyond_the_main_ratio(tmp_path):
    rows = _rows()
    for seed, (plain, ldetok, distill) in enumerate([(12.0, 9.0, 6.0), (10.0, 8.0, 6.0)]):
        rows += [{"kind": "generator", "family": "SiT", "variant": v, "seed": seed, "gfid": g}
                 for v, g in (("cnn-plain", plain), ("cnn-ldetok", ldetok), ("distill", distill))]
    s = C.summarize(rows)
    cnn = s["pairs"]["cnn-ldetok/cnn-plain"]
    assert cnn["generators"]["SiT"]["mean"] == pytest.approx((9 / 12 + 8 / 10) / 2)
    assert s["pairs"]["distill/plain"]["generators"]["SiT"]["per_seed"] == {0: pytest.approx(0.6), 1: 0.5}
    assert "ldetok-distill/ldetok" not in s["pairs"]  # not measured
    assert "ldetok/plain" not in s["pairs"]  # the main ratio is not repeated
    assert "gFID(cnn-ldetok) / gFID(cnn-plain)" in C.format_table(s)
    paths = C.write_outputs(s, tmp_path)
    with open(paths["pairs_csv"]) as f:
        pairs = {(r["target"], r["baseline"], r["generator"]): r for r in csv.DictReader(f)}
    assert float(pairs[("distill", "ldetok", "SiT")]["ratio_mean"]) == pytest.approx((6 / 8 + 6 / 9) / 2, abs=1e-4)
    assert paths["png"].is_file()


def test_sweep_summary_and_plot(tmp_path):
    rows = []
    for g in range(5):
        v = P.variant_name(g, 0.7)
        rows.append({"kind": "tokenizer", "variant": v, "seed": 0, "rfid": 1.0 + g})
        rows.append({"kind": "generator", "family": "SiT", "variant": v, "seed": 0, "gfid": 10.0 - g})
    sw = C.summarize_sweeps(rows)
    assert [p["value"] for p in sw["gamma"]["SiT"]] == [0, 1, 2, 3, 4]
    assert sw["gamma"]["SiT"][3]["variant"] == "ldetok" and sw["gamma"]["SiT"][3]["rfid_mean"] == 4.0
    paths = C.write_outputs(C.summarize(rows), tmp_path, sweeps=sw)
    assert paths["sweeps_png"].is_file() and paths["sweeps_csv"].is_file()


def test_variants_and_plans():
    assert P.variant_name(3, 0.7) == "ldetok"
    assert P.variant_name(0, 0) == "plain"
    assert P.variant_name(3, 0.7, True) == "additive"
    assert P.variant_name(2, 0.7) == "g2-m0.7"
    assert P.variant_settings("g2-m0.9-add") == {"gamma": 2.0, "mask_ratio": 0.9, "use_additive_noise": True,
                                                 "distill_weight": 0.0}
    assert P.variant_settings("noise_only")["mask_ratio"] == 0.0
    with pytest.raises(ValueError, match="mask_ratio"):
        P.variant_name(3, 1.0)
    with pytest.raises(ValueError, match="not known"):
        P.variant_settings("fancy")
    with pytest.raises(ValueError, match="not known"):
        P.compare_plan("huge")
    long = P.compare_plan("compare")
    assert long.preset.tokenizer.warm_start_steps > 0 and long.preset.tokenizer.warm_start_seed == 0


def test_mechanism_probes():
    from ldetok_lite.tokenizer import create_tokenizer

    torch.manual_seed(0)
    tok = create_tokenizer("detok_tiny").eval()
    x = torch.rand(4, 3, 32, 32)
    curve = analysis.noise_robustness(tok, x, taus=(0.0, 1.0))
    assert len(curve) == 2 and all(math.isfinite(v) for v in curve)
    corr = analysis.neighbour_correlation(tok, x)
    assert -1.0 <= corr <= 1.0
    with pytest.raises(ValueError, match="tau"):
        analysis.noise_robustness(tok, x, taus=(1.5,))


def test_comparison_end_to_end_smoke(tmp_path, shared_cache, monkeypatch):
    out = tmp_path / "cmp"
    res = run_comparison("smoke", seeds=(0,), out_dir=out, cache_dir=shared_cache,
                           tokenizers=("plain", "ldetok"), generators=("SiT",), device="cpu", log=None,
                           progress="none", feature_cache_dir=shared_cache)
    for name in ("summary.json", "table.csv", "ratios.csv", "tokenizers.csv", "comparison.png", "rows.jsonl"):
        assert (out / name).is_file(), name
    s = res.summary
    assert set(s["tokenizers"]) == {"plain", "ldetok"}
    assert math.isfinite(s["tokenizers"]["ldetok"]["rfid_mean"])
    assert math.isfinite(s["generators"]["SiT"]["ldetok"]["gfid_mean"])
    assert s["ratios"]["SiT"]["n"] == 1
    data = json.loads((out / "summary.json").read_text())
    assert data["meta"]["plan"]["name"] == "smoke" and "paper_ratios" in data

    # the CLI continues the same run directory: every cell is already measured, nothing retrains
    from ldetok_lite.cli import main

    n_rows = len((out / "rows.jsonl").read_text().splitlines())
    rc = main(["bench", "compare", "--plan", "smoke", "--seeds", "1", "--out", str(out), "--cache-dir",
               str(shared_cache), "--feature-cache-dir", str(shared_cache), "--tokenizers", "plain", "ldetok",
               "--generators", "SiT", "--device", "cpu", "--quiet"])
    assert rc == 0
    assert len((out / "rows.jsonl").read_text().splitlines()) == n_rows

    # rows measured elsewhere (another machine, no model cache here): nothing is built, the table is rewritten
    def no_model(*args, **kwargs):
        raise AssertionError("a fully measured tokenizer was loaded")

    monkeypatch.setattr(compare, "get_tokenizer", no_model)
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "rows.jsonl").write_text((out / "rows.jsonl").read_text())
    again = run_comparison("smoke", seeds=(0,), out_dir=moved, cache_dir=tmp_path / "empty-cache",
                           tokenizers=("plain", "ldetok"), generators=("SiT",), device="cpu", log=None,
                           progress="none", feature_cache_dir=shared_cache)
    assert again.summary["ratios"]["SiT"] == s["ratios"]["SiT"]
    assert (moved / "summary.json").is_file() and not (tmp_path / "empty-cache").exists()


def test_decoder_finetune_keeps_the_latents_and_the_generators(tmp_path, shared_cache):
    plan = P.compare_plan("smoke", decoder_finetune_steps=3)
    assert plan.preset == P.load_preset("smoke") and plan.to_dict()["decoder_finetune_steps"] == 3
    tiny = P.compare_plan("tiny")  # by default half the tokenizer's steps (the paper: 100 of 200 epochs)
    assert tiny.decoder_finetune_steps == tiny.preset.tokenizer_train.steps // 2
    assert P.compare_plan("tiny", decoder_finetune_steps=0).decoder_finetune_steps == 0
    quiet = dict(device="cpu", log=lambda *a: None, progress="none")
    tok = cache.get_tokenizer(plan.preset, "ldetok", shared_cache, **quiet)
    ft = cache.finetune_decoder(plan.preset, "ldetok", tok, steps=3, **quiet)
    assert ft.run_dir.endswith("-ft3") and ft.gamma == 0.0 and ft.mask_ratio == 0.0
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tok.tokenize(x), ft.tokenize(x))  # the same latents
        assert not torch.equal(tok.reconstruct(x), ft.reconstruct(x))  # a different decoder
    out = tmp_path / "cmp-ft"
    res = run_comparison(plan, seeds=(0,), out_dir=out, cache_dir=shared_cache, tokenizers=("plain", "ldetok"),
                           generators=("SiT",), device="cpu", log=None, progress="none",
                           feature_cache_dir=shared_cache)
    toks = {r["variant"]: r for r in res.rows if r["kind"] == "tokenizer"}
    assert all(math.isfinite(r["rfid_pretrain"]) and r["finetune_s"] > 0 for r in toks.values())
    gen_row = next(r for r in res.rows if r["kind"] == "generator" and r["variant"] == "ldetok")
    # the generator is the one trained on the pre-fine-tune tokenizer (reused, not retrained)
    assert gen_row["run_dir"] == str(cache.generator_dir(plan.preset, "SiT", "ldetok", shared_cache))
    assert "before the decoder fine-tune" in C.format_table(res.summary)
    with pytest.raises(ValueError, match="decoder_finetune_steps"):
        P.compare_plan("smoke", decoder_finetune_steps=-1)


def test_an_overridden_plan_keeps_the_presets_warm_start(tmp_path):
    # an overridden preset gets runs of its own; its corrupted variants still continue from the
    # plain AE of the same preset and seed (tokenizer.warm_start = "plain" at smoke and tiny)
    plan = P.compare_plan("smoke", overrides={"generator_train.steps": 2})
    assert plan.preset.tokenizer.warm_start == "plain"
    logs = []
    tok = cache.get_tokenizer(plan.preset, "ldetok", tmp_path, device="cpu", log=logs.append, progress="none")
    assert any("continues from the plain AE" in m for m in logs) and tok.warm_start_seconds > 0
    plain = cache.get_tokenizer(plan.preset, "plain", tmp_path, device="cpu", log=logs.append, progress="none")
    assert P.tokenizer_recipe(plan.preset, "ldetok")[0].warm_start == "plain"
    assert P.tokenizer_recipe(plan.preset, "plain")[0].warm_start == "none"
    assert tok.run_dir != plain.run_dir
    # the compare plan: every variant, plain included, continues from one shared plain AE (seed 0)
    long = P.compare_plan("compare").preset
    for v in ("plain", "ldetok"):
        t, tr, _ = P.tokenizer_recipe(long, v, seed=1)
        base_tok, base_train = P.warm_start_recipe(t, tr)
        assert base_tok.is_plain and base_tok.warm_start == "none" and base_train.seed == 0
        assert base_train.steps == long.tokenizer.warm_start_steps


def test_generators_of_one_tokenizer_share_one_latent_cache(tmp_path):
    # the six generators of one tokenizer encode the dataset once (a 164 MB file per run at tiny)
    plan = P.compare_plan("smoke", overrides={"generator_train.steps": 2})
    quiet = dict(device="cpu", log=lambda *a: None, progress="none")
    tok = cache.get_tokenizer(plan.preset, "plain", tmp_path, **quiet)
    dirs = [Path(cache.get_generator(plan.preset, fam, "plain", tmp_path, tokenizer=tok, **quiet).run_dir)
            for fam in ("SiT", "RasterAR")]
    shared = list((tmp_path / "latents").glob("latents-*.safetensors"))
    assert len(shared) == 1
    assert not any((d / "latent_cache.safetensors").exists() for d in dirs)
