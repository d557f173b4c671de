"""The reference models shipped with the kit: trained longer than a notebook can, loaded in seconds.

    gen, tok = load_reference("LightningDiT")   # the generator and the tokenizer it was trained on
    tok = load_reference("tokenizer-ldetok", dataset="shapes")   # the set of the other embedded data
    reference_info("LightningDiT")              # command, git commit, steps, wall time, class accuracy, gFID

There is one set of models per embedded data set (``reference/<dataset>/<name>/``), so a notebook
run on ``shapes`` or ``shapes-large`` is shown references trained on its own images; the default
is the data of the recipes' preset (``tiny-long``, like ``tiny``: ``shapes-large``). Each model is
an ordinary checkpoint folder (``from_pretrained`` reads it): float16 weights, ``config.json`` and a
``MANIFEST.json`` with the size and SHA-256 of every file, so a missing or altered file is an error
that names the model and the fix. ``config.json`` holds the provenance under ``configs.reference``.
One command rebuilds a model from its recipe (``presets.REFERENCE_RECIPES``)::

    ldetok-lite reference build LightningDiT --dataset shapes-large   # its tokenizer first when missing

Generators train on the latents of the *exported* (float16) reference tokenizer, and the metrics
are measured on the float16 weights, so what is recorded is what is shipped. A generator is
measured at every scale of ``REFERENCE_CFG_SCALES`` and records the guidance its notebook samples
with: the lowest scale whose class accuracy is within ``REFERENCE_CFG_TOLERANCE`` of the best
(:func:`choose_guidance`). Notebooks 05-09 show the reference samples beside the student's own
3-minute model.
"""

from __future__ import annotations

import copy
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from .. import checkpoint as ckpt
from ..config import SHAPES_DATASETS
from ..evaluation import evaluate_generator, evaluate_tokenizer
from ..evaluation.feature_net import preset_feature_net
from ..io import repo_root
from ..presets import (
    REFERENCE_CFG_SCALES,
    REFERENCE_NAMES,
    load_preset,
    reference_recipe,
    tokenizer_recipe,
    warm_start_recipe,
)
from ..pretrained import check_tokenizer_of, from_pretrained, load_latent_stats
from .cache import get_generator, get_tokenizer

__all__ = ["ReferenceModelError", "REFERENCE_BUDGET_MB", "REFERENCE_CFG_TOLERANCE", "reference_root",
           "reference_dataset", "reference_path", "reference_info", "reference_megabytes", "load_reference",
           "list_references", "reference_summary", "choose_guidance", "build_reference", "round_to_half"]

#: the most the committed ``reference/`` folder may weigh
REFERENCE_BUDGET_MB = 40.0
#: images per recorded metric (class accuracy and gFID of the shapes network)
REFERENCE_EVAL_IMAGES = 500
#: a generator's notebook guidance: the lowest scale within this much class accuracy of the best
#: (two points: about one standard error of an accuracy near 80 % on 500 samples)
REFERENCE_CFG_TOLERANCE = 0.02


class ReferenceModelError(ckpt.CheckpointError):
    """A reference model is missing or fails its manifest check; the message says how to restore it."""


def reference_root(root: str | os.PathLike | None = None) -> Path:
    """The folder of the reference models: ``root``, else ``$LDETOK_REFERENCE_DIR``, else the
    checkout's ``reference/``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("LDETOK_REFERENCE_DIR")
    return Path(env) if env else repo_root() / "reference"


def reference_dataset(dataset: str | None = None) -> str:
    """``dataset``, checked, or the data of the recipes' preset (``tiny-long``) when None: the
    embedded data sets a reference set can be built on (``config.SHAPES_DATASETS``)."""
    if dataset is None:
        return load_preset(reference_recipe(REFERENCE_NAMES[0]).preset).data.dataset
    if dataset not in SHAPES_DATASETS:
        raise ValueError(f"dataset={dataset!r} has no reference models; allowed: {', '.join(SHAPES_DATASETS)}")
    return dataset


def reference_path(name: str, root: str | os.PathLike | None = None, dataset: str | None = None) -> Path:
    """The checkpoint folder of reference model ``name`` trained on ``dataset`` (which need not
    exist yet): ``reference/<dataset>/<name>``."""
    return reference_root(root) / reference_dataset(dataset) / reference_recipe(name).name


def _tokenizer_of(recipe) -> str:
    """The reference tokenizer whose latents a generator recipe uses."""
    return f"tokenizer-{recipe.variant}"


def _build_command(name: str, dataset: str) -> str:
    return f"ldetok-lite reference build {name} --dataset {dataset}"


def _checked(name: str, root, dataset: str | None) -> Path:
    """The verified checkpoint folder of ``name``; :class:`ReferenceModelError` when missing or altered."""
    dataset = reference_dataset(dataset)
    path = reference_path(name, root, dataset)
    if not path.exists():
        raise ReferenceModelError(f"reference model {name!r} for {dataset} is not in {str(path)!r}; build it with: "
                                  f"{_build_command(name, dataset)} (or restore the folder from the repository)")
    try:
        return ckpt.resolve_checkpoint(path)
    except ckpt.CheckpointError as e:
        raise ReferenceModelError(f"reference model {name!r} failed its manifest check: {e}. Restore it with "
                                  f"`git checkout -- reference/{dataset}/{name}` or rebuild it: "
                                  f"{_build_command(name, dataset)} --force") from None


def reference_info(name: str, root: str | os.PathLike | None = None, dataset: str | None = None) -> dict:
    """The provenance of reference model ``name``: ``command``, ``git_commit``, ``steps`` (a
    tokenizer that continued from the plain AE: plus ``warm_start_steps``), ``train_seconds`` (all
    its steps), ``cfg_scale`` (a generator's notebook guidance) and ``eval`` (class accuracy and
    gFID per guidance scale for a generator; rFID and PSNR for a tokenizer)."""
    return _provenance(name, _checked(name, root, dataset), reference_dataset(dataset))


def _provenance(name: str, d: Path, dataset: str) -> dict:
    """The provenance in the verified checkpoint folder ``d`` of reference model ``name``."""
    info = (ckpt.read_config(d).get("configs") or {}).get("reference")
    if not isinstance(info, dict):
        raise ReferenceModelError(f"reference model {name!r} in {str(d)!r} records no provenance; rebuild it: "
                                  f"{_build_command(name, dataset)} --force")
    return info


def reference_megabytes(root: str | os.PathLike | None = None) -> float:
    """What the reference folder weighs, every set together (``REFERENCE_BUDGET_MB`` at most)."""
    folder = reference_root(root)
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6 if folder.is_dir() else 0.0


def reference_summary(info: dict) -> str:
    """One line from a reference model's provenance (:func:`reference_info`): its steps, training
    time and recorded metrics (``ldetok-lite reference list``; notebooks 05-09)."""
    parts = []
    for row in info.get("eval") or []:
        if "rfid" in row:
            parts.append(f"rFID {row['rfid']:.2f}, PSNR {row['psnr']:.2f} dB")
        else:
            acc = row.get("class_accuracy")
            mark = " (notebook)" if row["cfg_scale"] == info.get("cfg_scale") and len(info["eval"]) > 1 else ""
            parts.append(f"cfg {row['cfg_scale']:g}{mark}: class acc. {acc:.0%}, gFID {row['gfid']:.2f}"
                         if acc is not None else f"cfg {row['cfg_scale']:g}{mark}: gFID {row['gfid']:.2f}")
    n = (info.get("eval") or [{}])[0].get("num_images")
    warm = f" + {info['warm_start_steps']} plain-AE" if info.get("warm_start_steps") else ""
    return (f"{info.get('steps', '?')}{warm} steps, {info.get('train_seconds', 0) / 60:.0f} min; " + "; ".join(parts)
            + (f" ({n} images)" if n else ""))


def load_reference(name: str, device: str | torch.device = "cpu", root: str | os.PathLike | None = None,
                   dataset: str | None = None):
    """Reference model ``name`` (``presets.REFERENCE_NAMES``) trained on ``dataset`` (None: the
    recipes' data, :func:`reference_dataset`), offline, in eval mode.

    A tokenizer (``tokenizer-plain``, ``tokenizer-ldetok``) is returned alone; a generator as
    ``(generator, tokenizer)`` with the generator's latent statistics set on the tokenizer, so
    ``generators.decode_latents(tokenizer, z)`` decodes its samples. ``.reference_info`` holds the
    provenance."""
    recipe = reference_recipe(name)
    dataset = reference_dataset(dataset)
    d = _checked(name, root, dataset)
    info = _provenance(name, d, dataset)
    model = from_pretrained(d, device=device)
    model.reference_info = info
    if recipe.kind == "tokenizer":
        return model
    tok_name = _tokenizer_of(recipe)
    tokenizer = load_reference(tok_name, device=device, root=root, dataset=dataset)
    try:
        check_tokenizer_of(d, tokenizer)
    except ValueError:
        raise ReferenceModelError(f"reference model {name!r} was trained on another {tok_name!r} than the one in "
                                  f"{str(reference_path(tok_name, root, dataset))!r}; rebuild it: "
                                  f"{_build_command(name, dataset)} --force") from None
    tokenizer.set_latent_stats(*load_latent_stats(d))
    return model, tokenizer


def list_references(root: str | os.PathLike | None = None, dataset: str | None = None) -> list[dict]:
    """One row per reference model of the ``dataset`` set: ``name``, ``kind``, ``status`` (ok |
    missing | an error), ``megabytes`` and, when present, its provenance (``info``)."""
    rows = []
    for name in REFERENCE_NAMES:
        recipe = reference_recipe(name)
        path = reference_path(name, root, dataset)
        row = {"name": name, "kind": recipe.kind, "status": "missing", "megabytes": 0.0, "info": None}
        if path.exists():
            row["megabytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
            try:
                row["info"] = reference_info(name, root, dataset)
                row["status"] = "ok"
            except ReferenceModelError as e:
                row["status"] = str(e)
        rows.append(row)
    return rows


def choose_guidance(rows: list[dict], tolerance: float = REFERENCE_CFG_TOLERANCE) -> float:
    """The notebook guidance of a generator measured at several scales (``rows`` with ``cfg_scale``
    and ``class_accuracy``): the lowest scale whose class accuracy is within ``tolerance`` of the
    best. Stronger guidance narrows the samples and costs gFID (README, *Reference models*), so a
    scale is raised only for accuracy it measurably buys."""
    measured = [r for r in rows if r.get("class_accuracy") is not None]
    if not measured:
        raise ValueError("rows hold no class accuracy; allowed: rows of evaluate_generator on shapes data")
    best = max(r["class_accuracy"] for r in measured)
    return min(float(r["cfg_scale"]) for r in measured if r["class_accuracy"] >= best - tolerance - 1e-9)


def round_to_half(model: nn.Module) -> nn.Module:
    """Round every floating-point weight and buffer to float16 precision in place (the values the
    shipped float16 files hold), so the metrics are measured on what is shipped."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def _git_commit() -> str:
    root = repo_root()
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+uncommitted changes" if dirty else "")


def _export(model: nn.Module, dest: Path, run_checkpoint: Path, provenance: dict,
            extra_tensors: dict | None = None) -> Path:
    """Write ``model`` in float16 to ``dest`` with its run's configs and ``provenance``."""
    payload = ckpt.read_config(run_checkpoint)
    configs = dict(payload.get("configs") or {})
    configs["reference"] = provenance
    if isinstance(configs.get("tokenizer_spec"), dict):  # where it was trained is this machine's business
        tok_name = _tokenizer_of(reference_recipe(provenance["name"]))
        configs["tokenizer_spec"] = {**configs["tokenizer_spec"],
                                     "checkpoint": f"reference/{provenance['dataset']}/{tok_name}"}
    return ckpt.save_pretrained(copy.deepcopy(model).half(), dest, config=configs, step=payload.get("step"),
                                extra_tensors=extra_tensors)


def build_reference(name: str, root: str | os.PathLike | None = None, work_dir: str | os.PathLike = "runs/reference",
                    preset: str | None = None, num_images: int = REFERENCE_EVAL_IMAGES, force: bool = False,
                    device: str = "cpu", log: Callable = print, progress: str = "log",
                    dataset: str | None = None) -> Path:
    """Train reference model ``name`` with its recipe on ``dataset`` (None: the recipe's data;
    resuming an interrupted run in ``work_dir``), measure it in float16 and write it to
    ``reference/<dataset>/<name>``. A generator's tokenizer is built first when missing. A present,
    verified model is kept unless ``force``. ``preset`` replaces the recipe's (tests use
    ``smoke``); the command recorded in the provenance says so."""
    recipe = reference_recipe(name)
    p = load_preset(preset or recipe.preset)
    dataset = reference_dataset(dataset or p.data.dataset)
    if dataset != p.data.dataset:
        p = p.replace(data=p.data.replace(dataset=dataset))
    dest = reference_path(name, root, dataset)
    if dest.exists() and not force:
        _checked(name, root, dataset)
        log(f"{name}: present and verified in {dest} (--force rebuilds it)")
        return dest
    command = _build_command(name, dataset) + (f" --preset {p.name}" if preset and preset != recipe.preset else "")
    work_dir = Path(work_dir)
    net = preset_feature_net(p, work_dir, log=log)
    provenance = {"name": name, "command": command, "git_commit": _git_commit(), "preset": p.name,
                  "dataset": dataset, "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "dtype": "float16", "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    if recipe.kind == "tokenizer":
        model = get_tokenizer(p, recipe.variant, work_dir / "cache", device=device, log=log, progress=progress)
        seconds = model.train_seconds + getattr(model, "warm_start_seconds", 0.0)
        base = warm_start_recipe(*tokenizer_recipe(p, recipe.variant)[:2])
        if base is not None:  # the plain AE it continued from: its steps and time are part of the budget
            provenance["warm_start_steps"] = base[1].steps
        round_to_half(model)
        res = evaluate_tokenizer(model, p.data, net, num_images=num_images, batch_size=p.eval.batch_size,
                                 device=device)
        evals = [{"rfid": res["rfid"], "psnr": res["psnr"], "num_images": num_images}]
        extra = None
    else:
        tok_name = _tokenizer_of(recipe)
        if not reference_path(tok_name, root, dataset).exists():
            log(f"{name} needs {tok_name}: building it first")
            build_reference(tok_name, root, work_dir, preset, num_images, False, device, log, progress, dataset)
        tokenizer = load_reference(tok_name, device=device, root=root, dataset=dataset)
        model = get_generator(p, recipe.family, recipe.variant, work_dir / "cache", device=device, log=log,
                              progress=progress, tokenizer=tokenizer, model_kwargs=dict(recipe.model))
        seconds = model.train_seconds
        round_to_half(model)
        rows = evaluate_generator(model, tokenizer, p.data, net, num_images=num_images, batch_size=p.eval.batch_size,
                                  cfg_scales=REFERENCE_CFG_SCALES, steps=p.generator.num_sampling_steps or None,
                                  temperature=p.generator.temperature, cache_dir=work_dir, seed=0, device=device,
                                  log=log)
        evals = [{"cfg_scale": r["cfg_scale"], "class_accuracy": r.get("class_accuracy"), "gfid": r["gfid"],
                  "num_images": num_images} for r in rows]
        provenance["cfg_scale"] = choose_guidance(evals)
        extra = {"latent_stats": {"mean": model.latent_stats[0], "std": model.latent_stats[1]}}
    run_checkpoint = ckpt.latest_checkpoint(model.run_dir, log=lambda *_: None)
    provenance.update(steps=int(ckpt.read_config(run_checkpoint).get("step") or 0), train_seconds=round(seconds),
                      eval=evals)
    out = _export(model, dest, run_checkpoint, provenance, extra)
    size = reference_megabytes(root)
    log(f"{name}: written to {out} ({provenance['steps']} steps, {seconds / 60:.1f} min of training); "
        f"reference/ now holds {size:.1f} MB of {REFERENCE_BUDGET_MB:.0f}")
    return out
