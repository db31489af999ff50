"""Figures of the SOF workflow notebooks: mIoU curves, confusion matrices, class IoUs, GMM model selection
(matplotlib), and semantic meshes side by side (plotly)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from toolkit.labels import LabelSet, get_label_set


def miou_curve_figure(curves: Mapping[str, Sequence[Mapping]], *, keys: Sequence[str] = ("miou", "miou_fg"),
                      title: str | None = None, panel_size: tuple[float, float] = (3.6, 2.7)):
    """mIoU against training step, one panel per score key and one line per curve.

    Args:
        curves: {legend label: records with "step" and the score keys} (e.g. :func:`checkpoint_curve`,
            :func:`validation_history`, :class:`MIoUCurve` records).
        keys: the scores to plot ("miou", "miou_fg", "image_miou", "image_miou_fg").
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(panel_size[0] * len(keys), panel_size[1]), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, records in curves.items():
            pts = sorted((r["step"], r[key]) for r in records if key in r and r[key] is not None)
            if pts:
                steps, values = zip(*pts)
                ax.plot(steps, values, marker="o", markersize=3, label=label)
        ax.set_title({"miou": "mIoU", "miou_fg": "mIoU (no background)", "image_miou": "per-image mIoU",
                      "image_miou_fg": "per-image mIoU (no background)"}.get(key, key), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_figure(confusion: np.ndarray, *, label_set: str | LabelSet = "sof20", normalize: bool = True,
                     title: str | None = None, size: float = 6.0):
    """A confusion matrix (rows = ground truth, columns = prediction) over the classes that occur.

    Args:
        confusion: (C, C) counts, e.g. ``MIoUResult.confusion``.
        normalize: divide each row by its total (the fraction of each GT class predicted as each class).
    """
    import matplotlib.pyplot as plt

    ls = get_label_set(label_set) if isinstance(label_set, str) else label_set
    conf = np.asarray(confusion, dtype=np.float64)
    present = np.flatnonzero(conf.sum(0) + conf.sum(1))
    sub = conf[np.ix_(present, present)]
    if normalize:
        sub = sub / np.maximum(sub.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(sub, cmap="viridis", vmin=0, vmax=1 if normalize else None)
    names = [f"{c} {ls.names[c]}" for c in present]
    ax.set_xticks(range(len(present)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(present)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of GT row" if normalize else "count")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def class_iou_figure(per_class: Mapping[str, np.ndarray], *, label_set: str | LabelSet = "sof20",
                     title: str | None = None):
    """Grouped bars of per-class IoU, one group per class present in any result, one bar per result."""
    import matplotlib.pyplot as plt

    ls = get_label_set(label_set) if isinstance(label_set, str) else label_set
    names = list(per_class)
    values = np.stack([np.asarray(per_class[n], dtype=np.float64) for n in names])
    present = np.flatnonzero(~np.all(np.isnan(values), axis=0))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(present) + 1.5), 2.8))
    for k, n in enumerate(names):
        ax.bar(np.arange(len(present)) + k * width, np.nan_to_num(values[k, present]), width, label=n)
    ax.set_xticks(np.arange(len(present)) + 0.4 - width / 2, [ls.names[c] for c in present], rotation=60,
                  fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def bic_figure(selection: Sequence[Mapping], *, title: str | None = None):
    """BIC against the number of components, one line per covariance type (``LatentGMM.selection``).

    Skipped candidates (too few codes per component for that covariance) are left out; the chosen
    mixture (lowest BIC) is circled.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    fitted = [r for r in selection if r.get("bic") is not None]
    for ct in dict.fromkeys(r["covariance"] for r in fitted):
        pts = sorted((r["components"], r["bic"]) for r in fitted if r["covariance"] == ct)
        ax.plot(*zip(*pts), marker="o", markersize=3, label=ct)
    if fitted:
        best = min(fitted, key=lambda r: r["bic"])
        ax.scatter([best["components"]], [best["bic"]], s=120, facecolors="none", edgecolors="k", zorder=3,
                   label="chosen")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("components")
    ax.set_ylabel("BIC (lower is better)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def meshes_figure(meshes: Mapping[str, object], *, height: int = 450, title: str | None = None):
    """Plotly scenes side by side, one per entry: a Mesh (vertex colours used when present) or a list."""
    from plotly.subplots import make_subplots

    from toolkit.geometry.meshing import Mesh
    from toolkit.viz.scenes import Figure3D, mesh_trace

    titles = list(meshes)
    fig = make_subplots(rows=1, cols=len(titles), specs=[[{"type": "scene"}] * len(titles)],
                        subplot_titles=titles)
    for col, name in enumerate(titles, start=1):
        items = meshes[name]
        for k, mesh in enumerate([items] if isinstance(items, Mesh) else items):  # a Mesh is a tuple too
            if len(mesh.faces):
                fig.add_trace(mesh_trace(mesh.vertices, mesh.faces, mesh.vertex_colors, name=f"{name} {k}"),
                              row=1, col=col)
    fig.update_layout(height=height, title=title, margin={"l": 0, "r": 0, "t": 40, "b": 0}, showlegend=False)
    fig.update_scenes(aspectmode="data",
                      camera={"up": {"x": 0, "y": 1, "z": 0}, "eye": {"x": 0.4, "y": 0.3, "z": 2.0}})
    return Figure3D(fig)


def fit_figure(out_dir, report: Mapping, *, panel: float = 2.2):
    """One row per fitted mask of a :func:`toolkit.sof.fit.fit_masks` output: the mask, the fitted view and
    the novel views (its renders/ PNGs), titled with the fitted view's foreground mIoU."""
    from pathlib import Path

    import matplotlib.pyplot as plt
    from PIL import Image

    out_dir = Path(out_dir)
    rows = list(report["masks"].items())
    keys = ["mask", "fitted", "yaw-30", "yaw+30"]
    fig, axes = plt.subplots(len(rows), len(keys), figsize=(panel * len(keys), panel * len(rows)), squeeze=False)
    for r, (stem, m) in enumerate(rows):
        for c, key in enumerate(keys):
            ax = axes[r, c]
            ax.imshow(np.asarray(Image.open(out_dir / "renders" / f"{stem}_{key}.png")))
            ax.set_axis_off()
            title = {"mask": f"{stem}: mask", "fitted": f"fitted (mIoU fg {m['miou_foreground']:.2f})"}
            ax.set_title(title.get(key, f"novel view, {key.replace('yaw', 'yaw ')}°"), fontsize=8)
    fig.tight_layout()
    return fig


def label_statistics_figure(groups: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], *,
                            classes: Sequence[str] | None = None, label_set: str | LabelSet = "sof20"):
    """Per-class area and centroid of several groups of label maps (:func:`toolkit.labels.label_statistics`).

    Left: mean pixel fraction per class, one bar per group. Right: each class's mean centroid in image
    coordinates (x right, y down, fractions of the image), one marker shape per group, in the class colour.
    """
    import matplotlib.pyplot as plt

    ls = get_label_set(label_set) if isinstance(label_set, str) else label_set
    names = list(classes) if classes is not None else [n for n in ls.names if n != "background" and any(
        np.any(g[n]["present"]) for g in groups.values())]
    fig, (ax_a, ax_c) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    width = 0.8 / len(groups)
    markers = "osD^v"
    for g, (group, stats) in enumerate(groups.items()):
        areas = [np.nanmean(stats[n]["area"]) if np.any(stats[n]["present"]) else 0.0 for n in names]
        ax_a.bar(np.arange(len(names)) + g * width, areas, width, label=group)
        for n in names:
            if np.any(stats[n]["present"]):
                color = ls.palette[ls.index(n)] / 255.0
                ax_c.scatter(np.nanmean(stats[n]["cx"]), np.nanmean(stats[n]["cy"]), color=color,
                             marker=markers[g % len(markers)], edgecolors="k", linewidths=0.4, s=40)
    ax_a.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=60, fontsize=7)
    ax_a.set_yscale("log")
    ax_a.set_ylabel("mean pixel fraction")
    ax_a.legend(fontsize=8)
    ax_c.set_xlim(0, 1)
    ax_c.set_ylim(1, 0)
    ax_c.set_aspect("equal")
    ax_c.set_title("class centroids (" + ", ".join(f"{markers[i % len(markers)]}: {g}"
                                                  for i, g in enumerate(groups)) + ")", fontsize=8)
    fig.tight_layout()
    return fig
