"""DiT / SiT / LightningDiT: registry, interface, guidance, learning, determinism, bad arguments."""

import json

import pytest
import torch

from ldetok_lite.generators import GENERATORS, Generator, create_generator, decode_latents, list_generators
from ldetok_lite.generators.blocks import RotaryEmbedding2D, sincos_pos_embed_2d

SMALL = dict(hidden_size=32, depth=1, num_heads=2, input_size=4)  # 4x4 latent grid: fast
FAMILIES = ("DiT", "SiT", "LightningDiT")


def make(family, **kw):
    torch.manual_seed(0)
    return create_generator(f"{family}_tiny", **{**SMALL, **kw})


def perturb(model, scale=0.05):
    """adaLN-Zero starts as the identity with a zero output; give every weight some signal."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def batch(b=4, c=8, s=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, s, s, generator=g), torch.arange(b) % 10


def test_registry_names_and_spec():
    for fam in FAMILIES:
        for size in ("tiny", "base", "large", "xl"):
            assert f"{fam}_{size}" in GENERATORS
    assert list_generators("SiT")[0].startswith("SiT_")
    m = create_generator("sit_tiny", **SMALL)  # case-insensitive
    assert isinstance(m, Generator) and m.spec["name"] == "SiT_tiny" and m.spec["kind"] == "generator"
    assert m.spec["kwargs"] == SMALL
    json.dumps(m.spec)
    with pytest.raises(ValueError, match="unknown generator 'DiT_tinyy'.*did you mean 'DiT_tiny'.*known: "):
        create_generator("DiT_tinyy")
    with pytest.raises(TypeError, match="DiT_tiny"):
        create_generator("DiT_tiny", bogus=1)


def test_paper_parameter_counts():
    with torch.device("meta"):
        counts = {n: create_generator(n).num_params() for n in ("DiT_base", "SiT_base", "LightningDiT_base")}
    assert counts["DiT_base"] / 1e6 == pytest.approx(130.32, abs=0.01)  # the official DiT_base
    assert counts["SiT_base"] / 1e6 == pytest.approx(130.30, abs=0.01)  # the official SiT_base (`models/sit.py`)
    assert counts["LightningDiT_base"] / 1e6 == pytest.approx(130.53, abs=0.01)


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_and_generate_shapes_and_determinism(family):
    m = make(family)
    x, y = batch()
    loss = m(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    perturb(m)
    kw = dict(cfg_scale=2.0, num_steps=3, sampler="euler") if family == "SiT" else dict(cfg_scale=2.0, num_steps=3)
    out = m.generate(y, rng=torch.Generator().manual_seed(0), **kw)
    again = m.generate(y, rng=torch.Generator().manual_seed(0), **kw)
    other = m.generate(y, rng=torch.Generator().manual_seed(1), **kw)
    assert out.shape == x.shape and torch.equal(out, again) and not torch.equal(out, other)
    z, traj = m.generate([1, 2], num_steps=3, rng=torch.Generator().manual_seed(0), return_trajectory=True)
    assert z.shape == (2, 8, 4, 4) and all(t.shape == z.shape for t in traj) and torch.equal(traj[-1], z)
    assert m.training  # generate restores the mode


@pytest.mark.parametrize("family", FAMILIES)
def test_guidance_scale_one_equals_conditional(family):
    m = perturb(make(family)).eval()
    x, y = batch()
    t = torch.tensor([5, 100, 500, 999]) if family == "DiT" else torch.tensor([0.05, 0.3, 0.6, 0.9])
    with torch.no_grad():
        cond = m.net(x, t, y)
        guided = m.guided_net(x, t, y, cfg_scale=1.0, force_double=True)
        assert torch.allclose(guided, cond, atol=1e-5)
        uncond = m.net(x, t, torch.full_like(y, m.null_class))
        g3 = m.guided_net(x, t, y, cfg_scale=3.0)
    c = m.in_channels
    expect = uncond[:, :c] + 3.0 * (cond[:, :c] - uncond[:, :c])  # all channels guided
    if family == "DiT":
        assert torch.allclose(g3[:, :c], expect, atol=1e-5)
        assert torch.allclose(g3[:, c:], cond[:, c:], atol=1e-5)  # variance from the conditional branch
    elif family == "SiT":
        assert torch.allclose(g3, expect, atol=1e-5)
    else:  # guidance interval: off for t < 0.1
        assert torch.allclose(g3[0], cond[0], atol=1e-5)
        assert torch.allclose(g3[1:], expect[1:], atol=1e-5)


def test_label_dropout_uses_null_class():
    m = make("SiT", label_drop=0.5)
    y = torch.zeros(2000, dtype=torch.long)
    dropped = m.y_embedder.drop(y, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 10}
    assert (dropped == 10).float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert torch.equal(make("SiT", label_drop=0.0).y_embedder.drop(y), y)


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_on_fixed_batch_falls(family):
    torch.manual_seed(0)
    m = make(family, label_drop=0.0)
    x, y = batch(b=8, seed=3)
    x = 0.5 * x + torch.linspace(-1, 1, 8)[:, None, None, None]  # something learnable per sample
    g = torch.Generator().manual_seed(0)
    if family == "DiT":
        t = m.diffusion.sample_timesteps(8, "cpu", g)
        obj = m.diffusion
    else:
        t = m.transport.sample_t(8, "cpu", g)
        obj = m.transport
    noise = torch.randn(x.shape, generator=g)

    def fixed_loss():
        return obj.training_losses(lambda xt, tt: m.net(xt, tt, y), x, t=t, noise=noise)["loss"].mean()

    before = fixed_loss().item()
    opt = torch.optim.AdamW(m.parameters(), lr=5e-3)
    for _ in range(20):
        opt.zero_grad()
        fixed_loss().backward()
        opt.step()
    assert fixed_loss().item() < 0.7 * before


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_arguments(family):
    m = make(family)
    x, y = batch()
    with pytest.raises(ValueError, match=r"cfg_scale=0.5 is out of range; allowed \[1, inf\)"):
        m.generate(y, cfg_scale=0.5)
    with pytest.raises(ValueError, match="num_steps=0"):
        m.generate(y, num_steps=0)
    with pytest.raises(ValueError, match="temperature=0"):
        m.generate(y, num_steps=2, temperature=0)
    with pytest.raises(ValueError, match=r"label 11 is out of range; allowed \[0, 10\]"):
        m.generate([1, 11], num_steps=2)
    with pytest.raises(ValueError, match="label -1"):
        m(x, torch.tensor([0, 1, 2, -1]))
    with pytest.raises(TypeError, match="integer"):
        m.generate(torch.tensor([1.0]), num_steps=2)
    with pytest.raises(ValueError, match=r"latents shape \(4, 3, 4, 4\).*expected \(B, 8, 4, 4\)"):
        m(torch.randn(4, 3, 4, 4), y)
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((4, 8, 4, 4), float("nan")), y)
    with pytest.raises(ValueError, match="labels has 3 entries"):
        m(x, y[:3])
    with pytest.raises(TypeError, match="rng must be a torch.Generator"):
        m.generate(y, num_steps=2, rng=0)
    with pytest.raises(ValueError, match="label_drop"):
        create_generator(f"{family}_tiny", label_drop=1.0)


def test_family_specific_bad_arguments():
    with pytest.raises(ValueError, match=r"num_steps=1001 is out of range; allowed \[1, 1000\]"):
        make("DiT").generate([0], num_steps=1001)
    with pytest.raises(ValueError, match="DiT.generate got unknown sampler option.s. sampler; allowed: none"):
        make("DiT").generate([0], num_steps=2, sampler="euler")
    with pytest.raises(ValueError, match="option.s. shfit; allowed: sampler, shift, cfg_interval_start"):
        make("SiT").generate([0], num_steps=2, shfit=0.3)
    with pytest.raises(ValueError, match="sampler='rk4'"):
        make("SiT").generate([0], num_steps=2, sampler="rk4")
    with pytest.raises(ValueError, match="patch_size"):
        create_generator("DiT_tiny", patch_size=3)
    with pytest.raises(ValueError, match="hidden_size=30 must be divisible by num_heads=4"):
        create_generator("DiT_tiny", hidden_size=30, num_heads=4)


def test_guidance_interval_per_call():
    """``generate(cfg_interval_start=s)`` keeps the conditional velocity for t < s, guides after,
    and equals a model built with that interval."""
    m = perturb(make("SiT")).eval()
    x, y = batch()
    t = torch.tensor([0.05, 0.3, 0.6, 0.9])
    with torch.no_grad():
        cond, uncond = m.net(x, t, y), m.net(x, t, torch.full_like(y, m.null_class))
        g = m.guided_net(x, t, y, cfg_scale=3.0, interval_start=0.5)
    assert torch.allclose(g[:2], cond[:2], atol=1e-5)
    assert torch.allclose(g[2:], (uncond + 3.0 * (cond - uncond))[2:], atol=1e-5)
    built = perturb(make("SiT", cfg_interval_start=0.5))
    kw = dict(cfg_scale=3.0, num_steps=4, sampler="euler")
    per_call = m.generate([0, 1], rng=torch.Generator().manual_seed(0), cfg_interval_start=0.5, **kw)
    assert torch.allclose(per_call, built.generate([0, 1], rng=torch.Generator().manual_seed(0), **kw))
    assert not torch.allclose(per_call, m.generate([0, 1], rng=torch.Generator().manual_seed(0), **kw))
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match=r"cfg_interval_start=.* is out of range; allowed \[0, 1\)"):
            m.generate([0], cfg_interval_start=bad, **kw)


def test_sit_samplers_and_nfe():
    m = perturb(make("SiT"))
    z = m.generate([0, 1], num_steps=4, sampler="euler", rng=torch.Generator().manual_seed(0))
    assert z.shape == (2, 8, 4, 4) and m.last_nfe == 4
    m.generate([0, 1], num_steps=4, rng=torch.Generator().manual_seed(0))  # dopri5 (default)
    assert m.last_nfe >= 6
    ld = make("LightningDiT")
    assert ld.sampler == "euler" and ld.shift == pytest.approx(0.3) and ld.transport.time_sampling == "logit_normal"


def test_unconditional_null_label_generates():
    m = perturb(make("DiT"))
    z = m.generate([10, 10], num_steps=2, rng=torch.Generator().manual_seed(0))
    assert z.shape == (2, 8, 4, 4)


def test_rope_is_a_rotation_and_relative():
    rope = RotaryEmbedding2D(16, 4)
    q = torch.randn(1, 2, 16, 16)
    assert torch.allclose(rope(q).norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    # the score between two tokens depends only on their 2-D offset
    a, b = torch.randn(16), torch.randn(16)
    qs, ks = rope(a.expand(1, 1, 16, 16)), rope(b.expand(1, 1, 16, 16))
    s = (qs[0, 0] @ ks[0, 0].T)

    def idx(r, c):
        return r * 4 + c

    assert s[idx(0, 0), idx(1, 2)].item() == pytest.approx(s[idx(2, 1), idx(3, 3)].item(), abs=1e-4)


def test_sincos_table():
    emb = sincos_pos_embed_2d(8, 3)
    assert emb.shape == (9, 8)
    row, col = 1, 2
    e = emb[row * 3 + col]
    # first half: column coordinate, ω = 1, 1/100; second half: row coordinate
    expect = torch.tensor([torch.sin(torch.tensor(col * 1.0)), torch.sin(torch.tensor(col / 100)),
                           torch.cos(torch.tensor(col * 1.0)), torch.cos(torch.tensor(col / 100))])
    assert torch.allclose(e[:4], expect, atol=1e-6)


class _FakeTok(torch.nn.Module):
    token_channels, grid_size = 8, 8

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def detokenize(self, z):
        return torch.sigmoid(z[:, :3].repeat_interleave(4, -1).repeat_interleave(4, -2))


def test_decode_latents():
    img = decode_latents(_FakeTok(), torch.randn(2, 8, 8, 8))
    assert img.shape == (2, 3, 32, 32) and 0 <= img.min() and img.max() <= 1
    with pytest.raises(ValueError, match="channels"):
        decode_latents(_FakeTok(), torch.randn(2, 4, 8, 8))


def _bench_generator(argv):
    from ldetok_lite.cli import main

    return main(["bench", "generator", *argv])


def test_bench_generator_command(capsys):
    main = _bench_generator
    rc = main(["--model", "DiT_tiny", "--input-size", "4", "--batch", "4", "--steps", "1", "--warmup", "0",
               "--sample-steps", "2", "--sample-repeats", "1", "--threads", "0", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["train_img_per_s"] > 0 and out["sample_img_per_s"] > 0 and out["sample_steps"] == 2
    assert main(["--model", "NoSuchModel", "--steps", "1"]) == 2
    assert "unknown generator" in capsys.readouterr().err


def test_bench_latent_cache_comparison(capsys):
    main = _bench_generator
    rc = main(["--model", "SiT_tiny", "--batch", "4", "--steps", "2", "--warmup", "0", "--no-sampling",
               "--threads", "0", "--compare-latent-cache", "detok_tiny", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["on_the_fly_ms_per_step"] > 0 and out["cached_latents_ms_per_step"] > 0
    assert out["latent_cache_speedup"] == pytest.approx(
        out["on_the_fly_ms_per_step"] / out["cached_latents_ms_per_step"], rel=0.05)
    # a tokenizer whose latents do not fit the generator is a clear error, not a shape error
    assert main(["--model", "SiT_tiny", "--batch", "2", "--steps", "1", "--no-sampling", "--threads", "0",
                 "--compare-latent-cache", "detok_small_cpu"]) == 2
    assert "makes latents (16, 8, 8), but SiT_tiny expects (8, 8, 8)" in capsys.readouterr().err


def test_time_scale_of_tiny_flow_models():
    m = perturb(make("SiT")).eval()
    assert m.time_scale == 1000.0 and make("DiT").time_scale == 1.0
    with torch.device("meta"):
        assert create_generator("SiT_base").time_scale == 1.0  # paper sizes: t in [0, 1] as in the official code
    x, y = batch()
    t = torch.tensor([0.1, 0.4, 0.7, 0.9])
    with torch.no_grad():
        scaled = m.net(x, t, y)
        m.time_scale = 1.0
        assert torch.allclose(scaled, m.net(x, t * 1000, y), atol=1e-5)
    with pytest.raises(ValueError, match="time_scale"):
        create_generator("SiT_tiny", time_scale=0)
