"""Occupancy Flow training on the generic trainer, checkpoints, and the pretrained-model fallback.

Losses (oflow.md section 2, :func:`toolkit.oflow.losses.compute_losses`): BCE of the t=0 decoder on
frame-0 points, BCE of the occupancy at one random frame t (the query transported back to t = 0), the
unsquared L2 correspondence loss of forward-transported surface trajectories (``loss_corr``), and the
VAE's KL terms x ``vae_beta`` (1e-4). Samples are drawn like the original
(:class:`toolkit.oflow.data.SequenceDataset`): 300 noisy input trajectories, 512 + 512 occupancy points
with replacement, 100 correspondence trajectories, 17-frame windows with t_i = i/16. Adam at 1e-4.

Validation is the original's: every frame of each validation window, the first ``n_eval_points``
occupancy points, IoU of probability > 0.3 against occ >= 0.5 (plus ``corr_l2``, the flow-only configs'
``l2`` metric, on up to 1000 ground-truth trajectories).

Differences from the original, on purpose: a run has a step budget (``max_steps``; the original looped
until killed); the solver is a setting (``ode``: the original's adaptive dopri5 with the adjoint, or a
fixed-step rk4 with direct backpropagation, whose cost is fixed: about 2x cheaper per step than the
adjoint dopri5 once the field is trained, benchmarks/bm_oflow_train.py); checkpoints embed the model and
training configs and resume exactly.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from toolkit.config import (
    DEVICE,
    Rule,
    above,
    apply_overrides,
    at_least,
    check_fields,
    declare_checks,
    each,
    from_dict,
    kwargs_of,
    load_config_dict,
    nested,
    non_empty,
    one_of,
    within,
)
from toolkit.io import DataError, atomic_save_text, atomic_write
from toolkit.oflow.checkpoint import EXPORT_FORMAT, LoadedOFlow, export_checkpoint, load_oflow
from toolkit.oflow.data import (
    PCL_DIR,
    POINTS_DIR,
    SequenceDataset,
    find_sequences,
    list_frames,
    validate_dataset,
)
from toolkit.oflow.evaluate import (
    IOU_THRESHOLD,
    evaluate_checkpoint,
    predict_window,
    window_codes,
)
from toolkit.oflow.losses import STAGES, OFlowLosses, compute_losses
from toolkit.oflow.model import PRESETS, TEMPORAL_INPUTS, VELOCITY_PRIORS, OccupancyFlow, OFlowConfig, preset
from toolkit.oflow.ode import ODE_PRESETS, ODEOptions, ode_preset, resolve_options
from toolkit.paths import user_path
from toolkit.synthetic.bodies import write_body_dataset
from toolkit.training import (
    AMP_MODES,
    Callback,
    Trainer,
    data_fingerprint,
    latest_checkpoint,
    lifecycle,
    step_schedule,
    trainer_config,
)

__all__ = [
    "SYSTEM", "LoadedOFlow", "OFlowTrainConfig", "OFlowTrainable", "TrainResult", "evaluate_checkpoint",
    "evaluation_dataset",
    "export_checkpoint", "load_oflow", "load_pretrained", "oflow_step", "prepare_data", "prepare_scan_sequence",
    "shipped_checkpoint", "train", "train_from_config", "training_data", "validation_metrics",
]

PRETRAINED_KINDS: dict[str, list[str]] = {
    "completion": [],
    "generative": ["model_preset=generative", "model_quick=true"],
}
"""Kinds of shipped checkpoint -> overrides of the packaged ``quick`` config for the on-the-spot fallback."""


@dataclass
class OFlowTrainConfig:
    """Everything an Occupancy Flow training run needs; stored in its checkpoints."""

    data_root: str = "data/generated/bodies"
    """Dataset root, category folder or one sequence folder (see :func:`toolkit.oflow.data.find_sequences`)."""
    synthetic: dict | None = None
    """If set and ``data_root`` does not exist, write synthetic bodies there first (keyword arguments of
    :func:`toolkit.synthetic.bodies.write_body_dataset`: sequences, frames, seed, n_points, n_pcl, ...)."""
    train_split: str | list | None = "train"
    """Split list name, a list of split names (their union, e.g. the original generative model's
    train + test + test_new_individual), or None for every sequence. A sequence folder ignores it."""
    val_split: str | list | None = "val"
    """Validation split (same forms); None disables validation; the training split's name validates on the
    training windows themselves (a single-sequence fit)."""
    model_preset: str = "small"
    """A key of :data:`toolkit.oflow.model.PRESETS` (completion, completion_corr, generative, representation,
    small, tiny)."""
    model_overrides: dict = field(default_factory=dict)
    """Fields of :class:`toolkit.oflow.model.OFlowConfig` replacing the preset's (not ``ode``, not ``seq_len``)."""
    model_quick: bool = False
    """Cut every width of the preset to at most 32 (:meth:`OFlowConfig.quick`) before the overrides."""
    ode: str = "rk4"
    """A key of :data:`toolkit.oflow.ode.ODE_PRESETS`: "original" (dopri5, rtol 1e-3, atol 1e-5, adjoint),
    "rk4" (fixed step 1/16, direct backprop), "midpoint", "euler"."""
    ode_overrides: dict = field(default_factory=dict)
    """Fields of :class:`toolkit.oflow.ode.ODEOptions` replacing the preset's (e.g. step_size, per_item)."""
    stage: str = "joint"
    """Training objective (:data:`toolkit.oflow.losses.STAGES`): "joint" (the original single stage),
    "shape" (t=0 occupancy only, no ODE) or "motion" (velocity field supervised by the true trajectories
    plus the correspondence loss); the staged recipe runs shape, motion, then a short joint fine-tune."""
    init_from: str = ""
    """Start a new run from this checkpoint's weights (run folder or file; same model config), e.g. the
    previous stage's. A resumed run keeps its own weights."""
    near_surface: float = 0.0
    """Fraction of the occupancy training points drawn near the surface (``points_near_seq``) instead of
    uniformly in the box (0: the original)."""
    loss_corr: bool = True
    """Add the correspondence loss (the original's ``loss_corr``)."""
    corr_times: int | None = None
    """Score the correspondence loss at this many evenly spaced frames (None: every frame, the original)."""
    w_velocity: float = 1.0
    """Weight of the direct velocity loss (stage "motion")."""
    init_logstd_z_t: float | None = None
    """VAE only: a new run (not a resumed one) sets the bias of q(z_t)'s log-std head to this value after
    ``init_from``, so that the motion codes start informative instead of drowned in unit sampling noise
    (e.g. -3: std 0.05). None: keep the weights as they are."""
    val_frames: str = "all"
    """Validation during training: "all" frames (the original), or "t0" (decoding only, cheap); the last
    validation of a run always scores every frame."""
    vae_beta: float = 1e-4
    """KL weight of the VAE (generative preset); ignored without latents."""
    w_recon: float = 1.0
    """Weight of the two reconstruction terms (the original: 1)."""
    w_corr: float = 1.0
    """Weight of the correspondence term (the original: 1)."""
    length: int = 17
    """Frames per window L (t_i = i / (L - 1)); also the model's ``seq_len``."""
    offset: int = 0
    """Frames dropped at the start of each sequence (the original D-FAUST setup: 15)."""
    stride: int = 1
    """Step between window starts."""
    n_input_points: int = 300
    """Input trajectories per window (the generative original: 4000)."""
    input_noise: float = 0.001
    """Gaussian noise std on the inputs (the generative original: 0)."""
    n_points: int = 512
    """Occupancy points at t = 0 per window."""
    n_points_t: int = 512
    """Occupancy points at the random frame per window."""
    n_corr_points: int = 100
    """Trajectories for the correspondence loss per window."""
    n_eval_points: int = 10_000
    """Validation: the first this many occupancy points of every frame (the original: 10000 for these configs)."""
    val_max_windows: int | None = 16
    """Validate on at most this many windows (evenly spaced over the validation set; None: all)."""
    iou_threshold: float = IOU_THRESHOLD
    """Validation IoU: predicted inside where the probability exceeds this (the original: 0.3)."""
    batch_size: int = 16
    """Windows per step (the original: 16); capped at the number of training windows."""
    lr: float = 1e-4
    """Adam learning rate (the original: 1e-4, no schedule)."""
    lr_milestones: list | None = None
    """Steps at which the learning rate is multiplied by ``lr_gamma`` (None: constant, the original)."""
    lr_gamma: float = 0.3
    max_steps: int = 1000
    log_every: int = 50
    val_every: int = 500
    ckpt_every: int = 200
    """Checkpoint interval (the original saved every 200 iterations)."""
    grad_clip: float | None = None
    seed: int = 0
    out_dir: str = "data/runs/oflow"
    """Run folder (checkpoints, history.json)."""
    device: str = "auto"
    amp: str = "off"
    """"bf16" autocast on CUDA."""
    num_workers: int = 0
    """DataLoader workers (items are deterministic per (seed, epoch, index), so resume stays exact)."""

    def __post_init__(self):
        # YAML 1.1 reads "3e-3" as a string: accept numbers written that way, reject anything else
        for name, kind in _NUMERIC.items():
            value = getattr(self, name)
            if value is None and name in ("grad_clip", "val_max_windows", "corr_times"):
                continue
            try:
                number = kind(value) if not isinstance(value, bool) else None
            except (TypeError, ValueError):
                number = None
            if number is None or (kind is int and isinstance(value, float) and value != int(value)):
                raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}; got {value!r}")
            setattr(self, name, number)
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; valid: {list(STAGES)}")
        if self.val_frames not in ("all", "t0"):
            raise ValueError(f"unknown val_frames {self.val_frames!r}; valid: ['all', 't0']")
        if not 0.0 <= self.near_surface <= 1.0:
            raise ValueError(f"near_surface must be a fraction in [0, 1]; got {self.near_surface}")
        if self.corr_times is not None and not 1 <= int(self.corr_times) <= self.length - 1:
            raise ValueError(f"corr_times must be in 1..{self.length - 1} (or null); got {self.corr_times}")
        if self.model_preset not in PRESETS:
            raise ValueError(f"unknown model_preset {self.model_preset!r}; valid: {sorted(PRESETS)}")
        if self.ode not in ODE_PRESETS:
            raise ValueError(f"unknown ode preset {self.ode!r}; valid: {sorted(ODE_PRESETS)}")
        if self.length < 2:
            raise ValueError(f"length must be >= 2 (a window needs frames 0 and 1); got {self.length}")
        for name in ("model_overrides", "ode_overrides"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a mapping; got {type(getattr(self, name)).__name__}")
        if not 0.0 < self.iou_threshold < 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1); got {self.iou_threshold}")
        check_fields(self)

    def model_config(self) -> OFlowConfig:
        """The model's sizes: the preset (quick-cut if asked), the overrides, ``seq_len = length``, the solver."""
        cfg = preset(self.model_preset)
        if self.model_quick:
            cfg = cfg.quick()
        over = dict(self.model_overrides)
        if "ode" in over:
            raise ValueError("model_overrides.ode: set the solver with `ode` and `ode_overrides` instead")
        if over.pop("seq_len", self.length) != self.length:
            raise ValueError(f"model_overrides.seq_len={self.model_overrides['seq_len']} differs from "
                             f"length={self.length}; the window length is the model's seq_len, set `length`")
        try:
            ode = resolve_options(ode_preset(self.ode), **self.ode_overrides)
        except TypeError as exc:
            raise ValueError(f"ode_overrides: {exc}") from exc
        return cfg.replace(**over, seq_len=self.length, ode=ode)


def _body_kwargs():
    return kwargs_of(write_body_dataset, exclude=("out", "overwrite"), sequences=at_least(1), seed=at_least(0),
                     frames=Rule(lambda f: f >= 1 if isinstance(f, int) else 1 <= f[0] <= f[1],
                                 ">= 1 (or a range [lo, hi], 1 <= lo <= hi)"),
                     n_points=at_least(1), n_pcl=at_least(1), n_near=at_least(0), mesh_resolution=at_least(2),
                     category=non_empty())


declare_checks(
    OFlowTrainConfig, data_root=non_empty(), synthetic=_body_kwargs(), model_preset=one_of(sorted(PRESETS)),
    model_overrides=nested(OFlowConfig, exclude=("ode",), construct=False, dim=at_least(1), seq_len=at_least(1),
                           c_dim=at_least(0), z_dim=at_least(0), encoder_hidden=at_least(1),
                           encoder_blocks=at_least(1), latent_hidden=at_least(1), latent_blocks=at_least(1),
                           decoder_hidden=at_least(1), decoder_blocks=at_least(1), vf_hidden=at_least(1),
                           vf_blocks=at_least(1), temporal_input=one_of(list(TEMPORAL_INPUTS)),
                           velocity_prior=one_of(list(VELOCITY_PRIORS)), prior_neighbors=at_least(1)),
    ode=one_of(sorted(ODE_PRESETS)),
    ode_overrides=nested(ODEOptions, label="ODE option", construct=False, rtol=above(0), atol=above(0),
                         step_size=above(0), num_steps=at_least(1)),
    stage=one_of(STAGES), near_surface=within(0, 1), corr_times=at_least(1), w_velocity=at_least(0),
    val_frames=one_of("all", "t0"), vae_beta=at_least(0), w_recon=at_least(0), w_corr=at_least(0),
    length=at_least(2), offset=at_least(0), stride=at_least(1), n_input_points=at_least(1),
    input_noise=at_least(0), n_points=at_least(1), n_points_t=at_least(1), n_corr_points=at_least(1),
    n_eval_points=at_least(1), val_max_windows=at_least(1), iou_threshold=within(0, 1, open_low=True, open_high=True),
    batch_size=at_least(1), lr=above(0), lr_milestones=each(at_least(1)), lr_gamma=within(0, 1, open_low=True),
    max_steps=at_least(1), log_every=at_least(1), val_every=at_least(0), ckpt_every=at_least(0),
    grad_clip=above(0), seed=at_least(0), out_dir=non_empty(), device=DEVICE, amp=one_of(AMP_MODES),
    num_workers=at_least(0))


_NUMERIC = {**dict.fromkeys(("vae_beta", "w_recon", "w_corr", "w_velocity", "near_surface", "input_noise",
                             "iou_threshold", "lr", "grad_clip", "lr_gamma"), float),
            **dict.fromkeys(("length", "offset", "stride", "n_input_points", "n_points", "n_points_t",
                             "n_corr_points", "n_eval_points", "val_max_windows", "corr_times", "batch_size",
                             "max_steps",
                             "log_every", "val_every", "ckpt_every", "seed", "num_workers"), int)}


class OFlowTrainable(nn.Module):
    """Training view of an :class:`OccupancyFlow` (``self.oflow``): ``forward(batch)`` returns the loss terms.

    Going through ``forward`` lets the trainer wrap it in DistributedDataParallel. The trainer checkpoints
    the model itself (``Trainer(..., state=trainable.oflow)``), so a training checkpoint has exactly the
    model's keys (``decoder.``, ``encoder.``, ``vector_field.``, ...) and loads with
    :func:`toolkit.oflow.model.load_checkpoint`, like an export.
    """

    def __init__(self, model: OccupancyFlow, *, stage: str = "joint", corr: bool = True, corr_times: int | None = None,
                 vae_beta: float = 1e-4, w_recon: float = 1.0, w_corr: float = 1.0, w_velocity: float = 1.0):
        super().__init__()
        self.oflow = model
        self.stage, self.corr, self.corr_times = stage, corr, corr_times
        self.vae_beta, self.w_recon, self.w_corr, self.w_velocity = vae_beta, w_recon, w_corr, w_velocity

    def forward(self, batch: dict[str, torch.Tensor]) -> OFlowLosses:
        return compute_losses(self.oflow, batch, stage=self.stage, corr=self.corr, corr_times=self.corr_times,
                              vae_beta=self.vae_beta, w_recon=self.w_recon, w_corr=self.w_corr,
                              w_velocity=self.w_velocity)


class TrainResult(NamedTuple):
    model: OccupancyFlow
    """The trained model (train mode; call ``.eval()`` before queries)."""
    history: list[dict]
    run_dir: Path
    checkpoint: Path | None
    config: OFlowTrainConfig


def oflow_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training pass through ``model(batch)`` (an :class:`OFlowTrainable`, possibly DDP-wrapped)."""
    losses: OFlowLosses = model(batch)
    inner = getattr(model, "module", model)
    logs = {}
    if inner.stage != "motion":
        logs["recon_t0"] = losses.recon_t0.detach()
    if inner.stage == "joint":
        logs["recon_t"] = losses.recon_t.detach()
    if inner.stage == "motion":
        logs["velocity"] = losses.velocity.detach()
    if inner.corr and inner.stage != "shape":
        logs["corr"] = losses.corr.detach()
    if inner.oflow.config.z_dim > 0:
        logs["kl"] = losses.kl.detach()
    return losses.total, logs


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------

def prepare_data(config: OFlowTrainConfig) -> Path:
    """The run's dataset folder, written first from ``config.synthetic`` when it does not exist.

    Raises:
        DataError: the folder is missing and the config has no ``synthetic`` settings.
    """
    root = user_path(config.data_root)
    if not root.exists():
        if not config.synthetic:
            raise DataError(root, "dataset folder not found (set `synthetic:` in the config to generate bodies)")
        write_body_dataset(root, **config.synthetic)
    return root


def train(config: OFlowTrainConfig, *, callbacks: Sequence[Callback] = (), resume: bool = True,
          progress: bool = True, stop_at: int | None = None) -> TrainResult:
    """Train an Occupancy Flow model on the windows of ``config.data_root``.

    Args:
        config: the run's settings (see :class:`OFlowTrainConfig`).
        callbacks: trainer callbacks, e.g. :class:`toolkit.training.LivePlot` in a notebook.
        resume: continue from the latest checkpoint in ``config.out_dir`` if there is one.
        progress: show a progress bar.
        stop_at: stop after this step (a later call with ``resume=True`` continues exactly).
    Returns:
        TrainResult with the model, the history (train and val records), the run folder and the latest
        checkpoint.
    Raises:
        DataError: missing data (without ``synthetic`` settings), missing split lists or occupancy.
    """
    root = prepare_data(config)
    model_cfg = config.model_config()
    train_set = SequenceDataset(root, split=_split_arg(root, config.train_split), length=config.length,
                                offset=config.offset, stride=config.stride, n_input_points=config.n_input_points,
                                input_noise=config.input_noise, seed=config.seed, n_points=config.n_points,
                                n_points_t=config.n_points_t, n_corr_points=config.n_corr_points,
                                near_surface=config.near_surface)
    val_set = evaluation_dataset(config) if config.val_split is not None else None
    run_dir = user_path(config.out_dir)
    with torch.random.fork_rng(devices=[]):  # the initialisation depends on the seed alone
        torch.manual_seed(config.seed)
        model = OccupancyFlow(model_cfg)
    fresh = not (resume and latest_checkpoint(run_dir))  # a resumed run has its own weights
    if config.init_from and fresh:
        _warm_start(model, config.init_from)
    if config.init_logstd_z_t is not None and fresh and model.encoder_latent_temporal is not None:
        with torch.no_grad():
            model.encoder_latent_temporal.fc_logstd.bias.fill_(config.init_logstd_z_t)
    trainable = OFlowTrainable(model, stage=config.stage, corr=config.loss_corr, corr_times=config.corr_times,
                               vae_beta=config.vae_beta, w_recon=config.w_recon, w_corr=config.w_corr,
                               w_velocity=config.w_velocity)
    optimizer = torch.optim.Adam(trainable.parameters(), lr=config.lr)
    val_fn, trainer_ref = None, []
    if val_set is not None:
        windows = _spread(len(val_set), config.val_max_windows)

        def val_fn(m):
            # the last validation scores every frame, except in the shape stage, whose flow is untrained
            final = bool(trainer_ref) and trainer_ref[0].step >= config.max_steps and config.stage != "shape"
            return validation_metrics(m.oflow, val_set, windows, threshold=config.iou_threshold,
                                      frames="all" if final else config.val_frames)
    tcfg = trainer_config(config, batch_size=min(config.batch_size, len(train_set)), out_dir=str(run_dir),
                          progress=progress)
    meta = _meta(config, model_cfg, train_set)
    trainer = Trainer(trainable, optimizer, oflow_step, config=tcfg, data=train_set, val_fn=val_fn, meta=meta,
                      callbacks=callbacks, scheduler=step_schedule(optimizer, config.lr_milestones, config.lr_gamma),
                      fingerprint=data_fingerprint(root, meta["data"]["sequences"], val_split=config.val_split),
                      state=model)
    trainer_ref.append(trainer)
    history = trainer.fit(resume=resume, max_steps=stop_at)
    return TrainResult(model, history, run_dir, latest_checkpoint(run_dir), config)


@torch.no_grad()
def validation_metrics(model: OccupancyFlow, dataset: SequenceDataset, windows: Sequence[int], *,
                       threshold: float = IOU_THRESHOLD, corr_points: int = 1000, frames: str = "all") -> dict[str, float]:
    """The original's validation on evaluation windows of ``dataset``.

    Args:
        frames: "all" (the original), or "t0": only the IoU of frame 0, by decoding (no ODE; cheap enough to
            score many windows and points often).
    Returns:
        ``iou`` (mean over windows and frames), ``iou_t0`` / ``iou_t1`` (first / last frame) and
        ``corr_l2`` (mean distance of up to ``corr_points`` ground-truth frame-0 surface points carried
        forward by the flow to their true later positions, frames 1..L-1); only ``iou_t0`` for "t0".
    """
    if frames == "t0":
        return {"iou_t0": float(np.nanmean([_t0_iou(model, dataset[i], threshold) for i in windows]))}
    ious, corr = [], []
    for i in windows:
        item = dataset[i]
        codes = window_codes(model, item["inputs"])
        if "points" in item:
            ious.append(predict_window(model, item, threshold=threshold, codes=codes).iou)
        pcl = item["pointcloud"][:, :corr_points].to(next(model.parameters()).device)
        pred = model.transport_forward(codes, pcl[0][None], item["times"][1:].to(pcl))[0]
        corr.append(float(torch.linalg.vector_norm(pred - pcl[1:], dim=-1).mean()))
    out = {"corr_l2": float(np.mean(corr))}
    if ious:
        iou = np.nanmean(np.stack(ious), axis=0)
        out.update(iou=float(np.nanmean(iou)), iou_t0=float(iou[0]), iou_t1=float(iou[-1]))
    return out


def evaluation_dataset(config: OFlowTrainConfig, split: str | list | None = "__val__", *,
                       n_eval_points: int | None = None, eval_jitter: float = 1e-4) -> SequenceDataset:
    """Evaluation windows (all frames, deterministic points) sampled with a run's settings.

    Args:
        config: the run's config (window length, input points and noise, seed).
        split: a split name or list (default: the config's ``val_split``; None for every sequence).
        n_eval_points: occupancy points per frame (default: the config's ``n_eval_points``).
    """
    root = prepare_data(config)
    split = config.val_split if split == "__val__" else split
    return SequenceDataset(root, split=_split_arg(root, split), eval=True, length=config.length,
                           offset=config.offset, stride=config.stride, n_input_points=config.n_input_points,
                           input_noise=config.input_noise, seed=config.seed, eval_jitter=eval_jitter,
                           n_eval_points=config.n_eval_points if n_eval_points is None else n_eval_points)


def train_from_config(config: str | os.PathLike, overrides: Sequence[str] = (), **kwargs) -> TrainResult:
    """Train from a YAML config or packaged preset name (the ``python -m toolkit train oflow`` command).

    Args:
        config: ``quick``, ``completion``, ``generative``, ``representation``, ``paper`` or a YAML path.
        overrides: ``key=value`` strings (values parsed as YAML), e.g. ``max_steps=50``.
        **kwargs: passed to :func:`train`.
    """
    return lifecycle.train_from_config(SYSTEM, config, overrides, **kwargs)


RECIPES: dict[str, tuple[str, ...]] = {
    "completion": ("completion_shape", "completion_motion", "completion"),
    "generative": ("generative_shape", "generative_motion", "generative"),
}
"""Staged recipes: packaged configs run in order, each starting from the previous one's run (``init_from``)."""
_STAGE_KEYS = ("stage", "near_surface", "loss_corr", "corr_times", "vae_beta", "w_velocity", "init_logstd_z_t",
               "model_overrides", "val_frames",
               "train_split", "val_split", "input_noise")
"""What a stage config contributes when ``staged_configs(quick=True)`` sizes everything else like ``quick``."""


def staged_configs(recipe: str = "completion", *, overrides: Sequence[str] = (), steps: int | None = None,
                   quick: bool = False, run_root: str | os.PathLike | None = None) -> list[OFlowTrainConfig]:
    """The configs of a staged recipe (:data:`RECIPES`), each stage starting from the previous one's run.

    Args:
        recipe: "completion" or "generative".
        overrides: ``key=value`` strings for every stage (e.g. ``data_root=...``).
        steps: cut every stage to this many steps at a constant rate, validating at the end only (a demo);
            None keeps the presets' schedules.
        quick: every stage with the ``quick`` config's tiny model and sizes (tests, QUICK notebooks).
        run_root: where the stage runs go (``run_root/<config name>``); default: the presets' out_dir.
    Returns:
        One :class:`OFlowTrainConfig` per stage; run them in order with :func:`train`.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; valid: {sorted(RECIPES)}")
    configs: list[OFlowTrainConfig] = []
    for name in RECIPES[recipe]:
        d = load_config_dict("oflow", name)
        if quick:
            stage_keys = {k: d[k] for k in _STAGE_KEYS if k in d}
            d = {**load_config_dict("oflow", "quick", PRETRAINED_KINDS[recipe]), **stage_keys}
        extra = list(overrides)
        if run_root is not None:
            extra.append(f"out_dir={Path(run_root) / name}")
        if steps is not None:
            extra += [f"max_steps={int(steps)}", "lr_milestones=null", "val_every=0", f"ckpt_every={int(steps)}"]
        d = apply_overrides(d, extra)
        if configs:
            d["init_from"] = configs[-1].out_dir
        else:
            d.pop("init_from", None)
        configs.append(from_dict(OFlowTrainConfig, d, f"oflow config {name}"))
    return configs


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

def shipped_checkpoint(kind: str = "completion") -> Path:
    """Path of the small pretrained checkpoint ``data/oflow_<kind>.pt`` (see data/README.md)."""
    return lifecycle.shipped_checkpoint(SYSTEM, kind)


def load_pretrained(kind: str = "completion", *, source: str | None = None, quick: bool = False,
                    work_dir: str | os.PathLike | None = None, progress: bool = True) -> LoadedOFlow:
    """The model later notebooks use: a shipped checkpoint, the authors' model, or a quick one trained on the spot.

    Args:
        kind: with ``source="shipped"``, "completion" (point-cloud completion with correspondence loss) or
            "generative" (the VAE); with ``source="authors"``, a key of
            :data:`toolkit.oflow.pretrained.AUTHORS_MODELS` ("pointcloud_w_correspond", "pointcloud",
            "interpolation", "generative", "shape_matching").
        source: "shipped" (``data/oflow_<kind>.pt``) or "authors" (the original's pretrained checkpoint,
            downloaded once into the torch hub cache); default: "authors" for names only the authors have.
        quick: shipped only: skip the shipped checkpoint and use the quick model.
        work_dir: where the quick data and run go (default ``data/generated``); an earlier quick run
            there that reached its last step is reused.
    Returns:
        LoadedOFlow (eval mode). The quick model is tiny and trained for seconds on tiny synthetic
        bodies: its numbers mean nothing; it only lets a notebook run alone.
    """
    from toolkit.oflow.pretrained import AUTHORS_MODELS, load_authors_model

    if source is None:
        if kind not in PRETRAINED_KINDS and kind not in AUTHORS_MODELS:
            raise ValueError(f"unknown pretrained model {kind!r}; valid: shipped {sorted(PRETRAINED_KINDS)}, "
                             f"authors' {sorted(AUTHORS_MODELS)}")
        source = "authors" if kind not in PRETRAINED_KINDS else "shipped"
    if source == "authors":
        return load_authors_model(kind, progress=progress)
    if source != "shipped":
        raise ValueError(f"unknown source {source!r}; valid: ['shipped', 'authors']")
    return lifecycle.load_pretrained(SYSTEM, kind, quick=quick, work_dir=work_dir, progress=progress)


def training_data(loaded: LoadedOFlow) -> Path:
    """The dataset folder a checkpoint was trained on, regenerated from its recorded generator settings if missing.

    Synthetic bodies are a deterministic function of their settings, so a checkpoint that records them
    can always get its ground truth back.
    """
    return lifecycle.training_data(SYSTEM, loaded)


SYSTEM = lifecycle.System(
    name="oflow", config=OFlowTrainConfig, train=train, load=load_oflow, write_data=write_body_dataset,
    evaluate=evaluate_checkpoint, validate=validate_dataset, export_format=EXPORT_FORMAT,
    shipped=PRETRAINED_KINDS, quick_data="bodies_quick", quick_run="oflow_quick_{kind}")
"""Occupancy Flow's record of the shared run lifecycle (the command line dispatches through it)."""


# --------------------------------------------------------------------------------------------------
# Real scans
# --------------------------------------------------------------------------------------------------

def prepare_scan_sequence(source: str | os.PathLike, work_dir: str | os.PathLike, *, n_points: int = 100_000,
                          resolution: int = 128, seed: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """A working copy of a scanned sequence (``pcl_seq`` only, e.g. the D-FAUST demo) with occupancy labels.

    The ``pcl_seq`` frames are copied to ``<work_dir>/<sequence name>/`` (the source, often read-only
    reference data, is never written), then ``points_seq`` is derived from the surface points with
    :func:`toolkit.oflow.occupancy.derive_scan_occupancy`. An existing copy made with the same settings is
    reused; ``occupancy.json`` there records the settings and each frame's inside fraction and volume.
    An interrupted copy is rebuilt; a finished one with other settings only with ``overwrite``.

    Returns:
        The working sequence folder, ready for :class:`toolkit.oflow.data.SequenceDataset`.
    Raises:
        DataError: ``work_dir`` already holds a finished copy made with other settings.
    """
    import json

    from toolkit.oflow.occupancy import derive_scan_occupancy

    src = Path(source)
    if src.name == PCL_DIR:
        src = src.parent
    files = list_frames(src / PCL_DIR)
    dst = Path(work_dir) / src.name
    settings = {"source": str(src.resolve()), "n_points": int(n_points), "resolution": int(resolution),
                "seed": int(seed), "frames": [p.name for p in files]}
    record = dst / "occupancy.json"
    try:
        made_with = json.loads(record.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        made_with = None  # no copy, or an interrupted one (the record is written last)
    if made_with == settings and (dst / POINTS_DIR).is_dir():
        return dst
    if made_with not in (None, settings) and not overwrite:
        other = {k: (f"{len(v)} frames" if k == "frames" else v) for k, v in made_with.items() if settings.get(k) != v}
        raise DataError(record, f"a copy made with other settings ({other}) is there; pass overwrite=True "
                                f"or another work_dir")
    if dst.exists():
        shutil.rmtree(dst)
    for path in files:
        with atomic_write(dst / PCL_DIR / path.name, "wb") as f:
            f.write(path.read_bytes())
    occ = derive_scan_occupancy(dst, n_points=n_points, seed=seed, resolution=resolution, progress=progress)
    stats = {"inside_fraction": occ.inside_fraction.tolist(), "volume": occ.volume.tolist(),
             "world_volume": occ.world_volume.tolist(), "n_bodies": occ.n_bodies.tolist()}
    atomic_save_text(record, json.dumps({"settings": settings, **stats}, indent=1) + "\n")
    return dst


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def _meta(config: OFlowTrainConfig, model_cfg: OFlowConfig, dataset: SequenceDataset) -> dict[str, Any]:
    return {
        "system": "oflow", "model_config": model_cfg.to_dict(), "train_config": dataclasses.asdict(config),
        "data": {
            "root": str(config.data_root),
            "sequences": [f"{s.category}/{s.name}" if s.category else s.name for s in dataset.sequences],
            "windows": len(dataset), "length": config.length,
            "times": "t_i = i / (L - 1) for frame i of an L-frame window",
            "coordinates": "frame-0 normalised: (loc_i + scale_i * p_i - loc_0) / scale_0, loc/scale of pcl_seq "
                           "(bounding-box centre, largest side) of the window's first frame",
            "box_half": 0.55,
        },
        "iou_threshold": config.iou_threshold,
    }


def _t0_iou(model: OccupancyFlow, item: dict, threshold: float) -> float:
    from toolkit.metrics import occupancy_iou

    device = next(model.parameters()).device
    codes = window_codes(model, item["inputs"])
    logits = model.decode(codes, item["points"][0][None].to(device))[0]
    return float(occupancy_iou((torch.sigmoid(logits) > threshold).cpu().numpy(),
                               item["points.occ"][0].numpy() >= 0.5))


_WARM_START_FREE = ("ode", "temporal_input", "velocity_prior", "prior_neighbors")
"""Model config keys that may differ from an ``init_from`` checkpoint's: they change no weight's shape (a
motion stage may read displacements where the shape stage, which never trained the temporal encoders, did not)."""


def _warm_start(model: OccupancyFlow, source: str | os.PathLike) -> None:
    """Copy every weight of checkpoint ``source`` (same model config but :data:`_WARM_START_FREE`) into ``model``."""
    loaded = load_oflow(user_path(source))
    mine, theirs = model.config.to_dict(), loaded.model.config.to_dict()
    diff = [f"{k}: run {mine[k]!r} vs checkpoint {theirs[k]!r}" for k in mine if k not in _WARM_START_FREE and mine[k] != theirs[k]]
    if diff:
        raise DataError(source, "init_from: model config differs from this run's: " + ", ".join(diff))
    state = loaded.model.state_dict()
    if mine["velocity_prior"] != theirs["velocity_prior"]:
        # a field trained for the whole velocity is no residual of another prior: keep this model's own start
        state = {k: (model.state_dict()[k] if k.startswith("vector_field.") else v) for k, v in state.items()}
    model.load_state_dict(state)


def _split_arg(root: Path, split: str | list | None) -> str | list[str] | None:
    """A split name, None, or the union of several split lists as sequence names."""
    if split is None or isinstance(split, str):
        return split
    names: list[str] = []
    for s in split:
        for info in find_sequences(root, str(s)):
            key = f"{info.category}/{info.name}" if info.category else info.name
            if key not in names:
                names.append(key)
    return names


def _spread(n: int, limit: int | None) -> list[int]:
    if limit is None or n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, max(int(limit), 1)).round().astype(int).tolist()))


