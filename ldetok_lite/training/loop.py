"""The training loop shared by tokenizers and generators (official ``utils/train_utils.py``,
``train_one_epoch_tokenizer`` / ``train_one_epoch_generator``; notebook 03 walks through it).

Per optimizer step:

1. set the lr of every group (``optim.lr_at``);
2. ``grad_accum`` micro-batches: forward under ``device.autocast`` (bf16 on CUDA, fp32 on the
   CPU), loss / accum, backward; a non-finite loss stops the run (:class:`NonFiniteLossError`)
   and the last good checkpoint stays the newest;
3. clip the global grad norm (``grad_clip`` > 0), AdamW step;
4. EMA update (``optim.EMA``);
5. an optional auxiliary step (the tokenizer's discriminator) with its own AdamW.

Every ``log_every`` steps a row (window means) goes to ``out_dir/metrics.jsonl`` and to the
progress display (tqdm when interactive, plain lines headless); every ``eval_every`` steps (and
at the end) the job's evaluation runs; every ``ckpt_every`` steps (and at the end) a checkpoint
is written (``checkpoint.py``). ``callback(step, metrics)`` runs after every step; returning
``False`` stops the run cleanly (with a checkpoint). Re-running with the same ``out_dir``
resumes from the newest complete checkpoint (``batches.py`` makes that exact). Under torchrun
(``distributed.py``) the model is wrapped in DDP, logged metrics are means over ranks, and rank 0
alone writes checkpoints (with every rank's RNG state) and logs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from ..config import TrainConfig, diff_configs
from ..device import autocast, seed_everything
from ..io import append_jsonl, read_jsonl, write_json_atomic, write_jsonl_atomic
from ..viz import labelled_grid, save_figure
from . import distributed as du
from .accel import compile_blocks
from .batches import ImageSource, IndexStream, isolated_rng, rng_state, set_rng_state
from .optim import EMA, lr_at, make_optimizer

__all__ = ["TrainResult", "NonFiniteLossError", "OutDirError", "Job", "fit", "PROGRESS_MODES", "RESUMABLE_CHANGES",
           "RUN_MARKER", "claim_out_dir", "check_config_types", "save_sample_figure"]

PROGRESS_MODES = ("auto", "tqdm", "log", "none")


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: a time left that reads at a glance in a log line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


#: run settings that may change between a run and its resumption (everything else must match)
RESUMABLE_CHANGES = frozenset({"steps", "log_every", "eval_every", "ckpt_every", "num_workers", "compile",
                               "checkpoint"})


#: written into every out_dir this loop trains in: what the kit may clean up there is its own
RUN_MARKER = ".ldetok-run.json"
#: the names the loop writes directly under out_dir
RUN_FILES = ("metrics.jsonl", ckpt.CKPT_SUBDIR, "samples")


class OutDirError(ValueError):
    """``out_dir`` holds files this kit's training did not write; nothing there was changed."""


def claim_out_dir(out_dir: Path, resuming: bool) -> None:
    """Make ``out_dir`` a run folder of the kit (:data:`RUN_MARKER`). A fresh run (no checkpoint to
    resume) starts over only in a folder the kit marked: it then drops its own ``metrics.jsonl``.
    A folder that holds the loop's file names without the marker is refused (:class:`OutDirError`),
    so a user's files are never deleted or overwritten."""
    marker = out_dir / RUN_MARKER
    if not resuming:
        found = [n for n in RUN_FILES if (out_dir / n).exists() or (out_dir / n).is_symlink()]
        if found and not marker.is_file():
            raise OutDirError(
                f"out_dir {str(out_dir)!r} already holds {', '.join(found)}, not written by a training run of this "
                f"kit (no checkpoint to resume and no {RUN_MARKER}); nothing was changed. Choose another out_dir, or "
                "delete those files if they are leftovers")
        if (out_dir / "metrics.jsonl").is_file():
            (out_dir / "metrics.jsonl").unlink()  # our run that never reached its first checkpoint starts over
    if not marker.is_file():
        write_json_atomic(marker, {"kind": "ldetok_lite training run", "created": time.strftime("%Y-%m-%d %H:%M:%S")})


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/Inf; ``.step`` names the step. Weights on disk are intact."""

    def __init__(self, msg: str, step: int):
        super().__init__(msg)
        self.step = step


@dataclass
class TrainResult:
    """What a training run returns (models on the training device; ``ema_model`` in eval mode)."""

    model: nn.Module
    ema_model: nn.Module
    history: list[dict]
    out_dir: Path
    step: int = 0
    elapsed_s: float = 0.0
    checkpoint: Path | None = None
    final_metrics: dict = field(default_factory=dict)
    resumed_from: int | None = None
    stopped_early: bool = False
    latent_stats: tuple[torch.Tensor, torch.Tensor] | None = None
    extra: dict = field(default_factory=dict)


def _to_float(v) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


def _resolve_progress(progress: str) -> str:
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress={progress!r} is not known; allowed: {', '.join(PROGRESS_MODES)}")
    if progress == "auto":
        return "tqdm" if sys.stderr.isatty() else "log"
    return progress


@dataclass
class Job:
    """Everything the generic loop needs; filled by ``train_tokenizer`` / ``train_generator``."""

    model: nn.Module
    train_cfg: TrainConfig
    out_dir: Path
    device: torch.device
    num_items: int
    compute_loss: Callable  # (idx, step) -> (loss, metrics, aux) for one micro-batch
    configs: dict
    evaluate: Callable | None = None  # (model, ema_model, step) -> metrics (figures saved inside)
    aux_module: nn.Module | None = None  # trainable extra module (discriminator)
    aux_step: Callable | None = None  # (aux list of micro-batches, step) -> metrics or None
    extra_files: Callable | None = None  # () -> {name: tensors} saved with each checkpoint
    init_ema_state: dict | None = None
    callback: Callable | None = None
    progress: str = "auto"
    log: Callable = print
    rank: int = 0
    world_size: int = 1
    resume_ok: Callable | None = None  # (config.json payload) -> None or raise
    data_source: "ImageSource | None" = None  # file datasets: prefetched in background workers


def fit(job: Job) -> TrainResult:
    train_cfg, out_dir, device, model = job.train_cfg, Path(job.out_dir), job.device, job.model
    main = job.rank == 0
    log = job.log if main else (lambda *_: None)
    progress = _resolve_progress(job.progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"

    # multi-process (torchrun): DDP broadcasts rank 0's initial weights and averages gradients;
    # train_cfg.batch_size is the global batch, each rank takes its slice (see distributed.py)
    multi = job.world_size > 1
    ddp_model = model
    if multi:
        ddp_model = du.wrap_ddp(model, device)
        if job.aux_module is not None:
            du.broadcast_module(job.aux_module)
    opt = make_optimizer(model, train_cfg)
    ema = EMA(model, train_cfg.ema_decay)
    if job.init_ema_state is not None:
        ema.load_state_dict(job.init_ema_state)
    aux_opt = make_optimizer(job.aux_module, train_cfg) if job.aux_module is not None else None
    rank_batch = train_cfg.batch_size
    if multi:
        rank_batch = du.per_rank_batch(train_cfg.batch_size, job.world_size)
    stream = IndexStream(job.num_items, rank_batch, train_cfg.seed, job.rank, job.world_size)
    step, elapsed_before, resumed_from = 0, 0.0, None

    # ---------------------------------------------------------------- resume
    latest, refused = None, None
    if main:
        latest = ckpt.latest_checkpoint(out_dir, log=log)
        try:
            claim_out_dir(out_dir, resuming=latest is not None)
        except OutDirError as e:
            refused = str(e)
    if multi:  # rank 0 chooses (and verifies) the checkpoint every rank loads
        latest, refused = du.broadcast_object((latest, refused))
    if refused:
        raise OutDirError(refused)
    if latest is not None:
        payload = json.loads((latest / ckpt.CONFIG_FILE).read_text())
        diff = diff_configs(payload.get("configs", {}), job.configs, ignore=RESUMABLE_CHANGES)
        if diff:
            raise ckpt.CheckpointError(
                f"{str(out_dir)!r} holds a run with other settings ({'; '.join(diff[:4])}); resuming would mix "
                "them. Use a new out_dir, delete the old one, or restore the settings")
        spec = json.loads(json.dumps(getattr(ckpt.unwrap(model), "spec", None), default=list))
        if payload.get("spec") != spec:
            raise ckpt.CheckpointError(
                f"{str(out_dir)!r} holds a run of another model ({payload.get('spec')}) than this one ({spec}); "
                "use a new out_dir or delete the old one")
        state = ckpt.load_train_state(latest)
        ckpt.load_weights(model, latest, which="model")
        ema.load_state_dict(ckpt.load_tensors(latest / ckpt.EMA_FILE))
        opt.load_state_dict(state["optimizer"])
        if job.aux_module is not None:
            job.aux_module.load_state_dict(ckpt.load_tensors(latest / "extra_aux.safetensors"))
            aux_opt.load_state_dict(state["aux_optimizer"])
        stream.load_state(state["data"])
        step = resumed_from = int(state["step"])
        rng_ranks = state.get("rng_ranks") or [state["rng"]]  # one RNG state per rank of the saved run
        if len(rng_ranks) == job.world_size:
            set_rng_state(rng_ranks[job.rank])
        else:
            seed_everything(train_cfg.seed + step, job.rank)
            log(f"the checkpoint was written by {len(rng_ranks)} process(es), this run has {job.world_size}: "
                "data order and weights continue exactly, the random streams are re-seeded")
        elapsed_before = float(state.get("elapsed_s", 0.0))
        # drop metric rows written after the checkpoint by the interrupted run
        if main:
            rows = [r for r in read_jsonl(metrics_path) if r.get("step", 0) <= step]
            write_jsonl_atomic(metrics_path, rows)
        log(f"resuming from {latest} (step {step}/{train_cfg.steps})")
    if multi:
        du.barrier()
    if job.data_source is not None:
        job.data_source.start_prefetch(stream)
    history = read_jsonl(metrics_path)

    def save(step_now: int) -> Path | None:
        rngs = du.gather_objects(rng_state()) if multi else None  # collective: every rank calls save
        if not main:
            return None
        state = {"format": 1, "step": step_now, "optimizer": opt.state_dict(), "data": stream.state(),
                 "rng": rng_state(), "elapsed_s": elapsed_before + (time.time() - t0)}
        if rngs is not None:
            state["rng_ranks"] = rngs
        extra = {}
        if job.aux_module is not None:
            state["aux_optimizer"] = aux_opt.state_dict()
            extra["aux"] = job.aux_module.state_dict()
        if job.extra_files is not None:
            extra.update(job.extra_files())
        d = ckpt.save_pretrained(model, ckpt.checkpoint_dir(out_dir, step_now), ema_state=ema.state_dict(),
                                 config=job.configs, step=step_now, extra_tensors=extra, train_state=state)
        ckpt.prune_checkpoints(out_dir, keep=2)
        return d

    def ema_model() -> nn.Module:
        m = copy.deepcopy(ckpt.unwrap(model))
        ema.copy_to(m)
        return m.eval()

    def run_eval(step_now: int) -> dict:
        if job.evaluate is None or not main:
            return {}
        was = model.training
        with isolated_rng(), torch.no_grad():
            res = job.evaluate(model, ema_model(), step_now)
        model.train(was)
        row = {"step": step_now, "split": "val", **{k: _to_float(v) for k, v in res.items()}}
        append_jsonl(metrics_path, row)
        history.append(row)
        log(f"eval step {step_now}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                   if k not in ("step", "split")))
        return row

    t0 = time.time()
    last_ckpt = latest
    final_metrics: dict = {}
    stopped_early = False
    if train_cfg.compile:  # regional: each transformer block (accel.compile_blocks), names unchanged
        compile_blocks(model)
    fwd_model = ddp_model
    model.train()
    if job.aux_module is not None:
        job.aux_module.train()

    bar = None
    if progress == "tqdm" and main and step < train_cfg.steps:
        bar = tqdm(total=train_cfg.steps, initial=step, desc="train", dynamic_ncols=True)
    window: dict[str, float] = {}
    window_n = 0
    t_window = time.time()
    trainable = [p for p in model.parameters() if p.requires_grad]

    while step < train_cfg.steps:
        lr = lr_at(step, train_cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        if aux_opt is not None:
            for g in aux_opt.param_groups:
                g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        metrics_acc: dict[str, float] = {}
        aux_items = []
        for micro in range(train_cfg.grad_accum):
            idx = stream.next()
            # DDP: all-reduce the gradients only on the last micro-batch
            no_sync = ddp_model.no_sync() if multi and micro < train_cfg.grad_accum - 1 else contextlib.nullcontext()
            with no_sync:
                with autocast(device, train_cfg.precision):
                    loss, metrics, aux = job.compute_loss(fwd_model, idx, step, micro)
                lval = _to_float(loss)
                # one rank alone must not stop (the others would wait in the all-reduce): a NaN loss
                # makes the averaged gradient norm NaN on every rank, which stops them all below
                if not math.isfinite(lval) and not multi:
                    raise _non_finite(job, metrics_path, step, lval, "loss", last_ckpt, log, bar)
                (loss / train_cfg.grad_accum).backward()
            aux_items.append(aux)
            for k, v in metrics.items():
                metrics_acc[k] = metrics_acc.get(k, 0.0) + _to_float(v) / train_cfg.grad_accum
        max_norm = train_cfg.grad_clip if train_cfg.grad_clip > 0 else float("inf")
        gnorm = _to_float(torch.nn.utils.clip_grad_norm_(trainable, max_norm))
        if not math.isfinite(gnorm):
            raise _non_finite(job, metrics_path, step, gnorm, "gradient norm", last_ckpt, log, bar)
        opt.step()
        ema.update(model)
        if job.aux_step is not None:
            aux_opt.zero_grad(set_to_none=True)
            res = job.aux_step(aux_items, step)
            if res is not None:
                aux_loss, aux_metrics = res
                aux_loss.backward()
                if multi:
                    du.all_reduce_grads(job.aux_module)
                torch.nn.utils.clip_grad_norm_(job.aux_module.parameters(), max_norm)
                aux_opt.step()
                for k, v in aux_metrics.items():
                    metrics_acc[k] = _to_float(v)
        del aux_items
        step += 1
        metrics_acc.update(lr=lr, grad_norm=gnorm)
        for k, v in metrics_acc.items():
            window[k] = window.get(k, 0.0) + v
        window_n += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{metrics_acc.get('loss', 0.0):.4g}", refresh=False)

        if train_cfg.log_every and step % train_cfg.log_every == 0 or step == train_cfg.steps:
            now = time.time()
            means = {k: v / window_n for k, v in window.items()}
            if multi:  # collective: the logged values are means over all ranks
                means = du.all_reduce_mean(means)
            row = {"step": step, **means,
                   "sec_per_step": (now - t_window) / window_n, "elapsed_s": elapsed_before + now - t0}
            if main:
                append_jsonl(metrics_path, row)
                history.append(row)
            if progress == "log" and main:
                keys = [k for k in ("loss", "rec_loss", "psnr", "d_loss") if k in row]
                left = (train_cfg.steps - step) * row["sec_per_step"]
                log(f"step {step}/{train_cfg.steps} " + " ".join(f"{k} {row[k]:.4g}" for k in keys)
                    + f" lr {lr:.3g} ({row['sec_per_step']:.3f} s/step, {_duration(left)} left)")
            window, window_n, t_window = {}, 0, now

        stop = False
        if job.callback is not None:
            if main:
                stop = job.callback(step, dict(metrics_acc)) is False
            if multi:
                stop = du.any_true(stop)
        if train_cfg.eval_every and step % train_cfg.eval_every == 0 and step < train_cfg.steps:
            run_eval(step)
        if step == train_cfg.steps or stop or (train_cfg.ckpt_every and step % train_cfg.ckpt_every == 0):
            last_ckpt = save(step) or last_ckpt  # saved before the final evaluation: a failing one loses nothing
        if stop:
            stopped_early = True
            log(f"stopped by the callback at step {step}; checkpoint {last_ckpt}")
            break

    if bar is not None:
        bar.close()
    if job.data_source is not None:
        job.data_source.stop_prefetch()
    if multi:  # every rank returns rank 0's checkpoint path
        shared = du.broadcast_object(str(last_ckpt) if last_ckpt is not None else None)
        last_ckpt = Path(shared) if shared else None
    done_eval = any(r.get("split") == "val" and r.get("step") == step for r in history)
    if step == train_cfg.steps and not stopped_early and not done_eval:
        final_metrics = run_eval(step)  # also when a resumed, finished run's evaluation failed the first time
    if not final_metrics:
        for r in reversed(history):
            if r.get("split") == "val":
                final_metrics = r
                break
    elapsed = elapsed_before + (time.time() - t0)
    model.eval()
    result = TrainResult(model=model, ema_model=ema_model(), history=history, out_dir=out_dir, step=step,
                         elapsed_s=elapsed, checkpoint=last_ckpt, final_metrics=final_metrics,
                         resumed_from=resumed_from, stopped_early=stopped_early)
    return result


def _non_finite(job, metrics_path, step, value, what, last_ckpt, log, bar) -> NonFiniteLossError:
    if bar is not None:
        bar.close()
    row = {"step": step + 1, "event": "non_finite", "what": what, "value": str(value)}
    if job.rank == 0:
        append_jsonl(metrics_path, row)
    where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
    msg = (f"non-finite {what} ({value}) at step {step + 1}; training stopped and nothing was saved after it "
           f"({where}). Try a lower lr/blr, more warmup, grad_clip > 0, or precision='fp32'.")
    log(msg)
    return NonFiniteLossError(msg, step + 1)


def check_config_types(**items) -> None:
    """``name=(value, ConfigClass)``: a ``TypeError`` naming the argument when a config is of another type."""
    for name, (value, tp) in items.items():
        if not isinstance(value, tp):
            raise TypeError(f"{name} must be a {tp.__name__}, got {type(value).__name__}")


def save_sample_figure(path: Path, rows: list[torch.Tensor], labels: list[str]) -> None:
    """The figure an evaluation leaves in ``out_dir/samples``: rows of images with labels."""
    save_figure(labelled_grid([r.cpu() for r in rows], row_labels=labels, scale=2), path)
