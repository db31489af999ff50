"""A moving sphere in the Occupancy Flow data layout: closed-form occupancy, surface and correspondences.

Private fixture for tests and benchmarks of training and evaluation. A sphere of radius ``radius``
(world units) translates at constant ``velocity`` (world units per unit time, t = frame / (F - 1)).
Each frame is normalised on its own like D-FAUST (loc = bounding-box centre = the sphere's centre,
scale = largest bounding-box side = 2 radius), so in frame-0 coordinates frame i is the ball of radius
0.5 centred at ``velocity * t_i / scale``. Surface point k is the same material point in every frame.
With the defaults (radius 0.5, dyadic velocity, F - 1 a power of two) every stored float16 value and
every frame-0 re-expression is exact, so the labels equal the closed form bit for bit.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from toolkit.oflow.data import (
    BOX_HALF,
    NEAR_DIR,
    frame_file_name,
    near_surface_samples,
    write_pcl_frame,
    write_points_frame,
    write_split,
)


def write_moving_sphere_dataset(root: str | os.PathLike, *, sequences: Sequence[str] = ("s0", "s1"),
                                frames: int = 17, radius: float = 0.5, velocity: Sequence[float] = (0.5, 0.0, 0.0),
                                n_points: int = 4096, n_pcl: int = 2048, n_near: int = 0, seed: int = 0,
                                splits: dict[str, list[str]] | None = None) -> Path:
    """Write ``<root>/<name>/{points_seq,pcl_seq}`` (and ``points_near_seq``) for each name, plus split lists.

    Args:
        root: dataset root (no category level).
        sequences: sequence names; sequence j moves at ``velocity * (1 + j / 2)``.
        frames: frames per sequence.
        radius, velocity: the sphere (world units).
        n_points, n_pcl: occupancy points (uniform in the padded box) and surface points per frame.
        n_near: near-surface occupancy points per frame (``points_near_seq``; 0 writes none).
        splits: split name -> sequence names (default: every sequence in train, val and test).
    Returns:
        ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(n_pcl, 3))
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)  # material points: fixed on the sphere
    scale = 2.0 * radius
    for j, name in enumerate(sequences):
        v = np.asarray(velocity, dtype=np.float64) * (1.0 + j / 2)
        for f in range(frames):
            t = f / max(frames - 1, 1)
            centre = np.array([0.125, -0.25, 0.0625]) + v * t
            pts = rng.uniform(-BOX_HALF, BOX_HALF, (n_points, 3)).astype(np.float16)
            occ = np.linalg.norm(pts.astype(np.float64), axis=1) <= 0.5  # exact for the stored points
            write_points_frame(root / name / "points_seq" / frame_file_name(f), pts, occ, centre, scale)
            write_pcl_frame(root / name / "pcl_seq" / frame_file_name(f), 0.5 * unit, centre, scale)
            if n_near:
                near, near_occ = near_surface_samples(0.5 * unit, _inside_ball, n_near, rng)
                write_points_frame(root / name / NEAR_DIR / frame_file_name(f), near, near_occ, centre, scale)
    names = list(sequences)
    for split, members in (splits or {"train": names, "val": names, "test": names}).items():
        write_split(root, split, members)
    return root


def _inside_ball(p: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p, axis=1) <= 0.5


def sphere_batch(batch_size: int = 16, *, length: int = 17, n_input_points: int = 300, n_points: int = 512,
                 n_corr_points: int = 100, speed: float = 0.5, input_noise: float = 0.001,
                 seed: int = 0) -> dict:
    """A training batch in :class:`toolkit.oflow.data.SequenceDataset`'s layout, from moving unit-diameter balls.

    Item b is the ball of radius 0.5 moving from the origin along a random direction at ``speed``
    (frame-0 units per unit time), so occupancies, trajectories and times are exact. Keys: ``inputs``
    (B, L, n_input_points, 3), ``points`` / ``points.occ`` (B, n_points(, 3)), ``points_t`` /
    ``points_t.occ`` / ``points_t.time``, ``pointcloud`` (B, L, n_corr_points, 3), ``times`` (B, L).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    B, L = batch_size, length
    times = torch.linspace(0.0, 1.0, L)
    d = torch.nn.functional.normalize(torch.randn(B, 3, generator=g), dim=-1) * speed  # (B, 3) velocities

    def surface(n):
        u = torch.nn.functional.normalize(torch.randn(B, 1, n, 3, generator=g), dim=-1) * 0.5
        return u + d[:, None, None, :] * times[None, :, None, None]  # (B, L, n, 3)

    def box(n):
        return (torch.rand(B, n, 3, generator=g) * 2 - 1) * BOX_HALF

    inputs = surface(n_input_points) + input_noise * torch.randn(B, L, n_input_points, 3, generator=g)
    points, points_t = box(n_points), box(n_points)
    frame = torch.randint(0, L, (B,), generator=g)
    t = times[frame]
    centre_t = d * t[:, None]
    return {
        "inputs": inputs, "points": points, "points.occ": (points.norm(dim=-1) <= 0.5).float(),
        "points_t": points_t, "points_t.occ": ((points_t - centre_t[:, None]).norm(dim=-1) <= 0.5).float(),
        "points_t.time": t, "pointcloud": surface(n_corr_points), "times": times.expand(B, L).clone(),
    }
