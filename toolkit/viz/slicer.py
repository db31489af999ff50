"""Volume slicer for point fields: planes through a 3D label field, as a widget or a static figure.

The Test_Slicing / TestAll notebooks of the original (sof.md 4) showed, for one portrait, the classifier
evaluated on a camera-parallel plane at a chosen depth (argmax colours) beside one class's softmax
probability. :class:`VolumeSlicer` does the same for several fields side by side (a learned field with
its code bound, and the synthetic ground truth of the same portrait) and adds world-axis planes, an
instance selector and a 3D view of one or all classes.

Any point field works (:mod:`toolkit.geometry.fields`): SOF's (N, C) class logits, or an occupancy field's
(N,) logits as two classes, outside and inside (``label_set=toolkit.labels.OCCUPANCY``). A field that
changes with time (``times`` and ``at(t)``, e.g. Occupancy Flow's
:class:`toolkit.oflow.fields.OccupancyField`) gets a time slider; :func:`occupancy_slicer` builds that
slicer from Occupancy Flow evaluation windows. Without a camera (``cam2world=None``) only the world x/y/z
planes are offered.

Slices use :func:`toolkit.geometry.slicing.slice_camera_plane` and
:func:`toolkit.geometry.slicing.slice_field`. Without a widget frontend (headless runs, CI)
:meth:`VolumeSlicer.view` / :meth:`VolumeSlicer.show` draw a static matplotlib grid instead (rows are
times for a time-varying field).
"""
from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from toolkit.geometry.fields import PointField, TimeField, field_at, is_time_field
from toolkit.geometry.grids import Bounds, box
from toolkit.geometry.slicing import SliceResult, class_logits, slice_camera_plane, slice_field
from toolkit.labels import LabelSet, colorize, get_label_set
from toolkit.viz import frontend

if TYPE_CHECKING:
    from toolkit.oflow.model import OccupancyFlow
    from toolkit.oflow.ode import ODEOptions

PLANES = ("camera", "x", "y", "z")
"""Plane orientations: camera-parallel at a camera depth, or world-axis planes at a coordinate."""

DEFAULT_BOUNDS = 1.5
"""Half-size of the world-plane square when neither ``world_bounds`` nor the fields give one."""


class SlicerInstance(NamedTuple):
    """One subject (a portrait, a sequence): named fields shown side by side (e.g. learned and ground truth)."""

    name: str
    fields: Mapping[str, PointField | TimeField]
    """{title: point field (N, 3) world points -> (N, C) logits or (N,) occupancy logits, or a time-varying field}."""


class Latency(NamedTuple):
    mean: float
    """Mean seconds per slider update (all fields sliced, images encoded)."""
    max: float
    """Slowest update, seconds."""
    updates: int
    """Number of timed updates."""


class VolumeSlicer:
    """Slices of point fields along camera-parallel or world-axis planes, at a time for time-varying fields.

    Args:
        instances: subjects to choose from (all with the same field titles).
        cam2world: (4, 4) camera of the camera-parallel planes (OpenCV, e.g. the frontal view); None offers
            the world planes only.
        K: (3, 3) intrinsics in pixels of a ``size`` x ``size`` slice (with ``cam2world``).
        size: slice resolution in pixels (both plane kinds).
        projection: camera model of ``cam2world`` ("ortho" or "perspective").
        depth_range: (near, far) camera depths of the slider; default: from the fields' extent.
        world_bounds: box of the world planes (a half-size, or :data:`toolkit.geometry.grids.Bounds`);
            default: the first field's ``bounds``, else :data:`DEFAULT_BOUNDS`.
        extent_resolution: lattice points per axis of the coarse evaluation that finds where the fields are
            not background; every plane's slider range is that extent plus a margin of two lattice steps.
        class_id: class whose probability is shown first.
        label_set: label names and palette (a registry key or a :class:`toolkit.labels.LabelSet`, e.g.
            ``OCCUPANCY`` for occupancy fields).
        display_scale: integer upscaling of the widget's images.
        instance_label: what an instance is called in the widget ("portrait", "sequence", ...).
    """

    def __init__(self, instances: Sequence[SlicerInstance], *, cam2world: np.ndarray | None = None,
                 K: np.ndarray | None = None, size: int = 128, projection: str = "ortho",
                 depth_range: tuple[float, float] | None = None, world_bounds: Bounds | None = None,
                 class_id: int = 1, label_set: str | LabelSet = "sof20", display_scale: int = 2,
                 extent_resolution: int = 24, instance_label: str = "portrait"):
        if not instances:
            raise ValueError("VolumeSlicer needs at least one instance")
        titles = list(instances[0].fields)
        for inst in instances:
            if list(inst.fields) != titles:
                raise ValueError(f"instance {inst.name!r} has fields {list(inst.fields)}; expected {titles}")
        if (cam2world is None) != (K is None):
            raise ValueError("cam2world and K go together: give both (camera planes) or neither (world planes only)")
        self.instances = list(instances)
        self.planes = PLANES if cam2world is not None else PLANES[1:]
        self.cam2world = None if cam2world is None else np.asarray(cam2world, dtype=np.float64).reshape(4, 4)
        self.K = None if K is None else np.asarray(K, dtype=np.float64).reshape(3, 3)
        self.size, self.projection = int(size), projection
        first = next(iter(instances[0].fields.values()), None)
        own = getattr(field_at(first, None), "bounds", None) if first is not None else None
        self.box = box(world_bounds if world_bounds is not None else own if own is not None else DEFAULT_BOUNDS)
        self.world_bounds = self.box.half_size
        timed = [f for inst in self.instances for f in inst.fields.values() if is_time_field(f)]
        self.times = None if not timed else np.asarray(timed[0].times, dtype=np.float64)
        self.instance_label = instance_label
        self.label_set = get_label_set(label_set)
        if not 0 <= class_id < self.label_set.num_classes:
            raise ValueError(f"class_id {class_id} is not in 0..{self.label_set.num_classes - 1}")
        self.class_id = class_id
        self.display_scale = display_scale
        self.extent_resolution = int(extent_resolution)
        self.depth_range = None if depth_range is None else (float(depth_range[0]), float(depth_range[1]))
        self._ranges: dict[str, tuple[float, float]] | None = None
        self.last_latency: float | None = None

    # -- computing slices ---------------------------------------------------------------------------

    def offset_range(self, plane: str) -> tuple[float, float]:
        """Slider range of a plane kind (camera depths, or world coordinates): where the fields of every
        instance are not background (at the first, middle and last time of time-varying fields), plus a
        small margin (computed once, on a coarse lattice)."""
        self._check_plane(plane)
        if plane == "camera" and self.depth_range is not None:
            return self.depth_range
        if self._ranges is None:
            self._ranges = self._extent_ranges()
        return self._ranges[plane]

    def middle(self, plane: str) -> float:
        """The offset of a slice through the middle of the subject (the middle of :meth:`offset_range`)."""
        lo, hi = self.offset_range(plane)
        return 0.5 * (lo + hi)

    def _extent_ranges(self) -> dict[str, tuple[float, float]]:
        import torch

        from toolkit.geometry.grids import evaluate_field, grid_points

        n = self.extent_resolution
        pts = grid_points(self.box, n)
        solid = torch.zeros(len(pts), dtype=torch.bool)
        times = [None] if self.times is None else sorted({self.times[0], self.times[len(self.times) // 2],
                                                          self.times[-1]})
        for inst in self.instances:
            for field in inst.fields.values():
                for t in times:
                    with torch.no_grad():
                        solid |= class_logits(evaluate_field(field_at(field, t), pts)).argmax(-1).cpu() > 0
        box_lo, box_hi = np.array(self.box.lo), np.array(self.box.hi)
        margin = 2 * (box_hi - box_lo) / (n - 1)
        if not bool(solid.any()):  # nothing to find: the whole box
            inside = pts
        else:
            inside = pts[solid].double().numpy()
        inside = np.asarray(inside, dtype=np.float64)
        lo, hi = inside.min(0) - margin, inside.max(0) + margin
        lo, hi = np.maximum(lo, box_lo), np.minimum(hi, box_hi)
        ranges = {axis: (float(lo[i]), float(hi[i])) for i, axis in enumerate("xyz")}
        if self.cam2world is None:
            return ranges
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        depth = (corners - self.cam2world[:3, 3]) @ self.cam2world[:3, 2]
        ranges["camera"] = (float(depth.min()), float(depth.max()))
        return ranges

    def slices(self, plane: str, offset: float, instance: int = 0, t: float | None = None) -> dict[str, SliceResult]:
        """{field title: SliceResult} of one instance on one plane, time-varying fields at time ``t``
        (default: their first time)."""
        self._check_plane(plane)
        inst = self.instances[instance]
        out = {}
        for title, field in inst.fields.items():
            field = field_at(field, t)
            if plane == "camera":
                out[title] = slice_camera_plane(field, self.cam2world, self.K, self.size, offset,
                                                projection=self.projection)
            else:
                out[title] = slice_field(field, plane, offset, bounds=self.box, resolution=self.size)
        return out

    def panels(self, slices: Mapping[str, SliceResult], class_id: int) -> list[tuple[str, np.ndarray]]:
        """(caption, RGB uint8 image) pairs: argmax colours, then the class probability, per field."""
        name = self.label_set.names[class_id]
        out = []
        for title, res in slices.items():
            out.append((f"{title}: argmax", colorize(res.labels, self.label_set)))
            out.append((f"{title}: p({name})", _magma(res.probabilities[..., class_id])))
        return out

    def default_offsets(self, plane: str, n: int = 5) -> np.ndarray:
        """``n`` offsets evenly inside the range, front to back (near to far depths; world coordinates
        from + to -, so a z plane row matches the frontal camera's depth row)."""
        lo, hi = self.offset_range(plane)
        offsets = np.linspace(lo, hi, n + 2)[1:-1]
        return offsets if plane == "camera" else offsets[::-1]

    def measure_latency(self, *, plane: str | None = None, repeats: int = 10, instance: int = 0) -> Latency:
        """Time slider updates: ``repeats`` offsets across the range of ``plane`` (default the first plane
        kind), each slicing every field of the instance and encoding the images as the widget does (after
        one untimed warm-up update)."""
        plane = plane or self.planes[0]
        lo, hi = self.offset_range(plane)
        self.slices(plane, (lo + hi) / 2, instance)  # warm-up (caches), as the widget's first draw
        times = []
        for offset in np.linspace(lo, hi, repeats + 2)[1:-1]:
            start = time.perf_counter()
            for _, img in self.panels(self.slices(plane, float(offset), instance), self.class_id):
                _png(img, self.display_scale)
            times.append(time.perf_counter() - start)
        return Latency(float(np.mean(times)), float(np.max(times)), len(times))

    def _check_plane(self, plane: str) -> None:
        if plane not in self.planes:
            raise ValueError(f"unknown plane {plane!r}; valid: {list(self.planes)}")

    # -- showing ------------------------------------------------------------------------------------

    def view(self, **static_kwargs):
        """The interactive widget, or (no widget frontend: headless runs, CI) :meth:`static_figure`."""
        if frontend.has_widget_frontend():
            return self.widget()
        return self.static_figure(**static_kwargs)

    def show(self, **static_kwargs) -> None:
        """Display :meth:`view` once (the static figure is closed after display, so it is not shown twice)."""
        from IPython.display import display

        obj = self.view(**static_kwargs)
        display(obj)
        if not frontend.has_widget_frontend():
            import matplotlib.pyplot as plt

            plt.close(obj)

    def static_figure(self, *, planes: Sequence[str] | None = None,
                      offsets: int | Mapping[str, Sequence[float]] = 5,
                      instance: int = 0, class_id: int | None = None, panel_size: float = 1.7):
        """A matplotlib grid: rows are offsets (for a time-varying field: times, each plane through the
        middle of the subject), columns the argmax of every field on every plane kind, then the first
        field's probability of ``class_id``.

        Args:
            planes: plane kinds (default "camera" and "z", or "x" and "z" without a camera).
            offsets: offsets per plane kind, or how many (evenly inside the range); for a time-varying
                field, how many times (evenly over its times).
        """
        import matplotlib.pyplot as plt

        from toolkit.viz.plots import add_legend

        class_id = self.class_id if class_id is None else class_id
        planes = list(planes or (("camera", "z") if self.cam2world is not None else ("x", "z")))
        cuts = self._static_cuts(planes, offsets)
        rows = max(len(cuts[p]) for p in planes)
        titles = list(self.instances[instance].fields)
        ncols = len(planes) * (len(titles) + 1)
        fig, axes = plt.subplots(rows, ncols, figsize=(panel_size * ncols + 2.2, panel_size * rows),
                                 squeeze=False)
        present: set[int] = set()
        for j, plane in enumerate(planes):
            for i, (offset, t) in enumerate(cuts[plane]):
                slices = self.slices(plane, float(offset), instance, t)
                images = self.panels(slices, class_id)
                # Every field's argmax, then the first field's probability.
                keep = [k for k in range(len(images)) if k % 2 == 0] + [1]
                for k, idx in enumerate(keep):
                    ax = axes[i, j * (len(titles) + 1) + k]
                    ax.imshow(images[idx][1], interpolation="nearest")
                    where = f"depth {offset:.2f}" if plane == "camera" else f"{plane} = {offset:+.2f}"
                    where += "" if t is None else f", t = {t:.2f}"
                    ax.set_title(f"{images[idx][0]}\n{where}", fontsize=6)
                for res in slices.values():
                    present.update(int(c) for c in np.unique(res.labels))
        for ax in axes.flat:
            ax.axis("off")
        add_legend(fig, sorted(present), self.label_set)
        what = self.label_set.names[class_id]
        fig.suptitle(f"{self.instances[instance].name}: slices (probability of {what})", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1 - 2.2 / fig.get_figwidth(), 1))
        return fig

    def _static_cuts(self, planes: Sequence[str], offsets) -> dict[str, list[tuple[float, float | None]]]:
        """(offset, time) of every row of the static figure, per plane kind."""
        if self.times is not None and isinstance(offsets, int):
            pick = np.unique(np.linspace(0, len(self.times) - 1, offsets).round().astype(int))
            return {p: [(self.middle(p), float(self.times[k])) for k in pick] for p in planes}
        if isinstance(offsets, int):
            offsets = {p: self.default_offsets(p, offsets) for p in planes}
        t = None if self.times is None else float(self.times[0])
        return {p: [(float(o), t) for o in offsets[p]] for p in planes}

    def figure_3d(self, *, instance: int = 0, class_id: int | None = None, resolution: int = 48,
                  opacity: float = 0.6, t: float | None = None):
        """Plotly scenes (one per field) of class surfaces: one class, or every foreground class when
        ``class_id`` is None; time-varying fields at time ``t``. Surfaces come from one dense evaluation on
        a (resolution + 1)^3 lattice."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        from toolkit.sof.semantic_mesh import dense_class_meshes
        from toolkit.viz.scenes import Figure3D, mesh_trace

        inst = self.instances[instance]
        titles = list(inst.fields)
        fig = make_subplots(rows=1, cols=len(titles), specs=[[{"type": "scene"}] * len(titles)],
                            subplot_titles=titles)
        classes = None if class_id is None else [class_id]
        for col, title in enumerate(titles, start=1):
            field = field_at(inst.fields[title], t)
            meshes = dense_class_meshes(lambda p, f=field: class_logits(f(p)), classes=classes,
                                        resolution=resolution, bounds=self.box, label_set=self.label_set,
                                        chunk=getattr(field, "chunk", 65536))
            for c, mesh in meshes.items():
                fig.add_trace(mesh_trace(mesh.vertices, mesh.faces, color=_rgb(self.label_set.palette[c]),
                                         name=f"{title}: {self.label_set.names[c]}", opacity=opacity),
                              row=1, col=col)
            if not meshes:
                fig.add_trace(go.Scatter3d(x=[0], y=[0], z=[0], mode="markers", marker={"size": 1},
                                           name=f"{title}: empty"), row=1, col=col)
        what = "all classes" if class_id is None else self.label_set.names[class_id]
        fig.update_layout(title=f"{inst.name}: {what}", height=450, margin={"l": 0, "r": 0, "t": 40, "b": 0})
        fig.update_scenes(aspectmode="data",
                          camera={"up": {"x": 0, "y": 1, "z": 0}, "eye": {"x": 0, "y": 0.3, "z": 2.2}})
        return Figure3D(fig)

    def widget(self):
        """The ipywidgets slicer: plane, offset, instance, class (and time) controls, images, a 3D button."""
        import ipywidgets as W
        from IPython.display import display

        names = self.label_set.names
        plane = W.Dropdown(options=list(self.planes), value=self.planes[0], description="plane")
        # One slider per plane kind, swapped in on a plane change: re-ranging one slider lets the browser clamp
        # its old value into the new range and send it back, overriding the middle the kernel set.
        sliders = {}
        for kind in self.planes:
            lo, hi = self.offset_range(kind)
            sliders[kind] = W.FloatSlider(value=self.middle(kind), min=lo, max=hi, step=(hi - lo) / 200,
                                          description="depth" if kind == "camera" else kind,
                                          continuous_update=True, readout_format=".3f")
        slider_box = W.HBox([sliders[self.planes[0]]])
        instance = W.Dropdown(options=[(inst.name, i) for i, inst in enumerate(self.instances)], value=0,
                              description=self.instance_label)
        klass = W.Dropdown(options=[(f"{c} {n}", c) for c, n in enumerate(names)], value=self.class_id,
                           description="class")
        clock = None if self.times is None else _time_slider(W, self.times)
        titles = list(self.instances[0].fields)
        images = [W.Image(format="png") for _ in range(2 * len(titles))]
        captions = [W.HTML() for _ in images]
        status, legend = W.HTML(), W.HTML()
        view3d_class = W.Dropdown(options=[("all classes", -1)] + [(f"{c} {n}", c) for c, n in enumerate(names)
                                                                   if c], value=-1, description="3D")
        view3d_button = W.Button(description="show 3D")
        view3d_out = W.Output()
        state: dict = {"slices": None, "updates": 0}

        def draw_images():
            for k, (caption, img) in enumerate(self.panels(state["slices"], klass.value)):
                images[k].value = _png(img, self.display_scale)
                captions[k].value = f"<small>{caption}</small>"
            present = sorted({int(c) for r in state["slices"].values() for c in np.unique(r.labels)})
            legend.value = _legend_html(present, self.label_set)

        def recompute(*_):
            start = time.perf_counter()
            t = None if clock is None else clock.value
            state["slices"] = self.slices(plane.value, sliders[plane.value].value, instance.value, t)
            draw_images()
            self.last_latency = time.perf_counter() - start
            state["updates"] += 1
            # Set last, after every image, and different each time (the count): a frontend, or the browser
            # test, sees from it that one whole update has arrived.
            status.value = (f'<small data-update="{state["updates"]}">'
                            f"update: {1000 * self.last_latency:.0f} ms</small>")

        def on_plane(change):
            slider_box.children = [sliders[change["new"]]]
            recompute()

        def on_offset(change):
            # A slider shown for the first time sends its value back snapped to its step grid in the browser's
            # arithmetic (a change of ~1e-16): no move, and recomputing would cost a whole redundant update.
            if abs(change["new"] - change["old"]) <= 1e-6 * change["owner"].step:
                return
            recompute()

        def on_3d(_):
            view3d_out.clear_output()
            with view3d_out:
                c = None if view3d_class.value < 0 else view3d_class.value
                display(self.figure_3d(instance=instance.value, class_id=c,
                                       t=None if clock is None else clock.value))

        plane.observe(on_plane, names="value")
        for slider in sliders.values():
            slider.observe(on_offset, names="value")
        instance.observe(recompute, names="value")
        if clock is not None:
            clock.observe(recompute, names="value")
        klass.observe(lambda _: draw_images(), names="value")
        view3d_button.on_click(on_3d)
        recompute()
        cells = [W.VBox([captions[k], images[k]]) for k in range(len(images))]
        controls = [plane, instance, klass] + ([] if clock is None else [clock])
        return W.VBox([W.HBox(controls), W.HBox([slider_box, status]), W.HBox(cells), legend,
                       W.HBox([view3d_class, view3d_button]), view3d_out])


def volume_slicer(instances: Sequence[SlicerInstance], **kwargs):
    """Build a :class:`VolumeSlicer` and return its widget, or a static figure when headless."""
    return VolumeSlicer(instances, **kwargs).view()


def occupancy_slicer(model: OccupancyFlow, items: Sequence[dict] | dict, *, names: Sequence[str] | None = None,
                     times: Sequence[float] | None = None, size: int = 96, ode: str | ODEOptions | None = None,
                     **slicer_kwargs: Any) -> VolumeSlicer:
    """The volume slicer of Occupancy Flow occupancy fields: world x/y/z planes and a time slider.

    Args:
        model: an :class:`toolkit.oflow.model.OccupancyFlow` in eval mode.
        items: windows to choose from (``dataset[i]`` of :class:`toolkit.oflow.data.SequenceDataset`, with
            ``inputs`` (L, N, 3) and ``times``), or one of them.
        names: their names in the selector (default each item's ``sequence``).
        times: the time slider's stops (default each item's ``times``).
        size: slice resolution in pixels.
        ode: transport settings for t > 0 (see :func:`toolkit.oflow.fields.inference_ode`; default the model's).
        **slicer_kwargs: further :class:`VolumeSlicer` options (``display_scale``, ...).

    Returns:
        A :class:`VolumeSlicer` of :class:`toolkit.oflow.fields.OccupancyField` s (two classes, outside and
        inside); ``.show()`` displays the widget, or a static figure with one row per time when there is no
        widget frontend.
    """
    import torch

    from toolkit.labels import OCCUPANCY
    from toolkit.oflow.fields import OccupancyField, window_codes

    items = [items] if isinstance(items, dict) else list(items)
    names = list(names) if names is not None else [str(it.get("sequence", f"window {i}")) for i, it in enumerate(items)]
    instances = []
    for name, item in zip(names, items):
        stops = times if times is not None else torch.as_tensor(item["times"]).cpu().tolist()
        field = OccupancyField(model, window_codes(model, item.get("inputs")), times=stops, ode=ode)
        instances.append(SlicerInstance(name, {"model": field}))
    slicer_kwargs.setdefault("instance_label", "sequence")
    return VolumeSlicer(instances, size=size, label_set=OCCUPANCY, class_id=1, **slicer_kwargs)


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------

def _time_slider(W, times: np.ndarray):
    """A slider over the frame times (steps between frames when they are evenly spaced)."""
    lo, hi = float(times[0]), float(times[-1])
    step = (hi - lo) / (len(times) - 1) if len(times) > 1 else 0.01
    return W.FloatSlider(value=lo, min=lo, max=max(hi, lo + step), step=step, description="time",
                         continuous_update=True, readout_format=".3f")


def _magma(prob: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["magma"](np.clip(prob, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def _png(rgb: np.ndarray, scale: int = 1) -> bytes:
    from PIL import Image

    if scale > 1:
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _rgb(color: np.ndarray) -> str:
    r, g, b = (int(v) for v in color)
    return f"rgb({r},{g},{b})"


def _legend_html(class_ids: Sequence[int], label_set) -> str:
    items = [f'<span style="display:inline-block;width:10px;height:10px;'
             f'background:{_rgb(label_set.palette[c])};margin:0 3px 0 8px"></span>{c} {label_set.names[c]}'
             for c in class_ids]
    return "<small>" + "".join(items) + "</small>"
