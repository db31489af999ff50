"""Animated mesh sequences (plotly, with a time slider) and their static matplotlib fallbacks.

A sequence is anything :func:`as_frames` accepts: a ``MeshSequence`` (shared faces, vertex k the same
surface point in every frame), a ``FrameMeshes`` (independent meshes per frame), a (T, V, 3) array with
(F, 3) faces, or a (T, N, 3) point sequence (faces None). Vertices are coloured by correspondence
(their t=0 position mapped to RGB), so a point keeps its colour while it moves.

- :func:`mesh_animation`: one sequence, a plotly figure with a time slider and a play button.
- :func:`mesh_grid_animation`: a grid of sequences (e.g. interpolation steps x modes, or source /
  target / result) animated by one shared slider; the cells sit side by side in one 3D scene.
- With no live notebook frontend (headless runs, CI: :func:`toolkit.viz.frontend.has_widget_frontend`) both draw a
  static matplotlib figure of a few frames instead (``static=None``); ``static=True/False`` forces either.
- :func:`embedding_figure`, :func:`curves_figure`, :func:`bars_figure`: small matplotlib plots of codes
  and per-frame / per-part numbers.

Large meshes are reduced for display only (vertex clustering on the t=0 positions, applied identically
to every frame, so the reduced mesh still moves consistently); exported files keep everything.
World y is up; figures look at the body's front (+z).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from toolkit.viz import frontend

__all__ = [
    "Frames",
    "as_frames",
    "bars_figure",
    "curves_figure",
    "embedding_figure",
    "mesh_animation",
    "mesh_grid_animation",
]


class Frames(NamedTuple):
    """A sequence normalised for drawing."""

    vertices: list[np.ndarray]
    """T arrays (V_t, 3)."""
    faces: list[np.ndarray | None]
    """T face arrays (F_t, 3), or None for points."""
    colors: list[np.ndarray]
    """T (V_t, 3) uint8 vertex colours."""
    times: np.ndarray
    """(T,) times."""


def as_frames(seq: Any, faces: np.ndarray | None = None, *, times: Sequence[float] | None = None,
              colors: str | np.ndarray | None = "correspondence", max_faces: int | None = 20000) -> Frames:
    """Normalise any sequence (see the module docstring) to per-frame vertices, faces and colours.

    Args:
        seq: MeshSequence, FrameMeshes, Mesh (one static frame), (T, V, 3) array, or (V, 3) array (static).
        faces: (F, 3) faces when ``seq`` is an array.
        times: (T,) times (default: the sequence's, else i / (T - 1)).
        colors: "correspondence" (t=0 position -> RGB), None (grey), or (V, 3) uint8 colours.
        max_faces: reduce meshes with more faces for display (None: keep all).
    """
    from toolkit.oflow.generate import FrameMeshes, MeshSequence, correspondence_colors

    if isinstance(seq, MeshSequence):
        verts, fs, t = list(seq.vertices), [seq.faces] * len(seq.vertices), seq.times
    elif isinstance(seq, FrameMeshes):
        verts, fs, t = [m.vertices for m in seq.meshes], [m.faces for m in seq.meshes], seq.times
    elif hasattr(seq, "vertices") and hasattr(seq, "faces"):  # a Mesh: one static frame
        verts, fs, t = [np.asarray(seq.vertices)], [np.asarray(seq.faces)], None
    else:
        a = np.asarray(seq, dtype=np.float32)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"expected a mesh sequence or a (T, V, 3) array; got shape {a.shape}")
        verts, fs, t = list(a), [None if faces is None else np.asarray(faces)] * len(a), None
    n = len(verts)
    if times is not None:
        t = np.asarray(times, dtype=np.float32)
    elif t is None:
        t = np.linspace(0.0, 1.0, n, dtype=np.float32) if n > 1 else np.zeros(1, np.float32)
    if len(t) != n:
        raise ValueError(f"{len(t)} times for {n} frames")
    shared = all(f is fs[0] for f in fs) and all(len(v) == len(verts[0]) for v in verts)
    if isinstance(colors, str) and colors != "correspondence":
        raise ValueError(f"colors must be 'correspondence', None or a (V, 3) array; got {colors!r}")
    if shared:
        stack = np.stack(verts) if n else np.zeros((0, 0, 3))
        if colors is None:
            col = np.full((stack.shape[1], 3), 200, np.uint8)
        elif isinstance(colors, str):
            col = correspondence_colors(stack[0])
        else:
            col = np.asarray(colors, np.uint8)
        if max_faces is not None and fs[0] is not None and len(fs[0]) > max_faces:
            stack, f0, col = _cluster_decimate(stack, fs[0], col, max_faces)
            fs = [f0] * n
        return Frames(list(stack), fs, [col] * n, t)
    # no shared topology: colour each frame by its own positions (there is no correspondence to show)
    out_v, out_f, out_c = [], [], []
    for v, f in zip(verts, fs):
        c = correspondence_colors(v) if colors is not None else np.full((len(v), 3), 200, np.uint8)
        if max_faces is not None and f is not None and len(f) > max_faces:
            vv, f, c = _cluster_decimate(np.asarray(v)[None], f, c, max_faces)
            v = vv[0]
        out_v.append(np.asarray(v)), out_f.append(f), out_c.append(c)
    return Frames(out_v, out_f, out_c, t)


def mesh_animation(seq: Any, faces: np.ndarray | None = None, *, times: Sequence[float] | None = None,
                   colors: str | np.ndarray | None = "correspondence", title: str | None = None,
                   max_faces: int = 20000, height: int = 520, static: bool | None = None,
                   static_frames: int = 5):
    """Animate one sequence: a plotly figure with a time slider (or a static filmstrip, see the module).

    Args:
        seq, faces, times, colors: see :func:`as_frames`.
        max_faces: display reduction of large meshes.
        static: None = static matplotlib figure when no live frontend is attached; True/False force it.
        static_frames: frames drawn by the static figure (evenly spaced, first and last included).

    Returns:
        A plotly Figure (interactive) or a matplotlib Figure (static).
    """
    return mesh_grid_animation([[seq]], faces=faces, times=times, colors=colors, title=title, max_faces=max_faces,
                               height=height, static=static, static_frames=static_frames)


def mesh_grid_animation(grid: Sequence[Sequence[Any]], *, faces: np.ndarray | None = None,
                        times: Sequence[float] | None = None, colors: str | np.ndarray | None = "correspondence",
                        row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                        title: str | None = None, spacing: float = 1.15, max_faces: int = 20000,
                        height: int | None = None, static: bool | None = None, static_frames: int = 3):
    """Animate a grid of sequences with one shared time slider (rows x columns of cells in one scene).

    Args:
        grid: rows of cells; a cell is any sequence :func:`as_frames` accepts (or None to leave it empty).
            Every animated cell must have the same number of frames T; a cell with one frame is static.
        faces: faces for cells given as bare arrays.
        row_labels, col_labels: labels drawn beside the rows and above the columns.
        spacing: distance between cell centres (frame-0 normalised units; bodies are about 1 tall).
        max_faces: display reduction per cell (divided among the cells, at least 1500 each).
        static, static_frames: see :func:`mesh_animation`; the static grid shows each cell at
            ``static_frames`` times, one row of panels per time.
    """
    rows = [list(r) for r in grid]
    if not rows or not any(rows):
        raise ValueError("grid is empty: give rows of sequences, e.g. [[seq_a, seq_b]]")
    if static is None:
        static = not frontend.has_widget_frontend()
    n_cells = sum(c is not None for r in rows for c in r)
    per_cell = max(1500, int(max_faces) // max(n_cells, 1))
    if static:  # matplotlib draws every polygon itself: keep the panels light
        per_cell = min(per_cell, 3000)
    cells: list[tuple[int, int, Frames]] = []
    for i, r in enumerate(rows):
        for j, c in enumerate(r):
            if c is not None:
                cells.append((i, j, as_frames(c, faces, times=None, colors=colors, max_faces=per_cell)))
    counts = {len(fr.vertices) for _, _, fr in cells if len(fr.vertices) > 1}
    if len(counts) > 1:
        raise ValueError(f"animated cells must have the same number of frames; got {sorted(counts)}")
    T = counts.pop() if counts else 1
    t = (np.asarray(times, np.float32) if times is not None else
         next((fr.times for _, _, fr in cells if len(fr.vertices) == T), np.zeros(1, np.float32)))
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    if static:
        return _static_grid(cells, t, n_rows, n_cols, row_labels, col_labels, title, static_frames)
    return _plotly_grid(cells, t, n_rows, n_cols, row_labels, col_labels, title, spacing,
                        height or max(420, 260 * n_rows))


def embedding_figure(xy: np.ndarray, labels: Sequence[str], *, title: str | None = None,
                     highlight: Mapping[str, int] | None = None, xlabel: str = "component 1",
                     ylabel: str = "component 2"):
    """Scatter of a 2D embedding (S, 2), coloured by label (e.g. motion), with optional named points.

    Args:
        highlight: name -> row index of points to mark and annotate (e.g. the interpolation ends).
    """
    import matplotlib.pyplot as plt

    xy = np.asarray(xy)
    names = sorted(set(labels))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.5, 5))
    lab = np.asarray(labels)
    for k, name in enumerate(names):
        sel = lab == name
        ax.scatter(xy[sel, 0], xy[sel, 1], s=22, color=cmap(k % cmap.N), label=name, alpha=0.85)
    for text, i in (highlight or {}).items():
        ax.scatter(xy[i, 0], xy[i, 1], s=140, facecolors="none", edgecolors="black", linewidths=1.5)
        ax.annotate(text, xy[i], xytext=(6, 6), textcoords="offset points", fontsize=9)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="best", frameon=False)
    ax.set_title(title or "")
    fig.tight_layout()
    return _detached(fig)


def curves_figure(curves: Mapping[str, np.ndarray], times: Sequence[float], *, ylabel: str = "",
                  title: str | None = None, panels: Mapping[str, Mapping[str, np.ndarray]] | None = None):
    """Line plot of per-frame values (name -> (T,)); ``panels`` (panel title -> curves) draws several."""
    import matplotlib.pyplot as plt

    groups = dict(panels) if panels is not None else {ylabel: curves}
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.2), squeeze=False)
    for ax, (name, cs) in zip(axes[0], groups.items()):
        for label, y in cs.items():
            ax.plot(np.asarray(times), np.asarray(y), marker="o", ms=3, label=label)
        ax.set_xlabel("t"), ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _detached(fig)


def bars_figure(groups: Mapping[str, Mapping[str, float]], *, ylabel: str = "", title: str | None = None):
    """Grouped bars: series name -> (category -> value), e.g. method -> (body part -> error)."""
    import matplotlib.pyplot as plt

    cats = list(dict.fromkeys(k for g in groups.values() for k in g))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(cats) * max(len(groups), 1)), 3.4))
    w = 0.8 / max(len(groups), 1)
    x = np.arange(len(cats))
    for k, (name, g) in enumerate(groups.items()):
        ax.bar(x + (k - (len(groups) - 1) / 2) * w, [g.get(c, np.nan) for c in cats], w, label=name)
    ax.set_xticks(x, cats, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel), ax.legend(fontsize=8, frameon=False), ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "")
    fig.tight_layout()
    return _detached(fig)


# ----------------------------------------------------------------------------------------------------
# private
# ----------------------------------------------------------------------------------------------------


def _plotly_grid(cells, t, n_rows, n_cols, row_labels, col_labels, title, spacing, height):
    import plotly.graph_objects as go

    from toolkit.viz.scenes import Figure3D

    T = len(t)
    offsets = {(i, j): np.array([j * spacing, -i * spacing * 1.1, 0.0], np.float32) for i, j, _ in cells}

    def trace(i, j, fr: Frames, k: int, full: bool):
        k = min(k, len(fr.vertices) - 1)
        v = fr.vertices[k] + offsets[(i, j)]
        f = fr.faces[k]
        if f is None:
            d = {"x": v[:, 0], "y": v[:, 1], "z": v[:, 2]}
            if full:
                d.update(mode="markers", marker={"size": 1.5, "color": _rgb(fr.colors[k])}, showlegend=False)
            return go.Scatter3d(**d)
        d = {"x": v[:, 0], "y": v[:, 1], "z": v[:, 2]}
        if full or fr.faces[0] is not fr.faces[-1]:  # independent topology per frame: send faces too
            d.update(i=f[:, 0], j=f[:, 1], k=f[:, 2])
        if full:
            d.update(vertexcolor=_rgb(fr.colors[k]), flatshading=False, showscale=False,
                     lighting={"ambient": 0.55, "diffuse": 0.7, "specular": 0.1}, hoverinfo="skip")
        return go.Mesh3d(**d)

    data = [trace(i, j, fr, 0, True) for i, j, fr in cells]
    frames = [go.Frame(data=[trace(i, j, fr, k, False) for i, j, fr in cells], name=f"{k}",
                       traces=list(range(len(cells)))) for k in range(T)]
    lo, hi = _extent([np.concatenate(fr.vertices) + offsets[(i, j)] for i, j, fr in cells])
    lo, hi = lo - 0.05, hi + 0.05
    annotations = [{"x": j * spacing, "y": hi[1], "z": 0.0, "text": f"<b>{name}</b>", "showarrow": False}
                   for j, name in enumerate(col_labels or [])]
    annotations += [{"x": lo[0], "y": -i * spacing * 1.1, "z": 0.0, "text": f"<b>{name}</b>", "showarrow": False,
                     "xanchor": "right"} for i, name in enumerate(row_labels or [])]
    span = hi - lo
    axes = {f"{a}axis": {"range": [lo[d], hi[d]], "visible": False} for d, a in enumerate("xyz")}
    fig = go.Figure(data=data, frames=frames if T > 1 else None)
    fig.update_layout(
        title=title, height=height, margin={"l": 0, "r": 0, "t": 40 if title else 10, "b": 0}, showlegend=False,
        scene={**axes, "aspectmode": "manual", "annotations": annotations,
               "aspectratio": {a: float(span[d] / span.max()) for d, a in enumerate("xyz")},
               "camera": {"up": {"x": 0, "y": 1, "z": 0}, "eye": {"x": 0.0, "y": 0.25, "z": 1.6}}})
    if T > 1:
        jump = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}
        play = {"frame": {"duration": 120, "redraw": True}, "fromcurrent": True, "transition": {"duration": 0}}
        buttons = [{"label": "Play", "method": "animate", "args": [None, play]},
                   {"label": "Pause", "method": "animate", "args": [[None], jump]}]
        steps = [{"label": f"{float(t[k]):.3g}", "method": "animate", "args": [[f"{k}"], jump]} for k in range(T)]
        fig.update_layout(
            updatemenus=[{"type": "buttons", "showactive": False, "x": 0.02, "y": 0.02, "xanchor": "left",
                          "yanchor": "bottom", "buttons": buttons}],
            sliders=[{"active": 0, "x": 0.15, "len": 0.8, "y": 0.02, "currentvalue": {"prefix": "t = "},
                      "steps": steps}])
    return Figure3D(fig)


def _static_grid(cells, t, n_rows, n_cols, row_labels, col_labels, title, static_frames):
    import matplotlib.pyplot as plt

    T = len(t)
    ks = sorted(set(np.linspace(0, T - 1, max(1, min(static_frames, T))).round().astype(int).tolist()))
    # A single row or column of cells: one filmstrip (frames left to right) per cell, labelled on its left.
    # A true grid: the grid is drawn once per frame, the frames stacked top to bottom.
    strips = n_rows == 1 or n_cols == 1
    if strips:
        labels = (col_labels if n_rows == 1 else row_labels) or []
        layout = {(i, j): (n, None) for n, (i, j, _) in enumerate(cells)}
        shape = (len(cells), len(ks))
    else:
        labels = row_labels or []
        layout = {(i, j): (i, j) for i, j, _ in cells}
        shape = (n_rows * len(ks), n_cols)
    fig = plt.figure(figsize=(2.2 * shape[1] + 0.8, 2.6 * shape[0] + (0.4 if title else 0)))
    # one shared box so every panel has the same scale
    lo, hi = _extent([np.concatenate(fr.vertices) for _, _, fr in cells])
    centre, half = _to_mpl((0.5 * (lo + hi))[None])[0], 0.5 * (hi - lo).max() + 0.02
    for i, j, fr in cells:
        a, b = layout[(i, j)]
        name = (labels[a] if a < len(labels) else "") if strips else None
        for r, k in enumerate(ks):
            row, col = (a, r) if strips else (r * n_rows + a, b)
            ax = fig.add_subplot(shape[0], shape[1], row * shape[1] + col + 1, projection="3d")
            kk = min(k, len(fr.vertices) - 1)
            _draw(ax, _to_mpl(fr.vertices[kk]), fr.faces[kk], fr.colors[kk], centre, half)
            when = f"t = {float(t[k]):.2f}" if len(fr.vertices) > 1 else "static"
            if strips:
                ax.set_title(when, fontsize=8)
                if r == 0 and name:
                    ax.text2D(-0.02, 0.5, name, transform=ax.transAxes, rotation=90, va="center", ha="right",
                              fontsize=9)
            else:
                head = col_labels[b] + "\n" if col_labels and row == 0 and b < len(col_labels) else ""
                ax.set_title(head + (when if b == 0 else ""), fontsize=8)
                if b == 0 and a < len(labels):
                    ax.text2D(-0.02, 0.5, labels[a], transform=ax.transAxes, rotation=90, va="center", ha="right",
                              fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.92 if title else 0.97, bottom=0.01, wspace=0.0, hspace=0.15)
    return _detached(fig)


def _draw(ax, v: np.ndarray, f: np.ndarray | None, c: np.ndarray, centre: np.ndarray, half: float) -> None:
    """One shaded mesh (or point set) in matplotlib coordinates, in a cube of half-size ``half``."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    if len(v) == 0:
        ax.text(*centre, "empty", ha="center", va="center", fontsize=8, color="grey")
    elif f is None or len(f) == 0:
        ax.scatter(v[:, 0], v[:, 1], v[:, 2], s=0.6, c=c / 255.0, depthshade=False)
    else:
        tri = v[f]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        light = _to_mpl(np.array([[0.3, 0.5, 1.0]]))[0]
        shade = 0.45 + 0.55 * np.clip(n @ (light / np.linalg.norm(light)), 0, 1)
        fc = np.clip(c[f].mean(1) / 255.0 * shade[:, None], 0, 1)
        ax.add_collection3d(Poly3DCollection(tri, facecolors=fc, edgecolors="none", linewidths=0))
    ax.set_xlim(centre[0] - half, centre[0] + half), ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=10, azim=-90)
    ax.set_axis_off()


def _detached(fig):
    """Close a pyplot figure so notebooks show it once (as the cell's result), not twice."""
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig


def _extent(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of all points; the default box [-0.55, 0.55]^3 when there are none (empty meshes)."""
    pts = [a for a in arrays if len(a)]
    if not pts:
        return np.full(3, -0.55), np.full(3, 0.55)
    allv = np.concatenate(pts)
    return allv.min(0), allv.max(0)


def _to_mpl(v: np.ndarray) -> np.ndarray:
    """World (x, y up, z) -> matplotlib (x, -z, y): a rotation, so z is up and the front faces -y."""
    v = np.asarray(v, dtype=np.float64)
    return np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)


def _rgb(colors: np.ndarray) -> list[str]:
    return [f"rgb({r},{g},{b})" for r, g, b in np.asarray(colors, np.uint8)]


def _cluster_decimate(verts: np.ndarray, faces: np.ndarray, colors: np.ndarray, max_faces: int):
    """Vertex clustering on frame 0, applied to every frame: (T, V, 3) -> (T, V', 3), faces', colours'.

    Vertices in one grid cell (of the t=0 positions) merge into their mean in every frame, so the
    reduced mesh keeps the correspondences. Display only: the result may be non-manifold.
    """
    v0 = verts[0]
    lo = v0.min(0)
    edge = np.linalg.norm(v0[faces[:, 0]] - v0[faces[:, 1]], axis=1).mean()
    cell = max(edge, 1e-6) * np.sqrt(len(faces) / max_faces)
    for _ in range(30):
        key = np.floor((v0 - lo) / cell).astype(np.int64)
        _, inv = np.unique(key, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        f = inv[faces]
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
        f = np.unique(f, axis=0) if len(f) else f
        if len(f) <= max_faces:
            break
        cell *= 1.15
    m = inv.max() + 1
    counts = np.bincount(inv, minlength=m).astype(np.float64)[:, None]
    out = np.stack([np.stack([np.bincount(inv, weights=v[:, d], minlength=m) for d in range(3)], 1) / counts
                    for v in verts]).astype(np.float32)
    col = np.stack([np.bincount(inv, weights=colors[:, d].astype(np.float64), minlength=m) for d in range(3)], 1)
    return out, f.astype(np.int64), (col / counts).round().astype(np.uint8)
