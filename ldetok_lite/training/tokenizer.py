"""Training a tokenizer: the l-DeTok recipe (official ``main_reconstruction.py``,
``utils/train_utils.py``, ``train_one_epoch_tokenizer``; notebook 03).

``train_tokenizer`` builds the model and its losses (``losses.ReconstructionLoss``), honours the
warm start and the decoder-only fine-tune of its config, and hands one step to the shared loop:
a (flipped) batch, the corrupted forward, the generator loss, and a discriminator step once the
GAN is on. Evaluation: PSNR/SSIM of the online and EMA models on held-out images, with a figure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from .. import checkpoint as ckpt
from ..config import DataConfig, TokenizerConfig, TrainConfig
from ..data import make_dataset
from ..device import autocast, pick_device, seed_everything
from ..losses import ReconstructionLoss
from ..metrics import psnr, ssim
from ..presets import warm_start_recipe
from ..teacher import get_teacher
from ..tokenizer import create_tokenizer
from .batches import ImageSource, flip_images, step_rng
from .loop import Job, TrainResult, check_config_types, fit, save_sample_figure

__all__ = ["build_tokenizer", "freeze_encoder", "train_tokenizer"]


def build_tokenizer(tok_cfg: TokenizerConfig, img_size: int, align_dim: int = 0) -> nn.Module:
    """``create_tokenizer(tok_cfg.model, ...)`` with the config's corruption settings (and the
    distillation projection to a teacher of width ``align_dim`` > 0)."""
    return create_tokenizer(tok_cfg.model, img_size=img_size, patch_size=tok_cfg.patch_size,
                            token_channels=tok_cfg.token_channels, gamma=tok_cfg.gamma,
                            mask_ratio=tok_cfg.mask_ratio, use_additive_noise=tok_cfg.use_additive_noise,
                            align_dim=align_dim)


def _align_dim_of(checkpoint: Path) -> int:
    """The distillation projection's width in a checkpoint directory (0: none)."""
    spec = ckpt.read_config(checkpoint).get("spec") or {}
    return int((spec.get("kwargs") or {}).get("align_dim", 0))


def freeze_encoder(model: nn.Module) -> list[str]:
    """Decoder-only fine-tuning (the official ``DeTok.freeze_everything_but_decoder``): ``requires_grad=False``
    for everything but the decoder (the model's ``DECODER_PREFIXES``)."""
    frozen = []
    model = ckpt.unwrap(model)
    keep = getattr(model, "DECODER_PREFIXES", ("decoder.",))
    for name, p in model.named_parameters():
        if not name.startswith(keep):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def train_tokenizer(tok_cfg: TokenizerConfig, train_cfg: TrainConfig, data_cfg: DataConfig, out_dir,
                    device: str = "auto", callback: Callable | None = None, init_from=None, progress: str = "auto",
                    log: Callable = print, rank: int = 0, world_size: int = 1, vgg_path=None,
                    convnext_path=None, init_weights: str = "model") -> TrainResult:
    """Train (or resume, or just reload when finished) an l-DeTok tokenizer into ``out_dir``.

    ``tok_cfg``: model name, γ, M, additive noise, loss weights, ``decoder_only``, semantic
    distillation (``distill_weight`` > 0: the teacher of ``distill_teacher``, ``teacher.get_teacher``).
    ``init_from``: a run or checkpoint directory to start from (online weights → model, EMA → EMA),
    used only when ``out_dir`` has no checkpoint yet; required for ``decoder_only``. Without it, a
    ``tok_cfg`` with a warm start (``presets.warm_start_recipe``) first trains its plain AE into
    ``out_dir/warm_start`` and continues from that.
    ``init_weights="ema"`` starts the online model from the EMA weights instead, so a decoder-only
    fine-tune keeps the EMA encoder, and the latents, of ``init_from`` exactly (the official
    fine-tune starts from the online weights).
    ``callback(step, metrics)`` after each step (return False to stop). ``progress``: auto | tqdm |
    log | none. Returns :class:`TrainResult` (``ema_model`` is the EMA tokenizer in eval mode).
    """
    check_config_types(tok_cfg=(tok_cfg, TokenizerConfig), train_cfg=(train_cfg, TrainConfig),
                 data_cfg=(data_cfg, DataConfig))
    if init_weights not in ("model", "ema"):
        raise ValueError(f"init_weights={init_weights!r} is not known; allowed: model, ema")
    latest = ckpt.latest_checkpoint(out_dir, log=lambda *_: None)
    fresh = latest is None
    if tok_cfg.decoder_only and init_from is None and fresh:
        raise ValueError("decoder_only=True needs init_from=<a pretrained tokenizer run or checkpoint directory>")
    dev = pick_device(device)
    base = warm_start_recipe(tok_cfg, train_cfg)
    if base is not None and init_from is None and fresh:
        log(f"warm start (tokenizer.warm_start=plain): training the plain AE into {Path(out_dir) / 'warm_start'}")
        init_from = train_tokenizer(*base, data_cfg, Path(out_dir) / "warm_start", device=device, progress=progress,
                                    log=log, rank=rank, world_size=world_size).checkpoint
    src = ckpt.resolve_checkpoint(init_from, log=log) if init_from is not None and fresh else None
    start = latest if not fresh else src  # the weights this run starts from, if any
    start_align = _align_dim_of(start) if start is not None else 0
    # semantic distillation: the frozen teacher, and the projection the tokenizer trains with it; a
    # decoder-only fine-tune keeps the projection of the run it starts from (frozen, unused)
    teacher, align_dim = None, start_align
    if tok_cfg.distill_weight > 0 and not tok_cfg.decoder_only:
        teacher = get_teacher(tok_cfg.distill_teacher, data_cfg, tok_cfg.distill_teacher_path,
                              tok_cfg.distill_teacher_steps, log=log).to(dev)
        align_dim = teacher.dim
    seed_everything(train_cfg.seed, rank)
    model = build_tokenizer(tok_cfg, data_cfg.img_size, align_dim)
    init_ema = None
    if src is not None:
        new = ("aligner.",) if align_dim and not start_align else ()  # distillation starts here
        ckpt.load_weights(model, src, which=init_weights, new_ok=new)
        if (src / ckpt.EMA_FILE).is_file():
            init_ema = ckpt.load_tensors(src / ckpt.EMA_FILE)
            if new:
                init_ema.update({k: v.clone() for k, v in model.state_dict().items() if k.startswith(new)})
        log(f"initialised from {src}")
    if tok_cfg.decoder_only:
        frozen = freeze_encoder(model)
        log(f"decoder-only fine-tuning: {len(frozen)} encoder tensors frozen")
    model.to(dev)
    if init_ema is not None:
        init_ema = {k: v.to(dev) for k, v in init_ema.items()}

    loss_mod = ReconstructionLoss.from_config(tok_cfg, img_size=data_cfg.img_size, vgg_path=vgg_path,
                                              convnext_path=convnext_path).to(dev)
    train_ds = make_dataset(data_cfg.replace(hflip=False), "train")
    source = ImageSource(train_ds, data_cfg.num_workers)
    val_x = None
    if data_cfg.num_val > 0:
        try:
            vs = ImageSource(make_dataset(data_cfg.replace(hflip=False), "val"))
            val_x = vs.get(torch.arange(min(len(vs), 256)))[0].to(dev)
        except ValueError as e:  # e.g. an image folder without a val split
            log(f"no validation images ({e}); evaluation is skipped")

    def batch(idx, step, micro):
        x, _ = source.get(idx)
        x = x.to(dev, non_blocking=True)
        if data_cfg.hflip:
            x = flip_images(x, step_rng(train_cfg.seed, step, micro), rank, world_size)
        return x

    def compute_loss(fwd, idx, step, micro):
        x = batch(idx, step, micro)
        if teacher is None:
            recon, kl = fwd(x)
            loss, metrics = loss_mod.generator_loss(recon, x, kl, step)
        else:  # + w · (L_mcos + L_mdms) of the clean latents against the teacher (distill.py)
            recon, kl, (vf, vf_parts) = fwd(x, align_to=teacher(x))
            loss, metrics = loss_mod.generator_loss(recon, x, kl, step)
            loss = loss + tok_cfg.distill_weight * vf
            metrics = {**metrics, **vf_parts, "loss": loss.detach()}
        aux = (recon.detach(), x) if loss_mod.gan_active(step) else None
        return loss, metrics, aux

    def aux_step(items, step):
        if not loss_mod.gan_active(step):
            return None
        total, metrics = 0.0, {}
        for recon, x in items:
            with autocast(dev, train_cfg.precision):
                d_loss, m = loss_mod.discriminator_loss(recon, x, step)
            total = total + d_loss / len(items)
            metrics = m
        return total, metrics

    def evaluate(live, ema_m, step):
        res = {}
        if val_x is None:
            return res
        with autocast(dev, train_cfg.precision):
            r_live = torch.cat([live.eval().reconstruct(c) for c in val_x.split(128)]).float()
            r_ema = torch.cat([ema_m.reconstruct(c) for c in val_x.split(128)]).float()
        res.update(psnr=psnr(r_live, val_x), ssim=ssim(r_live, val_x), psnr_ema=psnr(r_ema, val_x),
                   ssim_ema=ssim(r_ema, val_x))
        n = min(8, val_x.shape[0])
        save_sample_figure(Path(out_dir) / "samples" / f"recon_step{step:07d}.png",
                            [val_x[:n], r_live[:n], r_ema[:n]], ["input", "model", "EMA"])
        return res

    configs = {"tokenizer": tok_cfg, "tokenizer_train": train_cfg, "data": data_cfg}
    job = Job(model=model, train_cfg=train_cfg, out_dir=Path(out_dir), device=dev, num_items=len(source),
               compute_loss=compute_loss, configs=configs, evaluate=evaluate,
               aux_module=loss_mod.discriminator, aux_step=aux_step if loss_mod.discriminator is not None else None,
               init_ema_state=init_ema, callback=callback, progress=progress, log=log, rank=rank,
               world_size=world_size, data_source=source)
    return fit(job)
