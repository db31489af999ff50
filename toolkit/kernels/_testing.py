"""Seeded input builders shared by tests/kernels and benchmarks/bm_{nearest_neighbor,marching_cubes}.py."""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

POINT_KINDS = ("uniform", "sphere", "lattice")


def point_cloud(n: int, *, batch: int | None = None, kind: str = "uniform", seed: int = 0, dim: int = 3,
                dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, dim) or (B, N, dim) points.

    Args:
        kind: "uniform" in [-1, 1]^dim; "sphere" on the unit sphere (a surface sample, as for Chamfer);
            "lattice" integer points in [0, 4)^dim, so distances are exact and ties are everywhere.
    """
    if kind not in POINT_KINDS:
        raise ValueError(f'unknown point kind "{kind}"; valid: {list(POINT_KINDS)}')
    g = torch.Generator().manual_seed(seed)
    shape = (n, dim) if batch is None else (batch, n, dim)
    if kind == "uniform":
        pts = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    elif kind == "sphere":
        pts = torch.randn(shape, generator=g, dtype=torch.float64)
        pts = pts / pts.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    else:
        pts = torch.randint(0, 4, shape, generator=g).double()
    return pts.to(device=device, dtype=dtype)


def sphere_lattice(resolution: int, *, radius: float = 0.35, center: Sequence[float] = (0.03, -0.02, 0.01),
                   bounds: float = 0.55, noise: float = 0.0, seed: int = 0,
                   dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """(R+1, R+1, R+1) signed distance ``radius - |p - center|`` on the lattice of [-bounds, bounds]^3
    (positive inside), plus optional uniform noise of amplitude ``noise`` (a bumpier surface)."""
    axis = torch.linspace(-bounds, bounds, resolution + 1, dtype=torch.float64)
    p = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)
    values = radius - (p - torch.tensor(center, dtype=torch.float64)).norm(dim=-1)
    if noise:
        g = torch.Generator().manual_seed(seed)
        values = values + noise * (torch.rand(values.shape, generator=g, dtype=torch.float64) * 2 - 1)
    return values.to(device=device, dtype=dtype)


def random_lattice(shape: Sequence[int], *, seed: int = 0, integer: bool = False,
                   dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard-normal lattice values of ``shape`` (every cell case occurs); ``integer`` rounds them, so
    many values equal an integer isovalue exactly."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(tuple(shape), generator=g, dtype=torch.float64)
    if integer:
        values = values.round()
    return values.to(device=device, dtype=dtype)


def all_cases_lattice(*, dtype: torch.dtype = torch.float64,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(2, 2, 257) lattice of +-1 whose 256 cells are the 256 marching-cubes cases, each exactly once.

    A cell's case is the pair of its two z-faces (16 states each). Face states follow a de Bruijn
    sequence B(16, 2), in which every ordered pair of states appears once as neighbours.
    """
    faces = _de_bruijn(16, 2)
    faces = faces + faces[:1]
    values = torch.empty(2, 2, len(faces), dtype=torch.float64)
    for z, state in enumerate(faces):
        for i in range(2):
            for j in range(2):
                values[i, j, z] = 1.0 if state >> (i << 1 | j) & 1 else -1.0
    return values.to(device=device, dtype=dtype)


def cell_cases(values: torch.Tensor, isovalue: float = 0.0) -> np.ndarray:
    """(cells,) case id of every cell in C order (bit b set when corner b is above ``isovalue``)."""
    above = (torch.as_tensor(values) > isovalue).cpu().numpy()
    nx, ny, nz = (s - 1 for s in above.shape)
    case = np.zeros((nx, ny, nz), dtype=np.int64)
    for b in range(8):
        i, j, k = b >> 2 & 1, b >> 1 & 1, b & 1
        case |= above[i:i + nx, j:j + ny, k:k + nz].astype(np.int64) << b
    return case.reshape(-1)


def _de_bruijn(k: int, n: int) -> list[int]:
    # Fredricksen-Kessler-Maiorana: concatenated Lyndon words whose length divides n.
    a = [0] * (k * n)
    seq: list[int] = []

    def walk(t: int, p: int) -> None:
        if t > n:
            if n % p == 0:
                seq.extend(a[1:p + 1])
            return
        a[t] = a[t - p]
        walk(t + 1, p)
        for j in range(a[t - p] + 1, k):
            a[t] = j
            walk(t + 1, t)

    walk(1, 1)
    return seq


def timed(fn, repeats: int, device: torch.device, *,
          warmup: bool = True) -> tuple[float, object, float | None]:
    """(best wall time of ``repeats`` runs, after one warm-up run unless ``warmup`` is False, last result,
    peak CUDA memory in MB or None)."""
    result = fn() if warmup else None  # warm-up: compiles the kernel, fills caches
    best = float("inf")
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return best, result, peak
