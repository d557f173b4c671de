"""RasterAR / RandomAR (official models/ardiff.py, ARDiff): orders, causality, the KV cache, guidance."""

from __future__ import annotations

import json

import pytest
import torch

from ldetok_lite.generators import create_generator
from ldetok_lite.generators.mar import patchify, to_order

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(input_size=4, hidden_size=32, depth=2, num_heads=2, head_width=32, head_depth=1, head_steps=3)


def _small(name="RandomAR_tiny", seed=0, **kw):
    torch.manual_seed(seed)
    m = create_generator(name, **{**SMALL, **kw})
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # leave the zero init: adaLN and the head must be non-trivial here
        for n, p in m.named_parameters():
            p.add_((0.01 if n.startswith("diffloss") else 0.05) * torch.randn(p.shape, generator=g))
    return m.eval()


def _close(a, b, tol=1e-5):
    scale = max(float(a.abs().max()), 1.0)
    torch.testing.assert_close(a / scale, b / scale, atol=tol, rtol=tol)


def test_orders():
    raster = _small("RasterAR_tiny")
    assert raster.order == "raster" and raster.family == "RasterAR"
    assert torch.equal(raster.orders(3), torch.arange(16).expand(3, 16))
    rnd = _small("RandomAR_tiny")
    o = rnd.orders(5, rng=torch.Generator().manual_seed(0))
    assert torch.equal(o.sort(1).values, torch.arange(16).expand(5, 16))
    assert len({tuple(r.tolist()) for r in o}) == 5


@pytest.mark.parametrize("name", ["RasterAR_tiny", "RandomAR_tiny"])
def test_teacher_forcing_is_causal_and_target_aware(name):
    m = _small(name)
    tokens = torch.randn(2, 16, 8)
    orders = m.orders(2, rng=torch.Generator().manual_seed(0))
    cls = m.y_embedder.embedding_table(torch.tensor([1, 2]))
    z = m.conditions(tokens, orders, cls)
    assert z.shape == (2, 16, 32)
    i = 6  # tokens at steps >= i must not influence z at steps <= i
    later = orders[:, i:]
    changed = tokens.clone()
    for b in range(2):
        changed[b, later[b]] += 3.0
    z2 = m.conditions(changed, orders, cls)
    torch.testing.assert_close(z2[:, : i + 1], z[:, : i + 1])
    assert not torch.allclose(z2[:, i + 1:], z[:, i + 1:])
    # target-aware: the same prefix with another next position gives another condition
    o2 = orders.clone()
    o2[:, [i, i + 1]] = o2[:, [i + 1, i]]
    z3 = m.conditions(tokens, o2, cls)
    torch.testing.assert_close(z3[:, :i], z[:, :i])
    assert not torch.allclose(z3[:, i], z[:, i])


def test_kv_cache_backbone_matches_full_prefix():
    m = _small("RandomAR_tiny")
    tokens = torch.randn(3, 16, 8)
    orders = m.orders(3, rng=torch.Generator().manual_seed(0))
    cls = m.y_embedder.embedding_table(torch.tensor([0, 5, 9]))
    full = m.conditions(tokens, orders, cls)
    tok_ord = to_order(tokens, orders)
    caches = [{} for _ in m.blocks]
    steps = []
    for i in range(16):
        x = m.bos_token.expand(3, 1, -1) if i == 0 else m.x_embedder(tok_ord[:, i - 1:i])
        steps.append(m.run(m.embed(x, orders, i), cls, i, caches)[:, 0])
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["RasterAR_tiny", "RandomAR_tiny"])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_kv_cache_sampling_equals_no_cache(name, cfg):
    m = _small(name)
    a = m.generate([1, 7], cfg_scale=cfg, rng=torch.Generator().manual_seed(0), use_kv_cache=True)
    b = m.generate([1, 7], cfg_scale=cfg, rng=torch.Generator().manual_seed(0), use_kv_cache=False)
    assert a.shape == (2, 8, 4, 4)
    _close(a, b)


def test_guidance_scale_one_equals_conditional_and_first_token_unguided():
    m = _small("RasterAR_tiny")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    cond = m.generate([2, 3], cfg_scale=1.0, rng=g())
    _close(m.generate([2, 3], cfg_scale=1.0, rng=g(), force_guidance=True), cond)
    guided = m.generate([2, 3], cfg_scale=5.0, rng=g())
    # linear schedule: cfg_0 = 1, so the first token (raster: position (0, 0)) is unguided
    _close(guided[:, :, 0, 0], cond[:, :, 0, 0])
    assert not torch.allclose(guided[:, :, 3, 3], cond[:, :, 3, 3])
    const = m.generate([2, 3], cfg_scale=5.0, rng=g(), cfg_schedule="constant")
    assert not torch.allclose(const[:, :, 0, 0], cond[:, :, 0, 0])


def test_trajectory_adds_one_token_per_step_in_order():
    m = _small("RandomAR_tiny")
    out, traj = m.generate([4], rng=torch.Generator().manual_seed(1), return_trajectory=True)
    assert len(traj) == 17 and torch.count_nonzero(traj[0]) == 0
    torch.testing.assert_close(traj[-1], out)
    known = [int((t != 0).any(1).sum()) for t in traj]
    assert known == list(range(17))
    orders = m.orders(1, rng=torch.Generator().manual_seed(1))
    first = (traj[1] != 0).any(1).flatten()
    assert torch.nonzero(first).flatten().tolist() == [int(orders[0, 0])]


def test_loss_covers_every_token_in_order(monkeypatch):
    m = _small("RandomAR_tiny").train()
    seen = {}
    orig = m.diffloss.forward

    def spy(target, z, mask=None, **kw):
        seen.update(target=target, mask=mask, z=z)
        return orig(target, z, mask=mask, **kw)

    monkeypatch.setattr(m.diffloss, "forward", spy)
    lat = torch.randn(2, 8, 4, 4)
    loss = m.loss(lat, torch.tensor([1, 2]), rng=torch.Generator().manual_seed(3))
    orders = m.orders(2, rng=torch.Generator().manual_seed(3))
    assert torch.isfinite(loss) and seen["mask"] is None
    assert torch.equal(seen["target"], to_order(patchify(lat), orders).reshape(-1, 8))
    m(lat, torch.tensor([1, 10])).backward()  # through the public interface; 10 = null class
    assert m.x_embedder.weight.grad is not None


def test_num_steps_sets_head_steps(monkeypatch):
    m = _small("RasterAR_tiny")
    seen = []
    orig = m.diffloss.sample
    monkeypatch.setattr(m.diffloss, "sample", lambda *a, **kw: seen.append(kw["num_steps"]) or orig(*a, **kw))
    m.generate([0], num_steps=2)
    assert seen == [2] * 16
    assert m.default_num_steps == 3 and m.max_num_steps == 1000


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(num_steps=0), ValueError, "num_steps"),
    (dict(num_steps=1001), ValueError, "num_steps"),
    (dict(cfg_scale=0.9), ValueError, "cfg"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(use_kv_cache="yes"), TypeError, "use_kv_cache"),
    (dict(cfg_schedule="cosine"), ValueError, "cfg_schedule"),
])
def test_generate_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        _small("RasterAR_tiny").generate([1], **kwargs)


def test_constructor_bad_arguments():
    with pytest.raises(ValueError, match="order"):
        create_generator("RasterAR_tiny", **{**SMALL, "order": "zigzag"})
    with pytest.raises(ValueError, match="hidden_size"):
        create_generator("RandomAR_tiny", **{**SMALL, "num_heads": 5})
    with pytest.raises(ValueError, match="label_drop"):
        create_generator("RandomAR_tiny", **{**SMALL, "label_drop": 1.5})
    with pytest.raises(TypeError, match="create_generator"):
        create_generator("RandomAR_tiny", not_a_kwarg=1)


def test_kv_cache_benchmark_reports_both_paths(capsys):
    from ldetok_lite.cli import main

    rc = main(["bench", "generator", "--model", "RasterAR_tiny", "--compare-kv-cache", "--no-sampling", "--batch", "2",
               "--steps", "1", "--warmup", "0", "--sample-batch", "2", "--sample-steps", "1", "--sample-repeats", "1",
               "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["kv_tokens"] == 64 and res["kv_head_steps"] == 1
    assert res["kv_cache_s_per_call"] > 0 and res["no_cache_s_per_call"] > 0
    assert res["kv_cache_speedup"] == pytest.approx(res["no_cache_s_per_call"] / res["kv_cache_s_per_call"], rel=0.05)


def test_adaln_once_per_class_equals_per_sample():
    from ldetok_lite.generators.ar import distinct_rows
    from ldetok_lite.generators.blocks import AdaLNBlock

    table = torch.randn(5, 16, requires_grad=True)
    labels = torch.tensor([3, 1, 3, 0, 1, 1])
    x = table[labels]
    distinct, inv = distinct_rows(x)
    assert distinct.shape == (3, 16) and torch.equal(distinct[inv], x)
    distinct.sum().backward()  # gradients reach the rows of the labels used, once each
    assert torch.equal(table.grad.abs().sum(1) > 0, torch.tensor([True, True, False, True, False]))
    blk = AdaLNBlock(16, 4)
    torch.nn.init.normal_(blk.adaLN_modulation[-1].weight)
    h, steps = torch.randn(6, 7, 16), torch.randn(1, 7, 16)
    per_sample = blk(h, x.detach().unsqueeze(1) + steps, causal=True)
    once = blk(h, distinct.detach().unsqueeze(1) + steps, causal=True, c_index=inv)
    torch.testing.assert_close(once, per_sample)


@pytest.mark.parametrize("name", ["RasterAR_tiny", "RandomAR_base"])
def test_starts_from_a_learned_bos_and_zero_final_adaln(name):
    """As the official ARDiff: the first input is a learned BOS token (the class enters only through
    adaLN and the final layer), and the final layer's adaLN starts at zero."""
    torch.manual_seed(0)
    with torch.device("meta") if name.endswith("base") else torch.device("cpu"):
        m = create_generator(name)
    assert m.bos_token.shape == (1, 1, m.hidden_size)
    if name.endswith("base"):
        return
    assert m.bos_token.abs().sum() > 0
    assert torch.count_nonzero(m.final_adaLN[-1].weight) == 0 and torch.count_nonzero(m.final_adaLN[-1].bias) == 0
    # the first input does not depend on the class: only the conditions of the blocks do
    tokens = torch.randn(2, 64, 8)
    orders = m.orders(2, rng=torch.Generator().manual_seed(0))
    h = m.inputs(to_order(tokens, orders)[:, :-1])
    torch.testing.assert_close(h[:, 0], m.bos_token[0].expand(2, -1))
