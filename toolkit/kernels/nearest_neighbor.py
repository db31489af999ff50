"""Fused nearest-neighbour search and Chamfer correspondences, without an N x M distance matrix.

For query points x (N, D) and reference points y (M, D), optionally batched as (B, N, D) / (B, M, D), each
query gets the squared Euclidean distance to its nearest reference point and that point's index. Ties go
to the lowest index, so results are deterministic. Chamfer distances (Fan et al., "A Point Set Generation
Network for 3D Object Reconstruction from a Single Image", CVPR 2017; the Occupancy Networks evaluator,
reference/oflow.md §5) need both directions, which :func:`chamfer` returns.

- :func:`nearest_neighbor` is the Triton kernel: each program loads a tile of x and sweeps y tile by tile,
  keeping the running min and argmin in registers, so memory stays linear in N + M.
- :func:`nearest_neighbor_reference` is plain PyTorch: chunked ``torch.cdist`` plus ``min``.
- :func:`nearest_neighbor_auto` and :func:`chamfer` pick the kernel when it can run (CUDA tensors, or
  ``TRITON_INTERPRET=1`` for the CPU interpreter) and otherwise fall back to the reference with one warning.
- :func:`nearest_neighbor_backend` plugs the dispatcher into ``toolkit.metrics.nearest_neighbor``.

Distances are computed from coordinate differences, not the |x|² - 2x·y + |y|² expansion, so they carry no
cancellation error. Inputs must be finite.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from toolkit.kernels import _dispatch

# Tile sizes: (BLOCK_N, BLOCK_M, num_warps). The interpreter runs one Python step per tile operation, so it
# prefers large tiles; on the GPU 16 pairs per thread keep both accumulators in ~110 registers (sm_90, fp32).
_CUDA_TILES = (64, 64, 8)
_INTERPRETER_TILES = (256, 512, 1)
_DEFAULT_CHUNK = 1 << 22


class NNResult(NamedTuple):
    """Nearest neighbours of the query points."""

    sqdist: torch.Tensor
    """(..., N) squared distance to the nearest reference point, in the inputs' floating dtype."""
    idx: torch.Tensor
    """(..., N) int64 index of that reference point (the lowest one among ties)."""


class ChamferNN(NamedTuple):
    """Nearest neighbours in both directions, the ingredients of every Chamfer variant."""

    x_to_y: NNResult
    """For each point of x, its nearest point of y."""
    y_to_x: NNResult
    """For each point of y, its nearest point of x."""

    def chamfer_l2_sq(self) -> torch.Tensor:
        """(...) mean squared distance x -> y plus mean squared distance y -> x (per batch item)."""
        return self.x_to_y.sqdist.mean(-1) + self.y_to_x.sqdist.mean(-1)

    def chamfer_l1(self) -> torch.Tensor:
        """(...) ½ (mean distance x -> y + mean distance y -> x), the Occupancy Networks "Chamfer-L1"."""
        return 0.5 * (self.x_to_y.sqdist.sqrt().mean(-1) + self.y_to_x.sqdist.sqrt().mean(-1))


def nearest_neighbor(x: torch.Tensor, y: torch.Tensor, *, chunk: int = _DEFAULT_CHUNK) -> NNResult:
    """Nearest neighbour in ``y`` of every point of ``x``, by the fused Triton kernel.

    Args:
        x: (N, D) or (B, N, D) query points, float32 or float64 (other dtypes are converted to float32).
        y: (M, D) or (B, M, D) reference points, M >= 1, same D (and B); cast to x's dtype and device.
        chunk: used by the reference only (pairwise distances it holds at once); the kernel holds none.

    Returns:
        NNResult(sqdist (…, N), idx (…, N) int64) on x's device.

    Raises:
        ValueError: bad shapes or an empty ``y``.
        RuntimeError: the kernel cannot run here (no CUDA tensor and TRITON_INTERPRET unset, or no triton).
    """
    x3, y3, batched = _check_inputs(x, y, chunk)
    _dispatch.require_triton("nearest_neighbor", x3, y3)
    from toolkit.kernels._nn_triton import nn_kernel

    b, n, d = x3.shape
    m = y3.shape[1]
    dist = torch.empty(b, n, dtype=x3.dtype, device=x3.device)
    idx = torch.empty(b, n, dtype=torch.int64, device=x3.device)
    if n > 0:
        # y as (B, D, M): each coordinate of a reference tile is one contiguous, coalesced load.
        yt = y3.transpose(1, 2).contiguous()
        interpret = _dispatch.interpret_requested()
        block_n, block_m, warps = _INTERPRETER_TILES if interpret else _CUDA_TILES
        if interpret:  # small inputs: tiles no larger than needed
            block_n, block_m = min(block_n, _next_pow2(max(n, 16))), min(block_m, _next_pow2(max(m, 16)))
        grid = (_cdiv(n, block_n), b)
        nn_kernel[grid](x3, yt, dist, idx, n, m, x3.stride(0), x3.stride(1), x3.stride(2),
                        yt.stride(0), yt.stride(1), D=d, BLOCK_N=block_n, BLOCK_M=block_m, num_warps=warps)
    return _unbatch(NNResult(dist, idx), batched)


def nearest_neighbor_reference(x: torch.Tensor, y: torch.Tensor, *, chunk: int = _DEFAULT_CHUNK) -> NNResult:
    """Same Args/Returns as :func:`nearest_neighbor` (plain PyTorch, any device)."""
    x3, y3, batched = _check_inputs(x, y, chunk)
    b, n, _ = x3.shape
    m = y3.shape[1]
    dist = torch.empty(b, n, dtype=x3.dtype, device=x3.device)
    idx = torch.empty(b, n, dtype=torch.int64, device=x3.device)
    # Split the (N, M) distance matrix into blocks of at most `chunk` entries: cy reference points
    # (whole rows when they fit) times cx query points.
    cy = max(1, min(m, chunk))
    cx = max(1, chunk // cy)
    for i in range(0, n, cx):
        xb = x3[:, i:i + cx]
        best = torch.full(xb.shape[:2], float("inf"), dtype=x3.dtype, device=x3.device)
        arg = torch.zeros(xb.shape[:2], dtype=torch.int64, device=x3.device)
        for j in range(0, m, cy):
            # Exact distances from coordinate differences (no matrix-multiply expansion), then squared.
            d2 = torch.cdist(xb, y3[:, j:j + cy], compute_mode="donot_use_mm_for_euclid_dist").square()
            # torch.min returns the first minimum along the row: the lowest index within the block.
            dmin, amin = d2.min(dim=-1)
            # Strict <: an earlier block keeps a tie, so ties go to the lowest index overall.
            better = dmin < best
            best = torch.where(better, dmin, best)
            arg = torch.where(better, amin + j, arg)
        dist[:, i:i + cx], idx[:, i:i + cx] = best, arg
    return _unbatch(NNResult(dist, idx), batched)


def nearest_neighbor_auto(x: torch.Tensor, y: torch.Tensor, *, chunk: int = _DEFAULT_CHUNK,
                          impl: str = "auto") -> NNResult:
    """:func:`nearest_neighbor` when it can run, else :func:`nearest_neighbor_reference` (one warning).

    Args:
        x, y, chunk: as for :func:`nearest_neighbor`.
        impl: "auto", "triton" (raise instead of falling back) or "reference".
    """
    x3, y3, _ = _check_inputs(x, y, chunk)
    if _dispatch.use_triton("nearest_neighbor", impl, x3, y3):
        return nearest_neighbor(x, y, chunk=chunk)
    return nearest_neighbor_reference(x, y, chunk=chunk)


def chamfer(x: torch.Tensor, y: torch.Tensor, *, chunk: int = _DEFAULT_CHUNK,
            impl: str = "auto") -> ChamferNN:
    """Nearest neighbours x -> y and y -> x (two kernel launches, or the reference; see
    :func:`nearest_neighbor_auto`).

    Args:
        x: (N, D) or (B, N, D) points, N >= 1.
        y: (M, D) or (B, M, D) points, M >= 1.
        chunk, impl: as for :func:`nearest_neighbor_auto`.

    Returns:
        ChamferNN(x_to_y: NNResult over N, y_to_x: NNResult over M).
    """
    x3, y3, batched = _check_inputs(x, y, chunk)
    if x3.shape[1] == 0:
        raise ValueError(f"x is empty (shape {tuple(torch.as_tensor(x).shape)}): a Chamfer distance needs at "
                         "least one point in each set")
    x_to_y = nearest_neighbor_auto(x3, y3, chunk=chunk, impl=impl)
    y_to_x = nearest_neighbor_auto(y3, x3, chunk=chunk, impl=impl)
    return ChamferNN(_unbatch(x_to_y, batched), _unbatch(y_to_x, batched))


def nearest_neighbor_backend(x: torch.Tensor, y: torch.Tensor, *,
                             chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Backend for ``toolkit.metrics.register_nn_backend``: x (B, N, D), y (B, M, D) ->
    (Euclidean distance (B, N) in x's dtype, index (B, N) int64), kernel or reference as available."""
    res = nearest_neighbor_auto(x, y, chunk=chunk)
    return res.sqdist.sqrt().to(x.dtype), res.idx


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _unbatch(res: NNResult, batched: bool) -> NNResult:
    return res if batched else NNResult(res.sqdist[0], res.idx[0])


def _check_inputs(x, y, chunk: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate and normalise to (B, N, D) / (B, M, D) tensors of one floating dtype on x's device."""
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    if xt.ndim not in (2, 3) or xt.ndim != yt.ndim or xt.shape[-1] != yt.shape[-1] or xt.shape[-1] < 1:
        raise ValueError(f"x and y must be (N, D) or (B, N, D) with equal D >= 1; got {tuple(xt.shape)} "
                         f"and {tuple(yt.shape)}")
    if xt.ndim == 3 and xt.shape[0] != yt.shape[0]:
        raise ValueError(f"x and y batch sizes differ: {xt.shape[0]} and {yt.shape[0]}")
    if yt.shape[-2] == 0:
        raise ValueError(f"y is empty (shape {tuple(yt.shape)}): a nearest neighbour needs at least one "
                         "reference point")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    if xt.dtype not in (torch.float32, torch.float64):
        xt = xt.float()
    yt = yt.to(device=xt.device, dtype=xt.dtype)
    batched = xt.ndim == 3
    if not batched:
        xt, yt = xt[None], yt[None]
    return xt.contiguous(), yt.contiguous(), batched
