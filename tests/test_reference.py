"""The reference models: built by one command, stored float16 with provenance, loaded offline, and
refused when missing or altered (``experiments/reference.py``, ``ldetok-lite reference``)."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open

from ldetok_lite.cli import main as cli_main
from ldetok_lite.config import SHAPES_DATASETS
from ldetok_lite.evaluation import preset_feature_net
from ldetok_lite.experiments.reference import (
    REFERENCE_BUDGET_MB,
    ReferenceModelError,
    build_reference,
    choose_guidance,
    list_references,
    load_reference,
    reference_info,
    reference_megabytes,
    reference_root,
)
from ldetok_lite.experiments.side_by_side import (
    FALLBACK_GUIDANCE,
    draw_side_by_side,
    load_references,
    reference_guidance,
    show_side_by_side,
)
from ldetok_lite.generators import decode_latents
from ldetok_lite.presets import REFERENCE_CFG_SCALES, REFERENCE_NAMES, load_preset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """DiT on the smoke l-DeTok tokenizer, built into a fresh reference folder (its tokenizer first),
    in the set of the smoke preset's data (``shapes-large``)."""
    base = tmp_path_factory.mktemp("reference")
    root, work = base / "reference", base / "work"
    build_reference("DiT", root=root, work_dir=work, preset="smoke", num_images=20, log=lambda *_: None)
    return root, work


def test_build_writes_float16_weights_with_provenance(built):
    root, _ = built
    for name in ("tokenizer-ldetok", "DiT"):
        with safe_open(str(root / "shapes-large" / name / "model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} <= {torch.float16, torch.int64}
    info = reference_info("DiT", root=root)
    assert info["command"] == "ldetok-lite reference build DiT --dataset shapes-large --preset smoke"
    assert info["dataset"] == "shapes-large"
    assert len(info["git_commit"]) >= 7 and info["steps"] == 6 and info["train_seconds"] >= 0
    assert [row["cfg_scale"] for row in info["eval"]] == list(REFERENCE_CFG_SCALES)
    assert all(0 <= row["class_accuracy"] <= 1 and row["gfid"] > 0 for row in info["eval"])
    assert info["cfg_scale"] == choose_guidance(info["eval"])  # the notebook's guidance, by the rule
    # the files name no path of the machine that built them
    config = (root / "shapes-large" / "DiT" / "config.json").read_text()
    assert str(root.parent) not in config and '"reference/shapes-large/tokenizer-ldetok"' in config
    tok_info = reference_info("tokenizer-ldetok", root=root)
    assert tok_info["eval"][0]["psnr"] > 5 and tok_info["warm_start_steps"] == 6  # it continued from the plain AE


def test_load_reference_gives_a_generator_and_its_decoding_tokenizer(built):
    root, _ = built
    gen, tok = load_reference("DiT", root=root)
    assert not gen.training and gen.reference_info["name"] == "DiT"
    mean, std = tok.latent_stats
    assert not torch.allclose(std, torch.ones_like(std))  # the generator's statistics, not the defaults
    z = gen.generate(torch.tensor([0, 1]), num_steps=2, rng=torch.Generator().manual_seed(0))
    images = decode_latents(tok, z)
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
    # the float16 values load exactly into the float32 model
    with safe_open(str(root / "shapes-large" / "DiT" / "model.safetensors"), "pt") as f:
        key = next(k for k in f.keys() if f.get_tensor(k).dtype == torch.float16)
        assert torch.equal(gen.state_dict()[key], f.get_tensor(key).float())


def test_present_model_is_kept_and_listed(built):
    root, work = built
    before = (root / "shapes-large" / "DiT" / "model.safetensors").stat().st_mtime_ns
    build_reference("DiT", root=root, work_dir=work, preset="smoke", num_images=20, log=lambda *_: None)
    assert (root / "shapes-large" / "DiT" / "model.safetensors").stat().st_mtime_ns == before
    rows = {r["name"]: r for r in list_references(root)}
    assert set(rows) == set(REFERENCE_NAMES)
    assert rows["DiT"]["status"] == "ok" and rows["DiT"]["megabytes"] > 0.1
    assert rows["SiT"]["status"] == "missing"
    assert all(r["status"] == "missing" for r in list_references(root, "shapes"))


def test_each_data_set_has_its_own_references(built, tmp_path):
    """A model built on shapes joins reference/shapes/, and the shapes-large set does not see it."""
    root, work = built
    copy = tmp_path / "reference"
    shutil.copytree(root, copy)
    build_reference("tokenizer-plain", root=copy, work_dir=work, preset="smoke", num_images=20, log=lambda *_: None,
                    dataset="shapes")
    info = reference_info("tokenizer-plain", root=copy, dataset="shapes")
    assert info["dataset"] == "shapes" and info["command"].startswith(
        "ldetok-lite reference build tokenizer-plain --dataset shapes ")
    assert (copy / "shapes" / "tokenizer-plain" / "model.safetensors").is_file()
    with pytest.raises(ReferenceModelError, match="reference build tokenizer-plain --dataset shapes-large"):
        load_reference("tokenizer-plain", root=copy)
    with pytest.raises(ValueError, match="dataset='cifar10' has no reference models; allowed: shapes, shapes-large"):
        load_reference("DiT", root=copy, dataset="cifar10")


def test_guidance_is_the_lowest_scale_within_tolerance_of_the_best():
    rows = [{"cfg_scale": 1.0, "class_accuracy": 0.74}, {"cfg_scale": 1.5, "class_accuracy": 0.82},
            {"cfg_scale": 2.0, "class_accuracy": 0.85}, {"cfg_scale": 3.0, "class_accuracy": 0.80}]
    assert choose_guidance(rows) == 2.0
    assert choose_guidance(rows, tolerance=0.05) == 1.5
    # exactly two points below the best counts as within (in floating point 0.18 < 0.2 - 0.02)
    edge = [{"cfg_scale": 1.0, "class_accuracy": 0.18}, {"cfg_scale": 3.0, "class_accuracy": 0.2}]
    assert choose_guidance(edge) == 1.0
    assert choose_guidance(rows[:1] + [{"cfg_scale": 3.0, "class_accuracy": None}]) == 1.0
    with pytest.raises(ValueError, match="no class accuracy"):
        choose_guidance([{"cfg_scale": 1.0, "class_accuracy": None}])


def test_missing_unknown_and_altered_models_are_clear_errors(built, tmp_path):
    root, _ = built
    with pytest.raises(ReferenceModelError, match="ldetok-lite reference build SiT"):
        load_reference("SiT", root=root)
    with pytest.raises(ValueError, match="allowed: tokenizer-plain"):
        load_reference("SIT-XL", root=root)
    copy = tmp_path / "reference"
    shutil.copytree(root, copy)
    weights = copy / "shapes-large" / "DiT" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    fix = "git checkout -- reference/shapes-large/DiT"
    with pytest.raises(ReferenceModelError, match=f"failed its manifest check.*{fix}"):
        load_reference("DiT", root=copy)
    assert "manifest check" in {r["name"]: r for r in list_references(copy)}["DiT"]["status"]
    assert cli_main(["reference", "list", "--root", str(copy)]) == 1


def test_generator_refuses_another_tokenizer(built, tmp_path):
    root, work = built
    copy = tmp_path / "reference"
    shutil.copytree(root, copy)
    build_reference("tokenizer-plain", root=copy, work_dir=work, preset="smoke", num_images=20, log=lambda *_: None)
    shutil.rmtree(copy / "shapes-large" / "tokenizer-ldetok")
    shutil.copytree(copy / "shapes-large" / "tokenizer-plain", copy / "shapes-large" / "tokenizer-ldetok")
    with pytest.raises(ReferenceModelError, match="trained on another 'tokenizer-ldetok'"):
        load_reference("DiT", root=copy)


def test_cli_build_checks_names_before_training(tmp_path, capsys):
    assert cli_main(["reference", "build", "DiT", "SIT", "--root", str(tmp_path), "--work-dir",
                     str(tmp_path / "work")]) == 2
    assert "reference model 'SIT' is not known" in capsys.readouterr().err
    assert cli_main(["reference", "build", "--root", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        cli_main(["reference", "build", "DiT", "--dataset", "cifar10", "--root", str(tmp_path)])
    assert "invalid choice: 'cifar10'" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_shipped_reference_folder_fits_the_budget_and_verifies():
    rows = [r for dataset in SHAPES_DATASETS for r in list_references(dataset=dataset)]
    size = sum(f.stat().st_size for f in reference_root().rglob("*") if f.is_file()) / 1e6 \
        if reference_root().is_dir() else 0.0
    assert size <= REFERENCE_BUDGET_MB and reference_megabytes() == pytest.approx(size)
    assert all(r["status"] in ("ok", "missing") for r in rows), [r["status"] for r in rows]
    for r in rows:  # every shipped generator records the guidance its notebook shows it at
        assert r["info"] is None or r["kind"] == "tokenizer" or r["info"]["cfg_scale"] in REFERENCE_CFG_SCALES


def test_side_by_side_draws_every_model_alike(built):
    """Notebooks 05-09: the same labels, noise and guidance for each model, measured alike."""
    root, work = built
    pair = load_reference("DiT", root=root)
    p = load_preset("smoke")
    net = preset_feature_net(p, work, log=lambda *_: None)
    kw = dict(num_images=10, cfg_scale=3.0, num_steps=2, cache_dir=work, log=lambda *_: None)
    a, b = draw_side_by_side({"a": pair, "b": pair}, p.data, net, seed=0, **kw)
    assert a.images.shape == (10, 3, 32, 32) and torch.equal(a.images, b.images)
    assert a.labels.tolist() == list(range(10)) and (a.class_accuracy, a.gfid) == (b.class_accuracy, b.gfid)
    assert 0 <= a.class_accuracy <= 1 and a.gfid > 0
    (c,) = draw_side_by_side({"c": pair}, p.data, net, seed=1, **kw)
    assert not torch.equal(c.images, a.images)
    fig = show_side_by_side([a, b, c], per_class=1)
    assert len(fig.axes) == 3 and "class acc" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="models is empty"):
        draw_side_by_side({}, p.data, net, **kw)


def test_notebooks_skip_only_a_missing_reference(built, tmp_path):
    root, _ = built
    lines = []
    refs = load_references(["DiT", "SiT"], root=root, log=lines.append)
    assert refs["DiT"][0].reference_info["name"] == "DiT" and refs["SiT"] is None
    assert any("ldetok-lite reference build SiT --dataset shapes-large" in line for line in lines)
    assert any(line.startswith("reference/shapes-large/DiT: 6 steps") for line in lines)
    assert reference_guidance(refs, "DiT") == refs["DiT"][0].reference_info["cfg_scale"]
    assert reference_guidance(refs, "SiT") == FALLBACK_GUIDANCE
    with pytest.raises(ValueError, match="allowed: tokenizer-plain"):
        load_references(["SIT"], root=root)
    copy = tmp_path / "reference"
    shutil.copytree(root, copy)
    (copy / "shapes-large" / "DiT" / "config.json").write_text("{}")
    with pytest.raises(ReferenceModelError, match="DiT"):
        load_references(["DiT"], root=copy)
