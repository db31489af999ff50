"""ipywidgets tools. Each degrades to a static matplotlib figure when no frontend is attached."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from toolkit.io import read_label_png
from toolkit.labels import colorize
from toolkit.sof.data import load_exclusions, save_exclusions
from toolkit.sof.data import view_files as instance_views
from toolkit.viz import frontend


def curation_widget(root: str | os.PathLike, *, thumb_size: int = 96, max_static_instances: int = 4):
    """Review views instance by instance and exclude bad ones WITHOUT deleting files.

    Unticking a view's "keep" box writes it to ``excluded_views.json`` at the dataset root (the dataset,
    splits and training honour it); ticking it again removes it. Unlike the original's CleanData
    notebook, nothing is deleted, so poses stay aligned with label maps.

    Returns the widget, or (headless) a static figure showing the first instances with excluded views
    crossed out.
    """
    root = Path(root)
    instances = sorted(p for p in root.iterdir() if p.is_dir() and instance_views(p))
    if not instances:
        raise FileNotFoundError(f"{root}: no SOF instance folders with seg_XX.png label maps")
    if not frontend.has_widget_frontend():
        return _static_curation_figure(instances[:max_static_instances], load_exclusions(root))

    import ipywidgets as W

    state = {"index": 0}
    header = W.HTML()
    row = W.HBox(layout=W.Layout(overflow_x="auto", width="100%"))
    prev_btn, next_btn = W.Button(description="◀ previous"), W.Button(description="next ▶")

    def show(index: int):
        state["index"] = index % len(instances)
        folder = instances[state["index"]]
        excluded = load_exclusions(root).get(folder.name, set())
        header.value = f"<b>{folder.name}</b> ({state['index'] + 1}/{len(instances)}): untick views to exclude them"
        cards = []
        for view_id, path in instance_views(folder).items():
            img = W.Image(value=_png_bytes(colorize(read_label_png(path))), format="png",
                          width=thumb_size, height=thumb_size)
            box = W.Checkbox(value=view_id not in excluded, description=f"keep {view_id:02d}", indent=False)
            box.observe(lambda change, v=view_id, name=folder.name: _toggle(name, v, change["new"]), names="value")
            cards.append(W.VBox([img, box]))
        row.children = cards

    def _toggle(name: str, view_id: int, keep: bool):
        exclusions = load_exclusions(root)
        views = set(exclusions.get(name, set()))
        views.discard(view_id) if keep else views.add(view_id)
        exclusions[name] = sorted(views)
        save_exclusions(root, {k: v for k, v in exclusions.items() if v})

    prev_btn.on_click(lambda _: show(state["index"] - 1))
    next_btn.on_click(lambda _: show(state["index"] + 1))
    show(0)
    return W.VBox([W.HBox([prev_btn, next_btn, header]), row])


def _static_curation_figure(instances: list[Path], exclusions: dict[str, set[int]]):
    import matplotlib.pyplot as plt

    views = [instance_views(f) for f in instances]
    ncols = max(len(v) for v in views)
    fig, axes = plt.subplots(len(instances), ncols, figsize=(1.3 * ncols, 1.5 * len(instances)), squeeze=False)
    for r, (folder, vmap) in enumerate(zip(instances, views)):
        excluded = exclusions.get(folder.name, set())
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c >= len(vmap):
                continue
            view_id, path = list(vmap.items())[c]
            ax.imshow(colorize(read_label_png(path)), interpolation="nearest")
            if view_id in excluded:
                h, w = read_label_png(path).shape
                ax.plot([0, w - 1], [0, h - 1], "r-", [0, w - 1], [h - 1, 0], "r-", linewidth=2)
            ax.set_title(f"{folder.name}/{view_id:02d}" + (" (excluded)" if view_id in excluded else ""), fontsize=6)
    fig.suptitle("views (crossed out: excluded in excluded_views.json)", fontsize=9)
    fig.tight_layout()
    return fig


def _png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
