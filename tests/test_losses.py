"""Loss terms on known inputs (official utils/losses.py)."""

import pytest
import torch

from ldetok_lite import losses as L
from ldetok_lite.config import TokenizerConfig


def test_reconstruction_losses_known_values():
    x = torch.full((2, 3, 8, 8), 0.5)
    y = torch.zeros(2, 3, 8, 8)
    assert L.reconstruction_loss(x, y, "mse").item() == pytest.approx(0.25)
    assert L.reconstruction_loss(x, y, "l1").item() == pytest.approx(0.5)
    assert L.reconstruction_loss(x, y, "l2+l1").item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="recon_loss='l3'"):
        L.reconstruction_loss(x, y, "l3")
    with pytest.raises(ValueError, match="does not match"):
        L.reconstruction_loss(x, y[:1], "mse")


def test_kl_is_batch_mean_and_weighted():
    kl = torch.tensor([2.0, 4.0])
    assert L.kl_loss(kl).item() == pytest.approx(3.0)
    m = L.ReconstructionLoss(perceptual_weight=0.0, gan_weight=0.0, kl_weight=0.5)
    x = torch.rand(2, 3, 32, 32)
    total, metrics = m.generator_loss(x, x, kl, step=0)
    assert total.item() == pytest.approx(1.5)  # rec 0 + 0.5 * 3
    assert metrics["kl_loss"].item() == pytest.approx(3.0)


def test_every_term_can_be_off():
    m = L.ReconstructionLoss(perceptual_weight=0.0, kl_weight=0.0, gan_weight=0.0)
    assert m.perceptual is None and m.discriminator is None
    x = torch.rand(2, 3, 32, 32)
    total, metrics = m.generator_loss(x + 0.1, x, torch.tensor([5.0, 5.0]), step=10**6)
    assert set(metrics) == {"rec_loss", "psnr", "loss"}
    assert total.item() == pytest.approx(0.01, rel=1e-4)
    assert m.discriminator_loss(x, x, 10**6) is None


def test_hinge_losses():
    two = torch.full((4, 1, 2, 2), 2.0)
    zero = torch.zeros(4, 1, 2, 2)
    assert L.hinge_d_loss(two, -two).item() == 0.0  # both outside the margin
    assert L.hinge_d_loss(zero, zero).item() == pytest.approx(1.0)
    assert L.hinge_d_loss(-two, two).item() == pytest.approx(3.0)
    assert L.generator_gan_loss(two).item() == pytest.approx(-2.0)


def test_discriminator_matches_spec_table():
    d = L.NLayerDiscriminator()
    convs = [m for m in d if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0], c.bias is not None) for c in convs] == [
        (3, 64, 2, True), (64, 128, 2, False), (128, 256, 2, False), (256, 512, 1, False), (512, 1, 1, True)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d) == 3
    assert d(torch.rand(2, 3, 32, 32)).shape == (2, 1, 2, 2)
    assert L.discriminator_layers_for(32) == 3 and L.discriminator_layers_for(16) == 2
    small = L.NLayerDiscriminator(n_layers=L.discriminator_layers_for(16))
    assert small(torch.rand(2, 3, 16, 16)).shape[-1] >= 1


def test_discriminator_start_step():
    torch.manual_seed(0)
    m = L.ReconstructionLoss(perceptual_weight=0.0, gan_weight=0.1, gan_start_step=5)
    x = torch.rand(4, 3, 32, 32)
    r = (x + 0.05 * torch.randn_like(x)).requires_grad_(True)
    assert not m.gan_active(4) and m.gan_active(5)
    total4, met4 = m.generator_loss(r, x, None, step=4)
    assert "gan_loss" not in met4
    assert m.discriminator_loss(r, x, 4) is None
    total5, met5 = m.generator_loss(r, x, None, step=5)
    assert total5.item() == pytest.approx(met5["rec_loss"].item() + 0.1 * met5["gan_loss"].item(), rel=1e-5)
    # the generator pass does not leave gradients on D, and D stays trainable
    total5.backward()
    assert all(p.grad is None for p in m.discriminator.parameters())
    assert all(p.requires_grad for p in m.discriminator.parameters())
    d_loss, dm = m.discriminator_loss(r, x, 5)
    d_loss.backward()
    assert r.grad is not None  # from the generator pass only
    assert all(p.grad is not None for p in m.discriminator.parameters())
    assert {"d_loss", "logits_real", "logits_fake"} <= set(dm)


def test_from_config_effective_defaults():
    cfg = TokenizerConfig(perceptual_weight=0.0, gan_weight=0.1, gan_start_step=3)
    m = L.ReconstructionLoss.from_config(cfg)
    assert m.kl_weight == 1e-6 and m.gan_weight == 0.1 and m.gan_start_step == 3
    # the class defaults are the paper's effective values
    import inspect

    sig = inspect.signature(L.ReconstructionLoss.__init__).parameters
    assert sig["perceptual_weight"].default == 1.0 and sig["kl_weight"].default == 1e-6
    assert sig["gan_weight"].default == 0.1


def test_lpips_random_backbone_offline():
    p = L.PerceptualLoss("lpips-random")
    x = torch.rand(2, 3, 32, 32)
    assert p(x, x).item() == pytest.approx(0.0, abs=1e-6)
    y = x.clone().requires_grad_(True)
    loss = p(y.flip(-1), x)
    assert loss.item() > 0
    loss.backward()
    assert y.grad is not None and all(not q.requires_grad for q in p.parameters())


def test_lpips_missing_weights_says_how(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(L.MissingWeightsError, match="vgg16"):
        L.build_lpips("lpips-vgg")
    with pytest.raises(L.MissingWeightsError, match="not found at the path given"):
        L.build_lpips("lpips-vgg", vgg_path=tmp_path / "nope.pth")
    with pytest.raises(L.MissingWeightsError, match="convnext_small"):
        L.ConvNeXtLogits()


def test_lpips_loads_vgg_from_explicit_file(tmp_path):
    import torchvision

    vgg = torchvision.models.vgg16(weights=None)
    path = tmp_path / "vgg16.pth"
    torch.save(vgg.state_dict(), path)
    m = L.build_lpips("lpips-vgg", vgg_path=path)
    assert torch.equal(getattr(m.net.slice1, "0").weight, vgg.features[0].weight)
    assert torch.equal(getattr(m.net.slice5, "28").weight, vgg.features[28].weight)
