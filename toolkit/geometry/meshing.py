"""Mesh extraction from any point field: MISE refinement, marching cubes, semantic colouring, export.

Fields are point fields (:mod:`toolkit.geometry.fields`), ``f(xyz: (N, 3) tensor) -> (N,) tensor`` of
scalar values, "inside" where the value exceeds the level (occupancy logits, or SOF's foreground score).
How a surface is extracted is one validated :class:`MeshingOptions` (level, MISE lattice, box, chunk,
marching-cubes backend), built once where a user's knobs enter and passed down as it is; the field
supplies what the options leave open (its box, chunk and device). The grid spans a box; lattice index g
along an axis maps to ``lo + g * (hi - lo) / R`` for a grid of R cells (R + 1 lattice points), so lattice
points sit exactly on the box faces.

MISE (multiresolution iso-surface extraction, Occupancy Networks): evaluate a coarse lattice, mark the
cells whose corners straddle the threshold, subdivide only those, query only the new lattice points,
and repeat. Unlike the original's to_dense (copying the previous value along x, y, z), points never
queried are filled by trilinear interpolation from the coarser level; inside a cell whose corners all
lie on one side that interpolation stays on that side, so it cannot create spurious surfaces.

Marching cubes runs PyMCubes, or the Triton kernel of :mod:`toolkit.kernels.marching_cubes` (the same mesh),
chosen explicitly by ``impl`` ("auto": the kernel for fields on a GPU). Both give vertices in lattice-index
units with no half-cell offset (the original Occupancy Flow subtracted 0.5 for its vendored, modified copy:
not needed here); the closing pad and the map to world coordinates are done here, once, for both.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.geometry.fields import PointField
from toolkit.geometry.grids import Bounds, Box, box, evaluate_field
from toolkit.io import atomic_write


class Mesh(NamedTuple):
    vertices: np.ndarray
    """(V, 3) float world coordinates."""
    faces: np.ndarray
    """(F, 3) int64 vertex indices, counter-clockwise seen from outside."""
    vertex_labels: np.ndarray | None = None
    """(V,) int class ids (semantic meshes), or None."""
    vertex_colors: np.ndarray | None = None
    """(V, 3) uint8 colours, or None."""


class GridResult(NamedTuple):
    values: np.ndarray
    """(R+1, R+1, R+1) float32 field values on the final lattice (queried or interpolated)."""
    num_queries: int
    """Field evaluations spent."""
    queried: np.ndarray | None
    """(R+1,)*3 bool, True where the value was queried (None for dense evaluation)."""


class MeshResult(NamedTuple):
    mesh: Mesh
    grid: GridResult


MC_IMPLS = ("auto", "triton", "pymcubes")
"""Marching-cubes backends of :func:`marching_cubes`."""

DEFAULT_BOUNDS = 0.55
"""Half-size of the box of a field that declares none (the original Occupancy Flow's box 1 + padding 0.1)."""
DEFAULT_CHUNK = 262144
"""Points per field call of a field that declares no ``chunk``."""


@dataclass(frozen=True)
class MeshingOptions:
    """How a surface is extracted from a point field (MISE, then marching cubes), validated once.

    Build it where the knobs enter (``MeshingOptions(level=..., resolution0=...)``, or
    ``meshing_options(options, **knobs)``) and pass it down; ``replace(**changes)`` validates again.
    """

    level: float = 0.0
    """The isovalue in the field's own values, "inside" above it: a logit for occupancy logits (Occupancy
    Flow's probability 0.3 is the level log(0.3 / 0.7)), 0 for SOF's scores."""
    resolution0: int = 32
    """Cells per axis of the coarse lattice, evaluated densely."""
    upsampling_steps: int = 2
    """MISE refinements; the final grid has ``resolution0 * 2**upsampling_steps`` cells (0: dense)."""
    bounds: Bounds | None = None
    """The box (parsed to a :class:`toolkit.geometry.grids.Box`); None: the field's ``bounds``, else
    :data:`DEFAULT_BOUNDS`."""
    chunk: int | None = None
    """Points per field call; None: the field's ``chunk``, else :data:`DEFAULT_CHUNK`."""
    impl: str = "auto"
    """Marching-cubes backend (:data:`MC_IMPLS`; see :func:`marching_cubes`)."""
    close: bool = True
    """Pad the lattice with an outside value so surfaces cut by the box are closed (watertight)."""

    def __post_init__(self):
        _check_options(self)
        if self.bounds is not None:
            object.__setattr__(self, "bounds", box(self.bounds))

    @property
    def resolution(self) -> int:
        """Cells per axis of the final grid."""
        return self.resolution0 * 2 ** self.upsampling_steps

    def replace(self, **changes: Any) -> MeshingOptions:
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    def box_for(self, field) -> Box:
        """The box of ``field``'s mesh: these options', the field's, or the default."""
        own = getattr(field, "bounds", None)
        return box(self.bounds if self.bounds is not None else own if own is not None else DEFAULT_BOUNDS)

    def chunk_for(self, field) -> int:
        """Points per call of ``field``: these options', the field's, or the default."""
        return self.chunk or getattr(field, "chunk", None) or DEFAULT_CHUNK


MESHING_KNOBS = ("threshold", "level", "resolution0", "upsampling_steps", "bounds", "chunk", "impl", "close")
"""Keywords :func:`meshing_options` accepts (``threshold`` is the level, the name these functions always took)."""


def meshing_options(options: MeshingOptions | None = None, **knobs: Any) -> MeshingOptions:
    """``options`` (default ``MeshingOptions()``) with loose keyword knobs applied, validated once.

    Raises:
        TypeError: an unknown knob (the message lists the valid ones), or both threshold and level.
        ValueError: an invalid value.
    """
    unknown = sorted(set(knobs) - set(MESHING_KNOBS))
    if unknown:
        raise TypeError(f"unknown meshing option(s) {unknown}; valid: {list(MESHING_KNOBS)}")
    if "threshold" in knobs:
        if "level" in knobs:
            raise TypeError("give the level once: threshold (its old name) or level, not both")
        knobs["level"] = knobs.pop("threshold")
    options = options if options is not None else MeshingOptions()
    return options.replace(**knobs) if knobs else options


def dense_grid(field: PointField, options: MeshingOptions | None = None, *, resolution: int | None = None,
               device: torch.device | str | None = None, **knobs: Any) -> GridResult:
    """Evaluate ``field`` on every lattice point of an R^3-cell grid (for comparison with MISE).

    Args:
        field: a point field (any callable on (N, 3) points).
        options: the box and chunk (:class:`MeshingOptions`); the grid has ``options.resolution`` cells.
        resolution: R, cells per axis, instead of the options' (default 128 when neither gives one).
        device: where the field runs (default: the field's ``device``).
        **knobs: single options (see :func:`meshing_options`).
    """
    if resolution is None and options is None and "resolution0" not in knobs:
        resolution = 128
    if resolution is not None:
        knobs.update(resolution0=int(resolution), upsampling_steps=0)
    opts = meshing_options(options, **knobs)
    lo, hi = opts.box_for(field)
    n = opts.resolution + 1
    chunk, device = opts.chunk_for(field), _device(field, device)
    values = np.empty((n, n, n), dtype=np.float32)
    # Slab by slab along x so memory stays bounded at high resolution.
    ys = torch.linspace(lo[1], hi[1], n, device=device)
    zs = torch.linspace(lo[2], hi[2], n, device=device)
    yz = torch.stack(torch.meshgrid(ys, zs, indexing="ij"), -1).reshape(-1, 2)
    for i, x in enumerate(torch.linspace(lo[0], hi[0], n).tolist()):
        pts = torch.cat([torch.full_like(yz[:, :1], x), yz], dim=1)
        values[i] = evaluate_field(field, pts, chunk=chunk).reshape(n, n).float().cpu().numpy()
    return GridResult(values, n ** 3, None)


def mise_grid(field: PointField, options: MeshingOptions | None = None, *,
              device: torch.device | str | None = None, **knobs: Any) -> GridResult:
    """Multiresolution evaluation of ``field``: final grid of ``options.resolution`` cells.

    Args:
        field: a point field (any callable on (N, 3) points).
        options: level, lattice, box and chunk (:class:`MeshingOptions`; default ``MeshingOptions()``).
        device: where the field runs (default: the field's ``device``).
        **knobs: single options (see :func:`meshing_options`: threshold, resolution0, ...).

    Returns the final lattice values; points not queried are trilinear interpolations of the coarser
    level (see the module docstring). Memory is a few bytes per final lattice point, never C values
    per point: 512^3 cells take about 0.7 GB.
    """
    opts = meshing_options(options, **knobs)
    threshold, chunk, device = opts.level, opts.chunk_for(field), _device(field, device)
    lo, hi = opts.box_for(field)
    lo_t, span = torch.tensor(lo), torch.tensor(hi) - torch.tensor(lo)

    def query(index: torch.Tensor, res: int) -> torch.Tensor:
        pts = lo_t + index.float() * (span / res)
        return evaluate_field(field, pts.to(device) if device else pts, chunk=chunk).float().cpu()

    res = opts.resolution0
    n = res + 1
    idx = torch.stack(torch.meshgrid(*(torch.arange(n),) * 3, indexing="ij"), -1).reshape(-1, 3)
    values = query(idx, res).reshape(n, n, n)
    num_queries = n ** 3
    queried = torch.ones(n, n, n, dtype=torch.bool)
    for _ in range(opts.upsampling_steps):
        # Cells whose 8 corners straddle the threshold.
        v = values[None, None]
        cell_max = F.max_pool3d(v, 2, stride=1)[0, 0]
        cell_min = -F.max_pool3d(-v, 2, stride=1)[0, 0]
        active = (cell_max >= threshold) & (cell_min <= threshold)
        # Next level: interpolate everything, then query the lattice points of subdivided active cells.
        res, n = res * 2, res * 2 + 1
        values = F.interpolate(values[None, None], size=(n, n, n), mode="trilinear", align_corners=True)[0, 0]
        sub_active = active.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)
        needed = F.max_pool3d(F.pad(sub_active[None, None].float(), (1, 1, 1, 1, 1, 1)), 2, stride=1)[0, 0] > 0
        known = torch.zeros(n, n, n, dtype=torch.bool)
        known[::2, ::2, ::2] = queried
        todo = needed & ~known
        todo_idx = todo.nonzero()
        if len(todo_idx):
            values[todo] = query(todo_idx, res)
        num_queries += len(todo_idx)
        queried = known | todo
        del v, cell_max, cell_min, active, sub_active, needed, known, todo
    return GridResult(values.numpy(), num_queries, queried.numpy())


def marching_cubes(values: np.ndarray | torch.Tensor, threshold: float = 0.0, *, bounds: Bounds = 0.55,
                   close: bool = True, impl: str = "auto", device: torch.device | str | None = None) -> Mesh:
    """Triangle mesh of the ``threshold`` level set of a lattice (values > threshold are inside).

    Args:
        values: (Rx+1, Ry+1, Rz+1) lattice values over ``bounds`` (numpy, or a tensor on any device).
        threshold: the level, in the values' own units (an isovalue: a logit for occupancy logits).
        bounds: the box of the lattice (:data:`toolkit.geometry.grids.Bounds`).
        close: pad with an outside value so surfaces cut by the box are closed (watertight).
        impl: "pymcubes" (PyMCubes, on the CPU), "triton" (the kernel of :mod:`toolkit.kernels.marching_cubes`:
            the same mesh, on ``device``) or "auto": triton when ``device`` is CUDA and the kernel can run
            there (else PyMCubes, with one warning giving the reason), PyMCubes on any other device.
        device: where the lattice's field lives (default: the values' device); triton runs there.

    Returns:
        Mesh(vertices (V, 3) float32 world coordinates, faces (F, 3) int64), numpy arrays.
    """
    b = box(bounds)
    device = torch.device(device) if device is not None else (
        values.device if isinstance(values, torch.Tensor) else torch.device("cpu"))
    backend = _mc_backend(impl, device)
    shape = tuple(values.shape)
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"values must be a (Rx+1, Ry+1, Rz+1) lattice with at least 2 points per axis; "
                         f"got shape {shape}")
    if backend == "pymcubes":
        verts, faces = _pymcubes(values, threshold, close)
    else:
        verts, faces = _triton(values, threshold, close, device)
    # Lattice-index units (the pad shifts them by one) -> world coordinates of the box.
    res = np.array(shape) - 1
    lo, hi = np.array(b.lo), np.array(b.hi)
    verts = (verts - (1 if close else 0)) * ((hi - lo) / res) + lo
    # Padding vertices could fall a hair outside the box: clamp them back onto its faces.
    verts = np.clip(verts, lo, hi)
    return Mesh(verts.astype(np.float32), faces.astype(np.int64))


def extract_mesh(field: PointField, options: MeshingOptions | None = None, *,
                 device: torch.device | str | None = None, **knobs: Any) -> MeshResult:
    """MISE then marching cubes: the ``options.level`` surface of ``field`` (0 refinement steps = dense).

    Args:
        field: a point field (any callable on (N, 3) points); its ``device`` also picks the
            marching-cubes kernel when ``options.impl`` is "auto".
        options: :class:`MeshingOptions` (default ``MeshingOptions()``).
        device: where the field runs (default: the field's ``device``).
        **knobs: single options (see :func:`meshing_options`: threshold, bounds, resolution0, ...).
    """
    opts = meshing_options(options, **knobs)
    device = _device(field, device)
    grid = mise_grid(field, opts, device=device)
    mesh = marching_cubes(grid.values, opts.level, bounds=opts.box_for(field), close=opts.close, impl=opts.impl,
                          device=device)
    return MeshResult(mesh, grid)


def label_vertices(mesh: Mesh, label_field: Callable[[torch.Tensor], torch.Tensor], *, palette: np.ndarray,
                   inset: float = 0.0, chunk: int = 262144) -> Mesh:
    """Attach class labels and palette colours to a mesh's vertices.

    Args:
        label_field: (N, 3) -> (N,) class ids, or (N, C) logits (argmax is taken).
        palette: (C, 3) uint8 colours.
        inset: move each vertex this far against its normal before querying, so the label comes from
            just inside the surface rather than from the boundary itself.
    """
    verts = mesh.vertices
    if inset:
        import trimesh

        normals = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).vertex_normals
        verts = verts - inset * normals
    out = evaluate_field(label_field, torch.as_tensor(np.asarray(verts, dtype=np.float32)), chunk=chunk)
    labels = (out.argmax(-1) if out.dim() == 2 else out).long().cpu().numpy()
    return mesh._replace(vertex_labels=labels, vertex_colors=np.asarray(palette, dtype=np.uint8)[labels])


def mesh_stats(mesh: Mesh) -> dict:
    """Vertex/face counts, area, volume, watertightness and connected components of a mesh."""
    import trimesh

    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    return {"vertices": len(mesh.vertices), "faces": len(mesh.faces), "area": float(tm.area),
            "volume": float(tm.volume) if tm.is_watertight else float("nan"),
            "watertight": bool(tm.is_watertight), "components": len(tm.split(only_watertight=False))}


def save_mesh(path: str | os.PathLike, mesh: Mesh) -> None:
    """Write a mesh as binary PLY, OBJ or NPZ (by extension), atomically; vertex colours are kept."""
    import trimesh

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        arrays = {"vertices": mesh.vertices, "faces": mesh.faces}
        if mesh.vertex_labels is not None:
            arrays["vertex_labels"] = mesh.vertex_labels
        if mesh.vertex_colors is not None:
            arrays["vertex_colors"] = mesh.vertex_colors
        with atomic_write(path) as f:
            np.savez_compressed(f, **arrays)
        return
    if ext not in (".ply", ".obj"):
        raise ValueError(f"{path}: unsupported mesh format {ext!r}; valid: .ply, .obj, .npz")
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=mesh.vertex_colors, process=False)
    data = tm.export(file_type=ext[1:])
    with atomic_write(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def load_mesh(path: str | os.PathLike) -> Mesh:
    """Read a mesh written by :func:`save_mesh` (or any PLY/OBJ trimesh reads)."""
    import trimesh

    from toolkit.io import DataError, load_npz

    path = os.fspath(path)
    if path.endswith(".npz"):
        d = load_npz(path, required=("vertices", "faces"))
        return Mesh(d["vertices"], d["faces"].astype(np.int64), d.get("vertex_labels"), d.get("vertex_colors"))
    if not os.path.isfile(path):
        raise DataError(path, "file not found")
    try:
        tm = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:
        raise DataError(path, f"unreadable mesh ({exc})") from exc
    colors = None
    if getattr(tm.visual, "kind", None) == "vertex":
        colors = np.asarray(tm.visual.vertex_colors)[:, :3]
    return Mesh(np.asarray(tm.vertices, dtype=np.float32), np.asarray(tm.faces, dtype=np.int64), None, colors)


# ----------------------------------------------------------------------------------------------------
# private
# ----------------------------------------------------------------------------------------------------


def _device(field, device) -> torch.device | None:
    device = device if device is not None else getattr(field, "device", None)
    return None if device is None else torch.device(device)


def _check_options(o: MeshingOptions) -> None:
    if isinstance(o.resolution0, bool) or not isinstance(o.resolution0, int) or o.resolution0 < 1:
        raise ValueError(f"resolution0 must be an int >= 1; got {o.resolution0!r}")
    if isinstance(o.upsampling_steps, bool) or not isinstance(o.upsampling_steps, int) or o.upsampling_steps < 0:
        raise ValueError(f"upsampling_steps must be an int >= 0; got {o.upsampling_steps!r}")
    if o.chunk is not None and (not isinstance(o.chunk, int) or o.chunk < 1):
        raise ValueError(f"chunk must be a positive int or None; got {o.chunk!r}")
    if o.impl not in MC_IMPLS:
        raise ValueError(f'unknown marching-cubes implementation "{o.impl}"; valid: {list(MC_IMPLS)}')
    if not np.isfinite(float(o.level)):
        raise ValueError(f"level must be a finite number; got {o.level!r}")


def _mc_backend(impl: str, device: torch.device) -> str:
    if impl not in MC_IMPLS:
        raise ValueError(f'unknown marching-cubes implementation "{impl}"; valid: {list(MC_IMPLS)}')
    if impl != "auto":
        return impl
    if device.type != "cuda":
        return "pymcubes"
    from toolkit.kernels import _dispatch

    reason = _dispatch.triton_unavailable_reason(torch.empty(0, device=device))
    if reason is None:
        return "triton"
    if reason not in _MC_WARNED:
        _MC_WARNED.add(reason)
        warnings.warn(f"marching_cubes: using PyMCubes because {reason}", stacklevel=3)
    return "pymcubes"


_MC_WARNED: set[str] = set()


def _pymcubes(values, threshold: float, close: bool) -> tuple[np.ndarray, np.ndarray]:
    import mcubes

    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    vol = np.asarray(values, dtype=np.float32)  # PyMCubes takes float32: half the memory of a float64 copy
    if close:
        vol = np.pad(vol, 1, mode="constant", constant_values=min(threshold - 1e6, vol.min() - 1.0))
    return mcubes.marching_cubes(vol, threshold)


def _triton(values, threshold: float, close: bool, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    from toolkit.kernels.marching_cubes import marching_cubes as mc_kernel

    vol = torch.as_tensor(values, device=device)
    if close:
        # The same pad value as the PyMCubes path: far below both the threshold and every value.
        pad = min(threshold - 1e6, float(vol.min()) - 1.0)
        vol = F.pad(vol[None], (1, 1, 1, 1, 1, 1), value=pad)[0]
    out = mc_kernel(vol, threshold)
    return out.vertices.double().cpu().numpy(), out.faces.cpu().numpy()
