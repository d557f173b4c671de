"""Generators drawn alike and measured alike: the same labels, initial noise, sampler and guidance
for each, then class accuracy and gFID on those samples (notebooks 05-09: the reference model
shipped in ``reference/`` beside the student's own 3-minute model)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from ..data import SHAPES_CLASSES
from ..evaluation import reference_stats
from ..evaluation.metrics import compute_metrics
from ..evaluation.sources import generator_source
from ..presets import reference_recipe
from ..viz import class_rows, image_grid
from .reference import load_reference, reference_dataset, reference_path, reference_summary

__all__ = ["Drawn", "draw", "draw_side_by_side", "show_side_by_side", "reference_or_none", "load_references",
           "reference_guidance", "FALLBACK_GUIDANCE"]

#: the side-by-side guidance when a notebook's reference model is missing
FALLBACK_GUIDANCE = 3.0


@dataclass(frozen=True)
class Drawn:
    """``images`` (N, 3, H, W) in [0, 1] of one generator for ``labels`` (class-balanced), with the
    class accuracy and gFID measured on them and the seconds that sampling and decoding took."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_accuracy: float
    gfid: float
    seconds: float
    cfg_scale: float
    num_steps: int | None

    def caption(self) -> str:
        return f"{self.name}: class acc {self.class_accuracy:.0%}, gFID {self.gfid:.1f} ({len(self.images)} samples)"


def draw(name: str, generator, tokenizer, net, ref_stats, *, num_images: int, cfg_scale: float,
         num_steps: int | None = None, seed: int = 0, batch_size: int = 100) -> Drawn:
    """``num_images`` class-balanced samples of ``generator`` (``evaluation.generator_source``: the
    noise of sample i depends only on ``seed`` and i), and their class accuracy and gFID against
    ``ref_stats`` (FID statistics of the training images)."""
    t0 = time.time()
    stream = generator_source(generator, tokenizer, num_images, cfg_scale=cfg_scale, num_steps=num_steps, seed=seed)
    images = torch.cat([stream.next(min(batch_size, num_images - i)) for i in range(0, num_images, batch_size)])
    seconds = time.time() - t0
    m = compute_metrics(images, ref_stats, labels=stream.labels, feature_net=net, batch_size=batch_size)
    return Drawn(name, images, stream.labels, float(m["class_accuracy"]), float(m["fid"]), seconds, float(cfg_scale),
                 num_steps)


def draw_side_by_side(models: dict, data, net, *, num_images: int, cfg_scale: float, num_steps: int | None = None,
                      seed: int = 0, cache_dir=None, device="cpu", log: Callable = print) -> list[Drawn]:
    """Draw every ``{name: (generator, tokenizer)}`` of ``models`` with the same labels, seeds,
    guidance and steps (each family's own sampler), measured against the same training-set
    statistics (computed once and cached in ``cache_dir``)."""
    if not models:
        raise ValueError("models is empty; allowed: a dict {name: (generator, tokenizer)}")
    n_ref = max(num_images, min(data.num_train, 50_000))
    ref = reference_stats(data, net, cache_dir=cache_dir, num_images=n_ref, batch_size=200, seed=seed, device=device,
                          log=log)
    out = []
    for name, (generator, tokenizer) in models.items():
        d = draw(name, generator, tokenizer, net, ref, num_images=num_images, cfg_scale=cfg_scale, num_steps=num_steps,
                 seed=seed)
        log(f"{d.caption()}; sampled in {d.seconds:.1f} s")
        out.append(d)
    return out


def show_side_by_side(drawn: list[Drawn], per_class: int = 4, class_names=SHAPES_CLASSES, scale: int = 2):
    """One panel per generator: a row per class, ``per_class`` samples each, titled with its metrics."""
    fig, axes = plt.subplots(1, len(drawn), figsize=(3.4 * len(drawn), 4.6), squeeze=False)
    for ax, d in zip(axes[0], drawn):
        rows = class_rows(d.images, d.labels, per_class=per_class)
        ax.imshow(image_grid(torch.cat(rows), nrow=per_class, scale=scale))
        ax.set_title(f"{d.name}\nclass acc {d.class_accuracy:.0%} · gFID {d.gfid:.1f}", fontsize=9)
        ax.set_xticks([])
        h = ax.get_images()[0].get_array().shape[0] / len(rows)
        ax.set_yticks([h * (i + 0.5) for i in range(len(rows))],
                      [class_names[int(c)] for c in d.labels.unique(sorted=True)], fontsize=7)
    steps = drawn[0].num_steps
    fig.suptitle(f"{len(drawn[0].images)} samples each, same labels and noise; cfg {drawn[0].cfg_scale:g}, "
                 f"{'each family' + chr(39) + 's default' if steps is None else steps} sampling steps", fontsize=9)
    fig.tight_layout()
    return fig


def reference_or_none(name: str, device="cpu", log: Callable = print, root=None, dataset: str | None = None):
    """``load_reference(name, dataset=dataset)`` (a generator as ``(generator, tokenizer)``), or None
    with the command that builds it when ``reference/<dataset>/<name>`` is not there. An altered or
    incomplete model still raises ``ReferenceModelError``: only a missing one is skipped."""
    reference_recipe(name)  # an unknown name is an error, not a skip
    dataset = reference_dataset(dataset)
    if not reference_path(name, root, dataset).exists():
        log(f"reference/{dataset}/{name} is not in this copy of the kit; build it (20 to 60 minutes on 2 cores) "
            f"with: ldetok-lite reference build {name} --dataset {dataset}")
        return None
    return load_reference(name, device=device, root=root, dataset=dataset)


def load_references(names, device="cpu", log: Callable = print, root=None, dataset: str | None = None) -> dict:
    """``{name: (generator, tokenizer) or None}`` for reference generators ``names`` trained on
    ``dataset`` (a notebook passes its preset's), each with a line of its recorded provenance
    (:func:`reference_or_none` says how to build a missing one)."""
    out = {}
    for name in names:
        out[name] = reference_or_none(name, device=device, log=log, root=root, dataset=dataset)
        if out[name] is not None:
            log(f"reference/{reference_dataset(dataset)}/{name}: {reference_summary(out[name][0].reference_info)}")
    return out


def reference_guidance(references: dict, name: str, fallback: float = FALLBACK_GUIDANCE) -> float:
    """The guidance reference ``name`` of ``references`` (:func:`load_references`) was built to be
    shown at (``reference_info["cfg_scale"]``), or ``fallback`` when it is missing."""
    pair = references.get(name)
    return fallback if pair is None else float(pair[0].reference_info.get("cfg_scale", fallback))
