"""Interactive 3D scenes with plotly: camera frusta, point clouds, meshes.

The figure functions return :class:`Figure3D`: the plotly figure plus a static PNG in its display bundle,
so a saved or headless-run notebook still shows the scene where plotly cannot run."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def camera_frusta_figure(cam2world: np.ndarray, intrinsics: np.ndarray, image_size: int | tuple[int, int], *,
                         projection: str = "ortho", depth: float = 0.6, labels: Sequence[str] | None = None,
                         points: np.ndarray | None = None, point_colors: np.ndarray | None = None,
                         title: str | None = None):
    """Plotly figure of camera frusta (OpenCV cam2world) with an optional point cloud.

    Each camera is drawn as its image rectangle at camera depth ``depth`` joined to the centre
    (perspective), or as a box of the imaged rectangle (ortho, whose rays are parallel), plus an arrow
    along the viewing direction.

    Args:
        cam2world: (V, 4, 4); intrinsics: (3, 3) or (V, 3, 3) in pixels; image_size: S or (H, W).
        points: optional (N, 3) world points, coloured by ``point_colors`` (N, 3) uint8.
    """
    import plotly.graph_objects as go

    cams = np.asarray(cam2world, dtype=np.float64).reshape(-1, 4, 4)
    Ks = np.broadcast_to(np.asarray(intrinsics, dtype=np.float64), (len(cams), 3, 3))
    H, W = (image_size, image_size) if np.isscalar(image_size) else image_size
    xs, ys, zs = [], [], []
    for cam, K in zip(cams, Ks):
        corners_px = np.array([[0, 0], [W, 0], [W, H], [0, H]], dtype=np.float64)
        cx = (corners_px[:, 0] - K[0, 2]) / K[0, 0]
        cy = (corners_px[:, 1] - K[1, 2]) / K[1, 1]
        if projection == "perspective":
            near = np.stack([cx * depth, cy * depth, np.full(4, depth)], -1)
            rect = near @ cam[:3, :3].T + cam[:3, 3]
            centre = cam[:3, 3]
            segs = [rect[[0, 1, 2, 3, 0]]] + [np.stack([centre, r]) for r in rect]
        else:
            plane = np.stack([cx, cy, np.zeros(4)], -1) @ cam[:3, :3].T + cam[:3, 3]
            far = plane + depth * cam[:3, 2]
            segs = [plane[[0, 1, 2, 3, 0]], far[[0, 1, 2, 3, 0]]] + [np.stack([a, b]) for a, b in zip(plane, far)]
        segs.append(np.stack([cam[:3, 3], cam[:3, 3] + 1.5 * depth * cam[:3, 2]]))
        for s in segs:
            xs += list(s[:, 0]) + [None]
            ys += list(s[:, 1]) + [None]
            zs += list(s[:, 2]) + [None]
    traces = [go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color="royalblue", width=2), name="cameras")]
    centres = cams[:, :3, 3]
    traces.append(go.Scatter3d(x=centres[:, 0], y=centres[:, 1], z=centres[:, 2], mode="markers+text",
                               marker=dict(size=3, color="crimson"), name="centres",
                               text=list(labels) if labels is not None else None, textfont=dict(size=9)))
    if points is not None:
        traces.append(point_cloud_trace(points, point_colors))
    fig = go.Figure(traces)
    fig.update_layout(scene=dict(aspectmode="data", xaxis_title="x", yaxis_title="y (up)", zaxis_title="z"),
                      margin=dict(l=0, r=0, t=30 if title else 0, b=0), title=title, height=500)
    fig.update_scenes(camera=dict(up=dict(x=0, y=1, z=0)))
    return Figure3D(fig)


def point_cloud_trace(points: np.ndarray, colors: np.ndarray | None = None, size: float = 1.5, name: str = "points"):
    """A plotly Scatter3d trace for (N, 3) points with optional (N, 3) uint8 colours."""
    import plotly.graph_objects as go

    points = np.asarray(points)
    color = None if colors is None else [f"rgb({r},{g},{b})" for r, g, b in np.asarray(colors, dtype=np.uint8)]
    return go.Scatter3d(x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="markers",
                        marker=dict(size=size, color=color), name=name)


def mesh_trace(vertices: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray | None = None,
               color: str = "lightgray", name: str = "mesh", opacity: float = 1.0):
    """A plotly Mesh3d trace for a triangle mesh with optional (V, 3) uint8 vertex colours."""
    import plotly.graph_objects as go

    v, f = np.asarray(vertices), np.asarray(faces)
    kwargs = dict(color=color) if vertex_colors is None else dict(
        vertexcolor=[f"rgb({r},{g},{b})" for r, g, b in np.asarray(vertex_colors, dtype=np.uint8)])
    return go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2], name=name,
                     opacity=opacity, flatshading=False, **kwargs)


def scene_figure(traces: Sequence, title: str | None = None, height: int = 500):
    """Wrap traces in a Y-up, equal-aspect plotly figure."""
    import plotly.graph_objects as go

    fig = go.Figure(list(traces))
    fig.update_layout(scene=dict(aspectmode="data"), margin=dict(l=0, r=0, t=30 if title else 0, b=0),
                      title=title, height=height)
    fig.update_scenes(camera=dict(up=dict(x=0, y=1, z=0)))
    return Figure3D(fig)


def correspondence_colors(points0: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colours from each point's frame-0 position, so the same index keeps its colour over time."""
    p = np.asarray(points0, dtype=np.float64)
    lo, hi = p.min(0), p.max(0)
    return (255 * (p - lo) / np.maximum(hi - lo, 1e-9)).astype(np.uint8)


def point_cloud_animation(frames: np.ndarray, colors: np.ndarray | None = None, *, times: np.ndarray | None = None,
                          size: float = 1.5, max_points: int = 6000, seed: int = 0, title: str | None = None):
    """A plotly figure with a time slider and play button over a (T, N, 3) point sequence.

    The same ``max_points`` indices are shown in every frame (index k is the same surface point), coloured
    by ``colors`` (N, 3) uint8 (default: :func:`correspondence_colors` of frame 0).
    """
    import plotly.graph_objects as go

    frames = np.asarray(frames, dtype=np.float32)
    T, N = frames.shape[:2]
    keep = np.sort(np.random.default_rng(seed).choice(N, size=min(N, max_points), replace=False))
    colors = correspondence_colors(frames[0]) if colors is None else np.asarray(colors, dtype=np.uint8)
    color = [f"rgb({r},{g},{b})" for r, g, b in colors[keep]]
    times = np.arange(T) if times is None else np.asarray(times)

    def trace(t):
        p = frames[t, keep]
        return go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers", marker=dict(size=size, color=color))

    lo, hi = frames[:, keep].reshape(-1, 3).min(0), frames[:, keep].reshape(-1, 3).max(0)
    fig = go.Figure(data=[trace(0)], frames=[go.Frame(data=[trace(t)], name=str(t)) for t in range(T)])
    steps = [dict(method="animate", label=f"{times[t]:.3g}", args=[[str(t)], dict(mode="immediate",
                                                                                 frame=dict(duration=0))])
             for t in range(T)]
    fig.update_layout(
        title=title, height=520, margin=dict(l=0, r=0, t=30 if title else 0, b=0),
        scene=dict(aspectmode="cube", xaxis=dict(range=[lo[0], hi[0]]), yaxis=dict(range=[lo[1], hi[1]]),
                   zaxis=dict(range=[lo[2], hi[2]])),
        updatemenus=[dict(type="buttons", showactive=False, buttons=[dict(label="play", method="animate", args=[
            None, dict(frame=dict(duration=120, redraw=True), fromcurrent=True)])])],
        sliders=[dict(steps=steps, currentvalue=dict(prefix="t = "))])
    fig.update_scenes(camera=dict(up=dict(x=0, y=1, z=0)))
    return Figure3D(fig)


class Figure3D:
    """A plotly 3D figure that also carries a static PNG of its first scene(s) in its display bundle.

    Notebook front ends that run plotly show the interactive figure; a saved notebook viewed where plotly
    cannot run (GitHub, nbviewer, an exported PDF, a headless run) shows the PNG instead. Attribute access
    goes to the plotly figure (``fig.update_layout(...)``, ``fig.data``, ``fig.frames``); ``fig.figure`` is it.
    """

    def __init__(self, figure, *, elev: float = 12.0, azim: float = -65.0):
        self.figure = figure
        self.view = (elev, azim)

    def __getattr__(self, name: str):
        return getattr(self.figure, name)

    def _repr_mimebundle_(self, include=None, exclude=None):
        import base64

        import plotly.io as pio

        bundle = dict(pio.renderers["plotly_mimetype"].to_mimebundle(self.figure))
        bundle["image/png"] = base64.b64encode(static_png(self.figure, *self.view)).decode("ascii")
        bundle["text/plain"] = f"<3D figure: {len(self.figure.data)} trace(s)>"
        return bundle


def static_png(fig, elev: float = 12.0, azim: float = -65.0, *, panel: float = 3.6, dpi: int = 80) -> bytes:
    """A matplotlib rendering of a plotly figure's 3D traces (Mesh3d, Scatter3d markers and lines), one panel
    per scene, y up, equal aspect; a figure with animation frames shows its first frame."""
    import io

    import matplotlib.pyplot as plt

    scenes = sorted({getattr(t, "scene", None) or "scene" for t in fig.data}) or ["scene"]
    out = plt.figure(figsize=(panel * len(scenes), panel))
    for k, scene in enumerate(scenes):
        ax = out.add_subplot(1, len(scenes), k + 1, projection="3d")
        points = []
        for t in fig.data:
            if (getattr(t, "scene", None) or "scene") == scene:
                points += _draw_trace(ax, t)
        if points:
            p = np.concatenate(points)
            centre, half = 0.5 * (p.max(0) + p.min(0)), 0.5 * float((p.max(0) - p.min(0)).max()) or 1.0
            for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
                setter(c - half, c + half)
        ax.view_init(elev=elev, azim=azim)
        ax.set_axis_off()
    title = fig.layout.title.text if fig.layout.title and fig.layout.title.text else None
    if title:
        out.suptitle(title, fontsize=8)
    buf = io.BytesIO()
    out.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(out)
    return buf.getvalue()


def _draw_trace(ax, trace) -> list[np.ndarray]:
    """Draw one plotly trace on a matplotlib 3D axis, world (x, y, z) as (x, -z, y) so y is up."""
    def arr(v):
        return np.asarray([np.nan if a is None else a for a in (v if v is not None else [])], dtype=np.float64)

    x, y, z = arr(trace.x), arr(trace.y), arr(trace.z)
    if x.size == 0:
        return []
    mx, my, mz = x, -z, y
    kind = trace.type
    if kind == "mesh3d" and trace.i is not None and len(trace.i):
        tri = np.stack([np.asarray(trace.i), np.asarray(trace.j), np.asarray(trace.k)], 1)
        color = trace.color if isinstance(trace.color, str) else "lightgray"
        ax.plot_trisurf(mx, my, mz, triangles=tri, color=_mpl_color(color), alpha=trace.opacity or 1.0,
                        linewidth=0, shade=True)
    elif "lines" in (trace.mode or ""):
        ax.plot(mx, my, mz, lw=0.8)
    else:
        ok = np.isfinite(mx)
        ax.scatter(mx[ok], my[ok], mz[ok], s=0.5, c=_marker_colors(trace, ok.sum()), depthshade=False)
    keep = np.isfinite(mx)
    return [np.stack([mx[keep], my[keep], mz[keep]], 1)]


def _mpl_color(color: str):
    if color.startswith("rgb("):
        return tuple(float(v) / 255 for v in color[4:-1].split(","))
    return color


def _marker_colors(trace, n: int):
    color = getattr(trace.marker, "color", None) if trace.marker is not None else None
    if isinstance(color, (list, tuple)) and len(color) == n and isinstance(color[0], str):
        return [_mpl_color(c) for c in color]
    return "tab:blue" if color is None or not isinstance(color, str) else _mpl_color(color)
