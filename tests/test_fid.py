"""FID / IS / KID / PRC on torch-fidelity, statistics files, the offline shapes network, evaluate."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from ldetok_lite import assets
from ldetok_lite import evaluation as E
from ldetok_lite.cli import evaluate
from ldetok_lite.data import ShapesDataset


def fid(images, reference, **kwargs) -> float:
    return E.compute_metrics(images, reference, **kwargs)["fid"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fidcache")


@pytest.fixture(scope="module")
def net(cache):
    return E.get_feature_net("shapes-cnn", img_size=32, seed=0, cache_dir=cache, extractor="smoke", log=None)


@pytest.fixture(scope="module")
def sets():
    train = ShapesDataset(160, 32, seed=0, split="train")
    val = ShapesDataset(160, 32, seed=0, split="val")
    return train.images, val.images, val.labels


def test_fid_self_zero_and_shift(net, sets):
    x, y, _ = sets
    assert abs(fid(x, x, feature_net=net)) < 1e-2
    held_out = fid(y, x, feature_net=net)  # the finite-sample floor (160 images)
    g = torch.Generator().manual_seed(0)
    shifted = fid((y + 0.2).clamp(0, 1), x, feature_net=net)
    noisy = fid((y + 0.2 * torch.randn(y.shape, generator=g)).clamp(0, 1), x, feature_net=net)
    assert shifted > 5 * held_out and noisy > 5 * held_out


def test_stats_file_equals_image_path(net, sets, tmp_path):
    x, y, _ = sets
    direct = fid(y, x, feature_net=net)
    path = E.save_fid_stats(tmp_path / "ref.npz", x, feature_net=net)
    via_file = fid(y, path, feature_net=net)
    assert via_file == pytest.approx(direct, rel=1e-4, abs=1e-4)
    # an ADM-style file with only mu/sigma loads as well
    s = E.load_fid_stats(path, net)
    np.savez(tmp_path / "adm.npz", mu=s["mu"], sigma=s["sigma"])
    assert fid(y, tmp_path / "adm.npz", feature_net=net) == pytest.approx(via_file, rel=1e-9)
    # a file made with another network is refused
    np.savez(tmp_path / "other.npz", mu=s["mu"], sigma=s["sigma"], feature_net=np.array("inception-v3-compat:x"))
    with pytest.raises(ValueError, match="not comparable"):
        fid(y, tmp_path / "other.npz", feature_net=net)
    with pytest.raises(FileNotFoundError):
        E.load_fid_stats(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", mean=s["mu"])
    with pytest.raises(ValueError, match="mu"):
        E.load_fid_stats(tmp_path / "bad.npz")


def test_folder_and_callable_sources_match_tensor(net, sets, tmp_path):
    x, y, _ = sets
    x, y = x[:64], y[:64]
    direct = fid(y, x, feature_net=net)
    folder = tmp_path / "pngs"
    E.save_png_folder(y, folder)
    assert fid(str(folder), x, feature_net=net) == pytest.approx(direct, rel=1e-5, abs=1e-5)

    pos = {"i": 0}

    def fn(n):
        out = y[pos["i"]:pos["i"] + n]
        pos["i"] += n
        return out

    assert fid(fn, x, feature_net=net, num_images=len(y), batch_size=24) == pytest.approx(direct, rel=1e-5,
                                                                                            abs=1e-5)


def test_isc_kid_prc_and_class_accuracy(net, sets):
    x, y, labels = sets
    m = E.compute_metrics(y, x, fid=True, isc=True, kid=True, prc=True, feature_net=net, kid_subsets=10)
    assert set(m) >= {"fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall", "f_score"}
    assert 1.0 <= m["is_mean"] <= 10.0 + 1e-6
    assert 0.0 <= m["precision"] <= 1.0 and 0.0 <= m["recall"] <= 1.0
    stream = E.ImageStream(lambda n, it=iter(y.split(40)): next(it), len(y), labels=labels)
    stats = E.compute_fid_stats(x, feature_net=net)
    r = E.compute_metrics(stream, stats, feature_net=net, isc=True, batch_size=40)  # labels: the stream's own
    model = E.load_shapes_extractor(net.weights_path)
    with torch.no_grad():
        expected = (model(E.to_uint8(y)).argmax(1) == labels).float().mean().item()
    assert r["class_accuracy"] == pytest.approx(expected)
    assert E.class_accuracy(y, labels, feature_net=net) == pytest.approx(expected)
    assert r["fid"] == pytest.approx(fid(y, x, feature_net=net), rel=1e-4, abs=1e-4)


def test_extractor_deterministic(net, sets):
    x, _, _ = sets
    info = E.extractor_info(net.weights_path)
    assert info["settings"]["steps"] == E.EXTRACTOR_PRESETS["smoke"].steps
    a = E.extract_features(x, feature_net=net, layers=("multi", "logits"))
    b = E.extract_features(x, feature_net=net, layers=("multi", "logits"))
    assert torch.equal(a["multi"], b["multi"]) and torch.equal(a["logits"], b["logits"])
    assert a["multi"].shape == (len(x), 8 + 16 + 32 + 32)
    # training is deterministic from the seed and leaves the global RNG alone
    settings = E.extractor_settings("smoke", steps=4, num_train=64, num_val=16, batch_size=16)
    state = torch.get_rng_state()
    m1, _ = E.train_shapes_extractor(settings, log=None)
    assert torch.equal(state, torch.get_rng_state())
    m2, _ = E.train_shapes_extractor(settings, log=None)
    ref = m2.state_dict()
    for k, v in m1.state_dict().items():
        assert torch.equal(v, ref[k]), k
    # the cache is keyed by image size and seed
    assert "32px_seed0" in net.weights_path
    with pytest.raises(assets.MissingWeightsError):
        E.get_shapes_extractor(32, seed=1, cache_dir=net.weights_path.rsplit("/fid/", 1)[0], settings="smoke",
                                 train=False)


def test_each_shapes_data_set_has_its_own_feature_network(tmp_path):
    # the original data keeps its networks' cache names; shapes-large learns (and caches) its own
    assert E.extractor_settings("tiny").key() == "shapes_cnn_32px_seed0_5eb2236c3e"
    large = E.extractor_settings("tiny", dataset="shapes-large")
    assert large.key().startswith("shapes_large_cnn_32px_seed0_") and large.key() != E.extractor_settings().key()
    assert large.steps == 2 * E.extractor_settings("tiny").steps  # large shapes take longer to tell apart
    assert E.extractor_settings("tiny", dataset="shapes-large", steps=50).steps == 50
    with pytest.raises(ValueError, match="dataset='photos'.*shapes, shapes-large"):
        E.extractor_settings("tiny", dataset="photos")
    quick = dict(steps=2, num_train=32, num_val=8, batch_size=16)
    _, info = E.train_shapes_extractor(E.extractor_settings("smoke", dataset="shapes-large", **quick), log=None)
    assert info["settings"]["dataset"] == "shapes-large"
    with pytest.raises(assets.MissingWeightsError, match="shapes_large_cnn_32px"):
        E.get_shapes_extractor(32, cache_dir=tmp_path, settings="smoke", train=False, dataset="shapes-large")


def test_missing_inception_weights_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("LDETOK_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("LDETOK_CACHE", str(tmp_path / "cache"))

    def no_download(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(assets.MissingWeightsError, match="never downloads") as e:
        E.get_feature_net("inception")
    assert assets.INCEPTION_URL in str(e.value) and "shapes-cnn" in str(e.value)
    assert str(tmp_path / "torch_home") in str(e.value)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        assets.resolve("inception", tmp_path / "nowhere.pth")
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    name = assets.ASSETS["inception"].filename
    (hub / name).write_bytes(b"x")
    assert assets.resolve("inception") == hub / name
    with pytest.raises(ValueError, match="not a PyTorch tensor file"):  # checked before torch-fidelity reads it
        E.get_feature_net("inception")
    with pytest.raises(ValueError, match="feature_net='nope'"):
        E.get_feature_net("nope")


def test_bad_inputs(net, sets, tmp_path):
    x, _, _ = sets
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        fid(x[:, :1], x, feature_net=net)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        E.to_uint8(x[0])
    bad = x[:8].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fid(bad, x, feature_net=net)
    with pytest.raises(ValueError, match="out of range"):
        fid(x[:8] * 2, x, feature_net=net)
    with pytest.raises(ValueError, match="out of range"):
        E.to_uint8(x[:8] - 0.1)
    with pytest.raises(TypeError, match="dtype"):
        E.to_uint8((x[:8] * 255).long())
    with pytest.raises(TypeError):
        fid([1, 2, 3], x, feature_net=net)
    with pytest.raises(ValueError, match="at least 2"):
        fid(x[:1], x, feature_net=net)
    with pytest.raises(ValueError, match="num_images"):
        fid(lambda n: x[:n], x, feature_net=net)
    with pytest.raises(ValueError, match="pass reference"):
        E.compute_metrics(x, None, fid=True, feature_net=net)
    with pytest.raises(FileNotFoundError):
        fid(str(tmp_path / "nope"), x, feature_net=net)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        fid(str(tmp_path / "empty"), x, feature_net=net)
    with pytest.raises(ValueError, match="quantize"):
        E.to_uint8(x, quantize="floor")
    with pytest.raises(ValueError, match="return 4 images"):
        fid(lambda n: x[:1], x, feature_net=net, num_images=4, batch_size=4)


def test_rounding_vs_truncation():
    v = torch.tensor([0.0, 0.999, 0.5 / 255 + 1e-4, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert E.to_uint8(v)[0, 0, 0].tolist() == [0, 255, 1, 255]
    assert E.to_uint8(v, quantize="truncate")[0, 0, 0].tolist() == [0, 254, 0, 255]
    u8 = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    assert E.to_uint8(u8) is u8
    # the official evaluate_generator order: the classes in turn, 0..C-1, 0..C-1, ...
    assert E.class_balanced_labels(20, 10).tolist() == list(range(10)) * 2
    assert E.class_balanced_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]


# ----------------------------------------------------------------------------------------------
# ldetok-lite evaluate
# ----------------------------------------------------------------------------------------------

def _args(**kw):
    p = argparse.ArgumentParser()
    evaluate.add_arguments(p)
    argv = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            argv.append(flag)
        elif isinstance(v, (list, tuple)):
            argv += [flag, *map(str, v)]
        else:
            argv += [flag, str(v)]
    return p.parse_args(argv)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from ldetok_lite.checkpoint import save_pretrained
    from ldetok_lite.generators import create_generator
    from ldetok_lite.tokenizer import create_tokenizer

    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    tok = create_tokenizer("detok_tiny")
    tok_dir = save_pretrained(tok, root / "tok")
    gen = create_generator("SiT_tiny", in_channels=tok.token_channels, input_size=tok.grid_size, num_classes=10,
                           sampler="euler")  # fixed steps: --steps 2 really means 2 network calls
    gen_dir = save_pretrained(gen, root / "gen")
    return tok_dir, gen_dir


def test_evaluate_tokenizer_and_generator(checkpoints, cache, tmp_path, capsys):
    tok_dir, gen_dir = checkpoints
    out = tmp_path / "eval.json"
    args = _args(tokenizer=tok_dir, generator=gen_dir, preset="smoke", num_images=12, batch_size=12,
                 cfg_scale=[1.0, 2.0], steps=2, cache_dir=cache, out=out, device="cpu", kid=True, prc=True)
    assert evaluate.run(args) == 0
    res = json.loads(out.read_text())
    t = res["tokenizer"]
    assert t["rfid"] >= 0 and np.isfinite(t["psnr"]) and -1 <= t["ssim"] <= 1 and t["num_images"] == 12
    assert {"kid_mean", "precision", "recall"} <= set(t)
    rows = res["generator"]["results"]
    assert [r["cfg_scale"] for r in rows] == [1.0, 2.0]
    for r in rows:
        assert r["gfid"] >= 0 and 1 <= r["is_mean"] <= 10 + 1e-6 and 0 <= r["class_accuracy"] <= 1
        assert {"kid_mean", "precision", "recall"} <= set(r)
    assert res["feature_net"].startswith("shapes-cnn:")


def test_evaluate_bad_options(checkpoints, tmp_path):
    tok_dir, gen_dir = checkpoints
    with pytest.raises(evaluate.EvaluateError, match="nothing to evaluate"):
        evaluate.run(_args())
    with pytest.raises(evaluate.EvaluateError, match="not a directory"):
        evaluate.run(_args(tokenizer=tmp_path / "missing"))
    with pytest.raises(evaluate.EvaluateError, match="num-images"):
        evaluate.run(_args(tokenizer=tok_dir, num_images=1))
    with pytest.raises(evaluate.EvaluateError, match="cfg"):
        evaluate.run(_args(generator=gen_dir, tokenizer=tok_dir, cfg_scale=[0.5]))
    with pytest.raises(evaluate.EvaluateError, match="not a tokenizer"):
        evaluate.run(_args(tokenizer=gen_dir, preset="smoke"))
    with pytest.raises(evaluate.EvaluateError, match="ref-stats"):
        evaluate.run(_args(generator=gen_dir, tokenizer=tok_dir, ref_stats=tmp_path / "x.npz"))
    with pytest.raises(evaluate.EvaluateError, match="preset"):
        evaluate.run(_args(tokenizer=tok_dir, preset="huge"))


# ----------------------------------------------------------------------------------------------
# the evaluation protocol (presets.eval_protocol, evaluation.evaluate_protocol; notebook 22)
# ----------------------------------------------------------------------------------------------


def test_full_preset_protocol_is_the_official_one():
    from ldetok_lite.presets import OFFICIAL_CFG_GRIDS, eval_protocol

    mar = eval_protocol("full", "MAR_base")
    assert mar.cfg_scales == OFFICIAL_CFG_GRIDS["MAR_base"] == (3.0, 3.5, 3.7, 3.8, 3.9, 4.0, 4.1, 4.3, 4.5)
    assert (mar.search_images, mar.final_images, mar.search_steps, mar.final_steps) == (10_000, 50_000, 64, 256)
    assert (mar.quantize, mar.reference) == ("truncate", "adm")
    assert eval_protocol("full", "MAR_large").cfg_scales == (3.0, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7, 3.8, 3.9)
    sit = eval_protocol("full", "SiT_xl")
    assert sit.cfg_scales == (1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0) and sit.search_steps == sit.final_steps == 250
    assert eval_protocol("full", "DiT_base").search_steps == 100
    assert eval_protocol("full", "LightningDiT_base").search_steps == 99  # the official 100 grid points
    assert any("ours" in n for n in eval_protocol("full", "RandomAR_base").notes)
    tiny = eval_protocol("tiny", "MAR_tiny")  # small models keep the preset's own scales and counts
    assert tiny.cfg_scales == (1.0,) and tiny.search_images == tiny.final_images == 1000
    assert (tiny.quantize, tiny.reference) == ("round", "train")


def test_protocol_searches_then_counts_at_the_best_scale_and_at_one(checkpoints, cache):
    from dataclasses import replace

    from ldetok_lite.config import DataConfig
    from ldetok_lite.presets import eval_protocol
    from ldetok_lite.pretrained import from_pretrained

    tok_dir, gen_dir = checkpoints
    tok, gen = from_pretrained(tok_dir).eval(), from_pretrained(gen_dir).eval()
    data = DataConfig(num_train=64, num_val=16, hflip=False)
    net = E.get_feature_net("shapes-cnn", img_size=32, seed=0, cache_dir=cache, extractor="smoke")
    protocol = replace(eval_protocol("smoke", "SiT_tiny"), cfg_scales=(1.0, 2.0), search_images=8, final_images=12,
                       search_steps=2, final_steps=3)
    lines = []
    res = E.evaluate_protocol(gen, tok, data, net, protocol, batch_size=12, cache_dir=cache, log=lines.append)
    assert [(r["cfg_scale"], r["num_images"], r["steps"]) for r in res["search"]] == [(1.0, 8, 2), (2.0, 8, 2)]
    assert res["best"] == min(res["search"], key=lambda r: r["gfid"])
    assert sorted((r["cfg_scale"], r["num_images"], r["steps"]) for r in res["final"]) == sorted(
        {(res["best"]["cfg_scale"], 12, 3), (1.0, 12, 3)})
    assert res["protocol"]["reference"] == "train" and any("final count" in s for s in lines)


def test_reference_statistics_are_found_or_refused_clearly(tmp_path, monkeypatch, cache):
    monkeypatch.setenv("LDETOK_CACHE", str(tmp_path / "kitcache"))
    monkeypatch.delenv("LDETOK_ADM_STATS", raising=False)
    shapes = E.get_feature_net("shapes-cnn", img_size=32, seed=0, cache_dir=cache, extractor="smoke")

    class FakeInception:  # only its name is read; the real one needs weights this machine does not have
        name = "inception"

    assert E.resolve_reference("train", shapes) is None and E.resolve_reference(None, shapes) is None
    with pytest.raises(assets.MissingWeightsError, match=r"ADM's ImageNet-256 reference statistics.*: not found .*"
                                                         r"VIRTUAL_imagenet256_labeled\.npz.*LDETOK_ADM_STATS"):
        E.resolve_reference("adm", FakeInception())
    with pytest.raises(E.EvaluateError, match="Inception-v3 features; the feature network is 'shapes-cnn'"):
        E.resolve_reference("adm", shapes)
    stats = tmp_path / "kitcache" / "fid" / "adm_in256_stats.npz"  # the official code's file name works too
    stats.parent.mkdir(parents=True)
    np.savez(stats, mu=np.zeros(4), sigma=np.eye(4))
    assert E.resolve_reference("adm", FakeInception()) == stats
    with pytest.raises(E.EvaluateError, match=r"do not exist; allowed: 'adm', 'train' or the path of an \.npz"):
        E.resolve_reference(tmp_path / "nope.npz", shapes)


def test_evaluate_cli_runs_the_protocol(checkpoints, cache, tmp_path):
    tok_dir, gen_dir = checkpoints
    out = tmp_path / "eval.json"
    args = _args(generator=gen_dir, tokenizer=tok_dir, preset="smoke", num_images=12, search_images=8, batch_size=12,
                 cfg_scale=[1.0, 2.0], steps=2, cache_dir=cache, out=out, device="cpu")
    assert evaluate.run(args) == 0
    g = json.loads(out.read_text())["generator"]
    assert [r["num_images"] for r in g["results"]] == [8, 8] and {r["num_images"] for r in g["final"]} == {12}
    assert g["best"]["cfg_scale"] in (1.0, 2.0) and g["protocol"]["search_images"] == 8
