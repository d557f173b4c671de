"""Semantic distillation end to end: the teachers, the aligner on both tokenizers, the variants
and their training (warm start, resume, decoder fine-tune, reloading)."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from ldetok_lite import presets as P
from ldetok_lite.analysis import linear_probe, pca_rgb
from ldetok_lite.assets import MissingWeightsError
from ldetok_lite.checkpoint import CheckpointError, load_weights
from ldetok_lite.config import DataConfig
from ldetok_lite.distill import vf_alignment_loss
from ldetok_lite.experiments.cache import finetune_decoder, get_tokenizer
from ldetok_lite.pretrained import from_pretrained
from ldetok_lite.teacher import SHAPES_TEACHER, TeacherSettings, get_teacher, load_timm_teacher, train_shapes_teacher
from ldetok_lite.tokenizer import create_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = DataConfig(num_train=128, num_val=32)
QUICK = TeacherSettings(steps=3, batch_size=16)


def test_shapes_teacher_trains_caches_and_reloads(tmp_path):
    teacher = train_shapes_teacher(DATA, QUICK, log=None)
    x = torch.rand(2, 3, 32, 32)
    assert teacher(x).shape == (2, 96, 8, 8) and teacher.dim == 96
    assert 0.0 <= teacher.info["val_accuracy"] <= 1.0
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.net.training  # frozen: stays in eval mode
    with pytest.raises(MissingWeightsError, match="train=True"):
        get_teacher(SHAPES_TEACHER, DATA, steps=3, cache_dir=tmp_path, train=False)
    first = get_teacher(SHAPES_TEACHER, DATA, steps=3, cache_dir=tmp_path, log=None)
    again = get_teacher(SHAPES_TEACHER, DATA, steps=3, cache_dir=tmp_path, train=False)
    torch.testing.assert_close(first(x), again(x), rtol=0, atol=0)
    other = get_teacher(SHAPES_TEACHER, DATA.replace(seed=1), steps=3, cache_dir=tmp_path, log=None)
    assert len(list((tmp_path / "teacher").iterdir())) == 2 and not torch.equal(first(x), other(x))


def test_timm_teacher_from_a_weights_file(tmp_path):
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    teacher = load_timm_teacher("vit_tiny_patch16_224", path)
    assert teacher.input_size == 224 and teacher.dim == 192
    f = teacher(torch.rand(1, 3, 32, 32))  # resized to 224: a 14×14 grid of patch tokens, no class token
    assert f.shape == (1, 192, 14, 14)
    with torch.no_grad():
        x = torch.nn.functional.interpolate(torch.rand(1, 3, 224, 224), size=224)
        ref = net.forward_features((x - teacher.mean) / teacher.std)[:, 1:]
    torch.testing.assert_close(teacher(x).flatten(2).transpose(1, 2), ref)
    with pytest.raises(MissingWeightsError, match="distill_teacher_path"):
        load_timm_teacher("vit_tiny_patch16_224", "")
    with pytest.raises(MissingWeightsError, match="do not exist"):
        load_timm_teacher("vit_tiny_patch16_224", tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="not a timm model"):
        load_timm_teacher("dinov9_giant", path)
    with pytest.raises(ValueError, match="does not hold the weights"):
        load_timm_teacher("vit_small_patch16_224", path)
    with pytest.raises(ValueError, match="timm model"):  # ImageNet needs a real teacher
        get_teacher(SHAPES_TEACHER, DATA.replace(dataset="imagefolder", data_dir=str(tmp_path)))


@pytest.mark.parametrize("name", ["detok_tiny", "cnn_tiny"])
def test_alignment_uses_the_kept_positions(name):
    torch.manual_seed(0)
    tok = create_tokenizer(name, align_dim=6, gamma=3.0, mask_ratio=0.5).train()
    assert tok.spec["kwargs"]["align_dim"] == 6 and "aligner.proj.weight" in tok.state_dict()
    x, feats = torch.rand(2, 3, 32, 32), torch.randn(2, 6, 8, 8)
    recon, kl, (loss, parts) = tok(x, rng=torch.Generator().manual_seed(1), align_to=feats)
    assert recon.shape == x.shape and kl.shape == (2,) and set(parts) == {"vf_mcos", "vf_mdms"}
    loss.backward()
    assert tok.aligner.proj.weight.grad is not None
    # by hand: the encoder's kept tokens against the teacher's tokens at the same grid positions
    z, ids_restore, post = tok.encode(x, 0.5, mask_noise=torch.rand(2, 64, generator=torch.Generator().manual_seed(2)))
    keep = post.mean.shape[1]
    if keep < 64:
        ids_keep = torch.argsort(ids_restore, dim=1)[:, :keep]
        teacher = torch.gather(feats.flatten(2).transpose(1, 2), 1, ids_keep[..., None].expand(-1, -1, 6))
    else:  # the CNN encodes every position, then drops some for the decoder
        teacher = feats.flatten(2).transpose(1, 2)
    got, _ = tok.align(post.mean, ids_restore, feats)
    want, _ = vf_alignment_loss(tok.aligner.proj(post.mean), teacher)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="align_dim"):
        create_tokenizer(name)(x, align_to=feats)
    with pytest.raises(ValueError, match="align_dim"):
        create_tokenizer(name, align_dim=-1)


def test_distill_variants_and_recipes():
    d = P.variant_settings("distill")
    assert d == {"gamma": 0.0, "mask_ratio": 0.0, "use_additive_noise": False, "distill_weight": P.DISTILL_WEIGHT}
    assert P.variant_settings("cnn-ldetok-distill")["gamma"] == 3.0
    tok, train, _ = P.tokenizer_recipe("tiny", "ldetok-distill", seed=1)
    assert not tok.is_plain and tok.as_plain().distill_weight == 0
    assert P.warm_start_recipe(tok, train) == P.tokenizer_recipe("tiny", "plain", 1)[:2]  # shares the plain AE
    ft_tok, _ = P.decoder_finetune(tok, train)
    assert ft_tok.distill_weight == 0 and ft_tok.decoder_only
    assert P.variant_name(0, 0) == "plain"  # never a distilled variant
    with pytest.raises(ValueError, match="distill_weight"):
        tok.replace(distill_weight=-1.0)


def test_distilled_tokenizers_train_resume_and_reload(tmp_path, capsys):
    runs = tmp_path / "runs"
    tok = get_tokenizer("smoke", "ldetok-distill", runs, progress="none", log=lambda *_: None)
    rows = (runs / "tokenizers" / "smoke-ldetok-distill-s0" / "metrics.jsonl").read_text()
    assert '"vf_mcos"' in rows and '"vf_mdms"' in rows
    assert (runs / "tokenizers" / "smoke-plain-s0").is_dir()  # continued from the shared plain AE
    plain = get_tokenizer("smoke", "plain", runs, progress="none", log=lambda *_: None)
    moved = [k for k, v in tok.state_dict().items() if k.startswith("decoder.") and
             not torch.equal(v, plain.state_dict()[k])]
    assert moved, "the distilled tokenizer did not train on from the plain AE"
    again = from_pretrained(tok.run_dir)  # the spec rebuilds the projection
    assert again.aligner.proj.weight.shape == (96, 8)
    ft = finetune_decoder("smoke", "ldetok-distill", tok, steps=2, progress="none", log=lambda *_: None)
    torch.testing.assert_close(ft.aligner.proj.weight, tok.aligner.proj.weight)  # frozen with the encoder
    # only the projection may be new; a checkpoint that lacks anything else is refused
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(create_tokenizer("detok_tiny", align_dim=96, token_channels=4), tok.run_dir, new_ok=("aligner.",))


def test_linear_probe_reads_linear_class_information():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    centres = torch.randn(3, 10, generator=g) * 4
    feats = centres[labels] + torch.randn(300, 10, generator=g)
    assert linear_probe(feats[:200], labels[:200], feats[200:], labels[200:]) > 0.95
    noise = torch.randn(300, 10, generator=g)  # no class information: about chance
    assert linear_probe(noise[:200], labels[:200], noise[200:], labels[200:]) < 0.6
    with pytest.raises(ValueError, match="features"):
        linear_probe(feats[:10], labels[:10], feats[:10, :5], labels[:10])


def test_pca_rgb_colours_the_main_directions():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 8, 4, 4, generator=g) * 0.01
    maps[:, 5] += torch.linspace(-1, 1, 16).reshape(4, 4)  # one dominant direction: a ramp in channel 5
    rgb = pca_rgb(maps)
    assert rgb.shape == (3, 3, 4, 4) and float(rgb.min()) == 0.0 and float(rgb.max()) == 1.0
    first = rgb[:, 0].flatten()
    ramp = torch.linspace(-1, 1, 16).repeat(3)
    assert abs(float(torch.corrcoef(torch.stack([first, ramp]))[0, 1])) > 0.99
    with pytest.raises(ValueError, match="maps"):
        pca_rgb(torch.randn(2, 2, 4, 4))
