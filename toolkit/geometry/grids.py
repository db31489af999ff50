"""Grids and planes of query points, and chunked evaluation of any callable field on points.

A "field" here is a point field (:mod:`toolkit.geometry.fields`): a callable
``f(xyz: (N, 3) tensor) -> (N, ...) tensor`` (a learned model with its code bound, an Occupancy Flow
occupancy at one time, or a synthetic ground-truth field) that may declare its ``bounds``, ``device`` and
``chunk``. Slicing, meshing and 3D metrics are written against this contract so they serve every system
and the synthetic ground truth alike. Boxes are parsed once, by :func:`box`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

AXES = {"x": 0, "y": 1, "z": 2}


class Box(NamedTuple):
    """An axis-aligned box of world space (world units)."""

    lo: tuple[float, float, float]
    """(xmin, ymin, zmin)."""
    hi: tuple[float, float, float]
    """(xmax, ymax, zmax)."""

    @property
    def half_size(self) -> float:
        """Half of the largest side."""
        return 0.5 * max(h - lo for lo, h in zip(self.lo, self.hi))


Bounds = float | Sequence[Sequence[float]] | Box
"""A box as every function here takes it: a half-size h (the cube [-h, h]^3), ((xmin, xmax), (ymin, ymax),
(zmin, zmax)), or a :class:`Box`."""


def box(bounds: Bounds) -> Box:
    """Parse ``bounds`` (see :data:`Bounds`) once into a :class:`Box`.

    Raises:
        ValueError: a half-size <= 0, another shape than (3, 2), or min >= max on an axis.
    """
    if isinstance(bounds, Box):
        return bounds
    if np.isscalar(bounds):
        h = float(bounds)
        if not h > 0:
            raise ValueError(f"bounds half-size must be > 0; got {h}")
        return Box((-h, -h, -h), (h, h, h))
    b = np.asarray(bounds, dtype=np.float64)
    if b.shape != (3, 2) or np.any(b[:, 1] <= b[:, 0]):
        raise ValueError(f"bounds must be a half-size or ((xmin, xmax), (ymin, ymax), (zmin, zmax)) with "
                         f"min < max; got {bounds}")
    return Box(tuple(b[:, 0].tolist()), tuple(b[:, 1].tolist()))


def grid_points(bounds: Bounds, resolution: int | Sequence[int],
                dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Lattice points of a box: (Rx·Ry·Rz, 3), x slowest ("ij" order), endpoints included.

    Args:
        bounds: the box (:data:`Bounds`).
        resolution: points per axis (int or three ints).
    """
    lo, hi = _bounds(bounds)
    res = [resolution] * 3 if np.isscalar(resolution) else list(resolution)
    axes = [torch.linspace(lo[i], hi[i], res[i], dtype=dtype, device=device) for i in range(3)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def plane_points(axis: str, offset: float, bounds: Bounds, resolution: int,
                 dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Points of a world-axis-aligned plane as an image: (R, R, 3), rows top to bottom.

    The image is oriented as seen from the positive side of ``axis`` with world +y up where possible:
    axis "z": rows = -y, cols = +x (a frontal view); "x": rows = -y, cols = -z (seen from +x);
    "y": rows = +z, cols = +x (seen from above).
    """
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; valid: {list(AXES)}")
    lo, hi = _bounds(bounds)
    lin = lambda i, flip=False: torch.linspace(hi[i] if flip else lo[i], lo[i] if flip else hi[i], resolution,
                                               dtype=dtype, device=device)
    if axis == "z":
        rows, cols, order = lin(1, flip=True), lin(0), (1, 0)
    elif axis == "x":
        rows, cols, order = lin(1, flip=True), lin(2, flip=True), (1, 2)
    else:
        rows, cols, order = lin(2), lin(0), (2, 0)
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    pts = torch.empty(resolution, resolution, 3, dtype=dtype, device=device)
    pts[..., order[0]], pts[..., order[1]] = r, c
    pts[..., AXES[axis]] = offset
    return pts


@torch.no_grad()
def evaluate_field(field, points: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """Evaluate a point field on (..., 3) points, ``chunk`` points per call; returns (..., *out).

    Args:
        field: a point field (:class:`toolkit.geometry.fields.PointField`) or any callable on (N, 3) points.
        points: (..., 3) query points; sent to the field's ``device`` when it declares one.
        chunk: points per call (default: the field's ``chunk``, else 65536).
    """
    chunk = chunk or getattr(field, "chunk", None) or 65536
    device = getattr(field, "device", None)
    shape = points.shape[:-1]
    flat = points.reshape(-1, 3) if device is None else points.reshape(-1, 3).to(device)
    outs = [field(flat[i:i + chunk]) for i in range(0, flat.shape[0], chunk)]
    out = torch.cat(outs, dim=0) if outs else field(flat)
    return out.reshape(*shape, *out.shape[1:])


def _bounds(bounds: Bounds) -> tuple[list[float], list[float]]:
    lo, hi = box(bounds)
    return list(lo), list(hi)
