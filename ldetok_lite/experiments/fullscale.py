"""The full-scale research runs of notebooks 20-22: configs, one or many GPUs, resumable stages.

The three notebooks share one parameter set (:data:`PARAMETERS`), so one papermill YAML file
drives all of them (``papermill notebooks/20_full_tokenizer.ipynb out.ipynb -f presets/full.yaml``).
Each training stage is an ordinary training ``out_dir`` (checkpoints, ``metrics.jsonl``,
samples) and resumes by itself when the notebook is run again. With ``num_gpus > 1`` a stage
runs as ``torchrun --nproc_per_node=num_gpus -m ldetok_lite.cli train ...`` in a subprocess
whose log is streamed into the notebook and kept in ``<stage>/torchrun.log``; otherwise it runs
in the notebook's own process. Both write the same files and can resume each other.

Stages (the official README's recipe): tokenizer pre-training (γ, M from ``variant``; GAN from
the preset's start step), then the decoder-only fine-tune (``presets.decoder_finetune``);
generator training on the tokenizer (the aligned constant lr); evaluation (a guidance search on
a subset, then the final count; notebook 22).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import checkpoint as ckpt
from ..assets import MissingWeightsError
from ..config import Preset, TrainConfig
from ..convert_vae import load_mar_vae, load_sd_vae
from ..io import open_append, parse_overrides, read_jsonl, repo_root, write_json_atomic
from ..presets import decoder_finetune, tokenizer_recipe
from ..training import train_generator, train_tokenizer

#: extra notebook parameters shared by notebooks 20, 21 and 22 (name -> (type, allowed or None)).
PARAMETERS: dict[str, tuple[type, tuple | None]] = {
    "num_gpus": (int, None),  # > 1: torchrun with this many processes on this node
    "torchrun_args": (str, None),  # extra torchrun flags, e.g. multi-node rendezvous
    "steps": (int, None),  # 0: the preset's steps; > 0: a reduced run
    "batch_size": (int, None),  # 0: the preset's global batch
    "dataset": (str, None),  # empty: the preset's dataset
    "img_size": (int, None),  # 0: the preset's image size
    "overrides": (str, None),  # group.key=value items separated by spaces, commas or semicolons
    "variant": (str, None),  # tokenizer variant (presets.TOKENIZER_VARIANTS), or a baseline (BASELINES)
    "baseline_path": (str, None),  # 20: the released weights of a baseline variant (sd-vae, mar-vae)
    "finetune": (bool, None),  # 20: run the decoder fine-tune after pre-training
    "family": (str, None),  # 21/22: generator family
    "tokenizer_dir": (str, None),  # 21/22: a tokenizer run; empty: the one notebook 20 made
    "generator_dir": (str, None),  # 22: a generator run; empty: the one notebook 21 made
    "num_images": (int, None),  # 22: images per metric; 0: the preset's
    "ref_stats": (str, None),  # 22: gFID reference: adm | train | an .npz path; empty: the preset's
}


def build_preset(run) -> Preset:
    """The notebook's preset with ``dataset``, ``img_size``, ``batch_size`` and ``overrides`` applied
    (``steps`` is applied per stage, see :func:`scale_steps`)."""
    p, params = run.preset, run.params
    flat: dict = {}
    d = p.data.data_dir
    if d and not Path(d).is_absolute():  # relative to the checkout (torchrun runs from there), if it exists
        flat["data.data_dir"] = str((repo_root() / d) if (repo_root() / d).exists() or not Path(d).exists()
                                    else Path(d).resolve())
    if params.get("dataset"):
        flat["data.dataset"] = params["dataset"]
    if params.get("img_size", 0) > 0:
        flat["data.img_size"] = params["img_size"]
    if params.get("batch_size", 0) > 0:
        flat["tokenizer_train.batch_size"] = params["batch_size"]
        flat["generator_train.batch_size"] = params["batch_size"]
    flat.update(parse_overrides(params.get("overrides", "")))
    return p.override(**flat) if flat else p


def scale_steps(train_cfg: TrainConfig, steps: int) -> TrainConfig:
    """``train_cfg`` with ``steps`` (0: unchanged) and its periods scaled alike, except that a shorter run
    evaluates at most twice and checkpoints at most four times (plus the end) besides."""
    if steps <= 0 or steps == train_cfg.steps:
        return train_cfg
    f = steps / train_cfg.steps

    def period(v, at_least=1):
        return 0 if v == 0 else max(at_least, round(v * f))

    few = steps < train_cfg.steps
    return train_cfg.replace(steps=steps, log_every=period(train_cfg.log_every),
                       eval_every=period(train_cfg.eval_every, -(-steps // 2) if few else 1),
                       ckpt_every=period(train_cfg.ckpt_every, -(-steps // 4) if few else 1))


@dataclass(frozen=True)
class Stage:
    """One training run: its name (the sub-folder of out_dir) and its configs."""

    name: str
    preset: Preset  # holds the stage's tokenizer / train configs
    init_from: str | None = None


def tokenizer_stages(preset: Preset, variant: str = "ldetok", steps: int = 0, finetune: bool = True) -> list[Stage]:
    """Pre-training (``variant``'s γ, M) and the decoder-only fine-tune (``presets.decoder_finetune``)."""
    tok, _, _ = tokenizer_recipe(preset, variant)
    train = scale_steps(preset.tokenizer_train, steps)
    if train.steps != preset.tokenizer_train.steps and tok.gan_start_step > 0:
        tok = tok.replace(gan_start_step=round(tok.gan_start_step * train.steps / preset.tokenizer_train.steps))
    stages = [Stage("pretrain", preset.replace(tokenizer=tok, tokenizer_train=train))]
    if finetune:
        # same periods as pre-training (every epoch at full scale), half the steps (100 vs 200 epochs)
        ft_tok, ft_train = decoder_finetune(tok, train)
        stages.append(Stage("decoder_ft", preset.replace(tokenizer=ft_tok, tokenizer_train=ft_train), "pretrain"))
    return stages


#: the paper's baselines (Table 1): released weights, imported instead of trained (notebook 20), then
#: used by notebooks 21 and 22 like any tokenizer run: variant -> (loader, what baseline_path must name)
BASELINES: dict[str, tuple[Callable, str]] = {
    "sd-vae": (load_sd_vae, "SD-VAE in diffusers format: the folder of stabilityai/sd-vae-ft-ema (config.json and "
                            "diffusion_pytorch_model.safetensors)"),
    "mar-vae": (load_mar_vae, "MAR-VAE: kl16.ckpt from the MAR repository (LTH14/mar, pretrained_models/vae)"),
}


def import_baseline(variant: str, path: str | Path, out_dir: str | Path, log: Callable = print) -> Path:
    """The released weights of baseline ``variant`` (``sd-vae`` | ``mar-vae``) as a kit checkpoint in
    ``out_dir/baseline`` (found there when imported earlier), without latent corruption; returns
    that run folder. ``MissingWeightsError`` names the file to get when ``path`` is empty or missing."""
    if variant not in BASELINES:
        raise ValueError(f"variant {variant!r} is not a baseline; allowed: {', '.join(BASELINES)}")
    loader, what = BASELINES[variant]
    run_dir = Path(out_dir) / "baseline"
    if ckpt.latest_checkpoint(run_dir, log=lambda *_: None) is not None:
        log(f"baseline {variant}: imported earlier ({run_dir}); delete it to import again")
        return run_dir
    if not path or not Path(path).expanduser().exists():
        raise MissingWeightsError(f"variant={variant!r} imports released weights: set baseline_path to {what}"
                                  + (f" ({str(path)!r} does not exist)" if path else ""))
    model = loader(Path(path).expanduser(), gamma=0.0, mask_ratio=0.0)
    n = sum(p.numel() for p in model.parameters())
    ckpt.save_pretrained(model, ckpt.checkpoint_dir(run_dir, 0), step=0,
                         config={"baseline": {"variant": variant, "source": str(path)}})
    log(f"baseline {variant}: {n / 1e6:.1f} M parameters from {path} -> {run_dir}")
    return run_dir


def generator_stage(preset: Preset, steps: int = 0) -> Stage:
    return Stage("generator", preset.replace(generator_train=scale_steps(preset.generator_train, steps)))


# ----------------------------------------------------------------------------------------------
# running a stage: in this process or under torchrun
# ----------------------------------------------------------------------------------------------


def torchrun_command(nproc: int, cli_args: list[str], torchrun_args: str = "") -> list[str]:
    """``python -m torch.distributed.run ... -m ldetok_lite.cli <cli_args>`` (``--standalone``
    unless ``torchrun_args`` names a rendezvous, e.g. ``--nnodes=2 --node_rank=0 --master_addr=...``)."""
    if nproc < 1:
        raise ValueError(f"num_gpus={nproc} must be >= 1")
    extra = shlex.split(torchrun_args or "")
    rdzv = any(a.split("=")[0] in ("--nnodes", "--rdzv_endpoint", "--master_addr", "--rdzv-endpoint",
                                   "--master-addr") for a in extra)
    return [sys.executable, "-m", "torch.distributed.run", *([] if rdzv else ["--standalone"]),
            f"--nproc_per_node={nproc}", *extra, "-m", "ldetok_lite.cli", *cli_args]


def stream_subprocess(cmd: list[str], log_path: Path, log: Callable = print, env: dict | None = None) -> None:
    """Run ``cmd``, print its output line by line as it comes and append it to ``log_path``;
    a non-zero exit raises ``RuntimeError`` with the last lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    root = str(repo_root())
    full_env["PYTHONPATH"] = root + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    tail: deque[str] = deque(maxlen=40)
    with os.fdopen(open_append(log_path), "a") as f:  # never through a planted link
        f.write(f"$ {shlex.join(cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                cwd=root, env=full_env)
        try:
            for line in proc.stdout:
                f.write(line)
                f.flush()
                tail.append(line.rstrip("\n"))
                if not _noise(line):
                    print(line, end="", flush=True)
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait(timeout=60)
            raise
    if rc != 0:
        last = "\n".join(tail)
        raise RuntimeError(f"{cmd[0]} ... exited with code {rc} (full log: {log_path}); last lines:\n{last}")


def _noise(line: str) -> bool:
    """Launcher chatter not worth showing in a notebook (it stays in the log file)."""
    return ("OMP_NUM_THREADS" in line or line.startswith("*****") or "FutureWarning" in line
            or "find_unused_parameters=True was specified" in line)


def run_stage(kind: str, stage: Stage, out_dir: Path, *, num_gpus: int = 1, device="auto", torchrun_args: str = "",
              seed: int = 0, tokenizer_dir: str | Path | None = None, family: str | None = None,
              tokenizer=None, log: Callable = print, progress: str = "log") -> Path:
    """Train (or resume, or find finished) ``stage`` into ``out_dir/stage.name``; returns that folder.

    ``kind``: ``tokenizer`` | ``generator``. ``num_gpus > 1``: torchrun subprocess (the preset is
    passed as ``<stage>/preset.json``); else in this process (``tokenizer`` module for generators).
    """
    run_dir = Path(out_dir) / stage.name
    run_dir.mkdir(parents=True, exist_ok=True)
    p = stage.preset
    tcfg = p.tokenizer_train if kind == "tokenizer" else p.generator_train
    latest = ckpt.latest_checkpoint(run_dir, log=lambda *_: None)
    if latest is not None and json.loads((latest / ckpt.CONFIG_FILE).read_text()).get("step", 0) >= tcfg.steps:
        log(f"{stage.name}: finished earlier ({latest.name}); delete {run_dir} to train again")
        return run_dir
    init_from = str(Path(out_dir) / stage.init_from) if stage.init_from else None
    if num_gpus > 1:
        p.save_json(run_dir / "preset.json")
        args = ["train", kind, "--config", str(run_dir / "preset.json"), "--out", str(run_dir), "--seed", str(seed)]
        if str(device) not in ("auto", "None"):
            args += ["--device", str(device).split(":")[0]]
        if kind == "tokenizer" and init_from:
            args += ["--init-from", init_from]
        if kind == "generator":
            args += ["--family", str(family), "--tokenizer", str(tokenizer_dir)]
        log(f"{stage.name}: torchrun with {num_gpus} processes, global batch {tcfg.batch_size} "
            f"({tcfg.batch_size // num_gpus} per process), {tcfg.steps} steps -> {run_dir}")
        stream_subprocess(torchrun_command(num_gpus, args, torchrun_args), run_dir / "torchrun.log", log=log)
        return run_dir
    log(f"{stage.name}: training in this process, batch {tcfg.batch_size}, {tcfg.steps} steps -> {run_dir}")
    if kind == "tokenizer":
        train_tokenizer(p.tokenizer, p.tokenizer_train, p.data, run_dir, device=device, init_from=init_from,
                              progress=progress, log=log)
    else:
        train_generator(family, p.generator, p.generator_train, p.data, tokenizer, run_dir, device=device,
                              progress=progress, log=log)
    return run_dir


# ----------------------------------------------------------------------------------------------
# finding the runs of the previous notebooks
# ----------------------------------------------------------------------------------------------


def run_key(preset: Preset, *parts: str) -> str:
    d = preset.data
    return "-".join([preset.name, f"{d.dataset}{d.img_size}", f"s{d.seed}", *parts])


def write_pointer(cache_dir: Path, kind: str, key: str, run_dir: Path, **info) -> Path:
    """Remember where notebook 20/21 left its final run (``cache_dir/fullscale/<kind>-<key>.json``)."""
    path = Path(cache_dir) / "fullscale" / f"{kind}-{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"dir": str(Path(run_dir).resolve()), **info})
    return path


def read_pointer(cache_dir: Path, kind: str, key: str) -> Path | None:
    path = Path(cache_dir) / "fullscale" / f"{kind}-{key}.json"
    if not path.is_file():
        return None
    d = Path(json.loads(path.read_text())["dir"])
    return d if d.is_dir() else None


def read_history(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


__all__ = [
    "PARAMETERS", "BASELINES", "import_baseline", "build_preset", "scale_steps", "Stage", "tokenizer_stages",
    "generator_stage",
    "torchrun_command", "stream_subprocess", "run_stage", "run_key", "write_pointer", "read_pointer", "read_history",
]
