"""The run lifecycle every system shares, written once against a small per-system record.

A system (SOF, Occupancy Flow) describes itself in a :class:`System`: its training config (a dataclass
whose trainer knobs become a :class:`toolkit.training.TrainerConfig` by :func:`toolkit.training.trainer_config`),
how to train one, how to load a checkpoint, how to write its synthetic data, how to evaluate and validate.
Through that record, and only here:

- :func:`train_from_config`: a packaged preset or YAML file plus ``key=value`` overrides -> a run (the
  ``python -m toolkit train`` command);
- :func:`shipped_checkpoint` and :func:`load_pretrained`: the small checkpoint shipped in ``data/``, or a
  quick model trained on the spot into a work folder (and reused there once it reached its last step), so
  that every notebook also runs alone;
- :func:`training_data`: the dataset a checkpoint was trained on, regenerated from its recorded generator
  settings when missing;
- exports go through :func:`toolkit.training.export_checkpoint` with the record's ``export_format``.

The command line finds the records as ``toolkit.<system>.train.SYSTEM``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.io import DataError
from toolkit.training.checkpoints import export_checkpoint, latest_checkpoint, load_checkpoint

__all__ = ["System", "export", "load_pretrained", "run_config", "shipped_checkpoint", "train_from_config",
           "training_data"]


@dataclass(frozen=True)
class System:
    """What the shared run lifecycle needs to know about one system."""

    name: str
    """Registry key: the command line's system name and the folder of its packaged configs."""
    config: type
    """The training config dataclass (stored in checkpoints as ``meta["train_config"]``)."""
    train: Callable[..., Any]
    """``train(config, *, callbacks=(), resume=True, progress=True, stop_at=None) -> TrainResult``."""
    load: Callable[..., Any]
    """``load(checkpoint file or run folder) -> Loaded`` (``.model``, ``.meta``)."""
    write_data: Callable[..., Path]
    """``write_data(root, **meta["train_config"]["synthetic"])``: the synthetic data generator."""
    evaluate: Callable[..., dict]
    """``evaluate(checkpoint, data, **options) -> JSON-ready dict`` (the ``eval`` command)."""
    validate: Callable[..., list]
    """``validate(path, **options) -> problems`` (the ``validate`` command)."""
    export_format: str
    """``format`` entry of the slim exports."""
    shipped: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Kind of shipped checkpoint (``data/<name>_<kind>.pt``) -> overrides of the packaged ``quick`` config
    for its on-the-spot fallback."""
    quick_data: str = "quick"
    """Folder of the quick fallback's synthetic data in the work folder."""
    quick_run: str = "{name}_quick"
    """Run folder of the quick fallback under ``<work folder>/runs`` (``{name}`` and ``{kind}`` filled in)."""


def run_config(system: System, config: str | os.PathLike, overrides: Sequence[str] = ()) -> Any:
    """The system's training config from a packaged preset name or YAML file, with ``key=value`` overrides,
    checked once (:class:`toolkit.config.ConfigError` names the key and what is allowed)."""
    from toolkit.config import from_dict, load_config_dict

    return from_dict(system.config, load_config_dict(system.name, config, overrides), f"{system.name} config {config}")


def train_from_config(system: System, config: str | os.PathLike, overrides: Sequence[str] = (), **kwargs: Any):
    """Train what a preset or YAML config describes (the ``python -m toolkit train <system>`` command).

    Args:
        config: packaged preset name or YAML path.
        overrides: ``key=value`` strings (values parsed as YAML), e.g. ``max_steps=50``.
        **kwargs: passed to ``system.train`` (callbacks, resume, progress, stop_at).
    """
    return system.train(run_config(system, config, overrides), **kwargs)


def export(system: System, run_or_checkpoint: str | os.PathLike, out: str | os.PathLike, *,
           half: bool = False) -> Path:
    """A slim, self-contained checkpoint of a run (model, meta, step, validation history) in the system's
    export format (see :func:`toolkit.training.export_checkpoint`)."""
    return export_checkpoint(run_or_checkpoint, out, fmt=system.export_format, half=half)


def shipped_checkpoint(system: System, kind: str) -> Path:
    """Path of the small pretrained checkpoint ``data/<name>_<kind>.pt`` (see data/README.md).

    Raises:
        ValueError: an unknown kind (the message lists the valid ones).
    """
    from toolkit.paths import DATA_DIR

    _check_kind(system, kind)
    return DATA_DIR / f"{system.name}_{kind}.pt"


def load_pretrained(system: System, kind: str, *, quick: bool = False, work_dir: str | os.PathLike | None = None,
                    progress: bool = True) -> Any:
    """The shipped checkpoint of ``kind``, or (``quick``, or the file is absent) a quick model.

    The quick model is the packaged ``quick`` config with the kind's overrides, trained into
    ``work_dir`` (default ``data/generated``) on synthetic data written there; an earlier quick run that
    reached its last step is reused. Its numbers mean nothing; it only lets a notebook run alone.
    """
    from toolkit.paths import GENERATED_DIR

    path = shipped_checkpoint(system, kind)
    if path.exists() and not quick:
        return system.load(path)
    work = Path(work_dir) if work_dir else GENERATED_DIR
    run = work / "runs" / system.quick_run.format(name=system.name, kind=kind)
    overrides = [f"data_root={work / system.quick_data}", f"out_dir={run}", *system.shipped[kind]]
    cfg = run_config(system, "quick", overrides)
    out_dir = Path(cfg.out_dir).expanduser()
    latest = latest_checkpoint(out_dir)
    if latest is None or load_checkpoint(latest).get("step", 0) < cfg.max_steps:
        system.train(cfg, progress=progress)
    return system.load(latest_checkpoint(out_dir))


def training_data(system: System, loaded: Any) -> Path:
    """The dataset folder a checkpoint was trained on, regenerated from its recorded generator settings if missing.

    Synthetic data is a deterministic function of its settings, so a checkpoint that records them can
    always get its ground truth back. Relative roots (packaged configs, shipped checkpoints) are relative
    to the repository.

    Raises:
        DataError: the folder is missing and the checkpoint records no generator settings.
    """
    from toolkit.paths import REPO_ROOT

    tc = loaded.meta.get("train_config") or {}
    root = Path(tc.get("data_root", ""))
    if not root.is_absolute():
        root = REPO_ROOT / root
    if root.exists() and any(root.iterdir()):
        return root
    if not tc.get("synthetic"):
        raise DataError(root, "training data not found and the checkpoint records no generator settings")
    system.write_data(root, **tc["synthetic"])
    return root


def _check_kind(system: System, kind: str) -> None:
    if kind not in system.shipped:
        raise ValueError(f"unknown pretrained kind {kind!r}; valid: {sorted(system.shipped)}")
