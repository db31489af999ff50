"""One generic training loop for every model of the toolkit: steps, atomic checkpoints that embed their
config, exact resume, progress, live curves in notebooks, mixed precision and multi-GPU (DDP).

The loop knows nothing about the model. A system supplies

- ``step_fn(model, batch) -> (loss, logs)``: a scalar loss tensor to minimise and a dict of floats to log;
- ``data``: either ``batch_fn(step, generator) -> batch`` (the trainer owns and checkpoints the
  ``torch.Generator``) or a ``torch.utils.data.Dataset``, read in an epoch-seeded order;
- optionally ``val_fn(model) -> dict of floats``, called on the unwrapped model in eval mode.

Exact resume: a run interrupted at any checkpoint and resumed with a fresh process reproduces the
uninterrupted run bit for bit (parameters, optimizer state, logged losses). A checkpoint therefore holds the
model, optimizer and scheduler states, the step, the partial logging window, the history and every RNG
state (python ``random``, numpy's global generator, torch CPU and CUDA, the data generator), per rank.
Validation runs with forked RNGs, so it neither perturbs training nor depends on when it runs.

Distributed: launched by ``torchrun``, the trainer reads RANK / WORLD_SIZE / LOCAL_RANK, joins the process
group (nccl on CUDA, gloo on CPU), wraps the model in DistributedDataParallel, gives each rank a distinct
contiguous slice of the global batch (so N ranks on a global batch compute the gradient of one process on
that batch), averages logged values over ranks, and lets only rank 0 write checkpoints, logs and progress.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from toolkit.io import DataError, atomic_save_text, atomic_write
from toolkit.training.checkpoints import (
    CHECKPOINT_FORMAT,
    CKPT_RE,
    REQUIRED_KEYS,
    checkpoint_file,
    latest_checkpoint,
    load_checkpoint,
)

__all__ = [
    "AMP_MODES", "Callback", "DistInfo", "LivePlot", "RunLock", "Trainer", "TrainerConfig", "check_run_fingerprint",
    "data_fingerprint", "distributed_info", "init_distributed", "seed_everything", "shard_batch", "step_schedule",
    "trainer_config",
]

logger = logging.getLogger(__name__)

AMP_MODES = ("off", "bf16")
DDP_MODES = ("wrap", "allreduce")
RUN_FILE = "run.json"
"""In a run folder: the fingerprint of the data the run started on (checked when it resumes)."""
LOCK_FILE = ".lock"
_RUN_LOCKS: dict[str, list] = {}
"""Run folders this process has locked: resolved path -> [open lock file, count] (RunLock is re-entrant)."""
_warned: set[str] = set()


# ------------------------------------------------------------------------------------------- config


@dataclass
class TrainerConfig:
    """Knobs of :class:`Trainer`. Stored in every checkpoint as a dict."""

    max_steps: int = 1000
    """Total optimisation steps (a resumed run continues up to this step)."""
    batch_size: int = 8
    """Global batch size for Dataset data (split across ranks); ignored when data is a batch function."""
    log_every: int = 10
    """Append the mean of the step logs over the last ``log_every`` steps to the history."""
    val_every: int = 0
    """Call ``val_fn`` every this many steps and at the end (0: only at the end, if a val_fn is given)."""
    ckpt_every: int = 500
    """Write a checkpoint every this many steps (0: only at the end). Needs ``out_dir``."""
    keep_last: int | None = 3
    """Number of step checkpoints kept in ``out_dir/checkpoints`` (None: keep all)."""
    seed: int = 0
    """Seeds python/numpy/torch (plus the rank) when a fresh run starts in ``fit``, and the data order."""
    device: str = "auto"
    """"auto" (CUDA if available, the local rank's GPU under DDP), "cpu", "cuda", "cuda:1", ..."""
    amp: str = "off"
    """Mixed precision: "off" or "bf16" (bf16 autocast of ``step_fn``; CUDA only, ignored with a warning on CPU)."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (also logs ``grad_norm``); None: no clipping."""
    out_dir: str | None = None
    """Run folder for checkpoints/, history.json and tb/ (None: write nothing)."""
    progress: bool = True
    """Show a tqdm progress bar (rank 0 only)."""
    tensorboard: bool = False
    """Also write scalars to ``out_dir/tb`` (needs the tensorboard package; warns once and continues without)."""
    drop_last: bool = True
    """Dataset data: drop the last incomplete batch of each epoch (required under DDP)."""
    num_workers: int = 0
    """Dataset data: DataLoader worker processes. 0 keeps resume exact for any dataset; with workers,
    resume is exact only if ``dataset[i]`` is deterministic (do random augmentation in ``step_fn``)."""
    ddp: str = "wrap"
    """Under torchrun: "wrap" (DistributedDataParallel; ``step_fn`` must call ``model(...)``, i.e. forward) or
    "allreduce" (plain module, gradients averaged after backward; any method of the model may be called)."""
    find_unused_parameters: bool = False
    """Passed to DistributedDataParallel, for models whose step uses only some parameters."""
    deterministic: bool = False
    """Call ``torch.use_deterministic_algorithms(True)`` (process-wide). CPU runs are deterministic anyway;
    exact resume on CUDA needs it."""

    def __post_init__(self):
        if self.out_dir is not None:
            self.out_dir = str(self.out_dir)
        for name in ("max_steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainerConfig.{name} must be >= 1; got {getattr(self, name)}")
        for name in ("val_every", "ckpt_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainerConfig.{name} must be >= 0; got {getattr(self, name)}")
        if self.keep_last is not None and self.keep_last < 1:
            raise ValueError(f"TrainerConfig.keep_last must be >= 1 or None; got {self.keep_last}")
        if self.amp not in AMP_MODES:
            raise ValueError(f'invalid amp "{self.amp}"; must be one of {list(AMP_MODES)}')
        if self.ddp not in DDP_MODES:
            raise ValueError(f'invalid ddp "{self.ddp}"; must be one of {list(DDP_MODES)}')
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainerConfig.grad_clip must be > 0 or None; got {self.grad_clip}")


def trainer_config(config: Any, **fixed: Any) -> TrainerConfig:
    """The :class:`TrainerConfig` inside a system's training config: every ``TrainerConfig`` field the config
    has under the same name (max_steps, log_every, seed, device, amp, ...), then ``fixed`` (values only the
    run knows: out_dir, progress, a batch size capped at the data). Fields the config lacks keep their
    defaults, so a system config carries exactly the trainer knobs it exposes, never a hand-made copy.

    Raises:
        TypeError: a key of ``fixed`` that is not a ``TrainerConfig`` field.
    """
    names = {f.name for f in dataclasses.fields(TrainerConfig)}
    unknown = sorted(set(fixed) - names)
    if unknown:
        raise TypeError(f"unknown TrainerConfig field(s) {unknown}; valid: {sorted(names)}")
    own = {n: getattr(config, n) for n in names if hasattr(config, n)}
    return TrainerConfig(**{**own, **fixed})


# -------------------------------------------------------------------------------------- distributed


class DistInfo(NamedTuple):
    """Where this process sits in a (possibly single-process) job."""

    rank: int
    local_rank: int
    world_size: int
    initialized: bool
    """whether a torch.distributed process group is up"""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def distributed_info() -> DistInfo:
    """Rank, local rank and world size, from the process group if initialised, else from the torchrun
    environment (RANK, LOCAL_RANK, WORLD_SIZE); (0, 0, 1) for a plain process."""
    import torch.distributed as dist

    env = lambda k, d: int(os.environ.get(k, d))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), env("LOCAL_RANK", 0), dist.get_world_size(), True)
    return DistInfo(env("RANK", 0), env("LOCAL_RANK", 0), env("WORLD_SIZE", 1), False)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by the torchrun environment (no-op for a single process).

    Uses nccl when CUDA is available and wanted, gloo otherwise, and selects the local rank's GPU.
    """
    import atexit

    import torch.distributed as dist

    info = distributed_info()
    if info.world_size <= 1 or info.initialized:
        return info
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={info.world_size} but {missing} unset: launch with torchrun")
    use_cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return distributed_info()


# ------------------------------------------------------------------------------------------ callbacks


class Callback:
    """Hooks called by :meth:`Trainer.fit` on every rank (check ``trainer.is_main`` before writing).

    A callback may set ``trainer.should_stop = True`` to end the run after the current step (under DDP it
    must do so on every rank at the same step).
    """

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None: ...

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_validation(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


class LivePlot(Callback):
    """Redraws the loss and validation curves in a notebook while training runs.

    Draws only inside an IPython kernel (Jupyter, Colab, papermill, where the figure lands in the cell
    output and is replaced in place); in plain Python it does nothing. The figure is rendered to PNG
    off-screen, so the matplotlib backend and pyplot state are untouched.

    Args:
        keys: history keys to plot (default: every numeric key).
        every: redraw after this many log/validation records.
        min_interval: at most one redraw per this many seconds (a redraw costs ~0.1-1 s); the final
            curves are always drawn when ``fit`` ends.
        logy: log-scale y axis for the training curves.
    """

    def __init__(self, keys: Sequence[str] | None = None, *, every: int = 1, min_interval: float = 2.0,
                 logy: bool = True, figsize: tuple[float, float] = (10.0, 3.2)):
        self.keys, self.every, self.logy, self.figsize = keys, max(1, every), logy, figsize
        self.min_interval = min_interval
        self._handle = None
        self._count = 0
        self._last_draw = -math.inf

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._maybe_draw(trainer)

    def on_validation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._maybe_draw(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        if trainer.is_main:
            self.draw(trainer.history)

    def _maybe_draw(self, trainer: Trainer) -> None:
        self._count += 1
        if trainer.is_main and self._count % self.every == 0 \
                and time.monotonic() - self._last_draw >= self.min_interval:
            self.draw(trainer.history)

    def draw(self, history: list[dict[str, Any]]) -> bool:
        """Render ``history`` into the cell output; returns whether anything was displayed."""
        if not history or not _in_notebook():
            return False
        import io

        from IPython.display import Image, display

        from toolkit.viz.plots import plot_history

        fig = plot_history(history, keys=self.keys, logy=self.logy, figsize=self.figsize)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        img = Image(data=buf.getvalue(), format="png")
        if self._handle is None:
            self._handle = display(img, display_id=True)
        else:
            self._handle.update(img)
        self._last_draw = time.monotonic()
        return True


# --------------------------------------------------------------------------------------------- trainer


StepFn = Callable[[torch.nn.Module, Any], "tuple[torch.Tensor, Mapping[str, float]]"]


class Trainer:
    """Runs ``step_fn`` for ``config.max_steps`` steps with logging, validation and checkpoints.

    Args:
        model: the module; moved to the configured device (the optimizer keeps its parameter references).
        optimizer: optimizer over the model's (or any) parameters.
        step_fn: ``step_fn(model, batch) -> (loss, logs)``: a scalar loss tensor and a dict of floats (or
            0-dim tensors). Under DDP ``model`` is the DistributedDataParallel wrapper (config.ddp="wrap").
        config: :class:`TrainerConfig`.
        data: ``batch_fn(step, generator) -> batch`` (a torch.Generator owned by the trainer; under DDP
            every rank builds the same global batch and keeps its slice, see :func:`shard_batch`), or a
            ``torch.utils.data.Dataset`` read in an order seeded by (seed, epoch).
        val_fn: ``val_fn(model) -> dict of floats``, called on every rank with the unwrapped model in eval
            mode under ``torch.no_grad()``; rank 0's values are recorded.
        meta: what a checkpoint needs to be usable alone (system config, label set, camera model, ...).
            Plain types, tensors and numpy arrays (stored as tensors).
        callbacks: :class:`Callback` instances, e.g. :class:`LivePlot`.
        scheduler: optional LR scheduler, stepped after every optimizer step and checkpointed.
        collate_fn: Dataset data: batch collation (default ``torch.utils.data.default_collate``).
        shard_fn: batch-function data under DDP: ``shard_fn(batch, rank, world_size) -> local batch``
            (default :func:`shard_batch`).
        fingerprint: what the run trains on (:func:`data_fingerprint`); written to ``out_dir/run.json``
            when the run starts, and a resumed run with another fingerprint is refused.
        state: the module whose state dict checkpoints hold and resume restores: ``model`` (default) or one
            of its submodules, e.g. the bare network inside a training wrapper, so that a training
            checkpoint has the network's own keys and loads like an export.

    While ``fit`` runs, the run folder is locked (:class:`RunLock`): a second run with the same ``out_dir``
    fails at once instead of pruning the first one's checkpoints.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step_fn: StepFn, *,
                 config: TrainerConfig, data: Callable[[int, torch.Generator], Any] | torch.utils.data.Dataset,
                 val_fn: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
                 meta: Mapping[str, Any] | None = None, callbacks: Sequence[Callback] = (),
                 scheduler: Any = None, collate_fn: Callable | None = None,
                 shard_fn: Callable[[Any, int, int], Any] | None = None,
                 fingerprint: Mapping[str, Any] | None = None, state: torch.nn.Module | None = None):
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig; got {type(config).__name__}")
        self.config = config
        self.dist = init_distributed(config.device)
        self.device = _resolve_device(config.device, self.dist)
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        if config.amp == "bf16" and self.device.type != "cuda":
            _warn_once("amp-cpu", f'amp="bf16" is ignored on {self.device.type}: training runs in float32')
        self.model = model.to(self.device)
        self.state_module = model if state is None else state
        if not any(m is self.state_module for m in model.modules()):
            raise ValueError("state must be the model or one of its submodules (its parameters are the ones trained)")
        self.optimizer, self.step_fn, self.val_fn, self.scheduler = optimizer, step_fn, val_fn, scheduler
        self.meta = _sanitize(dict(meta or {}), "meta")
        self.fingerprint = None if fingerprint is None else _sanitize(dict(fingerprint), "fingerprint")
        self.callbacks = list(callbacks)
        self.wrapped = self._wrap_model()
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.should_stop = False
        self._window: dict[str, list[float]] = {}
        self._last_saved_step: int | None = None
        self._tb = None
        self._rng_ready = False  # seeded when a fresh run starts in fit(), or restored by resume()
        self.data_generator = torch.Generator().manual_seed(config.seed)
        if isinstance(data, torch.utils.data.Dataset):
            self._feed: _Feed = _DatasetFeed(data, config, self.dist, collate_fn)
        elif callable(data):
            self._feed = _FunctionFeed(data, self.data_generator, self.dist, shard_fn or shard_batch)
        else:
            raise TypeError(f"data must be a batch function (step, generator) -> batch or a torch Dataset; "
                            f"got {type(data).__name__}")

    # ----------------------------------------------------------------------------------- properties

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the only rank that writes)."""
        return self.dist.rank == 0

    @property
    def out_dir(self) -> Path | None:
        return None if self.config.out_dir is None else Path(self.config.out_dir)

    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoints"

    @property
    def epoch(self) -> int | None:
        """Current epoch for Dataset data (None for a batch function)."""
        return self._feed.position(self.step)[0]

    # ----------------------------------------------------------------------------------------- loop

    def fit(self, *, resume: bool = False, max_steps: int | None = None) -> list[dict[str, Any]]:
        """Train until ``max_steps`` (default ``config.max_steps``); returns the history.

        Args:
            resume: continue from the latest checkpoint in ``config.out_dir`` if there is one.
            max_steps: stop earlier (or later) than the config; the final log/validation of the config's
                last step is only done when that step is reached, so a run stopped here resumes exactly.

        Each history record is ``{"step": s, "split": "train", "loss": ..., "lr": ..., **logs}`` (means over
        the last ``log_every`` steps, averaged over ranks) or ``{"step": s, "split": "val", **metrics}``.
        An interrupt (Ctrl-C, kernel interrupt) stops after the current step, saves a checkpoint when
        ``out_dir`` is set, and re-raises KeyboardInterrupt; a second interrupt stops at once.

        Raises:
            DataError: the run folder is locked by another process, or ``resume`` meets a run started on
                other data (another fingerprint).
        """
        with self._run_folder(resume):
            return self._fit(resume=resume, max_steps=max_steps)

    def _fit(self, *, resume: bool, max_steps: int | None) -> list[dict[str, Any]]:
        cfg = self.config
        if resume:
            if self.out_dir is None:
                raise ValueError("fit(resume=True) needs TrainerConfig.out_dir")
            ckpt = latest_checkpoint(self.out_dir)
            if ckpt is not None:
                self.resume(ckpt)
            else:
                logger.info("no checkpoint in %s: starting from step 0", self.out_dir)
        end = cfg.max_steps if max_steps is None else int(max_steps)
        if not self._rng_ready:
            seed_everything(cfg.seed + self.dist.rank)
            self.data_generator.manual_seed(cfg.seed)
            self._rng_ready = True
        self.should_stop = False
        self._open_tensorboard()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        bar = _progress(total=end, initial=min(self.step, end), enabled=cfg.progress and self.is_main)
        self.model.train()
        try:
            with _GracefulInterrupt(enabled=not self.dist.distributed) as interrupt:
                while self.step < end and not self.should_stop:
                    batch = _to_device(self._feed.batch(self.step), self.device)
                    logs = self._train_step(batch)
                    self.step += 1
                    for k, v in logs.items():
                        acc = self._window.setdefault(k, [0.0, 0])
                        acc[0] += v
                        acc[1] += 1
                    for cb in self.callbacks:
                        cb.on_step_end(self, self.step, logs)
                    final = self.step == cfg.max_steps
                    if self.step % cfg.log_every == 0 or (final and self._window):
                        record = self._log()
                        if bar is not None:
                            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                                             if k not in ("step", "split")}, refresh=False)
                    if self.val_fn is not None and ((cfg.val_every and self.step % cfg.val_every == 0) or final):
                        self.validate(record=True)
                    if self.out_dir is not None and ((cfg.ckpt_every and self.step % cfg.ckpt_every == 0)
                                                     or final or interrupt.requested):
                        self.save_checkpoint()
                    if bar is not None:
                        bar.update(1)
                    if interrupt.requested:
                        where = (f"; checkpoint in {self.checkpoint_dir / f'step_{self.step:08d}.pt'}"
                                 if self.out_dir else "")
                        raise KeyboardInterrupt(f"training interrupted after step {self.step}{where}")
            if self.out_dir is not None and self._last_saved_step != self.step:
                self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            if self._tb is not None:
                self._tb.flush()
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return self.history

    def _train_step(self, batch: Any) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.step_fn(self.wrapped, batch)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("step_fn must return (loss tensor, dict of float logs)")
        loss, extra = out
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError(f"step_fn must return a scalar loss tensor first; got {type(loss).__name__} "
                            f"{tuple(getattr(loss, 'shape', ()))}")
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"step {self.step}: loss is {loss_value}; parameters left unchanged")
        logs = {"loss": loss_value, "lr": float(self.optimizer.param_groups[0]["lr"])}
        for k, v in (extra or {}).items():
            logs[k] = _as_float(v, f"step_fn logs[{k!r}]")
        loss.reshape(()).backward()
        if self.dist.distributed and self.config.ddp == "allreduce":
            _allreduce_gradients(self.model)
        if self.config.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return logs

    def _log(self) -> dict[str, Any]:
        keys = sorted(self._window)
        means = np.array([self._window[k][0] / self._window[k][1] for k in keys], dtype=np.float64)
        if self.dist.distributed:
            import torch.distributed as dist

            t = torch.as_tensor(means, device=self.device)
            dist.all_reduce(t)
            means = (t / self.dist.world_size).cpu().numpy()
        self._window = {}
        record = {"step": self.step, "split": "train", **{k: float(v) for k, v in zip(keys, means)}}
        self.history.append(record)
        self._write_scalars(record)
        logger.info("step %d: %s", self.step, ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                                                        if k not in ("step", "split")))
        for cb in self.callbacks:
            cb.on_log(self, record)
        return record

    def validate(self, *, record: bool = False) -> dict[str, float]:
        """Run ``val_fn`` on the unwrapped model (eval mode, no grad, RNGs forked and seeded).

        Returns rank 0's metrics; with ``record`` they are appended to the history as a "val" record.
        """
        if self.val_fn is None:
            raise ValueError("no val_fn was given to the Trainer")
        was_training = self.model.training
        self.model.eval()
        try:
            with _forked_rng(self.config.seed, self.device), torch.no_grad():
                raw = self.val_fn(self.model)
        finally:
            self.model.train(was_training)
        metrics = {k: _as_float(v, f"val_fn()[{k!r}]") for k, v in dict(raw).items()}
        if self.dist.distributed:
            import torch.distributed as dist

            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        if record:
            rec = {"step": self.step, "split": "val", **metrics}
            self.history.append(rec)
            self._write_scalars(rec)
            for cb in self.callbacks:
                cb.on_validation(self, rec)
        return metrics

    # ---------------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds (collective under DDP: every rank must call it)."""
        rng = _rng_state(self.device, self.data_generator)
        if self.dist.distributed:
            import torch.distributed as dist

            gathered: list = [None] * self.dist.world_size
            dist.all_gather_object(gathered, _to_cpu(rng))
            rng_per_rank = gathered
        else:
            rng_per_rank = [rng]
        epoch, index = self._feed.position(self.step)
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": epoch,
            "batch_in_epoch": index,
            "model": self.state_module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": rng_per_rank,
            "log_window": {k: list(v) for k, v in self._window.items()},
            "history": [dict(r) for r in self.history],
            "trainer_config": asdict(self.config),
            "meta": self.meta,
            "fingerprint": self.fingerprint,
            "world_size": self.dist.world_size,
            "versions": {"torch": str(torch.__version__), "toolkit": _toolkit_version()},
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``out_dir/checkpoints/step_XXXXXXXX.pt`` atomically and point ``latest.json`` at it.

        Collective under DDP (RNG states are gathered); only rank 0 writes. Returns the path on rank 0.
        """
        if self.checkpoint_dir is None:
            raise ValueError("save_checkpoint needs TrainerConfig.out_dir")
        state = self.state_dict()
        self._last_saved_step = self.step
        if not self.is_main:
            return None
        ckdir = self.checkpoint_dir
        path = ckdir / f"step_{self.step:08d}.pt"
        with atomic_write(path) as f:
            torch.save(state, f)
        atomic_save_text(ckdir / "latest.json", json.dumps({"step": self.step, "file": path.name}) + "\n")
        atomic_save_text(self.out_dir / "history.json", json.dumps(self.history, indent=1) + "\n")
        self._prune_checkpoints()
        for cb in self.callbacks:
            cb.on_checkpoint(self, path)
        return path

    def resume(self, path_or_dir: str | os.PathLike) -> Path:
        """Restore model, optimizer, scheduler, step, history and RNG states from a checkpoint file, or
        from the latest checkpoint of a run folder. Returns the checkpoint path."""
        path = checkpoint_file(path_or_dir)
        ck = load_checkpoint(path, map_location="cpu")
        missing = [k for k in REQUIRED_KEYS if k not in ck]
        if missing:
            raise DataError(path, f"not a Trainer checkpoint: missing keys {missing}")
        try:
            self.state_module.load_state_dict(ck["model"])
        except RuntimeError as exc:
            raise DataError(path, f"model does not match the checkpoint: {exc}") from exc
        try:
            self.optimizer.load_state_dict(ck["optimizer"])
        except (ValueError, KeyError) as exc:
            raise DataError(path, f"optimizer does not match the checkpoint: {exc}") from exc
        if self.scheduler is not None and ck.get("scheduler") is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        elif self.scheduler is not None:
            # A schedule added (or replaced) when continuing a run: replay it from the base rates to the
            # checkpoint's step; the loaded optimizer may carry a rate an earlier schedule had decayed.
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
                group["lr"] = base
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
                for _ in range(int(ck["step"])):
                    self.scheduler.step()
        saved = ck["trainer_config"]
        changed = [k for k in ("seed", "batch_size", "drop_last", "log_every", "amp")
                   if saved.get(k) != getattr(self.config, k)]
        if changed:
            warnings.warn(f"{path}: config differs from the checkpoint in {changed}; the resumed run will not "
                          "reproduce an uninterrupted one", stacklevel=2)
        self.step = int(ck["step"])
        self.history = [dict(r) for r in ck["history"]]
        self._window = {k: [float(v[0]), int(v[1])] for k, v in ck.get("log_window", {}).items()}
        rngs = ck["rng"]
        if len(rngs) == self.dist.world_size:
            own = rngs[self.dist.rank]
        else:
            warnings.warn(f"{path}: saved by {len(rngs)} rank(s), resumed by {self.dist.world_size}; RNG states "
                          "of rank 0 are reused, so the run is not an exact continuation", stacklevel=2)
            own = rngs[0]
        _set_rng_state(own, self.device, self.data_generator)
        self._rng_ready = True
        self._feed.reset()
        self._last_saved_step = self.step
        return path

    @contextlib.contextmanager
    def _run_folder(self, resume: bool):
        """Hold the run folder's lock, remove temporaries of interrupted writes, check and record the
        fingerprint (rank 0 locks and writes; every rank checks)."""
        if self.out_dir is None:
            yield
            return
        lock = RunLock(self.out_dir).acquire() if self.is_main else None
        try:
            if self.is_main:
                for folder in (self.out_dir, self.checkpoint_dir):
                    _remove_temps(folder)
            if self.fingerprint is not None:
                if resume:
                    check_run_fingerprint(self.out_dir, self.fingerprint)
                if self.is_main:
                    _record_fingerprint(self.out_dir, self.fingerprint, keep=resume)
            yield
        finally:
            if lock is not None:
                lock.release()

    def _prune_checkpoints(self) -> None:
        keep = self.config.keep_last
        if keep is None:
            return
        files = sorted((int(m.group(1)), p) for p in self.checkpoint_dir.iterdir()
                       if (m := CKPT_RE.match(p.name)))
        for step, p in files[:-keep]:
            if step != self.step:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    # ------------------------------------------------------------------------------------- plumbing

    def _wrap_model(self) -> torch.nn.Module:
        if not self.dist.distributed:
            return self.model
        import torch.distributed as dist

        if self.config.ddp == "allreduce":
            for t in self.model.state_dict().values():  # same start on every rank, as DDP does
                dist.broadcast(t, src=0)
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids,
                                       find_unused_parameters=self.config.find_unused_parameters)

    def _autocast(self):
        if self.config.amp == "bf16" and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _open_tensorboard(self) -> None:
        if not (self.config.tensorboard and self.is_main and self.out_dir is not None) or self._tb is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            _warn_once("tensorboard", "tensorboard=True but the tensorboard package is not installed "
                                      "(pip install tensorboard); continuing without it")
            return
        self._tb = SummaryWriter(log_dir=str(self.out_dir / "tb"))

    def _write_scalars(self, record: dict[str, Any]) -> None:
        if self._tb is None:
            return
        for k, v in record.items():
            if k not in ("step", "split"):
                self._tb.add_scalar(f"{record['split']}/{k}", v, record["step"])


# -------------------------------------------------------------------------------------------- runs


def step_schedule(optimizer: torch.optim.Optimizer, milestones: Sequence[int] | None,
                  gamma: float) -> torch.optim.lr_scheduler.MultiStepLR | None:
    """The rate x ``gamma`` at each of ``milestones`` (trainer steps), or None for a constant rate."""
    if not milestones:
        return None
    steps = sorted(int(m) for m in milestones)
    if steps[0] <= 0 or not 0.0 < float(gamma) <= 1.0:
        raise ValueError(f"lr_milestones must be positive steps and lr_gamma in (0, 1]; got {steps}, {gamma}")
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, steps, gamma=float(gamma))


def data_fingerprint(root: str | os.PathLike, items: Sequence[str], **extra: Any) -> dict[str, Any]:
    """What a run trains on, to recognise it when the run resumes: the data folder's resolved path, its
    items (instance or sequence names, in order) and any ``extra`` settings that fix the split.

    Returns:
        ``{"data_root", "items" (count), "hash"}``; the hash covers the path, the item list and ``extra``.
    """
    root = str(Path(root).expanduser().resolve())
    items = [str(x) for x in items]
    blob = json.dumps({"root": root, "items": items, "extra": extra}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return {"data_root": root, "items": len(items), "hash": digest}


def check_run_fingerprint(run_dir: str | os.PathLike, fingerprint: Mapping[str, Any]) -> None:
    """Refuse to resume a run folder that was started on other data.

    Compares ``fingerprint`` with the one recorded in ``run_dir/run.json`` (runs without one pass).

    Raises:
        DataError: naming the run folder, both data roots, and how to start fresh.
    """
    run_dir = Path(run_dir)
    stored = _read_fingerprint(run_dir)
    if stored is None or stored.get("hash") == fingerprint.get("hash"):
        return
    same_root = stored.get("data_root") == fingerprint.get("data_root")
    what = (f"other items in {fingerprint.get('data_root')} ({stored.get('items')} then, {fingerprint.get('items')} now)"
            if same_root else f"{stored.get('data_root')} ({stored.get('items')} items), not "
                              f"{fingerprint.get('data_root')} ({fingerprint.get('items')} items)")
    raise DataError(run_dir, f"this run was started on {what}; resuming would continue it on other data than its "
                             f"split. Pass a new out_dir, or delete {run_dir} to start fresh")


class RunLock:
    """Exclusive lock on a run folder (``<folder>/.lock``, ``fcntl.flock``), so that two runs never write the
    same folder. Re-entrant within a process; the operating system drops it when the process ends, so a
    killed run never leaves a lock that blocks the next one. A no-op where ``fcntl`` is missing (Windows)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._acquired = False

    def acquire(self) -> RunLock:
        """Take the lock (DataError naming the folder and the holder's pid when another process has it)."""
        try:
            import fcntl
        except ImportError:
            return self
        if self._acquired:
            return self
        key = str(self.folder.resolve())
        held = _RUN_LOCKS.get(key)
        if held is not None:
            held[1] += 1
            self._acquired = True
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            f = open(self.folder / LOCK_FILE, "a+")  # noqa: SIM115 - held until release()
        except OSError as exc:
            from toolkit.io import output_error

            raise output_error(self.folder / LOCK_FILE, exc) from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise DataError(self.folder, f"another run (process {holder}) is using this run folder; wait for it "
                                         "to finish or choose another out_dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        _RUN_LOCKS[key] = [f, 1]
        self._acquired = True
        return self

    def release(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        key = str(self.folder.resolve())
        held = _RUN_LOCKS.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _RUN_LOCKS[key]
            held[0].close()  # closing the file drops the flock


# ------------------------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def shard_batch(batch: Any, rank: int, world_size: int) -> Any:
    """This rank's slice of a global batch: every tensor with a leading dim is split into ``world_size``
    equal contiguous chunks (rank r gets chunk r); other leaves (numbers, strings, 0-dim tensors) are
    shared. Nested dicts, lists, tuples and named tuples are walked.

    Raises:
        ValueError: a tensor's leading dim is not divisible by ``world_size`` (names the leaf).
    """
    def split(x, where):
        if isinstance(x, torch.Tensor) and x.ndim >= 1:
            if x.shape[0] % world_size:
                raise ValueError(f"batch{where}: leading dim {x.shape[0]} is not divisible by the world size "
                                 f"{world_size}; make the global batch a multiple of it or pass shard_fn")
            n = x.shape[0] // world_size
            return x[rank * n:(rank + 1) * n]
        return x

    return _map_leaves(batch, split)


# ----------------------------------------------------------------------------------------- data feeds


class _Feed:
    def batch(self, step: int) -> Any:
        raise NotImplementedError

    def position(self, step: int) -> tuple[int | None, int | None]:
        return None, None

    def reset(self) -> None:
        pass


class _FunctionFeed(_Feed):
    def __init__(self, fn, generator: torch.Generator, info: DistInfo, shard_fn):
        self.fn, self.generator, self.info, self.shard_fn = fn, generator, info, shard_fn

    def batch(self, step: int) -> Any:
        batch = self.fn(step, self.generator)
        if self.info.distributed:
            batch = self.shard_fn(batch, self.info.rank, self.info.world_size)
        return batch


class _DatasetFeed(_Feed):
    """Epoch-seeded order: epoch e reads ``randperm(len, seed=(seed, e))`` in global batches; rank r keeps
    the r-th contiguous slice of each global batch. The position is a function of the step alone."""

    def __init__(self, dataset, config: TrainerConfig, info: DistInfo, collate_fn):
        from torch.utils.data import default_collate

        self.dataset, self.info = dataset, info
        self.batch_size, self.drop_last, self.seed = config.batch_size, config.drop_last, config.seed
        self.num_workers = config.num_workers
        self.collate = collate_fn or default_collate
        self.n = len(dataset)
        if info.distributed and not self.drop_last:
            raise ValueError("drop_last=False is not supported under DDP (ranks would get unequal batches)")
        if self.batch_size % info.world_size:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by the world size {info.world_size}")
        self.steps_per_epoch = self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"the dataset has {self.n} items, fewer than batch_size {self.batch_size} "
                             "(lower batch_size or set drop_last=False)")
        self._iter: Iterator | None = None
        self._next_step: int | None = None

    def position(self, step: int) -> tuple[int, int]:
        return divmod(step, self.steps_per_epoch)

    def reset(self) -> None:
        self._iter, self._next_step = None, None

    def _epoch_batches(self, epoch: int, start: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
        perm = torch.randperm(self.n, generator=g)
        batches = []
        for i in range(start, self.steps_per_epoch):
            glob = perm[i * self.batch_size:(i + 1) * self.batch_size]
            per = len(glob) // self.info.world_size
            r = self.info.rank
            batches.append((glob[r * per:(r + 1) * per] if self.info.distributed else glob).tolist())
        return batches

    def _epoch_iter(self, epoch: int, start: int) -> Iterator:
        batches = self._epoch_batches(epoch, start)
        if hasattr(self.dataset, "set_epoch"):  # per-epoch randomness inside items (e.g. SOF ray subsets)
            self.dataset.set_epoch(epoch)
        if self.num_workers == 0:
            # No DataLoader: its iterator draws a seed from the global RNG, which would shift on resume.
            return (self.collate([self.dataset[j] for j in b]) for b in batches)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return iter(torch.utils.data.DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                                                collate_fn=self.collate, generator=g))

    def batch(self, step: int) -> Any:
        epoch, index = self.position(step)
        if self._iter is None or self._next_step != step or index == 0:
            self._iter = self._epoch_iter(epoch, index)
        self._next_step = step + 1
        return next(self._iter)


# ---------------------------------------------------------------------------------------- private


def _resolve_device(device: str, info: DistInfo) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", info.local_rank if info.distributed else torch.cuda.current_device())
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f'device "{device}" requested but CUDA is not available; use "auto" or "cpu"')
        if dev.index is None:
            dev = torch.device("cuda", info.local_rank if info.distributed else torch.cuda.current_device())
    return dev


def _as_float(v: Any, where: str) -> float:
    try:
        return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{where} must be a number or a 0-dim tensor; got {type(v).__name__}") from exc


def _allreduce_gradients(model: torch.nn.Module) -> None:
    import torch.distributed as dist

    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def _map_leaves(obj: Any, fn: Callable[[Any, str], Any], where: str = "") -> Any:
    if isinstance(obj, Mapping):
        items = {k: _map_leaves(v, fn, f"{where}[{k!r}]") for k, v in obj.items()}
        return items if type(obj) is dict else type(obj)(items)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map_leaves(v, fn, f"{where}.{n}") for n, v in zip(obj._fields, obj)))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_leaves(v, fn, f"{where}[{i}]") for i, v in enumerate(obj))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _map_leaves(getattr(obj, f.name), fn, f"{where}.{f.name}")
                                           for f in dataclasses.fields(obj) if f.init})
    return fn(obj, where)


def _to_device(batch: Any, device: torch.device) -> Any:
    return _map_leaves(batch, lambda x, _: x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x)


def _to_cpu(obj: Any) -> Any:
    return _map_leaves(obj, lambda x, _: x.cpu() if isinstance(x, torch.Tensor) else x)


def _rng_state(device: torch.device, data_generator: torch.Generator) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "data": data_generator.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device, data_generator: torch.Generator) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    data_generator.set_state(state["data"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


@contextlib.contextmanager
def _forked_rng(seed: int, device: torch.device):
    """Run a block with every global RNG seeded, then put the previous states back."""
    py, npst = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        seed_everything(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npst)


class _GracefulInterrupt:
    """First SIGINT sets ``requested`` (the loop stops after the step, checkpoints, then raises);
    a second one raises at once. Only in the main thread of a single-process run."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def __enter__(self):
        if self.enabled:
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def _sanitize(obj: Any, where: str) -> Any:
    """Checkpoint-safe copy of ``meta``: plain types and tensors only (numpy arrays become tensors)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _sanitize(asdict(obj), where)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: keys must be str or int; got {type(k).__name__} {k!r}")
            out[k] = _sanitize(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):  # named tuples would need their class to load
        return _sanitize(obj._asdict(), where)
    if isinstance(obj, (list, tuple)):
        items = [_sanitize(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise TypeError(f"{where}: cannot store {type(obj).__name__} in a checkpoint; use plain types, numpy arrays "
                    "or tensors (e.g. dataclasses.asdict for a config)")


def _toolkit_version() -> str:
    from toolkit import __version__

    return __version__


def _read_fingerprint(run_dir: Path) -> dict | None:
    try:
        doc = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    fp = doc.get("fingerprint") if isinstance(doc, dict) else None
    return fp if isinstance(fp, dict) else None


def _record_fingerprint(run_dir: Path, fingerprint: Mapping[str, Any], keep: bool) -> None:
    """Write ``run.json`` unless ``keep`` and it already holds this fingerprint (a resumed run)."""
    if keep and _read_fingerprint(run_dir) == dict(fingerprint):
        return
    atomic_save_text(run_dir / RUN_FILE, json.dumps({"fingerprint": dict(fingerprint)}, indent=1) + "\n")


def _remove_temps(folder: Path | None) -> None:
    """Remove every temporary file of an interrupted write in a run folder (its lock is held, so no other
    process is writing there)."""
    if folder is None or not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
