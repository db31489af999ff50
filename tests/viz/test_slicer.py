"""The volume slicer: slices of several fields, static fallback, the widget when a frontend is forced."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import toolkit.viz.frontend
from toolkit.geometry.cameras import default_intrinsics
from toolkit.sof.model import SOFModel, model_config
from toolkit.sof.render import bind_code, frontal_camera, slice_camera_plane
from toolkit.viz.slicer import Latency, SlicerInstance, VolumeSlicer, volume_slicer

SIZE = 16


def ball(class_id: int, radius: float = 0.6):
    """Class ``class_id`` inside a ball at the origin, background outside (one-hot logits)."""
    def field(p):
        inside = p.norm(dim=-1) < radius
        out = torch.zeros(len(p), 20)
        out[:, 0] = (~inside).float() * 10
        out[:, class_id] = inside.float() * 10
        return out
    return field


@pytest.fixture(scope="module")
def slicer():
    torch.manual_seed(0)
    model = SOFModel(model_config("small", num_instances=2, latent_dim=16, phi_width=32, marcher_width=32,
                                  steps=4)).eval()
    instances = [SlicerInstance(f"p{i}", {"learned": bind_code(model, model.latent_codes.weight[i]),
                                          "ground truth": ball(1 + i)}) for i in range(2)]
    return VolumeSlicer(instances, cam2world=frontal_camera(), K=default_intrinsics(SIZE), size=SIZE,
                        class_id=1)


def test_ranges_come_from_the_fields_extent():
    balls = VolumeSlicer([SlicerInstance("a", {"gt": ball(1, 0.6)}), SlicerInstance("b", {"gt": ball(2, 0.4)})],
                         cam2world=frontal_camera(), K=default_intrinsics(SIZE), size=SIZE, extent_resolution=24)
    step = 3.0 / 23
    inner = max(k * step - 1.5 for k in range(24) if abs(k * step - 1.5) < 0.6)  # outermost lattice point inside
    for axis in "xyz":
        assert balls.offset_range(axis) == pytest.approx((-inner - 2 * step, inner + 2 * step))
        assert balls.middle(axis) == pytest.approx(0.0)
    # The frontal camera sits 4.5 in front of the origin: the ball's depths, plus the margin.
    assert balls.offset_range("camera") == pytest.approx((4.5 - inner - 2 * step, 4.5 + inner + 2 * step))
    for plane in ("camera", "x", "y", "z"):
        lo, hi = balls.offset_range(plane)
        assert (balls.slices(plane, balls.middle(plane))["gt"].labels > 0).mean() > 0.05, plane
        assert (balls.slices(plane, lo)["gt"].labels == 0).all() and (balls.slices(plane, hi)["gt"].labels == 0).all()
    third = (inner + 2 * step) / 3
    np.testing.assert_allclose(balls.default_offsets("z", 2), [third, -third], atol=1e-9)  # front to back


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_plane_middle_cuts_a_synthetic_head(seed):
    from toolkit.geometry.cameras import portrait_intrinsics
    from toolkit.synthetic.heads import head_from_seed

    head = head_from_seed(seed)
    slicer = VolumeSlicer([SlicerInstance("head", {"truth": head})], cam2world=frontal_camera(),
                          K=portrait_intrinsics(32), size=32)
    for plane in ("camera", "x", "y", "z"):
        middle = slicer.slices(plane, slicer.middle(plane))["truth"].labels
        assert (middle > 0).mean() > 0.05, (plane, (middle > 0).mean())  # (world planes span the whole box)
        lo, hi = slicer.offset_range(plane)
        assert hi - lo < 3.0  # tighter than the whole box


def test_ranges_and_slices(slicer):
    through_centre = slicer.slices("camera", 4.5, instance=1)
    assert list(through_centre) == ["learned", "ground truth"]
    gt = through_centre["ground truth"]
    assert gt.labels[SIZE // 2, SIZE // 2] == 2 and gt.labels[0, 0] == 0
    in_front = slicer.slices("camera", 3.2, instance=1)["ground truth"]
    assert (in_front.labels == 0).all()
    world = slicer.slices("x", 0.0, instance=0)["ground truth"]
    assert world.labels.shape == (SIZE, SIZE) and 1 in world.labels
    learned = slicer.instances[0].fields["learned"]
    expected = slice_camera_plane(learned, slicer.cam2world, slicer.K, SIZE, 4.1)
    np.testing.assert_array_equal(slicer.slices("camera", 4.1)["learned"].labels, expected.labels)
    panels = slicer.panels(through_centre, class_id=2)
    assert [p[0] for p in panels] == ["learned: argmax", "learned: p(l_brow)", "ground truth: argmax",
                                      "ground truth: p(l_brow)"]
    assert all(img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8 for _, img in panels)
    with pytest.raises(ValueError, match="valid"):
        slicer.slices("oblique", 0.0)


def test_static_fallback_returns_a_figure(slicer, monkeypatch):
    import matplotlib.figure

    monkeypatch.setattr(toolkit.viz.frontend, "has_widget_frontend", lambda: False)
    fig = slicer.view(offsets=3)
    assert isinstance(fig, matplotlib.figure.Figure)
    # 3 offsets x (2 planes x (2 fields + 1 probability)) panels, plus nothing else with an image.
    assert sum(1 for ax in fig.axes if ax.images) == 3 * 6
    import matplotlib.pyplot as plt

    plt.close(fig)
    displayed = []
    monkeypatch.setattr("IPython.display.display", displayed.append)
    assert slicer.show() is None
    assert len(displayed) == 1 and isinstance(displayed[0], matplotlib.figure.Figure)


def test_widget_builds_and_updates_when_forced(slicer, monkeypatch):
    import ipywidgets as W

    monkeypatch.setattr(toolkit.viz.frontend, "has_widget_frontend", lambda: True)
    widget = slicer.view()
    assert isinstance(widget, W.VBox)
    built = volume_slicer(slicer.instances, cam2world=slicer.cam2world, K=slicer.K, size=SIZE)
    assert isinstance(built, W.VBox)
    controls = {w.description: w for box in widget.children if isinstance(box, W.HBox) for w in box.children
                if hasattr(w, "description")}
    images = [w for w in widget.children[2].children for w in w.children if isinstance(w, W.Image)]
    assert len(images) == 4 and all(img.value for img in images)
    slider_box = widget.children[1].children[0]
    assert [s.description for s in slider_box.children] == ["depth"]
    slicer.last_latency = None
    before = images[2].value
    status = widget.children[1].children[1]
    statuses = [status.value]
    controls["portrait"].value = 1
    statuses.append(status.value)
    slider_box.children[0].value = 4.5
    assert slicer.last_latency is not None and images[2].value != before  # the ground-truth ball appeared
    # a plane switch shows that plane's own slider, at the middle of the subject
    controls["plane"].value = "z"
    statuses.append(status.value)
    # the status line, set after the images, differs after every update (its count), so a frontend sees it arrive
    assert len(set(statuses)) == 3 and 'data-update="' in statuses[-1] and " ms</small>" in statuses[-1]
    z = slider_box.children[0]
    assert z.description == "z" and (z.min, z.max) == pytest.approx(slicer.offset_range("z"))
    assert z.value == pytest.approx(slicer.middle("z"), abs=z.step)
    # the browser's echo of a new slider's value, snapped to its grid (a rounding-level change), is no update;
    # a step is
    z.value += 1e-9 * z.step
    assert status.value == statuses[-1]
    z.value -= z.step
    assert status.value != statuses[-1]
    controls["plane"].value = "camera"
    assert slider_box.children[0].value == 4.5  # each plane keeps its own offset
    controls["class"].value = 5  # only recolours


def test_latency_and_3d_view(slicer):
    lat = slicer.measure_latency(repeats=3)
    assert isinstance(lat, Latency) and lat.updates == 3 and 0 < lat.mean <= lat.max
    fig = slicer.figure_3d(instance=1, class_id=None, resolution=16)
    names = [t.name for t in fig.data]
    assert "ground truth: l_brow" in names  # instance 1's ball is class 2
    one = slicer.figure_3d(instance=0, class_id=1, resolution=16)
    assert all(t.name.endswith("skin") or t.name.endswith("empty") for t in one.data)


def test_instances_must_share_field_titles():
    with pytest.raises(ValueError, match="fields"):
        VolumeSlicer([SlicerInstance("a", {"x": ball(1)}), SlicerInstance("b", {"y": ball(1)})],
                     cam2world=frontal_camera(), K=default_intrinsics(SIZE), size=SIZE)
    with pytest.raises(ValueError, match="at least one"):
        VolumeSlicer([], cam2world=frontal_camera(), K=default_intrinsics(SIZE))
