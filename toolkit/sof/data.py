"""SOF data format: instance folders of multi-view label maps with cameras (reference: sof.md sections 3, 7).

Layout (the original's, as read by its ``FaceClassDataset``)::

    <root>/
      meta.json                 optional (written by this toolkit): projection, image size, label set
      excluded_views.json       optional curation list {instance: [view ids]}; files are never deleted
      <instance>/               sorted folder names give latent index order (hidden folders are ignored)
        seg_XX.png              (H, W) uint8 SOF ids 0..19, XX = view id
        seg_vis_XX.png          colour visualisation (enumerates views in the original)
        cam2world.npy           (V, 4, 4) OpenCV cam2world, row v = view id v
        intrinsic.npy           (3, 3), (1, 3, 3) or (V, 3, 3) pixel intrinsics of the stored PNGs
        zRange.npy              optional (V, 2) near/far per view
        depth_XX.png            optional camera-space depth: 8- or 16-bit, 0 = background, value/max maps
                                linearly into that view's zRange (needs zRange.npy)

``meta.json`` keys: ``projection`` ("ortho" | "perspective"), ``image_size`` (side of the stored label
maps in pixels), ``label_set`` (a :mod:`toolkit.labels` key), ``pixel_center`` (0.0: the original's
integer pixel coordinates; 0.5: pixel centres), plus free-form extras such as ``source``. Without it
the original's conventions apply: orthographic (unless the caller says otherwise), sof20, pixel_center 0.

Unlike the original, poses are looked up by the view id in the file name, never by position in a
(shuffled or curated) file list (sof.md 7.1, bug 1); train/validation splits are drawn per instance
from view ids with a name-derived seed, so they are disjoint and independent of file order (bug 2).

Public API: :func:`read_dataset` / :func:`read_meta` (strict readers), :func:`validate_dataset` (every
problem, never raises), :func:`load_exclusions` / :func:`save_exclusions` (curation), :func:`make_split`
and :class:`Split`, the torch :class:`SofDataset`, :func:`convert_celebamask`, :func:`resize_labels_nearest`,
and the writers :func:`write_instance` / :func:`write_meta`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from toolkit.geometry.cameras import (
    PORTRAIT_PERSPECTIVE_DISTANCE,
    PROJECTIONS,
    check_projection,
    orbit_cameras,
    pixel_grid,
    portrait_intrinsics,
    rigid_problem,
    scale_intrinsics,
)
from toolkit.io import (
    DataError,
    Problem,
    atomic_save_npy,
    atomic_save_text,
    load_npy,
    read_label_png,
    read_png,
    write_label_png,
    write_rgb_png,
)
from toolkit.labels import LABEL_SETS, SOF20_CELEBAMASK_PALETTE, celebamask_to_sof, get_label_set

META_FILE = "meta.json"
EXCLUSIONS_FILE = "excluded_views.json"
CAM2WORLD_FILE = "cam2world.npy"
INTRINSICS_FILE = "intrinsic.npy"
ZRANGE_FILE = "zRange.npy"
DEFAULT_PROJECTION = "ortho"
"""The released checkpoint's camera model (sof.md 2.4), assumed when meta.json does not say."""
PIXEL_CENTERS = (0.0, 0.5)
CELEBAMASK_CAMERA_RADIUS = {"ortho": 4.5, "perspective": PORTRAIT_PERSPECTIVE_DISTANCE}
"""Distance of the default frontal camera given to converted single-view masks (that of the synthetic
portraits, at which :func:`toolkit.geometry.cameras.portrait_intrinsics` frames the aligned crop)."""

_SEG_RE = re.compile(r"^seg_(\d+)\.png$")
_VIS_RE = re.compile(r"^seg_vis_(\d+)\.png$")
_DEPTH_RE = re.compile(r"^depth_(\d+)\.png$")
_KNOWN_FILES = {CAM2WORLD_FILE, INTRINSICS_FILE, ZRANGE_FILE, "params.npy"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
_META_KEYS = {"format", "projection", "image_size", "label_set", "pixel_center"}
_SPLIT_FORMAT = "sof-split"


# ----------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SofMeta:
    """Dataset-wide conventions (``meta.json``, or the original's defaults when it is absent)."""

    projection: str = DEFAULT_PROJECTION
    """"ortho" or "perspective"."""
    image_size: int | None = None
    """side of the stored label maps in pixels; None when not recorded."""
    label_set: str = "sof20"
    """label-set registry key (:data:`toolkit.labels.LABEL_SETS`)."""
    pixel_center: float = 0.0
    """0.0: integer pixel coordinates (the original); 0.5: pixel centres."""
    extra: dict = field(default_factory=dict, compare=False)
    """other meta.json entries (e.g. ``source``)."""
    from_file: bool = False
    """whether these values come from a meta.json."""

    @property
    def num_classes(self) -> int:
        return get_label_set(self.label_set).num_classes


@dataclass(frozen=True, eq=False)
class SofInstance:
    """One instance folder, read and checked.

    Attributes:
        name: folder name.
        folder: the folder.
        view_ids: every view id with a ``seg_XX.png`` (sorted; exclusions not applied).
        label_files: view id -> its ``seg_XX.png``.
        cam2world: (R, 4, 4) float64 OpenCV cam2world; row v is the pose of view v.
        intrinsics: (R, 3, 3) float64 pixel intrinsics of the stored PNGs (a shared K broadcast).
        zrange: (R, 2) float64 near/far per view, or None.
        depth_files: view id -> its ``depth_XX.png`` (only views that have one).
    """

    name: str
    folder: Path
    view_ids: tuple[int, ...]
    label_files: dict[int, Path]
    cam2world: np.ndarray
    intrinsics: np.ndarray
    zrange: np.ndarray | None = None
    depth_files: dict[int, Path] = field(default_factory=dict)

    def read_depth(self, view_id: int) -> np.ndarray:
        """(H, W) float32 camera-space depth of a view; NaN on background (DataError if it has none)."""
        if view_id not in self.depth_files:
            raise DataError(self.folder, f"no depth_{view_id:02d}.png (views with depth: {sorted(self.depth_files)})")
        if self.zrange is None:
            raise DataError(self.folder, f"depth maps need {ZRANGE_FILE} (their near/far range)")
        near, far = self.zrange[view_id]
        return read_depth_png(self.depth_files[view_id], near, far)

    def read_labels(self, view_id: int, num_classes: int = 20) -> np.ndarray:
        """(H, W) uint8 label map of a view at its stored size (DataError for unreadable or out-of-range ids)."""
        try:
            path = self.label_files[view_id]
        except KeyError:
            raise DataError(self.folder, f"no view {view_id}; views: {list(self.view_ids)}") from None
        return read_label_png(path, num_classes=num_classes)


@dataclass(frozen=True, eq=False)
class SofData:
    """A whole dataset read by :func:`read_dataset`.

    Attributes:
        root: dataset folder.
        meta: conventions (:class:`SofMeta`).
        instances: instance name -> :class:`SofInstance`, in sorted name order (= latent index order).
        exclusions: instance name -> excluded view ids (``excluded_views.json``).
    """

    root: Path
    meta: SofMeta
    instances: dict[str, SofInstance]
    exclusions: dict[str, list[int]]

    @property
    def instance_names(self) -> list[str]:
        return list(self.instances)

    def views(self, name: str) -> list[int]:
        """Sorted view ids of an instance that are not excluded."""
        excluded = set(self.exclusions.get(name, ()))
        return [v for v in self.instances[name].view_ids if v not in excluded]

    def samples(self) -> list[tuple[str, int]]:
        """Every usable (instance, view) pair, in instance then view-id order."""
        return [(name, v) for name in self.instances for v in self.views(name)]


# ----------------------------------------------------------------------------------------------------
# Reading and validation
# ----------------------------------------------------------------------------------------------------

def read_meta(root: str | os.PathLike, *, projection: str | None = None) -> SofMeta:
    """Read ``meta.json`` (or the original's defaults when absent).

    Args:
        root: dataset folder.
        projection: the caller's camera model. Used when meta.json is absent or silent; a meta.json that
            states a different one is an error.
    Raises:
        DataError: malformed meta.json (every problem listed).
    """
    meta, problems = _parse_meta(Path(root), projection)
    if problems:
        raise DataError(Path(root) / META_FILE, "; ".join(p.message for p in problems))
    return meta


def read_dataset(root: str | os.PathLike, *, projection: str | None = None, check_labels: bool = True) -> SofData:
    """Read a dataset folder strictly: any problem that :func:`validate_dataset` reports is an error.

    Args:
        root: dataset folder (instances are its sorted, non-hidden subfolders).
        projection: camera model when meta.json does not state one (default "ortho").
        check_labels: also read every label PNG (range, readability, sizes). False checks only the
            structure and cameras, which is enough for making splits.
    Raises:
        DataError: naming the root and listing every problem with its file.
    """
    data, problems = _scan(Path(root), projection, check_labels)
    if problems:
        raise DataError(root, _format_problems(problems))
    assert data is not None
    return data


def validate_dataset(root: str | os.PathLike) -> list[Problem]:
    """Every problem of a dataset folder, each naming its file; ``[]`` for a good dataset. Never raises.

    Checks: missing files (label maps, cam2world.npy, intrinsic.npy, a seg_vis without its seg);
    unexpected files that look like views and duplicate view ids; pose count versus view ids;
    non-rigid or non-finite poses; intrinsics (shape, fx/fy <= 0, NaN); zRange shape and order; label
    PNGs (readable, single-channel, ids in range); image sizes within an instance and against meta.json;
    malformed meta.json / excluded_views.json and exclusions naming unknown instances or views; an
    empty dataset. The contents of excluded views (pixels, pose, intrinsics) are not checked:
    excluding a view is the way to curate a bad one without deleting files.
    """
    root = Path(root)
    try:
        _, problems = _scan(root, None, True)
    except OSError as exc:  # e.g. a folder that cannot be listed
        problems = [Problem(exc.filename or root, f"cannot be read ({exc.strerror or exc})")]
    return problems


def load_exclusions(root: str | os.PathLike) -> dict[str, list[int]]:
    """``excluded_views.json`` as {instance name: sorted view ids}; {} when the file is absent.

    Raises:
        DataError: the file is not a JSON object of integer lists.
    """
    exclusions, problems = _parse_exclusions(Path(root))
    if problems:
        raise DataError(Path(root) / EXCLUSIONS_FILE, "; ".join(p.message for p in problems))
    return exclusions


def save_exclusions(root: str | os.PathLike, mapping: dict[str, Sequence[int]]) -> Path:
    """Write ``excluded_views.json`` atomically (files are never deleted; loaders skip these views).

    Args:
        root: dataset folder.
        mapping: {instance name: view ids to exclude}. Replaces the whole file; empty lists are dropped.
    Raises:
        ValueError: an unknown instance or view id, or a non-integer view id.
    """
    root = Path(root)
    names = set(_instance_names(root))
    clean: dict[str, list[int]] = {}
    for name, views in sorted(mapping.items()):
        if name not in names:
            raise ValueError(f"{root}: {name!r} is not an instance folder; instances: {_short_list(sorted(names))}")
        ids = sorted({_as_view_id(v, name) for v in views})
        available = set(view_files(root / name))
        missing = [v for v in ids if v not in available]
        if missing:
            raise ValueError(f"{root / name}: view ids {missing} have no seg_XX.png; views: {sorted(available)}")
        if ids:
            clean[name] = ids
    path = root / EXCLUSIONS_FILE
    atomic_save_text(path, json.dumps(clean, indent=2) + "\n")
    return path


def resize_labels_nearest(labels: np.ndarray, size: int | tuple[int, int], *, pixel_center: float = 0.0) -> np.ndarray:
    """Nearest-neighbour resize of a label map (no interpolation between ids).

    Args:
        labels: (H, W) integer ids.
        size: S (square output) or (H_out, W_out).
        pixel_center: 0.0 gives ``out[r, c] = labels[floor(r·H/H_out), floor(c·W/W_out)]``, exactly
            OpenCV's INTER_NEAREST that the original used; 0.5 samples at pixel centres,
            ``floor((r + 0.5)·H/H_out)``, matching intrinsics scaled with that convention.
    Returns:
        (H_out, W_out) array of the input dtype.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W); got shape {labels.shape}")
    h_out, w_out = (size, size) if np.isscalar(size) else size
    if pixel_center not in PIXEL_CENTERS:
        raise ValueError(f"pixel_center {pixel_center!r}; valid: {list(PIXEL_CENTERS)}")
    off = int(2 * pixel_center)  # integer arithmetic: no float rounding at exact multiples
    rows = ((2 * np.arange(h_out) + off) * labels.shape[0]) // (2 * h_out)
    cols = ((2 * np.arange(w_out) + off) * labels.shape[1]) // (2 * w_out)
    return labels[rows[:, None], cols[None, :]]


# ----------------------------------------------------------------------------------------------------
# Train / validation split
# ----------------------------------------------------------------------------------------------------

@dataclass
class Split:
    """A train/validation split of (instance, view) pairs, saved beside a training run.

    Attributes:
        instances: instance names in latent index order (index i = ``instances[i]``), held-out ones included.
        train: (instance, view id) pairs to train on.
        val: (instance, view id) pairs to validate on: held-out views of training instances (their
            codes are trained) and every view of ``held_out_instances``.
        held_out_instances: instances with no training view (their codes are never trained).
        seed: the seed the split was drawn with.
        val_views_per_instance: held-out views per training instance that was asked for.
    """

    instances: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    held_out_instances: list[str] = field(default_factory=list)
    seed: int = 0
    val_views_per_instance: int = 2

    def __post_init__(self):
        self.instances = [str(n) for n in self.instances]
        self.train = [(str(n), int(v)) for n, v in self.train]
        self.val = [(str(n), int(v)) for n, v in self.val]
        self.held_out_instances = [str(n) for n in self.held_out_instances]

    @property
    def train_instances(self) -> list[str]:
        """Instances with at least one training view, in latent index order."""
        have = {n for n, _ in self.train}
        return [n for n in self.instances if n in have]

    def instance_index(self, name: str) -> int:
        """Latent index of an instance."""
        try:
            return self.instances.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not in the split's instances {_short_list(self.instances)}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the split as JSON, atomically."""
        path = Path(path)
        doc = {"format": _SPLIT_FORMAT, "version": 1, "seed": self.seed,
               "val_views_per_instance": self.val_views_per_instance, "instances": self.instances,
               "held_out_instances": self.held_out_instances,
               "train": [[n, v] for n, v in self.train], "val": [[n, v] for n, v in self.val]}
        atomic_save_text(path, json.dumps(doc, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        """Read a split written by :meth:`save` (DataError naming the file and key when malformed)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "file not found")
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(path, f"not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != _SPLIT_FORMAT:
            raise DataError(path, f"not a split file (expected a JSON object with format {_SPLIT_FORMAT!r})")
        missing = [k for k in ("instances", "train", "val") if k not in doc]
        if missing:
            raise DataError(path, f"missing keys {missing}")
        instances = doc["instances"]
        if not isinstance(instances, list) or not all(isinstance(n, str) for n in instances):
            raise DataError(path, "'instances' must be a list of instance names")
        known = set(instances)
        pairs = {}
        for key in ("train", "val"):
            value = doc[key]
            ok = isinstance(value, list) and all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and _is_view_id(p[1]) for p in value)
            if not ok:
                raise DataError(path, f"'{key}' must be a list of [instance name, view id] pairs")
            unknown = sorted({p[0] for p in value} - known)
            if unknown:
                raise DataError(path, f"'{key}' names instances {unknown} that are not in 'instances'")
            pairs[key] = [(p[0], p[1]) for p in value]
        held_out = doc.get("held_out_instances", [])
        if not isinstance(held_out, list) or not set(held_out) <= known:
            raise DataError(path, "'held_out_instances' must be a list of names from 'instances'")
        numbers = {k: doc.get(k, 0) for k in ("seed", "val_views_per_instance")}
        bad = [k for k, v in numbers.items() if not _is_view_id(v)]
        if bad:
            raise DataError(path, f"{bad} must be non-negative integers")
        return cls(instances=instances, train=pairs["train"], val=pairs["val"], held_out_instances=held_out,
                   **numbers)


def make_split(root: str | os.PathLike, *, val_views_per_instance: int = 2, val_instances: Sequence[str] = (),
               seed: int = 0) -> Split:
    """Deterministic train/validation split by instance names and view ids, honouring exclusions.

    For each instance (sorted by name), ``val_views_per_instance`` of its non-excluded view ids are held
    out, drawn with a generator seeded by (seed, instance name): the split does not depend on file
    order, and adding an instance leaves the others' choices unchanged. At least one view of every
    training instance stays in training so that its latent code is trained. ``val_instances`` are
    held out entirely. The original drew train and val views from independent permutations, so they
    overlapped (sof.md 7.1, bug 2); here they are disjoint by construction.

    Args:
        root: dataset folder.
        val_views_per_instance: held-out views per training instance (>= 0).
        val_instances: names of instances held out completely.
        seed: split seed (>= 0).
    Returns:
        :class:`Split` whose ``instances`` is the full sorted instance list (latent index order).
    """
    if int(val_views_per_instance) != val_views_per_instance or val_views_per_instance < 0:
        raise ValueError(f"val_views_per_instance must be a non-negative integer; got {val_views_per_instance!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    data = read_dataset(root, check_labels=False)
    names = data.instance_names
    held_out = [str(n) for n in val_instances]
    unknown = [n for n in held_out if n not in data.instances]
    if unknown:
        raise ValueError(f"{root}: val_instances {unknown} are not instances; instances: {_short_list(names)}")
    train, val, capped = [], [], []
    for name in names:
        views = data.views(name)
        if name in held_out:
            val += [(name, v) for v in views]
            continue
        k = min(int(val_views_per_instance), max(len(views) - 1, 0))
        if k < val_views_per_instance:
            capped.append(name)
        rng = np.random.default_rng(_name_seed(seed, name))
        chosen = set(rng.choice(views, size=k, replace=False).tolist()) if k else set()
        train += [(name, v) for v in views if v not in chosen]
        val += [(name, v) for v in views if v in chosen]
    if capped:
        warnings.warn(f"{len(capped)} instance(s) have too few usable views to hold out {val_views_per_instance} "
                      f"and keep one for training; fewer were held out: {_short_list(capped)}", stacklevel=2)
    return Split(instances=names, train=train, val=val, held_out_instances=[n for n in names if n in held_out],
                 seed=int(seed), val_views_per_instance=int(val_views_per_instance))


# ----------------------------------------------------------------------------------------------------
# Torch dataset
# ----------------------------------------------------------------------------------------------------

RAY_SAMPLINGS = ("uniform", "balanced")
"""Ray subset draws of :class:`SofDataset` (``ray_sampling``)."""


class SofDataset(Dataset):
    """(instance, view) samples of a SOF dataset as dicts of tensors.

    Each item holds (N = image_size² rays, or ``num_rays``):

    - ``instance_idx``: () int64 latent index (position in :attr:`instance_names`).
    - ``view_id``: () int64 view id (the XX of seg_XX.png).
    - ``uv``: (N, 2) float32 pixel coordinates (column, row) at ``image_size``, plus the pixel centre.
    - ``labels``: (N,) int64 class ids, nearest-resized from the stored map (OpenCV INTER_NEAREST).
    - ``cam2world``: (4, 4) float32 OpenCV cam2world of that view id.
    - ``intrinsics``: (3, 3) float32, scaled to ``image_size`` as the original does (fx, cx by S/W;
      fy, cy by S/H).
    - ``pixel_index``: (N,) int64 row-major pixel index (row · S + column) of each ray.
    - ``depth`` (only with ``with_depth``): (N,) float32 camera-space depth, NaN on background,
      nearest-resized like the labels.

    Label (and depth) maps are read on first use and cached at ``image_size``.

    Args:
        root: dataset folder.
        split: (instance, view id) pairs to serve, in this order (e.g. ``Split.train``); None serves every
            view that is not excluded. Excluded pairs are dropped with a warning.
        instances: latent index order (e.g. ``Split.instances``); default: the sorted instance folders.
        image_size: side S of the served label maps.
        num_rays: a random subset of this many pixels per item (without replacement), reproducible from
            (seed, epoch, instance name, view id); None serves the full image.
        seed: ray-subset seed (>= 0).
        projection: camera model when meta.json does not state one (default "ortho").
        validate: read and check every label PNG up front (otherwise only structure and cameras).
        with_depth: also serve each view's ``depth_XX.png`` (for depth supervision).
        ray_sampling: how ``num_rays`` pixels are drawn: "uniform", or "balanced" (half uniform, half with
            weight 1/sqrt(pixels of the pixel's class in that view), so that small parts such as eyes and
            lips get several rays per image; a class-rebalanced cross-entropy).
    Raises:
        DataError: the dataset has problems (all listed), the split names unknown instances or views, or
            ``with_depth`` is set and a served view has no depth map.
    """

    def __init__(self, root: str | os.PathLike, *, split: Sequence[tuple[str, int]] | None = None,
                 instances: Sequence[str] | None = None, image_size: int = 128, num_rays: int | None = None,
                 seed: int = 0, projection: str | None = None, validate: bool = True, with_depth: bool = False,
                 ray_sampling: str = "uniform"):
        if int(image_size) != image_size or image_size <= 0:
            raise ValueError(f"image_size must be a positive integer; got {image_size!r}")
        if num_rays is not None and not (0 < int(num_rays) <= image_size ** 2):
            raise ValueError(f"num_rays must be in 1..{image_size ** 2} (image_size²) or None; got {num_rays!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        if ray_sampling not in RAY_SAMPLINGS:
            raise ValueError(f"unknown ray_sampling {ray_sampling!r}; valid: {list(RAY_SAMPLINGS)}")
        self.ray_sampling = ray_sampling
        self.root = Path(root)
        self.data = read_dataset(self.root, projection=projection, check_labels=validate)
        self.meta = self.data.meta
        self.image_size = int(image_size)
        self.num_rays = None if num_rays is None else int(num_rays)
        self.seed = int(seed)
        self.epoch = 0
        if instances is None:
            self.instance_names = self.data.instance_names
        else:
            self.instance_names = [str(n) for n in instances]
            missing = [n for n in self.instance_names if n not in self.data.instances]
            if missing:
                raise DataError(self.root, f"instances {_short_list(missing)} are not instance folders")
        self._index = {n: i for i, n in enumerate(self.instance_names)}
        self.samples = self._resolve_samples(split)
        self.with_depth = bool(with_depth)
        if self.with_depth:
            missing = [(n, v) for n, v in self.samples if v not in self.data.instances[n].depth_files]
            if missing:
                raise DataError(self.root, f"with_depth: {len(missing)} served view(s) have no depth_XX.png, "
                                           f"e.g. {_short_list(missing)} (synthetic portraits written by an "
                                           "older toolkit lack them: regenerate, or train without depth "
                                           "supervision, loss.depth_supervision=0)")
        self._uv = pixel_grid(self.image_size, self.image_size, self.meta.pixel_center)
        self._cache: dict[tuple[str, int], tuple[torch.Tensor, tuple[int, int]]] = {}
        self._depth_cache: dict[tuple[str, int], torch.Tensor] = {}

    @classmethod
    def from_split(cls, root: str | os.PathLike, split: Split, subset: str = "train", **kwargs) -> SofDataset:
        """The ``"train"`` or ``"val"`` pairs of a :class:`Split`, with its latent index order."""
        if subset not in ("train", "val"):
            raise ValueError(f"unknown subset {subset!r}; valid: ['train', 'val']")
        return cls(root, split=getattr(split, subset), instances=split.instances, **kwargs)

    @property
    def num_instances(self) -> int:
        """Number of latent codes (instances in latent index order)."""
        return len(self.instance_names)

    @property
    def projection(self) -> str:
        return self.meta.projection

    @property
    def pixel_center(self) -> float:
        return self.meta.pixel_center

    @property
    def label_set(self) -> str:
        return self.meta.label_set

    @property
    def num_classes(self) -> int:
        return self.meta.num_classes

    def instance_index(self, name: str) -> int:
        """Latent index of an instance name."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"{name!r} is not an instance of this dataset; {_short_list(self.instance_names)}") from None

    def set_epoch(self, epoch: int) -> None:
        """Select the ray subsets of an epoch (call before each epoch when ``num_rays`` is set)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        name, view = self.samples[index]
        instance = self.data.instances[name]
        labels, (h, w) = self._labels(name, view)
        size = self.image_size
        K = scale_intrinsics(instance.intrinsics[view], size / w, size / h, pixel_center=self.meta.pixel_center)
        pixels = self.ray_indices(name, view)
        full = self.num_rays is None  # plain copies instead of gathers for whole images
        item = {
            "instance_idx": torch.tensor(self._index[name], dtype=torch.int64),
            "view_id": torch.tensor(view, dtype=torch.int64),
            "uv": self._uv.clone() if full else self._uv[pixels],
            "labels": labels.long() if full else labels[pixels].long(),
            "cam2world": torch.from_numpy(instance.cam2world[view].astype(np.float32)),
            "intrinsics": torch.from_numpy(K.astype(np.float32)),
            "pixel_index": pixels,
        }
        if self.with_depth:
            depth = self._depth(name, view)
            item["depth"] = depth.clone() if full else depth[pixels]
        return item

    def ray_indices(self, name: str, view: int) -> torch.Tensor:
        """(N,) int64 sorted row-major pixel indices served for a view at the current epoch."""
        n_pix = self.image_size ** 2
        if self.num_rays is None:
            return torch.arange(n_pix, dtype=torch.int64)
        rng = np.random.default_rng([_name_seed(self.seed, name), self.epoch, int(view)])
        if self.ray_sampling == "uniform":
            return torch.from_numpy(np.sort(rng.choice(n_pix, size=self.num_rays, replace=False)).astype(np.int64))
        labels = self._labels(name, view)[0].numpy()
        weight = 1.0 / np.sqrt(np.bincount(labels)[labels])
        p = 0.5 / n_pix + 0.5 * weight / weight.sum()
        # Gumbel top-k: the num_rays largest keys are a draw without replacement with probabilities p.
        keys = np.log(p) + rng.gumbel(size=n_pix)
        chosen = np.argpartition(-keys, self.num_rays - 1)[:self.num_rays]
        return torch.from_numpy(np.sort(chosen).astype(np.int64))

    def full_labels(self, name: str, view: int) -> torch.Tensor:
        """(S, S) int64 label map of a view at ``image_size``."""
        labels, _ = self._labels(name, view)
        return labels.long().reshape(self.image_size, self.image_size)

    def _labels(self, name: str, view: int) -> tuple[torch.Tensor, tuple[int, int]]:
        key = (name, view)
        if key not in self._cache:
            raw = self.data.instances[name].read_labels(view, self.meta.num_classes)
            resized = resize_labels_nearest(raw, self.image_size, pixel_center=self.meta.pixel_center)
            self._cache[key] = (torch.from_numpy(np.ascontiguousarray(resized).reshape(-1)), raw.shape)
        return self._cache[key]

    def _depth(self, name: str, view: int) -> torch.Tensor:
        key = (name, view)
        if key not in self._depth_cache:
            raw = self.data.instances[name].read_depth(view)
            labels_shape = self._labels(name, view)[1]
            if raw.shape != labels_shape:
                raise DataError(self.data.instances[name].depth_files[view],
                                f"depth map shape {raw.shape} differs from its label map's {labels_shape}")
            resized = resize_labels_nearest(raw, self.image_size, pixel_center=self.meta.pixel_center)
            self._depth_cache[key] = torch.from_numpy(np.ascontiguousarray(resized).reshape(-1))
        return self._depth_cache[key]

    def _resolve_samples(self, split) -> list[tuple[str, int]]:
        if split is None:
            samples = [(n, v) for n in self.instance_names for v in self.data.views(n)]
            if not samples:
                raise DataError(self.root, "no (instance, view) samples: every view is excluded")
            return samples
        samples, excluded = [], []
        for pair in split:
            name, view = str(pair[0]), int(pair[1])
            if name not in self._index:
                raise DataError(self.root, f"split pair ({name!r}, {view}): {name!r} is not among the instances")
            if view not in self.data.instances[name].label_files:
                raise DataError(self.root / name, f"split pair ({name!r}, {view}): no seg_{view:02d}.png; "
                                                  f"views: {list(self.data.instances[name].view_ids)}")
            if view in self.data.exclusions.get(name, ()):
                excluded.append((name, view))
            else:
                samples.append((name, view))
        if excluded:
            warnings.warn(f"{len(excluded)} split pair(s) are excluded in {EXCLUSIONS_FILE} and are skipped: "
                          f"{_short_list(excluded)}", stacklevel=3)
        return samples


# ----------------------------------------------------------------------------------------------------
# Conversion and writing
# ----------------------------------------------------------------------------------------------------

def convert_celebamask(masks_dir: str | os.PathLike, out: str | os.PathLike, *, size: int = 128,
                       projection: str = "ortho") -> list[Path]:
    """Convert CelebAMask-HQ label maps into single-view SOF instances with the default frontal camera.

    Each ``<name>.png`` (mode L, CelebAMask-HQ ids 0..18, square) becomes ``out/<name>/`` (a numeric
    name is zero-padded to 5 digits so that sorted order is numeric order) holding ``seg_00.png`` (SOF
    ids via :func:`toolkit.labels.celebamask_to_sof`, the nose split at its median column at full
    resolution, then nearest-resized to ``size``), ``seg_vis_00.png``, ``cam2world.npy`` (1, 4, 4) =
    the frontal orbit camera (radius 4.5 ortho, 9.5 perspective) and ``intrinsic.npy`` =
    :func:`toolkit.geometry.cameras.portrait_intrinsics` (CelebAMask-HQ's crops are the aligned crop the
    synthetic portraits' frontal views show). ``meta.json`` (``source: "celebamask"``) is
    written first, so an interrupted run leaves correctly described, complete instances.

    Args:
        masks_dir: folder of CelebAMask-HQ mask PNGs.
        out: dataset folder to write (created).
        size: side of the stored label maps.
        projection: "ortho" or "perspective".
    Returns:
        The written instance folders, in sorted order.
    Raises:
        DataError: missing folder, no PNGs, a mask that is not mode L, not square or has ids > 18, or an
            existing meta.json in ``out`` with different conventions.
    """
    check_projection(projection)
    if int(size) != size or size <= 0:
        raise ValueError(f"size must be a positive integer; got {size!r}")
    masks_dir, out = Path(masks_dir), Path(out)
    if not masks_dir.is_dir():
        raise DataError(masks_dir, "masks folder not found")
    paths = sorted(p for p in masks_dir.iterdir()
                   if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not paths:
        raise DataError(masks_dir, "no .png masks found (expected CelebAMask-HQ label maps such as 0.png)")
    names = [celebamask_instance_name(p.stem) for p in paths]
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise DataError(masks_dir, f"masks map to the same instance name(s) {dupes} (e.g. 1.png and 01.png)")
    _check_existing_meta(out, projection=projection, image_size=int(size))

    cam2world = orbit_cameras(CELEBAMASK_CAMERA_RADIUS[projection], 0.0, 0.0)[None]
    K = portrait_intrinsics(int(size), projection)
    write_meta(out, projection=projection, image_size=int(size), source="celebamask")
    written = []
    for path, name in zip(paths, names):
        sof = celebamask_to_sof(_read_celebamask(path))
        sof = resize_labels_nearest(sof, int(size))
        written.append(write_instance(out / name, sof[None], cam2world, K))
    return written


def celebamask_instance_name(stem: str) -> str:
    """Instance folder name of a mask file stem: numbers zero-padded to 5 digits (sorted = numeric order)."""
    return f"{int(stem):05d}" if stem.isdigit() else stem


def write_instance(folder: str | os.PathLike, labels: np.ndarray, cam2world: np.ndarray, intrinsics: np.ndarray,
                   zrange: np.ndarray | None = None, view_ids: list[int] | None = None,
                   depth: np.ndarray | None = None) -> Path:
    """Write one instance folder in the original layout, atomically file by file.

    Args:
        folder: the instance folder (created).
        labels: (V, H, W) integer SOF ids.
        cam2world: (V, 4, 4) OpenCV cam2world, row v belongs to view id ``view_ids[v]``.
        intrinsics: (3, 3) shared or (V, 3, 3) per-view pixel intrinsics.
        zrange: optional (V, 2) near/far; with ``depth`` and no zrange, each view's depth range.
        view_ids: view ids (default 0..V-1). cam2world.npy is indexed by view id, so ids must be 0..V-1.
        depth: optional (V, H, W) camera-space depth, non-finite on background, written as 16-bit
            ``depth_XX.png`` (see :func:`write_depth_png`).
    """
    folder = Path(folder)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be (V, H, W); got shape {labels.shape}")
    num_views = labels.shape[0]
    view_ids = list(range(num_views)) if view_ids is None else list(view_ids)
    if sorted(view_ids) != list(range(num_views)):
        raise ValueError(f"view ids must be a permutation of 0..{num_views - 1}; got {view_ids}")
    cam2world = np.asarray(cam2world, dtype=np.float64)
    if cam2world.shape != (num_views, 4, 4):
        raise ValueError(f"cam2world must be ({num_views}, 4, 4); got {cam2world.shape}")
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float64)
        if depth.shape != labels.shape:
            raise ValueError(f"depth must have the labels' shape {labels.shape}; got {depth.shape}")
        if zrange is None:
            zrange = np.array([_depth_range(d) for d in depth])
    folder.mkdir(parents=True, exist_ok=True)
    order = np.argsort(view_ids)
    for i, (v, lab) in enumerate(zip(view_ids, labels)):
        write_label_png(folder / f"seg_{v:02d}.png", lab)
        write_rgb_png(folder / f"seg_vis_{v:02d}.png", SOF20_CELEBAMASK_PALETTE[lab.astype(np.int64)])
        if depth is not None:
            write_depth_png(folder / f"depth_{v:02d}.png", depth[i], *np.asarray(zrange)[i])
    atomic_save_npy(folder / "cam2world.npy", cam2world[order])
    K = np.asarray(intrinsics, dtype=np.float64)
    atomic_save_npy(folder / "intrinsic.npy", K[order] if K.ndim == 3 else K)
    if zrange is not None:
        atomic_save_npy(folder / "zRange.npy", np.asarray(zrange, dtype=np.float64)[order])
    return folder


def write_depth_png(path: str | os.PathLike, depth: np.ndarray, near: float, far: float) -> None:
    """Write (H, W) depth as a 16-bit PNG: 0 on background (non-finite), else 1..65535 linear in [near, far].

    The 8-bit files the original assumed quantise a 0.5-unit range to 2 mm; 16 bits keep 8 µm.
    """
    from PIL import Image

    from toolkit.io import atomic_write

    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W); got shape {depth.shape}")
    if not (np.isfinite(near) and np.isfinite(far) and near < far):
        raise ValueError(f"near/far must be finite with near < far; got {near}, {far}")
    fg = np.isfinite(depth)
    if np.any((depth[fg] < near) | (depth[fg] > far)):
        raise ValueError(f"depth range {depth[fg].min():.4g}..{depth[fg].max():.4g} exceeds [{near}, {far}]")
    codes = np.zeros(depth.shape, dtype=np.uint16)
    codes[fg] = np.clip(np.rint((depth[fg] - near) / (far - near) * 65535), 1, 65535).astype(np.uint16)
    with atomic_write(path) as f:
        Image.fromarray(codes).save(f, format="PNG")


def read_depth_png(path: str | os.PathLike, near: float, far: float) -> np.ndarray:
    """(H, W) float32 depth from an 8- or 16-bit depth PNG (value/max in [near, far]); NaN where 0."""
    path = Path(path)
    mode, codes = read_png(path)
    full_scale = {"L": 255, "I;16": 65535, "I": 65535}.get(mode)
    if full_scale is None or codes.ndim != 2:
        raise DataError(path, f"expected a single-channel 8- or 16-bit depth map, got mode {mode} shape {codes.shape}")
    if codes.size and int(codes.max()) > full_scale:
        raise DataError(path, f"depth codes up to {int(codes.max())} exceed 16 bits")
    depth = near + codes.astype(np.float64) / full_scale * (far - near)
    return np.where(codes > 0, depth, np.nan).astype(np.float32)


def _depth_range(depth: np.ndarray) -> tuple[float, float]:
    """A near/far pair that brackets a view's finite depths (a unit range around 1 when it has none)."""
    fg = depth[np.isfinite(depth)]
    if fg.size == 0:
        return 0.5, 1.5
    lo, hi = float(fg.min()), float(fg.max())
    pad = max(1e-3, 0.01 * (hi - lo))
    return lo - pad, hi + pad


def write_meta(root: str | os.PathLike, *, projection: str, image_size: int, label_set: str = "sof20",
               pixel_center: float = 0.0, **extra) -> Path:
    """Write ``meta.json`` at the dataset root (projection and conventions the original left implicit).

    ``image_size`` is the side of the stored label maps; ``extra`` entries (e.g. ``source``) are kept as is.
    """
    check_projection(projection)
    get_label_set(label_set)
    if float(pixel_center) not in PIXEL_CENTERS:
        raise ValueError(f"pixel_center {pixel_center!r}; valid: {list(PIXEL_CENTERS)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta = {"format": "sof", "projection": projection, "image_size": int(image_size), "label_set": label_set,
            "pixel_center": float(pixel_center), **extra}
    atomic_save_text(root / META_FILE, json.dumps(meta, indent=2) + "\n")
    return root / META_FILE


# ----------------------------------------------------------------------------------------------------
# Private helpers
# ----------------------------------------------------------------------------------------------------

class _InstanceScan(NamedTuple):
    instance: SofInstance | None
    view_ids: list[int]
    problems: list[Problem]


def _scan(root: Path, projection: str | None, check_labels: bool) -> tuple[SofData | None, list[Problem]]:
    """Read a dataset, collecting every problem instead of raising."""
    if projection is not None:
        check_projection(projection)
    if not root.exists():
        return None, [Problem(root, "dataset folder not found")]
    if not root.is_dir():
        return None, [Problem(root, "not a folder (a SOF dataset is a folder of instance folders)")]
    meta, problems = _parse_meta(root, projection)
    exclusions, excl_problems = _parse_exclusions(root)
    problems += excl_problems
    names = _instance_names(root)
    if not names:
        hint = (" (this looks like a single instance folder: pass its parent)"
                if view_files(root) else "")
        problems.append(Problem(root, "empty dataset: no instance folders (one subfolder per instance with "
                                      f"seg_XX.png, {CAM2WORLD_FILE}, {INTRINSICS_FILE}){hint}"))
    instances = {}
    for name in names:
        if not _is_utf8(name):
            problems.append(Problem(root / name, f"folder name {name!a} is not valid UTF-8: rename it (instance "
                                                 "names are stored in checkpoints and split files)"))
        scan = _scan_instance(root / name, meta, set(exclusions.get(name, ())), check_labels)
        problems += scan.problems
        if scan.instance is not None:
            instances[name] = scan.instance
        unknown = sorted(set(exclusions.get(name, ())) - set(scan.view_ids))
        if unknown:
            problems.append(Problem(root / EXCLUSIONS_FILE,
                                    f"instance {name!r}: excluded view ids {unknown} have no seg_XX.png"))
    for name in exclusions:
        if name not in names:
            problems.append(Problem(root / EXCLUSIONS_FILE, f"{name!r} is not an instance folder of this dataset"))
    return SofData(root, meta, instances, exclusions), problems


def _scan_instance(folder: Path, meta: SofMeta, excluded: set[int], check_labels: bool) -> _InstanceScan:
    problems: list[Problem] = []
    segs: dict[int, list[Path]] = {}
    vis: dict[int, Path] = {}
    depths: dict[int, Path] = {}
    unusable: set[int] = set()  # view ids whose seg_XX.png is not a file (reported once, as that)
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith("."):
            continue
        if not path.is_file():
            if _SEG_RE.match(name) or _VIS_RE.match(name) or _DEPTH_RE.match(name) or \
                    (not path.is_dir() and path.suffix.lower() in _IMAGE_SUFFIXES):
                problems.append(Problem(path, _not_a_file(path)))
                if m := _SEG_RE.match(name):
                    unusable.add(int(m.group(1)))
            continue
        if m := _SEG_RE.match(name):
            segs.setdefault(int(m.group(1)), []).append(path)
        elif m := _VIS_RE.match(name):
            vis[int(m.group(1))] = path
        elif m := _DEPTH_RE.match(name):
            depths[int(m.group(1))] = path
        elif name in _KNOWN_FILES:
            continue
        elif path.suffix.lower() in _IMAGE_SUFFIXES or name.startswith("seg"):
            problems.append(Problem(path, "unexpected file that looks like a view: label maps must be named "
                                          "seg_XX.png (XX = view id), visualisations seg_vis_XX.png"))
    for v, paths in sorted(segs.items()):
        for extra in paths[1:]:
            problems.append(Problem(extra, f"duplicate view id {v} (also {paths[0].name})"))
    label_files = {v: paths[0] for v, paths in sorted(segs.items())}
    view_ids = list(label_files)
    if not view_ids:
        problems.append(Problem(folder, "no seg_XX.png label maps" + (" (only seg_vis_XX.png visualisations)"
                                                                      if vis else "")))
    for v, path in sorted(vis.items()):
        if v not in label_files and v not in unusable:
            problems.append(Problem(path, f"visualisation without its label map seg_{v:02d}.png"))
    if vis:  # the original enumerated views by seg_vis files; its CleanData deleted them to drop views
        for v, path in label_files.items():
            if v not in vis and v not in excluded:
                problems.append(Problem(path, f"no seg_vis_{v:02d}.png: the original skipped such views (dropped "
                                              f"by deleting the visualisation); restore it or list view {v} in "
                                              f"{EXCLUSIONS_FILE}"))
    checked = [v for v in view_ids if v not in excluded]

    n_before = len(problems)
    cam2world = _read_poses(folder, view_ids, checked, problems)
    rows = len(cam2world) if cam2world is not None else (max(view_ids) + 1 if view_ids else 0)
    intrinsics = _read_intrinsics(folder, rows, cam2world is not None, checked, problems)
    zrange = _read_zrange(folder, rows, checked, problems)
    for v, path in sorted(depths.items()):
        if v not in label_files:
            problems.append(Problem(path, f"depth map without its label map seg_{v:02d}.png"))
    if depths and not (folder / ZRANGE_FILE).exists():
        problems.append(Problem(folder, f"depth_XX.png maps need {ZRANGE_FILE} (near/far per view) to be read"))
    cameras_ok = len(problems) == n_before
    if check_labels:
        shapes = _check_label_maps(label_files, checked, meta, problems)
        if intrinsics is not None:
            _check_principal_points(folder / INTRINSICS_FILE, intrinsics, shapes, problems)
        _check_depth_maps({v: p for v, p in depths.items() if v in shapes}, shapes, problems)

    instance = None
    if cameras_ok and view_ids and cam2world is not None and intrinsics is not None:
        instance = SofInstance(folder.name, folder, tuple(view_ids), label_files, cam2world, intrinsics, zrange,
                               {v: p for v, p in depths.items() if v in label_files})
    return _InstanceScan(instance, view_ids, problems)


def _read_poses(folder: Path, view_ids: list[int], checked: list[int], problems: list[Problem]) -> np.ndarray | None:
    path = folder / CAM2WORLD_FILE
    if not path.exists():
        problems.append(Problem(path, "missing: (V, 4, 4) cam2world poses are required (row v = view v)"))
        return None
    try:
        poses = load_npy(path)
    except DataError as exc:
        problems.append(Problem(path, exc.problem))
        return None
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or not np.issubdtype(poses.dtype, np.number):
        problems.append(Problem(path, f"shape {poses.shape} dtype {poses.dtype}; expected (V, 4, 4) numbers"))
        return None
    poses = poses.astype(np.float64)
    no_row = [v for v in view_ids if v >= len(poses)]
    if no_row:
        problems.append(Problem(path, f"pose count mismatch: {len(poses)} rows, but view ids {no_row} have no row "
                                      "(row v is the pose of seg_v.png)"))
    no_view = sorted(set(range(len(poses))) - set(view_ids))
    if no_view and view_ids:
        problems.append(Problem(path, f"pose count mismatch: {len(poses)} rows, but no seg_XX.png for view ids "
                                      f"{no_view} (exclude views in {EXCLUSIONS_FILE} instead of deleting files)"))
    for v in checked:
        if v < len(poses) and (msg := rigid_problem(poses[v])):
            problems.append(Problem(path, f"view {v}: not a rigid cam2world transform: {msg}"))
    return poses


def _read_intrinsics(folder: Path, rows: int, have_poses: bool, checked: list[int],
                     problems: list[Problem]) -> np.ndarray | None:
    path = folder / INTRINSICS_FILE
    if not path.exists():
        hint = (" (found intrinsics.npy: the format's name is intrinsic.npy, singular)"
                if (folder / "intrinsics.npy").exists() else "")
        problems.append(Problem(path, f"missing: (3, 3) or (V, 3, 3) pixel intrinsics are required{hint}"))
        return None
    try:
        K = load_npy(path)
    except DataError as exc:
        problems.append(Problem(path, exc.problem))
        return None
    if not np.issubdtype(K.dtype, np.number) or K.shape[-2:] != (3, 3) or K.ndim not in (2, 3):
        problems.append(Problem(path, f"shape {K.shape} dtype {K.dtype}; expected (3, 3), (1, 3, 3) or (V, 3, 3)"))
        return None
    K = K.astype(np.float64)
    shared = K.ndim == 2 or len(K) == 1
    if not shared and len(K) != rows:
        what = "cam2world.npy has" if have_poses else "the view ids need"
        problems.append(Problem(path, f"{len(K)} matrices, but {what} {rows}; expected (3, 3), (1, 3, 3) or "
                                      f"({rows}, 3, 3)"))
        return None
    K = np.broadcast_to(K.reshape(-1, 3, 3), (rows, 3, 3)).copy() if shared else K
    for v in ([checked[0]] if shared and checked else [v for v in checked if v < rows]):
        fx, fy, cx, cy = (float(x) for x in (K[v, 0, 0], K[v, 1, 1], K[v, 0, 2], K[v, 1, 2]))
        where = "shared matrix" if shared else f"view {v}"
        if not all(math.isfinite(x) for x in (fx, fy, cx, cy)):
            problems.append(Problem(path, f"{where}: fx, fy, cx, cy = {[fx, fy, cx, cy]} contain NaN or inf"))
        elif fx <= 0 or fy <= 0:
            problems.append(Problem(path, f"{where}: fx = {fx}, fy = {fy}; focal lengths must be > 0"))
    return K


def _read_zrange(folder: Path, rows: int, checked: list[int], problems: list[Problem]) -> np.ndarray | None:
    path = folder / ZRANGE_FILE
    if not path.exists():
        return None
    try:
        z = load_npy(path)
    except DataError as exc:
        problems.append(Problem(path, exc.problem))
        return None
    if not np.issubdtype(z.dtype, np.number) or z.shape != (rows, 2):
        problems.append(Problem(path, f"shape {z.shape} dtype {z.dtype}; expected ({rows}, 2) near/far per view"))
        return None
    z = z.astype(np.float64)
    bad = [v for v in checked if v < rows and not (np.all(np.isfinite(z[v])) and z[v, 0] < z[v, 1])]
    if bad:
        problems.append(Problem(path, f"views {bad}: near/far must be finite with near < far"))
    return z


def _check_label_maps(label_files: dict[int, Path], checked: list[int], meta: SofMeta,
                      problems: list[Problem]) -> dict[int, tuple[int, int]]:
    """Read every checked label map; returns the (H, W) of the readable ones."""
    shapes = {}
    for v in checked:
        try:
            shapes[v] = read_label_png(label_files[v], num_classes=meta.num_classes).shape
        except DataError as exc:
            problems.append(Problem(label_files[v], exc.problem))
    if meta.image_size is not None:
        for v, shape in shapes.items():
            if shape != (meta.image_size, meta.image_size):
                problems.append(Problem(label_files[v], f"image size {shape[1]}x{shape[0]} does not match "
                                                        f"meta.json image_size {meta.image_size}"))
    elif shapes:
        common = Counter(shapes.values()).most_common(1)[0][0]
        for v, shape in shapes.items():
            if shape != common:
                problems.append(Problem(label_files[v], f"image size {shape[1]}x{shape[0]} differs from the other "
                                                        f"views of this instance ({common[1]}x{common[0]})"))
    return shapes


PRINCIPAL_POINT_TOLERANCE = 0.15
"""Largest offset of a principal point from its image's centre, as a fraction of the image side. Real
cameras and the toolkit's crops have it near the centre; a K written for another image size (e.g. 32 px
intrinsics beside 64 px label maps, which training would silently rescale) is off by a quarter or more."""


def _check_principal_points(path: Path, K: np.ndarray, shapes: dict[int, tuple[int, int]],
                            problems: list[Problem]) -> None:
    bad = []
    for v, (h, w) in sorted(shapes.items()):
        if v >= len(K):
            continue
        cx, cy = float(K[v, 0, 2]), float(K[v, 1, 2])
        if not (math.isfinite(cx) and math.isfinite(cy)):
            continue
        off = max(abs(cx - w / 2) / w, abs(cy - h / 2) / h)
        if off > PRINCIPAL_POINT_TOLERANCE:
            where = "outside the image" if not (0 <= cx <= w and 0 <= cy <= h) else "far from the image centre"
            bad.append(f"view {v}: principal point ({cx:g}, {cy:g}) is {where} ({w / 2:g}, {h / 2:g}) of its "
                       f"{w}x{h} label map")
    if bad:
        problems.append(Problem(path, "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more view(s)" if len(bad) > 3
                                                           else "")
                                + ": intrinsic.npy must describe the stored PNGs (was it written for another "
                                  "image size?)"))


def _check_depth_maps(depths: dict[int, Path], shapes: dict[int, tuple[int, int]], problems: list[Problem]) -> None:
    for v, path in sorted(depths.items()):
        try:
            mode, codes = read_png(path)
        except DataError as exc:
            problems.append(Problem(path, exc.problem))
            continue
        if mode not in ("L", "I;16", "I") or codes.ndim != 2:
            problems.append(Problem(path, f"mode {mode} shape {codes.shape}; expected a single-channel 8- or "
                                          "16-bit depth map"))
        elif codes.shape != shapes[v]:
            problems.append(Problem(path, f"size {codes.shape[1]}x{codes.shape[0]} differs from its label map's "
                                          f"{shapes[v][1]}x{shapes[v][0]}"))


def _parse_meta(root: Path, projection: str | None) -> tuple[SofMeta, list[Problem]]:
    if projection is not None:
        check_projection(projection)
    default = SofMeta(projection=projection or DEFAULT_PROJECTION)
    path = root / META_FILE
    if not path.exists():
        return default, []
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return default, [Problem(path, f"not valid JSON ({exc})")]
    if not isinstance(raw, dict):
        return default, [Problem(path, f"expected a JSON object, got {type(raw).__name__}")]
    problems = []
    if raw.get("format", "sof") != "sof":
        problems.append(Problem(path, f"format {raw['format']!r}; expected 'sof'"))
    proj = raw.get("projection", projection or DEFAULT_PROJECTION)
    if proj not in PROJECTIONS:
        problems.append(Problem(path, f"projection {proj!r}; valid: {list(PROJECTIONS)}"))
        proj = default.projection
    elif projection is not None and proj != projection:
        problems.append(Problem(path, f"projection {proj!r} conflicts with the requested projection {projection!r}"))
    size = raw.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        problems.append(Problem(path, f"image_size {size!r}; expected a positive integer (stored label-map side)"))
        size = None
    label_set = raw.get("label_set", "sof20")
    if label_set not in LABEL_SETS:
        problems.append(Problem(path, f"label_set {label_set!r}; valid: {sorted(LABEL_SETS)}"))
        label_set = "sof20"
    pc = raw.get("pixel_center", 0.0)
    if isinstance(pc, bool) or not isinstance(pc, (int, float)) or float(pc) not in PIXEL_CENTERS:
        problems.append(Problem(path, f"pixel_center {pc!r}; valid: {list(PIXEL_CENTERS)}"))
        pc = 0.0
    extra = {k: v for k, v in raw.items() if k not in _META_KEYS}
    return SofMeta(proj, size, label_set, float(pc), extra, from_file=True), problems


def _parse_exclusions(root: Path) -> tuple[dict[str, list[int]], list[Problem]]:
    path = root / EXCLUSIONS_FILE
    if not path.exists():
        return {}, []
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, [Problem(path, f"not valid JSON ({exc})")]
    if not isinstance(raw, dict):
        return {}, [Problem(path, f"expected a JSON object {{instance: [view ids]}}, got {type(raw).__name__}")]
    out, problems = {}, []
    for name, views in raw.items():
        if not isinstance(views, list) or not all(_is_view_id(v) for v in views):
            problems.append(Problem(path, f"instance {name!r}: expected a list of non-negative integer view ids, "
                                          f"got {views!r}"))
            continue
        out[name] = sorted(set(views))
    return out, problems


def _instance_names(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def view_files(folder: str | os.PathLike) -> dict[int, Path]:
    """View id -> ``seg_XX.png`` of one instance folder (no validation)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in sorted(folder.iterdir()) if (m := _SEG_RE.match(p.name))}


def _check_existing_meta(out: Path, **expected) -> None:
    path = out / META_FILE
    if not path.exists():
        return
    meta = read_meta(out)
    found = {"projection": meta.projection, "image_size": meta.image_size}
    diff = {k: (found[k], v) for k, v in expected.items() if found[k] != v}
    if diff:
        raise DataError(path, "existing dataset has different conventions: "
                        + ", ".join(f"{k} {a!r} (requested {b!r})" for k, (a, b) in diff.items()))


def _read_celebamask(path: Path) -> np.ndarray:
    try:
        mask = read_label_png(path)
    except DataError as exc:
        raise DataError(path, f"{exc.problem} (expected a CelebAMask-HQ mask: mode L, ids 0..18)") from None
    from PIL import Image

    with Image.open(path) as img:
        mode = img.mode
    if mode != "L":
        raise DataError(path, f"mode {mode}; expected a mode L (8-bit grey) CelebAMask-HQ mask")
    if mask.shape[0] != mask.shape[1]:
        raise DataError(path, f"size {mask.shape[1]}x{mask.shape[0]}; expected a square mask (512x512)")
    if mask.size and int(mask.max()) > 18:
        bad = sorted(int(v) for v in np.unique(mask) if v > 18)
        raise DataError(path, f"ids {bad} out of range; CelebAMask-HQ ids are 0..18 (per-part binary masks from "
                              "CelebAMask-HQ-mask-anno must first be combined into one label map)")
    return mask


def _format_problems(problems: list[Problem]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems)


def _short_list(items: Sequence, limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)} in all)" if len(items) > limit \
        else f"[{shown}]"


def _is_view_id(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0


def _as_view_id(v, name: str) -> int:
    if not _is_view_id(v):
        raise ValueError(f"instance {name!r}: view ids must be non-negative integers; got {v!r}")
    return int(v)


def _name_seed(seed: int, name: str) -> int:
    """A 64-bit seed from (seed, name), stable across processes and Python versions (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}\x00{name}".encode()).digest()[:8], "little")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return False
    return True


def _not_a_file(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "a broken symlink (or a symlink loop); expected a PNG file"
    if path.is_dir():
        return "a folder; expected a PNG file"
    return "not a regular file; expected a PNG file"
