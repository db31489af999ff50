"""Marching cubes on the GPU, giving exactly PyMCubes' mesh: same vertices, same triangles, same order.

Marching cubes (Lorensen & Cline, SIGGRAPH 1987) turns a lattice of values into the triangle mesh of one
level set. Conventions, all PyMCubes' (``mcubes.marching_cubes(volume, isovalue)``):

- values: (X, Y, Z), lattice point (i, j, k) at index [i, j, k]; vertices come out in lattice-index units.
- a point is above when its value is > the isovalue, which is first rounded to float32, as PyMCubes takes
  it as a C float; a vertex sits on a crossed edge at the linear interpolation t = (iso - v0) / (v1 - v0).
- cells are visited in C order (x slowest), and vertices are numbered in the order PyMCubes creates them,
  so vertex and face arrays equal PyMCubes' (vertices to float rounding, faces exactly).
- triangles are wound as PyMCubes winds them (see _mc_tables for the table and where it comes from).

What runs where, for CUDA tensors:

1. Triton, one program per block of cells: the case of every cell (8 corner loads), its triangle count
   and the number of vertices it creates (crossed edges it owns: the first cell in C order touching an
   edge creates its vertex).
2. torch on the GPU: ``nonzero`` lists the active cells, ``cumsum`` gives each cell's first vertex and
   each active cell's first face (the compaction; this step syncs once to size the outputs).
3. Triton, one program per block of active cells: the vertices a cell owns, interpolated, and its
   triangles, whose corner vertices are found arithmetically from the edge's owner cell (its case,
   its first vertex and a popcount), so no (3 x points) edge-to-vertex map is ever stored.

:func:`marching_cubes_reference` runs the same steps as vectorised PyTorch on any device. Results stay in
lattice-index units: world coordinates, the closing pad and the choice between this kernel and PyMCubes
belong to ``toolkit.geometry.meshing.marching_cubes`` (``impl="auto" | "triton" | "pymcubes"``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.kernels import _dispatch
from toolkit.kernels._mc_tables import EDGES, tables

# Cells per program (classify, emit): the interpreter pays per operation, not per element, so it wants
# few, large programs; on the GPU (8 warps each) the emit kernel works on 64 cells x 16 lanes, and both
# stay near 64-110 registers a thread on sm_90 without spilling.
_CUDA_BLOCK = (1024, 64)
_CUDA_WARPS = 8
_INTERPRETER_BLOCK = (1 << 16, 1 << 12)


class MarchingCubesResult(NamedTuple):
    """A triangle mesh in lattice-index units."""

    vertices: torch.Tensor
    """(V, 3) vertex positions, in the values' dtype, on their device."""
    faces: torch.Tensor
    """(F, 3) int64 vertex indices, wound as PyMCubes winds them."""


def marching_cubes(values: torch.Tensor, isovalue: float = 0.0) -> MarchingCubesResult:
    """The ``isovalue`` level set of a lattice, by the Triton kernels (the mesh PyMCubes gives).

    Args:
        values: (X, Y, Z) lattice values, float32 or float64 (other dtypes are converted to float32). A
            lattice with fewer than 2 points along an axis has no cells and gives an empty mesh.
        isovalue: the level; points with values > isovalue are above it.

    Returns:
        MarchingCubesResult(vertices (V, 3) in lattice-index units, faces (F, 3) int64).

    Raises:
        ValueError: ``values`` is not 3-dimensional.
        RuntimeError: the kernels cannot run here (no CUDA tensor and TRITON_INTERPRET unset, or no triton).
    """
    vol, iso = _check_inputs(values, isovalue)
    _dispatch.require_triton("marching_cubes", vol)
    from toolkit.kernels._mc_triton import mc_classify_kernel, mc_emit_kernel

    nx, ny, nz = (s - 1 for s in vol.shape)
    if min(nx, ny, nz) < 1:
        return _empty(vol)
    tab = tables(vol.device)
    interpret = _dispatch.interpret_requested()
    block_cells, block_active = _INTERPRETER_BLOCK if interpret else _CUDA_BLOCK
    c = nx * ny * nz
    if interpret:
        block_cells = min(block_cells, _next_pow2(c))
    case = torch.empty(c, dtype=torch.uint8, device=vol.device)
    ntri = torch.empty(c, dtype=torch.int32, device=vol.device)
    nvert = torch.empty(c, dtype=torch.int32, device=vol.device)
    warps = 1 if interpret else _CUDA_WARPS
    mc_classify_kernel[(_cdiv(c, block_cells),)](vol, iso, case, ntri, nvert, tab.edge_mask,
                                                 tab.num_triangles, tab.owned_mask, c, ny, nz,
                                                 BLOCK=block_cells, num_warps=warps)
    active = torch.nonzero(ntri).squeeze(1)
    a = active.numel()
    if a == 0:
        return _empty(vol)
    if interpret:
        block_active = min(block_active, _next_pow2(a))
    vend = torch.cumsum(nvert, 0, dtype=torch.int32)
    ntri_active = ntri[active]
    fend = torch.cumsum(ntri_active, 0, dtype=torch.int64)
    num_verts, num_faces = int(vend[-1]), int(fend[-1])
    verts = torch.empty(num_verts, 3, dtype=vol.dtype, device=vol.device)
    faces = torch.empty(num_faces, 3, dtype=torch.int64, device=vol.device)
    mc_emit_kernel[(_cdiv(a, block_active),)](vol, iso, active, a, case, vend - nvert, fend - ntri_active,
                                              verts, faces, tab.num_triangles, tab.triangles, tab.edge_mask,
                                              tab.owned_mask, tab.edge_info, tab.local_edge, ny, nz,
                                              BLOCK=block_active, num_warps=warps)
    return MarchingCubesResult(verts, faces)


def marching_cubes_reference(values: torch.Tensor, isovalue: float = 0.0) -> MarchingCubesResult:
    """Same Args/Returns as :func:`marching_cubes` (vectorised PyTorch, any device)."""
    vol, iso = _check_inputs(values, isovalue)
    nx, ny, nz = (s - 1 for s in vol.shape)
    if min(nx, ny, nz) < 1:
        return _empty(vol)
    tab = tables(vol.device)
    dev = vol.device
    edges = torch.tensor(EDGES, dtype=torch.int64, device=dev)  # (12, 4): dx, dy, dz, axis

    # 1. Case of every cell: bit b set when corner b = (b>>2 & 1, b>>1 & 1, b & 1) is above the isovalue.
    above = vol > iso
    case = torch.zeros((nx, ny, nz), dtype=torch.int64, device=dev)
    for b in range(8):
        i, j, k = b >> 2 & 1, b >> 1 & 1, b & 1
        case |= above[i:i + nx, j:j + ny, k:k + nz].long() << b
    case = case.reshape(-1)

    # 2. Active cells (neither all above nor all below), in C order: the order PyMCubes visits them.
    active = torch.nonzero((case != 0) & (case != 255)).squeeze(1)
    if active.numel() == 0:
        return _empty(vol)
    acase = case[active]
    cell_xyz = torch.stack([active // (ny * nz), active // nz % ny, active % nz], dim=1)  # (A, 3)

    # 3. The vertices each active cell creates: on edges that cross the surface and that the cell owns
    #    (it is the first cell in C order touching the edge; see _mc_tables.owned_mask).
    bcode = ((cell_xyz == 0).long() * torch.tensor([4, 2, 1], device=dev)).sum(1)
    new = (tab.edge_mask.long()[acase] & tab.owned_mask.long()[bcode])
    creates = (new[:, None] >> torch.arange(12, device=dev)) & 1 == 1  # (A, 12)

    # 4. Number them in (cell, local edge) row-major order, which is PyMCubes' creation order.
    vertex_id = torch.full(creates.shape, -1, dtype=torch.int64, device=dev)
    vertex_id[creates] = torch.arange(int(creates.sum()), device=dev)

    # 5. Vertex positions: the edge's start point p plus t along its axis, t = (iso - v0) / (v1 - v0).
    cell_of, local = torch.nonzero(creates, as_tuple=True)
    p = cell_xyz[cell_of] + edges[local, :3]
    axis = edges[local, 3]
    q = p + F.one_hot(axis, 3)
    v0, v1 = vol[p[:, 0], p[:, 1], p[:, 2]], vol[q[:, 0], q[:, 1], q[:, 2]]
    t = (iso - v0) / (v1 - v0)
    verts = p.to(vol.dtype)
    verts[torch.arange(len(axis), device=dev), axis] += t

    # 6. Each active cell's triangles from the case table, in table order; a -1 row pads the table.
    tri = tab.triangles.long()[acase].reshape(-1, 5, 3)
    valid = tri[:, :, 0] >= 0  # (A, 5)
    tri = tri.clamp(min=0)

    # 7. A triangle corner names a local edge of this cell; its vertex was created by the edge's owner,
    #    which sits one step back along each other axis (not below index 0), where the same edge has
    #    another local number. Owners have a crossing edge, so they are active cells.
    start = cell_xyz[:, None, None, :] + edges[tri, :3]  # (A, 5, 3, xyz) edge start points
    tri_axis = edges[tri, 3]
    along = F.one_hot(tri_axis, 3).bool()
    owner_xyz = torch.where(along, start, (start - 1).clamp(min=0))
    owner = (owner_xyz[..., 0] * ny + owner_xyz[..., 1]) * nz + owner_xyz[..., 2]
    offset = start - owner_xyz
    offset_code = offset[..., 0] * 4 + offset[..., 1] * 2 + offset[..., 2]
    owner_local = tab.local_edge.long()[offset_code * 3 + tri_axis]
    owner_row = torch.searchsorted(active, owner)
    faces = vertex_id[owner_row, owner_local][valid]  # (F, 3), cells in C order, triangles in table order
    return MarchingCubesResult(verts, faces)


def marching_cubes_auto(values: torch.Tensor, isovalue: float = 0.0, *,
                        impl: str = "auto") -> MarchingCubesResult:
    """:func:`marching_cubes` when it can run, else :func:`marching_cubes_reference` (one warning).

    Args:
        values, isovalue: as for :func:`marching_cubes`.
        impl: "auto", "triton" (raise instead of falling back) or "reference".
    """
    vol, _ = _check_inputs(values, isovalue)
    if _dispatch.use_triton("marching_cubes", impl, vol):
        return marching_cubes(vol, isovalue)
    return marching_cubes_reference(vol, isovalue)


def pymcubes_isovalue(isovalue: float) -> float:
    """The isovalue PyMCubes actually uses: its argument is a C float, so it is rounded to float32."""
    return float(np.float32(isovalue))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _empty(vol: torch.Tensor) -> MarchingCubesResult:
    return MarchingCubesResult(torch.zeros(0, 3, dtype=vol.dtype, device=vol.device),
                               torch.zeros(0, 3, dtype=torch.int64, device=vol.device))


def _check_inputs(values, isovalue: float) -> tuple[torch.Tensor, float]:
    vol = torch.as_tensor(values)
    if vol.ndim != 3:
        raise ValueError(f"values must be an (X, Y, Z) lattice; got shape {tuple(vol.shape)}")
    if vol.dtype not in (torch.float32, torch.float64):
        vol = vol.float()
    return vol.contiguous(), pymcubes_isovalue(isovalue)
