"""VA-VAE's alignment loss against its closed form on small tensors."""

import pytest
import torch

from ldetok_lite.distill import LatentAligner, vf_alignment_loss


def _by_hand(z, f, m1, m2):
    """The two sums of the module docstring, written as loops."""
    cos = torch.nn.functional.cosine_similarity
    b, n, _ = z.shape
    mcos = mdms = 0.0
    for k in range(b):
        for i in range(n):
            mcos += max(0.0, 1 - m1 - float(cos(z[k, i], f[k, i], dim=0)))
            for j in range(n):
                d = abs(float(cos(z[k, i], z[k, j], dim=0)) - float(cos(f[k, i], f[k, j], dim=0)))
                mdms += max(0.0, d - m2)
    return mcos / (b * n), mdms / (b * n * n)


def test_known_values():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    f = torch.stack([e1, e2])[None]
    loss, parts = vf_alignment_loss(f.clone(), f)  # aligned: nothing to pay
    assert float(loss) == 0 and parts == {"vf_mcos": 0.0, "vf_mdms": 0.0}
    _, parts = vf_alignment_loss(-f, f)  # opposite: cos -1 everywhere, same relations
    assert parts["vf_mcos"] == pytest.approx(1.5) and parts["vf_mdms"] == pytest.approx(0.0)
    z = torch.stack([e1, e1])[None]  # position 1 right, position 2 orthogonal; relations all 1 vs identity
    loss, parts = vf_alignment_loss(z, f, cos_weight=2.0, distmat_weight=1.0)
    assert parts["vf_mcos"] == pytest.approx(0.25)  # mean(0, 1 - 0.5 - 0)
    assert parts["vf_mdms"] == pytest.approx(0.375)  # two of four entries |1 - 0| - 0.25
    assert float(loss) == pytest.approx(2 * 0.25 + 0.375)


@pytest.mark.parametrize("m1,m2", [(0.5, 0.25), (0.0, 0.0), (0.9, 0.6)])
def test_matches_the_sums_on_random_tensors(m1, m2):
    g = torch.Generator().manual_seed(0)
    z, f = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    _, parts = vf_alignment_loss(z, f, m1, m2)
    mcos, mdms = _by_hand(z, f, m1, m2)
    assert parts["vf_mcos"] == pytest.approx(mcos, abs=1e-6) and parts["vf_mdms"] == pytest.approx(mdms, abs=1e-6)


def test_teacher_gets_no_gradient_and_the_projection_learns():
    torch.manual_seed(0)
    aligner = LatentAligner(token_channels=4, teacher_dim=6)
    z = torch.randn(2, 16, 4, requires_grad=True)
    feats = torch.randn(2, 6, 8, 8, requires_grad=True)  # resized to the 4×4 latent grid
    loss, _ = aligner(z, feats)
    loss.backward()
    assert feats.grad is None and z.grad is not None and aligner.proj.weight.grad.abs().sum() > 0
    opt = torch.optim.Adam(aligner.parameters(), lr=0.05)
    first = loss.item()
    for _ in range(100):
        opt.zero_grad()
        loss, _ = aligner(z.detach(), feats.detach())
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_bad_inputs():
    with pytest.raises(ValueError, match="z_proj has shape"):
        vf_alignment_loss(torch.randn(1, 4, 3), torch.randn(1, 4, 5))
    with pytest.raises(ValueError, match="cos_margin=2.5 is out of range"):
        vf_alignment_loss(torch.randn(1, 4, 3), torch.randn(1, 4, 3), cos_margin=2.5)
    with pytest.raises(ValueError, match="features has shape"):
        LatentAligner(4, 6)(torch.randn(1, 16, 4), torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match="teacher_dim=0"):
        LatentAligner(4, 0)
