"""SOF data format: instance folders of multi-view label maps with cameras (reference: sof.md section 3).

Layout (the original's, as read by its ``FaceClassDataset``)::

    <root>/
      meta.json                 optional (written by this toolkit): projection, image size, label set
      excluded_views.json       optional curation list {instance: [view ids]}; files are never deleted
      <instance>/               sorted folder names give latent index order
        seg_XX.png              (H, W) uint8 SOF ids 0..19, XX = view id
        seg_vis_XX.png          colour visualisation (enumerates views in the original)
        cam2world.npy           (V, 4, 4) OpenCV cam2world, row v = view id v
        intrinsic.npy           (3, 3), (1, 3, 3) or (V, 3, 3) pixel intrinsics of the stored PNGs
        zRange.npy              optional (V, 2) near/far per view

Unlike the original, poses are looked up by the view id in the file name, never by position in a
(shuffled or curated) file list (sof.md 7.1, bug 1).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from toolkit.io import atomic_save_npy, atomic_save_text, write_label_png, write_rgb_png
from toolkit.labels import SOF20_CELEBAMASK_PALETTE

META_FILE = "meta.json"
EXCLUSIONS_FILE = "excluded_views.json"


def write_instance(folder: str | os.PathLike, labels: np.ndarray, cam2world: np.ndarray, intrinsics: np.ndarray,
                   zrange: np.ndarray | None = None, view_ids: list[int] | None = None) -> Path:
    """Write one instance folder in the original layout, atomically file by file.

    Args:
        folder: the instance folder (created).
        labels: (V, H, W) integer SOF ids.
        cam2world: (V, 4, 4) OpenCV cam2world, row v belongs to view id ``view_ids[v]``.
        intrinsics: (3, 3) shared or (V, 3, 3) per-view pixel intrinsics.
        zrange: optional (V, 2) near/far.
        view_ids: view ids (default 0..V-1). cam2world.npy is indexed by view id, so ids must be 0..V-1.
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
    folder.mkdir(parents=True, exist_ok=True)
    order = np.argsort(view_ids)
    for v, lab in zip(view_ids, labels):
        write_label_png(folder / f"seg_{v:02d}.png", lab)
        write_rgb_png(folder / f"seg_vis_{v:02d}.png", SOF20_CELEBAMASK_PALETTE[lab.astype(np.int64)])
    atomic_save_npy(folder / "cam2world.npy", cam2world[order])
    K = np.asarray(intrinsics, dtype=np.float64)
    atomic_save_npy(folder / "intrinsic.npy", K[order] if K.ndim == 3 else K)
    if zrange is not None:
        atomic_save_npy(folder / "zRange.npy", np.asarray(zrange, dtype=np.float64)[order])
    return folder


def write_meta(root: str | os.PathLike, *, projection: str, image_size: int, label_set: str = "sof20",
               pixel_center: float = 0.0, **extra) -> Path:
    """Write ``meta.json`` at the dataset root (projection and conventions the original left implicit)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta = {"format": "sof", "projection": projection, "image_size": int(image_size), "label_set": label_set,
            "pixel_center": float(pixel_center), **extra}
    atomic_save_text(root / META_FILE, json.dumps(meta, indent=2) + "\n")
    return root / META_FILE
