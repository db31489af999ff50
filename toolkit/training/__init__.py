"""Training for every system: the generic loop, checkpoint files, and the run lifecycle the systems share.

- :mod:`toolkit.training.trainer`: :class:`Trainer` (steps, atomic checkpoints, exact resume, progress,
  DDP) with its :class:`TrainerConfig`, callbacks (:class:`LivePlot`), run-folder lock and data fingerprint;
- :mod:`toolkit.training.checkpoints`: the one checkpoint reader (:func:`load_checkpoint`, errors are
  :class:`toolkit.io.DataError`), the latest checkpoint of a run, slim exports;
- :mod:`toolkit.training.lifecycle`: a system's :class:`System` record and what every system does the same
  way through it: train from a config, export, the shipped checkpoint or a quick model, training data.

The names the systems, the command line and notebooks use are re-exported here. Plots are
:mod:`toolkit.viz`'s (``toolkit.viz.plot_history``); training never imports it at module level.
"""
from __future__ import annotations

from toolkit.training.checkpoints import (
    CHECKPOINT_FORMAT,
    drop_schedule,
    export_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    model_state,
)
from toolkit.training.trainer import (
    AMP_MODES,
    DDP_MODES,
    Callback,
    DistInfo,
    LivePlot,
    RunLock,
    StepFn,
    Trainer,
    TrainerConfig,
    check_run_fingerprint,
    data_fingerprint,
    distributed_info,
    init_distributed,
    seed_everything,
    shard_batch,
    step_schedule,
    trainer_config,
)

__all__ = [
    "AMP_MODES", "CHECKPOINT_FORMAT", "DDP_MODES", "Callback", "DistInfo", "LivePlot", "RunLock", "StepFn", "Trainer",
    "TrainerConfig", "check_run_fingerprint", "data_fingerprint", "distributed_info", "drop_schedule",
    "export_checkpoint", "init_distributed", "latest_checkpoint", "load_checkpoint", "model_state",
    "seed_everything", "shard_batch", "step_schedule", "trainer_config",
]
