"""Occupancy Flow evaluation on test windows: per-frame IoU, Chamfer, correspondence and normal metrics.

Reference: oflow.md section 5 (the original ``eval.py`` / ``MeshEvaluator``) and section 4 (meshes).
Every number is named for what it is, in frame-0 normalised units (the window's first-frame body has a
largest bounding-box side of 1):

- ``iou``: the original's definition: volumetric IoU of the occupancy points of each frame tested
  against the propagated mesh of that frame (:func:`toolkit.metrics.mesh_contains`), against ground
  truth occ >= 0.5. Cheap: the mesh is extracted once and its vertices carried forward.
- ``iou_field`` (opt-in, ``field_iou``): the same points scored on the model's field at time t (each
  query transported back to t = 0 and decoded), predicted inside = probability > 0.3 (the original's
  threshold). Transporting 100k points x 17 frames costs minutes on a CPU; both agree to the mesh's
  discretisation (measured in data/README.md).
- ``chamfer_l1``: 0.5 (accuracy + completeness) between points sampled on the predicted mesh and the
  ground-truth point cloud; ``chamfer_l1_x10`` is 10 x that, the number the papers print as
  "Chamfer-L1" (unit 1/10 of the body's largest side).
- ``chamfer_l2_sq``: accuracy2 + completeness2 (squared distances), the original csv's "chamfer" column.
- ``corr_l2``: mean distance between each propagated t=0 vertex and the ground-truth point it was
  matched to at t = 0 (:func:`toolkit.metrics.correspondence_error`); ``corr_l2_x10`` = 10 x it (the
  papers' "Corr").
- ``normal_consistency``: only when ground-truth normals exist (a ``mesh_seq`` beside the points);
  the original passed none, so its column was NaN.

Meshes come from :func:`reconstruct_sequence`: MISE + marching cubes of the decoder at t = 0 at the
logit of 0.3, then forward transport of the vertices (shared faces, so correspondences are free). It is
deliberately small, a stand-in for a full generation module.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from toolkit.geometry.meshing import Mesh, MeshingOptions
from toolkit.io import DataError
from toolkit.metrics import (
    chamfer_distance,
    correspondence_error,
    mesh_contains,
    occupancy_iou,
    sample_mesh_surface,
)
from toolkit.oflow.checkpoint import load_oflow
from toolkit.oflow.data import BOX_HALF, POINTS_DIR, SequenceDataset, find_sequences, pack_sequence
from toolkit.oflow.fields import resolve_meshing, window_codes
from toolkit.oflow.generate import reconstruct
from toolkit.oflow.model import Codes, OccupancyFlow

__all__ = [
    "IOU_THRESHOLD", "METRICS", "UNITS", "WindowPrediction", "evaluate_checkpoint", "evaluate_model",
    "evaluate_window", "format_table", "ground_truth_normals", "occupancy_figure", "occupancy_probabilities",
    "occupancy_projection", "predict_window", "reconstruct_sequence", "window_codes",
]

IOU_THRESHOLD = 0.3
"""Occupancy probability threshold of the original's IoU and meshes (logit -0.847)."""

METRICS = ("iou", "iou_field", "chamfer_l1", "chamfer_l1_x10", "chamfer_l2_sq", "corr_l2", "corr_l2_x10",
           "normal_consistency")
"""Per-frame metric names, in table order."""

UNITS = ("distances in frame-0 normalised units (largest bounding-box side of the window's first-frame body = 1); "
         "*_x10 = 10 x the value, the papers' reporting unit (1/10 of that side); chamfer_l2_sq = sum of the two "
         "mean squared distances (the original csv's 'chamfer'); iou: probability > 0.3 vs occ >= 0.5")


class WindowPrediction(NamedTuple):
    """The model's occupancy on one evaluation window's points (T frames, N points each)."""

    points: np.ndarray
    """(T, N, 3) query points, frame-0 normalised, each row at its frame's time."""
    prob: np.ndarray
    """(T, N) predicted occupancy probability."""
    occ: np.ndarray
    """(T, N) bool ground-truth occupancy."""
    times: np.ndarray
    """(T,) frame times."""
    iou: np.ndarray
    """(T,) IoU per frame (prob > threshold vs occ)."""
    threshold: float


# --------------------------------------------------------------------------------------------------
# Field-level predictions
# --------------------------------------------------------------------------------------------------

@torch.no_grad()
def occupancy_probabilities(model: OccupancyFlow, codes: Codes, points: torch.Tensor, times: torch.Tensor, *,
                            chunk: int = 32768) -> torch.Tensor:
    """Occupancy probability of ``points[i]`` at ``times[i]``: transport back to t = 0, then decode.

    Args:
        codes: codes of ONE window (batch 1), shared by all rows.
        points: (T, N, 3) query points, row i at time ``times[i]``.
        times: (T,).
        chunk: points per row and call (bounds memory; the decoder in eval mode is chunk-invariant).
    Returns:
        (T, N) probabilities on the model's device.
    """
    device = next(model.parameters()).device
    points = torch.as_tensor(points, dtype=torch.float32, device=device)
    times = torch.as_tensor(times, dtype=torch.float32, device=device)
    T, N = points.shape[:2]
    rep = Codes(*(c.expand(T, *c.shape[1:]) for c in codes))
    outs = [torch.sigmoid(model.occupancy(rep, points[:, s:s + chunk], times)) for s in range(0, N, chunk)]
    return torch.cat(outs, dim=1) if outs else points.new_zeros(T, 0)


@torch.no_grad()
def predict_window(model: OccupancyFlow, item: dict, *, threshold: float = IOU_THRESHOLD,
                   codes: Codes | None = None, chunk: int = 32768) -> WindowPrediction:
    """Field-level occupancy and per-frame IoU of one evaluation item of :class:`SequenceDataset`.

    Args:
        item: ``dataset[i]`` with ``eval=True`` (keys ``inputs``, ``points`` (T, N, 3), ``points.occ``, ``times``).
        threshold: probability above which a point is predicted inside (the original: 0.3).
        codes: precomputed codes of the window (default: encoded from ``item['inputs']``).
    """
    if "points" not in item or torch.as_tensor(item["points"]).ndim != 3:
        raise ValueError("predict_window needs an evaluation item with occupancy points (T, N, 3): build the "
                         "dataset with eval=True on data that has points_seq")
    codes = window_codes(model, item.get("inputs")) if codes is None else codes
    prob = occupancy_probabilities(model, codes, item["points"], item["times"], chunk=chunk).cpu().numpy()
    occ = torch.as_tensor(item["points.occ"]).cpu().numpy() >= 0.5
    iou = np.atleast_1d(occupancy_iou(prob > threshold, occ))
    return WindowPrediction(torch.as_tensor(item["points"]).cpu().numpy(), prob, occ,
                            torch.as_tensor(item["times"]).cpu().numpy(), iou, float(threshold))


# --------------------------------------------------------------------------------------------------
# Meshes: MISE at t = 0, forward transport of the vertices
# --------------------------------------------------------------------------------------------------

@torch.no_grad()
def reconstruct_sequence(model: OccupancyFlow, inputs: torch.Tensor | None, times: Sequence[float] | None = None, *,
                         codes: Codes | None = None, threshold: float = IOU_THRESHOLD, resolution0: int = 32,
                         upsampling_steps: int = 2, bounds: float = BOX_HALF, chunk: int = 100_000,
                         meshing: MeshingOptions | None = None) -> list[Mesh]:
    """One mesh per time: MISE + marching cubes of the t=0 decoder, vertices carried forward by the flow.

    One window through :func:`toolkit.oflow.generate.reconstruct` (oflow.md section 4): the t=0 surface is the
    ``threshold`` probability level (in logit space, as the original), on a grid of
    ``resolution0 * 2**upsampling_steps`` cells over ``[-bounds, bounds]^3``; every frame reuses its faces.

    Args:
        inputs: (L, N, 3) input trajectories of one window (None for models without encoders).
        times: output times (default ``linspace(0, 1, L)``).
        codes: precomputed window codes (default: encoded from ``inputs``).
        meshing: the meshing settings as one object, instead of threshold, resolution0, upsampling_steps,
            bounds and chunk.
    Returns:
        T meshes sharing faces; vertex k of every mesh is the same particle. All empty when the t=0
        field never crosses the threshold.
    """
    opts = _meshing(meshing, threshold, resolution0, upsampling_steps, bounds=bounds, chunk=chunk)
    codes = window_codes(model, inputs) if codes is None else codes
    if times is None:
        n = inputs.shape[0] if inputs is not None else model.config.seq_len
        times = np.linspace(0.0, 1.0, n)
    seq = reconstruct(model, codes, times=times, meshing=opts)[0]
    return [Mesh(v.astype(np.float32), seq.faces) for v in seq.vertices]


# --------------------------------------------------------------------------------------------------
# Metrics of one window, of a dataset, of a checkpoint
# --------------------------------------------------------------------------------------------------

def evaluate_window(model: OccupancyFlow, item: dict, *, meshes: bool = True, field_iou: bool = False,
                    threshold: float = IOU_THRESHOLD, resolution0: int = 32, upsampling_steps: int = 2,
                    n_surface_points: int = 100_000, gt_normals: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                    seed: int = 0, chunk: int = 32768, meshing: MeshingOptions | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-frame metrics of one evaluation window.

    Args:
        item: an evaluation item of :class:`SequenceDataset` (``eval=True``); ``points``/``points.occ``
            are optional (no IoU without them), ``pointcloud`` (T, P, 3) is the ground-truth surface.
        meshes: reconstruct meshes (:func:`reconstruct_sequence`) for ``iou`` and the surface metrics.
        field_iou: also score ``iou_field`` (always, when ``meshes`` is False).
        n_surface_points: points sampled on each predicted mesh (the original: 100000).
        gt_normals: per frame (points (M, 3), normals (M, 3)) sampled on ground-truth meshes; enables
            ``normal_consistency``.
        seed: surface sampling seed.
        meshing: the meshing settings as one object, instead of resolution0 and upsampling_steps at the
            ``threshold`` level (``threshold`` still sets the field-level IoU).
    Returns:
        (metrics, seconds): metric name -> (T,) float64 array, only for the metrics computed; and the
        time spent per stage (encode, iou_field, mesh_t0_and_propagation, surface_metrics).
    """
    opts = _meshing(meshing, threshold, resolution0, upsampling_steps, threshold_also_iou=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    codes = window_codes(model, item.get("inputs"))
    seconds["encode"] = time.perf_counter() - start
    times = torch.as_tensor(item["times"]).cpu().numpy()
    T = len(times)
    out: dict[str, np.ndarray] = {}
    has_points = "points" in item and torch.as_tensor(item["points"]).ndim == 3
    if has_points and (field_iou or not meshes):
        start = time.perf_counter()
        pred = predict_window(model, item, threshold=threshold, codes=codes, chunk=chunk)
        out["iou_field"] = pred.iou.astype(np.float64)
        seconds["iou_field"] = time.perf_counter() - start
    if not meshes:
        return out, seconds
    start = time.perf_counter()
    seq = reconstruct_sequence(model, None, times, codes=codes, meshing=opts)
    seconds["mesh_t0_and_propagation"] = time.perf_counter() - start
    start = time.perf_counter()
    gt_pcl = torch.as_tensor(item["pointcloud"]).cpu().numpy().astype(np.float32)
    faces = seq[0].faces
    empty = len(faces) == 0
    cols = {k: np.full(T, np.nan) for k in ("chamfer_l1", "chamfer_l1_x10", "chamfer_l2_sq")}
    if has_points:
        cols["iou"] = np.zeros(T)
        points = torch.as_tensor(item["points"]).cpu().numpy()
        occ = torch.as_tensor(item["points.occ"]).cpu().numpy() >= 0.5
    if gt_normals is not None:
        cols["normal_consistency"] = np.full(T, np.nan)
    for t, mesh in enumerate(seq):
        if empty:
            pts = nrm = np.zeros((0, 3), np.float32)
        else:
            pts, nrm = sample_mesh_surface(mesh.vertices, faces, n_surface_points, seed=seed)
        ch = _quiet_chamfer(pts, gt_pcl[t])
        cols["chamfer_l1"][t], cols["chamfer_l1_x10"][t], cols["chamfer_l2_sq"][t] = (
            ch.chamfer_l1, ch.chamfer_l1_x10, ch.chamfer_l2_sq)
        if has_points and not empty:
            iou_t = occupancy_iou(mesh_contains(mesh.vertices, faces, points[t]), occ[t])
            cols["iou"][t] = 0.0 if math.isnan(iou_t) else iou_t
        if gt_normals is not None:
            g_pts, g_nrm = gt_normals[t]
            cols["normal_consistency"][t] = _quiet_chamfer(pts, g_pts, nrm, g_nrm).normal_consistency
    if empty:
        cols["corr_l2"] = np.full(T, np.nan)
    else:
        cols["corr_l2"] = correspondence_error(np.stack([m.vertices for m in seq]), gt_pcl)
    cols["corr_l2_x10"] = 10.0 * cols["corr_l2"]
    seconds["surface_metrics"] = time.perf_counter() - start
    out.update(cols)
    return {k: out[k] for k in METRICS if k in out}, seconds


def evaluate_model(model: OccupancyFlow, dataset: SequenceDataset, *, max_windows: int | None = None,
                   meshes: bool = True, field_iou: bool = False, threshold: float = IOU_THRESHOLD, resolution0: int = 32,
                   upsampling_steps: int = 2, n_surface_points: int = 100_000, normals: bool = True,
                   n_normal_points: int = 100_000, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Evaluate a model on the windows of an evaluation dataset; per frame, per window and averaged.

    Args:
        dataset: a :class:`SequenceDataset` built with ``eval=True``.
        max_windows: evaluate this many windows, evenly spaced over the dataset (default all).
        meshes: compute the mesh-based metrics, the original's IoU included (MISE once per window).
        field_iou: also score the field-level IoU (``iou_field``: every point transported to t = 0; slow).
        normals: compute normal consistency when ground-truth meshes (``mesh_seq``) exist.
        n_normal_points: points sampled on each ground-truth mesh for the normal consistency.
    Returns:
        A JSON-ready dict: ``per_frame`` (metric -> list over frames, mean over windows), ``mean``
        (metric -> mean over frames), ``per_window`` (sequence, start, IoU points per frame and per-frame
        lists), ``times``, ``seconds`` (total per stage), ``units``. NaN values become None.
    """
    if not dataset.eval:
        raise ValueError("evaluate_model needs a dataset built with eval=True (all frames, deterministic points)")
    opts = _meshing(None, threshold, resolution0, upsampling_steps)
    model.eval()
    n = len(dataset)
    indices = list(range(n)) if max_windows is None or max_windows >= n else \
        sorted(set(np.linspace(0, n - 1, max(int(max_windows), 1)).round().astype(int).tolist()))
    from tqdm.auto import tqdm

    per_window, seconds = [], {}
    for i in tqdm(indices, desc="evaluate", disable=not progress):
        item = dataset[i]
        seq_i, start = dataset.windows[i]
        gt_normals = None
        if meshes and normals:
            gt_normals = ground_truth_normals(dataset.sequences[seq_i].path, start, dataset.length,
                                              n_points=n_normal_points, seed=seed)
        metrics, secs = evaluate_window(model, item, meshes=meshes, field_iou=field_iou, threshold=threshold,
                                        n_surface_points=n_surface_points, gt_normals=gt_normals, seed=seed,
                                        meshing=opts)
        for k, v in secs.items():
            seconds[k] = seconds.get(k, 0.0) + v
        per_window.append({"sequence": item["sequence"], "start": int(start),
                           "iou_points": int(item["points"].shape[-2]) if "points" in item else None,
                           **{k: v.tolist() for k, v in metrics.items()}})
    names = [k for k in METRICS if per_window and k in per_window[0]]
    per_frame = {k: _nanmean_rows([w[k] for w in per_window]) for k in names}
    mean = {k: _nanmean(np.asarray(v, dtype=np.float64)) for k, v in per_frame.items()}
    times = np.arange(dataset.length) / max(dataset.length - 1, 1)
    return _jsonable({"windows": len(per_window), "frames": dataset.length, "times": times.tolist(),
                      "threshold": threshold, "units": UNITS, "mean": mean, "per_frame": per_frame,
                      "per_window": per_window, "seconds": {k: round(v, 3) for k, v in seconds.items()}})


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike, *, split: str | None = "test",
                        max_windows: int | None = None, meshes: bool = True, field_iou: bool = False,
                        n_eval_points: int | None = None,
                        n_surface_points: int = 100_000, resolution0: int = 32, upsampling_steps: int = 2,
                        eval_jitter: float = 1e-4, progress: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint on the ``split`` windows of ``data`` (the ``python -m toolkit eval oflow`` command).

    The window length, input points and input noise are the checkpoint's training settings. IoU needs
    ``points_seq`` in every sequence; without it (e.g. a raw scan, the original's issue #2) only the
    surface metrics are computed.

    Args:
        checkpoint: a training checkpoint, a run folder, or an exported/shipped checkpoint.
        data: dataset root, category folder, or one sequence folder (which ignores ``split``).
        split: split-list name; None evaluates every sequence.
        max_windows: evaluate this many windows, evenly spaced (default all).
        meshes: compute the mesh-based metrics (IoU by mesh containment, Chamfer, correspondences, normals).
        field_iou: also score the field-level IoU (slow; see the module docstring).
        n_surface_points: points sampled on each predicted mesh for Chamfer and normals (the original: 100k).
        n_eval_points: IoU points per frame, the first ones of each file (default all: the original's 100k).
        eval_jitter: Gaussian jitter on the float16 IoU points (the original's 1e-4 symmetry breaking).
    Returns:
        :func:`evaluate_model`'s dict plus ``checkpoint``, ``data``, ``split``, ``model`` and ``seconds.total``.
    """
    start = time.perf_counter()
    loaded = load_oflow(checkpoint)
    tc = loaded.meta.get("train_config") or {}
    data = Path(data)
    try:
        sequences = find_sequences(data, split)
    except DataError as exc:
        raise DataError(data, f"{exc.problem} (pass a sequence folder, or split=None for every sequence)") from exc
    occupancy = all((s.path / POINTS_DIR).is_dir() for s in sequences)
    dataset = SequenceDataset(data, split=split, eval=True, length=int(tc.get("length", loaded.model.config.seq_len)),
                              offset=int(tc.get("offset", 0)), stride=int(tc.get("stride", 1)),
                              n_input_points=int(tc.get("n_input_points", 300)),
                              input_noise=float(tc.get("input_noise", 0.001)),
                              n_eval_points=int(n_eval_points) if n_eval_points else 2 ** 62,
                              eval_jitter=eval_jitter, occupancy=occupancy, seed=int(tc.get("seed", 0)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = loaded.model.to(device).eval()
    result = evaluate_model(model, dataset, max_windows=max_windows, meshes=meshes, field_iou=field_iou,
                            n_surface_points=n_surface_points, resolution0=resolution0,
                            upsampling_steps=upsampling_steps, progress=progress)
    result["seconds"]["total"] = round(time.perf_counter() - start, 3)
    header = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "device": str(device),
              "model": {"preset": tc.get("model_preset"), "parameters": sum(p.numel() for p in model.parameters()),
                        "ode": loaded.model.config.ode.method, "step": loaded.meta.get("step"),
                        "velocity_prior": loaded.model.config.velocity_prior},
              "occupancy_points": occupancy,
              "iou_points_per_frame": result["per_window"][0]["iou_points"] if result["per_window"] else None}
    return {**header, **result}


def format_table(result: dict[str, Any], *, digits: int = 4) -> str:
    """A text table of an evaluation result: one row per frame (time t), then the mean over frames.

    Columns are the metrics present (``iou``, ``iou_mesh``, ``chamfer_l1_x10``, ``chamfer_l2_sq``,
    ``corr_l2_x10``, ``normal_consistency``); the x10 columns follow the papers' convention, stated
    in the footer with the units.
    """
    shown = ("iou", "iou_mesh", "chamfer_l1", "chamfer_l1_x10", "chamfer_l2_sq", "corr_l2_x10", "normal_consistency")
    per_frame = result.get("per_frame", {})
    cols = [k for k in shown if k in per_frame and any(v is not None for v in per_frame[k])]
    times = result.get("times") or []
    fmt = lambda v: "-" if v is None else f"{v:.{digits}f}"
    header = ["frame", "t"] + cols
    rows = [[str(i), f"{t:.3f}"] + [fmt(per_frame[k][i]) for k in cols] for i, t in enumerate(times)]
    rows.append(["mean", ""] + [fmt(result.get("mean", {}).get(k)) for k in cols])
    widths = [max(len(r[j]) for r in [header] + rows) for j in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
    sep = "-" * len(line(header))
    footer = f"{result.get('windows', '?')} window(s); {result.get('units', UNITS)}"
    return "\n".join([line(header), sep, *map(line, rows[:-1]), sep, line(rows[-1]), footer])


@torch.no_grad()
def occupancy_projection(model: OccupancyFlow, codes: Codes, times: Sequence[float], *, resolution: int = 48,
                         depth: int | None = None, bounds: float = BOX_HALF, chunk: int = 32768) -> np.ndarray:
    """Front views of the model's occupancy: the largest probability along z through each pixel.

    Args:
        codes: codes of one window.
        times: (T,) times to show.
        resolution: pixels per side over ``[-bounds, bounds]`` (x to the right, y up).
        depth: samples along z (default ``resolution // 2``).
    Returns:
        (T, resolution, resolution) probabilities, row 0 at the top (+y), column 0 at -x.
    """
    depth = depth or max(resolution // 2, 2)
    xs = torch.linspace(-bounds, bounds, resolution)
    zs = torch.linspace(-bounds, bounds, depth)
    grid = torch.stack(torch.meshgrid(xs, xs.flip(0), zs, indexing="xy"), dim=-1)  # (y, x, z, 3): x right, y up
    pts = grid.reshape(1, -1, 3).expand(len(times), -1, -1)
    prob = occupancy_probabilities(model, codes, pts, torch.as_tensor(np.asarray(times, dtype=np.float32)),
                                   chunk=chunk)
    return prob.reshape(len(times), resolution, resolution, depth).amax(-1).cpu().numpy()


def occupancy_figure(model: OccupancyFlow, item: dict, *, frames: Sequence[int] | None = None, resolution: int = 48,
                     threshold: float = IOU_THRESHOLD, title: str | None = None, max_points: int = 20000,
                     prediction: WindowPrediction | None = None):
    """The model's occupancy next to the ground truth at several frames of one window, seen from the front.

    Top row: the largest occupancy probability along the viewing direction (:func:`occupancy_projection`);
    bottom row: the ground-truth surface points (``pointcloud``) of the same frame. Titles give the time
    and, when the item has occupancy points, the frame's IoU (:func:`predict_window`).

    Args:
        item: an evaluation item of :class:`SequenceDataset` (``eval=True``).
        frames: frame indices to show (default first, middle, last).
        resolution: pixels per side of the model's views.
        prediction: :func:`predict_window` of this item, if already computed (for the IoU titles).
    Returns:
        A ``matplotlib.figure.Figure`` (not attached to pyplot).
    """
    from matplotlib.figure import Figure

    times = torch.as_tensor(item["times"]).cpu().numpy()
    T = len(times)
    frames = list(frames) if frames is not None else sorted({0, T // 2, T - 1})
    codes = window_codes(model, item.get("inputs"))
    if prediction is None and "points" in item:
        prediction = predict_window(model, item, threshold=threshold, codes=codes)
    iou = None if prediction is None else prediction.iou
    images = occupancy_projection(model, codes, times[frames], resolution=resolution)
    gt = torch.as_tensor(item["pointcloud"]).cpu().numpy()
    b = BOX_HALF
    fig = Figure(figsize=(2.3 * len(frames), 4.9))
    axes = fig.subplots(2, len(frames), squeeze=False)
    for j, f in enumerate(frames):
        top, bottom = axes[0, j], axes[1, j]
        top.imshow(images[j], extent=(-b, b, -b, b), cmap="magma", vmin=0.0, vmax=1.0)
        top.set_title(f"model t={times[f]:.2f}" + (f" IoU {iou[f]:.2f}" if iou is not None else ""), fontsize=9)
        p = gt[f][:: max(1, len(gt[f]) // max_points)]
        bottom.scatter(p[:, 0], p[:, 1], c=p[:, 2], s=0.3, cmap="viridis", vmin=-b, vmax=b)
        bottom.set_title("truth (surface points)", fontsize=9)
        for ax in (top, bottom):
            ax.set_xlim(-b, b)
            ax.set_ylim(-b, b)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# Ground-truth normals from mesh_seq
# --------------------------------------------------------------------------------------------------

MESH_EXTENSIONS = (".ply", ".obj", ".off")


def ground_truth_normals(sequence_dir: str | os.PathLike, start: int, length: int, *, n_points: int = 100_000,
                         seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Points and normals sampled on the ground-truth meshes of a window, in its frame-0 normalised coordinates.

    Looks for ``<sequence>/mesh_seq/<frame stem>{.ply,.obj,.off}`` (or D-FAUST's ``%05d.obj``) for every
    frame of the window; the meshes are in world units and normalised with the window's first
    ``pcl_seq`` loc/scale, like the point clouds. Returns None when any mesh is missing (no normals).
    """
    seq = Path(sequence_dir)
    if not (seq / "mesh_seq").is_dir():
        return None
    pack = pack_sequence(seq)
    frames = pack.frames[start:start + length]
    paths = []
    for name in frames:
        stem = Path(name).stem
        found = [seq / "mesh_seq" / f"{s}{ext}" for s in (stem, f"{int(stem):05d}") for ext in MESH_EXTENSIONS
                 if (seq / "mesh_seq" / f"{s}{ext}").is_file()]
        if not found:
            return None
        paths.append(found[0])
    from toolkit.geometry.meshing import load_mesh

    loc0, scale0 = pack.loc[start].astype(np.float64), float(pack.scale[start])
    out = []
    for path in paths:
        mesh = load_mesh(path)
        verts = (mesh.vertices.astype(np.float64) - loc0) / scale0
        out.append(sample_mesh_surface(verts, mesh.faces, n_points, seed=seed))
    return out


# --------------------------------------------------------------------------------------------------
# private
# --------------------------------------------------------------------------------------------------

def _meshing(meshing: MeshingOptions | None, threshold: float, resolution0: int, upsampling_steps: int, *,
             bounds: float = BOX_HALF, chunk: int = 100_000, threshold_also_iou: bool = False) -> MeshingOptions:
    """One :class:`MeshingOptions` from the evaluation knobs (the ``threshold`` probability as a logit level),
    or ``meshing`` itself when given (the knobs then keep their defaults; a ``threshold`` that also sets the
    field-level IoU may differ)."""
    if meshing is not None and bounds != BOX_HALF:
        raise ValueError("give the meshing settings once: meshing=MeshingOptions(...) or bounds, not both")
    knobs = {"resolution0": resolution0, "upsampling_steps": upsampling_steps, "chunk": chunk}
    if meshing is None or not threshold_also_iou:
        knobs["threshold"] = threshold
    opts = resolve_meshing(meshing, **knobs)
    return opts if meshing is not None or bounds == BOX_HALF else opts.replace(bounds=bounds)


def _quiet_chamfer(pred, gt, pred_normals=None, gt_normals=None):
    import warnings

    with warnings.catch_warnings():  # an empty prediction gets the original's sentinels; counted, not warned
        warnings.simplefilter("ignore")
        return chamfer_distance(pred, gt, pred_normals, gt_normals)


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def _nanmean_rows(rows: list[list[float]]) -> list[float]:
    a = np.asarray(rows, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return [_nanmean(a[:, j]) for j in range(a.shape[1])]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
