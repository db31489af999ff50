"""The volume slicer: slices of several fields, static fallback, the widget when a frontend is forced."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import toolkit.viz
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


def test_ranges_and_slices(slicer):
    # The frontal camera sits 4.5 in front of the origin: depths 4.5 +- 1.5.
    assert slicer.offset_range("camera") == pytest.approx((3.0, 6.0))
    assert slicer.offset_range("y") == (-1.5, 1.5)
    np.testing.assert_allclose(slicer.default_offsets("z", 2), [0.5, -0.5])  # front to back
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

    monkeypatch.setattr(toolkit.viz, "has_widget_frontend", lambda: False)
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

    monkeypatch.setattr(toolkit.viz, "has_widget_frontend", lambda: True)
    widget = slicer.view()
    assert isinstance(widget, W.VBox)
    built = volume_slicer(slicer.instances, cam2world=slicer.cam2world, K=slicer.K, size=SIZE)
    assert isinstance(built, W.VBox)
    controls = {w.description: w for box in widget.children if isinstance(box, W.HBox) for w in box.children
                if hasattr(w, "description")}
    images = [w for w in widget.children[2].children for w in w.children if isinstance(w, W.Image)]
    assert len(images) == 4 and all(img.value for img in images)
    slicer.last_latency = None
    before = images[2].value
    controls["portrait"].value = 1
    controls["offset"].value = 4.5
    assert slicer.last_latency is not None and images[2].value != before  # the ground-truth ball appeared
    controls["plane"].value = "z"
    assert (controls["offset"].min, controls["offset"].max) == (-1.5, 1.5)
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
