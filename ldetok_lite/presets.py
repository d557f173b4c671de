"""Every recipe in one place: the named presets, the tokenizer variants, the decoder fine-tune,
the paper's sweeps and the comparison plans.

Presets (README, "Presets"):

- ``smoke``: the test suite; seconds per notebook on a CPU.
- ``tiny``: a 2-core laptop with no GPU and no internet; minutes per notebook.
- ``tiny-long``: tiny's data and models trained longer (about 20 minutes per model on 2 cores):
  the recipe of the reference models shipped with the kit.
- ``small``: one GPU, about an hour (ImageNet at 128 px or a subset).
- ``full``: the paper's ImageNet-256 setting (official README; ``main_reconstruction.py``,
  ``main_diffusion.py``).

A recipe is a function of a preset: :func:`tokenizer_recipe` (a variant of the paper's
ablations at a seed), :func:`warm_start_recipe` (the plain AE it continues from, if any),
:func:`decoder_finetune` (the paper's second tokenizer stage), :func:`compare_plan`,
:func:`eval_protocol` (how a generator is measured: guidance grid, sampling steps, reference),
:func:`reference_recipe` (the reference models shipped in ``reference/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    GeneratorConfig,
    Preset,
    TokenizerConfig,
    TrainConfig,
    suggest,
)

__all__ = [
    "PRESET_NAMES", "load_preset", "TOKENIZER_VARIANTS", "TOKENIZER_ORDER", "DISTILL_WEIGHT", "CONV_PREFIX",
    "CONV_COUNTERPART",
    "variant_settings", "variant_name",
    "tokenizer_recipe", "warm_start_recipe", "decoder_finetune", "GENERATOR_FAMILIES", "SWEEPS", "SWEEP_FAMILIES",
    "ComparePlan", "PLAN_NAMES", "compare_plan", "OFFICIAL_CFG_GRIDS", "OUR_CFG_GRIDS", "OFFICIAL_STEPS",
    "EvalProtocol", "cfg_grid", "eval_protocol", "ReferenceRecipe", "REFERENCE_RECIPES", "REFERENCE_NAMES",
    "REFERENCE_CFG_SCALES", "reference_recipe",
]

# ============================================================================================
# The named presets
# ============================================================================================


def _smoke() -> Preset:
    return Preset(
        name="smoke",
        data=DataConfig(dataset="shapes-large", num_train=256, num_val=64),
        tokenizer=TokenizerConfig(warm_start="plain", distill_teacher_steps=20),
        tokenizer_train=TrainConfig(steps=6, batch_size=16, blr=1e-3, warmup_frac=0.1, log_every=2),
        generator=GeneratorConfig(num_sampling_steps=4),
        generator_train=TrainConfig(
            steps=6, batch_size=16, lr=2e-4, lr_schedule="constant", warmup_frac=0.0,
            weight_decay=0.0, grad_clip=0.0, ema_decay=0.9999, log_every=2,
        ),
        eval=EvalConfig(num_images=64, batch_size=32),
    )


def _tiny() -> Preset:
    return Preset(
        name="tiny",
        # the shapes drawn large (radius 0.55-0.80 of the half-width): at 2000 generator steps, 36-53 %
        # of the samples show their class at cfg 1, against 21 % on `shapes` (README, Troubleshooting)
        data=DataConfig(dataset="shapes-large", num_train=20000, num_val=1000),
        # l-DeTok from scratch needs >= 10x this budget; continuing from the plain AE gives
        # recognisable reconstructions in the same 1000 steps (notebook 10 tells the story).
        tokenizer=TokenizerConfig(warm_start="plain"),
        # 32k images per tokenizer. At this compute, 1000 steps of 32 beat 500 of 64 (l-DeTok 25.7
        # vs 24.5 dB) and lr 2e-3 beats 1e-3 and 4e-3.
        tokenizer_train=TrainConfig(steps=1000, batch_size=32, blr=1.6e-2, warmup_frac=0.05, ema_decay=0.98,
                                    log_every=50),
        generator=GeneratorConfig(),
        # 2000 steps of 64: 2 to 3 minutes per model on 2 cores (on `shapes`, 3000 steps of 64 gave
        # clearer samples than 1500 of 128, and as clear as 3000 of 128)
        generator_train=TrainConfig(
            steps=2000, batch_size=64, lr=1e-3, lr_schedule="constant", warmup_frac=0.0,
            weight_decay=0.0, grad_clip=0.0, ema_decay=0.995, log_every=200,
        ),
        eval=EvalConfig(num_images=1000, batch_size=200),
    )


def _tiny_long() -> Preset:
    # the reference models: tiny's data and models, 5x the tokenizer and 10x the generator steps,
    # with a cosine decay of the learning rate (about an hour per generator on 2 cores; README,
    # "Reference models")
    p = _tiny()
    return p.replace(
        name="tiny-long",
        tokenizer_train=p.tokenizer_train.replace(steps=5000, warmup_frac=0.02, ema_decay=0.995, log_every=250,
                                                  ckpt_every=2500),
        generator_train=p.generator_train.replace(steps=20000, lr_schedule="cosine", warmup_frac=0.02, ema_decay=0.999,
                                                  log_every=500, ckpt_every=5000),
    )


def _small() -> Preset:
    return Preset(
        name="small",
        data=DataConfig(dataset="imagefolder", img_size=128, data_dir="data/imagenet", num_workers=8),
        tokenizer=TokenizerConfig(model="detok_SS", patch_size=8, token_channels=16, perceptual_weight=1.0,
                                  gan_weight=0.1, gan_start_step=15000),
        tokenizer_train=TrainConfig(steps=30000, batch_size=128, blr=1e-4, log_every=100, ckpt_every=2000,
                                    eval_every=5000),
        generator=GeneratorConfig(size="base", num_sampling_steps=64, cache_latents=False),  # ImageNet: on the fly
        generator_train=TrainConfig(
            steps=30000, batch_size=256, lr=2e-4, lr_schedule="constant", warmup_frac=0.0,
            weight_decay=0.0, grad_clip=0.0, ema_decay=0.9999, log_every=100, ckpt_every=2000,
        ),
        eval=EvalConfig(num_images=10000, batch_size=250, feature_net="inception", cfg_scales=()),
    )


def _full() -> Preset:
    # the official README recipe: detok_BB at 256², global batch 1024, 200 epochs (~1251 steps
    # each), γ = 3, M = 0.7, GAN from epoch 100, warmup 25 %; generators: the aligned schedule,
    # a constant lr of 2e-4 (utils/train_utils.py, --use_aligned_schedule)
    steps_per_epoch = 1251
    return Preset(
        name="full",
        data=DataConfig(dataset="imagefolder", img_size=256, data_dir="data/imagenet", num_workers=10),
        tokenizer=TokenizerConfig(model="detok_BB", patch_size=16, token_channels=16, perceptual_weight=1.0,
                                  perceptual_net="lpips-convnext", gan_weight=0.1,
                                  gan_start_step=100 * steps_per_epoch),
        tokenizer_train=TrainConfig(steps=200 * steps_per_epoch, batch_size=1024, blr=1e-4, ema_decay=0.999,
                                    log_every=100, ckpt_every=steps_per_epoch, eval_every=10 * steps_per_epoch),
        generator=GeneratorConfig(size="base", num_sampling_steps=0, cache_latents=False, latent_stats="mean"),
        generator_train=TrainConfig(
            steps=100 * steps_per_epoch, batch_size=1024, lr=2e-4, lr_schedule="constant", warmup_frac=0.0,
            weight_decay=0.0, grad_clip=0.0, ema_decay=0.9999, log_every=100, ckpt_every=steps_per_epoch,
            eval_every=40 * steps_per_epoch,
        ),
        # the official protocol: the family's guidance grid (eval_protocol), truncation to uint8, ADM's statistics
        eval=EvalConfig(num_images=50000, batch_size=250, feature_net="inception", cfg_scales=(), quantize="truncate",
                        reference="adm"),
    )


_PRESETS = {"smoke": _smoke, "tiny": _tiny, "tiny-long": _tiny_long, "small": _small, "full": _full}
PRESET_NAMES = tuple(_PRESETS)


def load_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name raises ``ConfigError`` listing the choices."""
    if not isinstance(name, str) or name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}{suggest(str(name), _PRESETS)}; allowed: {', '.join(PRESET_NAMES)}")
    return _PRESETS[name]()


def _preset(preset: Preset | str) -> Preset:
    return preset if isinstance(preset, Preset) else load_preset(preset)


def _check_seed(seed) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an int >= 0")
    return seed


# ============================================================================================
# Tokenizer variants (the paper's ablations) and their recipes
# ============================================================================================

#: the weight of the alignment loss in the distilled variants. VA-VAE rescales its loss at every step
#: so that its gradient is a tenth (``vf_weight`` 0.1) of the reconstruction's; the kit keeps a fixed
#: weight with that ratio, measured on the latents of the tiny plain AE (gradient norms 2.6e-5 and
#: 5e-3 to 1.2e-2 after fitting the projection: 0.1 × 0.002-0.005)
DISTILL_WEIGHT = 5e-4

#: the named variants: (γ, M, additive noise, distillation weight). Others are written ``g{γ}-m{M}[-add]``.
TOKENIZER_VARIANTS: dict[str, dict] = {
    "plain": {"gamma": 0.0, "mask_ratio": 0.0, "use_additive_noise": False, "distill_weight": 0.0},
    "mask_only": {"gamma": 0.0, "mask_ratio": 0.7, "use_additive_noise": False, "distill_weight": 0.0},
    "noise_only": {"gamma": 3.0, "mask_ratio": 0.0, "use_additive_noise": False, "distill_weight": 0.0},
    "ldetok": {"gamma": 3.0, "mask_ratio": 0.7, "use_additive_noise": False, "distill_weight": 0.0},
    "additive": {"gamma": 3.0, "mask_ratio": 0.7, "use_additive_noise": True, "distill_weight": 0.0},
    # semantic distillation (VA-VAE style), alone and on top of l-DeTok (the paper's "l-DeTok + Distill")
    "distill": {"gamma": 0.0, "mask_ratio": 0.0, "use_additive_noise": False, "distill_weight": DISTILL_WEIGHT},
    "ldetok-distill": {"gamma": 3.0, "mask_ratio": 0.7, "use_additive_noise": False,
                       "distill_weight": DISTILL_WEIGHT},
}
#: the paper's ablation variants: ``bench compare``'s default list
TOKENIZER_ORDER = ("plain", "mask_only", "noise_only", "ldetok", "additive")

#: ``cnn-<variant>``: the same corruption on the convolutional tokenizer (``conv_tokenizer``; the
#: paper's architecture-agnostic claim) with the latent grid of the preset's ViT: ViT → its CNN counterpart
CONV_PREFIX = "cnn-"
CONV_COUNTERPART = {"detok_tiny": "cnn_tiny"}
CONV_DEFAULT = "mar_vae"  # the 256 px ViTs (16×16×16 latents) have MAR-VAE's grid
_CUSTOM = re.compile(r"^g([0-9.]+)-m([0-9.]+)(-add)?$")


def variant_name(gamma: float, mask_ratio: float, use_additive_noise: bool = False) -> str:
    """The name of a variant with these settings: a named one keeps its name (``(3, 0.7, False)``
    → ``"ldetok"``), others are ``g{γ}-m{M}`` (+ ``-add``)."""
    gamma, mask_ratio = float(gamma), float(mask_ratio)
    if not gamma >= 0:
        raise ValueError(f"gamma={gamma} is out of range; allowed >= 0")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio} is out of range; allowed [0, 1)")
    for name in TOKENIZER_ORDER:
        v = TOKENIZER_VARIANTS[name]
        if (v["gamma"], v["mask_ratio"], v["use_additive_noise"]) == (gamma, mask_ratio, bool(use_additive_noise)):
            return name
    return f"g{gamma:g}-m{mask_ratio:g}" + ("-add" if use_additive_noise else "")


def variant_settings(name: str) -> dict:
    """``{"gamma", "mask_ratio", "use_additive_noise", "distill_weight"}`` of a named or ``g{γ}-m{M}[-add]`` variant;
    ``cnn-<variant>`` is the same corruption on the convolutional tokenizer (:func:`tokenizer_recipe`)."""
    if str(name).startswith(CONV_PREFIX):
        return variant_settings(str(name)[len(CONV_PREFIX):])
    if name in TOKENIZER_VARIANTS:
        return dict(TOKENIZER_VARIANTS[name])
    m = _CUSTOM.match(str(name))
    if m is None:
        raise ValueError(f"tokenizer variant {name!r} is not known{suggest(str(name), TOKENIZER_VARIANTS)}; allowed: "
                         f"{', '.join(TOKENIZER_VARIANTS)} or 'g<gamma>-m<mask_ratio>[-add]' (e.g. 'g2-m0.7')")
    gamma, mask = float(m.group(1)), float(m.group(2))
    variant_name(gamma, mask)  # range checks
    return {"gamma": gamma, "mask_ratio": mask, "use_additive_noise": bool(m.group(3)), "distill_weight": 0.0}


def warm_start_recipe(tok: TokenizerConfig, train: TrainConfig) -> tuple[TokenizerConfig, TrainConfig] | None:
    """The plain AE that ``tok`` continues from (its config and training), or None when it starts
    from scratch. With ``warm_start="plain"`` and no own steps or seed, a plain tokenizer would
    continue from itself: it starts from scratch (it *is* the preset's plain AE); with a shared
    base (``warm_start_steps`` or ``warm_start_seed`` set) every variant continues from it."""
    if tok.warm_start != "plain":
        return None
    if tok.is_plain and tok.warm_start_steps == 0 and tok.warm_start_seed < 0:
        return None
    base_train = train.replace(steps=tok.warm_start_steps or train.steps,
                               seed=train.seed if tok.warm_start_seed < 0 else tok.warm_start_seed)
    return tok.as_plain(), base_train


def tokenizer_recipe(preset: Preset | str, variant: str, seed: int = 0
                     ) -> tuple[TokenizerConfig, TrainConfig, DataConfig]:
    """(tokenizer, training, data) configs of ``variant`` at ``preset`` with ``seed``. A variant
    that is its own warm start (the preset's plain AE) gets ``warm_start="none"``."""
    p = _preset(preset)
    tok = p.tokenizer.replace(**variant_settings(variant))
    if str(variant).startswith(CONV_PREFIX):
        tok = tok.replace(model=CONV_COUNTERPART.get(tok.model, CONV_DEFAULT))
    train = p.tokenizer_train.replace(seed=_check_seed(seed))
    if tok.warm_start == "plain" and warm_start_recipe(tok, train) is None:
        tok = tok.replace(warm_start="none", warm_start_steps=0, warm_start_seed=-1)
    return tok, train, p.data


def decoder_finetune(tok: TokenizerConfig, train: TrainConfig, steps: int | None = None
                     ) -> tuple[TokenizerConfig, TrainConfig]:
    """The paper's second tokenizer stage (official README, ``--train_decoder_only``;
    ``DeTok.freeze_everything_but_decoder``): the decoder alone, clean latents (γ = 0, M = 0), half
    the learning rate, 5 % warm-up, a tenth of the perceptual weight, the GAN from the first step,
    and ``steps`` steps (default: half of ``train``'s, as the paper's 100 of 200 epochs). The encoder is
    frozen, so a distilled tokenizer's alignment loss is off too."""
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"decoder fine-tune steps={steps!r} must be an int >= 1")
    ft_tok = tok.replace(decoder_only=True, gamma=0.0, mask_ratio=0.0, use_additive_noise=False, warm_start="none",
                         warm_start_steps=0, warm_start_seed=-1, perceptual_weight=tok.perceptual_weight * 0.1,
                         gan_start_step=0, distill_weight=0.0)
    ft_train = train.replace(steps=steps or max(1, train.steps // 2), blr=train.blr / 2, lr=train.lr / 2,
                             warmup_frac=0.05)
    return ft_tok, ft_train


# ============================================================================================
# Generators, the paper's sweeps and the comparison plans
# ============================================================================================

GENERATOR_FAMILIES = ("DiT", "SiT", "LightningDiT", "MAR", "RandomAR", "RasterAR")

#: the paper's sweeps (ablation tables): swept value -> (γ, M, additive noise)
SWEEPS = {
    "gamma": [(g, (float(g), 0.7, False)) for g in (0, 1, 2, 3, 4)],
    "mask_ratio": [(m, (3.0, m, False)) for m in (0.0, 0.5, 0.7, 0.9)],
    "noise_type": [("interpolative", (3.0, 0.7, False)), ("additive", (3.0, 0.7, True))],
}
SWEEP_FAMILIES = ("MAR", "SiT")


@dataclass(frozen=True)
class ComparePlan:
    """What the comparison trains (``preset``) and how it measures.

    ``decoder_finetune_steps``: the decoder-only second stage of every tokenizer (0: none).
    ``num_images``: images per rFID / gFID (0: the preset's ``eval.num_images``). ``extractor``:
    the offline feature network's training settings (smoke | tiny).
    """

    name: str
    preset: Preset
    num_images: int = 0
    extractor: str = "tiny"
    notes: str = ""
    decoder_finetune_steps: int = 0

    @property
    def eval_images(self) -> int:
        return self.num_images or self.preset.eval.num_images

    def to_dict(self) -> dict:
        return {"name": self.name, "preset": self.preset.to_dict(),
                "decoder_finetune_steps": self.decoder_finetune_steps, "num_images": self.eval_images,
                "extractor": self.extractor, "notes": self.notes}


def _compare_long() -> ComparePlan:
    # tiny's data, models and recipes; longer, all variants warm-started from one shared plain AE
    # (2000 steps, seed 0, ~32 dB), then 2000 steps each with its own γ/M, then a 1000-step
    # decoder-only fine-tune (matched rFID); generators 3000 steps; 1000 images per FID
    p = load_preset("tiny").override(**{
        "tokenizer.warm_start": "plain", "tokenizer.warm_start_steps": 2000, "tokenizer.warm_start_seed": 0,
        "tokenizer_train.steps": 2000, "tokenizer_train.warmup_frac": 0.02, "tokenizer_train.blr": 2e-3,
        "generator_train.steps": 3000, "eval.num_images": 1000,
    })
    return ComparePlan("compare", p.replace(name="compare"), extractor="tiny", decoder_finetune_steps=1000,
                       notes="tiny models; shared plain-AE warm start (2000 steps) + 2000 steps per variant "
                             "+ 1000 decoder-only; generators 3000 steps; shapes-cnn FID on 1000 images")


PLAN_NAMES = PRESET_NAMES + ("compare",)


def compare_plan(name: str = "tiny", *, num_images: int | None = None, overrides: dict | None = None,
                 decoder_finetune_steps: int | None = None, warm_start_steps: int | None = None) -> ComparePlan:
    """The plan called ``name`` (a preset, or ``compare``: the longer warm-started CPU comparison)
    with optional changes: ``num_images``, ``decoder_finetune_steps`` (default: half the
    tokenizer's steps, the paper's 100 of 200 epochs; 0 = none), ``warm_start_steps`` (a plain AE
    every variant continues from, shared by the seeds; 0 = the preset's own warm start) and
    dotted preset ``overrides`` (``{"generator_train.steps": 500}``)."""
    if name == "compare":
        plan = _compare_long()
    elif name in PRESET_NAMES:
        p = load_preset(name)
        plan = ComparePlan(name, p, extractor="smoke" if name == "smoke" else "tiny",
                           decoder_finetune_steps=max(1, p.tokenizer_train.steps // 2))
    else:
        raise ValueError(f"plan {name!r} is not known{suggest(str(name), PLAN_NAMES)}; "
                         f"allowed: {', '.join(PLAN_NAMES)}")
    preset = plan.preset
    if warm_start_steps is not None:
        if not isinstance(warm_start_steps, int) or warm_start_steps < 0:
            raise ValueError(f"warm_start_steps={warm_start_steps!r} is out of range; allowed an int >= 0")
        shared = {"tokenizer.warm_start_steps": warm_start_steps, "tokenizer.warm_start_seed": 0,
                  "tokenizer.warm_start": "plain"} if warm_start_steps else {
                  "tokenizer.warm_start_steps": 0, "tokenizer.warm_start_seed": -1}
        preset = preset.override(**shared)
    if overrides:
        preset = preset.override(**overrides)
    n = plan.num_images if num_images is None else int(num_images)
    if n and n < 2:
        raise ValueError(f"num_images={n} must be >= 2 (FID needs a covariance)")
    ft = plan.decoder_finetune_steps if decoder_finetune_steps is None else int(decoder_finetune_steps)
    if ft < 0:
        raise ValueError(f"decoder_finetune_steps={ft} is out of range; allowed >= 0")
    return ComparePlan(plan.name, preset, n, plan.extractor, plan.notes, ft)


# ============================================================================================
# The evaluation protocol (notebook 22, ``ldetok-lite evaluate``)
# ============================================================================================

#: guidance grids of the official README's commands (``--cfg_list``)
OFFICIAL_CFG_GRIDS = {
    "MAR_base": (3.0, 3.5, 3.7, 3.8, 3.9, 4.0, 4.1, 4.3, 4.5),
    "MAR_large": (3.0, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7, 3.8, 3.9),
    "SiT": (1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0),
}
#: families the official README gives no grid for: ours (README, "Differences from the official code")
OUR_CFG_GRIDS = {
    "MAR": OFFICIAL_CFG_GRIDS["MAR_large"],  # MAR_huge: the grid of the largest released size
    "RandomAR": OFFICIAL_CFG_GRIDS["MAR_base"],  # the same DiffLoss head and linear guidance schedule as MAR
    "RasterAR": OFFICIAL_CFG_GRIDS["MAR_base"],
    "DiT": OFFICIAL_CFG_GRIDS["SiT"],  # the same backbone and label embedding as SiT
    "LightningDiT": OFFICIAL_CFG_GRIDS["SiT"],
}
#: the sampling steps of the official command lines (``--num_sampling_steps``; MAR: ``--num_iter``); in
#: our units: LightningDiT counts Euler steps, so the official 100 grid points are 99 steps
OFFICIAL_STEPS = {"DiT": 100, "SiT": 250, "LightningDiT": 99, "MAR": 64, "RandomAR": 100, "RasterAR": 100}
MAR_FINAL_ITERATIONS = 256  # official main_diffusion.py: the final count forces --num_iter 256
SEARCH_IMAGES = 10_000  # official --num_images_for_eval_and_search


@dataclass(frozen=True)
class EvalProtocol:
    """How a generator is measured: a guidance search on ``search_images``, then ``final_images``
    at the best scale and at 1.0 (official ``main_diffusion.py``, after training).

    ``search_steps`` / ``final_steps``: sampling steps (MAR: autoregressive iterations; None: the
    model's default). ``quantize``: float images → uint8 (``truncate`` as the official
    ``to_uint8_numpy``). ``reference``: ``adm`` (ADM's ImageNet-256 statistics, the paper's) or
    ``train`` (statistics of the training images). ``notes``: where each choice comes from.
    """

    cfg_scales: tuple[float, ...]
    search_images: int
    final_images: int
    search_steps: int | None
    final_steps: int | None
    temperature: float
    quantize: str
    reference: str
    notes: tuple[str, ...] = ()


def cfg_grid(name: str) -> tuple[tuple[float, ...], str]:
    """The guidance grid of generator ``name`` (e.g. ``MAR_base``) and where it comes from."""
    family = name.split("_")[0]
    for key in (name, family):
        if key in OFFICIAL_CFG_GRIDS:
            return OFFICIAL_CFG_GRIDS[key], "the official README's --cfg_list"
    if family not in OUR_CFG_GRIDS:
        raise ValueError(f"unknown generator family {family!r}; allowed: {', '.join(GENERATOR_FAMILIES)}")
    return OUR_CFG_GRIDS[family], "ours (no grid in the official README)"


def eval_protocol(preset: Preset | str, name: str, num_images: int = 0) -> EvalProtocol:
    """The evaluation of generator ``name`` (e.g. ``MAR_base``) under ``preset``.

    ``full``: the official protocol (the family's grid on 10 000 images, 50 000 at the best scale
    and at 1.0; the official sampling steps, MAR's final count at 256 iterations; truncation to
    uint8 and ADM's statistics from ``eval``). Other presets keep their own scales when
    ``eval.cfg_scales`` is set (tiny models need other guidance) and count ``num_images``
    (0: ``eval.num_images``).
    """
    p = _preset(preset)
    family = name.split("_")[0]
    n = num_images or p.eval.num_images
    notes = []
    if p.eval.cfg_scales:
        scales = tuple(p.eval.cfg_scales)
        notes.append(f"guidance grid: the {p.name} preset's eval.cfg_scales")
    else:
        scales, where = cfg_grid(name)
        notes.append(f"guidance grid: {where}")
    steps = p.generator.num_sampling_steps or None
    official = p.name == "full"
    if official and steps is None:
        steps = OFFICIAL_STEPS.get(family)
        notes.append(f"sampling steps: {steps}, the official command line's")
    final_steps = steps
    if family == "MAR" and official:
        final_steps = MAR_FINAL_ITERATIONS
        notes.append(f"MAR: the search runs {steps} iterations, the final count {MAR_FINAL_ITERATIONS} "
                     "(the official code forces 256)")
    notes.append("reference: ADM's ImageNet-256 statistics" if p.eval.reference == "adm" else
                 "reference: statistics of the training images")
    return EvalProtocol(cfg_scales=scales, search_images=min(n, SEARCH_IMAGES), final_images=n, search_steps=steps,
                        final_steps=final_steps, temperature=p.generator.temperature, quantize=p.eval.quantize,
                        reference=p.eval.reference, notes=tuple(notes))


# ============================================================================================
# The reference models shipped with the kit (``reference/``; notebooks 05-09)
# ============================================================================================

@dataclass(frozen=True)
class ReferenceRecipe:
    """A ``tokenizer`` of ``variant``, or a ``generator`` of ``family`` on the latents of the reference
    ``tokenizer-{variant}``, trained with ``preset`` at seed 0; ``model``: ``create_generator``
    settings beyond the preset's size, as ``(name, value)`` pairs."""

    name: str
    kind: str
    variant: str
    family: str = ""
    preset: str = "tiny-long"
    model: tuple[tuple[str, object], ...] = ()


#: the guidance scales a reference generator is measured at; its build records the notebook's choice
REFERENCE_CFG_SCALES = (1.0, 1.5, 2.0, 3.0)
REFERENCE_RECIPES: dict[str, ReferenceRecipe] = {r.name: r for r in (
    ReferenceRecipe("tokenizer-plain", "tokenizer", "plain"),
    ReferenceRecipe("tokenizer-ldetok", "tokenizer", "ldetok"),
    *(ReferenceRecipe(f, "generator", "ldetok", f) for f in GENERATOR_FAMILIES),
    # the paper's headline generator on the plain AE too: the pair shows the tokenizers' ranking
    ReferenceRecipe("MAR-plain", "generator", "plain", "MAR"),
)}
REFERENCE_NAMES = tuple(REFERENCE_RECIPES)


def reference_recipe(name: str) -> ReferenceRecipe:
    """The recipe of reference model ``name``; an unknown name raises ``ValueError`` listing the choices."""
    if not isinstance(name, str) or name not in REFERENCE_RECIPES:
        raise ValueError(f"reference model {name!r} is not known{suggest(str(name), REFERENCE_RECIPES)}; "
                         f"allowed: {', '.join(REFERENCE_NAMES)}")
    return REFERENCE_RECIPES[name]
