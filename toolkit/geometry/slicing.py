"""Slices of any point field: world-axis planes and camera-parallel planes, as label and probability images.

Every slice evaluates the field on the plane's points (:func:`toolkit.geometry.grids.evaluate_field`,
chunked, on the field's device) and turns its values into class probabilities:

- ``(N, C)`` values are class logits (a SOF field): softmax over C;
- ``(N,)`` values are the logit of "inside" against "outside" (an occupancy field): two classes,
  p(inside) = sigmoid(value), so class 0 is outside and class 1 inside (``toolkit.labels.OCCUPANCY``).

Conventions: world planes as :func:`toolkit.geometry.grids.plane_points` orients them; camera planes in the
OpenCV convention (:mod:`toolkit.geometry.cameras`), at a camera-space depth. Dimension letters: R slice
side, C classes.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from toolkit.geometry.cameras import lift, pixel_grid
from toolkit.geometry.fields import as_point_field
from toolkit.geometry.grids import Bounds, evaluate_field, plane_points

__all__ = ["SliceResult", "camera_plane_points", "class_logits", "slice_camera_plane", "slice_field"]


class SliceResult(NamedTuple):
    labels: np.ndarray
    """(R, R) argmax class ids."""
    probabilities: np.ndarray
    """(R, R, C) class probabilities (C = 2 for a scalar occupancy field)."""
    points: np.ndarray
    """(R, R, 3) world points of the slice."""


def slice_field(field, axis: str, offset: float, *, bounds: Bounds | None = None, resolution: int = 128,
                chunk: int | None = None) -> SliceResult:
    """A point field on a world-axis-aligned plane (see :func:`toolkit.geometry.grids.plane_points`).

    Args:
        field: a point field (:class:`toolkit.geometry.fields.PointField`), or any callable on (N, 3) points.
        axis, offset: the plane ``axis = offset`` ("x", "y" or "z"), world units.
        bounds: the square's box (default: the field's ``bounds``, else the half-size 1.5).
        resolution: R, pixels per side.
        chunk: points per call (default: the field's).
    """
    field = as_point_field(field)
    pts = plane_points(axis, offset, _bounds_of(field, bounds), resolution)
    return _result(evaluate_field(field, pts, chunk=chunk), pts)


def camera_plane_points(cam2world: np.ndarray, K: np.ndarray, size: int, depth: float, *,
                        projection: str = "ortho") -> torch.Tensor:
    """(size, size, 3) world points of the camera-parallel plane at camera depth ``depth``, one per pixel."""
    cam = torch.as_tensor(np.asarray(cam2world), dtype=torch.float32).reshape(1, 4, 4)
    Kt = torch.as_tensor(np.asarray(K), dtype=torch.float32).reshape(1, 3, 3)
    uv = pixel_grid(size, size)[None]
    return lift(uv, depth, cam, Kt, projection)[0].reshape(size, size, 3)


def slice_camera_plane(field, cam2world: np.ndarray, K: np.ndarray, size: int, depth: float, *,
                       projection: str = "ortho", chunk: int | None = None) -> SliceResult:
    """A point field on the camera-parallel plane at camera depth ``depth`` (the original SOF slice).

    Args:
        field: a point field; one that declares a ``projection`` (a learned SOF field) must match ``projection``.
        cam2world: (4, 4) camera; K: (3, 3) intrinsics in pixels of a ``size`` x ``size`` image.
        projection: camera model, "ortho" or "perspective".
    """
    own = getattr(field, "projection", None)
    if own is not None and own != projection:
        raise ValueError(f"slice_camera_plane: projection={projection!r}, but the model's is {own!r}")
    field = as_point_field(field)
    pts = camera_plane_points(cam2world, K, size, depth, projection=projection)
    return _result(evaluate_field(field, pts, chunk=chunk), pts)


def class_logits(values: torch.Tensor) -> torch.Tensor:
    """Field values as class logits: (N, C) as they are; (N,) occupancy logits as (N, 2) [0, value], whose
    softmax is [p(outside), p(inside)] with p(inside) = sigmoid(value)."""
    if values.dim() == 1:
        return torch.stack([torch.zeros_like(values), values], dim=-1)
    if values.dim() != 2:
        raise ValueError(f"a field must give (N,) or (N, C) values; got shape {tuple(values.shape)}")
    return values


def _result(values: torch.Tensor, pts: torch.Tensor) -> SliceResult:
    flat = class_logits(values.float().cpu().reshape(-1, *values.shape[pts.dim() - 1:]))
    probs = torch.softmax(flat, dim=-1).reshape(*pts.shape[:-1], flat.shape[-1])
    return SliceResult(probs.argmax(-1).numpy().astype(np.uint8), probs.numpy(), pts.cpu().numpy())


def _bounds_of(field, bounds: Bounds | None) -> Bounds:
    if bounds is not None:
        return bounds
    own = getattr(field, "bounds", None)
    return own if own is not None else 1.5
