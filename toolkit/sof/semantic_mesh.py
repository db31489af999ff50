"""Semantic meshes of a SOF field: the foreground surface coloured by class, and one surface per class.

A semantic field maps (N, 3) world points to (N, C) class logits: a learned model with its code bound
(:func:`toolkit.sof.render.bind_code`, or pass ``(model, code)``) or the synthetic ground truth
(``SyntheticHead.logits``). Every function here reduces the C logits of each chunk of points to ONE
scalar straight away, and meshing (:func:`toolkit.geometry.meshing.extract_mesh`: MISE refinement +
marching cubes) keeps one float per lattice point. A 512^3 grid therefore costs about 0.5 GB of lattice
values instead of the original VolRender's dense 512^3 x 20 probability volume (about 10.7 GB, sof.md 5).

Scalar scores ("inside" where the score exceeds ``threshold``, 0 by default):

- foreground: ``max_{c >= 1} p_c - p_0`` on the softmax ("probability"), or the logit margin
  ``max_{c >= 1} l_c - l_0`` ("logit"). Both are positive exactly where a foreground class beats the
  background, so their zero sets coincide. The original thresholded ``p_0 - max_{c>=1} p_c`` at -0.5
  (TestAll), i.e. this score at +0.5.
- class c: ``p_c - max_{c' != c} p_{c'}`` (or the logit margin): positive where c is the argmax.

Unlike the original, the grid maps to world coordinates with the exact lattice step (it used k / D for
k / (D - 1)) and does not depend on a camera: the box is given in world units (sof.md 7.1 item 11).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Self

import numpy as np
import torch

from toolkit.geometry.fields import FunctionField, PointField
from toolkit.geometry.grids import evaluate_field
from toolkit.geometry.meshing import (
    GridResult,
    Mesh,
    MeshingOptions,
    extract_mesh,
    label_vertices,
    marching_cubes,
)
from toolkit.sof.render import FIELD_BOUNDS, bind_code

SCORES = ("probability", "logit")
DEFAULT_BOUNDS = FIELD_BOUNDS
"""Half-size of the default meshing box: the ray-marching sphere (radius 1.5) fits inside it."""


class SemanticMeshResult(NamedTuple):
    mesh: Mesh
    """The surface, with ``vertex_labels`` (class ids) and ``vertex_colors`` (palette) set."""
    grid: GridResult
    """Final lattice values and the number of field queries MISE spent."""
    seconds: float
    """Wall time of the extraction (grid, marching cubes and vertex labels)."""
    peak_memory: int
    """Peak resident memory above the level at the start, in bytes (see :class:`PeakMemory`)."""


# ----------------------------------------------------------------------------------------------------
# Scalar fields
# ----------------------------------------------------------------------------------------------------

def as_logit_field(source, code: torch.Tensor | np.ndarray | None = None) -> PointField:
    """A callable (N, 3) -> (N, C) logits from a field, or from a SOF model plus one code.

    Args:
        source: any logit field (callable), or a :class:`toolkit.sof.SOFModel` (then ``code`` is required).
        code: (L,) latent code bound to the model.
    """
    from toolkit.sof.model import SOFModel

    if isinstance(source, SOFModel):
        if code is None:
            raise ValueError("a SOF model needs a code: pass code=model.embedding(i)[0] or a sampled code")
        return bind_code(source, code)
    if code is not None:
        raise ValueError("code is only meaningful with a SOF model; this field has its code bound already")
    if not callable(source):
        raise TypeError(f"expected a callable field or a SOFModel; got {type(source).__name__}")
    return source


def foreground_score(logits: torch.Tensor, *, score: str = "probability") -> torch.Tensor:
    """Foreground score of logits (N, C) -> (N,): positive where a class >= 1 beats the background 0."""
    _check_score(score)
    logits = logits.float()
    values = torch.softmax(logits, dim=-1) if score == "probability" else logits
    return values[:, 1:].max(dim=-1).values - values[:, 0]


def class_score(logits: torch.Tensor, class_id: int, *, score: str = "probability") -> torch.Tensor:
    """Score of class ``class_id`` for logits (N, C) -> (N,): positive where it is the argmax."""
    _check_score(score)
    C = logits.shape[-1]
    if not 0 <= class_id < C:
        raise ValueError(f"class_id {class_id} is not in 0..{C - 1}")
    logits = logits.float()
    values = torch.softmax(logits, dim=-1) if score == "probability" else logits
    others = torch.cat([values[:, :class_id], values[:, class_id + 1:]], dim=-1)
    return values[:, class_id] - others.max(dim=-1).values


def foreground_field(source, code=None, *, score: str = "probability") -> PointField:
    """Scalar field (N, 3) -> (N,) of :func:`foreground_score`, reduced chunk by chunk (the logit field's
    box, device and chunk size carry over)."""
    field = as_logit_field(source, code)
    _check_score(score)
    return _like(field, lambda xyz: foreground_score(field(xyz), score=score))


def class_field(source, class_id: int, code=None, *, score: str = "probability") -> PointField:
    """Scalar field (N, 3) -> (N,) of :func:`class_score` for one class (box, device and chunk carry over)."""
    field = as_logit_field(source, code)
    _check_score(score)
    return _like(field, lambda xyz: class_score(field(xyz), class_id, score=score))


def foreground_labels(source, code=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Label field (N, 3) -> (N,): the most likely FOREGROUND class (argmax over classes >= 1).

    Used to colour the foreground surface, where background and foreground are tied by construction.
    """
    field = as_logit_field(source, code)
    return lambda xyz: field(xyz)[:, 1:].argmax(dim=-1) + 1


# ----------------------------------------------------------------------------------------------------
# Meshes
# ----------------------------------------------------------------------------------------------------

def semantic_mesh(source, code=None, *, resolution: int = 256, resolution0: int = 32,
                  bounds: float | Sequence[Sequence[float]] = DEFAULT_BOUNDS, threshold: float = 0.0,
                  score: str = "probability", label_set: str = "sof20", chunk: int = 65536,
                  device=None) -> SemanticMeshResult:
    """The foreground surface of a semantic field, each vertex labelled and coloured by its class.

    Args:
        source, code: a logit field, or a SOF model and one code (see :func:`as_logit_field`).
        resolution: cells per axis of the final grid; ``resolution0 * 2**k`` (MISE refines k times).
        resolution0: cells per axis of the coarse grid evaluated densely.
        bounds: half-size of the cube, or ((xmin, xmax), (ymin, ymax), (zmin, zmax)), world units.
        threshold: level of the foreground score (0: foreground beats background; 0.5 is the original's -0.5).
        score: "probability" or "logit" (see the module docstring).
        chunk: points per field call; at most ``chunk x C`` logits exist at any time.
    Returns:
        SemanticMeshResult(mesh, grid, seconds, peak_memory).
    """
    from toolkit.labels import get_label_set

    options = _options(resolution, resolution0, bounds, threshold, chunk)
    field = as_logit_field(source, code)
    with PeakMemory() as mem:
        start = time.perf_counter()
        result = extract_mesh(foreground_field(field, score=score), options, device=device)
        mesh = result.mesh
        if len(mesh.vertices):
            mesh = label_vertices(mesh, foreground_labels(field), palette=get_label_set(label_set).palette,
                                  chunk=chunk)
        else:  # no foreground anywhere: an empty mesh, still with (empty) labels and colours
            mesh = mesh._replace(vertex_labels=np.zeros(0, np.int64),
                                 vertex_colors=np.zeros((0, 3), np.uint8))
        seconds = time.perf_counter() - start
    return SemanticMeshResult(mesh, result.grid, seconds, mem.peak)


extract_semantic_mesh = semantic_mesh
""":func:`semantic_mesh` under the name ``toolkit.sof`` exports it by (there ``semantic_mesh`` is this module)."""


def class_meshes(source, code=None, *, classes: Sequence[int] | None = None, resolution: int = 128,
                 resolution0: int = 32, bounds: float | Sequence[Sequence[float]] = DEFAULT_BOUNDS,
                 threshold: float = 0.0, score: str = "probability", label_set: str = "sof20",
                 chunk: int = 65536, device=None) -> dict[int, Mesh]:
    """One surface per class: the boundary of the region where that class is the argmax.

    Args:
        classes: class ids to mesh (default: every foreground class that is the argmax somewhere on the
            coarse ``resolution0`` grid).
        Others: as :func:`semantic_mesh`.
    Returns:
        {class id: Mesh with constant vertex labels and palette colours}, classes with an empty surface
        left out.
    """
    from toolkit.labels import get_label_set

    options = _options(resolution, resolution0, bounds, threshold, chunk)
    field = as_logit_field(source, code)
    palette = get_label_set(label_set).palette
    if classes is None:
        classes = present_classes(field, bounds=bounds, resolution=resolution0, chunk=chunk)
        classes = [c for c in classes if c != 0]
    out = {}
    for c in classes:
        mesh = extract_mesh(class_field(field, int(c), score=score), options, device=device).mesh
        if len(mesh.faces):
            labels = np.full(len(mesh.vertices), int(c), dtype=np.int64)
            out[int(c)] = mesh._replace(vertex_labels=labels, vertex_colors=palette[labels])
    return out


def dense_class_meshes(source, code=None, *, classes: Sequence[int] | None = None, resolution: int = 48,
                       bounds: float | Sequence[Sequence[float]] = DEFAULT_BOUNDS, score: str = "probability",
                       label_set: str = "sof20", chunk: int = 65536) -> dict[int, Mesh]:
    """Like :func:`class_meshes`, from ONE dense evaluation of all C logits (fast for small grids).

    Holds (R+1)^3 x C logits, so keep ``resolution`` small (48: 2.3 M values); for fine meshes use
    :func:`class_meshes`, which keeps one scalar per lattice point.
    """
    from toolkit.geometry.grids import grid_points
    from toolkit.labels import get_label_set

    _check_score(score)
    field = as_logit_field(source, code)
    n = resolution + 1
    logits = evaluate_field(field, grid_points(bounds, n), chunk=chunk).float().cpu()
    labels = logits.argmax(-1)
    if classes is None:
        classes = [int(c) for c in torch.unique(labels) if c != 0]
    palette = get_label_set(label_set).palette
    out = {}
    for c in classes:
        values = class_score(logits, int(c), score=score).reshape(n, n, n).numpy()
        mesh = marching_cubes(values, 0.0, bounds=bounds)
        if len(mesh.faces):
            lab = np.full(len(mesh.vertices), int(c), dtype=np.int64)
            out[int(c)] = mesh._replace(vertex_labels=lab, vertex_colors=palette[lab])
    return out


def present_classes(source, code=None, *, bounds: float | Sequence[Sequence[float]] = DEFAULT_BOUNDS,
                    resolution: int = 32, chunk: int = 65536) -> list[int]:
    """Class ids that are the argmax at some point of a (resolution + 1)^3 lattice, in increasing order."""
    from toolkit.geometry.grids import grid_points

    field = as_logit_field(source, code)
    seen = torch.zeros(0, dtype=torch.long)
    pts = grid_points(bounds, resolution + 1)
    for i in range(0, len(pts), chunk):
        seen = torch.unique(torch.cat([seen, field(pts[i:i + chunk]).argmax(-1).cpu()]))
    return [int(c) for c in seen]


def merge_meshes(meshes: Sequence[Mesh]) -> Mesh:
    """Concatenate meshes (vertex labels and colours kept when every mesh has them)."""
    meshes = [m for m in meshes if len(m.vertices)]
    if not meshes:
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    verts = np.concatenate([m.vertices for m in meshes])
    faces = np.concatenate([m.faces + o for m, o in zip(meshes, offsets)])
    labels = np.concatenate([m.vertex_labels for m in meshes]) if all(
        m.vertex_labels is not None for m in meshes) else None
    colors = np.concatenate([m.vertex_colors for m in meshes]) if all(
        m.vertex_colors is not None for m in meshes) else None
    return Mesh(verts, faces, labels, colors)


def label_histogram(mesh: Mesh, label_set: str = "sof20") -> dict[str, int]:
    """Vertices per class name of a labelled mesh, most frequent first."""
    from toolkit.labels import get_label_set

    if mesh.vertex_labels is None:
        raise ValueError("the mesh has no vertex labels (use semantic_mesh or meshing.label_vertices)")
    names = get_label_set(label_set).names
    counts = np.bincount(np.asarray(mesh.vertex_labels, dtype=np.int64), minlength=len(names))
    order = np.argsort(-counts, kind="stable")
    return {names[c]: int(counts[c]) for c in order if counts[c]}


# ----------------------------------------------------------------------------------------------------
# Peak memory
# ----------------------------------------------------------------------------------------------------

class PeakMemory:
    """Context manager measuring the peak resident memory (RSS) of this process above its start level.

    A background thread samples ``/proc/self/statm`` every ``interval`` seconds (tensors allocated by
    torch are invisible to tracemalloc, so RSS is what counts). Where /proc is unavailable it falls back
    to ``resource.getrusage`` (ru_maxrss, a process-lifetime maximum: only growth beyond earlier peaks
    is seen). ``peak`` is in bytes.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._start = _rss_bytes()
        self._max = self._start
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, _rss_bytes())
        self.peak = max(0, self._max - self._start)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._max = max(self._max, _rss_bytes())


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------

def _check_score(score: str) -> None:
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; valid: {list(SCORES)}")


def _like(field, fn) -> FunctionField:
    return FunctionField(fn, bounds=getattr(field, "bounds", None), device=getattr(field, "device", None),
                         chunk=getattr(field, "chunk", None))


def _options(resolution: int, resolution0: int, bounds, threshold: float, chunk: int) -> MeshingOptions:
    """The meshing options of a semantic mesh (``resolution`` must be ``resolution0`` times a power of 2)."""
    return MeshingOptions(level=threshold, resolution0=resolution0,
                          upsampling_steps=_upsampling_steps(resolution, resolution0), bounds=bounds, chunk=chunk)


def _upsampling_steps(resolution: int, resolution0: int) -> int:
    if resolution0 < 1 or resolution < resolution0:
        raise ValueError(f"need 1 <= resolution0 <= resolution; got resolution0={resolution0}, "
                         f"resolution={resolution}")
    steps = round(float(np.log2(resolution / resolution0)))
    if resolution0 * 2 ** steps != resolution:
        raise ValueError(f"resolution {resolution} must be resolution0 ({resolution0}) times a power of 2")
    return steps

