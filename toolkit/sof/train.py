"""SOF training: stage 1 (multi-view), stage 2 (inverse rendering of single views), evaluation.

Stage 1 trains the networks and one latent code per portrait together on calibrated multi-view label
maps (sof.md 2.1-2.3): cross-entropy x200, negative-depth penalty x1e-3, latent L2 x1, random ray subsets.
Stage 2 freezes the networks and fits fresh codes (and optionally the cameras) to new label maps, e.g. a
single frontal view per portrait (sof.md 2.6). Both run on :class:`toolkit.training.Trainer`.

Differences from the original, on purpose: views are keyed by id and the validation views are held out
from training (the original's independent shuffles overlapped them, sof.md 7.1 items 1-2); the camera
look-at is the correct (column) one; mIoU comes from :mod:`toolkit.metrics` (one definition).
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.config import (
    DEVICE,
    above,
    at_least,
    check_fields,
    declare_checks,
    each,
    from_dict,
    kwargs_of,
    nested,
    non_empty,
    one_of,
    within,
)
from toolkit.io import DataError
from toolkit.metrics import MIoUResult, segmentation_miou
from toolkit.paths import user_path
from toolkit.sof.alignment import PortraitCameras, mask_similarity
from toolkit.sof.checkpoint import EXPORT_FORMAT, LoadedSof, export_checkpoint, load_sof
from toolkit.sof.data import (
    RAY_SAMPLINGS,
    SofDataset,
    Split,
    make_split,
    read_dataset,
    resize_labels_nearest,
    validate_dataset,
)
from toolkit.sof.losses import LossWeights, sof_losses
from toolkit.sof.model import MODEL_PRESETS, SOFModel, SOFModelConfig, model_config
from toolkit.sof.render import intrinsics_for_size
from toolkit.synthetic.heads import write_portrait_dataset
from toolkit.training import (
    AMP_MODES,
    Callback,
    Trainer,
    check_run_fingerprint,
    data_fingerprint,
    latest_checkpoint,
    lifecycle,
    step_schedule,
    trainer_config,
)

__all__ = [
    "STAGES", "SYSTEM", "LoadedSof", "SofTrainConfig", "SofTrainable", "TrainResult", "evaluate_checkpoint",
    "evaluate_views", "export_checkpoint", "fit_codes", "load_pretrained", "load_sof", "miou_logs", "render_views",
    "shipped_checkpoint", "sof_step", "train", "train_from_config", "train_multiview", "training_data",
]

STAGES = ("multiview", "inverse")


@dataclass
class SofTrainConfig:
    """Everything a SOF training run needs; stored in its checkpoints."""

    data_root: str = ""
    """SOF dataset folder."""
    stage: str = "multiview"
    """"multiview" (stage 1: networks + codes) or "inverse" (stage 2: codes of new portraits, frozen networks)."""
    synthetic: dict | None = None
    """If set and ``data_root`` does not exist, generate synthetic portraits there first
    (keys of :func:`toolkit.synthetic.heads.write_portrait_dataset`: instances, views, size, seed, projection)."""
    model_preset: str = "small"
    """Size preset of :data:`toolkit.sof.model.MODEL_PRESETS`."""
    model_overrides: dict = field(default_factory=dict)
    """Fields of :class:`SOFModelConfig` replacing the preset's (e.g. latent_dim)."""
    image_size: int = 64
    """Training resolution of the label maps (nearest-resized; intrinsics rescaled)."""
    num_rays: int | None = 1024
    """Random rays per image and step; None trains on full images (the original)."""
    ray_sampling: str = "uniform"
    """How the random rays are drawn: "uniform" or "balanced" (small classes oversampled;
    :class:`toolkit.sof.data.SofDataset`)."""
    batch_size: int = 8
    """Images per step (the original: 8)."""
    lr: float = 5e-5
    """Adam learning rate (the original: 5e-5)."""
    lr_milestones: list | None = None
    """Steps at which the learning rate is multiplied by ``lr_gamma`` (None: constant, the original)."""
    lr_gamma: float = 0.3
    max_steps: int = 1000
    log_every: int = 50
    val_every: int = 500
    ckpt_every: int = 500
    keep_last: int | None = 3
    """Checkpoints kept in the run folder (None keeps all, e.g. for an mIoU-over-training curve)."""
    loss: dict = field(default_factory=dict)
    """Loss weights (fields of :class:`toolkit.sof.losses.LossWeights`); defaults are the original's."""
    val_views_per_instance: int = 2
    """Stage 1: views per portrait held out for validation."""
    val_image_size: int = 64
    """Resolution of the validation renders."""
    val_max_views: int = 32
    """Validate on at most this many held-out views (a fixed subset) to keep validation cheap."""
    seed: int = 0
    out_dir: str = "data/runs/sof"
    """Run folder (checkpoints, split.json)."""
    device: str = "auto"
    amp: str = "off"
    """"bf16" autocast on CUDA."""
    checkpoint: str = ""
    """Stage 2: the stage-1 checkpoint whose networks are used."""
    fit_views: list | None = None
    """Stage 2: view ids fitted per portrait (default [0], the frontal view); the others are evaluated."""
    optimize_camera: bool = False
    """Stage 2: also fit each portrait's camera pose (yaw and pitch about the point of its optical axis
    closest to the origin), as the original's --opt_cam (with a correct look-at)."""
    align: bool = False
    """Stage 2: initialise a 2D similarity (scale, shift, roll) of each portrait's image from the eyes and
    mouth of its fitted label map (the CelebA-HQ alignment rule) and optimise it with the codes
    (:mod:`toolkit.sof.alignment`); needed for masks not framed like the training portraits."""
    camera_lr: float = 1e-3
    """Stage 2: learning rate of the pose and similarity parameters."""
    code_init: str = "random"
    """Stage 2: starting codes. "random": N(0, 0.01²) (the original's); "mean": the mean stage-1 code;
    "nearest": per portrait, the stage-1 code whose render of the fitted view has the lowest cross-entropy."""
    unfreeze_at: int | None = None
    """Stage 2: unfreeze the networks at this step (the original's steps_til_reset); None keeps them frozen."""
    network_lr: float | None = None
    """Stage 2: learning rate of the networks once unfrozen; None uses ``lr`` (the original's single rate),
    which is far too high for the networks at the codes' usual 1e-2."""
    init_from: str = ""
    """Stage 1: start a new run from this checkpoint's networks, e.g. to extend a trained model with more
    portraits. Portraits it was trained on (same instance names) keep their codes; new ones start from
    N(0, 0.01²). The model config must match apart from the number of instances."""

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; valid: {list(STAGES)}")
        if self.code_init not in CODE_INITS:
            raise ValueError(f"unknown code_init {self.code_init!r}; valid: {list(CODE_INITS)}")
        if self.stage == "inverse" and not self.checkpoint:
            raise ValueError("stage 'inverse' needs `checkpoint` (a stage-1 checkpoint)")
        check_fields(self)


declare_checks(
    SofTrainConfig, stage=one_of(STAGES), model_preset=one_of(sorted(MODEL_PRESETS)),
    synthetic=kwargs_of(write_portrait_dataset, exclude=("out", "device", "overwrite"), instances=at_least(1),
                        views=at_least(1), size=at_least(1), seed=at_least(0)),
    model_overrides=nested(SOFModelConfig, exclude=("num_instances", "projection", "num_classes")),
    image_size=at_least(1), num_rays=at_least(1), ray_sampling=one_of(RAY_SAMPLINGS), batch_size=at_least(1),
    lr=above(0), lr_milestones=each(at_least(1)), lr_gamma=within(0, 1, open_low=True), max_steps=at_least(0),
    log_every=at_least(1), val_every=at_least(0), ckpt_every=at_least(0), keep_last=at_least(1),
    loss=nested(LossWeights, segmentation=at_least(0), negative_depth=at_least(0), latent=at_least(0),
                depth_supervision=at_least(0)),
    val_views_per_instance=at_least(0), val_image_size=at_least(1), val_max_views=at_least(1), seed=at_least(0),
    out_dir=non_empty(), device=DEVICE, amp=one_of(AMP_MODES), fit_views=each(at_least(0)), camera_lr=above(0),
    unfreeze_at=at_least(0), network_lr=above(0))


class SofTrainable(nn.Module):
    """A SOF model plus optional per-portrait camera corrections; ``forward(batch)`` is one training pass."""

    def __init__(self, sof: SOFModel, cameras: PortraitCameras | None = None):
        super().__init__()
        self.sof = sof
        self.cameras = cameras

    def forward(self, batch: dict[str, torch.Tensor]):
        z = self.sof.embedding(batch["instance_idx"])
        cam2world, K = batch["cam2world"], batch["intrinsics"]
        if self.cameras is not None:
            cam2world, K = self.cameras(batch["instance_idx"], cam2world, K)
        out = self.sof(z, cam2world, K, batch["uv"])
        return out, z


class TrainResult(NamedTuple):
    model: SOFModel
    history: list[dict]
    run_dir: Path
    checkpoint: Path | None
    split: Split


# --------------------------------------------------------------------------------------------------
# Stage 1
# --------------------------------------------------------------------------------------------------

def train_multiview(config: SofTrainConfig, *, callbacks: Sequence[Callback] = (), resume: bool = True,
                    progress: bool = True, stop_at: int | None = None) -> TrainResult:
    """Stage 1: train networks and codes on multi-view label maps; held-out views validate (mIoU).

    Args:
        config: the run's settings.
        callbacks: trainer callbacks, e.g. :class:`toolkit.training.LivePlot` in a notebook.
        resume: continue from the latest checkpoint in ``config.out_dir`` if there is one.
        stop_at: stop after this step (a later call with ``resume=True`` continues exactly).
    """
    root = _ensure_data(config)
    run_dir = user_path(config.out_dir)
    fingerprint = data_fingerprint(root, read_dataset(root, check_labels=False).instance_names)
    if resume:  # before split.json is read: it belongs to the data the run started on
        check_run_fingerprint(run_dir, fingerprint)
    split_path = run_dir / "split.json"
    split = Split.load(split_path) if resume and split_path.exists() else make_split(
        root, val_views_per_instance=config.val_views_per_instance, seed=config.seed)
    train_set = SofDataset.from_split(root, split, "train", image_size=config.image_size, num_rays=config.num_rays,
                                      seed=config.seed, with_depth=_depth_supervised(config),
                                      ray_sampling=config.ray_sampling)
    with torch.random.fork_rng(devices=[]):  # the initialisation depends on the seed alone
        torch.manual_seed(config.seed)
        sof = SOFModel(model_config(config.model_preset, num_instances=len(split.instances),
                                    projection=train_set.projection, num_classes=train_set.num_classes,
                                    **config.model_overrides))
        if config.init_from and not (resume and _latest(run_dir)):  # a resumed run has its own weights
            _warm_start(sof, load_sof(user_path(config.init_from)), split.instances)
    trainable = SofTrainable(sof)
    optimizer = torch.optim.Adam(trainable.parameters(), lr=config.lr)
    val_samples = _fixed_subset(split.val, config.val_max_views, config.seed)
    val_fn = (lambda m: miou_logs(evaluate_views(m.sof, root, val_samples, config.val_image_size,
                                                 instances=split.instances))) if val_samples else None
    meta = _meta(config, sof, train_set, split)
    trainer = _trainer(trainable, optimizer, config, train_set, val_fn, meta, [_SaveSplit(split, split_path),
                                                                             *callbacks], run_dir, progress,
                       fingerprint)
    history = trainer.fit(resume=resume, max_steps=stop_at)
    return TrainResult(sof, history, run_dir, _latest(run_dir), split)


# --------------------------------------------------------------------------------------------------
# Stage 2
# --------------------------------------------------------------------------------------------------

def fit_codes(config: SofTrainConfig, *, callbacks: Sequence[Callback] = (), resume: bool = False,
              progress: bool = True, stop_at: int | None = None) -> TrainResult:
    """Stage 2 (inverse rendering): fit fresh codes of new portraits with the stage-1 networks frozen.

    Trains on ``fit_views`` of every portrait of ``data_root`` (default the frontal view 0); the other
    views, when present, are the validation set (novel views of the fitted codes).
    """
    root = _ensure_data(config)
    base = load_sof(user_path(config.checkpoint))
    data = read_dataset(root)
    names = data.instance_names
    fit_views = config.fit_views or [0]
    train_pairs = [(n, v) for n in names for v in data.views(n) if v in fit_views]
    val_pairs = [(n, v) for n in names for v in data.views(n) if v not in fit_views]
    if not train_pairs:
        raise DataError(root, f"no views {fit_views} to fit")
    split = Split(instances=names, train=train_pairs, val=val_pairs, seed=config.seed, val_views_per_instance=0)
    train_set = SofDataset.from_split(root, split, "train", image_size=config.image_size, num_rays=config.num_rays,
                                      seed=config.seed, with_depth=_depth_supervised(config),
                                      ray_sampling=config.ray_sampling)
    sof = _fresh_codes(base.model, len(names), seed=config.seed)
    if config.code_init != "random":
        with torch.no_grad():
            sof.latent_codes.weight.add_(_initial_codes(base.model, config.code_init, root, split))
    cameras = _portrait_cameras(config, data, names, train_pairs)
    trainable = SofTrainable(sof, cameras)
    groups = [{"params": [sof.latent_codes.weight], "lr": config.lr}]
    if cameras is not None:
        groups.append({"params": [p for p in cameras.parameters() if p.requires_grad], "lr": config.camera_lr})
    network_params = [p for n, p in sof.named_parameters() if not n.startswith("latent_codes")]
    groups.append({"params": network_params, "lr": config.lr if config.network_lr is None else config.network_lr})
    for p in network_params:  # frozen: no gradient, so Adam leaves them untouched
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(groups)
    callbacks = list(callbacks)
    if config.unfreeze_at is not None:
        callbacks.append(_Unfreeze(config.unfreeze_at, network_params))
    val_samples = _fixed_subset(val_pairs, config.val_max_views, config.seed)

    def val_fn(m: SofTrainable):
        return miou_logs(evaluate_views(m.sof, root, val_samples, config.val_image_size, instances=names,
                                        cameras=m.cameras))

    meta = _meta(config, sof, train_set, split)
    run_dir = user_path(config.out_dir)
    trainer = _trainer(trainable, optimizer, config, train_set, val_fn if val_samples else None, meta,
                       [_SaveSplit(split, run_dir / "split.json"), *callbacks], run_dir, progress,
                       data_fingerprint(root, names, fit_views=fit_views))
    history = trainer.fit(resume=resume, max_steps=stop_at)
    return TrainResult(sof, history, run_dir, _latest(run_dir), split)


class _SaveSplit(Callback):
    """Write the run's split.json once the trainer holds the run folder (and has checked its data)."""

    def __init__(self, split: Split, path: Path):
        self.split, self.path = split, path

    def on_fit_start(self, trainer):
        if not trainer.is_main:
            return
        try:
            unchanged = Split.load(self.path) == self.split
        except DataError:
            unchanged = False
        if not unchanged:
            self.split.save(self.path)


class _Unfreeze(Callback):
    def __init__(self, at: int, params: list[nn.Parameter]):
        self.at, self.params = at, params

    def on_step_end(self, trainer, step, logs):
        if step == self.at:
            for p in self.params:
                p.requires_grad_(True)

    def on_fit_start(self, trainer):  # a resumed run past the unfreeze step stays unfrozen
        if trainer.step >= self.at:
            for p in self.params:
                p.requires_grad_(True)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------

@torch.no_grad()
def render_views(model: SOFModel, root: str | os.PathLike, samples: Sequence[tuple[str, int]], image_size: int,
                 *, instances: Sequence[str] | None = None, codes: torch.Tensor | None = None,
                 cameras: PortraitCameras | None = None, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Render (instance, view) pairs and read their stored label maps, both at ``image_size``.

    Args:
        model: the SOF model; its latent code of instance ``instances.index(name)`` is used unless
            ``codes`` (one row per latent index) is given.
        samples: (instance name, view id) pairs.
        image_size: render and compare at this size (ground truth nearest-resized).
        instances: latent index order (default: the dataset's sorted instances).
        cameras: fitted per-portrait camera corrections (stage 2), applied to the stored cameras of the
            portrait's views; indexed like ``instances``.
    Returns:
        (predicted, ground truth) label maps, each (len(samples), image_size, image_size) uint8.
    """
    data = read_dataset(root)
    instances = list(instances) if instances is not None else data.instance_names
    index = {n: i for i, n in enumerate(instances)}
    device = next(model.parameters()).device
    preds, gts = [], []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            idx = torch.tensor([index[n] for n, _ in chunk], device=device)
            z = model.embedding(idx) if codes is None else codes[idx.cpu()].to(device)
            cams, Ks = [], []
            for name, view in chunk:
                inst = data.instances[name]
                raw = inst.read_labels(view)
                cams.append(inst.cam2world[view])
                Ks.append(intrinsics_for_size(inst.intrinsics[view], raw.shape[1], image_size, data.meta.pixel_center))
                gts.append(resize_labels_nearest(raw, image_size, pixel_center=data.meta.pixel_center))
            cam_t = torch.tensor(np.stack(cams), dtype=torch.float32, device=device)
            K_t = torch.tensor(np.stack(Ks), dtype=torch.float32, device=device)
            if cameras is not None:
                cam_t, K_t = cameras(idx, cam_t, K_t)
            out = model.render(z, cam_t, K_t, image_size, image_size, pixel_center=data.meta.pixel_center)
            preds.append(out.logits.argmax(-1).to(torch.uint8).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(preds), np.stack(gts).astype(np.uint8)


def evaluate_views(model: SOFModel, root: str | os.PathLike, samples: Sequence[tuple[str, int]], image_size: int,
                   **kwargs) -> MIoUResult:
    """mIoU (:func:`toolkit.metrics.segmentation_miou`) of :func:`render_views` against the stored maps."""
    pred, gt = render_views(model, root, samples, image_size, **kwargs)
    return segmentation_miou(pred, gt, model.config.num_classes)


def miou_logs(result: MIoUResult) -> dict[str, float]:
    """The scalars a trainer logs from an :class:`MIoUResult`."""
    return {"miou": result.dataset_miou, "miou_fg": result.dataset_miou_no_bg,
            "image_miou_fg": result.image_miou_no_bg}


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike, *, image_size: int = 128,
                        max_views: int | None = None) -> dict[str, Any]:
    """Held-out-view mIoU of a checkpoint on its own data (the ``python -m toolkit eval sof`` command).

    The validation views of the checkpoint's split are rendered at ``image_size`` and compared with the
    stored label maps of ``data``. Returns a JSON-ready dict (dataset-level and per-image mIoU with and
    without background, per-class IoU).
    """
    loaded = load_sof(checkpoint)
    split_dict = loaded.meta.get("split")
    if not split_dict:
        raise DataError(checkpoint, "checkpoint has no split (original checkpoints cannot name held-out views)")
    split = Split(**split_dict)
    data_root = Path(data)
    names = read_dataset(data_root).instance_names
    missing = [n for n in split.instances if n not in names]
    if missing:
        raise DataError(data_root, f"instances {missing[:5]} of the checkpoint's split are not in this dataset; "
                                   "evaluate on the data it was trained on (stage 2 fits new portraits)")
    samples = split.val if max_views is None else _fixed_subset(split.val, max_views, 0)
    start = time.perf_counter()
    res = evaluate_views(loaded.model, data_root, samples, image_size, instances=split.instances)
    from toolkit.labels import get_label_set

    names_c = get_label_set(loaded.meta.get("label_set", "sof20")).names
    return {
        "checkpoint": str(checkpoint), "data": str(data_root), "views": len(samples), "image_size": image_size,
        "dataset_miou": res.dataset_miou, "dataset_miou_no_bg": res.dataset_miou_no_bg,
        "image_miou": res.image_miou, "image_miou_no_bg": res.image_miou_no_bg,
        "per_class_iou": {names_c[c]: (None if np.isnan(v) else float(v)) for c, v in enumerate(res.per_class_iou)},
        "seconds": round(time.perf_counter() - start, 2),
    }


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

def train(config: SofTrainConfig, **kwargs) -> TrainResult:
    """Run the stage ``config`` describes: :func:`train_multiview` (stage 1, resumes by default) or
    :func:`fit_codes` (stage 2); ``kwargs`` go to it (callbacks, resume, progress, stop_at)."""
    return train_multiview(config, **kwargs) if config.stage == "multiview" else fit_codes(config, **kwargs)


def train_from_config(config: str | os.PathLike, overrides: Sequence[str] = (), **kwargs) -> TrainResult:
    """Run the stage a YAML config (or packaged preset name) describes (the ``train sof`` command)."""
    return lifecycle.train_from_config(SYSTEM, config, overrides, **kwargs)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def sof_step(model: SofTrainable, batch: dict[str, torch.Tensor], weights: LossWeights):
    """One training pass: the loss terms of :func:`toolkit.sof.losses.sof_losses` and pixel accuracy."""
    out, z = model(batch)
    losses = sof_losses(out.logits, out.depth, batch["labels"], z, weights=weights, target_depth=batch.get("depth"))
    accuracy = (out.logits.detach().argmax(-1) == batch["labels"]).float().mean()
    logs = {"ce": losses.segmentation.detach(), "depth_reg": losses.negative_depth.detach(),
            "latent": losses.latent.detach(), "pixel_acc": accuracy}
    if weights.depth_supervision > 0:
        logs["depth_sup"] = losses.depth_supervision.detach()
    return losses.total, logs


def _trainer(trainable, optimizer, config: SofTrainConfig, train_set, val_fn, meta, callbacks, run_dir, progress,
             fingerprint=None):
    weights = from_dict(LossWeights, dict(config.loss), "loss")
    # A dataset smaller than one batch (e.g. two single-view portraits in stage 2) trains on all of it.
    tcfg = trainer_config(config, batch_size=min(config.batch_size, len(train_set)), out_dir=str(run_dir),
                          progress=progress)
    scheduler = step_schedule(optimizer, config.lr_milestones, config.lr_gamma)
    return Trainer(trainable, optimizer, lambda m, b: sof_step(m, b, weights), config=tcfg, data=train_set,
                   val_fn=val_fn, meta=meta, callbacks=callbacks, scheduler=scheduler, fingerprint=fingerprint)


def _depth_supervised(config: SofTrainConfig) -> bool:
    return float(dict(config.loss).get("depth_supervision", 0.0)) > 0


def _meta(config: SofTrainConfig, sof: SOFModel, dataset: SofDataset, split: Split) -> dict:
    return {"system": "sof", "stage": config.stage, "model_config": sof.config_dict(),
            "train_config": dataclasses.asdict(config), "label_set": dataset.label_set,
            "camera": {"projection": dataset.projection, "pixel_center": dataset.pixel_center,
                       "image_size": dataset.meta.image_size},
            "split": dataclasses.asdict(split)}


def _fresh_codes(base: SOFModel, num_instances: int, seed: int) -> SOFModel:
    """A copy of ``base`` with ``num_instances`` new codes drawn N(0, 0.01²) (the original's init)."""
    model = SOFModel(dataclasses.replace(base.config, num_instances=num_instances))
    _copy_networks(model, base)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.latent_codes.weight.copy_(torch.randn(model.latent_codes.weight.shape, generator=g) * 0.01)
    return model


def _copy_networks(dst: SOFModel, src: SOFModel) -> None:
    """Load every weight of ``src`` but its latent codes into ``dst`` (same sizes apart from the code table)."""
    missing, _ = dst.load_state_dict({k: v for k, v in src.state_dict().items() if not k.startswith("latent_codes")},
                                     strict=False)
    assert all(k.startswith("latent_codes") for k in missing), missing


def _warm_start(sof: SOFModel, base: LoadedSof, instances: Sequence[str]) -> None:
    """Copy ``base``'s networks into ``sof`` and the codes of the portraits both were trained on."""
    mismatch = {k: (v, getattr(base.model.config, k)) for k, v in dataclasses.asdict(sof.config).items()
                if k != "num_instances" and v != getattr(base.model.config, k)}
    if mismatch:
        raise DataError(base.path, "init_from: model config differs from this run's "
                        + ", ".join(f"{k}: run {a!r} vs checkpoint {b!r}" for k, (a, b) in mismatch.items()))
    _copy_networks(sof, base.model)
    old = {name: i for i, name in enumerate(base.meta.get("split", {}).get("instances", []))}
    with torch.no_grad():
        for i, name in enumerate(instances):
            if name in old:
                sof.latent_codes.weight[i] = base.model.latent_codes.weight[old[name]]


CODE_INITS = ("random", "mean", "nearest")
NEAREST_CODE_SIZE = 32
"""Render size at which "nearest" scores every stage-1 code on the fitted views (cheap, coarse)."""


def _initial_codes(base: SOFModel, how: str, root: Path, split: Split) -> torch.Tensor:
    """(P, L) starting codes of the stage-2 portraits (added to the small random draw)."""
    codes = base.latent_codes.weight.detach()
    if how == "mean":
        return codes.mean(0).expand(len(split.instances), -1).clone()
    # "nearest": summed cross-entropy of each portrait's fitted views under every stage-1 code
    views = SofDataset.from_split(root, split, "train", image_size=NEAREST_CODE_SIZE)
    n = len(codes)
    cost = torch.zeros(len(split.instances), n)
    with torch.no_grad():
        weights = base.phi_weights(codes)
        for item in views:
            out = base(None, item["cam2world"].expand(n, 4, 4), item["intrinsics"].expand(n, 3, 3),
                       item["uv"].expand(n, -1, 2), weights=weights)
            target = item["labels"].expand(n, -1)
            ce = F.cross_entropy(out.logits.transpose(1, 2), target, reduction="none").mean(1)
            cost[int(item["instance_idx"])] += ce
    return codes[cost.argmin(1)].clone()


def _portrait_cameras(config: SofTrainConfig, data, names: list[str],
                      train_pairs: list[tuple[str, int]]) -> PortraitCameras | None:
    """Stage 2: camera corrections per portrait, about its first fitted view's camera; the similarity starts
    from that view's eyes and mouth when ``config.align``."""
    if not (config.optimize_camera or config.align):
        return None
    first_view = {n: v for n, v in reversed(train_pairs)}
    poses = np.stack([data.instances[n].cam2world[first_view[n]] for n in names])
    sims = None
    if config.align:
        sims = torch.tensor(np.stack([mask_similarity(data.instances[n].read_labels(first_view[n]),
                                                      data.instances[n].intrinsics[first_view[n]])
                                      for n in names]))
    return PortraitCameras(torch.tensor(_axis_point_closest_to_origin(poses), dtype=torch.float32), sims,
                           fit_pose=config.optimize_camera, fit_similarity=config.align)


def _axis_point_closest_to_origin(poses: np.ndarray) -> np.ndarray:
    centre, forward = poses[:, :3, 3], poses[:, :3, 2]
    t = -(centre * forward).sum(-1, keepdims=True)
    return centre + t * forward


def _fixed_subset(pairs: Sequence[tuple[str, int]], limit: int | None, seed: int) -> list[tuple[str, int]]:
    pairs = list(pairs)
    if limit is None or len(pairs) <= limit:
        return pairs
    pick = np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False)
    return [pairs[i] for i in sorted(pick)]


def _ensure_data(config: SofTrainConfig) -> Path:
    root = user_path(config.data_root)
    if not root.exists():
        if not config.synthetic:
            raise DataError(root, "dataset folder not found (set `synthetic:` in the config to generate one)")
        write_portrait_dataset(root, **config.synthetic)
    return root



def _latest(run_dir: Path) -> Path | None:
    return latest_checkpoint(run_dir)


# --------------------------------------------------------------------------------------------------
# The run lifecycle (toolkit.training.lifecycle): shipped checkpoint, quick fallback, training data
# --------------------------------------------------------------------------------------------------

SYSTEM = lifecycle.System(
    name="sof", config=SofTrainConfig, train=train, load=load_sof, write_data=write_portrait_dataset,
    evaluate=evaluate_checkpoint, validate=validate_dataset, export_format=EXPORT_FORMAT,
    shipped={"synthetic": ()}, quick_data="portraits_quick", quick_run="sof_quick")
"""SOF's record of the shared run lifecycle (the command line dispatches through it)."""


def shipped_checkpoint() -> Path:
    """Path of the small pretrained checkpoint shipped in ``data/`` (see data/README.md)."""
    return lifecycle.shipped_checkpoint(SYSTEM, "synthetic")


def load_pretrained(*, quick: bool = False, work_dir: str | os.PathLike | None = None,
                    progress: bool = True) -> LoadedSof:
    """The model later notebooks use: the shipped checkpoint, or a quick one trained on the spot.

    With ``quick=True``, or when the shipped file is absent, the packaged ``quick`` config is trained
    into ``work_dir`` (default ``data/generated``), reusing an earlier quick run there: a tiny model on
    tiny portraits, about a minute on a CPU. Its numbers mean nothing; it only lets a notebook run.
    """
    return lifecycle.load_pretrained(SYSTEM, "synthetic", quick=quick, work_dir=work_dir, progress=progress)


def training_data(loaded: LoadedSof) -> Path:
    """The dataset folder a checkpoint was trained on, regenerated from its recorded seed if missing.

    Synthetic portraits are a deterministic function of their generator settings, so a checkpoint that
    records them can always get its ground truth back.
    """
    return lifecycle.training_data(SYSTEM, loaded)
