"""Label sets, palettes and conversions (reference: sof.md section 1.7).

Three label sets are registered by name:

- ``"sof20"``: SOF's 20 classes, in SOF's id order. The CelebAMask-HQ parts with the nose split into
  a right and a left half (person's right/left: the person's right half appears on the image's left in
  a frontal view, as CelebAMask-HQ's ``l_eye``/``r_eye`` do).
- ``"celebamask19"``: CelebAMask-HQ's 19 classes in its own order.
- ``"sofgan17"``: SofGAN's 17-class grouping of SOF ids (brows, eyes and ears merged, nose halves kept).

Palettes: each set has a figure palette. For ``sof20`` the SofGAN-like figure palette keeps SofGAN's
skin, hair and mouth colours (the only ones the reference records); the other colours are ours, chosen
to be distinct. ``SOF20_CELEBAMASK_PALETTE`` is the 20-entry CelebAMask-HQ-style palette that the
original used for its ``seg_vis_XX.png`` visualisations.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelSet:
    """A named, ordered set of classes with a figure palette.

    Attributes:
        name: registry key.
        names: class names; the index is the class id.
        palette: (C, 3) uint8 RGB colour of each class.
    """

    name: str
    names: tuple[str, ...]
    palette: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, class_name: str) -> int:
        try:
            return self.names.index(class_name)
        except ValueError:
            raise ValueError(f"{class_name!r} is not a class of {self.name}; classes: {list(self.names)}") from None


SOF20_NAMES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "r_nose", "l_nose", "mouth", "u_lip",
    "l_lip", "l_ear", "r_ear", "ear_r", "eye_g", "neck", "neck_l", "cloth", "hair", "hat",
)
CELEBAMASK19_NAMES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
SOFGAN17_NAMES = (
    "background", "skin", "brow", "eye", "r_nose", "l_nose", "mouth", "u_lip", "l_lip", "ear", "ear_r",
    "eye_g", "neck", "neck_l", "cloth", "hair", "hat",
)

# SOF id -> SofGAN 17-class id (sof.md 1.7).
SOF20_TO_SOFGAN17 = np.array([0, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 9, 10, 11, 12, 13, 14, 15, 16], dtype=np.uint8)

# CelebAMask-HQ's published colour map (19 classes, its own order).
CELEBAMASK19_PALETTE = np.array([
    [0, 0, 0], [204, 0, 0], [76, 153, 0], [204, 204, 0], [51, 51, 255], [204, 0, 204], [0, 255, 255],
    [255, 204, 204], [102, 51, 0], [255, 0, 0], [102, 204, 0], [255, 255, 0], [0, 0, 153], [0, 0, 204],
    [255, 51, 153], [0, 204, 204], [0, 51, 0], [255, 153, 51], [0, 204, 0],
], dtype=np.uint8)

# Figure palette indexed by SOF id. Skin, hair and mouth are SofGAN's colours.
SOF20_PALETTE = np.array([
    [0, 0, 0],        # background
    [127, 212, 255],  # skin (SofGAN)
    [255, 170, 0],    # l_brow
    [255, 120, 0],    # r_brow
    [0, 130, 60],     # l_eye
    [60, 200, 90],    # r_eye
    [255, 235, 120],  # r_nose
    [220, 190, 60],   # l_nose
    [31, 162, 230],   # mouth (SofGAN)
    [230, 40, 90],    # u_lip
    [170, 20, 60],    # l_lip
    [120, 80, 200],   # l_ear
    [80, 50, 160],    # r_ear
    [255, 0, 255],    # ear_r (earring)
    [200, 200, 200],  # eye_g (glasses)
    [90, 170, 190],   # neck
    [255, 215, 0],    # neck_l (necklace)
    [40, 60, 120],    # cloth
    [212, 127, 255],  # hair (SofGAN)
    [140, 70, 20],    # hat
], dtype=np.uint8)

# CelebAMask-HQ colours re-indexed by SOF id (the nose halves share the nose colour, the right half darker).
_CELEBAMASK_ID_OF_SOF = np.array([0, 1, 6, 7, 4, 5, 2, 2, 10, 11, 12, 8, 9, 15, 3, 17, 16, 18, 13, 14])
SOF20_CELEBAMASK_PALETTE = CELEBAMASK19_PALETTE[_CELEBAMASK_ID_OF_SOF].copy()
SOF20_CELEBAMASK_PALETTE[6] = (SOF20_CELEBAMASK_PALETTE[6] * 0.6).astype(np.uint8)

SOFGAN17_PALETTE = np.array([SOF20_PALETTE[np.flatnonzero(SOF20_TO_SOFGAN17 == k)[0]] for k in range(17)],
                            dtype=np.uint8)

LABEL_SETS: dict[str, LabelSet] = {
    "sof20": LabelSet("sof20", SOF20_NAMES, SOF20_PALETTE),
    "celebamask19": LabelSet("celebamask19", CELEBAMASK19_NAMES, CELEBAMASK19_PALETTE),
    "sofgan17": LabelSet("sofgan17", SOFGAN17_NAMES, SOFGAN17_PALETTE),
}
SOF20 = LABEL_SETS["sof20"]
NUM_SOF_CLASSES = SOF20.num_classes

OCCUPANCY = LabelSet("occupancy", ("outside", "inside"), np.array([[0, 0, 0], [235, 170, 60]], dtype=np.uint8))
"""Two classes of an occupancy field (0 outside, 1 inside), e.g. Occupancy Flow's at a time t in the volume
slicer. Not a label set of SOF data, so not in :data:`LABEL_SETS`."""


def get_label_set(name: str | LabelSet) -> LabelSet:
    """Look up a label set by registry key (a :class:`LabelSet` passes through); unknown keys list the valid ones."""
    if isinstance(name, LabelSet):
        return name
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; valid: {sorted(LABEL_SETS)}") from None


def colorize(labels: np.ndarray, label_set: str | LabelSet = "sof20", palette: np.ndarray | None = None) -> np.ndarray:
    """Map integer class ids (any shape) to RGB uint8 colours (shape + (3,))."""
    ls = get_label_set(label_set) if isinstance(label_set, str) else label_set
    pal = ls.palette if palette is None else np.asarray(palette, dtype=np.uint8)
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(pal)):
        raise ValueError(f"label ids must be in 0..{len(pal) - 1} for {ls.name}; got {labels.min()}..{labels.max()}")
    return pal[labels.astype(np.int64)]


# CelebAMask-HQ id -> SOF id, for every class except the nose (2), which is split per image.
_SOF_ID_OF_CELEBAMASK = np.array([0, 1, -1, 14, 4, 5, 2, 3, 11, 12, 8, 9, 10, 18, 19, 13, 16, 15, 17])


def celebamask_to_sof(mask: np.ndarray) -> np.ndarray:
    """Convert a CelebAMask-HQ label map (19 classes) to SOF ids (20 classes).

    Every class maps one-to-one except the nose, which is split at the median column of its pixels:
    columns left of the median (the person's right half, as seen from the front) become ``r_nose``,
    the rest ``l_nose``. This follows CelebAMask-HQ's own left/right convention (``l_eye`` lies on the
    image's right).

    Args:
        mask: (H, W) integer ids in 0..18.
    Returns:
        (H, W) uint8 SOF ids in 0..19.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W); got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 18):
        raise ValueError(f"CelebAMask-HQ ids must be in 0..18; got {mask.min()}..{mask.max()}")
    out = _SOF_ID_OF_CELEBAMASK[mask.astype(np.int64)]
    rows, cols = np.nonzero(mask == 2)
    if cols.size:
        median_col = np.median(cols)
        out[rows, cols] = np.where(cols < median_col, SOF20.index("r_nose"), SOF20.index("l_nose"))
    return out.astype(np.uint8)


def sof_to_sofgan17(labels: np.ndarray) -> np.ndarray:
    """Group SOF ids (20) into SofGAN's 17 classes."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_SOF_CLASSES):
        raise ValueError(f"SOF ids must be in 0..19; got {labels.min()}..{labels.max()}")
    return SOF20_TO_SOFGAN17[labels.astype(np.int64)]


def label_statistics(label_maps: Sequence[np.ndarray] | np.ndarray, label_set: str | LabelSet = "sof20"
                     ) -> dict[str, dict[str, np.ndarray]]:
    """Where and how large each class is in a set of label maps (e.g. real masks against synthetic views).

    Args:
        label_maps: (B, H, W) or a list of (H, W) integer maps (sizes may differ).
    Returns:
        {class name: {"present", "area", "cx", "cy", "width", "height"}}, each a (B,) array: whether the
        class occurs, its pixel fraction, its centroid and its bounding-box size as fractions of the
        image width (x) and height (y, from the top); NaN where the class is absent.
    """
    ls = get_label_set(label_set) if isinstance(label_set, str) else label_set
    stats = {n: {k: np.full(len(label_maps), np.nan) for k in ("area", "cx", "cy", "width", "height")}
             for n in ls.names}
    for n in ls.names:
        stats[n]["present"] = np.zeros(len(label_maps), bool)
    for b, labels in enumerate(label_maps):
        labels = np.asarray(labels)
        h, w = labels.shape
        for c, n in enumerate(ls.names):
            rows, cols = np.nonzero(labels == c)
            if rows.size:
                s = stats[n]
                s["present"][b] = True
                s["area"][b] = rows.size / labels.size
                s["cx"][b], s["cy"][b] = cols.mean() / w, rows.mean() / h
                s["width"][b], s["height"][b] = (np.ptp(cols) + 1) / w, (np.ptp(rows) + 1) / h
    return stats
