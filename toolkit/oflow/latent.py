"""Occupancy Flow latent tools: latent tables, motion embeddings, interpolation, motion transfer (oflow.md §4).

The generative (VAE) model has two codes per window: the shape code z, read by the t=0 decoder, and the
motion code z_t, read by the velocity field (completion models have c_s and c_t in the same roles). So:

- a latent table holds the posterior means of z and z_t of every window (:func:`encode_latent_table`);
- :func:`interpolate_motion` holds z FIXED and walks z_t from one motion to another: one t=0 mesh,
  propagated with each intermediate motion. (The original's shape-interpolation mode fixed ``loc_z`` in
  both branches, i.e. the wrong code; here each function fixes the code it names.)
- :func:`interpolate_shape` holds z_t fixed and walks z: one t=0 mesh per step, each propagated with
  the same motion;
- :func:`transfer_motion` carries ANY mesh's vertices through a motion: the velocity field never sees the
  shape code, so a motion code drives whatever surface sits in its frame-0 coordinates;
- :func:`synthetic_transfer_case` and :func:`trajectory_error` score a transfer on procedural bodies,
  whose "target identity doing the source motion" ground truth is exact.

Interpolation paths come from :func:`toolkit.latent.interpolate_codes` (linear or slerp, with easing);
the first and last steps are exactly the end codes. Coordinates are frame-0 normalised units.
"""
from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from toolkit.geometry.meshing import Mesh, MeshingOptions
from toolkit.io import DataError, atomic_save_npz, atomic_save_text, load_npz
from toolkit.latent import interpolate_codes
from toolkit.oflow.fields import eval_mode, frame_times, model_device, query_settings
from toolkit.oflow.generate import STAGES, MeshSequence, extract_t0_mesh, propagate_vertices, reconstruct
from toolkit.oflow.ode import ODEOptions, SolveStats

__all__ = [
    "EMBEDDINGS",
    "Interpolation",
    "LatentTable",
    "TrajectoryError",
    "TransferCase",
    "encode_latent_table",
    "identity_name",
    "interpolate_motion",
    "interpolate_shape",
    "latent_codes",
    "motion_embedding",
    "motion_name",
    "normalize_vertices",
    "pick_pair",
    "synthetic_transfer_case",
    "trajectory_error",
    "transfer_motion",
]

EMBEDDINGS = ("pca", "tsne")
"""2D embeddings of codes: PCA (linear, deterministic) or t-SNE (the original's, perplexity 50)."""


# ----------------------------------------------------------------------------------------------------
# Latent table
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentTable:
    """Posterior codes of S windows (one row each): which window, and its z and z_t means and stds."""

    sequence: tuple[str, ...]
    """(S,) sequence names, e.g. ``50002_light_hopping_loose``."""
    motion: tuple[str, ...]
    """(S,) motion names (the sequence name without its leading identity number)."""
    start: np.ndarray
    """(S,) int64 first frame of each window."""
    z: np.ndarray
    """(S, Z) float32 posterior mean of the shape code."""
    z_t: np.ndarray
    """(S, Z) float32 posterior mean of the motion code."""
    z_std: np.ndarray
    """(S, Z) float32 posterior std of z (NaN when loaded from CSV)."""
    z_t_std: np.ndarray
    """(S, Z) float32 posterior std of z_t (NaN when loaded from CSV)."""

    def __len__(self) -> int:
        return len(self.sequence)

    def index(self, sequence: str, start: int | None = None) -> int:
        """Row of a window (the first window of ``sequence`` when ``start`` is None).

        Raises:
            KeyError: no such window (the message lists a few that exist).
        """
        for i, (s, f) in enumerate(zip(self.sequence, self.start.tolist())):
            if s == sequence and (start is None or f == int(start)):
                return i
        raise KeyError(f"no window {sequence!r}" + ("" if start is None else f" @ {start}") +
                       f" in the table; e.g. {sorted(set(self.sequence))[:5]}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically as ``.npz`` (everything) or ``.csv`` (one row per window: sequence, motion,
        start, z_0.., z_t_0..; the means only)."""
        path = Path(path)
        if path.suffix == ".npz":
            atomic_save_npz(path, sequence=np.array(self.sequence, dtype=str), motion=np.array(self.motion, dtype=str),
                            start=self.start, z=self.z, z_t=self.z_t, z_std=self.z_std, z_t_std=self.z_t_std)
        elif path.suffix == ".csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            zd = self.z.shape[1]
            w.writerow(["sequence", "motion", "start", *[f"z_{k}" for k in range(zd)],
                        *[f"z_t_{k}" for k in range(self.z_t.shape[1])]])
            for i in range(len(self)):
                w.writerow([self.sequence[i], self.motion[i], int(self.start[i]),
                            *(repr(float(v)) for v in self.z[i]), *(repr(float(v)) for v in self.z_t[i])])
            atomic_save_text(path, buf.getvalue())
        else:
            raise ValueError(f"{path}: unsupported latent-table format {path.suffix!r}; valid: .npz, .csv")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentTable:
        """Read a table written by :meth:`save` (NPZ or CSV).

        Raises:
            DataError: missing file, keys or columns, or inconsistent sizes.
        """
        path = Path(path)
        if path.suffix == ".npz":
            d = load_npz(path, required=("sequence", "motion", "start", "z", "z_t"))
            nan = np.full_like(d["z"], np.nan)
            table = cls(tuple(d["sequence"].tolist()), tuple(d["motion"].tolist()), d["start"].astype(np.int64),
                        d["z"].astype(np.float32), d["z_t"].astype(np.float32),
                        d.get("z_std", nan).astype(np.float32), d.get("z_t_std", nan).astype(np.float32))
        elif path.suffix == ".csv":
            if not path.is_file():
                raise DataError(path, "file not found")
            rows = list(csv.reader(path.read_text().splitlines()))
            if not rows or rows[0][:3] != ["sequence", "motion", "start"]:
                raise DataError(path, "expected a header starting with sequence,motion,start")
            head = rows[0]
            iz = [k for k, h in enumerate(head) if re.fullmatch(r"z_\d+", h)]
            izt = [k for k, h in enumerate(head) if re.fullmatch(r"z_t_\d+", h)]
            try:
                z = np.array([[float(r[k]) for k in iz] for r in rows[1:]], np.float32).reshape(-1, len(iz))
                zt = np.array([[float(r[k]) for k in izt] for r in rows[1:]], np.float32).reshape(-1, len(izt))
                start = np.array([int(r[2]) for r in rows[1:]], np.int64)
            except (ValueError, IndexError) as exc:
                raise DataError(path, f"malformed row ({exc})") from exc
            table = cls(tuple(r[0] for r in rows[1:]), tuple(r[1] for r in rows[1:]), start, z, zt,
                        np.full_like(z, np.nan), np.full_like(zt, np.nan))
        else:
            raise ValueError(f"{path}: unsupported latent-table format {path.suffix!r}; valid: .npz, .csv")
        n = len(table.sequence)
        if not (len(table.motion) == len(table.start) == len(table.z) == len(table.z_t) == n):
            raise DataError(path, "columns have different lengths")
        return table


def motion_name(sequence: str) -> str:
    """``50002_light_hopping_loose`` -> ``light_hopping_loose`` (drops a leading identity number)."""
    m = re.fullmatch(r"\d+_(.+)", sequence)
    return m.group(1) if m else sequence


def identity_name(sequence: str) -> str:
    """``50002_light_hopping_loose`` -> ``50002`` (the leading identity number; "" when there is none)."""
    m = re.fullmatch(r"(\d+)_.+", sequence)
    return m.group(1) if m else ""


def pick_pair(sequences: Sequence[str], *, differ: str = "motion", first: int = 0) -> tuple[int, int]:
    """Indices (i, j) of two sequences for an interpolation or transfer: i = ``first``, and j the first
    later one whose ``differ`` ("motion" or "identity") differs, preferring one that shares the other.

    Raises:
        ValueError: no sequence differs from the first in that way.
    """
    keys = {"motion": motion_name, "identity": identity_name}
    if differ not in keys:
        raise ValueError(f"differ must be one of {list(keys)}; got {differ!r}")
    other = keys["identity" if differ == "motion" else "motion"]
    a = sequences[first]
    cands = [j for j, s in enumerate(sequences) if keys[differ](s) != keys[differ](a)]
    if not cands:
        raise ValueError(f"no sequence has a different {differ} than {a!r} among {len(sequences)}")
    same = [j for j in cands if other(sequences[j]) == other(a)]
    return first, (same or cands)[0]


@torch.no_grad()
def encode_latent_table(model: Any, source: Any, *, batch_size: int = 16, progress: bool = False) -> LatentTable:
    """Posterior means (and stds) of z and z_t of every window of a dataset, with the trained model.

    Args:
        model: a generative (VAE) :class:`toolkit.oflow.model.OccupancyFlow` (``config.z_dim > 0``),
            with its trained weights (the original's script silently loaded untrained ones).
        source: a ``SequenceDataset`` (or any sized, indexable source) or an iterable of its items: dicts
            with ``inputs`` (L, N, 3), ``sequence`` (str) and ``start``.
        batch_size: windows per encoder call.
        progress: show a progress bar.

    Returns:
        A :class:`LatentTable` in the source's order.
    """
    z_dim = int(getattr(model.config, "z_dim", 0))
    if z_dim <= 0:
        raise ValueError("encode_latent_table needs a generative (VAE) model with z_dim > 0; "
                         f"this model has z_dim={z_dim} (use load_pretrained('generative'))")
    items: Iterable = (source[i] for i in range(len(source))) if hasattr(source, "__getitem__") and \
        hasattr(source, "__len__") and not isinstance(source, (list, tuple)) else source
    device = model_device(model)
    names, starts, zs, zts, zstd, ztstd = [], [], [], [], [], []
    batch: list[Mapping] = []

    def flush() -> None:
        inputs = torch.stack([torch.as_tensor(b["inputs"]) for b in batch]).to(device=device, dtype=torch.float32)
        q = model.encode_latent(inputs)
        zs.append(q.q_z.loc.cpu()), zts.append(q.q_z_t.loc.cpu())
        zstd.append(q.q_z.scale.cpu()), ztstd.append(q.q_z_t.scale.cpu())
        batch.clear()

    with eval_mode(model):
        for k, item in enumerate(_maybe_progress(items, progress, len(source) if hasattr(source, "__len__") else None)):
            for key in ("inputs", "sequence"):
                if key not in item:
                    raise KeyError(f"source item {k} has no {key!r}; keys: {sorted(item)}")
            names.append(str(item["sequence"]))
            starts.append(int(item.get("start", 0)))
            batch.append(item)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    if not names:
        raise ValueError("source is empty")
    cat = lambda xs: torch.cat(xs).numpy().astype(np.float32)
    return LatentTable(tuple(names), tuple(motion_name(n) for n in names), np.array(starts, np.int64),
                       cat(zs), cat(zts), cat(zstd), cat(ztstd))


def motion_embedding(codes: np.ndarray | Tensor, *, method: str = "pca", seed: int = 0,
                     perplexity: float | None = None) -> np.ndarray:
    """2D embedding of codes (S, Z) -> (S, 2): PCA, or t-SNE (perplexity 50 as the original, capped at
    (S - 1) / 3 so small tables work)."""
    if method not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {method!r}; valid: {list(EMBEDDINGS)}")
    x = codes.detach().cpu().numpy() if torch.is_tensor(codes) else np.asarray(codes)
    x = x.astype(np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"codes must be (S >= 3, Z); got shape {x.shape}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE

    p = min(50.0, max(1.0, (len(x) - 1) / 3.0)) if perplexity is None else float(perplexity)
    return TSNE(n_components=2, perplexity=p, random_state=seed, init="pca").fit_transform(x)


# ----------------------------------------------------------------------------------------------------
# Interpolation
# ----------------------------------------------------------------------------------------------------


def latent_codes(model: Any, z: np.ndarray | Tensor, z_t: np.ndarray | Tensor) -> Any:
    """``Codes`` of B items of a generative model from shape codes z and motion codes z_t, each (B, Z)
    or (Z,) (e.g. rows of a :class:`LatentTable`), for :func:`toolkit.oflow.generate.reconstruct`."""
    z, z_t = torch.as_tensor(np.asarray(z) if not torch.is_tensor(z) else z, dtype=torch.float32), \
        torch.as_tensor(np.asarray(z_t) if not torch.is_tensor(z_t) else z_t, dtype=torch.float32)
    z, z_t = (v[None] if v.ndim == 1 else v for v in (z, z_t))
    if z.shape[0] != z_t.shape[0]:
        raise ValueError(f"z and z_t must hold the same number of items; got {z.shape[0]} and {z_t.shape[0]}")
    z = torch.stack([_latent(model, v, "z") for v in z])
    z_t = torch.stack([_latent(model, v, "z_t") for v in z_t])
    return _vae_codes(model, z, z_t)



class Interpolation(NamedTuple):
    """Mesh sequences along a code path."""

    sequences: list[MeshSequence]
    """One mesh sequence per step (steps of a motion interpolation share the t=0 mesh and its faces)."""
    path: Tensor
    """(steps, Z) the interpolated codes (first and last are the end codes exactly)."""
    fixed: str
    """Which code was held fixed: ``"shape"`` (z) or ``"motion"`` (z_t)."""


@torch.no_grad()
def interpolate_motion(
    model: Any,
    z: Tensor,
    z_t_a: Tensor,
    z_t_b: Tensor,
    steps: int,
    *,
    mode: str = "linear",
    easing: str = "linear",
    times: Tensor | Sequence[float] | None = None,
    ode: str | ODEOptions | None = None,
    meshing: MeshingOptions | None = None,
    **settings: Any,
) -> Interpolation:
    """Interpolate between two motions with the shape code held fixed.

    The t=0 mesh depends on z only, so it is extracted ONCE and propagated with every intermediate z_t
    in one batched solve.

    Args:
        model: a generative (VAE) Occupancy Flow model.
        z: (Z,) the shape code kept fixed.
        z_t_a, z_t_b: (Z,) the end motion codes.
        steps: number of steps (>= 2), ends included.
        mode, easing: see :func:`toolkit.latent.interpolate_codes` ("linear" or "slerp").
        times, ode, meshing, **settings: as in :func:`toolkit.oflow.generate.reconstruct` (single meshing
            settings such as ``threshold`` or ``resolution0``, and single ODE options).
    """
    z, z_t_a, z_t_b = (_latent(model, v, name) for v, name in ((z, "z"), (z_t_a, "z_t_a"), (z_t_b, "z_t_b")))
    path = interpolate_codes(z_t_a, z_t_b, steps, mode=mode, easing=easing)
    mesh_opts, opts = query_settings(model, meshing, ode, **settings)
    device = model_device(model)
    times_t = frame_times(model, times, device)
    with eval_mode(model):
        mesh, timing, stats = extract_t0_mesh(model, _vae_codes(model, z[None], z_t_a[None]), meshing=mesh_opts)
        t = time.perf_counter()
        solve = SolveStats()
        codes = _vae_codes(model, z[None].expand(steps, -1), path)
        verts = propagate_vertices(model, codes, [mesh.vertices] * steps, times_t, ode=opts, stats=solve)
        t_prop = time.perf_counter() - t
    seqs = []
    for i in range(steps):
        # the one t=0 extraction is shared by every step: its cost is split evenly
        tm = {"encode": 0.0, **{k: v / steps for k, v in timing.items()}, "propagation": t_prop / steps}
        tm["total"] = sum(tm[k] for k in STAGES)
        seqs.append(MeshSequence(verts[i], mesh.faces, times_t.cpu().numpy().astype(np.float32), tm,
                                 {**stats, "nfe": solve.nfe}))
    return Interpolation(seqs, path, "shape")


@torch.no_grad()
def interpolate_shape(
    model: Any,
    z_a: Tensor,
    z_b: Tensor,
    z_t: Tensor,
    steps: int,
    *,
    mode: str = "linear",
    easing: str = "linear",
    **reconstruct_kwargs: Any,
) -> Interpolation:
    """Interpolate between two shapes with the motion code held fixed (one t=0 mesh per step).

    Args:
        z_a, z_b: (Z,) the end shape codes.
        z_t: (Z,) the motion code kept fixed.
        (others as in :func:`interpolate_motion`; ``**reconstruct_kwargs`` go to ``reconstruct``.)
    """
    z_a, z_b, z_t = (_latent(model, v, name) for v, name in ((z_a, "z_a"), (z_b, "z_b"), (z_t, "z_t")))
    path = interpolate_codes(z_a, z_b, steps, mode=mode, easing=easing)
    codes = _vae_codes(model, path, z_t[None].expand(steps, -1))
    return Interpolation(reconstruct(model, codes, **reconstruct_kwargs), path, "motion")


# ----------------------------------------------------------------------------------------------------
# Motion transfer
# ----------------------------------------------------------------------------------------------------


class Normalized(NamedTuple):
    vertices: np.ndarray
    """(V, 3) normalised vertices: bounding-box centre at 0, largest side 1."""
    loc: np.ndarray
    """(3,) bounding-box centre of the input (input = loc + scale * normalised)."""
    scale: float
    """largest bounding-box side of the input."""


def normalize_vertices(vertices: np.ndarray) -> Normalized:
    """Bounding-box centre to 0 and largest side to 1 (the original's normalisation of meshes for
    motion transfer and of every D-FAUST frame)."""
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"vertices must be (V >= 1, 3); got {v.shape}")
    lo, hi = v.min(0), v.max(0)
    loc, scale = 0.5 * (lo + hi), float((hi - lo).max())
    if scale <= 0:
        raise ValueError("vertices have zero extent")
    return Normalized(((v - loc) / scale).astype(np.float32), loc, scale)


@torch.no_grad()
def transfer_motion(
    model: Any,
    motion: Any,
    vertices: np.ndarray | Tensor,
    faces: np.ndarray | None = None,
    *,
    times: Tensor | Sequence[float] | None = None,
    ode: str | ODEOptions | None = None,
    **ode_overrides: Any,
) -> MeshSequence:
    """Carry a shape's vertices through a motion: the velocity field reads only the motion code.

    Args:
        model: an Occupancy Flow model.
        motion: the motion: a (Z,) or (1, Z) z_t tensor (generative models), or ``Codes`` of one item
            (any model: only c_t and z_t are read; c_s and z, the shape codes, are ignored).
        vertices: (V, 3) the shape's t=0 vertices in the motion's frame-0 normalised coordinates (see
            :func:`normalize_vertices`), posed like the motion's first frame for a meaningful result.
        faces: (F, 3) its faces, or None for a bare point set.
        times, ode, **ode_overrides: as in :func:`toolkit.oflow.generate.reconstruct`.

    Returns:
        A :class:`MeshSequence` (T, V, 3) whose frame 0 is ``vertices``.
    """
    from toolkit.oflow.model import Codes

    device = model_device(model)
    if isinstance(motion, Codes):
        if motion.c_t.shape[0] != 1:
            raise ValueError(f"motion codes must hold one item; got {motion.c_t.shape[0]}")
        codes = Codes(*(c.to(device) for c in motion))
    else:
        codes = _vae_codes(model, torch.zeros(1, int(model.config.z_dim), device=device),
                           _latent(model, motion, "motion")[None])
    v = vertices.detach().cpu().numpy() if torch.is_tensor(vertices) else np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3); got {v.shape}")
    f = np.zeros((0, 3), np.int64) if faces is None else np.asarray(faces, np.int64)
    if f.ndim != 2 or f.shape[1] != 3 or (len(f) and (f.min() < 0 or f.max() >= len(v))):
        raise ValueError(f"faces must be (F, 3) indices into the {len(v)} vertices; got shape {f.shape}")
    times_t = frame_times(model, times, device)
    t = time.perf_counter()
    solve = SolveStats()
    verts = propagate_vertices(model, codes, [v], times_t, ode=ode, stats=solve, **ode_overrides)[0]
    timing = {**dict.fromkeys(STAGES, 0.0), "propagation": time.perf_counter() - t}
    timing["total"] = timing["propagation"]
    return MeshSequence(verts, f, times_t.cpu().numpy().astype(np.float32), timing,
                        {"num_queries": 0, "faces_before_decimation": len(f), "nfe": solve.nfe})


class TransferCase(NamedTuple):
    """A motion-transfer problem on procedural bodies with its exact answer (frame-0 normalised units)."""

    mesh: Mesh
    """The target identity posed at the source window's first frame, in its own frame-0 normalisation."""
    points: np.ndarray
    """(T, N, 3) exact trajectories of N target surface points doing the source motion (points[0] on mesh)."""
    parts: np.ndarray
    """(N,) body part of each point (index into ``part_names``)."""
    source_points: np.ndarray
    """(T, N, 3) exact trajectories of N points of the source identity itself (its own normalisation)."""
    source_parts: np.ndarray
    """(N,) body part of each source point."""
    part_names: tuple[str, ...]
    """Names of the body parts."""
    times: np.ndarray
    """(T,) window times i / (T - 1)."""


def synthetic_transfer_case(source_dir: str | os.PathLike, target_dir: str | os.PathLike, *, start: int = 0,
                            length: int = 17, n_points: int = 2000, seed: int = 0,
                            mesh_resolution: int = 96) -> TransferCase:
    """Ground truth for transferring the motion of one synthetic sequence onto another's identity.

    The answer is the target identity performing the source's motion (same motion, period, phase and
    amplitude), built exactly by ``toolkit.synthetic.bodies``. Both sequences must come from
    ``write_body_dataset`` (they carry ``body.json``).

    Args:
        source_dir: sequence whose window ``start .. start + length - 1`` gives the motion.
        target_dir: sequence whose identity (body proportions) gives the shape.
        n_points: surface points whose trajectories are compared.
        seed: seed of the surface points.
        mesh_resolution: marching-cubes cells of the target mesh.
    """
    from toolkit.synthetic.bodies import PARTS, Body, load_body

    src = load_body(source_dir)
    tgt = load_body(target_dir)
    if start < 0 or start + length > src.frames:
        raise ValueError(f"window {start}..{start + length - 1} is outside the source's {src.frames} frames")
    body = Body.from_dict({**src.to_dict(), "identity": tgt.identity.to_dict()})
    frames = np.arange(start, start + length)

    def trajectories(b: Body) -> tuple[np.ndarray, np.ndarray]:
        norm = b.normalization(start)
        sample = b.surface_points(n_points, seed, frames=frames)
        pts = np.stack([(b.points_at(sample, f) - norm.loc) / norm.scale for f in frames]).astype(np.float32)
        return pts, sample.part

    norm = body.normalization(start)
    m = body.mesh(start, resolution=mesh_resolution)
    mesh = Mesh(((m.vertices - norm.loc) / norm.scale).astype(np.float32), m.faces)
    pts, parts = trajectories(body)
    src_pts, src_parts = trajectories(src)
    times = (np.arange(length) / max(length - 1, 1)).astype(np.float32)
    return TransferCase(mesh, pts, parts, src_pts, src_parts, tuple(PARTS), times)


class TrajectoryError(NamedTuple):
    """Distances between predicted and true point trajectories (input units; frame 0 excluded from means)."""

    per_frame: np.ndarray
    """(T,) mean distance per frame."""
    per_part: dict[str, float]
    """Mean distance over frames 1.. and the points of each part (parts with points only)."""
    mean: float
    """Mean distance over frames 1.. and all points."""


def trajectory_error(pred: np.ndarray, gt: np.ndarray, parts: np.ndarray | None = None,
                     part_names: Sequence[str] | None = None) -> TrajectoryError:
    """Per-frame and per-part mean Euclidean distance between corresponding trajectories.

    Args:
        pred, gt: (T, N, 3) trajectories, point k of ``pred`` corresponding to point k of ``gt``.
        parts: optional (N,) part index per point; ``part_names`` names them (default: the indices).
    """
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if p.shape != g.shape or p.ndim != 3 or p.shape[-1] != 3:
        raise ValueError(f"pred and gt must both be (T, N, 3); got {p.shape} and {g.shape}")
    d = np.linalg.norm(p - g, axis=-1)  # (T, N)
    later = d[1:] if len(d) > 1 else d
    per_part: dict[str, float] = {}
    if parts is not None:
        parts = np.asarray(parts)
        if parts.shape != (p.shape[1],):
            raise ValueError(f"parts must be (N,) = ({p.shape[1]},); got {parts.shape}")
        for k in np.unique(parts):
            name = part_names[int(k)] if part_names is not None else str(int(k))
            per_part[name] = float(later[:, parts == k].mean())
    return TrajectoryError(d.mean(axis=1), per_part, float(later.mean()))


# ----------------------------------------------------------------------------------------------------
# private
# ----------------------------------------------------------------------------------------------------


def _latent(model: Any, v: Any, name: str) -> Tensor:
    z_dim, c_dim = int(getattr(model.config, "z_dim", 0)), int(getattr(model.config, "c_dim", 0))
    if z_dim <= 0 or c_dim > 0:
        raise ValueError(f"{name}: latent interpolation and z_t motion codes need a generative (VAE) model "
                         f"(z_dim > 0, c_dim == 0); this one has z_dim={z_dim}, c_dim={c_dim}. For completion "
                         f"models pass Codes from model.encode(...) to transfer_motion")
    t = torch.as_tensor(v, dtype=torch.float32).to(model_device(model))
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.shape != (z_dim,):
        raise ValueError(f"{name} must have shape ({z_dim},); got {tuple(t.shape)}")
    return t


def _vae_codes(model: Any, z: Tensor, z_t: Tensor) -> Any:
    from toolkit.oflow.model import Codes

    empty = z.new_zeros(z.shape[0], 0)
    return Codes(empty, empty, z.contiguous(), z_t.contiguous(), empty)


def _maybe_progress(items, enabled: bool, total: int | None):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc="encoding")
