"""Triton bodies of the marching-cubes kernels (imported lazily; see _dispatch for why).

Cell numbering, edge numbering and vertex ownership are those of _mc_tables. Both kernels do all address
arithmetic in int64, so grids beyond 2^31 lattice points are fine.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _popcount12(x):
    # Set bits of a 12-bit mask, by the usual SWAR steps (no popc instruction in the interpreter).
    x = x - ((x >> 1) & 0x555)
    x = (x & 0x333) + ((x >> 2) & 0x333)
    x = (x + (x >> 4)) & 0x0F0F
    return (x + (x >> 8)) & 0x1F


@triton.jit
def mc_classify_kernel(vol_ptr, iso, case_ptr, ntri_ptr, nvert_ptr, edge_mask_ptr, num_tri_ptr, owned_ptr,
                       C, NY, NZ, BLOCK: tl.constexpr):
    # Per cell: its case, its triangle count and how many vertices it creates (edges it owns that cross).
    cell = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = cell < C
    cz = cell % NZ
    cy = (cell // NZ) % NY
    cx = cell // NZ // NY
    sy = NZ + 1
    sx = (NY + 1) * sy
    base = cx * sx + cy * sy + cz
    case = tl.zeros([BLOCK], dtype=tl.int32)
    for b in tl.static_range(8):
        v = tl.load(vol_ptr + base + ((b >> 2) & 1) * sx + ((b >> 1) & 1) * sy + (b & 1), mask=m, other=0.0)
        case = case | ((v > iso).to(tl.int32) << b)
    new = _owned_crossing(case, cx, cy, cz, edge_mask_ptr, owned_ptr)
    tl.store(case_ptr + cell, case.to(tl.uint8), mask=m)
    tl.store(ntri_ptr + cell, tl.load(num_tri_ptr + case), mask=m)
    tl.store(nvert_ptr + cell, _popcount12(new), mask=m)


@triton.jit
def mc_emit_kernel(vol_ptr, iso, active_ptr, A, case_ptr, vstart_ptr, fstart_ptr, verts_ptr, faces_ptr,
                   num_tri_ptr, tri_ptr, edge_mask_ptr, owned_ptr, edge_info_ptr, local_edge_ptr,
                   NY, NZ, BLOCK: tl.constexpr):
    # Per active cell (rows), 16 lanes (columns): first its 12 local edges, writing the vertices the cell
    # owns; then its 15 triangle-corner slots (5 triangles x 3), writing its faces.
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < A
    cell = tl.load(active_ptr + i, mask=m, other=0)
    cz = cell % NZ
    cy = (cell // NZ) % NY
    cx = cell // NZ // NY
    sy = NZ + 1
    sx = (NY + 1) * sy
    case = tl.load(case_ptr + cell, mask=m, other=0).to(tl.int32)
    new = _owned_crossing(case, cx, cy, cz, edge_mask_ptr, owned_ptr)
    dtype = verts_ptr.dtype.element_ty
    lane = tl.arange(0, 16)

    # Vertices, numbered from the cell's first vertex in local-edge order (PyMCubes' creation order).
    info = tl.load(edge_info_ptr + lane, mask=lane < 12, other=0)
    axis = (info >> 3)[None, :]
    on = m[:, None] & (lane < 12)[None, :] & (((new[:, None] >> lane[None, :]) & 1) != 0)
    rank = _popcount12(new[:, None] & ((1 << lane[None, :]) - 1))
    vid = tl.load(vstart_ptr + cell, mask=m, other=0).to(tl.int64)[:, None] + rank
    px = cx[:, None] + (info & 1)[None, :]
    py = cy[:, None] + ((info >> 1) & 1)[None, :]
    pz = cz[:, None] + ((info >> 2) & 1)[None, :]
    p = px * sx + py * sy + pz
    step = tl.where(axis == 0, sx, tl.where(axis == 1, sy, 1))
    v0 = tl.load(vol_ptr + p, mask=on, other=0.0)
    v1 = tl.load(vol_ptr + p + step, mask=on, other=1.0)
    t = (iso - v0) / (v1 - v0)
    tl.store(verts_ptr + vid * 3, px.to(dtype) + tl.where(axis == 0, t, 0.0), mask=on)
    tl.store(verts_ptr + vid * 3 + 1, py.to(dtype) + tl.where(axis == 1, t, 0.0), mask=on)
    tl.store(verts_ptr + vid * 3 + 2, pz.to(dtype) + tl.where(axis == 2, t, 0.0), mask=on)

    # Triangles: the vertex on a corner's edge was created by the edge's owner (the first cell in C order
    # touching it: one step back along each other axis, not below 0), at the owner's first vertex plus
    # the number of edges it creates before this one.
    ntri = tl.load(num_tri_ptr + case)
    tv = m[:, None] & (lane < 15)[None, :] & ((lane // 3)[None, :] < ntri[:, None])
    le = tl.load(tri_ptr + case[:, None] * 15 + lane[None, :], mask=tv, other=0)
    info = tl.load(edge_info_ptr + le)
    axis = info >> 3
    px = cx[:, None] + (info & 1)
    py = cy[:, None] + ((info >> 1) & 1)
    pz = cz[:, None] + ((info >> 2) & 1)
    ox = tl.where(axis == 0, px, tl.maximum(px - 1, 0))
    oy = tl.where(axis == 1, py, tl.maximum(py - 1, 0))
    oz = tl.where(axis == 2, pz, tl.maximum(pz - 1, 0))
    owner = (ox * NY + oy) * NZ + oz
    offset_code = (px - ox) * 4 + (py - oy) * 2 + (pz - oz)
    le_owner = tl.load(local_edge_ptr + offset_code * 3 + axis, mask=tv, other=0)
    ocase = tl.load(case_ptr + owner, mask=tv, other=0).to(tl.int32)
    onew = _owned_crossing(ocase, ox, oy, oz, edge_mask_ptr, owned_ptr)
    v = tl.load(vstart_ptr + owner, mask=tv, other=0).to(tl.int64) + _popcount12(onew & ((1 << le_owner) - 1))
    # Face fs + lane // 3, corner lane % 3: flat offset fs * 3 + lane.
    fs = tl.load(fstart_ptr + i, mask=m, other=0).to(tl.int64)
    tl.store(faces_ptr + fs[:, None] * 3 + lane[None, :], v, mask=tv)


@triton.jit
def _owned_crossing(case, cx, cy, cz, edge_mask_ptr, owned_ptr):
    # Bit mask of the local edges a cell creates vertices on: crossing edges it owns (_mc_tables.owned_mask).
    bcode = (cx == 0).to(tl.int32) * 4 + (cy == 0).to(tl.int32) * 2 + (cz == 0).to(tl.int32)
    return tl.load(edge_mask_ptr + case) & tl.load(owned_ptr + bcode)
