"""Compare ldetok_lite with the official l-DeTok code: the same weights must give the same outputs.

    git clone https://github.com/Jiawei-Yang/DeTok ../DeTok      # once, beside this project
    pip install torchdiffeq diffusers scipy                       # what the official models import
    python scripts/check_official.py --official ../DeTok [--large]

For DeTok-BB and for MAR-B, ARDiff (random and raster order), DiT, SiT and LightningDiT at base
size, the official code builds the model, its weights are perturbed (the official init zeroes the
adaLN and output layers, which would hide mistakes) and saved the way its ``save_checkpoint`` does;
``ldetok_lite`` loads the file (``convert.load_official_checkpoint``,
``generators.load_official_checkpoint``) and both models run on the same inputs. It prints the
largest absolute difference of each comparison and exits non-zero above ``--tol`` (1e-4).
``--large`` adds MAR-L as released (diffloss d8 w1280; about 8 GB of memory). ``--mar-repo``
(a checkout of github.com/LTH14/mar) adds MAR-VAE: its ``models/vae.py`` builds kl16, the file is
saved as ``kl16.ckpt`` is, and ``convert_vae.load_mar_vae`` must give the same latents and images.
Runs on a CPU.
Not part of the test suite: it needs the official code, which this project does not ship.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from ldetok_lite.convert import load_official_checkpoint as load_official_tokenizer
from ldetok_lite.convert_vae import load_mar_vae
from ldetok_lite.generators import load_official_checkpoint, ours_to_official
from ldetok_lite.generators.blocks import RotaryEmbedding2D
from ldetok_lite.generators.mar import patchify
from ldetok_lite.layers import rope_table

C, NUM_CLASSES, B = 16, 10, 4


def perturb(model: torch.nn.Module, seed: int = 1, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def save_like_official(model: torch.nn.Module, path: Path) -> None:
    """``model`` and ``model_ema`` (named parameters, as ``SimpleEMAModel``) plus optimizer state;
    the EMA differs from the online weights, so loading the right entry matters."""
    ema = {k: v.detach().clone() for k, v in model.named_parameters()}
    online = {k: v * 2 for k, v in model.state_dict().items()}
    torch.save({"model": online, "model_ema": ema, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "epoch": 7}, path)


class Report:
    def __init__(self, tol: float):
        self.tol, self.rows = tol, []

    def __call__(self, model: str, what: str, official: torch.Tensor, ours: torch.Tensor) -> None:
        err = (official.float() - ours.float()).abs().max().item()
        self.rows.append(err)
        print(f"{model:18s} {what:36s} max|diff| {err:.2e}   max|out| {official.abs().max().item():.2f}", flush=True)


def check_tables(report: Report, official) -> None:
    """The two RoPE tables, element for element."""
    for head_dim, grid in ((64, 16), (72, 16), (32, 4)):
        report("DeTok RoPE", f"head {head_dim}, grid {grid}", official.detok.get_rope_tensor(head_dim, grid, grid),
               rope_table(head_dim, grid)[0])
        ref = official.layers.VisionRotaryEmbeddingFast(head_dim // 2, grid)
        ours = RotaryEmbedding2D(head_dim, grid)
        report("LightningDiT RoPE", f"head {head_dim}, grid {grid}",
               torch.cat([ref.freqs_cos, ref.freqs_sin]), torch.cat([ours.freqs_cos, ours.freqs_sin]))


def check_tokenizer(report: Report, official, tmp: Path) -> None:
    off = official.detok.detok_BB(img_size=256, patch_size=16, token_channels=16, gamma=3.0, mask_ratio=0.7)
    perturb(off)
    save_like_official(off, tmp / "detok_BB.pth")
    ours = load_official_tokenizer(tmp / "detok_BB.pth", "detok_BB")
    off.eval()
    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():  # the official model takes images in [-1, 1], ours in [0, 1]
        report("detok_BB", "tokenize (posterior mean)", off.tokenize(images * 2 - 1), ours.tokenize(images))
        report("detok_BB", "reconstruct", off.reconstruct(images * 2 - 1), ours.reconstruct(images))


def check_mar_vae(report: Report, mar_repo: Path, tmp: Path) -> None:
    """MAR's own KL-16 VAE (``models/vae.py``) against ``load_mar_vae`` of the same weights."""
    sys.path.insert(0, str(mar_repo / "models"))
    import vae as mar_vae  # noqa: E402  (MAR's module, found through --mar-repo)

    off = mar_vae.AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4)).eval()
    perturb(off, scale=0.02)
    torch.save({"model": off.state_dict()}, tmp / "kl16.ckpt")
    ours = load_mar_vae(tmp / "kl16.ckpt")
    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        post = off.encode(images * 2 - 1)
        z, _, ours_post = ours.encode(images)
        report("MAR-VAE kl16", "posterior mean", post.mean, z.transpose(1, 2).unflatten(2, (16, 16)))
        report("MAR-VAE kl16", "posterior log-variance", post.logvar,
               ours_post.logvar.transpose(1, 2).unflatten(2, (16, 16)))
        report("MAR-VAE kl16", "decode", off.decode(post.mean) * 0.5 + 0.5, ours.decode(z))


def check_transformers(report: Report, official, tmp: Path, x, y, null) -> None:
    for family, t in (("DiT", torch.tensor([0.0, 250.0, 500.0, 999.0])), ("SiT", torch.tensor([0.0, 0.3, 0.7, 1.0])),
                      ("LightningDiT", torch.tensor([0.0, 0.3, 0.7, 1.0]))):
        name = f"{family}_base"
        off = getattr(official.models, f"{family}_models")[name](
            img_size=16 * x.shape[-1], tokenizer_patch_size=16, token_channels=C, num_classes=NUM_CLASSES)
        perturb(off)
        save_like_official(off, tmp / f"{family}.pth")
        ours = load_official_checkpoint(tmp / f"{family}.pth", name)
        off.eval()
        extra = {"interval_start": 0.0} if family == "LightningDiT" else {}
        with torch.no_grad():
            report(name, "net(x, t, y)", off.net(x, t, y), ours.net(x, t, y))
            report(name, "net(x, t, null class)", off.net(x, t, null), ours.net(x, t, null))
            guided = off.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), 3.0)[:B, :C]
            report(name, "guidance 3.0", guided, ours.guided_net(x, t, y, cfg_scale=3.0, **extra)[:, :C])
        back = ours_to_official(ours)
        ref = torch.load(tmp / f"{family}.pth", weights_only=True)["model_ema"]
        if back.keys() != ref.keys():
            raise SystemExit(f"{name}: ours_to_official keys differ: {sorted(set(back) ^ set(ref))[:5]}")
        report(name, "ours_to_official == the file", torch.stack([(back[k] - ref[k]).abs().max() for k in ref]),
               torch.zeros(1))


def check_mar(report: Report, official, tmp: Path, x, y, size: str, head: tuple[int, int]) -> None:
    name = f"MAR_{size}"
    off = official.models.MAR_models[name](img_size=16 * x.shape[-1], tokenizer_patch_size=16, token_channels=C,
                                           num_classes=NUM_CLASSES, no_dropout_in_mlp=True, diffloss_d=head[0],
                                           diffloss_w=head[1], buffer_size=64)
    perturb(off, scale=0.02)
    save_like_official(off, tmp / f"{name}.pth")
    ours = load_official_checkpoint(tmp / f"{name}.pth", name)
    off.eval()
    b, seq_len = x.shape[0], x.shape[-1] ** 2
    orders = torch.argsort(torch.rand(b, seq_len, generator=torch.Generator().manual_seed(3)), dim=1)
    for n_masked in (seq_len, seq_len * 3 // 4, seq_len // 6):
        mask = torch.zeros(b, seq_len, dtype=torch.bool).scatter_(1, orders[:, :n_masked], True)
        for tag, cls_off, labels in (("labels", off.class_emb(y), y),
                                     ("null class", off.fake_latent.expand(b, -1), torch.full_like(y, NUM_CLASSES))):
            with torch.no_grad():
                z_off = off.forward_mae_decoder(off.forward_mae_encoder(off.patchify(x), mask.float(), cls_off),
                                                mask.float())
                z_ours = ours.conditions(patchify(x), mask, ours.y_embedder.embedding_table(labels))
            report(name, f"z, {n_masked}/{seq_len} masked, {tag}", z_off, z_ours)
    check_head(report, name, off, ours)


def check_head(report: Report, name, off, ours) -> None:
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, ours.hidden_size, generator=g)
    xt = torch.randn(6, C, generator=g)
    t = torch.tensor([0, 10, 100, 500, 900, 999])
    with torch.no_grad():
        report(name, "diffloss.net(x_t, t, z)", off.diffloss.net(xt, t, z), ours.diffloss.net(xt, t, z))


def check_ardiff(report: Report, official, tmp: Path, x, y) -> None:
    seq_len = x.shape[-1] ** 2
    for order, name in (("random", "RandomAR_base"), ("raster", "RasterAR_base")):
        off = official.models.ARDiff_models["ARDiff_base"](img_size=16 * x.shape[-1], tokenizer_patch_size=16,
                                                           token_channels=C, num_classes=NUM_CLASSES, order=order)
        perturb(off)
        save_like_official(off, tmp / f"ARDiff_{order}.pth")
        ours = load_official_checkpoint(tmp / f"ARDiff_{order}.pth", name)
        off.eval()
        orders = (torch.argsort(torch.rand(B, seq_len, generator=torch.Generator().manual_seed(3)), dim=1)
                  if order == "random" else torch.arange(seq_len).expand(B, seq_len))
        for tag, cls_off, labels in (("labels", off.class_emb(y), y),
                                     ("null class", off.fake_latent.expand(B, -1), torch.full_like(y, NUM_CLASSES))):
            with torch.no_grad():
                tokens = off.shuffle(off.patchify(x), orders)
                z_off = off.forward_transformer(tokens[:, :-1], cls_off.unsqueeze(1), orders=orders)
                z_ours = ours.conditions(patchify(x), orders, ours.y_embedder.embedding_table(labels))
            report(name, f"z (teacher forcing), {tag}", z_off, z_ours)
        check_head(report, name, off, ours)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="a checkout of github.com/Jiawei-Yang/DeTok")
    parser.add_argument("--large", action="store_true", help="also MAR-L as released (about 8 GB of memory)")
    parser.add_argument("--mar-repo", help="a checkout of github.com/LTH14/mar: also check MAR-VAE (kl16)")
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    if args.mar_repo and not (Path(args.mar_repo) / "models" / "vae.py").is_file():
        parser.error(f"--mar-repo {args.mar_repo!r} is not a checkout of the MAR code (no models/vae.py)")
    root = Path(args.official).resolve()
    if not (root / "models" / "detok.py").is_file():
        parser.error(f"--official {str(root)!r} is not a checkout of the official code (no models/detok.py)")
    sys.path.insert(0, str(root))
    torch.Tensor.cuda = lambda self, *a, **k: self  # the official models call .cuda() in their constructors
    import models  # noqa: E402  (the official package, found through --official)
    import models.detok
    import models.layers

    class Official:
        pass

    official = Official()
    official.models, official.detok, official.layers = models, models.detok, models.layers
    torch.manual_seed(0)
    report = Report(args.tol)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(B, C, 8, 8, generator=g)  # an 8×8 latent grid (128 px images)
    y = torch.tensor([1, 3, 5, NUM_CLASSES - 1])
    null = torch.full_like(y, NUM_CLASSES)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        check_tables(report, official)
        check_tokenizer(report, official, tmp)
        check_transformers(report, official, tmp, x, y, null)
        check_mar(report, official, tmp, x, y, "base", (6, 1024))
        check_ardiff(report, official, tmp, x, y)
        if args.mar_repo:
            check_mar_vae(report, Path(args.mar_repo).resolve(), tmp)
        if args.large:
            check_mar(report, official, tmp, torch.randn(2, C, 16, 16, generator=g), y[:2], "large", (8, 1280))
    worst = max(report.rows)
    ok = worst <= args.tol
    print(f"\n{len(report.rows)} comparisons, largest difference {worst:.2e}: {'PASS' if ok else 'FAIL'} "
          f"(tolerance {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
