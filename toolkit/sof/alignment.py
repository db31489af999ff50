"""Alignment of single-view label maps to a SOF model's portrait framing (stage 2, sof.md 2.6).

Real masks come without cameras. CelebAMask-HQ's are aligned crops (the CelebA-HQ / FFHQ rule: a square
from the eye centres and the mouth centre), and so is the frontal view of the toolkit's synthetic
portraits (:func:`toolkit.synthetic.heads.alignment`), so an aligned mask under the frontal camera and
:func:`toolkit.geometry.cameras.portrait_intrinsics` is already close. A user's own mask may be cropped,
scaled or rotated differently; stage 2 then needs a 2D similarity on top of the pose.

A 2D similarity of the image is exact for both camera models as a change of camera: scale = focal length
times ``exp(log_scale)``, translation = principal point shifted by ``shift`` focal lengths, rotation =
turning the camera about its optical axis (``roll``). :class:`PortraitCameras` holds, per portrait, that
similarity plus an orbit of the camera about its target (``yaw``, ``pitch``), and applies them to any
view's stored camera. :func:`mask_similarity` initialises the similarity from the mask itself: the crop
the alignment rule gives for the mask's eye and mouth centroids, compared with the canonical crop.

Conventions: OpenCV cameras (x right, y down, z forward), world Y-up; pixel (u, v) = (column, row);
angles in radians; ``yaw`` turns the camera about the world y axis through its target, ``pitch`` about the
world x axis, ``roll`` about the camera's own z axis (positive roll turns the displayed image counter-clockwise).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from toolkit.labels import SOF20

_ID = {name: i for i, name in enumerate(SOF20.names)}

SIMILARITY_FIELDS = ("log_scale", "shift_x", "shift_y", "roll")
"""Columns of :attr:`PortraitCameras.similarity`."""
POSE_FIELDS = ("yaw", "pitch")
"""Columns of :attr:`PortraitCameras.pose`."""


class Landmarks(NamedTuple):
    """Alignment landmarks of a label map, (u, v) pixel coordinates."""

    eye_image_left: np.ndarray
    """Centroid of the eye on the image's left (the person's right eye)."""
    eye_image_right: np.ndarray
    mouth: np.ndarray
    """Centroid of mouth and lips."""


class Crop(NamedTuple):
    """An aligned square crop in pixels."""

    center: np.ndarray
    """(u, v) centre."""
    half_side: float
    angle: float
    """Angle of the crop's x axis in the image (radians, from +u towards +v)."""


def mask_landmarks(labels: np.ndarray) -> Landmarks | None:
    """Eye and mouth centroids of a SOF20 label map, or None when an eye or the mouth is not visible.

    Eyes hidden by glasses fall back to the halves of the glasses left and right of the image centre.
    """
    labels = np.asarray(labels)
    left, right = _centroid(labels, "r_eye"), _centroid(labels, "l_eye")
    if left is None or right is None:
        glasses = labels == _ID["eye_g"]
        mid = labels.shape[1] // 2
        left = left if left is not None else _centroid_mask(glasses & (np.arange(labels.shape[1]) < mid))
        right = right if right is not None else _centroid_mask(glasses & (np.arange(labels.shape[1]) >= mid))
    mouth = _centroid(labels, "mouth", "u_lip", "l_lip")
    if left is None or right is None or mouth is None:
        return None
    return Landmarks(left, right, mouth)


def aligned_crop(landmarks: Landmarks) -> Crop:
    """The CelebA-HQ / FFHQ crop of landmarks: half-side ``max(2 |d|, 1.8 |m|)``, centre ``e + 0.1 m``,
    x axis along ``d`` minus ``m`` turned by 90 degrees (``e`` eye midpoint, ``d`` eye to eye, ``m`` eye
    midpoint to mouth)."""
    e = (landmarks.eye_image_left + landmarks.eye_image_right) / 2
    d = landmarks.eye_image_right - landmarks.eye_image_left
    m = landmarks.mouth - e
    axis = d - np.array([-m[1], m[0]])   # m turned by +90 degrees in (u, v): (0, 1) -> (-1, 0)
    half_side = max(2.0 * float(np.linalg.norm(d)), 1.8 * float(np.linalg.norm(m)))
    return Crop(e + 0.1 * m, half_side, math.atan2(axis[1], axis[0]))


def mask_similarity(labels: np.ndarray, K: np.ndarray, *, canonical_half_side: float | None = None) -> np.ndarray:
    """Initial similarity (``SIMILARITY_FIELDS``) that maps the canonical portrait framing onto a mask.

    Args:
        labels: (H, W) SOF20 label map.
        K: (3, 3) intrinsics of the mask's stored camera (the canonical framing: the aligned crop is
            centred on the principal point with half-side ``canonical_half_side``).
        canonical_half_side: half-side of the canonical crop in pixels (default W / 2, the crop filling
            the image, as :func:`toolkit.geometry.cameras.portrait_intrinsics` frames it).
    Returns:
        (4,) float32 [log_scale, shift_x, shift_y, roll]; zeros when the mask shows no eyes or mouth.
    """
    landmarks = mask_landmarks(labels)
    if landmarks is None:
        return np.zeros(4, np.float32)
    crop = aligned_crop(landmarks)
    h0 = labels.shape[1] / 2 if canonical_half_side is None else canonical_half_side
    f = float(K[0, 0])
    shift = (crop.center - np.array([K[0, 2], K[1, 2]])) / f
    return np.array([math.log(crop.half_side / h0), shift[0], shift[1], -crop.angle], np.float32)


class PortraitCameras(nn.Module):
    """Per-portrait camera corrections of a stage-2 fit: orbit (yaw, pitch) and image similarity.

    Args:
        targets: (P, 3) orbit centres (the point of each portrait's fitted camera axis closest to the origin).
        similarity: (P, 4) initial [log_scale, shift_x, shift_y, roll] (default zeros: no change).
        fit_pose: optimise yaw and pitch.
        fit_similarity: optimise the similarity.
    """

    def __init__(self, targets: torch.Tensor, similarity: torch.Tensor | None = None, *, fit_pose: bool = True,
                 fit_similarity: bool = True):
        super().__init__()
        targets = torch.as_tensor(targets, dtype=torch.float32)
        n = targets.shape[0]
        self.register_buffer("targets", targets)
        self.pose = nn.Parameter(torch.zeros(n, len(POSE_FIELDS)), requires_grad=fit_pose)
        sim = torch.zeros(n, len(SIMILARITY_FIELDS)) if similarity is None else torch.as_tensor(similarity).float()
        self.similarity = nn.Parameter(sim.clone(), requires_grad=fit_similarity)

    def forward(self, index: torch.Tensor, cam2world: torch.Tensor,
                K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply portrait ``index``'s corrections to stored cameras.

        Args:
            index: (B,) portrait indices.
            cam2world: (B, 4, 4) stored OpenCV cam2world.
            K: (B, 3, 3) stored intrinsics.
        Returns:
            (cam2world (B, 4, 4), K (B, 3, 3)) of the corrected cameras.
        """
        yaw, pitch = self.pose[index].unbind(-1)
        log_scale, sx, sy, roll = self.similarity[index].unbind(-1)
        cams = orbit(cam2world, self.targets[index], yaw, pitch)
        cams = _with_rotation(cams, cams[:, :3, :3] @ _rot_z(roll))
        f = K[:, 0, 0]
        K2 = K.clone()
        scale = torch.exp(log_scale)
        K2[:, 0, 0] = K[:, 0, 0] * scale
        K2[:, 1, 1] = K[:, 1, 1] * scale
        K2[:, 0, 2] = K[:, 0, 2] + f * sx
        K2[:, 1, 2] = K[:, 1, 2] + f * sy
        return cams, K2


def orbit(cam2world: torch.Tensor, target: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """Turn cameras about ``target`` as :func:`toolkit.geometry.cameras.orbit_cameras` places them: the world
    rotation R = R_y(yaw) R_x(-pitch) applied to position and axes.

    Args:
        cam2world: (B, 4, 4); target: (B, 3); yaw, pitch: (B,) radians.
    Returns:
        (B, 4, 4) cam2world.
    """
    R = _rot_y(yaw) @ _rot_x(-pitch)  # positive pitch raises the camera, as orbit_cameras
    centre = target + (R @ (cam2world[:, :3, 3] - target)[..., None])[..., 0]
    return _with_centre(_with_rotation(cam2world, R @ cam2world[:, :3, :3]), centre)


def _with_rotation(cam2world: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    top = torch.cat([rotation, cam2world[:, :3, 3:]], -1)
    return torch.cat([top, cam2world[:, 3:]], 1)


def _with_centre(cam2world: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    top = torch.cat([cam2world[:, :3, :3], centre[..., None]], -1)
    return torch.cat([top, cam2world[:, 3:]], 1)


def _rot_x(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


def _rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def _rot_z(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*a.shape, 3, 3)


def _centroid(labels: np.ndarray, *names: str) -> np.ndarray | None:
    return _centroid_mask(np.isin(labels, [_ID[n] for n in names]))


def _centroid_mask(mask: np.ndarray) -> np.ndarray | None:
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()]) if rows.size else None
