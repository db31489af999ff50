"""Occupancy Flow checkpoints: loading a model with its meta, and slim exports.

Below the train and evaluate modules (both read checkpoints through here). Three layouts load:
training checkpoints of :class:`toolkit.training.Trainer` (or their run folder), slim exports
(``data/oflow_<kind>.pt``), and the original's ``{'model': state_dict}`` (sizes inferred from the shapes).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch

from toolkit.io import DataError
from toolkit.oflow.model import OccupancyFlow
from toolkit.oflow.model import load_checkpoint as load_model_checkpoint
from toolkit.training import load_checkpoint

__all__ = ["EXPORT_FORMAT", "LoadedOFlow", "export_checkpoint", "load_oflow"]

EXPORT_FORMAT = "toolkit-oflow-export-1"


class LoadedOFlow(NamedTuple):
    model: OccupancyFlow
    """The model, in eval mode."""
    meta: dict
    """What the checkpoint records: system, model_config, train_config, data, step (minimal for originals)."""


def load_oflow(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> LoadedOFlow:
    """Load a model and its meta from a training checkpoint, a run folder, an export, or an original checkpoint.

    Original checkpoints (``{'model': state_dict}`` with the original keys) load with sizes inferred from
    their shapes and the original ODE settings; their meta is minimal.

    Raises:
        DataError: unreadable file, or a state dict that does not fit.
    """
    ck = load_checkpoint(path, map_location, weights_only=True)
    try:
        model = load_model_checkpoint(ck, map_location=map_location)
    except DataError as exc:
        raise DataError(path, exc.problem) from exc
    meta = dict(ck.get("meta") or {"system": "oflow", "source": "original"})
    meta.setdefault("model_config", model.config.to_dict())
    meta.setdefault("step", ck.get("step"))
    return LoadedOFlow(model.eval(), meta)


def export_checkpoint(run_or_checkpoint: str | os.PathLike, out: str | os.PathLike, *, half: bool = False) -> Path:
    """Write a slim, self-contained checkpoint (model, meta, step, validation history; no optimizer state).

    This is how ``data/oflow_<kind>.pt`` is made from a finished run (see
    :func:`toolkit.oflow.train.load_pretrained`).
    """
    from toolkit.training import export_checkpoint as export

    return export(run_or_checkpoint, out, fmt=EXPORT_FORMAT, half=half)
