"""Matplotlib figures: label-map grids with the class palette, legends, slices, training curves
(:func:`plot_history`, which :class:`toolkit.training.LivePlot` redraws while a run trains)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from toolkit.labels import LabelSet, colorize, get_label_set


def label_grid(label_maps: Sequence[np.ndarray] | np.ndarray, *, titles: Sequence[str] | None = None,
               ncols: int = 6, label_set: str | LabelSet = "sof20", panel_size: float = 2.0,
               legend: bool = True, suptitle: str | None = None):
    """A grid of label maps coloured with the label set's palette.

    Args:
        label_maps: N maps of shape (H, W) with integer class ids.
        titles: optional N panel titles.
        ncols: panels per row.
        legend: add a legend of the classes that occur.
    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    ls = get_label_set(label_set) if isinstance(label_set, str) else label_set
    maps = [np.asarray(m) for m in label_maps]
    n = len(maps)
    if n == 0:
        raise ValueError("label_grid needs at least one label map")
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols + (2.2 if legend else 0), panel_size * nrows),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(colorize(maps[i], ls), interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    if legend:
        present = np.unique(np.concatenate([m.ravel() for m in maps]))
        add_legend(fig, present, ls)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0, 1 - (2.2 / fig.get_figwidth() if legend else 0), 1))
    return fig


def add_legend(fig, class_ids: Sequence[int], label_set: str | LabelSet = "sof20", loc: str = "center right"):
    """Add a legend of colour patches for ``class_ids`` to a figure."""
    from matplotlib.patches import Patch

    ls = get_label_set(label_set) if isinstance(label_set, str) else label_set
    handles = [Patch(color=ls.palette[int(c)] / 255.0, label=f"{int(c)} {ls.names[int(c)]}") for c in class_ids]
    fig.legend(handles=handles, loc=loc, fontsize=7, frameon=False)


def probability_panel(ax, prob: np.ndarray, title: str = "", cmap: str = "magma"):
    """Show a (H, W) probability map in [0, 1] with a colour bar."""
    im = ax.imshow(prob, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return im


def plot_history(history: Sequence[Mapping[str, Any]], *, keys: Sequence[str] | None = None, logy: bool = True,
                 figsize: tuple[float, float] = (10.0, 3.2)):
    """Training curves (left) and validation metrics (right) of a :meth:`toolkit.training.Trainer.fit` history.

    Returns a ``matplotlib.figure.Figure`` (not attached to pyplot, so it is never shown twice).
    """
    from matplotlib.figure import Figure

    splits = {"train": [r for r in history if r.get("split") == "train"],
              "val": [r for r in history if r.get("split") == "val"]}
    has_val = bool(splits["val"])
    fig = Figure(figsize=figsize)
    axes = fig.subplots(1, 2 if has_val else 1, squeeze=False)[0]
    for ax, split in zip(axes, ["train", "val"]):
        recs = splits[split]
        names = [k for k in dict.fromkeys(k for r in recs for k in r)
                 if k not in ("step", "split", "lr") and (keys is None or k in keys)]
        for name in names:
            pts = [(r["step"], r[name]) for r in recs if isinstance(r.get(name), (int, float))]
            if pts:
                ax.plot(*zip(*pts), label=name, marker="." if split == "val" else None)
        if split == "train" and logy and names and all(
                r[n] > 0 for r in recs for n in names if isinstance(r.get(n), (int, float))):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(split)
        if names:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def point_cloud_views(clouds: Mapping[str, np.ndarray], *, views: Sequence[str] = ("front", "side"),
                      max_points: int = 20000, panel: float = 3.0, columns: int | None = None, seed: int = 0):
    """Point clouds side by side under the same orthographic cameras (one panel per cloud and view).

    Args:
        clouds: {title: (N, 3) points}, all in the same normalised units (y up, +z towards the front view).
        views: "front" (x right, y up) and/or "side" (-z right, y up: the body's left profile).
        max_points: points drawn per cloud (a fixed random subset).
        columns: panels per row (default: all in one row).
    Every panel spans the same [-0.55, 0.55]^2 window, so sizes compare directly.
    """
    import matplotlib.pyplot as plt

    axes_of = {"front": (0, 1), "side": (2, 1)}
    n = len(clouds) * len(views)
    cols = n if columns is None else max(1, min(int(columns), n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols, panel * rows), squeeze=False)
    rng = np.random.default_rng(seed)
    for i, (title, pts) in enumerate(clouds.items()):
        pts = np.asarray(pts, dtype=np.float32)
        if len(pts) > max_points:
            pts = pts[rng.choice(len(pts), max_points, replace=False)]
        for j, view in enumerate(views):
            k = i * len(views) + j
            ax = axes[k // cols, k % cols]
            a, b = axes_of[view]
            x = -pts[:, a] if view == "side" else pts[:, a]
            ax.scatter(x, pts[:, b], s=0.3, c=pts[:, 2 if view == "front" else 0], cmap="viridis")
            ax.set_xlim(-0.55, 0.55)
            ax.set_ylim(-0.55, 0.55)
            ax.set_aspect("equal")
            ax.set_title(f"{title}\n{view}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
