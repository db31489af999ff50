"""Occupancy Flow data: the D-FAUST sequence layout, readers, writers, validation, packing and the Dataset.

Reference: oflow.md sections 2 (training samples) and 3 (data format). Layout::

    <root>/[<category>/]<sequence>/points_seq/%08d.npz   occupancy supervision (optional for inference)
                                   pcl_seq/%08d.npz      surface points with index correspondences
                                   points_near_seq/%08d.npz  optional: occupancy points near the surface
    <root>/[<category>/]<split>.lst                      one sequence name per line

The category level is optional: a root may hold sequences directly (like the shipped demo).

Frame files (exact keys and dtypes of the original, written with plain ``np.savez``):

- ``points_seq``: ``points`` float16 (N, 3) uniform in [-0.55, 0.55]^3, ``occupancies`` uint8 (ceil(N/8),)
  = ``np.packbits`` of N bools, ``loc`` float16 (3,), ``scale`` float16 ().
- ``pcl_seq``: ``points`` float16 (P, 3), ``loc`` float16 (3,), ``scale`` float64 ().
- ``points_near_seq`` (the toolkit's addition, written for synthetic bodies): ``points_seq``'s format, the
  points drawn around the surface (:func:`near_surface_samples`), so that training sees the thin limbs
  that uniform points in the box (the body fills 1-2 % of it) almost never hit.

Each frame is normalised on its own (world = loc + scale * points); every consumer re-expresses frame i
in frame 0's normalised coordinates with :func:`normalize_to_frame0`. Frame order is the sorted file
name order (the original's ``sample_mesh.py`` did not sort its glob; this code always sorts).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from toolkit.io import (
    DataError,
    Problem,
    atomic_save_npy,
    atomic_save_npz,
    atomic_save_text,
    atomic_write,
    load_npz,
)

POINTS_DIR = "points_seq"
PCL_DIR = "pcl_seq"
NEAR_DIR = "points_near_seq"
"""Optional: occupancy points near the surface (points_seq's format), for near-surface sampling in training."""
FIELD_DIRS = (POINTS_DIR, PCL_DIR)
ALL_FIELD_DIRS = (POINTS_DIR, PCL_DIR, NEAR_DIR)
N_POINTS = 100_000
BOX_PADDING = 0.1
BOX_HALF = 0.5 * (1.0 + BOX_PADDING)  # the original's uniform IoU points live in [-0.55, 0.55]^3
FRAME_RE = re.compile(r"^(\d{8})\.npz$")
SPLIT_SUFFIX = ".lst"
CACHE_DIR_NAME = ".packed"

# key -> (dtype, shape rule) of each field; "N" is the per-file point count.
NEAR_SURFACE_SIGMAS = (0.01, 0.04)
"""Noise scales of :func:`near_surface_samples` (a tenth and half of a limb's thickness, roughly)."""
_POINTS_SPEC = {"points": np.float16, "occupancies": np.uint8, "loc": np.float16, "scale": np.float16}
_PCL_SPEC = {"points": np.float16, "loc": np.float16, "scale": np.float64}


# ---------------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------------

def write_points_frame(path: str | os.PathLike, points: np.ndarray, occupancies: np.ndarray, loc: np.ndarray,
                       scale: float) -> Path:
    """Write one ``points_seq`` frame exactly like the original (``sample_mesh.py --float16 --packbits``).

    Args:
        path: the ``%08d.npz`` file to write (atomically, uncompressed ``np.savez``).
        points: (N, 3) query points in this frame's normalised coordinates (stored as float16).
        occupancies: (N,) bool inside labels of ``points`` (stored packed, ``np.packbits``).
        loc: (3,) this frame's normalisation centre (stored float16).
        scale: this frame's normalisation scale (stored float16, 0-d).

    Returns:
        The written path.
    """
    points = np.asarray(points)
    occupancies = np.asarray(occupancies)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{path}: points must be (N, 3); got shape {points.shape}")
    if occupancies.shape != (points.shape[0],):
        raise ValueError(f"{path}: occupancies must be ({points.shape[0]},) to match points; got {occupancies.shape}")
    if occupancies.dtype != bool:
        if not np.isin(occupancies, (0, 1)).all():
            raise ValueError(f"{path}: occupancies must be boolean (0/1); got values outside {{0, 1}}")
        occupancies = occupancies.astype(bool)
    loc = _check_loc(path, loc)
    atomic_save_npz(path, compressed=False, points=points.astype(np.float16),
                    occupancies=np.packbits(occupancies), loc=loc.astype(np.float16),
                    scale=np.array(scale, dtype=np.float16))
    return Path(path)


def near_surface_samples(surface: np.ndarray, inside: Callable[[np.ndarray], np.ndarray], n: int,
                         rng: np.random.Generator, *, sigmas: Sequence[float] = NEAR_SURFACE_SIGMAS
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy samples around a surface: surface points plus Gaussian noise, labelled by an inside test.

    Args:
        surface: (P, 3) surface points (a frame's normalised coordinates).
        inside: exact inside test of (M, 3) float64 points -> (M,) bool, in the same coordinates.
        n: samples to draw, split evenly over ``sigmas``.
        rng: random source.
        sigmas: noise standard deviations (normalised units: the body's largest side is 1).
    Returns:
        (n, 3) float16 points and their (n,) bool labels, computed for the float16 values as stored.
    """
    counts = np.diff(np.linspace(0, n, len(sigmas) + 1).round().astype(int))
    parts = [surface[rng.integers(len(surface), size=k)] + rng.normal(0.0, s, (k, 3)) for k, s in zip(counts, sigmas)]
    points = np.concatenate(parts).astype(np.float16)
    return points, np.asarray(inside(points.astype(np.float64)), dtype=bool)


def write_pcl_frame(path: str | os.PathLike, points: np.ndarray, loc: np.ndarray, scale: float) -> Path:
    """Write one ``pcl_seq`` frame exactly like the original: points float16, loc float16, scale float64 0-d.

    Args:
        path: the ``%08d.npz`` file to write (atomically, uncompressed ``np.savez``).
        points: (P, 3) surface points in this frame's normalised coordinates; point k must be the same
            surface point in every frame of the sequence (index correspondences).
        loc: (3,) this frame's normalisation centre.
        scale: this frame's normalisation scale.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{path}: points must be (P, 3); got shape {points.shape}")
    loc = _check_loc(path, loc)
    atomic_save_npz(path, compressed=False, points=points.astype(np.float16), loc=loc.astype(np.float16),
                    scale=np.array(scale, dtype=np.float64))
    return Path(path)


def write_split(root: str | os.PathLike, name: str, sequences: Iterable[str]) -> Path:
    """Write the split list ``<root>/<name>.lst`` (one sequence name per line), atomically.

    ``root`` is the folder holding the sequences (the category folder, or the dataset root when the
    dataset has no category level). A list above the category folders may name ``category/sequence``.
    """
    names = [str(s) for s in sequences]
    bad = [s for s in names if not s or "\n" in s or s.count("/") > 1 or s != s.strip() or s.startswith("/")]
    if bad:
        raise ValueError(f"split {name!r}: invalid sequence names {bad}")
    path = Path(root) / f"{name}{SPLIT_SUFFIX}"
    atomic_save_text(path, "".join(f"{s}\n" for s in names))
    return path


def frame_file_name(index: int) -> str:
    """The original's frame file name: ``%08d.npz``."""
    return f"{int(index):08d}.npz"


def normalize_to_frame0(points_i: np.ndarray, loc_i: np.ndarray, scale_i: float, loc_0: np.ndarray,
                        scale_0: float) -> np.ndarray:
    """Re-express frame-i normalised points in frame 0's normalised coordinates.

    ``(loc_i + scale_i * p - loc_0) / scale_0`` (oflow.md section 2), computed in float32 (float64 when
    the points are float64).

    Args:
        points_i: (..., 3) points in frame i's normalised coordinates.
        loc_i, scale_i: frame i's normalisation (world = loc_i + scale_i * p).
        loc_0, scale_0: frame 0's normalisation.

    Returns:
        (..., 3) points in frame-0 normalised coordinates.
    """
    points_i = np.asarray(points_i)
    dtype = np.float64 if points_i.dtype == np.float64 else np.float32
    p = points_i.astype(dtype, copy=False)
    loc_i = np.asarray(loc_i, dtype=np.float64)
    loc_0 = np.asarray(loc_0, dtype=np.float64)
    # one affine map p * a + b with a, b computed in float64: exact for frame 0 up to rounding
    a = float(scale_i) / float(scale_0)
    b = ((loc_i - loc_0) / float(scale_0)).astype(dtype)
    return p * dtype(a) + b



# ---------------------------------------------------------------------------------------------------------
# Readers and discovery
# ---------------------------------------------------------------------------------------------------------

class PointsFrame(NamedTuple):
    """One ``points_seq`` frame as stored (occupancies unpacked)."""

    points: np.ndarray
    """(N, 3) float16 query points in this frame's normalised coordinates."""
    occupancies: np.ndarray
    """(N,) bool inside labels."""
    loc: np.ndarray
    """(3,) float16 normalisation centre."""
    scale: np.ndarray
    """() float16 normalisation scale."""


class PclFrame(NamedTuple):
    """One ``pcl_seq`` frame as stored."""

    points: np.ndarray
    """(P, 3) float16 surface points in this frame's normalised coordinates."""
    loc: np.ndarray
    """(3,) float16 normalisation centre."""
    scale: np.ndarray
    """() float64 normalisation scale."""


class SequenceInfo(NamedTuple):
    """Where one sequence lives."""

    path: Path
    """The sequence folder (holds ``points_seq`` and/or ``pcl_seq``)."""
    category: str
    """The category folder's name, or "" when the dataset has no category level."""
    name: str
    """The sequence folder's name, e.g. ``50002_light_hopping_loose``."""


def read_points_frame(path: str | os.PathLike) -> PointsFrame:
    """Read and check one ``points_seq`` frame; occupancies are unpacked with ``np.unpackbits(...)[:N]``.

    Raises:
        DataError: missing/corrupt file, missing keys, wrong dtypes or shapes, non-finite values.
    """
    arrays = _load_checked(path, POINTS_DIR)
    n = arrays["points"].shape[0]
    occ = np.unpackbits(arrays["occupancies"])[:n].astype(bool)
    return PointsFrame(arrays["points"], occ, arrays["loc"], arrays["scale"])


def read_pcl_frame(path: str | os.PathLike) -> PclFrame:
    """Read and check one ``pcl_seq`` frame.

    Raises:
        DataError: missing/corrupt file, missing keys, wrong dtypes or shapes, non-finite values.
    """
    arrays = _load_checked(path, PCL_DIR)
    return PclFrame(arrays["points"], arrays["loc"], arrays["scale"])


def is_sequence_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a ``points_seq`` or ``pcl_seq`` folder."""
    path = Path(path)
    return any((path / f).is_dir() for f in FIELD_DIRS)


def list_frames(field_dir: str | os.PathLike) -> list[Path]:
    """The frame files of one field folder in frame order (sorted ``%08d.npz`` names).

    Raises:
        DataError: the folder is missing or empty, a ``.npz`` name is not ``%08d.npz``, or the frame
            numbers are not consecutive.
    """
    field_dir = Path(field_dir)
    if not field_dir.is_dir():
        raise DataError(field_dir, "folder not found")
    # sorted: the original's sample_mesh.py globbed without sorting, so its frame order was arbitrary
    files = sorted(p for p in field_dir.glob("*.npz") if not p.name.startswith("."))
    bad = [p.name for p in files if not FRAME_RE.match(p.name)]
    if bad:
        raise DataError(field_dir, f"frame names {bad[:5]} are not %08d.npz")
    if not files:
        raise DataError(field_dir, "no frames (%08d.npz files)")
    gaps = _missing_frames([int(p.stem) for p in files])
    if gaps:
        raise DataError(field_dir, f"frame numbers are not consecutive: missing {_short(gaps)}")
    return files


def sequence_frames(seq_dir: str | os.PathLike) -> list[str]:
    """Frame names (``%08d.npz``) of a sequence, in order; points_seq and pcl_seq must agree when both exist.

    Raises:
        DataError: no field folder, or the two fields hold different frames.
    """
    seq_dir = Path(seq_dir)
    names = {f: [p.name for p in list_frames(seq_dir / f)] for f in FIELD_DIRS if (seq_dir / f).is_dir()}
    if not names:
        raise DataError(seq_dir, f"not a sequence folder: neither {POINTS_DIR} nor {PCL_DIR} found")
    if len(names) == 2 and names[POINTS_DIR] != names[PCL_DIR]:
        raise DataError(seq_dir, f"{POINTS_DIR} has {len(names[POINTS_DIR])} frames "
                                 f"({_frame_span(names[POINTS_DIR])}) but {PCL_DIR} has {len(names[PCL_DIR])} "
                                 f"({_frame_span(names[PCL_DIR])})")
    return next(iter(names.values()))


def find_sequences(root: str | os.PathLike, split: str | Sequence[str] | None = None) -> list[SequenceInfo]:
    """Find the sequences of a dataset root, a category folder or one sequence folder.

    Args:
        root: ``<root>/<category>/<sequence>``, ``<root>/<sequence>`` or a sequence folder itself.
        split: None for every sequence (sorted), a split name (reads ``<name>.lst`` in every folder that
            holds sequences), or an explicit list of names (``"seq"`` or ``"category/seq"``).

    Returns:
        The sequences in split-list order (sorted by category, then name, when ``split`` is None).

    Raises:
        DataError: no sequences, a split list is missing, or it names a sequence that does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    if root.name in FIELD_DIRS and is_sequence_dir(root.parent):
        root = root.parent
    if is_sequence_dir(root):
        return [SequenceInfo(root, "", root.name)]
    containers = _containers(root)
    if not containers:
        raise DataError(root, "no sequences found: expected <root>/[<category>/]<sequence>/{points_seq,pcl_seq}/")
    bad_names = [p for c, _ in containers for p in [c, *_subdirs(c)] if _name_problems(p)]
    if bad_names:
        raise DataError(bad_names[0], _name_problems(bad_names[0])[0].message)
    if split is None:
        return [SequenceInfo(d, cat, d.name) for c, cat in containers for d in _subdirs(c) if is_sequence_dir(d)]
    if isinstance(split, str):
        fname = f"{split}{SPLIT_SUFFIX}"
        lists = [(c, cat) for c, cat in containers if (c / fname).is_file()]
        if lists:
            return [_resolve_in(c, cat, name, c / fname) for c, cat in lists for name in _read_split(c / fname)]
        if (root / fname).is_file():  # one list above the category folders
            return [_resolve(root, containers, name, root / fname) for name in _read_split(root / fname)]
        where = ", ".join(str(c) for c, _ in containers)
        raise DataError(root, f"split list {fname} not found in {where}")
    return [_resolve(root, containers, str(name), None) for name in split]


def read_sequence(seq_dir: str | os.PathLike) -> PackedSequence:
    """Read every frame of a sequence into memory (no cache): same result as :func:`pack_sequence`.

    Raises:
        DataError: any problem :func:`validate_dataset` would report that prevents loading.
    """
    seq_dir = Path(seq_dir)
    frames = sequence_frames(seq_dir)
    out: dict[str, np.ndarray | None] = dict.fromkeys(_PACK_ARRAYS)
    if (seq_dir / POINTS_DIR).is_dir():
        pts = [_load_checked(seq_dir / POINTS_DIR / f, POINTS_DIR) for f in frames]
        _same_count(seq_dir / POINTS_DIR, frames, [a["points"].shape[0] for a in pts])
        out.update(points=np.stack([a["points"] for a in pts]), occupancies=np.stack([a["occupancies"] for a in pts]),
                   points_loc=np.stack([a["loc"] for a in pts]), points_scale=np.stack([a["scale"] for a in pts]))
    if (seq_dir / PCL_DIR).is_dir():
        pcl = [_load_checked(seq_dir / PCL_DIR / f, PCL_DIR) for f in frames]
        _same_count(seq_dir / PCL_DIR, frames, [a["points"].shape[0] for a in pcl])
        out.update(pcl=np.stack([a["points"] for a in pcl]), pcl_loc=np.stack([a["loc"] for a in pcl]),
                   pcl_scale=np.stack([a["scale"] for a in pcl]))
    if (seq_dir / NEAR_DIR).is_dir():
        near = [_load_checked(seq_dir / NEAR_DIR / f, NEAR_DIR) for f in frames]
        _same_count(seq_dir / NEAR_DIR, frames, [a["points"].shape[0] for a in near])
        out.update(near_points=np.stack([a["points"] for a in near]),
                   near_occupancies=np.stack([a["occupancies"] for a in near]),
                   near_loc=np.stack([a["loc"] for a in near]), near_scale=np.stack([a["scale"] for a in near]))
    return PackedSequence(path=seq_dir, frames=tuple(frames), **out)


# ---------------------------------------------------------------------------------------------------------
# Packed per-sequence cache
# ---------------------------------------------------------------------------------------------------------

_PACK_ARRAYS = {**dict.fromkeys(("points", "occupancies", "points_loc", "points_scale"), POINTS_DIR),
                **dict.fromkeys(("pcl", "pcl_loc", "pcl_scale"), PCL_DIR),
                **dict.fromkeys(("near_points", "near_occupancies", "near_loc", "near_scale"), NEAR_DIR)}
"""Cached array -> the field folder it comes from."""
_PACK_VERSION = 2


@dataclass(frozen=True)
class PackedSequence:
    """All frames of one sequence as stacked arrays (memory-mapped when it comes from :func:`pack_sequence`).

    F frames, N occupancy points and P surface points per frame. Fields of a missing folder are None.
    Coordinates are as stored: frame f's points are in frame f's own normalised coordinates.
    """

    path: Path
    """The sequence folder."""
    frames: tuple[str, ...]
    """(F,) frame file names, in order."""
    points: np.ndarray | None = None
    """(F, N, 3) float16 occupancy query points (``points_seq``)."""
    occupancies: np.ndarray | None = None
    """(F, ceil(N/8)) uint8 occupancies, packed as stored; see :meth:`occupancy`."""
    points_loc: np.ndarray | None = None
    """(F, 3) float16 ``points_seq`` loc per frame."""
    points_scale: np.ndarray | None = None
    """(F,) float16 ``points_seq`` scale per frame."""
    pcl: np.ndarray | None = None
    """(F, P, 3) float16 surface points (``pcl_seq``); index k is the same surface point in every frame."""
    pcl_loc: np.ndarray | None = None
    """(F, 3) float16 ``pcl_seq`` loc per frame."""
    pcl_scale: np.ndarray | None = None
    """(F,) float64 ``pcl_seq`` scale per frame."""
    near_points: np.ndarray | None = None
    """(F, Q, 3) float16 near-surface occupancy points (``points_near_seq``), when present."""
    near_occupancies: np.ndarray | None = None
    """(F, ceil(Q/8)) uint8 their packed occupancies; see :meth:`near_occupancy`."""
    near_loc: np.ndarray | None = None
    near_scale: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def n_points(self) -> int:
        """N, the occupancy points per frame (0 without ``points_seq``)."""
        return 0 if self.points is None else self.points.shape[1]

    @property
    def loc(self) -> np.ndarray:
        """(F, 3) per-frame loc: ``pcl_seq``'s when present, else ``points_seq``'s."""
        return self.pcl_loc if self.pcl_loc is not None else self.points_loc

    @property
    def scale(self) -> np.ndarray:
        """(F,) per-frame scale: ``pcl_seq``'s (float64) when present, else ``points_seq``'s."""
        return self.pcl_scale if self.pcl_scale is not None else self.points_scale

    def occupancy(self, frame: int, index: np.ndarray | slice | None = None) -> np.ndarray:
        """Unpacked occupancy bits of one frame: (N,) bool, or (len(index),) for an index array or slice."""
        if self.occupancies is None:
            raise DataError(self.path, f"no {POINTS_DIR}: occupancies are not available")
        return _unpack(self.occupancies[frame], self.n_points, index)

    def near_occupancy(self, frame: int, index: np.ndarray | slice | None = None) -> np.ndarray:
        """:meth:`occupancy` of the near-surface points (``points_near_seq``)."""
        if self.near_occupancies is None:
            raise DataError(self.path, f"no {NEAR_DIR}: near-surface occupancies are not available")
        return _unpack(self.near_occupancies[frame], self.near_points.shape[1], index)


def pack_sequence(seq_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> PackedSequence:
    """Pack a sequence into one memory-mapped ``.npy`` per field, built once and reused.

    The cache lives in ``<sequence>/.packed/`` (or ``<cache_dir>/<name>-<hash>/``; when the sequence
    folder is not writable, in the user cache dir ``~/.cache/toolkit/oflow``). A manifest records each
    source file's size, mtime and inode; the cache is rebuilt when any of them, or the frame list, changes.

    Args:
        seq_dir: the sequence folder.
        cache_dir: optional root folder for caches.

    Returns:
        A :class:`PackedSequence` of read-only memory maps.

    Raises:
        DataError: the sequence cannot be read (see :func:`read_sequence`).
    """
    seq_dir = Path(seq_dir).resolve()
    frames = sequence_frames(seq_dir)
    fields = [f for f in ALL_FIELD_DIRS if (seq_dir / f).is_dir()]
    sources = {f"{field}/{name}": _stat(seq_dir / field / name) for field in fields for name in frames}
    manifest = {"version": _PACK_VERSION, "frames": frames, "fields": fields, "sources": sources}
    cache = _cache_folder(seq_dir, cache_dir)
    if _read_manifest(cache) != manifest:
        _build_cache(seq_dir, cache, frames, fields)
        atomic_save_text(cache / "manifest.json", json.dumps(manifest) + "\n")
    arrays = {k: np.load(cache / f"{k}.npy", mmap_mode="r") for k in _pack_arrays(fields)}
    return PackedSequence(path=seq_dir, frames=tuple(frames), **arrays)


def cache_folder(seq_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder :func:`pack_sequence` uses for ``seq_dir``."""
    return _cache_folder(Path(seq_dir).resolve(), cache_dir)


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------

def validate_dataset(path: str | os.PathLike, *, window: int | None = None) -> list[Problem]:
    """Check a dataset root, a category folder, one sequence (or one field folder / frame file).

    Never raises on broken data: every problem is collected with the file (or folder) it concerns.
    Checks: folder structure and empty sequence folders; ``%08d.npz`` names and consecutive numbers;
    corrupt archives; keys, dtypes, shapes and finite values of every frame; packed occupancy length
    against the point count; equal point counts in every frame (pcl correspondences need them);
    points_seq and pcl_seq holding the same frames with the same loc/scale; folder names that are not
    UTF-8; split lists that are empty, list a sequence twice, have CRLF line endings or name missing
    sequences; with ``window``, sequences shorter than a ``window``-frame window (training skips them).

    Returns:
        The problems found; empty when the dataset is valid.
    """
    problems = _validate(Path(path))
    if window is not None:
        problems += _short_sequences(Path(path), int(window))
    return problems


def _validate(path: Path) -> list[Problem]:
    if not path.exists():
        return [Problem(path, "no such file or folder")]
    if path.is_file():
        field = path.parent.name
        if path.suffix == SPLIT_SUFFIX:
            return _split_problems(path, path.parent)
        if field not in ALL_FIELD_DIRS:
            return [Problem(path, f"not a frame of {POINTS_DIR}/, {PCL_DIR}/ or {NEAR_DIR}/")]
        return _frame_file_problems(path, field)[0]
    if path.name in FIELD_DIRS and not is_sequence_dir(path):
        path = path.parent
    if is_sequence_dir(path):
        return _name_problems(path) + _sequence_problems(path)
    containers = _containers(path)
    if not containers:
        return [Problem(path, "no sequences found: expected <root>/[<category>/]<sequence>/{points_seq,pcl_seq}/")]
    problems: list[Problem] = []
    container_paths = {c for c, _ in containers}
    for folder in sorted(container_paths | {path}):
        for child in _subdirs(folder):
            if child in container_paths:
                problems += _name_problems(child)
                continue
            if is_sequence_dir(child):
                problems += _name_problems(child) + _sequence_problems(child)
            else:
                problems.append(Problem(child, f"empty sequence folder: neither {POINTS_DIR}/ nor {PCL_DIR}/"))
        for lst in sorted(folder.glob(f"*{SPLIT_SUFFIX}")):
            problems += _split_problems(lst, folder, containers if folder == path else None)
    return problems


# ---------------------------------------------------------------------------------------------------------
# Windows and the training Dataset
# ---------------------------------------------------------------------------------------------------------

def subsequence_starts(n_frames: int, *, length: int = 17, offset: int = 0, stride: int = 1) -> list[int]:
    """Start frames of the windows of one sequence, with the original's semantics.

    The first ``offset`` frames are dropped, then every ``stride``-th start in ``offset .. n_frames - length``
    is one window (the original: offset_sequence 15, stride 1, length 17).

    Example: 20 frames, length 17 -> starts [0, 1, 2, 3]; with offset 2 -> [2, 3].
    """
    if length < 1 or stride < 1 or offset < 0:
        raise ValueError(f"need length >= 1, stride >= 1, offset >= 0; got {length}, {stride}, {offset}")
    return list(range(offset, n_frames - length + 1, stride))


class SequenceDataset(torch.utils.data.Dataset):
    """Windows of D-FAUST-style sequences, sampled like the original's training and evaluation fields.

    Every window of ``length`` frames (see :func:`subsequence_starts`) is one item. All coordinates are
    in the window's frame-0 normalised coordinates (frame 0 = the window's first frame). Times are
    ``t_i = i / (L - 1)``. Sampling is reproducible per (seed, epoch, index); call :meth:`set_epoch`
    once per epoch (evaluation items ignore the epoch).

    Training items (``eval=False``), L = length:

    - ``inputs`` (L, n_input_points, 3): the same pcl indices in every frame (trajectories), plus
      Gaussian noise of std ``input_noise``.
    - ``points`` (n_points, 3), ``points.occ`` (n_points,): frame-0 occupancy points, drawn with
      replacement (as the original).
    - ``points_t`` (n_points_t, 3), ``points_t.occ`` (n_points_t,), ``points_t.time`` (): one frame
      chosen uniformly from 0..L-1 and its time.
    - ``pointcloud`` (L, n_corr_points, 3): noise-free trajectories for the correspondence loss.
    - ``times`` (L,), ``sequence`` (str), ``start`` () int64.

    Evaluation items (``eval=True``): ``inputs`` as above (noise included, as in the original);
    ``points`` (L, n_eval_points, 3) and ``points.occ`` (L, n_eval_points): the FIRST n_eval_points of each
    frame, with ``eval_jitter`` Gaussian noise on the float16 points (the original's symmetry breaking);
    ``pointcloud`` (L, P, 3): the full surface point cloud; ``times``, ``sequence``, ``start``.

    Without ``occupancy`` (e.g. scans with only ``pcl_seq``) the ``points*`` keys are left out.

    Args:
        root: dataset root, category folder or one sequence (see :func:`find_sequences`).
        split: None (all sequences), a split-list name, or a list of sequence names.
        length, offset, stride: windowing (see :func:`subsequence_starts`); the original used 17, 15, 1.
        n_input_points, input_noise: input trajectories and their Gaussian noise std (300, 0.001).
        n_points, n_points_t: occupancy points at t=0 and at the random frame (512 each).
        n_corr_points: trajectories for the correspondence loss (100).
        seed: base seed; items are drawn from ``default_rng([seed, epoch, index])``.
        eval: return evaluation items (all frames, deterministic).
        n_eval_points, eval_jitter: first points per frame in eval items, and their jitter std.
        occupancy: load ``points_seq`` (required unless False).
        cache_dir: where packed caches go (see :func:`pack_sequence`).
        near_surface: fraction of the training occupancy points (``points`` and ``points_t``) drawn from
            ``points_near_seq`` instead of the uniform ``points_seq`` (0: the original's sampling).
    """

    def __init__(self, root: str | os.PathLike, *, split: str | Sequence[str] | None = None, length: int = 17,
                 offset: int = 0, stride: int = 1, n_input_points: int = 300, input_noise: float = 0.001,
                 n_points: int = 512, n_points_t: int = 512, n_corr_points: int = 100, seed: int = 0,
                 eval: bool = False, n_eval_points: int = 10_000, eval_jitter: float = 1e-4,
                 occupancy: bool = True, cache_dir: str | os.PathLike | None = None, near_surface: float = 0.0):
        self.root = Path(root)
        self.sequences = find_sequences(self.root, split)
        self.length, self.offset, self.stride = int(length), int(offset), int(stride)
        self.n_input_points, self.input_noise = int(n_input_points), float(input_noise)
        self.n_points, self.n_points_t, self.n_corr_points = int(n_points), int(n_points_t), int(n_corr_points)
        self.seed, self.eval, self.epoch = int(seed), bool(eval), 0
        self.n_eval_points, self.eval_jitter = int(n_eval_points), float(eval_jitter)
        self.occupancy, self.cache_dir = bool(occupancy), cache_dir
        if not 0.0 <= near_surface <= 1.0:
            raise ValueError(f"near_surface must be a fraction in [0, 1]; got {near_surface}")
        self.near_surface = float(near_surface)
        self._packs: list[PackedSequence | None] = []
        self.windows: list[tuple[int, int]] = []
        for i, seq in enumerate(self.sequences):
            pack = pack_sequence(seq.path, cache_dir=cache_dir)
            if pack.pcl is None:
                raise DataError(seq.path, f"no {PCL_DIR}/: the inputs need surface points")
            if self.occupancy and pack.points is None:
                raise DataError(seq.path, f"no {POINTS_DIR}/: derive it with `python -m toolkit occupancy "
                                          f"{seq.path}` or pass occupancy=False")
            if self.near_surface > 0 and not self.eval and pack.near_points is None:
                raise DataError(seq.path, f"no {NEAR_DIR}/ for near_surface={self.near_surface}: synthetic bodies "
                                          "written by an older toolkit lack it (regenerate them), or set near_surface=0")
            self._packs.append(pack)
            self.windows += [(i, s) for s in subsequence_starts(pack.n_frames, length=self.length,
                                                                 offset=self.offset, stride=self.stride)]
        used = {i for i, _ in self.windows}
        short = [seq.name for i, seq in enumerate(self.sequences) if i not in used]
        if not self.windows:
            raise DataError(self.root, f"no window of {self.length} frames after offset {self.offset} in "
                                       f"{len(self.sequences)} sequence(s)")
        if short:
            warnings.warn(f"{self.root}: {len(short)} sequence(s) have fewer than offset + length = "
                          f"{self.offset + self.length} frames and are not used: {_short(short)}", stacklevel=2)

    def set_epoch(self, epoch: int) -> None:
        """Draw different (but reproducible) training samples in each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.windows)

    def __getstate__(self):
        # memory maps would be pickled as copies: worker processes reopen them instead
        state = self.__dict__.copy()
        state["_packs"] = [None] * len(self._packs)
        return state

    def _pack(self, i: int) -> PackedSequence:
        if self._packs[i] is None:
            self._packs[i] = pack_sequence(self.sequences[i].path, cache_dir=self.cache_dir)
        return self._packs[i]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        if not 0 <= index < len(self.windows):
            raise IndexError(f"index {index} out of range for {len(self.windows)} windows")
        seq_i, start = self.windows[index]
        pack = self._pack(seq_i)
        L = self.length
        rng = np.random.default_rng([self.seed, 0 if self.eval else self.epoch, index])
        frames = np.arange(start, start + L)
        times = (np.arange(L) / (L - 1) if L > 1 else np.zeros(1)).astype(np.float32)
        pcl_loc, pcl_scale = pack.pcl_loc[frames].astype(np.float64), pack.pcl_scale[frames].astype(np.float64)
        n_pcl = pack.pcl.shape[1]

        idx = _choice(rng, n_pcl, self.n_input_points)
        inputs = _to_frame0(pack.pcl[start:start + L][:, idx], pcl_loc, pcl_scale)
        inputs += rng.normal(0.0, self.input_noise, inputs.shape).astype(np.float32)
        out: dict[str, torch.Tensor | str] = {"inputs": torch.from_numpy(inputs)}

        if self.occupancy:
            loc, scale = pack.points_loc[frames].astype(np.float64), pack.points_scale[frames].astype(np.float64)
            n = pack.n_points
            if self.eval:
                k = min(self.n_eval_points, n)
                pts = _to_frame0(pack.points[start:start + L, :k], loc, scale)
                pts += rng.normal(0.0, self.eval_jitter, pts.shape).astype(np.float32)
                occ = np.stack([pack.occupancy(f, slice(0, k)) for f in frames])
                out["points"], out["points.occ"] = torch.from_numpy(pts), torch.from_numpy(occ.astype(np.float32))
            else:
                pts0, occ0 = self._occupancy_sample(pack, rng, start, 0, self.n_points, loc[0], scale[0])
                out["points"], out["points.occ"] = torch.from_numpy(pts0), torch.from_numpy(occ0)
                ft = int(rng.integers(L))
                pts_t, occ_t = self._occupancy_sample(pack, rng, start, ft, self.n_points_t, loc[0], scale[0])
                out["points_t"], out["points_t.occ"] = torch.from_numpy(pts_t), torch.from_numpy(occ_t)
                out["points_t.time"] = torch.tensor(times[ft])

        if self.eval:
            out["pointcloud"] = torch.from_numpy(_to_frame0(pack.pcl[start:start + L], pcl_loc, pcl_scale))
        else:
            ic = _choice(rng, n_pcl, self.n_corr_points)
            out["pointcloud"] = torch.from_numpy(_to_frame0(pack.pcl[start:start + L][:, ic], pcl_loc, pcl_scale))
        out["times"] = torch.from_numpy(times)
        out["sequence"] = self.sequences[seq_i].name
        out["start"] = torch.tensor(start, dtype=torch.int64)
        return out


    def _occupancy_sample(self, pack: PackedSequence, rng: np.random.Generator, start: int, offset: int, k: int,
                          loc0: np.ndarray, scale0: float) -> tuple[np.ndarray, np.ndarray]:
        """k occupancy points of frame ``start + offset`` in frame-0 coordinates, drawn with replacement:
        a ``near_surface`` fraction from ``points_near_seq``, the rest from ``points_seq``."""
        f = start + offset
        k_near = round(self.near_surface * k)
        pts, occ = [], []
        for source, count in (("uniform", k - k_near), ("near", k_near)):
            if not count:
                continue
            near = source == "near"
            points, loc, scale = ((pack.near_points, pack.near_loc, pack.near_scale) if near
                                  else (pack.points, pack.points_loc, pack.points_scale))
            i = rng.integers(points.shape[1], size=count)
            pts.append(_to_frame0(points[f][i][None], loc[[f]].astype(np.float64), scale[[f]].astype(np.float64),
                                  loc0, scale0)[0])
            occ.append((pack.near_occupancy(f, i) if near else pack.occupancy(f, i)).astype(np.float32))
        return np.concatenate(pts), np.concatenate(occ)


# ---------------------------------------------------------------------------------------------------------
# Private helpers
# ---------------------------------------------------------------------------------------------------------

def _check_loc(path, loc) -> np.ndarray:
    loc = np.asarray(loc, dtype=np.float64)
    if loc.shape != (3,):
        raise ValueError(f"{path}: loc must be (3,); got shape {loc.shape}")
    return loc


def _load_checked(path: str | os.PathLike, field: str) -> dict[str, np.ndarray]:
    arrays = load_npz(path)
    messages = _frame_problems(field, arrays)
    if messages:
        raise DataError(path, "; ".join(messages))
    return arrays


def _missing_frames(indices: list[int]) -> list[int]:
    if not indices:
        return []
    present = set(indices)
    return [i for i in range(min(indices), max(indices) + 1) if i not in present]


def _short(items: Sequence, k: int = 5) -> str:
    items = list(items)
    head = ", ".join(str(x) for x in items[:k])
    return f"[{head}{', ...' if len(items) > k else ''}] ({len(items)})" if len(items) > k else f"[{head}]"


def _frame_span(names: Sequence[str]) -> str:
    return f"{names[0]}..{names[-1]}" if names else "none"


def _subdirs(folder: Path) -> list[Path]:
    # hidden folders (caches such as .packed) are not part of the dataset
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _containers(root: Path) -> list[tuple[Path, str]]:
    """Folders that hold sequences: the root itself and/or its category folders, with category names."""
    out = []
    if any(is_sequence_dir(d) for d in _subdirs(root)):
        out.append((root, ""))
    for d in _subdirs(root):
        if not is_sequence_dir(d) and any(is_sequence_dir(s) for s in _subdirs(d)):
            out.append((d, d.name))
    return out


def _read_split(lst: Path, check: bool = True) -> list[str]:
    """The names of a split list; with ``check``, an empty list or one naming a sequence twice is an error."""
    try:
        text = lst.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(lst, f"unreadable split list ({exc})") from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if check:
        if not names:
            raise DataError(lst, "empty split list: no sequence names")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DataError(lst, f"sequences {twice} are listed more than once (each would count several times)")
    return names


def _resolve_in(container: Path, category: str, name: str, lst: Path | None) -> SequenceInfo:
    if not is_sequence_dir(container / name):
        raise DataError(lst or container, f"sequence {name!r} not found in {container}")
    return SequenceInfo(container / name, category, name)


def _resolve(root: Path, containers: list[tuple[Path, str]], name: str, lst: Path | None) -> SequenceInfo:
    """A name ``seq`` or ``category/seq`` anywhere below ``root``."""
    if "/" in name:
        cat, seq = name.split("/", 1)
        return _resolve_in(root / cat, cat, seq, lst)
    hits = [(c, cat) for c, cat in containers if is_sequence_dir(c / name)]
    if len(hits) != 1:
        problem = "not found" if not hits else f"ambiguous (in {[cat for _, cat in hits]}); use category/name"
        raise DataError(lst or root, f"sequence {name!r} {problem} below {root}")
    return SequenceInfo(hits[0][0] / name, hits[0][1], name)


def _same_count(field_dir: Path, frames: Sequence[str], counts: Sequence[int]) -> None:
    if len(set(counts)) > 1:
        first = {n: f for f, n in zip(frames, counts)}
        raise DataError(field_dir, f"point counts differ between frames: {first}; every frame needs the same count")


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _cache_folder(seq_dir: Path, cache_dir: str | os.PathLike | None) -> Path:
    tag = f"{seq_dir.name}-{hashlib.sha1(str(seq_dir).encode()).hexdigest()[:10]}"
    if cache_dir is not None:
        return Path(cache_dir) / tag
    # read-only permission bits count even for root: shared reference data must stay untouched
    if os.access(seq_dir, os.W_OK) and seq_dir.stat().st_mode & 0o222:
        return seq_dir / CACHE_DIR_NAME
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "toolkit" / "oflow" / tag


def _read_manifest(cache: Path) -> dict | None:
    try:
        manifest = json.loads((cache / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not all((cache / f"{k}.npy").is_file()
                                                 for k in _pack_arrays(manifest.get("fields", []))):
        return None
    return manifest


def _pack_arrays(fields: Sequence[str]) -> list[str]:
    """The cached arrays that exist for these field folders."""
    return [k for k, field in _PACK_ARRAYS.items() if field in fields]


def _build_cache(seq_dir: Path, cache: Path, frames: list[str], fields: list[str]) -> None:
    """Stream every frame into one .npy per array (never holds the whole sequence in memory)."""
    cache.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (cache / "manifest.json").unlink()  # a half-rebuilt cache must not look valid
    for field in fields:
        files = [seq_dir / field / f for f in frames]
        first = _load_checked(files[0], field)
        n = first["points"].shape[0]
        F = len(frames)
        if field == POINTS_DIR:
            specs = {"points": ("points", (F, n, 3)), "occupancies": ("occupancies", (F, (n + 7) // 8)),
                     "points_loc": ("loc", (F, 3)), "points_scale": ("scale", (F,))}
        elif field == NEAR_DIR:
            specs = {"near_points": ("points", (F, n, 3)), "near_occupancies": ("occupancies", (F, (n + 7) // 8)),
                     "near_loc": ("loc", (F, 3)), "near_scale": ("scale", (F,))}
        else:
            specs = {"pcl": ("points", (F, n, 3)), "pcl_loc": ("loc", (F, 3)), "pcl_scale": ("scale", (F,))}
        small = {name: [] for name, (key, _) in specs.items() if key in ("loc", "scale")}
        big = [(name, key, shape) for name, (key, shape) in specs.items() if name not in small]
        handles = {}
        with contextlib.ExitStack() as stack:
            for name, key, shape in big:
                f = stack.enter_context(atomic_write(cache / f"{name}.npy"))
                np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(first[key].dtype),
                                                         "fortran_order": False, "shape": shape})
                handles[name] = (f, key)
            for i, path in enumerate(files):
                arrays = first if i == 0 else _load_checked(path, field)
                if arrays["points"].shape[0] != n:
                    raise DataError(path, f"{arrays['points'].shape[0]} points, but {files[0].name} has {n}; "
                                          "every frame needs the same count")
                for f, key in handles.values():
                    f.write(np.ascontiguousarray(arrays[key]).tobytes())
                for name, values in small.items():
                    values.append(arrays[specs[name][0]])
        for name, values in small.items():
            atomic_save_npy(cache / f"{name}.npy", np.stack(values))


def _unpack(packed: np.ndarray, n: int, index: np.ndarray | slice | None) -> np.ndarray:
    if index is None or isinstance(index, slice):
        return np.unpackbits(packed)[:n][index if index is not None else slice(None)].astype(bool)
    index = np.asarray(index, dtype=np.int64)
    return ((packed[index >> 3] >> (7 - (index & 7))) & 1).astype(bool)


def _choice(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    # distinct indices when possible (duplicated trajectories carry no information), else with replacement;
    # sorted so memory-mapped reads run forward through the file
    return np.sort(rng.choice(n, size=k, replace=k > n))


def _to_frame0(points: np.ndarray, loc: np.ndarray, scale: np.ndarray, loc0: np.ndarray | None = None,
               scale0: float | None = None) -> np.ndarray:
    """(L, n, 3) frame-i points with per-frame loc (L, 3) and scale (L,) -> float32 frame-0 coordinates."""
    loc0 = loc[0] if loc0 is None else loc0
    scale0 = scale[0] if scale0 is None else scale0
    a = (scale / scale0).astype(np.float32)[:, None, None]
    b = ((loc - loc0) / scale0).astype(np.float32)[:, None, :]
    return np.asarray(points, dtype=np.float32) * a + b


def _sequence_problems(seq: Path) -> list[Problem]:
    problems: list[Problem] = []
    frames: dict[str, dict[str, dict]] = {}  # field -> frame name -> {n, loc, scale}
    for field in ALL_FIELD_DIRS:
        fdir = seq / field
        if not fdir.is_dir():
            continue
        npz = sorted(p for p in fdir.glob("*.npz") if not p.name.startswith("."))
        good = [p for p in npz if FRAME_RE.match(p.name)]
        problems += [Problem(p, "unparsable frame name: expected %08d.npz") for p in npz if p not in good]
        if not good:
            problems.append(Problem(fdir, "no frames (%08d.npz files)"))
            continue
        gaps = _missing_frames([int(p.stem) for p in good])
        if gaps:
            problems.append(Problem(fdir, f"frame numbers are not consecutive: missing {_short(gaps)}"))
        info = {}
        for p in good:
            found, meta = _frame_file_problems(p, field)
            problems += found
            if meta is not None:
                info[p.name] = meta
        frames[field] = info
        counts = [(name, m["n"]) for name, m in info.items()]
        if counts:
            values, freq = np.unique([n for _, n in counts], return_counts=True)
            if len(values) > 1:
                common = int(values[np.argmax(freq)])
                why = "; correspondences need the same count in every frame" if field == PCL_DIR else ""
                problems += [Problem(fdir / name, f"{n} points, but most frames have {common}{why}")
                             for name, n in counts if n != common]
    if POINTS_DIR in frames and PCL_DIR in frames:
        pts_names = {p.name for p in (seq / POINTS_DIR).glob("*.npz") if FRAME_RE.match(p.name)}
        pcl_names = {p.name for p in (seq / PCL_DIR).glob("*.npz") if FRAME_RE.match(p.name)}
        if pts_names != pcl_names:
            msg = f"frame count mismatch: {POINTS_DIR} has {len(pts_names)} frames, {PCL_DIR} has {len(pcl_names)}"
            only_pts, only_pcl = sorted(pts_names - pcl_names), sorted(pcl_names - pts_names)
            if only_pts:
                msg += f"; only in {POINTS_DIR}: {_short(only_pts)}"
            if only_pcl:
                msg += f"; only in {PCL_DIR}: {_short(only_pcl)}"
            problems.append(Problem(seq, msg))
        for name in sorted(set(frames[POINTS_DIR]) & set(frames[PCL_DIR])):
            a, b = frames[POINTS_DIR][name], frames[PCL_DIR][name]
            # points_seq stores float16 scale, pcl_seq float64: compare at float16 precision
            if not (np.allclose(a["loc"], b["loc"], rtol=2e-3, atol=2e-3 * abs(b["scale"]))
                    and np.isclose(a["scale"], b["scale"], rtol=2e-3)):
                problems.append(Problem(seq / POINTS_DIR / name,
                                        f"loc/scale {a['loc'].tolist()}/{a['scale']:.4g} differ from "
                                        f"{PCL_DIR}/{name} {b['loc'].tolist()}/{b['scale']:.4g}"))
    return problems


def _name_problems(folder: Path) -> list[Problem]:
    try:
        folder.name.encode("utf-8")
    except UnicodeEncodeError:
        return [Problem(folder, f"folder name {folder.name!a} is not valid UTF-8: rename it (sequence names are "
                                "stored in checkpoints and split lists)")]
    return []


def _short_sequences(path: Path, window: int) -> list[Problem]:
    """Sequences with fewer than ``window`` frames (no training or evaluation window fits)."""
    try:
        sequences = find_sequences(path)
    except DataError:
        return []
    problems = []
    for info in sequences:
        counts = [len([p for p in (info.path / f).glob("*.npz") if FRAME_RE.match(p.name)])
                  for f in FIELD_DIRS if (info.path / f).is_dir()]
        n = max(counts, default=0)
        if n < window:
            problems.append(Problem(info.path, f"{n} frame(s), fewer than a {window}-frame window: training and "
                                               "evaluation skip this sequence"))
    return problems


def _frame_file_problems(path: Path, field: str) -> tuple[list[Problem], dict | None]:
    """Problems of one frame file, and its point count/loc/scale when readable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        return [Problem(path, f"corrupt or unreadable npz ({type(exc).__name__}: {exc})")], None
    messages = _frame_problems(field, arrays)
    if messages:
        return [Problem(path, m) for m in messages], None
    meta = {"n": arrays["points"].shape[0], "loc": arrays["loc"].astype(np.float64),
            "scale": float(arrays["scale"])}
    return [], meta


def _frame_problems(field: str, arrays: dict[str, np.ndarray]) -> list[str]:
    """Messages for one frame's arrays (empty when it matches the original format exactly)."""
    spec = _PCL_SPEC if field == PCL_DIR else _POINTS_SPEC
    missing = [k for k in spec if k not in arrays]
    out = [f"missing keys {missing}; found {sorted(arrays)}"] if missing else []
    for key, dtype in spec.items():
        if key in arrays and arrays[key].dtype != np.dtype(dtype):
            out.append(f"{key} has dtype {arrays[key].dtype}; expected {np.dtype(dtype)}")
    pts = arrays.get("points")
    n = None
    if pts is not None:
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
            out.append(f"points has shape {pts.shape}; expected (N, 3) with N > 0")
        else:
            n = pts.shape[0]
    if "loc" in arrays and arrays["loc"].shape != (3,):
        out.append(f"loc has shape {arrays['loc'].shape}; expected (3,)")
    if "scale" in arrays and arrays["scale"].shape != ():
        out.append(f"scale has shape {arrays['scale'].shape}; expected () (a 0-d array)")
    for key in ("points", "loc", "scale"):
        a = arrays.get(key)
        if a is not None and a.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(a)))
            if bad:
                out.append(f"{key} has {bad} non-finite (NaN/inf) values")
    scale = arrays.get("scale")
    if scale is not None and scale.shape == () and scale.dtype.kind == "f" and np.isfinite(scale) and scale <= 0:
        out.append(f"scale is {float(scale)}; expected > 0")
    occ = arrays.get("occupancies")
    if field != PCL_DIR and occ is not None and n is not None:
        expected = (n + 7) // 8
        if occ.shape != (expected,):
            out.append(f"occupancies has shape {occ.shape} ({occ.size * 8} bits) for {n} points; expected "
                       f"({expected},) = np.packbits of {n} bools")
        elif occ.dtype == np.uint8 and n % 8 and np.unpackbits(occ[-1:])[n % 8:].any():
            out.append(f"occupancies has set padding bits after bit {n}: packed for a different point count")
    return out


def _split_problems(lst: Path, folder: Path, containers=None) -> list[Problem]:
    try:
        names = _read_split(lst, check=False)
    except DataError as exc:
        return [Problem(lst, exc.problem)]
    problems = []
    if not names:
        problems.append(Problem(lst, "empty split list: no sequence names (write one name per line, or delete it)"))
    if b"\r" in lst.read_bytes():
        problems.append(Problem(lst, "Windows (CRLF) line endings: the original's loader keeps the \\r in the "
                                     "names and finds no sequence; convert it to LF (e.g. dos2unix)"))
    seen = set()
    for line, name in enumerate(names, 1):
        if name in seen:
            problems.append(Problem(lst, f"sequence {name!r} listed twice"))
        seen.add(name)
        ok = is_sequence_dir(folder / name)
        if not ok and containers:
            ok = any(is_sequence_dir(c / name) for c, _ in containers)
        if not ok:
            problems.append(Problem(lst, f"line {line}: sequence {name!r} not found in {folder}"))
    return problems
