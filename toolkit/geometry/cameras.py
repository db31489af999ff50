"""Cameras in the OpenCV convention, rays, and camera paths (reference: sof.md 1.1, 1.5, 3.2).

Conventions (the original SOF data's):

- ``cam2world`` is a (4, 4) rigid transform whose rotation columns are the camera axes in world
  coordinates: x right, y down, z forward (the viewing direction); column 3 is the camera centre.
- The world is Y-up. :func:`look_at` builds the camera y axis as the *negated* up vector (OpenCV).
- Intrinsics ``K`` are (3, 3) in pixels; only fx, fy, cx, cy are read.
- Pixel coordinates ``uv`` are (u, v) = (column, row), row-major (k = row * W + col). The pixel-centre
  offset is explicit: ``pixel_center=0.0`` is the original's convention (integer pixel coordinates with
  the principal point at W // 2); ``0.5`` samples pixel centres.
- Projections are registry keys: ``"ortho"`` (all rays share the direction R·(0,0,1); a pixel is
  1/fx world units wide) and ``"perspective"``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

PROJECTIONS = ("ortho", "perspective")
DEFAULT_TARGET = (0.0, 0.1, 0.0)
"""Look-at target of the original portrait data (slightly above the origin)."""


def check_projection(projection: str) -> str:
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; valid: {list(PROJECTIONS)}")
    return projection


class Rays(NamedTuple):
    origins: torch.Tensor
    """(..., N, 3) world ray origins (camera centre, or the pixel's point on the camera plane for ortho)."""
    directions: torch.Tensor
    """(..., N, 3) unit world ray directions."""


# ----------------------------------------------------------------------------------------------------
# Poses and intrinsics (NumPy, float64)
# ----------------------------------------------------------------------------------------------------

def look_at(eye: Sequence[float] | np.ndarray, target: Sequence[float] | np.ndarray = DEFAULT_TARGET,
            up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV cam2world of cameras at ``eye`` looking at ``target``.

    Args:
        eye: (3,) or (V, 3) camera centres.
        target: (3,) or (V, 3) points looked at.
        up: world up vector; the camera's y column is its negation (orthogonalised).
    Returns:
        (4, 4) or (V, 4, 4) float64 cam2world matrices with columns (right, down, forward, centre).

    Unlike the original's torch look-at for ``--opt_cam`` (sof.md 1.2, which stacked the axes as rows,
    i.e. the transpose), the axes are always columns here.
    """
    eye = np.asarray(eye, dtype=np.float64)
    single = eye.ndim == 1
    eye = np.atleast_2d(eye)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), eye.shape)
    up = np.broadcast_to(np.asarray(up, dtype=np.float64), eye.shape)
    forward = _normalize_np(target - eye)
    right = np.cross(forward, up)
    norm = np.linalg.norm(right, axis=-1, keepdims=True)
    if np.any(norm < 1e-9):
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    right = right / norm
    down = np.cross(forward, right)
    mats = np.tile(np.eye(4), (eye.shape[0], 1, 1))
    mats[:, :3, 0], mats[:, :3, 1], mats[:, :3, 2], mats[:, :3, 3] = right, down, forward, eye
    return mats[0] if single else mats


def orbit_position(radius, yaw, pitch, target: Sequence[float] = DEFAULT_TARGET) -> np.ndarray:
    """Camera centres on a sphere around ``target``: target + r·(sin yaw cos pitch, sin pitch, cos yaw cos pitch).

    yaw = pitch = 0 is the frontal camera on +z. Arguments broadcast; returns (..., 3).
    """
    radius, yaw, pitch = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (radius, yaw, pitch)))
    offset = np.stack([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)], axis=-1)
    return np.asarray(target, dtype=np.float64) + radius[..., None] * offset


def orbit_cameras(radius, yaw, pitch, target: Sequence[float] = DEFAULT_TARGET) -> np.ndarray:
    """Look-at cam2world matrices (..., 4, 4) for orbit positions (see :func:`orbit_position`)."""
    eye = orbit_position(radius, yaw, pitch, target)
    flat = look_at(eye.reshape(-1, 3), target)
    return flat.reshape(eye.shape[:-1] + (4, 4))


def intrinsics_matrix(fx: float, fy: float | None = None, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    """(3, 3) float64 pinhole intrinsics in pixels."""
    fy = fx if fy is None else fy
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def default_intrinsics(size: int, projection: str = "ortho") -> np.ndarray:
    """Intrinsics of the original data at ``size`` pixels.

    ortho: f = 36, c = 64 at 128 px (the released checkpoint's sampler: the view spans 3.56 world units).
    perspective: f = 500 at 128 px (about 14.6 degrees field of view, as the original's edit cells).
    """
    check_projection(projection)
    f = (36.0 if projection == "ortho" else 500.0) * size / 128.0
    return intrinsics_matrix(f, f, size // 2, size // 2)


PORTRAIT_CROP_SIDE = 1.9
"""World size of an aligned portrait crop (CelebA-HQ / FFHQ alignment; see
:func:`toolkit.synthetic.heads.alignment`): the view of :func:`portrait_intrinsics` at the orbit radius."""
PORTRAIT_PERSPECTIVE_DISTANCE = 9.5
"""Camera distance at which :func:`portrait_intrinsics` frames the aligned crop in perspective."""


def portrait_intrinsics(size: int, projection: str = "ortho") -> np.ndarray:
    """Intrinsics that frame an aligned portrait crop (:data:`PORTRAIT_CROP_SIDE` world units) at ``size``.

    The frontal view of the toolkit's synthetic portraits, and a converted CelebAMask-HQ mask, are this
    crop: ortho f = size / 1.9 px per world unit (67.4 px at 128 px), perspective f = 5 * size at distance
    9.5 (an 11.4 degree field of view); the principal point is ``size // 2``.
    """
    check_projection(projection)
    f = size / PORTRAIT_CROP_SIDE * (1.0 if projection == "ortho" else PORTRAIT_PERSPECTIVE_DISTANCE)
    return intrinsics_matrix(f, f, size // 2, size // 2)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float | None = None, pixel_center: float = 0.0) -> np.ndarray:
    """Intrinsics for an image resized by (sx, sy).

    With ``pixel_center = 0`` (the original's integer pixel convention) fx, cx scale by sx and fy, cy by sy,
    exactly as the original loader does. With ``0.5`` the principal point is mapped between pixel-centre
    grids: c' = (c + 0.5)·s − 0.5.
    """
    sy = sx if sy is None else sy
    K = np.array(K, dtype=np.float64, copy=True)
    K[..., 0, 0] *= sx
    K[..., 1, 1] *= sy
    K[..., 0, 2] = (K[..., 0, 2] + pixel_center) * sx - pixel_center
    K[..., 1, 2] = (K[..., 1, 2] + pixel_center) * sy - pixel_center
    return K


def rigid_problem(cam2world: np.ndarray, atol: float = 1e-4) -> str | None:
    """Describe why a (4, 4) matrix is not a rigid cam2world transform, or return None if it is."""
    m = np.asarray(cam2world, dtype=np.float64)
    if m.shape != (4, 4):
        return f"shape {m.shape}, expected (4, 4)"
    if not np.all(np.isfinite(m)):
        return "contains NaN or inf"
    if not np.allclose(m[3], [0, 0, 0, 1], atol=atol):
        return f"last row {m[3].round(4).tolist()}, expected [0, 0, 0, 1]"
    R = m[:3, :3]
    err = np.abs(R.T @ R - np.eye(3)).max()
    if err > atol:
        return f"rotation is not orthonormal (max |RᵀR − I| = {err:.2e})"
    det = np.linalg.det(R)
    if det < 0:
        return f"rotation is a reflection (det = {det:.3f})"
    return None


# ----------------------------------------------------------------------------------------------------
# Pixels and rays (torch)
# ----------------------------------------------------------------------------------------------------

def pixel_grid(height: int, width: int, pixel_center: float = 0.0, device=None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H·W, 2) pixel coordinates (u = column, v = row), row-major, plus ``pixel_center``."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                                torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=-1) + pixel_center


def _camera_plane_xy(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    return torch.stack([(uv[..., 0] - cx) / fx, (uv[..., 1] - cy) / fy], dim=-1)


def lift(uv: torch.Tensor, depth: torch.Tensor | float, cam2world: torch.Tensor, K: torch.Tensor,
         projection: str) -> torch.Tensor:
    """World points of pixels ``uv`` at camera-space depth ``depth`` (camera z, not distance).

    Args:
        uv: (B, N, 2) pixel coordinates.
        depth: scalar or (B, N) camera-space depths.
        cam2world: (B, 4, 4); K: (B, 3, 3).
        projection: "ortho" (x, y independent of depth) or "perspective" (x, y scale with depth).
    Returns:
        (B, N, 3) world points.
    """
    check_projection(projection)
    xy = _camera_plane_xy(uv, K)
    depth = torch.as_tensor(depth, dtype=uv.dtype, device=uv.device).expand(xy.shape[:-1])
    if projection == "perspective":
        xy = xy * depth[..., None]
    cam = torch.cat([xy, depth[..., None]], dim=-1)
    return cam @ cam2world[..., :3, :3].transpose(-1, -2) + cam2world[..., None, :3, 3]


def generate_rays(cam2world: torch.Tensor, K: torch.Tensor, uv: torch.Tensor, projection: str) -> Rays:
    """Rays through pixels ``uv``.

    Args:
        cam2world: (B, 4, 4) OpenCV cam2world.
        K: (B, 3, 3) intrinsics in pixels.
        uv: (B, N, 2) or (N, 2) pixel coordinates (column, row).
        projection: "ortho" or "perspective".
    Returns:
        Rays with origins and unit directions of shape (B, N, 3). Ortho origins lie on the camera plane
        (depth 0); perspective origins are the camera centre.
    """
    check_projection(projection)
    if uv.dim() == 2:
        uv = uv.expand(cam2world.shape[0], *uv.shape)
    R, t = cam2world[..., :3, :3], cam2world[..., :3, 3]
    xy = _camera_plane_xy(uv, K)
    if projection == "ortho":
        cam = torch.cat([xy, torch.zeros_like(xy[..., :1])], dim=-1)
        origins = cam @ R.transpose(-1, -2) + t[..., None, :]
        directions = R[..., None, :, 2].expand_as(origins)
    else:
        cam = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)
        directions = torch.nn.functional.normalize(cam @ R.transpose(-1, -2), dim=-1)
        origins = t[..., None, :].expand_as(directions)
    return Rays(origins, directions)


def camera_depth(points: torch.Tensor, cam2world: torch.Tensor) -> torch.Tensor:
    """Camera-space z of world points: (B, N, 3), (B, 4, 4) -> (B, N)."""
    R, t = cam2world[..., :3, :3], cam2world[..., :3, 3]
    return ((points - t[..., None, :]) * R[..., None, :, 2]).sum(-1)


# ----------------------------------------------------------------------------------------------------
# Camera paths (NumPy cam2world stacks (V, 4, 4))
# ----------------------------------------------------------------------------------------------------

def sphere_grid_path(n_yaw: int = 5, n_pitch: int = 5, radius: float = 4.5, max_yaw: float = 0.6,
                     max_pitch: float = 0.3, target: Sequence[float] = DEFAULT_TARGET) -> np.ndarray:
    """Uniform yaw x pitch grid of orbit cameras (row-major over pitch, then yaw): (n_pitch·n_yaw, 4, 4)."""
    pitch, yaw = np.meshgrid(np.linspace(max_pitch, -max_pitch, n_pitch), np.linspace(-max_yaw, max_yaw, n_yaw),
                             indexing="ij")
    return orbit_cameras(radius, yaw.ravel(), pitch.ravel(), target)


def turntable_path(n: int = 36, radius: float = 4.5, pitch: float = 0.0, max_yaw: float = math.pi,
                   target: Sequence[float] = DEFAULT_TARGET) -> np.ndarray:
    """Cameras sweeping yaw over [-max_yaw, max_yaw) at fixed pitch (a full turn by default)."""
    yaw = np.linspace(-max_yaw, max_yaw, n, endpoint=max_yaw < math.pi)
    return orbit_cameras(radius, yaw, pitch, target)


def spiral_path(n: int = 60, radius: float = 4.5, max_yaw: float = 0.5, max_pitch: float = 0.25,
                turns: float = 2.0, target: Sequence[float] = DEFAULT_TARGET) -> np.ndarray:
    """A closed spiral around the frontal view: yaw = A cos t, pitch = −B sin t for t in [0, 2π·turns)."""
    t = np.linspace(0, 2 * math.pi * turns, n, endpoint=False)
    return orbit_cameras(radius, max_yaw * np.cos(t), -max_pitch * np.sin(t), target)


def yaw_sweep_path(n: int = 40, radius: float = 4.5, max_yaw: float = 0.55, pitch: float = 0.0,
                   target: Sequence[float] = DEFAULT_TARGET) -> np.ndarray:
    """The original's yaw sweep 0 -> -max -> +max -> 0 (sof.md 4, Test_MV_Inference)."""
    q = max(n // 4, 1)
    yaw = np.concatenate([np.linspace(0, -max_yaw, q, endpoint=False),
                          np.linspace(-max_yaw, max_yaw, 2 * q, endpoint=False),
                          np.linspace(max_yaw, 0, n - 3 * q)])
    return orbit_cameras(radius, yaw, pitch, target)


def random_orbit_cameras(n: int, rng: np.random.Generator, radius: float | tuple[float, float] = 4.5,
                         max_yaw: float = 0.8, max_pitch: float = 0.35,
                         target: Sequence[float] = DEFAULT_TARGET) -> np.ndarray:
    """Random orbit cameras, yaw and pitch uniform in ±max, radius uniform in a range or fixed."""
    lo, hi = (radius, radius) if np.isscalar(radius) else radius
    return orbit_cameras(rng.uniform(lo, hi, n), rng.uniform(-max_yaw, max_yaw, n),
                         rng.uniform(-max_pitch, max_pitch, n), target)


CAMERA_PATHS = {
    "sphere": sphere_grid_path,
    "turntable": turntable_path,
    "spiral": spiral_path,
    "yaw_sweep": yaw_sweep_path,
}


def camera_path(name: str, **kwargs) -> np.ndarray:
    """Build a named camera path (registry :data:`CAMERA_PATHS`)."""
    try:
        fn = CAMERA_PATHS[name]
    except KeyError:
        raise ValueError(f"unknown camera path {name!r}; valid: {sorted(CAMERA_PATHS)}") from None
    return fn(**kwargs)


def _normalize_np(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def look_at_torch(eye: torch.Tensor, target: torch.Tensor | Sequence[float] = DEFAULT_TARGET,
                  up: Sequence[float] = (0.0, 1.0, 0.0)) -> torch.Tensor:
    """Differentiable :func:`look_at`: (..., 3) camera centres -> (..., 4, 4) OpenCV cam2world.

    The axes are stored as COLUMNS (right, down, forward), like the NumPy version. The original's torch
    look-at for ``--opt_cam`` stacked them as rows (its transpose), which agrees only for the frontal
    camera (sof.md 1.2).
    """
    target = torch.as_tensor(target, dtype=eye.dtype, device=eye.device).expand_as(eye)
    up_t = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up_t, dim=-1), dim=-1)
    down = torch.linalg.cross(forward, right, dim=-1)
    top = torch.stack([right, down, forward, eye], dim=-1)  # (..., 3, 4): columns
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device).expand(*eye.shape[:-1], 1, 4)
    return torch.cat([top, bottom], dim=-2)
