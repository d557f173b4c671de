"""Generator training on frozen tokenizer latents: stats, latent cache, resume, artifacts."""

import pytest
import torch

from ldetok_lite import checkpoint as ckpt
from ldetok_lite import training as T
from ldetok_lite.config import DataConfig, GeneratorConfig, TrainConfig
from ldetok_lite.experiments import cache as A
from ldetok_lite.presets import load_preset, tokenizer_recipe
from ldetok_lite.pretrained import from_pretrained, load_latent_stats
from ldetok_lite.tokenizer import create_tokenizer

DATA = DataConfig(num_train=32, num_val=8)
GEN = GeneratorConfig(num_sampling_steps=2)
TRAIN = TrainConfig(steps=4, batch_size=8, lr=2e-4, lr_schedule="constant", warmup_frac=0.0, weight_decay=0.0,
                    grad_clip=0.0, ema_decay=0.99, log_every=2, ckpt_every=2)
QUIET = dict(device="cpu", progress="none", log=lambda *a: None, eval_samples=0)


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return create_tokenizer("detok_tiny").eval()


def test_channel_stats_population_std():
    m = torch.tensor([[[[1.0]], [[10.0]]], [[[3.0]], [[10.0]]]])  # (N=2, C=2, 1, 1)
    mean, std = T.channel_stats(m)
    assert torch.allclose(mean, torch.tensor([2.0, 10.0])) and torch.allclose(std, torch.tensor([1.0, 1e-6]), atol=1e-5)


def test_channel_stats_of_samples_adds_posterior_variance():
    torch.manual_seed(0)
    mu, sigma = torch.randn(400, 3, 2, 2) * torch.tensor([1.0, 0.01, 2.0]).view(1, 3, 1, 1), \
        torch.tensor([0.1, 1.0, 0.5]).view(1, 3, 1, 1).expand(400, 3, 2, 2)
    mean, std = T.channel_stats(mu, sigma)
    samples = mu.unsqueeze(0) + sigma.unsqueeze(0) * torch.randn(200, *mu.shape)
    emp = samples.transpose(0, 2).flatten(1).std(1)  # channel dim first
    assert torch.allclose(std, emp, rtol=0.02)
    assert torch.allclose(mean, T.channel_stats(mu)[0])
    # the collapsed channel (spread 0.01, σ = 1) keeps unit scale instead of a ×100 blow-up
    assert T.channel_stats(mu)[1][1] < 0.02 and 0.98 < std[1] < 1.02


def test_latent_stats_mode_mean_normalises_posterior_means(tok, tmp_path):
    from ldetok_lite.data import make_dataset

    res = T.train_generator("SiT", GEN.replace(latent_stats="mean"), TRAIN.replace(steps=1), DATA, tok, tmp_path,
                            **QUIET)
    z = tok.tokenize(make_dataset(DATA.replace(hflip=False)).images)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(8), atol=1e-3)
    # "sample" (the default) adds E σ² to every channel's variance; the stats file records the mode
    res2 = T.train_generator("SiT", GEN, TRAIN.replace(steps=1), DATA, tok, tmp_path / "b", **QUIET)
    assert (res2.latent_stats[1] > res.latent_stats[1]).all()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "b" / "latent_stats.safetensors"), "pt") as f:
        assert f.metadata()["of"] == "sample"


def test_cached_latents_match_tokenize(tok, tmp_path):
    res = T.train_generator("SiT", GEN, TRAIN, DATA, tok, tmp_path, **{**QUIET, "eval_samples": 2})
    assert res.step == 4 and (tmp_path / "latent_cache.safetensors").is_file()
    mean, std = res.latent_stats
    assert torch.allclose(tok.latent_mean, mean) and torch.allclose(tok.latent_std, std)
    # latent_stats="sample": the stats are those of the posterior samples μ + σ·ε (Var μ + E σ²)
    from ldetok_lite.data import make_dataset

    x = make_dataset(DATA.replace(hflip=False)).images
    z = tok.tokenize(x)  # posterior mean, normalised with the stats just set
    cache = ckpt.load_tensors(tmp_path / "latent_cache.safetensors")
    var_mu = cache["mean"].transpose(0, 1).flatten(1).var(1, unbiased=False)
    e_var = cache["std"].transpose(0, 1).flatten(1).pow(2).mean(1)
    assert torch.allclose(std, (var_mu + e_var).sqrt(), rtol=1e-4)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(8), atol=1e-4)
    assert (z.std((0, 2, 3), unbiased=False) < 1).all()
    torch.manual_seed(0)
    zs = torch.cat([tok.tokenize(x, sampling=True) for _ in range(50)])  # what the generator trains on
    assert torch.allclose(zs.std((0, 2, 3), unbiased=False), torch.ones(8), atol=0.03)
    assert torch.allclose((cache["mean"] - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1), z, atol=1e-5)
    assert torch.allclose(cache["mean_flip"][:4], T.encode_moments(tok, T.ImageSource(make_dataset(DATA.replace(
        hflip=False))), "cpu", flip=True, log=lambda *a: None)[0][:4], atol=1e-6)
    assert list((tmp_path / "samples").glob("samples_step*.png"))
    gen = from_pretrained(tmp_path)
    assert gen.spec["name"] == "SiT_tiny" and not gen.training
    assert torch.equal(load_latent_stats(res.checkpoint)[0], mean)


def test_generator_resume_is_bit_identical(tok, tmp_path):
    ref = T.train_generator("SiT", GEN, TRAIN, DATA, tok, tmp_path / "a", **QUIET)

    class Crash(Exception):
        pass

    def cb(step, m):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        T.train_generator("SiT", GEN, TRAIN, DATA, tok, tmp_path / "b", callback=cb, **QUIET)
    res = T.train_generator("SiT", GEN, TRAIN, DATA, tok, tmp_path / "b", **QUIET)
    assert res.resumed_from == 2
    a, b = ref.model.state_dict(), res.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_on_the_fly_latents_also_train(tok, tmp_path):
    res = T.train_generator("SiT", GEN.replace(cache_latents=False), TRAIN.replace(steps=2, ckpt_every=0), DATA, tok,
                            tmp_path, **QUIET)
    assert res.step == 2 and not (tmp_path / "latent_cache.safetensors").exists()
    assert (tmp_path / "latent_stats.safetensors").is_file()
    with pytest.raises(ValueError, match="family"):
        T.train_generator("", GEN, TRAIN, DATA, tok, tmp_path / "x", **QUIET)


SMALL = {"data.num_train": 32, "data.num_val": 8, "tokenizer_train.steps": 2, "tokenizer_train.batch_size": 8,
         "generator_train.steps": 2, "generator_train.batch_size": 8, "generator.num_sampling_steps": 2}


@pytest.fixture
def small_smoke(monkeypatch):
    """A smoke preset small enough for these tests, installed as *the* named smoke preset: its runs get
    the plain names (``smoke-plain-s0``) that the notebooks' runs have."""
    from ldetok_lite import presets

    small = presets._smoke().override(**SMALL)
    monkeypatch.setitem(presets._PRESETS, "smoke", lambda: small)
    return small


def test_cache_trains_once_then_loads(tmp_path, small_smoke):
    preset = small_smoke
    logs = []
    tok = A.get_tokenizer(preset, "plain", tmp_path, device="cpu", log=logs.append, progress="none")
    assert tok.gamma == 0.0 and tok.mask_ratio == 0.0 and not tok.training
    assert any("training tokenizer" in m for m in logs)
    assert tok.run_dir == str(tmp_path / "tokenizers" / "smoke-plain-s0") == str(A.tokenizer_dir("smoke", "plain",
                                                                                                   tmp_path))
    logs.clear()
    again = A.get_tokenizer("smoke", "plain", tmp_path, device="cpu", log=logs.append)
    assert any(m.startswith("loaded smoke-plain-s0") for m in logs)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in tok.state_dict().items())
    gen, tok2 = A.get_generator(preset, "SiT", "plain", tmp_path, device="cpu", log=logs.append, progress="none",
                                return_tokenizer=True, eval_samples=0)
    assert gen.spec["name"] == "SiT_tiny" and tok2.latent_std.ne(1).any()
    assert gen.run_dir == str(tmp_path / "generators" / "smoke-SiT-plain-s0") == str(A.generator_dir(
        "smoke", "SiT", "plain", tmp_path))
    assert len(list((tmp_path / "latents").glob("latents-*.safetensors"))) == 1  # shared by the generators
    # a lower-case family name finds the same cached run instead of training a new one
    logs.clear()
    assert A.get_generator(preset, "sit", "plain", tmp_path, device="cpu", tokenizer=tok, log=logs.append).run_dir \
        == gen.run_dir and any(m.startswith("loaded smoke-SiT-plain-s0") for m in logs)
    with pytest.raises(ValueError, match="generator family 'SIT2'.*allowed: DiT, SiT"):
        A.get_generator(preset, "SIT2", "plain", tmp_path, tokenizer=tok)
    # settings beyond the preset's size (the reference recipes): their own folder, the model built with them
    deeper = A.get_generator(preset, "SiT", "plain", tmp_path, device="cpu", tokenizer=tok, log=logs.append,
                             progress="none", eval_samples=0, model_kwargs={"depth": 1})
    assert deeper.run_dir.startswith(gen.run_dir + "-m") and len(deeper.blocks) == 1 < len(gen.blocks)
    assert deeper.spec["kwargs"]["depth"] == 1
    # other settings than the named preset's: a run of their own, next to the preset's
    logs.clear()
    other = A.get_tokenizer(preset.override(**{"tokenizer.kl_weight": 1e-5}), "plain", tmp_path, device="cpu",
                            log=logs.append, progress="none")
    assert other.run_dir.startswith(str(tmp_path / "tokenizers" / "smoke-plain-s0-")) and other.run_dir != tok.run_dir
    assert (tmp_path / "tokenizers" / "smoke-plain-s0").is_dir()
    with pytest.raises(ValueError, match="variant"):
        A.get_tokenizer(preset, "fancy", tmp_path)


def test_a_changed_preset_moves_its_old_runs_aside(tmp_path, small_smoke, monkeypatch):
    """When the code's own preset changes, its cached runs no longer match: moved aside, retrained."""
    from ldetok_lite import presets

    A.get_tokenizer("smoke", "plain", tmp_path, device="cpu", log=lambda *a: None, progress="none")
    monkeypatch.setitem(presets._PRESETS, "smoke", lambda: small_smoke.override(**{"tokenizer.kl_weight": 1e-5}))
    logs = []
    A.get_tokenizer("smoke", "plain", tmp_path, device="cpu", log=logs.append, progress="none")
    assert any("other settings" in m and "kl_weight" in m for m in logs)
    assert list((tmp_path / "tokenizers").glob("smoke-plain-s0.stale-*"))  # moved aside, not deleted


def test_cached_generator_of_an_old_size_table_is_retrained(tmp_path, monkeypatch, small_smoke):
    from ldetok_lite.generators import dit

    preset = small_smoke
    logs = []
    tok = A.get_tokenizer(preset, "plain", tmp_path, device="cpu", log=logs.append, progress="none")
    A.get_generator(preset, "SiT", "plain", tmp_path, device="cpu", tokenizer=tok, log=logs.append,
                    progress="none", eval_samples=0)
    # a later version of the code changes SiT_tiny's width: same configs, weights that no longer fit
    monkeypatch.setitem(dit.SIZES, "tiny", {**dit.SIZES["tiny"], "hidden_size": dit.SIZES["tiny"]["hidden_size"] * 2})
    logs.clear()
    gen = A.get_generator(preset, "SiT", "plain", tmp_path, device="cpu", tokenizer=tok, log=logs.append,
                          progress="none", eval_samples=0)
    assert any("no longer loads" in m for m in logs) and any("training generator" in m for m in logs)
    assert gen.spec["name"] == "SiT_tiny" and gen.num_params() > 0
    assert list((tmp_path / "generators").glob("smoke-SiT-plain-s0.stale-*"))  # moved aside, not deleted


def test_warm_start_continues_from_the_plain_ae(tmp_path, small_smoke):
    """tokenizer.warm_start="plain": l-DeTok starts from the cached plain AE's weights (notebook 10)."""
    preset = small_smoke
    assert preset.tokenizer.warm_start == "plain"
    logs = []
    tok = A.get_tokenizer(preset, "ldetok", tmp_path, device="cpu", log=logs.append, progress="none")
    assert tok.gamma == 3.0 and tok.mask_ratio == 0.7
    assert (tmp_path / "tokenizers" / "smoke-plain-s0").is_dir()  # trained first, on demand
    assert any("continues from the plain AE" in m for m in logs)
    plain_ckpt = ckpt.latest_checkpoint(tmp_path / "tokenizers" / "smoke-plain-s0")
    assert any("initialised from" in m and str(plain_ckpt) in m for m in logs)
    # found again in the cache, it still counts the plain AE's training time
    again = A.get_tokenizer(preset, "ldetok", tmp_path, device="cpu", log=logs.append, progress="none")
    assert again.warm_start_seconds == tok.warm_start_seconds > 0
    # the plain AE itself never warm-starts, and from scratch is one override away
    assert tokenizer_recipe(preset, "plain")[0].warm_start == "none"
    logs.clear()
    A.get_tokenizer(preset.override(**{"tokenizer.warm_start": "none"}), "ldetok", tmp_path / "scratch",
                    device="cpu", log=logs.append, progress="none")
    assert not any("continues from" in m for m in logs)
    assert not list((tmp_path / "scratch" / "tokenizers").glob("smoke-plain-s0*"))


def test_train_tokenizer_honours_the_warm_start(tmp_path):
    """Called directly, a tokenizer config with a warm start trains its plain AE into
    out_dir/warm_start first and continues from it; init_from (the cache's shared AE) skips that."""
    from ldetok_lite.presets import warm_start_recipe

    preset = load_preset("smoke").override(**SMALL)
    tok_cfg, train_cfg, data = tokenizer_recipe(preset, "ldetok")
    assert warm_start_recipe(tok_cfg, train_cfg) is not None
    logs = []
    T.train_tokenizer(tok_cfg, train_cfg, data, tmp_path / "run", device="cpu", progress="none", log=logs.append)
    base = ckpt.latest_checkpoint(tmp_path / "run" / "warm_start")
    assert base is not None and any("initialised from" in m and str(base) in m for m in logs)
