"""One training loop for tokenizers and generators (DETOK_SPEC §3).

Public API::

    train_tokenizer(tok_cfg, train_cfg, data_cfg, out_dir, device="auto", callback=None,
                    init_from=None, progress="auto", log=print) -> TrainResult
    train_generator(family, gen_cfg, train_cfg, data_cfg, tokenizer, out_dir, device="auto",
                    callback=None, progress="auto", log=print) -> TrainResult

What the loop does, per optimizer step (DETOK_SPEC §3.1 "One step"):

1. set the lr of every group: ``lr = blr·batch·accum/256`` (or ``train_cfg.lr`` when > 0),
   linear warmup over ``warmup_frac·steps`` steps, then half-cosine to ``min_lr`` (or constant);
2. ``grad_accum`` micro-batches: forward under ``device.autocast`` (bf16 on CUDA, fp32 on CPU),
   loss / accum, backward; a non-finite loss stops the run (:class:`NonFiniteLossError`) and the
   last good checkpoint stays the newest;
3. clip the global grad norm (``grad_clip`` > 0), AdamW step (β from the config; no weight decay
   for 1-D params and names containing ln, bias, embedding, norm, gamma, embed, token, diffloss);
4. EMA update (trainable params: ``e ← d·e + (1−d)·p``; frozen params are *copied*, which is
   the reference's behaviour and matters for decoder-only fine-tuning, DETOK_SPEC §3.2);
5. tokenizers with a GAN: a discriminator step on (x, x̂.detach()) with its own AdamW, same lr,
   schedule and clipping, once ``step >= gan_start_step``.

Every ``log_every`` steps a row (window means) goes to ``out_dir/metrics.jsonl`` and to the
progress display (tqdm when interactive, plain lines headless); every ``eval_every`` steps (and
at the end) evaluation metrics and a sample figure go to ``out_dir/samples``; every
``ckpt_every`` steps (and at the end) a checkpoint goes to ``out_dir/checkpoints`` (see
``checkpoint.py``). ``callback(step, metrics)`` is called after every step with plain floats;
returning ``False`` stops the run cleanly (with a checkpoint).

Resume: re-running with the same ``out_dir`` continues from the newest complete checkpoint.
The state holds the optimizers, the step, the EMA, the RNG states (torch, numpy, python) and
the data position; the data order is a permutation drawn from ``(seed, epoch)`` and flips from
``(seed, step)``, so on the CPU a run killed and resumed ends with bit-identical weights.

Multi-GPU (torchrun, ``distributed.py``): ``rank``/``world_size`` shard every global batch
(``batch_size`` is global; each rank takes ``batch_size / world_size``), the model is wrapped in
DDP, the discriminator's gradients are all-reduced, logged metrics are means over ranks, and
rank 0 alone writes checkpoints (with every rank's RNG state) and logs.
Taught in ``notebooks/03_train_tokenizer.ipynb``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from . import checkpoint as ckpt
from .config import DataConfig, GeneratorConfig, TokenizerConfig, TrainConfig
from .device import autocast, pick_device, seed_everything

NO_DECAY_KEYS = ("ln", "bias", "embedding", "norm", "gamma", "embed", "token", "diffloss")
PROGRESS_MODES = ("auto", "tqdm", "log", "none")
# run settings that may change between a run and its resumption (everything else must match)
_RESUMABLE_CHANGES = {"steps", "log_every", "eval_every", "ckpt_every", "num_workers", "compile", "checkpoint"}


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


# ==============================================================================================
# optimisation pieces
# ==============================================================================================


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay for params with ndim < 2 or a name containing one of NO_DECAY_KEYS
    (DETOK_SPEC §3.1; so ``patch_embed``, ``positional_embedding``, ``mask_token`` get none)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or any(k in name for k in NO_DECAY_KEYS):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def no_decay_names(model: nn.Module) -> list[str]:
    """Names of the trainable parameters that get no weight decay (for tests and notebooks)."""
    return [n for n, p in model.named_parameters()
            if p.requires_grad and (p.ndim < 2 or any(k in n for k in NO_DECAY_KEYS))]


def make_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; ``fused`` (default: when every parameter is on CUDA) uses
    the single-kernel implementation, the same update as the default one up to float round-off."""
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.effective_lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                             **({"fused": True} if fused else {}))


def warmup_steps(cfg: TrainConfig) -> int:
    return int(cfg.warmup_frac * cfg.steps)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    Linear warmup ``lr·step/W`` for ``step < W = int(warmup_frac·steps)`` (step 0 → 0, as the
    reference's per-iteration schedule), then ``cosine``: ``min_lr + (lr − min_lr)·½(1 + cos(π·t))``
    with ``t = (step − W)/(steps − W)``, or ``constant``: ``lr``.
    """
    base, total, w = cfg.effective_lr, cfg.steps, warmup_steps(cfg)
    if step < w:
        return base * step / w
    if cfg.lr_schedule == "constant":
        return base
    t = (step - w) / max(1, total - w)
    return cfg.min_lr + (base - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


class EMA:
    """Exponential moving average of a model's state (DETOK_SPEC §3.1: constant decay, no warmup).

    Trainable parameters: ``e ← decay·e + (1 − decay)·p``. Frozen parameters and buffers are
    copied from the live model (so in decoder-only fine-tuning the EMA encoder equals the online
    encoder, DETOK_SPEC §3.2). ``state_dict()`` has the model's key names.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay={decay!r} is out of range; allowed [0, 1]")
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in ckpt.model_state(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        m = ckpt.unwrap(model)
        params = dict(m.named_parameters())
        avg_s, avg_p = [], []
        for k, v in m.state_dict().items():
            s = self.shadow[k]
            p = params.get(k)
            if p is not None and p.requires_grad and s.is_floating_point():
                avg_s.append(s)
                avg_p.append(p.detach())
            else:
                s.copy_(v)
        if avg_s:  # the same two ops per tensor as s.mul_(d).add_(p, alpha=1-d), in a few kernels
            torch._foreach_mul_(avg_s, self.decay)
            torch._foreach_add_(avg_s, avg_p, alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(sd)
        if missing:
            raise ckpt.CheckpointError(f"EMA state is missing {sorted(missing)[:3]}")
        for k in self.shadow:
            self.shadow[k].copy_(sd[k])

    def copy_to(self, model: nn.Module) -> nn.Module:
        ckpt.unwrap(model).load_state_dict(self.shadow)
        return model


# ==============================================================================================
# reproducible data order and RNG state
# ==============================================================================================


class IndexStream:
    """Batches of dataset indices: epoch ``e`` is ``randperm(n)`` from seed ``(seed, e)``, cut in
    ``batch_size`` pieces (drop_last), rank ``r`` of ``world_size`` takes every ``world_size``-th
    batch. ``state()``/``load_state()`` give the exact position."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if n < batch_size * world_size:
            raise ValueError(f"batch_size={batch_size} (x{world_size} ranks) is larger than the dataset "
                             f"({n} items); lower batch_size or use more data")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_epoch = n // (batch_size * world_size)
        self.epoch, self.pos = 0, 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.n, generator=g)
        return self._perm

    def next(self) -> torch.Tensor:
        if self.pos >= self.per_epoch:
            self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
        b = self.pos * self.world_size + self.rank
        idx = self._permutation()[b * self.batch_size:(b + 1) * self.batch_size]
        self.pos += 1
        return idx

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state(self, s: dict) -> None:
        self.epoch, self.pos, self._perm = int(s["epoch"]), int(s["pos"]), None


def _step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + salt) % (2**62))


def rng_state() -> dict:
    """torch (CPU and CUDA), numpy and python RNG states as weights_only-loadable objects."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # the current device only: under torchrun each process owns one GPU, and touching the
        # others would create a context on every GPU of the node
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        c = state["cuda"]
        if isinstance(c, (list, tuple)):  # older checkpoints: one state per visible device
            c = c[torch.cuda.current_device()] if torch.cuda.current_device() < len(c) else c[0]
        torch.cuda.set_rng_state(c)


@contextlib.contextmanager
def isolated_rng():
    """Run a block (evaluation, sample figures) without disturbing the training RNG streams."""
    s = rng_state()
    try:
        yield
    finally:
        set_rng_state(s)


def _tensor_images(ds) -> torch.Tensor | None:
    """The whole dataset as a uint8 or float tensor when it is held in memory (fast path)."""
    for attr in ("images_uint8", "images"):
        t = getattr(ds, attr, None)
        if isinstance(t, torch.Tensor) and t.ndim == 4:
            return t
    return None


class ImageSource:
    """Images and labels by index, from an in-memory tensor or any ``(img, label)`` Dataset.

    Flips are drawn from ``(seed, step)``, never from the global RNG (DataLoader workers or
    resumption cannot change them). For file datasets, a DataLoader with workers reads each
    batch of indices (``num_workers`` from the data config).
    """

    def __init__(self, ds, num_workers: int = 0):
        self.ds = ds
        self.tensor = _tensor_images(ds)
        self.labels = getattr(ds, "labels", None)
        self.num_workers = num_workers
        self.num_classes = int(getattr(ds, "num_classes", 0) or 0) or None
        self.prefetch = None

    def __len__(self):
        return len(self.ds)

    def start_prefetch(self, stream: "IndexStream") -> None:
        """File datasets with workers: read ``stream``'s coming batches in persistent background
        workers (``streaming.StreamLoader``); in-memory data needs none."""
        if self.tensor is None and self.num_workers > 0 and self.prefetch is None:
            from .streaming import StreamLoader

            self.prefetch = StreamLoader(self.ds, stream, self.num_workers)

    def stop_prefetch(self) -> None:
        if self.prefetch is not None:
            self.prefetch.close()
            self.prefetch = None

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prefetch is not None:
            got = self.prefetch.get(idx)
            if got is not None:
                return got
        if self.tensor is not None:
            x = self.tensor[idx]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            y = torch.as_tensor(self.labels)[idx].long() if self.labels is not None else torch.zeros(len(idx),
                                                                                                     dtype=torch.long)
            return x, y
        items = [self.ds[int(i)] for i in idx] if self.num_workers == 0 else self._load_parallel(idx)
        x = torch.stack([torch.as_tensor(a) for a, _ in items]).float()
        y = torch.as_tensor([int(b) for _, b in items], dtype=torch.long)
        return x, y

    def _load_parallel(self, idx):
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(self.ds, idx.tolist()), batch_size=len(idx),
                                             num_workers=self.num_workers, collate_fn=list)
        return next(iter(loader))


def _flip_mask(n: int, g: torch.Generator, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Which of this rank's ``n`` images to mirror: the draws of the whole global batch
    (``n·world_size``), sliced for ``rank``, so the flips do not depend on the number of ranks."""
    return (torch.rand(n * world_size, generator=g) < 0.5)[rank * n:(rank + 1) * n]


def _flip(x: torch.Tensor, g: torch.Generator, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    mask = _flip_mask(x.shape[0], g, rank, world_size)
    return torch.where(mask.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)


# ==============================================================================================
# the loop
# ==============================================================================================


def _to_float(v) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


def _resolve_progress(progress: str) -> str:
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress={progress!r} is not known; allowed: {', '.join(PROGRESS_MODES)}")
    if progress == "auto":
        return "tqdm" if sys.stderr.isatty() else "log"
    return progress


def _config_diff(old: dict, new: dict, ignore=_RESUMABLE_CHANGES) -> list[str]:
    """``group.key: old -> new`` for every setting that differs (keys in ``ignore`` excepted)."""
    new = json.loads(json.dumps(new, default=ckpt._json_default))
    out = []
    for group, values in new.items():
        prev = old.get(group)
        if not isinstance(values, dict) or not isinstance(prev, dict):
            continue
        for k, v in values.items():
            if k in ignore:
                continue
            pv = prev.get(k)
            if pv != v:
                out.append(f"{group}.{k}: {pv!r} -> {v!r}")
    return out


@dataclass
class _Job:
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


def _fit(job: _Job) -> TrainResult:
    cfg, out_dir, device, model = job.train_cfg, Path(job.out_dir), job.device, job.model
    main = job.rank == 0
    log = job.log if main else (lambda *_: None)
    progress = _resolve_progress(job.progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"

    # multi-process (torchrun): DDP broadcasts rank 0's initial weights and averages gradients;
    # cfg.batch_size is the global batch, each rank takes its slice (see distributed.py)
    multi = job.world_size > 1
    ddp_model = model
    if multi:
        from . import distributed as du

        ddp_model = du.wrap_ddp(model, device)
        if job.aux_module is not None:
            du.broadcast_module(job.aux_module)
    opt = make_optimizer(model, cfg)
    ema = EMA(model, cfg.ema_decay)
    if job.init_ema_state is not None:
        ema.load_state_dict(job.init_ema_state)
    aux_opt = make_optimizer(job.aux_module, cfg) if job.aux_module is not None else None
    rank_batch = cfg.batch_size
    if multi:
        rank_batch = du.per_rank_batch(cfg.batch_size, job.world_size)
    stream = IndexStream(job.num_items, rank_batch, cfg.seed, job.rank, job.world_size)
    step, elapsed_before, resumed_from = 0, 0.0, None

    # ---------------------------------------------------------------- resume
    latest = ckpt.latest_checkpoint(out_dir, log=log) if main else None
    if multi:  # rank 0 chooses (and verifies) the checkpoint every rank loads
        latest = du.broadcast_object(latest)
    if latest is not None:
        payload = json.loads((latest / ckpt.CONFIG_FILE).read_text())
        diff = _config_diff(payload.get("configs", {}), {k: (v.to_dict() if hasattr(v, "to_dict") else v)
                                                          for k, v in job.configs.items()})
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
            seed_everything(cfg.seed + step, job.rank)
            log(f"the checkpoint was written by {len(rng_ranks)} process(es), this run has {job.world_size}: "
                "data order and weights continue exactly, the random streams are re-seeded")
        elapsed_before = float(state.get("elapsed_s", 0.0))
        # drop metric rows written after the checkpoint by the interrupted run
        if main:
            rows = [r for r in _read_jsonl(metrics_path) if r.get("step", 0) <= step]
            _write_jsonl_atomic(metrics_path, rows)
        log(f"resuming from {latest} (step {step}/{cfg.steps})")
    elif metrics_path.exists() and main:
        metrics_path.unlink()  # a run that never reached its first checkpoint starts over
    if multi:
        du.barrier()
    if job.data_source is not None:
        job.data_source.start_prefetch(stream)
    history = _read_jsonl(metrics_path)

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
        _append_jsonl(metrics_path, row)
        history.append(row)
        log(f"eval step {step_now}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                   if k not in ("step", "split")))
        return row

    t0 = time.time()
    last_ckpt = latest
    final_metrics: dict = {}
    stopped_early = False
    if cfg.compile:  # regional: each transformer block (accel.compile_blocks), names unchanged
        from .accel import compile_blocks

        compile_blocks(model)
    fwd_model = ddp_model
    model.train()
    if job.aux_module is not None:
        job.aux_module.train()

    bar = None
    if progress == "tqdm" and main and step < cfg.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True)
    window: dict[str, float] = {}
    window_n = 0
    t_window = time.time()
    trainable = [p for p in model.parameters() if p.requires_grad]

    while step < cfg.steps:
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        if aux_opt is not None:
            for g in aux_opt.param_groups:
                g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        metrics_acc: dict[str, float] = {}
        aux_items = []
        for micro in range(cfg.grad_accum):
            idx = stream.next()
            # DDP: all-reduce the gradients only on the last micro-batch
            no_sync = ddp_model.no_sync() if multi and micro < cfg.grad_accum - 1 else contextlib.nullcontext()
            with no_sync:
                with autocast(device, cfg.precision):
                    loss, metrics, aux = job.compute_loss(fwd_model, idx, step, micro)
                lval = _to_float(loss)
                # one rank alone must not stop (the others would wait in the all-reduce): a NaN loss
                # makes the averaged gradient norm NaN on every rank, which stops them all below
                if not math.isfinite(lval) and not multi:
                    raise _non_finite(job, metrics_path, step, lval, "loss", last_ckpt, log, bar)
                (loss / cfg.grad_accum).backward()
            aux_items.append(aux)
            for k, v in metrics.items():
                metrics_acc[k] = metrics_acc.get(k, 0.0) + _to_float(v) / cfg.grad_accum
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
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

        if cfg.log_every and step % cfg.log_every == 0 or step == cfg.steps:
            now = time.time()
            means = {k: v / window_n for k, v in window.items()}
            if multi:  # collective: the logged values are means over all ranks
                means = du.all_reduce_mean(means)
            row = {"step": step, **means,
                   "sec_per_step": (now - t_window) / window_n, "elapsed_s": elapsed_before + now - t0}
            if main:
                _append_jsonl(metrics_path, row)
                history.append(row)
            if progress == "log" and main:
                keys = [k for k in ("loss", "rec_loss", "psnr", "d_loss") if k in row]
                log(f"step {step}/{cfg.steps} " + " ".join(f"{k} {row[k]:.4g}" for k in keys)
                    + f" lr {lr:.3g} ({row['sec_per_step']:.3f} s/step)")
            window, window_n, t_window = {}, 0, now

        stop = False
        if job.callback is not None:
            if main:
                stop = job.callback(step, dict(metrics_acc)) is False
            if multi:
                stop = du.any_true(stop)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            run_eval(step)
        if step == cfg.steps or stop or (cfg.ckpt_every and step % cfg.ckpt_every == 0):
            if step == cfg.steps:
                final_metrics = run_eval(step)
            last_ckpt = save(step) or last_ckpt
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
        _append_jsonl(metrics_path, row)
    where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
    msg = (f"non-finite {what} ({value}) at step {step + 1}; training stopped and nothing was saved after it "
           f"({where}). Try a lower lr/blr, more warmup, grad_clip > 0, or precision='fp32'.")
    log(msg)
    return NonFiniteLossError(msg, step + 1)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


# ==============================================================================================
# tokenizers
# ==============================================================================================


def build_tokenizer(tok_cfg: TokenizerConfig, img_size: int) -> nn.Module:
    """``create_tokenizer(tok_cfg.model, ...)`` with the config's corruption settings."""
    from .tokenizer import create_tokenizer

    return create_tokenizer(tok_cfg.model, img_size=img_size, patch_size=tok_cfg.patch_size,
                            token_channels=tok_cfg.token_channels, gamma=tok_cfg.gamma,
                            mask_ratio=tok_cfg.mask_ratio, use_additive_noise=tok_cfg.use_additive_noise)


def freeze_encoder(model: nn.Module) -> list[str]:
    """Decoder-only fine-tuning (DETOK_SPEC §3.2): ``requires_grad=False`` for everything but the decoder."""
    frozen = []
    for name, p in ckpt.unwrap(model).named_parameters():
        if not name.startswith("decoder."):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def _save_sample_figure(path: Path, rows: list[torch.Tensor], labels: list[str]) -> None:
    from .viz import labelled_grid, save_figure

    save_figure(labelled_grid([r.cpu() for r in rows], row_labels=labels, scale=2), path)


def train_tokenizer(tok_cfg: TokenizerConfig, train_cfg: TrainConfig, data_cfg: DataConfig, out_dir,
                    device: str = "auto", callback: Callable | None = None, init_from=None, progress: str = "auto",
                    log: Callable = print, rank: int = 0, world_size: int = 1, vgg_path=None,
                    convnext_path=None, init_weights: str = "model") -> TrainResult:
    """Train (or resume, or just reload when finished) an l-DeTok tokenizer into ``out_dir``.

    ``tok_cfg``: model name, γ, M, additive noise, loss weights, ``decoder_only``.
    ``init_from``: a run or checkpoint directory to start from (online weights → model, EMA → EMA),
    used only when ``out_dir`` has no checkpoint yet; required for ``decoder_only``.
    ``init_weights="ema"`` starts the online model from the EMA weights instead, so a decoder-only
    fine-tune keeps the EMA encoder, and the latents, of ``init_from`` exactly (the official code
    starts from the online weights, DETOK_SPEC §3.2).
    ``callback(step, metrics)`` after each step (return False to stop). ``progress``: auto | tqdm |
    log | none. Returns :class:`TrainResult` (``ema_model`` is the EMA tokenizer in eval mode).
    """
    from .data import make_dataset
    from .losses import ReconstructionLoss
    from .metrics import psnr, ssim

    _check_types(tok_cfg=(tok_cfg, TokenizerConfig), train_cfg=(train_cfg, TrainConfig),
                 data_cfg=(data_cfg, DataConfig))
    if init_weights not in ("model", "ema"):
        raise ValueError(f"init_weights={init_weights!r} is not known; allowed: model, ema")
    if tok_cfg.decoder_only and init_from is None and ckpt.latest_checkpoint(out_dir, log=lambda *_: None) is None:
        raise ValueError("decoder_only=True needs init_from=<a pretrained tokenizer run or checkpoint directory>")
    dev = pick_device(device)
    seed_everything(train_cfg.seed, rank)
    model = build_tokenizer(tok_cfg, data_cfg.img_size)
    init_ema = None
    if init_from is not None and ckpt.latest_checkpoint(out_dir, log=lambda *_: None) is None:
        src = ckpt.resolve_checkpoint(init_from, log=log)
        ckpt.load_weights(model, src, which=init_weights)
        if (src / ckpt.EMA_FILE).is_file():
            init_ema = ckpt.load_tensors(src / ckpt.EMA_FILE)
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
            x = _flip(x, _step_generator(train_cfg.seed, step, micro), rank, world_size)
        return x

    def compute_loss(fwd, idx, step, micro):
        x = batch(idx, step, micro)
        recon, kl = fwd(x)
        loss, metrics = loss_mod.generator_loss(recon, x, kl, step)
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
        _save_sample_figure(Path(out_dir) / "samples" / f"recon_step{step:07d}.png",
                            [val_x[:n], r_live[:n], r_ema[:n]], ["input", "model", "EMA"])
        return res

    configs = {"tokenizer": tok_cfg, "tokenizer_train": train_cfg, "data": data_cfg}
    job = _Job(model=model, train_cfg=train_cfg, out_dir=Path(out_dir), device=dev, num_items=len(source),
               compute_loss=compute_loss, configs=configs, evaluate=evaluate,
               aux_module=loss_mod.discriminator, aux_step=aux_step if loss_mod.discriminator is not None else None,
               init_ema_state=init_ema, callback=callback, progress=progress, log=log, rank=rank,
               world_size=world_size, data_source=source)
    return _fit(job)


def _check_types(**items):
    for name, (value, tp) in items.items():
        if not isinstance(value, tp):
            raise TypeError(f"{name} must be a {tp.__name__}, got {type(value).__name__}")


# ==============================================================================================
# generators
# ==============================================================================================


def _tokenizer_fingerprint(tokenizer: nn.Module, data_cfg: DataConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(getattr(tokenizer, "spec", None), sort_keys=True).encode())
    h.update(json.dumps(data_cfg.to_dict(), sort_keys=True).encode())
    for k, v in sorted(tokenizer.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def encode_moments(tokenizer, source: ImageSource, device, batch_size: int = 256, flip: bool = False,
                   precision: str = "auto", log: Callable = print) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image, channels-first ``(N, C, h, w)`` (no mask, no noise).

    fp32 on the CPU; the reference's stats pass is fp32 too (DETOK_SPEC §4.0).
    """
    n = len(source)
    means, stds = [], []
    t0 = time.time()
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        x = source.get(idx)[0].to(device)
        if flip:
            x = x.flip(-1)
        with autocast(device, precision):
            _, _, post = tokenizer.encode(x)
        g = tokenizer.grid_size
        # contiguous NCHW: a channels-last view would follow another conv path than the reloaded cache
        means.append(post.mean.float().transpose(1, 2).unflatten(2, (g, g)).cpu().contiguous())
        stds.append(post.std.float().transpose(1, 2).unflatten(2, (g, g)).cpu().contiguous())
    log(f"encoded {n} images{' (flipped)' if flip else ''} in {time.time() - t0:.1f} s")
    return torch.cat(means).contiguous(), torch.cat(stds).contiguous()


def channel_stats(means: torch.Tensor, stds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std of posterior means ``(N, C, h, w)`` (DETOK_SPEC §4.0).

    With the posterior ``stds`` it is the std of the posterior *samples* μ + σ·ε instead
    (law of total variance: Var μ + E σ²), the distribution a generator trains on.
    """
    x = means.double().transpose(0, 1).flatten(1)
    mean = x.mean(1)
    var = x.pow(2).mean(1) - mean.pow(2)
    if stds is not None:
        var = var + stds.double().transpose(0, 1).flatten(1).pow(2).mean(1)
    return mean.float(), var.clamp_min(1e-24).sqrt().float()


def compute_latent_stats(tokenizer, data_cfg: DataConfig, device="auto", batch_size: int = 256,
                         max_images: int | None = None, log: Callable = print, of: str = "mean"):
    """One pass over the training images (no flip, no mask, fp32) -> per-channel (mean, std) of
    the posterior means (``of="mean"``, the official code) or samples (``of="sample"``)."""
    if of not in ("mean", "sample"):
        raise ValueError(f"of={of!r} is not known; allowed: mean, sample")
    from .data import make_dataset

    dev = pick_device(device)
    src = ImageSource(make_dataset(data_cfg.replace(hflip=False), "train"), data_cfg.num_workers)
    if max_images is not None and max_images < len(src):
        src = ImageSource(torch.utils.data.Subset(src.ds, range(max_images)), data_cfg.num_workers)
    tokenizer.eval()
    m, s = encode_moments(tokenizer, src, dev, batch_size, precision="fp32", log=log)
    return channel_stats(m, s if of == "sample" else None)


def train_generator(family: str, gen_cfg: GeneratorConfig, train_cfg: TrainConfig, data_cfg: DataConfig,
                    tokenizer: nn.Module, out_dir, device: str = "auto", callback: Callable | None = None,
                    progress: str = "auto", log: Callable = print, rank: int = 0, world_size: int = 1,
                    stats_max_images: int | None = None, eval_samples: int = 20, latent_cache_dir=None,
                    **generator_kwargs) -> TrainResult:
    """Train (or resume) ``create_generator(f"{family}_{gen_cfg.size}", ...)`` on tokenizer latents.

    The tokenizer is frozen and in eval mode. Per-channel latent statistics (of the posterior means
    or samples, ``gen_cfg.latent_stats``) are computed once (DETOK_SPEC §4.0) and cached in
    ``out_dir/latent_stats.safetensors``, then set on the tokenizer (``set_latent_stats``), so the
    generator trains on normalized latents and ``tokenizer.detokenize`` decodes its samples. With
    ``gen_cfg.cache_latents`` the posterior moments of every image (and of its mirror image when
    ``data_cfg.hflip``) are computed once and cached in ``out_dir/latent_cache.safetensors``; each
    step then samples ``(μ + σ·ε − m_c)/s_c``, the same distribution as ``tokenize(x,
    sampling=True)`` on the fly.
    ``latent_cache_dir``: keep the latent cache there instead (named by the tokenizer's fingerprint),
    so several generators of one tokenizer share it. ``eval_samples`` images are generated (EMA)
    for the sample figure at each evaluation (0: none).
    ``generator_kwargs`` go to ``create_generator``. ``result.latent_stats`` = (mean, std).
    """
    from .data import make_dataset
    from .generators import create_generator

    _check_types(gen_cfg=(gen_cfg, GeneratorConfig), train_cfg=(train_cfg, TrainConfig),
                 data_cfg=(data_cfg, DataConfig))
    if not isinstance(eval_samples, int) or isinstance(eval_samples, bool) or eval_samples < 0:
        raise ValueError(f"eval_samples={eval_samples!r} must be an int >= 0")
    if not isinstance(family, str) or not family:
        raise ValueError(f"family={family!r} must be a generator family name such as 'SiT' or 'DiT'")
    if not isinstance(tokenizer, nn.Module) or not hasattr(tokenizer, "tokenize"):
        raise TypeError(f"tokenizer must be a tokenizer module (create_tokenizer / get_tokenizer), "
                        f"got {type(tokenizer).__name__}")
    from .generators.base import resolve_name

    resolve_name(f"{family}_{gen_cfg.size}")  # an unknown family fails before out_dir or any cache is written
    dev = pick_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer.to(dev).eval().requires_grad_(False)
    if tokenizer.img_size != data_cfg.img_size:
        raise ValueError(f"data_cfg.img_size={data_cfg.img_size} does not match the tokenizer's "
                         f"img_size={tokenizer.img_size}")

    train_ds = make_dataset(data_cfg.replace(hflip=False), "train")
    source = ImageSource(train_ds, data_cfg.num_workers)
    num_classes = source.num_classes or 10
    fp = _tokenizer_fingerprint(tokenizer, data_cfg)

    # ---- latent statistics (one pass) and the optional latent cache
    stats_path, cache_path = out_dir / "latent_stats.safetensors", out_dir / "latent_cache.safetensors"
    if latent_cache_dir is not None:
        cache_path = Path(latent_cache_dir) / f"latents-{fp}.safetensors"
    stats = cache = None
    if stats_path.is_file():
        s = ckpt.load_tensors(stats_path)
        from safetensors import safe_open

        with safe_open(str(stats_path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("fingerprint") == fp and meta.get("of", "mean") == gen_cfg.latent_stats:
                stats = (s["mean"], s["std"])
    if gen_cfg.cache_latents and cache_path.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(cache_path), "pt") as f:
                if (f.metadata() or {}).get("fingerprint") == fp:
                    cache = ckpt.load_tensors(cache_path)
        except Exception as e:  # a corrupt cache is rebuilt
            log(f"latent cache unreadable ({e}); rebuilding")
    t_cache = None
    if gen_cfg.cache_latents and cache is None:
        t0 = time.time()
        with isolated_rng():
            mean, std = encode_moments(tokenizer, source, dev, log=log)
            cache = {"mean": mean, "std": std}
            if data_cfg.hflip:
                cache["mean_flip"], cache["std_flip"] = encode_moments(tokenizer, source, dev, flip=True, log=log)
        if rank == 0:
            ckpt.save_tensors_atomic(cache_path, cache, metadata={"fingerprint": fp})
        t_cache = time.time() - t0
        log(f"latent cache built in {t_cache:.1f} s ({cache_path})")
    if stats is None:
        if cache is not None and stats_max_images is None:
            stats = channel_stats(cache["mean"], cache["std"] if gen_cfg.latent_stats == "sample" else None)
        else:
            with isolated_rng():
                stats = compute_latent_stats(tokenizer, data_cfg, dev, max_images=stats_max_images, log=log,
                                             of=gen_cfg.latent_stats)
        if rank == 0:
            ckpt.save_tensors_atomic(stats_path, {"mean": stats[0], "std": stats[1]},
                                     metadata={"fingerprint": fp, "of": gen_cfg.latent_stats})
    tokenizer.set_latent_stats(stats[0], stats[1])
    m_c = stats[0].view(1, -1, 1, 1).to(dev)
    s_c = stats[1].view(1, -1, 1, 1).to(dev)
    if cache is not None:
        cache = {k: v.to(dev) for k, v in cache.items()}

    seed_everything(train_cfg.seed, rank)
    name = f"{family}_{gen_cfg.size}"
    kwargs = dict(in_channels=tokenizer.token_channels, input_size=tokenizer.grid_size, num_classes=num_classes,
                  label_drop=gen_cfg.label_drop)
    kwargs.update(generator_kwargs)
    model = create_generator(name, **kwargs).to(dev)
    labels_all = torch.as_tensor(source.labels).long() if source.labels is not None else None

    def latents_for(idx, step, micro):
        g = _step_generator(train_cfg.seed, step, micro)
        flip = (_flip_mask(len(idx), g, rank, world_size) if data_cfg.hflip
                else torch.zeros(len(idx), dtype=torch.bool))
        if cache is not None:
            i = idx.to(dev)
            f = flip.view(-1, 1, 1, 1).to(dev)
            mu = torch.where(f, cache["mean_flip"][i], cache["mean"][i]) if data_cfg.hflip else cache["mean"][i]
            sd = torch.where(f, cache["std_flip"][i], cache["std"][i]) if data_cfg.hflip else cache["std"][i]
            z = mu + sd * torch.randn(mu.shape, device=dev)
            y = labels_all[idx].to(dev)
            return ((z - m_c) / s_c).contiguous(), y
        x, y = source.get(idx)
        x = x.to(dev, non_blocking=True)
        x = torch.where(flip.view(-1, 1, 1, 1).to(dev), x.flip(-1), x)
        with torch.no_grad():
            z = tokenizer.tokenize(x, sampling=True)
        return z.float().contiguous(), y.to(dev)

    def compute_loss(fwd, idx, step, micro):
        z, y = latents_for(idx, step, micro)
        loss = fwd(z, y)
        return loss, {"loss": loss.detach()}, None

    def evaluate(live, ema_m, step):
        from .generators import decode_latents

        n = eval_samples
        if n > 0:
            labels = torch.arange(n, device=dev) % num_classes
            gen = torch.Generator(device=dev).manual_seed(train_cfg.seed)
            kw = dict(cfg=gen_cfg.cfg, temperature=gen_cfg.temperature, generator=gen)
            if gen_cfg.num_sampling_steps:
                kw["num_steps"] = gen_cfg.num_sampling_steps
            with autocast(dev, train_cfg.precision):
                z = ema_m.generate(labels, **kw)
            imgs = decode_latents(tokenizer, z.float()).cpu()
            rows = [imgs[i:i + num_classes] for i in range(0, n, num_classes)]
            _save_sample_figure(out_dir / "samples" / f"samples_step{step:07d}.png", rows,
                                [f"EMA step {step}"] + [""] * (len(rows) - 1))
        # a held-out loss on fixed latents (same noise every eval)
        idx = torch.arange(min(len(source), 256))
        z, y = latents_for(idx, 0, 99)
        return {"train_subset_loss": ema_m.train()(z, y).detach()} if hasattr(ema_m, "train") else {}

    def extra_files():
        return {"latent_stats": {"mean": stats[0], "std": stats[1]}}

    configs = {"generator": gen_cfg, "generator_train": train_cfg, "data": data_cfg,
               "tokenizer_spec": {"spec": getattr(tokenizer, "spec", None), "fingerprint": fp,
                                  "checkpoint": getattr(tokenizer, "checkpoint_dir", None)}}
    job = _Job(model=model, train_cfg=train_cfg, out_dir=out_dir, device=dev, num_items=len(source),
               compute_loss=compute_loss, configs=configs, evaluate=evaluate, extra_files=extra_files,
               callback=callback, progress=progress, log=log, rank=rank, world_size=world_size,
               data_source=source if cache is None else None)
    result = _fit(job)
    result.latent_stats = (stats[0].clone(), stats[1].clone())
    result.extra["latent_cache_s"] = t_cache
    result.extra["tokenizer_fingerprint"] = fp
    return result


def load_latent_stats(directory) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) saved with a generator run or checkpoint directory."""
    d = Path(directory)
    for p in (d / "extra_latent_stats.safetensors", d / "latent_stats.safetensors"):
        if p.is_file():
            s = ckpt.load_tensors(p)
            return s["mean"], s["std"]
    c = ckpt.resolve_checkpoint(d)
    s = ckpt.load_tensors(c / "extra_latent_stats.safetensors")
    return s["mean"], s["std"]


__all__ = [
    "TrainResult", "NonFiniteLossError", "train_tokenizer", "train_generator", "lr_at", "EMA", "param_groups",
    "no_decay_names", "freeze_encoder", "build_tokenizer", "compute_latent_stats", "channel_stats",
    "load_latent_stats", "IndexStream", "rng_state", "set_rng_state", "isolated_rng",
]
