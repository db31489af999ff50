"""Mesh sequences from Occupancy Flow: one t=0 mesh, its vertices carried through time (oflow.md §4).

:func:`reconstruct` is the Occupancy Flow way. The t=0 occupancy (decoder logits, threshold 0.3 as a
probability, i.e. the logit ``log(0.3 / 0.7)``, as the original) is evaluated with MISE on the box
``[-0.55, 0.55]^3`` (box 1 + padding 0.1; coarse lattice ``resolution0``, refined ``upsampling_steps``
times only where cells cross the threshold), meshed by marching cubes (PyMCubes, or the GPU kernel for a
model on a GPU; ``toolkit.geometry.meshing``), optionally decimated, and then ALL its vertices are pushed
forward to every output time in one transport call. Every frame shares the t=0 faces, so vertex k is the
same surface point in every frame: correspondences come for free.

:func:`reconstruct_per_frame` is the ONet-4D-style alternative used for comparison: MISE of the
occupancy at every time on its own (each query point transported back to t=0, then decoded). It costs
an ODE solve per queried point and per frame, and its meshes share nothing across frames.

Several sequences are reconstructed in one call: encoding and propagation run batched (vertex sets of
different sizes are padded with copies of a real vertex), MISE and marching cubes run per item.
Every result carries per-stage wall-clock timings (``encode``, ``mise``, ``marching_cubes``,
``decimate``, ``propagation``, ``total``; batched stages are split evenly over the items).

Coordinates are frame-0 normalised units (the frame-0 body fits in about [-0.5, 0.5]^3); times in [0, 1].
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from toolkit.geometry.meshing import Mesh, MeshingOptions, marching_cubes, mise_grid, save_mesh
from toolkit.io import DataError, atomic_save_npz, load_npz
from toolkit.oflow.fields import (
    OccupancyField,
    eval_mode,
    frame_times,
    inference_ode,
    model_device,
    ode_kwargs,
    query_settings,
    resolve_meshing,
)
from toolkit.oflow.ode import FusedVelocity, ODEOptions, SolveStats, transport_forward

__all__ = [
    "FrameMeshes",
    "MeshSequence",
    "SequenceMetrics",
    "average_metrics",
    "correspondence_colors",
    "decimate",
    "evaluate_mesh_sequence",
    "evaluation_windows",
    "extract_t0_mesh",
    "format_metrics",
    "format_timings",
    "load_mesh_sequence",
    "propagate_vertices",
    "reconstruct",
    "reconstruct_per_frame",
    "save_mesh_sequence",
]

STAGES = ("encode", "mise", "marching_cubes", "decimate", "propagation")
"""Timed stages of :func:`reconstruct` (seconds in ``MeshSequence.timings``, plus ``total``)."""


class MeshSequence(NamedTuple):
    """A mesh sequence with fixed topology: vertex k is the same surface point in every frame."""

    vertices: np.ndarray
    """(T, V, 3) float32 vertex positions per frame (frame-0 normalised units)."""
    faces: np.ndarray
    """(F, 3) int64 faces shared by every frame (counter-clockwise seen from outside)."""
    times: np.ndarray
    """(T,) float32 times of the frames."""
    timings: dict[str, float]
    """Seconds per stage: encode, mise, marching_cubes, decimate, propagation, total."""
    stats: dict[str, int]
    """Counts: ``num_queries`` (t=0 field evaluations), ``nfe`` (velocity evaluations of the batch solve),
    ``faces_before_decimation``."""

    def frame(self, i: int) -> Mesh:
        """Frame ``i`` as a :class:`toolkit.geometry.meshing.Mesh` with correspondence colours."""
        return Mesh(self.vertices[i], self.faces, None, correspondence_colors(self.vertices[0]))


class FrameMeshes(NamedTuple):
    """Independent meshes per frame (:func:`reconstruct_per_frame`): no shared topology."""

    meshes: list[Mesh]
    """T meshes, one per time."""
    times: np.ndarray
    """(T,) float32 times."""
    timings: dict[str, float]
    """Seconds per stage: encode, mise (every frame, ODE included), marching_cubes, total."""
    stats: dict[str, int]
    """Counts: ``num_queries`` (occupancy queries over all frames), ``nfe`` (velocity evaluations)."""


class SequenceMetrics(NamedTuple):
    """Per-frame scores of a reconstruction (oflow.md §5; NaN where the input has no ground truth)."""

    iou: np.ndarray
    """(T,) volumetric IoU on the evaluation points (NaN without occupancies)."""
    chamfer_l1_x10: np.ndarray
    """(T,) Chamfer-L1 x 10, the papers' unit (1/10 of the frame-0 max bbox side)."""
    correspondence_x10: np.ndarray
    """(T,) mean vertex-to-corresponding-GT-point distance x 10 (NaN for meshes without shared topology)."""


# ----------------------------------------------------------------------------------------------------
# Occupancy Flow generation
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruct(
    model: Any,
    inputs: Tensor | Any,
    *,
    times: Tensor | Sequence[float] | None = None,
    decimate_faces: int | None = None,
    ode: str | ODEOptions | None = None,
    progress: bool = False,
    fused: bool | None = None,
    meshing: MeshingOptions | None = None,
    **settings: Any,
) -> list[MeshSequence]:
    """Mesh sequences of a batch: MISE + marching cubes at t=0, then one forward transport of the vertices.

    Args:
        model: an :class:`toolkit.oflow.model.OccupancyFlow` (or anything with its ``encode``, ``decode``,
            ``transport_forward`` and ``config``); run in eval mode (restored afterwards).
        inputs: (B, L, N, 3) input point trajectories (frame-0 normalised), or ready ``Codes`` of B items
            (e.g. from ``model.encode`` or ``model.sample_codes``; then no encoding is timed).
        times: (T,) output times; default ``linspace(0, 1, config.seq_len)`` (t = i / 16 for 17 frames).
        decimate_faces: decimate the t=0 mesh to about this many faces before propagation (the ODE cost
            grows with the vertex count); needs the optional package ``fast-simplification``.
        ode: transport settings: a key of ``toolkit.oflow.ode.ODE_PRESETS`` ("original", "rk4", ...),
            an ``ODEOptions``, or None for the model's ``config.ode``.
        progress: show a progress bar over the items' t=0 meshes.
        fused: propagate with :class:`toolkit.oflow.ode.FusedVelocity` (the velocity MLP with folded
            per-item terms and reused buffers; same vertices to float rounding, about 1.4x faster
            propagation on a CPU); False runs the module itself (the plain path); None (default) fuses
            whenever the model's velocity field has that MLP's layout.
        meshing: the t=0 meshing settings as one object (:func:`toolkit.oflow.fields.occupancy_meshing`);
            default: the original's (probability 0.3, a 32^3 lattice refined twice, box 1.1, chunks of
            100000 queries).
        **settings: single settings instead (:func:`toolkit.oflow.fields.query_settings`): the meshing
            knobs ``threshold`` (the occupancy probability of the surface; the level is its logit),
            ``resolution0``, ``upsampling_steps``, ``padding`` (box = 1 + padding), ``chunk``, ``impl``, and
            single ODE options (method, rtol, atol, step_size, num_steps, per_item).

    Returns:
        One :class:`MeshSequence` per item, frames in the order of ``times``.
    """
    device = model_device(model)
    mesh_opts, opts = query_settings(model, meshing, ode, **settings)
    times_t = frame_times(model, times, device)
    _check_decimate(decimate_faces)
    with eval_mode(model):
        codes, t_encode = _timed_codes(model, inputs, device)
        b = codes.c_t.shape[0]
        meshes, per_item = [], []
        for i in _progress(range(b), progress, "t=0 meshes"):
            mesh, timing, stats = extract_t0_mesh(model, _item(codes, i), meshing=mesh_opts,
                                                  decimate_faces=decimate_faces)
            meshes.append(mesh)
            per_item.append((timing, stats))
        t = time.perf_counter()
        solve = SolveStats()
        verts = propagate_vertices(model, codes, [m.vertices for m in meshes], times_t, ode=opts, stats=solve,
                                   fused=fused)
        t_prop = time.perf_counter() - t
    out = []
    for i in range(b):
        timing, stats = per_item[i]
        timing = {"encode": t_encode / b, **timing, "propagation": t_prop / b}
        timing["total"] = sum(timing[k] for k in STAGES)
        out.append(MeshSequence(verts[i], meshes[i].faces, times_t.cpu().numpy().astype(np.float32), timing,
                                {**stats, "nfe": solve.nfe}))
    return out


@torch.no_grad()
def extract_t0_mesh(
    model: Any,
    codes: Any,
    *,
    decimate_faces: int | None = None,
    meshing: MeshingOptions | None = None,
    **knobs: Any,
) -> tuple[Mesh, dict[str, float], dict[str, int]]:
    """The t=0 mesh of ONE item: MISE of the decoder logits, marching cubes, optional decimation.

    Args:
        codes: ``Codes`` of a single item (batch size 1).
        decimate_faces, meshing: as in :func:`reconstruct`.
        **knobs: single meshing settings instead of ``meshing`` (threshold, resolution0, ...; see
            :func:`toolkit.oflow.fields.occupancy_meshing`).

    Returns:
        (mesh, timings {mise, marching_cubes, decimate}, stats {num_queries, faces_before_decimation}).
    """
    if codes.c_t.shape[0] != 1:
        raise ValueError(f"extract_t0_mesh takes the codes of one item; got batch size {codes.c_t.shape[0]}")
    opts = resolve_meshing(meshing, **knobs)
    _check_decimate(decimate_faces)
    field = OccupancyField(model, codes, 0.0)
    t = time.perf_counter()
    grid = mise_grid(field, opts)
    t_mise = time.perf_counter() - t
    t = time.perf_counter()
    mesh = marching_cubes(grid.values, opts.level, bounds=opts.box_for(field), close=opts.close, impl=opts.impl,
                          device=field.device)
    mesh = Mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64))
    t_mc = time.perf_counter() - t
    n_faces = len(mesh.faces)
    t = time.perf_counter()
    if decimate_faces is not None and n_faces > decimate_faces:
        mesh = decimate(mesh, decimate_faces)
    t_dec = time.perf_counter() - t
    return (mesh, {"mise": t_mise, "marching_cubes": t_mc, "decimate": t_dec},
            {"num_queries": int(grid.num_queries), "faces_before_decimation": n_faces})


@torch.no_grad()
def propagate_vertices(
    model: Any,
    codes: Any,
    vertices: Sequence[np.ndarray | Tensor] | np.ndarray | Tensor,
    times: Tensor | Sequence[float],
    *,
    ode: str | ODEOptions | None = None,
    stats: SolveStats | None = None,
    fused: bool | None = None,
    **ode_overrides: Any,
) -> list[np.ndarray]:
    """Carry each item's t=0 vertices to every time in one batched forward transport.

    Args:
        codes: ``Codes`` of B items (the velocity field reads c_t, z_t and, with a velocity prior, the inputs).
        vertices: B arrays (V_b, 3) of t=0 positions (sizes may differ: shorter sets are padded with
            copies of their first vertex, which are dropped again), or one (B, V, 3) array.
        times: (T,) output times (0 gives the input positions exactly).
        ode, **ode_overrides: as in :func:`reconstruct`.
        stats: optional counters of velocity evaluations.
        fused: evaluate the velocity field with :class:`toolkit.oflow.ode.FusedVelocity` (inference fast
            path, same result to float rounding); False runs the module itself; None fuses when possible.

    Returns:
        B float32 arrays (T, V_b, 3).
    """
    device = model_device(model)
    opts = inference_ode(model, ode, **ode_overrides)
    if torch.is_tensor(vertices) or isinstance(vertices, np.ndarray):
        vertices = list(vertices if vertices.ndim == 3 else vertices[None])
    items = [v.detach().float().cpu() if torch.is_tensor(v) else torch.as_tensor(np.asarray(v, np.float32))
             for v in vertices]
    b = codes.c_t.shape[0]
    if len(items) != b:
        raise ValueError(f"got {len(items)} vertex sets for codes of {b} items")
    times_t = torch.as_tensor(times, dtype=torch.float32, device=device)
    sizes = [v.shape[0] for v in items]
    for i, v in enumerate(items):
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"vertices[{i}] must have shape (V, 3); got {tuple(v.shape)}")
    if max(sizes) == 0:
        return [np.zeros((len(times_t), 0, 3), np.float32) for _ in items]
    vmax = max(sizes)
    p0 = torch.stack([torch.cat([v, (v[:1] if len(v) else torch.zeros(1, 3)).expand(vmax - len(v), 3)])
                      for v in items]).to(device)
    fast = None
    if fused is not False:
        try:
            fast = FusedVelocity(model.vector_field)
        except (TypeError, AttributeError):
            if fused:
                raise
    with eval_mode(model):
        if fast is not None:
            traj = transport_forward(model.velocity_function(fast), p0, times_t, cond=model.flow_cond(codes),
                                     options=opts, stats=stats)
        else:
            traj = model.transport_forward(codes, p0, times_t, stats=stats, **ode_kwargs(opts))
    traj = traj.float().cpu().numpy()
    return [np.ascontiguousarray(traj[i, :, : sizes[i]]) for i in range(b)]


# ----------------------------------------------------------------------------------------------------
# ONet-4D-style alternative: MISE at every frame
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruct_per_frame(
    model: Any,
    inputs: Tensor | Any,
    *,
    times: Tensor | Sequence[float] | None = None,
    ode: str | ODEOptions | None = None,
    progress: bool = False,
    meshing: MeshingOptions | None = None,
    **settings: Any,
) -> list[FrameMeshes]:
    """One MISE extraction per frame of the occupancy at time t (query -> back to t=0 -> decoder).

    The ONet-4D way of getting meshes (and the occupancy that Occupancy Flow is trained on). Same
    arguments as :func:`reconstruct`; the forward flow (meshes of :func:`reconstruct`) and the backward
    flow (these) agree only to solver tolerance. Frames share no topology, so there are no
    correspondences.

    Returns:
        One :class:`FrameMeshes` per item.
    """
    device = model_device(model)
    mesh_opts, opts = query_settings(model, meshing, ode, **settings)
    times_t = frame_times(model, times, device)
    out = []
    with eval_mode(model):
        codes, t_encode = _timed_codes(model, inputs, device)
        b = codes.c_t.shape[0]
        jobs = [(i, float(tk)) for i in range(b) for tk in times_t.tolist()]
        results: dict[int, list] = {i: [] for i in range(b)}
        for i, tk in _progress(jobs, progress, "per-frame MISE"):
            solve = SolveStats()
            field = OccupancyField(model, _item(codes, i), tk, ode=opts, stats=solve)
            t = time.perf_counter()
            grid = mise_grid(field, mesh_opts)
            t_mise = time.perf_counter() - t
            t = time.perf_counter()
            mesh = marching_cubes(grid.values, mesh_opts.level, bounds=mesh_opts.box_for(field),
                                  close=mesh_opts.close, impl=mesh_opts.impl, device=field.device)
            mesh = Mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64))
            results[i].append((mesh, t_mise, time.perf_counter() - t, grid.num_queries, solve.nfe))
    for i in range(b):
        r = results[i]
        timing = {"encode": t_encode / b, "mise": sum(x[1] for x in r), "marching_cubes": sum(x[2] for x in r)}
        timing["total"] = sum(timing.values())
        out.append(FrameMeshes([x[0] for x in r], times_t.cpu().numpy().astype(np.float32), timing,
                               {"num_queries": int(sum(x[3] for x in r)), "nfe": int(sum(x[4] for x in r))}))
    return out


# ----------------------------------------------------------------------------------------------------
# Decimation, colours, evaluation, files
# ----------------------------------------------------------------------------------------------------


def decimate(mesh: Mesh, target_faces: int, *, aggressiveness: float = 7.0) -> Mesh:
    """Quadric decimation to about ``target_faces`` faces (Fast-Quadric-Mesh-Simplification, as the
    original's optional libsimplify step), via the optional package ``fast-simplification``.

    Raises:
        ImportError: ``fast-simplification`` is not installed (the message says how to install it).
    """
    if int(target_faces) < 4:
        raise ValueError(f"target_faces must be >= 4; got {target_faces}")
    try:
        import fast_simplification
    except ImportError as exc:
        raise ImportError("decimation needs the optional package fast-simplification: "
                          "`pip install fast-simplification` (or leave decimate_faces=None)") from exc
    if len(mesh.faces) <= target_faces:
        return mesh
    v, f = fast_simplification.simplify(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int32),
                                        target_count=int(target_faces), agg=float(aggressiveness))
    return Mesh(np.asarray(v, np.float32), np.asarray(f, np.int64))


def correspondence_colors(vertices0: np.ndarray) -> np.ndarray:
    """(V, 3) uint8 colours from the t=0 positions (x, y, z -> R, G, B over the bounding box).

    Coloured by where a vertex starts, the same surface point keeps its colour in every frame, so
    drift or swapped correspondences show up as colour changes on a body part.
    """
    v = np.asarray(vertices0, dtype=np.float64).reshape(-1, 3)
    if len(v) == 0:
        return np.zeros((0, 3), np.uint8)
    lo, hi = v.min(0), v.max(0)
    rgb = (v - lo) / np.maximum(hi - lo, 1e-12)
    return (40 + 215 * rgb).round().astype(np.uint8)


def evaluate_mesh_sequence(
    seq: MeshSequence | FrameMeshes,
    pointcloud: np.ndarray | Tensor,
    points: np.ndarray | Tensor | None = None,
    occupancies: np.ndarray | Tensor | None = None,
    *,
    n_points: int = 100_000,
    seed: int = 0,
) -> SequenceMetrics:
    """Per-frame IoU, Chamfer-L1 x10 and correspondence error x10 of a reconstruction (oflow.md §5).

    Args:
        seq: a :class:`MeshSequence` (correspondences scored) or :class:`FrameMeshes` (correspondence NaN).
        pointcloud: (T, P, 3) GT surface points with index correspondences (an eval item's ``pointcloud``).
        points, occupancies: optional (T, K, 3) IoU points and (T, K) GT occupancies (``points``,
            ``points.occ`` of an evaluation item).
        n_points: surface samples per predicted mesh (the original: 100000).
        seed: sampling seed.
    """
    from toolkit.metrics import correspondence_error, mesh_metrics

    gt = _numpy(pointcloud)
    frames = ([(seq.vertices[i], seq.faces) for i in range(len(seq.vertices))] if isinstance(seq, MeshSequence)
              else [(m.vertices, m.faces) for m in seq.meshes])
    if gt.ndim != 3 or gt.shape[0] != len(frames) or gt.shape[-1] != 3:
        raise ValueError(f"pointcloud must be (T={len(frames)}, P, 3); got {gt.shape}")
    if (points is None) != (occupancies is None):
        raise ValueError("points and occupancies go together: give both or neither")
    iou, cd = np.full(len(frames), np.nan), np.full(len(frames), np.nan)
    for i, (v, f) in enumerate(frames):
        kw = {} if points is None else {"points_iou": _numpy(points)[i], "occ_gt": _numpy(occupancies)[i]}
        m = mesh_metrics(v, f, gt[i], n_points=n_points, seed=seed, **kw)
        iou[i], cd[i] = m.iou, m.chamfer_l1_x10
    corr = np.full(len(frames), np.nan)
    if isinstance(seq, MeshSequence) and seq.vertices.shape[1] > 0:
        corr = 10.0 * correspondence_error(seq.vertices, gt)
    return SequenceMetrics(iou, cd, corr)


def evaluation_windows(root: str | os.PathLike, train_config: Mapping[str, Any] | None = None, *,
                       split: str | Sequence[str] | None = None, one_per_sequence: bool = True,
                       occupancy: bool = True, **overrides: Any):
    """Evaluation windows of a dataset, with the inputs a checkpoint was trained on.

    Args:
        root: dataset root, category folder or one sequence (see ``toolkit.oflow.data.find_sequences``).
        train_config: a checkpoint's ``meta["train_config"]``; its ``length``, ``n_input_points`` and
            ``input_noise`` set the inputs (default: the original's 17, 300 and 0.001).
        split: None (every sequence), a split-list name, or sequence names.
        one_per_sequence: only the first window of each sequence (stride = length).
        occupancy: load ``points_seq`` (IoU); False for scans with surface points only.
        **overrides: further ``SequenceDataset`` arguments (e.g. ``n_eval_points``).

    Returns:
        A ``SequenceDataset`` in eval mode.
    """
    from toolkit.oflow.data import SequenceDataset

    tc = dict(train_config or {})
    kw = {"length": int(tc.get("length", 17)), "n_input_points": int(tc.get("n_input_points", 300)),
          "input_noise": float(tc.get("input_noise", 0.001))}
    if one_per_sequence:
        kw["stride"] = kw["length"]
    kw.update(overrides)
    return SequenceDataset(root, split=split, eval=True, occupancy=occupancy, **kw)


def format_timings(results: Mapping[str, MeshSequence | FrameMeshes]) -> str:
    """A text table of seconds per stage (rows: results by name), with vertex counts and field queries."""
    stages = list(dict.fromkeys(k for r in results.values() for k in r.timings if k != "total")) + ["total"]
    head = f"{'':<24}" + "".join(f"{k:>15}" for k in stages) + f"{'queries':>12}{'frames':>8}"
    lines = [head]
    for name, r in results.items():
        n = len(r.vertices) if isinstance(r, MeshSequence) else len(r.meshes)
        lines.append(f"{name:<24}" + "".join(f"{r.timings[k]:>14.3f}s" if k in r.timings else f"{'-':>15}"
                                             for k in stages)
                     + f"{r.stats.get('num_queries', 0):>12,}{n:>8}")
    return "\n".join(lines)


def average_metrics(metrics: Sequence[SequenceMetrics]) -> SequenceMetrics:
    """Frame-wise mean of several sequences' metrics (NaN entries ignored)."""
    if not metrics:
        raise ValueError("no metrics to average")
    return SequenceMetrics(*(_nanmean0(np.stack([getattr(m, f) for m in metrics])) for f in SequenceMetrics._fields))


def format_metrics(metrics: Mapping[str, SequenceMetrics], times: Sequence[float] | None = None) -> str:
    """A text table of IoU, Chamfer-L1 x10 and correspondence x10 ('-' where not available).

    With ``times``: one row per frame (columns: each named result's three metrics) and a final row of
    means. Without: one row per named result with its means over the frames.
    """
    short = {"iou": "IoU", "chamfer_l1_x10": "CD-L1 x10", "correspondence_x10": "Corr x10"}
    fields = SequenceMetrics._fields

    def cell(v: float, w: int) -> str:
        return f"{'-':>{w}}" if not np.isfinite(v) else f"{v:>{w}.4f}"

    def mean(a: np.ndarray) -> float:
        return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

    if times is None:
        w0 = max(8, *(len(n) + 2 for n in metrics))
        lines = [f"{'':<{w0}}" + "".join(f"{short[f]:>12}" for f in fields)]
        lines += [f"{n:<{w0}}" + "".join(cell(mean(getattr(m, f)), 12) for f in fields) for n, m in metrics.items()]
        return "\n".join(lines)
    names = list(metrics)
    w = 11
    lines = [f"{'':>6}" + "".join(f"{n[: 3 * w - 2]:>{3 * w}}" for n in names),
             f"{'t':>6}" + "".join(f"{short[f]:>{w}}" for _ in names for f in fields)]
    for k, t in enumerate(times):
        lines.append(f"{float(t):>6.3f}" + "".join(cell(float(getattr(metrics[n], f)[k]), w) for n in names
                                                   for f in fields))
    lines.append(f"{'mean':>6}" + "".join(cell(mean(getattr(metrics[n], f)), w) for n in names for f in fields))
    return "\n".join(lines)


def save_mesh_sequence(folder: str | os.PathLike, seq: MeshSequence, *, stem: str = "frame",
                       colors: bool = True) -> Path:
    """Write a mesh sequence: one binary PLY per frame and one NPZ holding every frame (atomic writes).

    Files: ``<folder>/<stem>_<k:04d>.ply`` (k = frame index, vertex colours by correspondence when
    ``colors``) and ``<folder>/<stem>s.npz`` with ``vertices`` (T, V, 3), ``faces`` (F, 3), ``times`` (T,),
    ``timing_names`` / ``timing_seconds`` and ``stat_names`` / ``stat_values``.

    Returns:
        The NPZ path (read it back with :func:`load_mesh_sequence`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vc = correspondence_colors(seq.vertices[0]) if colors and len(seq.vertices) else None
    for k in range(len(seq.vertices)):
        save_mesh(folder / f"{stem}_{k:04d}.ply", Mesh(seq.vertices[k], seq.faces, None, vc))
    path = folder / f"{stem}s.npz"
    atomic_save_npz(path, vertices=np.asarray(seq.vertices, np.float32), faces=np.asarray(seq.faces, np.int64),
                    times=np.asarray(seq.times, np.float32), timing_names=np.array(list(seq.timings), dtype=str),
                    timing_seconds=np.array(list(seq.timings.values()), np.float64),
                    stat_names=np.array(list(seq.stats), dtype=str),
                    stat_values=np.array(list(seq.stats.values()), np.int64))
    return path


def load_mesh_sequence(path: str | os.PathLike) -> MeshSequence:
    """Read a sequence written by :func:`save_mesh_sequence` (the NPZ, or its folder if it holds one NPZ).

    Raises:
        DataError: missing file or keys, or inconsistent shapes.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*s.npz"))
        if len(found) != 1:
            raise DataError(path, f"expected one mesh-sequence NPZ in the folder; found {[p.name for p in found]}")
        path = found[0]
    d = load_npz(path, required=("vertices", "faces", "times"))
    v, f, t = d["vertices"], d["faces"].astype(np.int64), d["times"]
    if v.ndim != 3 or v.shape[-1] != 3 or f.ndim != 2 or f.shape[-1] != 3 or t.shape != (v.shape[0],):
        raise DataError(path, f"inconsistent shapes: vertices {v.shape}, faces {f.shape}, times {t.shape}")
    if len(f) and (f.min() < 0 or f.max() >= v.shape[1]):
        raise DataError(path, f"faces index vertices outside 0..{v.shape[1] - 1}")
    timings = dict(zip(d.get("timing_names", np.array([])).tolist(), d.get("timing_seconds", np.array([])).tolist()))
    stats = dict(zip(d.get("stat_names", np.array([])).tolist(), d.get("stat_values", np.array([])).tolist()))
    return MeshSequence(v.astype(np.float32), f, t.astype(np.float32), timings, stats)


# ----------------------------------------------------------------------------------------------------
# private
# ----------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: wait before reading the clock
        torch.cuda.synchronize(device)


def _codes(model: Any, inputs: Any, device: torch.device) -> Any:
    from toolkit.oflow.model import Codes

    if isinstance(inputs, Codes):
        return Codes(*(c.to(device) for c in inputs))
    if not torch.is_tensor(inputs) or inputs.ndim != 4 or inputs.shape[-1] != 3:
        shape = tuple(inputs.shape) if hasattr(inputs, "shape") else type(inputs).__name__
        hint = " (one sequence? add the batch axis: inputs[None])" if getattr(inputs, "ndim", 0) == 3 else ""
        raise ValueError(f"inputs must be (B, L, N, 3) point trajectories or Codes; got {shape}{hint}")
    return model.encode(inputs.to(device=device, dtype=torch.float32))


def _timed_codes(model: Any, inputs: Any, device: torch.device) -> tuple[Any, float]:
    """The codes of ``inputs`` (see :func:`_codes`) and the seconds their encoding took."""
    t = time.perf_counter()
    codes = _codes(model, inputs, device)
    _sync(device)
    return codes, time.perf_counter() - t


def _item(codes: Any, i: int) -> Any:
    return type(codes)(*(c[i:i + 1] for c in codes))


def _check_decimate(decimate_faces: int | None) -> None:
    if decimate_faces is not None and int(decimate_faces) < 4:
        raise ValueError(f"decimate_faces must be None or >= 4; got {decimate_faces}")


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc)


def _nanmean0(a: np.ndarray) -> np.ndarray:
    finite = np.isfinite(a)
    out = np.full(a.shape[1:], np.nan)
    np.divide(np.where(finite, a, 0.0).sum(0), finite.sum(0), out=out, where=finite.sum(0) > 0)
    return out


def _numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
