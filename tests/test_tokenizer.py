"""The DeTok tokenizer: official layout, RoPE quirk, corruption wiring, API and errors."""

from __future__ import annotations

import math

import pytest
import torch

from ldetok_lite.convert import infer_official_config, load_official_checkpoint
from ldetok_lite.layers import apply_rope, rope_frequencies, rope_table, rotate_half
from ldetok_lite.tokenizer import TOKENIZERS, DeTok, create_tokenizer


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_tokenizer("detok_tiny").eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 32, 32, generator=gen(0))


def meta_model(name, **kw):
    with torch.device("meta"):
        return create_tokenizer(name, **kw)


# ------------------------------------------------------------------ official layout (models/detok.py keys)


def test_detok_BB_official_keys_and_shapes():
    sd = meta_model("detok_BB").state_dict()
    assert len(sd) == 257
    assert sum(v.numel() for v in sd.values()) == 171_712_628
    assert sum(v.numel() for k, v in sd.items() if k.startswith("encoder.")) == 85_861_664
    assert sum(v.numel() for k, v in sd.items() if k.startswith("decoder.")) == 85_850_964
    expected = {
        "encoder.positional_embedding": (1, 256, 768),
        "encoder.patch_embed.0.weight": (768, 3, 16, 16),
        "encoder.patch_embed.0.bias": (768,),
        "encoder.ln_pre.weight": (768,),
        "encoder.ln_post.weight": (768,),
        "encoder.latent_head.weight": (32, 768),
        "encoder.latent_head.bias": (32,),
        "decoder.positional_embedding": (1, 256, 768),
        "decoder.mask_token": (1, 1, 768),
        "decoder.decoder_embed.weight": (768, 16),
        "decoder.decoder_embed.bias": (768,),
        "decoder.ln_pre.weight": (768,),
        "decoder.ln_post.weight": (768,),
        "decoder.ffn.1.weight": (768, 768, 1, 1),
        "decoder.ffn.1.bias": (768,),
        "decoder.conv_out.weight": (3, 3, 3, 3),
        "decoder.conv_out.bias": (3,),
    }
    block = {
        "norm1.weight": (768,), "norm2.weight": (768,),
        "attn.qkv.weight": (2304, 768), "attn.qkv.bias": (2304,),
        "attn.proj.weight": (768, 768), "attn.proj.bias": (768,),
        "mlp.w12.weight": (4096, 768), "mlp.w12.bias": (4096,),
        "mlp.w3.weight": (768, 2048), "mlp.w3.bias": (768,),
    }
    for part in ("encoder", "decoder"):
        for i in range(12):
            for k, shape in block.items():
                expected[f"{part}.transformer.{i}.{k}"] = shape
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert all(v.dtype == torch.float32 for v in sd.values())
    # file order: encoder first, positional embedding leading each part
    keys = list(sd)
    assert keys[0] == "encoder.positional_embedding" and keys[-1] == "decoder.conv_out.bias"
    assert keys.index("decoder.positional_embedding") == 127  # 1 + 2 + 1 + 12·10 + 1 + 2


def test_block_param_count_and_nonpersistent_buffers():
    m = meta_model("detok_BB")
    assert sum(p.numel() for p in m.encoder.transformer[0].parameters()) == 7_087_360
    assert m.encoder.rope_tensor.shape == (1, 256, 128)
    assert m.decoder.rope_tensor.shape == (1, 256, 128)
    assert not any("rope" in k or k in ("latent_mean", "latent_std") for k in m.state_dict())


def test_detok_SS_and_others_official_shapes():
    sd = meta_model("detok_SS").state_dict()
    assert len(sd) == 177
    assert sum(v.numel() for v in sd.values()) == 51_502_100
    assert sd["encoder.transformer.0.mlp.w12.weight"].shape == (2730, 512)
    assert sd["encoder.transformer.0.mlp.w3.weight"].shape == (512, 1365)
    assert sd["decoder.ffn.1.weight"].shape == (768, 512, 1, 1)
    sd = meta_model("detok_XLXL").state_dict()
    assert len(sd) == 577
    assert sd["decoder.transformer.27.mlp.w12.weight"].shape == (6144, 1152)
    assert meta_model("detok_XLXL").encoder.transformer[0].attn.head_dim == 72
    for name, total in [("detok_SB", 111.61), ("detok_LL", 606.64), ("detok_XLXL", 895.03)]:
        n = sum(p.numel() for p in meta_model(name).parameters())
        assert round(n / 1e6, 2) == total, name


def test_all_names_build_and_spec():
    assert {"detok_SS", "detok_BB", "detok_XLXL", "detok_tiny", "detok_small_cpu"} <= set(TOKENIZERS)
    m = create_tokenizer("detok_tiny", gamma=0.0, mask_ratio=0.0)
    assert m.spec == {"kind": "tokenizer", "name": "detok_tiny", "kwargs": {"gamma": 0.0, "mask_ratio": 0.0}}
    assert (m.img_size, m.patch_size, m.grid_size, m.token_channels) == (32, 4, 8, 8)
    assert (m.gamma, m.mask_ratio, m.use_additive_noise) == (0.0, 0.0, False)
    again = create_tokenizer(m.spec["name"], **m.spec["kwargs"])
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    small = create_tokenizer("detok_small_cpu")
    assert (small.img_size, small.patch_size, small.grid_size) == (64, 8, 8)
    m = create_tokenizer("detok_tiny", img_size=64, patch_size=8, token_channels=4, use_additive_noise=True)
    assert m.encoder.positional_embedding.shape == (1, 64, 128) and m.decoder.ffn[1].weight.shape[0] == 8 * 8 * 3


def test_init_follows_spec():
    torch.manual_seed(0)
    m = create_tokenizer("detok_small_cpu").requires_grad_(False)
    w = m.encoder.transformer[0].mlp.w12.weight
    assert abs(float(w.std()) - 0.02) < 0.002 and float(w.abs().max()) < 0.1
    assert float(m.decoder.conv_out.bias.abs().max()) == 0.0
    assert abs(float(m.encoder.patch_embed[0].weight.std()) - 0.02) < 0.003
    assert torch.all(m.encoder.ln_pre.weight == 1)
    assert abs(float(m.decoder.positional_embedding.std()) - 192**-0.5) < 0.01


# ------------------------------------------------------------------ RoPE (official get_rope_tensor)


def naive_rope_table(head_dim, grid):
    q = head_dim // 4
    f = [7.0 * (7.0 / 7e-4) ** (-k / (q - 1)) for k in range(q)]
    F = f + f
    rows = []
    for h in range(grid):
        for w in range(grid):
            u, v = h / (grid - 1), w / (grid - 1)
            ang = [2 * math.pi * u * F[d] for d in range(head_dim // 2)]
            ang += [2 * math.pi * v * F[d] for d in range(head_dim // 2)]
            rows.append([math.cos(a) for a in ang] + [math.sin(a) for a in ang])
    return torch.tensor(rows)[None]


def test_rope_table_matches_formula_and_layout():
    t = rope_table(64, 16)
    assert t.shape == (1, 256, 128)
    torch.testing.assert_close(t, naive_rope_table(64, 16).float(), atol=2e-5, rtol=0)
    f = rope_frequencies(64)
    assert f.shape == (32,) and torch.equal(f[:16], f[16:])
    torch.testing.assert_close(f[[0, 15]], torch.tensor([7.0, 7e-4]))
    cos = t[0, :, :64].view(16, 16, 64)
    assert torch.allclose(cos[:, :1, :32].expand(-1, 16, -1), cos[:, :, :32])  # rows only
    assert torch.allclose(cos[:1, :, 32:].expand(16, -1, -1), cos[:, :, 32:])  # columns only
    angle = torch.atan2(t[0, 16, 64], t[0, 16, 0])  # (h=1, w=0), dim 0
    expected = math.remainder(2 * math.pi * 7 / 15, 2 * math.pi)
    assert abs(float(angle) - expected) < 1e-4


def test_rope_table_is_the_official_construction_bit_for_bit():
    """The official get_rope_tensor builds a (2, D) frequency matrix and multiplies the (u, v) grid
    into it; the same float32 operations must give the same bits (checked against the official code
    itself outside this suite)."""
    for head_dim, grid in ((64, 16), (72, 16), (32, 4), (48, 7)):
        f = 7.0 * (7.0 / 7e-4) ** torch.linspace(0, -1, head_dim // 4)
        f = torch.cat([f, f])
        f2 = torch.zeros(2, head_dim)
        f2[0, : head_dim // 2] = f
        f2[1, -head_dim // 2:] = f
        coords = torch.cartesian_prod(torch.linspace(0, 1, grid), torch.linspace(0, 1, grid))
        angle = coords @ (f2 * 2 * torch.pi)
        assert torch.equal(rope_table(head_dim, grid)[0], torch.cat([angle.cos(), angle.sin()], dim=-1))


def test_posterior_sample_and_noise_are_float32_under_bf16():
    """Under bf16 autocast the official code samples the posterior with autocast off and draws τ and ε
    in float32, so the corrupted latent is float32."""
    from ldetok_lite.tokenizer import DiagonalGaussian

    moments = torch.randn(2, 16, 16, generator=gen(0)).bfloat16()
    post = DiagonalGaussian(moments)
    z = post.sample(gen(1))
    eps = torch.randn(2, 16, 8, generator=gen(1))
    assert z.dtype == torch.float32
    assert torch.equal(z, post.mean.float() + post.std.float() * eps)
    m = create_tokenizer("detok_tiny").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, _, _ = m.encode(torch.rand(2, 3, 32, 32), mask_ratio=0.5, noise_tau=torch.rand(2), sampling=True,
                           rng=gen(2))
    assert z.dtype == torch.float32


def test_rotate_half_is_interleaved_and_rope_not_a_rotation():
    x = torch.arange(1.0, 7.0)
    assert rotate_half(x).tolist() == [-2.0, 1.0, -4.0, 3.0, -6.0, 5.0]
    t = rope_table(64, 16)
    cos, sin = t[..., :64], t[..., 64:]
    q = torch.randn(1, 256, 64, generator=gen(0))
    out = apply_rope(q, cos, sin)
    # the quirk: pair elements get different angles, so norms change
    ratio = out.norm(dim=-1) / q.norm(dim=-1)
    assert float(ratio.std()) > 0.01
    # explicit elementwise formula
    ref = q * cos + torch.stack([-q[..., 1::2], q[..., 0::2]], -1).flatten(-2) * sin
    torch.testing.assert_close(out, ref)


def test_encoder_gathers_rope_rows_of_kept_tokens(tiny, images):
    """Masked encoding equals running the blocks on the kept tokens with their own RoPE rows."""
    enc = tiny.encoder
    noise = torch.rand(3, 64, generator=gen(5))
    with torch.no_grad():
        moments, ids_restore = enc(images * 2 - 1, 0.5, noise)
        tokens = enc.patch_embed(images * 2 - 1) + enc.positional_embedding
        keep = torch.argsort(noise, 1)[:, :32]
        ref = []
        for i in range(3):
            h = enc.ln_pre(tokens[i:i + 1, keep[i]])
            for blk in enc.transformer:
                h = blk(h, enc.rope_tensor[:, keep[i]])
            ref.append(enc.latent_head(enc.ln_post(h)))
    torch.testing.assert_close(moments, torch.cat(ref), atol=1e-5, rtol=1e-5)
    assert torch.equal(ids_restore, torch.argsort(torch.argsort(noise, 1), 1))


# ------------------------------------------------------------------ decoder


def test_unpatchify_channel_layout(tiny):
    dec = tiny.decoder
    p, g = 4, 8
    y = torch.randn(1, p * p * 3, g, g)
    out = dec.ffn[2](y)
    for p1, p2, c, h, w in [(0, 0, 0, 0, 0), (1, 3, 2, 5, 6), (3, 2, 1, 7, 0)]:
        assert out[0, c, h * p + p1, w * p + p2] == y[0, (p1 * p + p2) * 3 + c, h, w]


def test_mask_tokens_fill_dropped_positions(tiny, images):
    z = torch.randn(3, 64, 8, generator=gen(1))
    noise = torch.rand(3, 64, generator=gen(2))
    dec = tiny.decoder
    with torch.no_grad():
        keep = torch.argsort(noise, 1)[:, :20]
        ids_restore = torch.argsort(torch.argsort(noise, 1), 1)
        kept = torch.gather(z, 1, keep[..., None].expand(-1, -1, 8))
        out = dec(kept, ids_restore)
        # reference: the full sequence with mask tokens placed where tokens were dropped
        x = dec.decoder_embed(z)
        dropped = torch.ones(3, 64, dtype=torch.bool)
        dropped.scatter_(1, keep, False)
        x = torch.where(dropped[..., None], dec.mask_token.expand(3, 64, -1), x)
        x = dec.ln_pre(x + dec.positional_embedding)
        for blk in dec.transformer:
            x = blk(x, dec.rope_tensor)
        ref = dec.conv_out(dec.ffn(dec.ln_post(x)))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ encode / forward


def test_encode_masking_noise_and_sampling(tiny, images):
    with torch.no_grad():
        z, ids, post = tiny.encode(images)
        assert z.shape == (3, 64, 8) and ids is None
        torch.testing.assert_close(z, post.mean)
        z, ids, post = tiny.encode(images, mask_ratio=0.7, rng=gen(0))
        assert z.shape == (3, math.ceil(64 * 0.3), 8) and ids.shape == (3, 64)
        # noise after posterior sampling, on the visible tokens: τ = 1 leaves exactly γ·ε
        eps = torch.randn(3, 20, 8, generator=gen(1))
        z, _, _ = tiny.encode(images, mask_ratio=0.7, noise_tau=1.0, sampling=True, noise=eps, rng=gen(0))
        torch.testing.assert_close(z, 3.0 * eps)
        zs, _, post = tiny.encode(images, sampling=True, rng=gen(3))
        torch.testing.assert_close(zs, post.mean + post.std * torch.randn(post.mean.shape, generator=gen(3)))
        # per-sample τ, γ override, γ = 0 disables noise
        tau = torch.tensor([0.0, 0.5, 1.0])
        eps = torch.randn(3, 64, 8, generator=gen(4))
        zn, _, post = tiny.encode(images, noise_tau=tau, gamma=2.0, noise=eps)
        torch.testing.assert_close(zn, (1 - tau.view(3, 1, 1)) * post.mean + tau.view(3, 1, 1) * 2.0 * eps)
        z0, _, post = tiny.encode(images, noise_tau=0.7, gamma=0.0)
        torch.testing.assert_close(z0, post.mean)


def test_additive_mode(images):
    m = create_tokenizer("detok_tiny", use_additive_noise=True).eval()
    eps = torch.randn(3, 64, 8, generator=gen(4))
    with torch.no_grad():
        z, _, post = m.encode(images, noise_tau=1.0, noise=eps)
    torch.testing.assert_close(z, post.mean + 3.0 * eps)


def test_training_forward_and_gradients(images):
    torch.manual_seed(0)
    m = create_tokenizer("detok_tiny").train()
    recon, kl = m(images, rng=gen(0))
    assert recon.shape == images.shape and kl.shape == (3,)
    assert torch.all(kl > 0)
    (torch.nn.functional.mse_loss(recon, images) + 1e-6 * kl.mean()).backward()
    grads = {k: p.grad for k, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # reproducible from the generator; different draws otherwise
    r1, _ = m(images, rng=gen(11))
    r2, _ = m(images, rng=gen(11))
    r3, _ = m(images, rng=gen(12))
    torch.testing.assert_close(r1, r2)
    assert not torch.allclose(r1, r3)


def test_training_forward_draw_order(images):
    """γ = 0, M = 0: forward = decode(posterior sample); draws: mask ratio, then ε of the sample."""
    m = create_tokenizer("detok_tiny", gamma=0.0, mask_ratio=0.0).train()
    with torch.no_grad():
        recon, kl = m(images, rng=gen(5))
        g = gen(5)
        torch.rand((), generator=g, dtype=torch.float64)
        _, _, post = m.encode(images)
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        torch.testing.assert_close(recon, m.decode(z))
        torch.testing.assert_close(kl, post.kl())


def test_forward_uses_the_samplers(images, monkeypatch):
    import ldetok_lite.autoencoder as T  # the training forward lives in the shared base

    calls = {}

    def fake_ratio(M, rng=None):
        calls["M"] = M
        return 0.5

    def fake_tau(b, rng=None, device=None):
        calls["b"] = b
        return torch.ones(b)

    monkeypatch.setattr(T, "sample_mask_ratio", fake_ratio)
    monkeypatch.setattr(T, "sample_tau", fake_tau)
    m = create_tokenizer("detok_tiny", gamma=2.0, mask_ratio=0.6).train()
    seen = {}
    orig = m.decode

    def spy(z, ids_restore=None):
        seen["z"], seen["ids"] = z, ids_restore
        return orig(z, ids_restore)

    m.decode = spy
    m(images)
    assert calls == {"M": 0.6, "b": 3}
    assert seen["z"].shape == (3, 32, 8) and seen["ids"].shape == (3, 64)
    assert float(seen["z"].detach().std()) == pytest.approx(2.0, rel=0.15)  # τ = 1: pure γ·ε


def test_eval_forward_is_clean_reconstruction(tiny, images):
    with torch.no_grad():
        recon, kl = tiny(images)
        torch.testing.assert_close(recon.clamp(0, 1), tiny.reconstruct(images))
        z, _, post = tiny.encode(images)
        torch.testing.assert_close(kl, post.kl())


# ------------------------------------------------------------------ inference API


def test_tokenize_detokenize_and_stats(tiny, images):
    m = create_tokenizer("detok_tiny").eval()
    m.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        t = m.tokenize(images)
        assert t.shape == (3, 8, 8, 8)
        z, _, _ = m.encode(images)
        torch.testing.assert_close(t, z.transpose(1, 2).reshape(3, 8, 8, 8))
        rec = m.reconstruct(images)
        assert rec.min() >= 0 and rec.max() <= 1
        torch.testing.assert_close(m.detokenize(t), rec)
        m.set_latent_stats(0.5, 2.0)  # floats work (the official reset_stats crashes)
        torch.testing.assert_close(m.tokenize(images), (t - 0.5) / 2.0)
        mean, std = torch.linspace(-1, 1, 8), torch.linspace(0.5, 2, 8)
        m.set_latent_stats(mean, std.tolist())
        t2 = m.tokenize(images)
        torch.testing.assert_close(t2, (t - mean.view(1, 8, 1, 1)) / std.view(1, 8, 1, 1))
        torch.testing.assert_close(m.detokenize(t2), rec, atol=1e-5, rtol=1e-5)
        got_mean, got_std = m.latent_stats
        torch.testing.assert_close(got_mean, mean)
        assert "latent_mean" not in m.state_dict()
        ts = m.tokenize(images, sampling=True, rng=gen(0))
        assert not torch.allclose(ts, t2)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(2, 1, 32, 32), "shape"),
        (torch.rand(2, 3, 30, 30), "resize the images or crop them"),
        (torch.rand(2, 3, 64, 64), "build the tokenizer with img_size=64"),
        (torch.rand(3, 32, 32), "shape"),
        ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), "dtype"),
        (torch.full((2, 3, 32, 32), float("nan")), "NaN"),
        (torch.full((2, 3, 32, 32), float("inf")), "NaN or Inf"),
    ],
)
def test_bad_images_raise(tiny, bad, match):
    for fn in (tiny.reconstruct, tiny.tokenize, tiny.encode, tiny):
        with pytest.raises(ValueError, match=match):
            fn(bad)


def test_bad_arguments_raise(tiny, images):
    with pytest.raises(TypeError, match="x must be"):
        tiny.encode(images.numpy())
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny.encode(images, mask_ratio=1.0)
    with pytest.raises(ValueError, match="tau"):
        tiny.encode(images, noise_tau=1.5)
    with pytest.raises(ValueError, match="ids_restore"):
        tiny.decode(torch.randn(3, 10, 8))
    with pytest.raises(ValueError, match="latent tokens"):
        tiny.decode(torch.randn(3, 64, 5))
    with pytest.raises(ValueError, match="normalised latents"):
        tiny.detokenize(torch.randn(3, 8, 4, 4))
    with pytest.raises(ValueError, match="std"):
        tiny.set_latent_stats(0.0, 0.0)
    with pytest.raises(ValueError, match="mean has 3 values"):
        tiny.set_latent_stats([1.0, 2.0, 3.0], 1.0)
    with pytest.raises(ValueError, match="unknown tokenizer 'detok_bb'.*detok_BB"):
        create_tokenizer("detok_bb")
    with pytest.raises(ValueError, match="unknown tokenizer override 'width'"):
        create_tokenizer("detok_tiny", width=64)
    with pytest.raises(ValueError, match="gamma"):
        create_tokenizer("detok_tiny", gamma=-1.0)
    with pytest.raises(ValueError, match="mask_ratio"):
        create_tokenizer("detok_tiny", mask_ratio=1.0)
    with pytest.raises(ValueError, match="divisible"):
        create_tokenizer("detok_tiny", img_size=30)


# ------------------------------------------------------------------ official checkpoints


def test_official_layout_checkpoint_round_trip(tmp_path, images):
    torch.manual_seed(1)
    src = create_tokenizer("detok_tiny")
    ema = create_tokenizer("detok_tiny")
    path = tmp_path / "detok-tiny.pth"
    torch.save({"model": src.state_dict(), "model_ema": ema.state_dict(), "epoch": 3,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}}, path)
    m = load_official_checkpoint(path, name="detok_tiny")
    assert isinstance(m, DeTok) and not m.training
    for k, v in ema.state_dict().items():
        assert torch.equal(m.state_dict()[k], v)
    with torch.no_grad():
        torch.testing.assert_close(m.reconstruct(images), ema.eval().reconstruct(images))
    m2 = load_official_checkpoint(path, name="detok_tiny", which="model", gamma=0.0)
    assert torch.equal(m2.encoder.latent_head.weight, src.encoder.latent_head.weight) and m2.gamma == 0.0
    m3 = load_official_checkpoint(path, name="auto")
    assert m3.spec["name"] == "detok_tiny"
    m4 = load_official_checkpoint(src.state_dict(), name="detok_tiny")  # a bare state dict
    assert torch.equal(m4.decoder.mask_token, src.decoder.mask_token)


def test_infer_official_config():
    assert infer_official_config(meta_model("detok_BL").state_dict()) == {
        "img_size": 256, "patch_size": 16, "token_channels": 16, "name": "detok_BL"}


def test_bad_checkpoint_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="Jiawei-Yang/DeTok"):
        load_official_checkpoint(tmp_path / "missing.pth")
    txt = tmp_path / "notes.pth"
    txt.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch tensor file.*official l-DeTok"):
        load_official_checkpoint(txt)
    obj = tmp_path / "object.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, obj)  # a pickled module, refused by weights_only
    with pytest.raises(ValueError, match=r"pickled code or Python objects \(torch.nn.modules.linear.Linear"):
        load_official_checkpoint(obj)
    tiny = create_tokenizer("detok_tiny")
    nokey = tmp_path / "nokey.pth"
    torch.save({"weights": tiny.state_dict()}, nokey)
    with pytest.raises(ValueError, match="no entry 'model_ema'.*weights"):
        load_official_checkpoint(nokey, name="detok_tiny")
    lst = tmp_path / "list.pth"
    torch.save([1, 2], lst)
    with pytest.raises(ValueError, match="list"):
        load_official_checkpoint(lst)
    other = tmp_path / "other.pth"
    torch.save({"model_ema": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(ValueError, match="does not look like DeTok"):
        load_official_checkpoint(other)
    good = tmp_path / "tiny.pth"
    torch.save({"model_ema": tiny.state_dict()}, good)
    with pytest.raises(ValueError, match=r"does not match detok_small_cpu .*shape mismatch.*img_size=32"):
        load_official_checkpoint(good, name="detok_small_cpu")
    sd = dict(tiny.state_dict())
    sd.pop("decoder.conv_out.bias")
    sd["decoder.extra"] = torch.zeros(1)
    torch.save({"model_ema": sd}, good)
    with pytest.raises(ValueError, match=r"missing \(1\): decoder.conv_out.bias; unexpected \(1\): decoder.extra"):
        load_official_checkpoint(good, name="detok_tiny")
