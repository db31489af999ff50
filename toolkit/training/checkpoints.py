"""Checkpoint files: the one reader (:func:`load_checkpoint`, one error type), the latest checkpoint of a run
folder, slim exports and schedule surgery.

Every checkpoint of the toolkit is read here: training checkpoints of :class:`toolkit.training.Trainer`
(``<run>/checkpoints/step_XXXXXXXX.pt`` with ``latest.json``), slim exports (``data/*.pt``) and the
originals' files, which the systems' loaders then interpret. A file that is missing, unreadable, corrupt or
refused by torch's safe loader raises :class:`toolkit.io.DataError` naming the file; nothing is pickled
beyond tensors and plain types unless the caller says so.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from toolkit.io import DataError, atomic_write

__all__ = ["CHECKPOINT_FORMAT", "checkpoint_file", "drop_schedule", "export_checkpoint", "latest_checkpoint", "load_checkpoint",
           "model_state"]

CHECKPOINT_FORMAT = "toolkit.training/1"
"""``format`` of a Trainer checkpoint."""
CKPT_RE = re.compile(r"^step_(\d+)\.pt$")
"""File name of a step checkpoint in a run's ``checkpoints/`` folder."""
REQUIRED_KEYS = ("format", "step", "model", "optimizer", "rng", "history", "trainer_config", "meta")
"""Entries every Trainer checkpoint has."""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu", *,
                    weights_only: bool = True) -> dict[str, Any]:
    """Read a checkpoint (a file, or a run folder whose latest checkpoint is taken).

    Args:
        path: checkpoint file or run folder.
        map_location: passed to ``torch.load`` (default: CPU).
        weights_only: torch's safe loader (tensors and plain types only), which Trainer checkpoints
            satisfy. Set False only for trusted files that pickle other objects.

    Raises:
        DataError: missing file, no checkpoint in the folder, or a corrupt / unreadable file.
    """
    path = checkpoint_file(path)
    try:
        ck = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:
        detail = _describe_load_error(exc)
        if detail.startswith("torch's safe loader"):
            raise DataError(path, f"not loaded: {detail}") from exc
        raise DataError(path, f"corrupt or unreadable checkpoint ({detail})") from exc
    if not isinstance(ck, dict):
        raise DataError(path, f"expected a checkpoint dict, found {type(ck).__name__}")
    return ck


def export_checkpoint(run_or_checkpoint: str | os.PathLike, out: str | os.PathLike, *, fmt: str,
                      half: bool = False) -> Path:
    """Write a slim, self-contained checkpoint of a run: model, meta, step, validation history (no optimizer,
    RNG or training history), atomically.

    Args:
        run_or_checkpoint: a checkpoint file, or a run folder (its latest checkpoint).
        out: the file to write.
        fmt: the ``format`` entry of the export (e.g. "toolkit-sof-export-1"); ``meta["step"]`` is the step.
        half: store floating-point tensors as float16 (loaders cast them back to float32).
    """
    ck = load_checkpoint(run_or_checkpoint)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ck["model"].items()}
    meta = dict(ck.get("meta") or {})
    meta["step"] = ck.get("step")
    val = [r for r in ck.get("history", []) if r.get("split") == "val"]
    slim = {"format": fmt, "model": state, "meta": meta, "step": ck.get("step"), "history": val}
    out = Path(out)
    with atomic_write(out) as f:
        torch.save(slim, f)
    return out


def drop_schedule(checkpoint: str | os.PathLike) -> Path:
    """Remove a checkpoint's LR-scheduler state (atomically), so that a run resumed from it with other
    ``lr`` / ``lr_milestones`` replays the new schedule from its base rate instead of restoring the old one.

    Args:
        checkpoint: checkpoint file or run folder (its latest checkpoint).

    Returns:
        The file that was rewritten.
    """
    path = checkpoint_file(checkpoint)
    ck = load_checkpoint(path)
    ck["scheduler"] = None
    with atomic_write(path) as f:
        torch.save(ck, f)
    return path


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: itself, or the latest checkpoint of a run folder.

    Raises:
        DataError: a folder without checkpoints (expected ``checkpoints/step_*.pt``), or no such file.
    """
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise DataError(path, "no checkpoint found in this folder (expected checkpoints/step_*.pt)")
        path = found
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    return path


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of a run folder (``run_dir`` or ``run_dir/checkpoints``), or None.

    Follows ``latest.json``; if it is missing or points at a missing file, takes the highest step file.
    """
    run_dir = Path(run_dir)
    ckdir = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    if not ckdir.is_dir():
        return None
    pointer = ckdir / "latest.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        target = ckdir / json.loads(pointer.read_text())["file"]
        if target.is_file():
            return target
    files = sorted((int(m.group(1)), p) for p in ckdir.iterdir() if (m := CKPT_RE.match(p.name)))
    return files[-1][1] if files else None


def model_state(checkpoint: Mapping[str, Any], source: str | os.PathLike | None = None, *,
                prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's state dict in a checkpoint dict: ``checkpoint["model"]``, with the keys under ``prefix``
    (e.g. "sof.", how a system's training wrapper stores them) stripped when any carries it.

    Raises:
        DataError: no ``model`` state dict in the checkpoint (named by ``source``).
    """
    state = checkpoint.get("model") if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        keys = sorted(checkpoint)[:10] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise DataError(source, f"expected a dict with a 'model' entry (the state dict); found {keys}")
    if prefix:
        inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if inner:
            return inner
    return dict(state)


def _describe_load_error(exc: Exception) -> str:
    msg = str(exc)
    if "Weights only load failed" in msg or "WeightsUnpickler error:" in msg:
        lines = [ln.strip() for ln in msg.split("WeightsUnpickler error:")[-1].splitlines() if ln.strip()]
        refused = next((ln for ln in lines if "global" in ln.lower()), None)
        if refused:  # a valid file holding objects the safe loader refuses: keep torch's warning whole
            return (f"torch's safe loader (weights_only=True) refused it: {refused.rstrip('.')}. Loading it with "
                    "weights_only=False would run code stored in the file (arbitrary code execution): do that "
                    "only if you trust its source")
        detail = next((ln for ln in lines if "Weights only load failed" not in ln and "weights_only" not in ln
                       and "documentation" not in ln), "unreadable pickle stream")
        return f"{type(exc).__name__}: {detail}"
    first = msg.strip().splitlines()[0] if msg.strip() else "empty or truncated file"
    return f"{type(exc).__name__}: {first if len(first) <= 400 else first[:400] + '...'}"
