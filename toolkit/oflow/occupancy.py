"""Occupancy labels from dense surface samples: ``pcl_seq`` -> ``points_seq`` for real scans.

The original dataset labelled its uniform IoU points with an inside-mesh test on the watertight D-FAUST
registrations (oflow.md section 3); real scans such as the shipped demo have only surface points. This
module recovers the inside from the points alone, in two stages:

1. Voxels (coarse and robust). Mark the voxels that hold a sample, dilate them by ``dilation`` voxels
   so sampling gaps cannot leak, and flood-fill the outside from the grid border
   (``scipy.ndimage.binary_fill_holes``). Every voxel outside this thickened shell lies wholly inside or
   wholly outside the surface, so its flood-fill label is exact.
2. Near the surface (accurate). A query in a shell voxel (the only place where the voxels can be
   wrong, including gaps the dilation closed) gets the sign of the distance-weighted mean of
   ``dot(q - s_j, n_j)`` over its ``k_sign`` nearest samples s_j. Normals n_j come from PCA of each
   sample's ``k_normals`` neighbours, oriented outward by the gradient of the blurred solid voxels.

Both stages use scipy (``ndimage``, ``cKDTree``). Coordinates are whatever the samples use; the grid
covers the samples' bounding box plus a margin, and queries outside it are outside.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from toolkit.io import DataError
from toolkit.oflow.data import (
    BOX_HALF,
    N_POINTS,
    PCL_DIR,
    POINTS_DIR,
    list_frames,
    read_pcl_frame,
    write_points_frame,
)


class SurfaceOccupancy:
    """Inside test for the closed surface sampled by ``points``.

    Args:
        points: (P, 3) dense samples of one or more closed surfaces (P >= ``k_normals``).
        resolution: voxels along the largest side of the samples' bounding box (fewer when the samples
            are too sparse for that grid: the voxel is at least 5 median sample spacings).
        dilation: shell thickening in voxels.
        k_normals: neighbours for the PCA normals.
        k_sign: nearest samples that vote on the sign near the surface.

    Attributes:
        spacing: median nearest-neighbour distance of the samples.
        voxel: the voxel edge length.
        solid: (X, Y, Z) bool voxels, thickened shell plus the enclosed inside.
        n_bodies: connected components of ``solid`` (1 for one closed body).
    """

    def __init__(self, points: np.ndarray, *, resolution: int = 128, dilation: int = 1,
                 k_normals: int = 16, k_sign: int = 8):
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"points must be (P, 3); got shape {pts.shape}")
        if pts.shape[0] < max(k_normals, k_sign):
            raise ValueError(f"need at least {max(k_normals, k_sign)} surface points; got {pts.shape[0]}")
        if not np.isfinite(pts).all():
            raise ValueError("points contain NaN or inf")
        self.points, self.k_normals, self.k_sign = pts, int(k_normals), int(k_sign)
        lo, hi = pts.min(0), pts.max(0)
        if not float((hi - lo).max()) > 0:
            raise ValueError(f"all {pts.shape[0]} surface points are equal: they sample no surface")
        self.tree = cKDTree(pts)
        sub = pts[np.random.default_rng(0).choice(len(pts), size=min(len(pts), 4000), replace=False)]
        self.spacing = float(np.median(self.tree.query(sub, k=2)[0][:, 1]))
        if not self.spacing > 0:
            raise ValueError("most surface points are duplicates (median spacing 0): they sample no surface")
        # voxels at least 5 median sample spacings wide hold ~5 samples per voxel of surface, so the
        # one-voxel dilation closes every sampling gap; sparser samples get a coarser grid
        self.voxel = max(float((hi - lo).max()) / resolution, 5.0 * self.spacing)
        if int(dilation) < 1:
            raise ValueError(f"dilation must be >= 1 voxel; got {dilation}")
        self.dilation = int(dilation)
        margin = self.dilation + 3
        self.origin = lo - margin * self.voxel
        shape = np.ceil((hi - lo) / self.voxel).astype(int) + 2 * margin + 1
        occupied = np.zeros(shape, dtype=bool)
        occupied[tuple(self._cells(pts).T)] = True
        full = np.ones((3, 3, 3), dtype=bool)
        self.shell = ndimage.binary_dilation(occupied, structure=full, iterations=self.dilation)
        self.solid = ndimage.binary_fill_holes(self.shell)
        self.n_bodies = int(ndimage.label(self.solid, structure=full)[1])
        self.normals = self._estimate_normals(occupied.shape)

    @property
    def enclosed_voxels(self) -> int:
        """Voxels wholly inside the surface (0 for an open surface, whose inside the flood fill reaches)."""
        return int((self.solid & ~self.shell).sum())

    @property
    def enclosed_fraction(self) -> float:
        """Enclosed (non-shell) voxels / solid voxels; near 0 means the shell leaked or the body is thin."""
        solid = int(self.solid.sum())
        return float((self.solid & ~self.shell).sum()) / max(solid, 1)

    def contains(self, query: np.ndarray, *, chunk: int = 262_144) -> np.ndarray:
        """(Q, 3) query points -> (Q,) bool, True inside."""
        query = np.asarray(query, dtype=np.float64)
        if query.ndim != 2 or query.shape[1] != 3:
            raise ValueError(f"query must be (Q, 3); got shape {query.shape}")
        out = np.empty(len(query), dtype=bool)
        for s in range(0, len(query), chunk):
            out[s:s + chunk] = self._contains(query[s:s + chunk])
        return out

    def volume(self, *, samples: int = 20_000, seed: int = 0) -> float:
        """Inside volume: enclosed voxels exactly, plus a Monte Carlo estimate over the shell voxels.

        ``samples`` uniform points in random shell voxels get the plane test, which makes the estimate
        unbiased with relative error about ``0.5 / sqrt(samples)`` of the shell volume.
        """
        cells = np.argwhere(self.shell)
        rng = np.random.default_rng(seed)
        pick = cells[rng.integers(len(cells), size=samples)]
        pts = self.origin + (pick + rng.random((samples, 3))) * self.voxel
        shell_inside = self.contains(pts).mean() * len(cells)
        return float(((self.solid & ~self.shell).sum() + shell_inside) * self.voxel ** 3)

    def _cells(self, p: np.ndarray) -> np.ndarray:
        return np.floor((p - self.origin) / self.voxel).astype(np.int64)

    def _contains(self, q: np.ndarray) -> np.ndarray:
        cells = self._cells(q)
        in_grid = np.flatnonzero(((cells >= 0) & (cells < np.array(self.solid.shape))).all(1))
        label = np.zeros(len(q), dtype=bool)
        idx = tuple(cells[in_grid].T)
        label[in_grid] = self.solid[idx]
        # only shell voxels can be wrong (everything else is wholly inside or outside): plane-test those
        near = in_grid[self.shell[idx]]
        if near.size:
            label[near] = self._plane_sign(q[near]) < 0
        return label

    def _plane_sign(self, q: np.ndarray) -> np.ndarray:
        """Distance-weighted mean signed distance to the tangent planes of the k nearest samples."""
        dist, nb = self.tree.query(q, k=self.k_sign)
        normals = self.normals[nb]
        signed = np.einsum("qkc,qkc->qk", q[:, None, :] - self.points[nb], normals)
        w = 1.0 / (dist + 1e-3 * self.voxel) ** 2
        return (w * signed).sum(1) / w.sum(1)

    def _estimate_normals(self, shape: tuple[int, ...]) -> np.ndarray:
        """(P, 3) outward unit normals: PCA at one sample per occupied voxel, shared by the voxel's samples."""
        flat = np.ravel_multi_index(self._cells(self.points).T, shape)
        _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        rep = self.points[first]
        _, nb = self.tree.query(rep, k=self.k_normals)
        d = self.points[nb] - self.points[nb].mean(1, keepdims=True)
        _, vecs = np.linalg.eigh(np.matmul(d.transpose(0, 2, 1), d))
        n = vecs[:, :, 0]  # eigenvector of the smallest eigenvalue
        # orient outward: against the gradient of the blurred solid, which points inward
        blurred = ndimage.gaussian_filter(self.solid.astype(np.float32), sigma=self.dilation + 1.0)
        coords = ((rep - self.origin) / self.voxel - 0.5).T  # voxel-centre grid coordinates
        inward = np.stack([ndimage.map_coordinates(g, coords, order=1, mode="nearest")
                           for g in np.gradient(blurred)], 1)
        n[np.einsum("nc,nc->n", n, inward) > 0] *= -1
        return n[inverse.ravel()]


def occupancy_from_surface_points(points: np.ndarray, query: np.ndarray, *, resolution: int = 128,
                                  dilation: int = 1, k_normals: int = 16, k_sign: int = 8) -> np.ndarray:
    """Inside labels of ``query`` for the closed surface densely sampled by ``points``.

    Args:
        points: (P, 3) surface samples (e.g. one ``pcl_seq`` frame, 100k points).
        query: (Q, 3) points to label, in the same coordinates.
        resolution, dilation, k_normals, k_sign: see :class:`SurfaceOccupancy`.

    Returns:
        (Q,) bool, True inside.
    """
    return SurfaceOccupancy(points, resolution=resolution, dilation=dilation, k_normals=k_normals,
                            k_sign=k_sign).contains(query)


class ScanOccupancy(NamedTuple):
    """What :func:`derive_scan_occupancy` wrote and measured, per frame (F frames)."""

    points_dir: Path
    """The written ``points_seq`` folder."""
    frames: tuple[str, ...]
    """(F,) frame file names."""
    inside_fraction: np.ndarray
    """(F,) fraction of the uniform box points labelled inside."""
    volume: np.ndarray
    """(F,) inside volume in each frame's own normalised units (grid-integrated, accurate)."""
    world_volume: np.ndarray
    """(F,) inside volume in world units (``volume * scale**3``): constant for a rigid-volume body."""
    n_bodies: np.ndarray
    """(F,) connected solid components (1 for one closed body)."""


def derive_scan_occupancy(sequence_dir: str | os.PathLike, *, n_points: int = N_POINTS, seed: int = 0,
                          resolution: int = 128, progress: bool = True, overwrite: bool = True) -> ScanOccupancy:
    """Write ``points_seq`` for a sequence that has only ``pcl_seq`` and measure each frame's inside volume.

    For every ``pcl_seq`` frame: draw ``n_points`` uniform points in the original's padded box
    [-0.55, 0.55]^3 of that frame's normalised coordinates (rng seeded by (seed, frame number)), round
    them to float16 as stored, label them with :class:`SurfaceOccupancy` of the frame's surface points,
    and write ``points_seq/<same name>.npz`` with the frame's own loc and scale.

    The frames are written into a sibling folder that becomes ``points_seq`` only when every frame is
    done (an error or interrupt leaves the sequence as it was), with ``points_seq/derived.json``
    recording the settings. An existing ``points_seq`` is replaced only with ``overwrite`` and only if
    it was derived here before: labels of another origin (the exact ones of a synthetic or mesh-based
    dataset) are never replaced.

    Raises:
        DataError: no readable ``pcl_seq`` frames; a frame whose points are too few, all equal, or do not
            enclose a volume (an open scan: its inside labels would be wrong); an existing ``points_seq``
            that may not be replaced.
    """
    import json

    from tqdm.auto import tqdm

    from toolkit.io import atomic_save_text, staged_folder

    seq = Path(sequence_dir)
    if seq.name == PCL_DIR:
        seq = seq.parent
    if not (seq / PCL_DIR).is_dir():
        raise DataError(seq, f"no {PCL_DIR}/ folder: expected a sequence folder holding {PCL_DIR}/%08d.npz")
    files = list_frames(seq / PCL_DIR)
    fraction, volume, world, bodies = [], [], [], []
    settings = {"n_points": int(n_points), "seed": int(seed), "resolution": int(resolution),
                "frames": [p.name for p in files]}
    with staged_folder(seq / POINTS_DIR, overwrite=overwrite, owned=_derived_here,
                       what=f"{POINTS_DIR} (occupancy labels)") as work:
        for path in tqdm(files, desc=f"occupancy {seq.name}", disable=not progress):
            frame = read_pcl_frame(path)
            surface = _frame_surface(path, frame.points, resolution)
            rng = np.random.default_rng([seed, int(path.stem)])
            query = rng.uniform(-BOX_HALF, BOX_HALF, size=(n_points, 3)).astype(np.float16)
            occ = surface.contains(query.astype(np.float64))
            write_points_frame(work / path.name, query, occ, frame.loc, float(frame.scale))
            fraction.append(occ.mean())
            volume.append(surface.volume())
            world.append(volume[-1] * float(frame.scale) ** 3)
            bodies.append(surface.n_bodies)
        atomic_save_text(work / DERIVED_FILE, json.dumps({"generator": "toolkit.oflow.occupancy", **settings},
                                                         indent=1) + "\n")
    return ScanOccupancy(seq / POINTS_DIR, tuple(p.name for p in files), np.array(fraction), np.array(volume),
                         np.array(world), np.array(bodies))


def write_occupancy_from_scan(sequence_dir: str | os.PathLike, *, n_points: int = N_POINTS, seed: int = 0,
                              resolution: int = 128, overwrite: bool = False) -> Path:
    """Derive ``points_seq`` beside ``pcl_seq`` (see :func:`derive_scan_occupancy`); returns its folder.

    The ``occupancy`` command: an existing ``points_seq`` is an error unless ``overwrite`` (and then only
    one derived here before is replaced).
    """
    return derive_scan_occupancy(sequence_dir, n_points=n_points, seed=seed, resolution=resolution,
                                 overwrite=overwrite).points_dir


DERIVED_FILE = "derived.json"
"""In a derived ``points_seq``: the settings it was derived with (marks labels this module may replace)."""


def _derived_here(points_dir: Path) -> bool:
    return (points_dir / DERIVED_FILE).is_file()


def _frame_surface(path: Path, points: np.ndarray, resolution: int) -> SurfaceOccupancy:
    """The inside test of one pcl frame, or a DataError naming the frame when its points cannot give one."""
    try:
        surface = SurfaceOccupancy(points.astype(np.float64), resolution=resolution)
    except ValueError as exc:
        raise DataError(path, f"cannot derive occupancy: {exc}") from None
    if surface.enclosed_voxels == 0:
        raise DataError(path, f"the surface points enclose no volume at voxel size {surface.voxel:.3g}: an open "
                              "scan (a hole wider than a voxel) or a body thinner than two voxels; inside "
                              "labels would be wrong (fill the holes, or sample the closed surface densely)")
    return surface
