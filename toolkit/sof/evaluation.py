"""mIoU over a training run, per class, in 3D, and of stage-2 fits (the original's Fig. 9, computed).

The original's Test_ckpt_mIoU notebook rendered every checkpoint of an inverse-rendering run but never
computed an mIoU (sof.md 4, sof#9). Here every number comes from :mod:`toolkit.metrics` (one mIoU
definition, sof.md 7.1 item 8):

- :func:`checkpoint_curve`: held-out-view mIoU of every checkpoint kept in a run folder;
- :func:`validation_history`: the validation records a checkpoint carries (every ``val_every`` steps,
  also in exported checkpoints, whose optimizer state and older checkpoints are gone);
- :class:`MIoUCurve`: a trainer callback that scores chosen views at every checkpoint as it is written
  (runs keep only their last few checkpoint files);
- :func:`fit_single_views`: stage 2 on the frontal view of new portraits, scored on the fitted view
  and on novel views.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from toolkit.metrics import MIoUResult
from toolkit.training import Callback

_STEP_FILE = re.compile(r"step_(\d+)\.pt$")


def run_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every ``checkpoints/step_*.pt`` of a run folder, by step."""
    run_dir = Path(run_dir)
    ckdir = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    if not ckdir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckdir.iterdir() if (m := _STEP_FILE.search(p.name))]
    return sorted(found)


def miou_record(result: MIoUResult) -> dict[str, float]:
    """The scalar scores of an :class:`MIoUResult`: dataset level and per image, with and without background."""
    return {"miou": result.dataset_miou, "miou_fg": result.dataset_miou_no_bg,
            "image_miou": result.image_miou, "image_miou_fg": result.image_miou_no_bg}


def checkpoint_curve(run_dir: str | os.PathLike, *, image_size: int = 64, max_views: int | None = None,
                     data_root: str | os.PathLike | None = None,
                     progress: bool = True) -> list[dict[str, Any]]:
    """Held-out-view mIoU of every checkpoint in a run folder (stage 1 or stage 2).

    Args:
        run_dir: the run folder (``checkpoints/step_*.pt`` inside).
        image_size: render and compare at this size.
        max_views: score at most this many validation views (a fixed subset).
        data_root: the run's dataset (default: from the checkpoint, regenerated when synthetic).
    Returns:
        One record per checkpoint, by step: ``{"step", "path", "views", "miou", "miou_fg", "image_miou",
        "image_miou_fg", "result"}`` (``result`` is the full :class:`MIoUResult`).
    """
    from tqdm.auto import tqdm

    from toolkit.sof.checkpoint import load_sof
    from toolkit.sof.data import Split
    from toolkit.sof.train import evaluate_views, training_data

    records = []
    for step, path in tqdm(run_checkpoints(run_dir), desc="checkpoints", disable=not progress):
        loaded = load_sof(path)
        split = Split(**loaded.meta["split"])
        root = Path(data_root) if data_root else training_data(loaded)
        samples = _subset(split.val, max_views)
        result = evaluate_views(loaded.model, root, samples, image_size, instances=split.instances)
        records.append({"step": step, "path": path, "views": len(samples), **miou_record(result),
                        "result": result})
    return records


def validation_history(checkpoint: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``"val"`` records (step, miou, miou_fg, ...) of a checkpoint, or of a run folder's latest one."""
    from toolkit.training import load_checkpoint

    ck = load_checkpoint(checkpoint)
    return [dict(r) for r in ck.get("history", []) if r.get("split") == "val"]


class MIoUCurve(Callback):
    """Trainer callback: mIoU of fixed (instance, view) pairs at the start and at every checkpoint written.

    Args:
        data_root: the dataset of the views.
        samples: (instance name, view id) pairs to score.
        instances: latent index order of the run (its split's ``instances``).
        image_size: render size.
    Attributes:
        records: ``{"step", "miou", "miou_fg", "image_miou", "image_miou_fg"}`` per evaluation.
    """

    def __init__(self, data_root: str | os.PathLike, samples: Sequence[tuple[str, int]],
                 instances: Sequence[str], image_size: int = 64):
        self.data_root, self.samples = Path(data_root), list(samples)
        self.instances, self.image_size = list(instances), image_size
        self.records: list[dict[str, float]] = []

    def on_fit_start(self, trainer) -> None:
        if not any(r["step"] == trainer.step for r in self.records):
            self._evaluate(trainer)

    def on_checkpoint(self, trainer, path: Path) -> None:
        self._evaluate(trainer)

    def _evaluate(self, trainer) -> None:
        from toolkit.sof.train import evaluate_views

        model = getattr(trainer.model, "sof", trainer.model)
        result = evaluate_views(model, self.data_root, self.samples, self.image_size,
                                instances=self.instances)
        self.records = [r for r in self.records if r["step"] != trainer.step]
        self.records.append({"step": trainer.step, **miou_record(result)})


def class_iou_table(results: dict[str, MIoUResult], label_set: str = "sof20", *, digits: int = 3) -> str:
    """A text table of per-class IoU, one column per result (classes absent everywhere left out)."""
    from toolkit.labels import get_label_set

    names = get_label_set(label_set).names
    cols = list(results)
    ious = np.stack([results[c].per_class_iou for c in cols], axis=1)
    width = max(8, *(len(c) for c in cols))
    lines = [f"{'class':<12}" + "".join(f"{c:>{width + 2}}" for c in cols)]
    for k, row in enumerate(ious):
        if np.all(np.isnan(row)):
            continue
        cells = "".join(f"{'-' if np.isnan(v) else f'{v:.{digits}f}':>{width + 2}}" for v in row)
        lines.append(f"{k:>2} {names[k]:<9}" + cells)
    for label, attr in (("mIoU", "dataset_miou"), ("mIoU fg", "dataset_miou_no_bg")):
        values = [getattr(results[c], attr) for c in cols]
        lines.append(f"{label:<12}" + "".join(f"{v:>{width + 2}.{digits}f}" for v in values))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Stage 2 on single views of new portraits
# ----------------------------------------------------------------------------------------------------

class SingleViewFit(NamedTuple):
    model: Any
    """The SOF model with the fitted codes (latent index i = ``instances[i]``)."""
    instances: list[str]
    """Portrait names of the fitted data, in latent index order."""
    fitted: MIoUResult
    """mIoU on the fitted (frontal) views."""
    novel: MIoUResult | None
    """mIoU on the other views of the same portraits (None when they have only one view)."""
    curve: list[dict[str, float]]
    """Fitted-view mIoU at the start and at every checkpoint of the fit."""
    history: list[dict]
    """The trainer's history (its "val" records score the novel views)."""
    run_dir: Path


def new_portraits(loaded, out: str | os.PathLike, *, instances: int = 4, views: int | None = None,
                  size: int | None = None, seed_offset: int = 1000) -> Path:
    """Synthetic portraits the model has never seen, drawn like its training data with another seed.

    Args:
        loaded: a :class:`toolkit.sof.train.LoadedSof` whose training data is synthetic.
        out: dataset folder (reused when it already holds the portraits).
        views, size: default to the training data's settings.
        seed_offset: added to the training seed.
    """
    from toolkit.io import DataError
    from toolkit.synthetic.heads import write_portrait_dataset

    gen = dict((loaded.meta.get("train_config") or {}).get("synthetic") or {})
    if not gen:
        raise DataError(out, "the checkpoint's training data is not synthetic (no generator settings)")
    out = Path(out)
    settings = {"instances": instances, "views": views or gen.get("views", 8),
                "size": size or gen.get("size", 128),
                "projection": gen.get("projection", loaded.model.config.projection),
                "seed": int(gen.get("seed", 0)) + seed_offset}
    meta_path = out / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        have = {"instances": meta.get("instances"), "views": meta.get("views"),
                "size": meta.get("image_size"), "projection": meta.get("projection"), "seed": meta.get("seed")}
        if have == settings:
            return out  # generated earlier with the same settings
        if meta.get("generator") != "toolkit.synthetic.heads":
            raise DataError(out, "exists and is not a synthetic portrait dataset; choose another folder")
        shutil.rmtree(out)  # our own generated portraits, with other settings
    return write_portrait_dataset(out, **settings)


def fit_single_views(checkpoint: str | os.PathLike, data_root: str | os.PathLike,
                     out_dir: str | os.PathLike, *,
                     steps: int = 300, image_size: int = 64, lr: float = 5e-3, num_rays: int | None = 1024,
                     checkpoints: int = 5, fit_views: Sequence[int] = (0,), seed: int = 0,
                     progress: bool = True) -> SingleViewFit:
    """Stage 2: fit fresh codes to the frontal views of new portraits with the networks frozen, then score.

    Args:
        checkpoint: the stage-1 checkpoint (file or run folder).
        data_root: portraits to fit (e.g. :func:`new_portraits`).
        out_dir: the fit's run folder (an earlier run there is replaced; another non-empty folder is refused).
        steps: optimisation steps; ``checkpoints`` evenly spaced checkpoints feed ``curve``.
        lr: Adam learning rate of the codes.
        fit_views: view ids fitted per portrait (the others are the novel views).
    """
    from toolkit.io import DataError
    from toolkit.sof.data import read_dataset
    from toolkit.sof.train import SofTrainConfig, evaluate_views, fit_codes

    data = read_dataset(data_root)
    names = data.instance_names
    fitted = [(n, v) for n in names for v in data.views(n) if v in fit_views]
    novel = [(n, v) for n in names for v in data.views(n) if v not in fit_views]
    every = max(steps // max(checkpoints, 1), 1)
    config = SofTrainConfig(data_root=str(data_root), stage="inverse", checkpoint=str(checkpoint),
                            fit_views=list(fit_views), image_size=image_size, num_rays=num_rays, lr=lr,
                            max_steps=steps, log_every=max(every // 2, 1), val_every=every, ckpt_every=every,
                            val_image_size=image_size, val_max_views=64, seed=seed, out_dir=str(out_dir))
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not ((out_dir / "split.json").exists() or (out_dir / "checkpoints").is_dir()):
            raise DataError(out_dir, "exists and is not a training run folder; refusing to replace it")
        shutil.rmtree(out_dir)  # a fresh fit, not a resumed one
    curve = MIoUCurve(data_root, fitted, names, image_size)
    result = fit_codes(config, callbacks=[curve], progress=progress)
    model = result.model.eval()
    fit_score = evaluate_views(model, data_root, fitted, image_size, instances=names)
    novel_score = evaluate_views(model, data_root, novel, image_size, instances=names) if novel else None
    return SingleViewFit(model, names, fit_score, novel_score, curve.records, result.history, result.run_dir)


def _subset(pairs: Sequence[tuple[str, int]], limit: int | None) -> list[tuple[str, int]]:
    """At most ``limit`` pairs, evenly spread and in order (the same subset for every checkpoint)."""
    pairs = list(pairs)
    if limit is None or len(pairs) <= limit:
        return pairs
    return [pairs[i] for i in np.linspace(0, len(pairs) - 1, limit).round().astype(int)]


def run_folder(loaded) -> Path | None:
    """The run folder a loaded checkpoint was trained in, when it still holds checkpoints (else None).

    Exported checkpoints (the shipped one) record the run's ``out_dir``; repository-relative paths are
    resolved against the checkout.
    """
    from toolkit.paths import REPO_ROOT

    out_dir = (loaded.meta.get("train_config") or {}).get("out_dir")
    if not out_dir:
        return None
    path = Path(out_dir)
    path = path if path.is_absolute() else REPO_ROOT / path
    return path if run_checkpoints(path) else None

