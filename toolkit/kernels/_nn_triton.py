"""Triton body of the fused nearest-neighbour kernel (imported lazily; see _dispatch for why)."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def nn_kernel(x_ptr, yt_ptr, dist_ptr, idx_ptr, N, M,
              stride_xb, stride_xn, stride_xd, stride_yb, stride_yd,
              D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    # One program: BLOCK_N query points of one batch item against all M reference points, tile by tile.
    # Each (query, lane) pair keeps its own running min and argmin, so the loop is purely elementwise;
    # one reduction at the end picks the best lane. Memory traffic is linear in N + M.
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = rn < N
    x_base = x_ptr + b * stride_xb + rn.to(tl.int64) * stride_xn
    y_base = yt_ptr + b * stride_yb
    dtype = x_ptr.dtype.element_ty
    best = tl.full([BLOCK_N, BLOCK_M], float("inf"), dtype)
    arg = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.int32)
    for m0 in range(0, M, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        mask_m = rm < M
        d = tl.zeros([BLOCK_N, BLOCK_M], dtype=dtype)
        for k in tl.static_range(D):
            xk = tl.load(x_base + k * stride_xd, mask=mask_n, other=0.0)
            # Padding lanes read +inf, so their distance is +inf and never wins (inputs are finite).
            yk = tl.load(y_base + k * stride_yd + rm, mask=mask_m, other=float("inf"))
            diff = xk[:, None] - yk[None, :]
            d += diff * diff
        # Strict <: an earlier tile keeps a tie, so each lane holds its lowest tied index.
        better = d < best
        best = tl.where(better, d, best)
        arg = tl.where(better, rm[None, :], arg)
    dmin = tl.min(best, axis=1)
    # Among the lanes holding the minimum, the lowest index wins: ties resolve to the lowest index.
    imin = tl.min(tl.where(best == dmin[:, None], arg, 2147483647), axis=1)
    tl.store(dist_ptr + b * N + rn, dmin, mask=mask_n)
    tl.store(idx_ptr + b * N + rn, imin.to(tl.int64), mask=mask_n)
