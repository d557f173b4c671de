"""MAR and the order / mask helpers it shares with the AR models (official models/mar.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ldetok_lite.generators import create_generator
from ldetok_lite.generators import mar as M

# a very small MAR on a 4×4 grid of 8-channel tokens: fast on any CPU

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(input_size=4, hidden_size=32, depth=1, num_heads=2, buffer_size=2, head_width=32, head_depth=1,
             head_steps=3, num_iter=4)


def _small(seed=0, perturb=True, **kw):
    torch.manual_seed(seed)
    m = create_generator("MAR_tiny", **{**SMALL, **kw})
    if perturb:  # leave the zero-initialised head so that z matters
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in m.diffloss.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
    return m.eval()


# -- orders and masks ----------------------------------------------------------------------------


def test_raster_order_is_identity():
    o = M.raster_orders(3, 10)
    assert torch.equal(o, torch.arange(10).expand(3, 10))
    x = torch.randn(3, 10, 5)
    assert torch.equal(M.to_order(x, o), x)
    assert torch.equal(M.invert_orders(o), o)


def test_random_orders_are_permutations_and_invert_exactly():
    g = torch.Generator().manual_seed(0)
    o = M.random_orders(6, 16, rng=g)
    assert torch.equal(o.sort(dim=1).values, torch.arange(16).expand(6, 16))
    assert len({tuple(r.tolist()) for r in o}) == 6  # independent per sample
    inv = M.invert_orders(o)
    assert torch.equal(torch.gather(o, 1, inv), torch.arange(16).expand(6, 16))
    assert torch.equal(torch.gather(inv, 1, o), torch.arange(16).expand(6, 16))
    x = torch.randn(6, 16, 3)
    assert torch.equal(M.from_order(M.to_order(x, o), o), x)
    assert torch.equal(M.to_order(x, o)[2, 5], x[2, o[2, 5]])
    again = M.random_orders(6, 16, rng=torch.Generator().manual_seed(0))
    assert torch.equal(o, again)


def test_patchify_round_trip_row_major():
    lat = torch.randn(2, 3, 4, 4)
    tok = M.patchify(lat)
    assert tok.shape == (2, 16, 3)
    assert torch.equal(tok[:, 5], lat[:, :, 1, 1])
    assert torch.equal(M.unpatchify(tok, 4), lat)


@pytest.mark.parametrize("n", [0, 1, 7, 16])
def test_mask_by_order_covers_the_first_positions(n):
    o = M.random_orders(4, 16, rng=torch.Generator().manual_seed(1))
    mask = M.mask_by_order(n, o)
    assert mask.dtype == torch.bool
    assert torch.all(mask.sum(1) == n)
    for b in range(4):
        assert set(torch.nonzero(mask[b]).flatten().tolist()) == set(o[b, :n].tolist())


def test_truncated_normal_mask_rate_matches_scipy():
    # reference: scipy.stats.truncnorm(a=-1.2, b=0, loc=1, scale=0.25).ppf(u) and .mean()
    u = torch.tensor([0.01, 0.25, 0.5, 0.75, 0.99], dtype=torch.float64)
    ref = torch.tensor([0.70489798, 0.79952228, 0.87428748, 0.93909813, 0.99758777], dtype=torch.float64)
    torch.testing.assert_close(M.truncnorm_icdf(u, 0.7, 1.0, 1.0, 0.25), ref, atol=1e-7, rtol=0)
    g = torch.Generator().manual_seed(0)
    rates = [M.sample_mask_rate(g) for _ in range(400)]
    assert all(0.7 <= r <= 1.0 for r in rates)
    assert abs(sum(rates) / len(rates) - 0.8670173473105165) < 0.01


def test_training_mask_count_is_ceil_rate():
    m = _small()
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        orders, mask, rate = m.training_mask(3, "cpu", g)
        assert 0.7 <= rate <= 1.0
        assert torch.all(mask.sum(1) == math.ceil(16 * rate))
        assert torch.equal(mask, M.mask_by_order(math.ceil(16 * rate), orders))


def test_cosine_schedule():
    L = 64
    for steps in (1, 4, 16, 64):
        sched = M.mar_schedule(steps, L)
        assert len(sched) == steps and sum(sched) == L and min(sched) >= 1
    assert M.cosine_mask_len(0, 16, 64) == math.floor(64 * math.cos(math.pi / 2 / 16))
    assert M.cosine_mask_len(15, 16, 64) == 0
    s = M.mar_schedule(16, 64)
    assert s[0] < s[-2]  # few tokens first, many at the end (cosine)
    assert M.linear_cfg(4.0, 0.0) == 1.0 and M.linear_cfg(4.0, 1.0) == 4.0


# -- the model -----------------------------------------------------------------------------------


def test_encoder_never_sees_masked_tokens():
    m = _small()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 16, 8)
    _, mask, _ = m.training_mask(2, "cpu", g)
    cls = m.y_embedder.embedding_table(torch.tensor([1, 2]))
    z1 = m.conditions(tokens, mask, cls)
    other = tokens.clone()
    other[mask] = 50.0 * torch.randn(int(mask.sum()), 8)
    torch.testing.assert_close(z1, m.conditions(other, mask, cls))
    visible = ~mask
    if visible.any():
        changed = tokens.clone()
        changed[visible] += 1.0
        assert not torch.allclose(z1, m.conditions(changed, mask, cls))


def test_loss_only_on_masked_tokens(monkeypatch):
    m = _small().train()
    seen = {}
    orig = m.diffloss.forward

    def spy(target, z, mask=None, **kw):
        seen.update(target=target, mask=mask)
        return orig(target, z, mask=mask, **kw)

    monkeypatch.setattr(m.diffloss, "forward", spy)
    lat = torch.randn(3, 8, 4, 4)
    g = torch.Generator().manual_seed(4)
    loss = m.loss(lat, torch.tensor([0, 1, 2]), rng=g)
    _, mask_ref, rate = m.training_mask(3, "cpu", torch.Generator().manual_seed(4))
    assert torch.isfinite(loss)
    mask = seen["mask"].reshape(3, 16)
    assert torch.equal(mask, mask_ref)
    assert torch.all(mask.sum(1) == math.ceil(16 * rate))
    assert torch.equal(seen["target"], M.patchify(lat).reshape(-1, 8))


def test_forward_interface_and_backward():
    m = _small().train()
    lat, y = torch.randn(4, 8, 4, 4), torch.tensor([0, 1, 2, 10])  # 10 = null class allowed
    loss = m(lat, y)
    assert loss.ndim == 0
    loss.backward()
    assert m.z_proj.weight.grad is not None and m.diffloss.net.input_proj.weight.grad is not None


def test_generate_shape_determinism_and_trajectory():
    m = _small()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = m.generate([1, 2], rng=g())
    b = m.generate([1, 2], rng=g())
    assert a.shape == (2, 8, 4, 4)
    torch.testing.assert_close(a, b)
    out, traj = m.generate([1, 2], num_steps=4, rng=g(), return_trajectory=True)
    assert len(traj) == 5 and torch.count_nonzero(traj[0]) == 0
    torch.testing.assert_close(traj[-1], out)
    counts = [int((t != 0).any(1).sum()) // 2 for t in traj]
    assert counts[1:] == list(torch.tensor(M.mar_schedule(4, 16)).cumsum(0))
    steps = M.token_steps(traj)
    assert steps.shape == (2, 4, 4) and steps.min() >= 1 and steps.max() == 4


def test_guidance_scale_one_equals_conditional():
    m = _small()
    cond = m.generate([3, 4], cfg_scale=1.0, rng=torch.Generator().manual_seed(0))
    forced = m.generate([3, 4], cfg_scale=1.0, rng=torch.Generator().manual_seed(0), force_guidance=True)
    scale = cond.abs().max()
    torch.testing.assert_close(forced / scale, cond / scale, atol=1e-5, rtol=1e-5)
    guided = m.generate([3, 4], cfg_scale=4.0, rng=torch.Generator().manual_seed(0))
    assert guided.shape == cond.shape and torch.isfinite(guided).all()


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(num_steps=0), ValueError, "num_steps"),
    (dict(num_steps=17), ValueError, "num_steps"),
    (dict(cfg_scale=0.5), ValueError, "cfg"),
    (dict(temperature=0), ValueError, "temperature"),
    (dict(head_steps=0), ValueError, "num_steps"),
    (dict(cfg_schedule="cosine"), ValueError, "cfg_schedule"),
    (dict(rng=0), TypeError, "rng must be a torch.Generator"),
])
def test_generate_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        _small(perturb=False).generate([1], **kwargs)


def test_bad_inputs_and_constructor_arguments():
    m = _small(perturb=False)
    with pytest.raises(ValueError, match="label"):
        m.generate([11])
    with pytest.raises(ValueError, match="latents shape"):
        m(torch.randn(2, 8, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_iter"):
        create_generator("MAR_tiny", **{**SMALL, "num_iter": 17})
    with pytest.raises(ValueError, match="hidden_size"):
        create_generator("MAR_tiny", **{**SMALL, "num_heads": 3})
    with pytest.raises(ValueError, match="unknown generator"):
        create_generator("MAR_huge_typo")


def test_registry_sizes_and_spec():
    from ldetok_lite.generators import GENERATORS

    for size in ("tiny", "base", "large", "huge"):  # the official MAR_SIZE_DICT and SIZE_DICT sizes
        for fam in ("MAR", "RandomAR", "RasterAR"):
            assert f"{fam}_{size}" in GENERATORS
    assert "RandomAR_xl" in GENERATORS and "MAR_xl" not in GENERATORS
    m = create_generator("MAR_tiny", **SMALL)
    assert m.spec["name"] == "MAR_tiny" and m.spec["kwargs"]["hidden_size"] == 32
    assert m.latent_shape == (8, 4, 4) and m.default_num_steps == 4


def test_no_cuda_calls_in_sources():
    src = Path(M.__file__).parent
    for name in ("diffloss.py", "mar.py", "ar.py"):
        assert ".cuda(" not in (src / name).read_text()


@pytest.mark.parametrize("size", ["tiny", "base", "large", "huge"])
def test_mlp_dropout_is_zero_at_every_size(size):
    """The official README runs pass --no_dropout_in_mlp: no dropout inside the MLPs, while the
    attention and its projection keep the size's dropout (0.1 at base/large)."""
    with torch.device("meta"):
        m = create_generator(f"MAR_{size}")
    want = {"tiny": 0.0, "base": 0.1, "large": 0.1, "huge": 0.1}[size]
    blocks = list(m.encoder_blocks) + list(m.decoder_blocks)
    assert len(blocks) == 2 * m.depth
    for blk in blocks:
        mlp_drops = [d.p for d in blk.mlp.modules() if isinstance(d, torch.nn.Dropout)]
        assert mlp_drops and all(p == 0.0 for p in mlp_drops), mlp_drops
        assert blk.attn.attn_drop.p == want and blk.attn.proj_drop.p == want
