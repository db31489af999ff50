"""Fit users' own single-view masks into a trained SOF model (stage 2 in one call; sof.md 2.6).

:func:`fit_masks` is the ``python -m toolkit fit sof CHECKPOINT MASKS_DIR OUT`` command and notebook 02's
real-mask section. Masks are CelebAMask-HQ label PNGs (converted with
:func:`toolkit.sof.data.convert_celebamask`) or a SOF-format dataset of single views. Codes, pose and a
2D alignment (:mod:`toolkit.sof.alignment`) are fitted with the networks frozen; with ``unfreeze_at``
(packaged config ``fit_masks``: the last 100 of 300 steps) the networks are then tuned to the masks at a
low rate (the original's ``steps_til_reset``), and the codes-only score is kept beside the final one.
Every mask is scored on its fitted view and rendered from new yaws.

Outputs in ``OUT`` (written beside, then moved in place, so an interrupted run leaves no partial folder):

- ``fit.json``: ``{"masks": {"<file stem>": {"miou_foreground", "miou", "pixel_accuracy",
  "per_class_iou", "alignment", "renders", "miou_foreground_codes_only"}}, "miou_foreground_mean",
  "networks_tuned_from", "seconds", ...}`` (``..._codes_only``: the fitted view before the networks were
  tuned, only when they were);
- ``fit.pt``: the fitted codes, camera corrections and (tuned) networks, loadable with :func:`toolkit.sof.train.load_sof`;
- ``codes.npz``: ``names``, ``codes`` (P, L), ``cam2world`` (P, 4, 4) and ``intrinsics`` (P, 3, 3) of
  the fitted views at ``render_size``;
- ``renders/<stem>_{mask,fitted,yaw-30,yaw+30}.png`` (palette colours), ``renders/<stem>_fitted_ids.png``
  (class ids) and ``renders/<stem>_summary.png`` (all side by side);
- ``data/`` (the converted masks) and ``run/`` (the stage-2 run folder).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from toolkit.config import from_dict, load_config_dict
from toolkit.io import DataError, atomic_save_npz, atomic_save_text, write_label_png, write_rgb_png
from toolkit.labels import colorize, get_label_set
from toolkit.metrics import segmentation_miou
from toolkit.sof.alignment import POSE_FIELDS, SIMILARITY_FIELDS, orbit
from toolkit.sof.data import convert_celebamask, read_dataset, resize_labels_nearest
from toolkit.sof.render import intrinsics_for_size
from toolkit.sof.train import SofTrainConfig, export_checkpoint, fit_codes, load_sof

FIT_CONFIG = "fit_masks"
"""Packaged stage-2 config of :func:`fit_masks` (``toolkit/configs/sof_fit_masks.yaml``)."""
NOVEL_YAWS = (-math.pi / 6, math.pi / 6)
"""Yaws (radians, about the portrait's target) of the novel views rendered for every fitted mask."""


def fit_masks(checkpoint: str | os.PathLike, masks: str | os.PathLike, out: str | os.PathLike, *,
              config: str | os.PathLike = FIT_CONFIG, overrides: Sequence[str] = (), render_size: int = 128,
              overwrite: bool = False, progress: bool = True) -> dict:
    """Fit single-view masks into a SOF checkpoint's latent space and score and render the fits.

    Args:
        checkpoint: a stage-1 SOF checkpoint (training run, export or original).
        masks: a folder of CelebAMask-HQ label PNGs, or a SOF-format dataset (its view 0 is fitted).
        out: output folder (see the module docstring); must not exist unless ``overwrite``.
        config: stage-2 config (packaged name or YAML path); ``overrides`` are ``key=value`` strings.
        render_size: resolution of the scores and renders.
        overwrite: replace an earlier fit in ``out`` (a folder holding ``fit.json``).
    Returns:
        The ``fit.json`` content.
    Raises:
        DataError: unreadable or wrong masks, a checkpoint that is not SOF, or ``out`` exists.
    """
    start = time.perf_counter()
    out = Path(out)
    _check_out(out, overwrite)
    base = load_sof(checkpoint)  # a checkpoint of the other system fails here, naming the file
    masks = Path(masks)
    work = out.with_name(f".{out.name}.partial")
    if work.exists():
        shutil.rmtree(work)  # left by an interrupted run
    work.mkdir(parents=True)
    try:
        report = _fit_into(work, base, checkpoint, masks, config, overrides, render_size, progress, start)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # nothing half-written is left beside OUT
        raise
    if out.exists():  # overwrite: only an earlier fit (checked above) is replaced
        shutil.rmtree(out)
    os.replace(work, out)
    return report


def _fit_into(work: Path, base, checkpoint, masks: Path, config, overrides, render_size: int, progress: bool,
              start: float) -> dict:
    """Everything of :func:`fit_masks` written into the staging folder ``work``."""
    data_root, stems = _prepare_masks(masks, work / "data", render_size)
    cfg_dict = load_config_dict("sof", config, [*overrides, f"checkpoint={checkpoint}", f"data_root={data_root}",
                                                f"out_dir={work / 'run'}"])
    cfg = from_dict(SofTrainConfig, cfg_dict, f"sof config {config}")
    codes_only = {}
    if cfg.unfreeze_at is not None and cfg.unfreeze_at < cfg.max_steps:
        # score the codes-only fit before the networks are tuned to these masks, then go on exactly
        early = fit_codes(cfg, progress=progress, stop_at=cfg.unfreeze_at)
        codes_only = _fitted_view_miou(load_sof(early.checkpoint), data_root, early.split.instances, render_size)
    fitted = fit_codes(cfg, progress=progress, resume=bool(codes_only))
    loaded = load_sof(fitted.checkpoint)
    report = {"checkpoint": str(checkpoint), "masks_dir": str(masks), "config": str(config),
              "steps": cfg.max_steps, "networks_tuned_from": cfg.unfreeze_at if codes_only else None,
              "render_size": render_size, "masks": {}}
    names = fitted.split.instances
    renders, arrays = work / "renders", _fitted_arrays(loaded, data_root, names, render_size)
    label_names = get_label_set(base.meta.get("label_set", "sof20")).names
    for i, name in enumerate(names):
        stem = stems[name]
        gt = arrays["truth"][i]
        views = _render_views(loaded, i, arrays["cam2world"][i], arrays["intrinsics"][i], render_size)
        score = segmentation_miou(views["fitted"], gt, loaded.model.config.num_classes)
        files = _write_renders(renders, stem, gt, views)
        report["masks"][stem] = {
            "miou_foreground": _finite(score.dataset_miou_no_bg), "miou": _finite(score.dataset_miou),
            **({"miou_foreground_codes_only": codes_only[name]} if codes_only else {}),
            "pixel_accuracy": float((views["fitted"] == gt).mean()),
            "per_class_iou": {label_names[c]: float(v) for c, v in enumerate(score.per_class_iou)
                              if np.isfinite(v) and (gt == c).any()},
            "alignment": arrays["alignment"][i], "renders": [str(Path("renders") / f) for f in files]}
    report["miou_foreground_mean"] = float(np.mean([m["miou_foreground"] for m in report["masks"].values()]))
    export_checkpoint(fitted.checkpoint, work / "fit.pt")
    atomic_save_npz(work / "codes.npz", names=np.array([stems[n] for n in names]), codes=arrays["codes"],
                    cam2world=arrays["cam2world"], intrinsics=arrays["intrinsics"])
    report["seconds"] = round(time.perf_counter() - start, 1)
    atomic_save_text(work / "fit.json", json.dumps(report, indent=2) + "\n")
    return report


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not overwrite:
        raise DataError(out, "output folder exists; choose another or pass --overwrite to replace an earlier fit")
    if not (out / "fit.json").is_file():
        raise DataError(out, "exists and holds no fit.json: not an earlier fit, refusing to replace it")


def _prepare_masks(masks: Path, converted: Path, size: int) -> tuple[Path, dict[str, str]]:
    """The SOF dataset to fit and each instance's file stem (CelebAMask-HQ PNGs are converted)."""
    if not masks.is_dir():
        raise DataError(masks, "masks folder not found")
    if (masks / "meta.json").is_file() or any(p.is_dir() and (p / "seg_00.png").is_file() for p in masks.iterdir()):
        data = read_dataset(masks)
        return masks, {n: n for n in data.instance_names}
    written = convert_celebamask(masks, converted, size=size)
    stems = sorted(p.stem for p in masks.iterdir() if p.is_file() and p.suffix.lower() == ".png"
                   and not p.name.startswith("."))
    return converted, {folder.name: stem for folder, stem in zip(written, stems)}


def _fitted_view_miou(loaded, root: Path, names: list[str], size: int) -> dict[str, float | None]:
    """Foreground mIoU of every portrait's fitted view."""
    arrays = _fitted_arrays(loaded, root, names, size)
    scores = {}
    for i, name in enumerate(names):
        fitted = _render_views(loaded, i, arrays["cam2world"][i], arrays["intrinsics"][i], size, novel=False)["fitted"]
        scores[name] = _finite(segmentation_miou(fitted, arrays["truth"][i], loaded.model.config.num_classes)
                               .dataset_miou_no_bg)
    return scores


def _fitted_arrays(loaded, root: Path, names: list[str], size: int) -> dict:
    """Fitted view 0 of every portrait: codes, corrected cameras at ``size``, ground truth, alignment."""
    data = read_dataset(root)
    cams = torch.tensor(np.stack([data.instances[n].cam2world[0] for n in names]), dtype=torch.float32)
    Ks, truth = [], []
    for n in names:
        raw = data.instances[n].read_labels(0)
        Ks.append(intrinsics_for_size(data.instances[n].intrinsics[0], raw.shape[1], size, data.meta.pixel_center))
        truth.append(resize_labels_nearest(raw, size, pixel_center=data.meta.pixel_center))
    Ks = torch.tensor(np.stack(Ks), dtype=torch.float32)
    alignment = [{} for _ in names]
    if loaded.cameras is not None:
        with torch.no_grad():
            cams, Ks = loaded.cameras(torch.arange(len(names)), cams, Ks)
        for i in range(len(names)):
            values = [*loaded.cameras.pose[i].tolist(), *loaded.cameras.similarity[i].tolist()]
            alignment[i] = {k: round(v, 5) for k, v in zip((*POSE_FIELDS, *SIMILARITY_FIELDS), values)}
    return {"codes": loaded.model.latent_codes.weight.detach().numpy(), "cam2world": cams.numpy(),
            "intrinsics": Ks.numpy(), "truth": np.stack(truth), "alignment": alignment}


@torch.no_grad()
def _render_views(loaded, index: int, cam2world: np.ndarray, K: np.ndarray, size: int, *,
                  novel: bool = True) -> dict[str, np.ndarray]:
    """The fitted view and (``novel``) :data:`NOVEL_YAWS` views (turned about the portrait's orbit target)."""
    model = loaded.model.eval()
    cam = torch.tensor(cam2world, dtype=torch.float32)[None]
    target = loaded.cameras.targets[index][None] if loaded.cameras is not None else _target(cam)
    yaws = {"fitted": 0.0, **({f"yaw{math.degrees(y):+.0f}": y for y in NOVEL_YAWS} if novel else {})}
    cams = torch.cat([orbit(cam, target, torch.tensor([y]), torch.zeros(1)) for y in yaws.values()])
    z = model.latent_codes.weight[index][None].expand(len(yaws), -1)
    out = model.render(z, cams, torch.tensor(K, dtype=torch.float32).expand(len(yaws), 3, 3), size, size)
    labels = out.logits.argmax(-1).to(torch.uint8).numpy()
    return dict(zip(yaws, labels))


def _target(cam: torch.Tensor) -> torch.Tensor:
    centre, forward = cam[:, :3, 3], cam[:, :3, 2]
    return centre - (centre * forward).sum(-1, keepdim=True) * forward


def _write_renders(folder: Path, stem: str, truth: np.ndarray, views: dict[str, np.ndarray]) -> list[str]:
    files = [f"{stem}_mask.png", f"{stem}_fitted_ids.png", f"{stem}_summary.png"]
    write_rgb_png(folder / files[0], colorize(truth))
    write_label_png(folder / files[1], views["fitted"])
    for key, labels in views.items():
        files.append(f"{stem}_{key}.png")
        write_rgb_png(folder / files[-1], colorize(labels))
    gap = np.full((truth.shape[0], 4, 3), 255, np.uint8)
    panels = [colorize(truth)] + [colorize(views[k]) for k in views]
    write_rgb_png(folder / files[2], np.concatenate([x for p in panels for x in (p, gap)][:-1], 1))
    return files


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None
