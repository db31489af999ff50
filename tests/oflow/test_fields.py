"""Occupancy Flow as a point field: the occupancy at time t, sliced and shown with a time slider.

The analytic model (conftest) is a sphere translating at z_t per unit time, so the field at time t is the
t=0 sphere moved by z_t * t, exactly, and every slice has a closed-form answer.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import toolkit.viz.frontend
from toolkit.geometry.fields import PointField, TimeField, as_point_field
from toolkit.geometry.slicing import slice_field
from toolkit.labels import OCCUPANCY
from toolkit.oflow.fields import OccupancyField, occupancy_fields
from toolkit.viz import SlicerInstance, VolumeSlicer, occupancy_slicer

Z, Z_T = (0.2, 0.0, 0.0), (0.25, 0.0, 0.0)  # radius 0.2 at the origin, moving +x at 0.25 per unit time


@pytest.fixture
def field(analytic):
    model = analytic.analytic_model().eval()
    return OccupancyField(model, analytic.codes([Z], [Z_T]), times=np.linspace(0, 1, 5), ode="rk4")


def test_is_a_time_varying_point_field(field):
    assert isinstance(field, PointField) and isinstance(field, TimeField)
    assert field.bounds.lo == pytest.approx((-0.55,) * 3) and field.bounds.hi == pytest.approx((0.55,) * 3)
    assert field.device == torch.device("cpu") and field.chunk == 100_000
    assert field.times == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert as_point_field(field) is field
    later = field.at(0.5)
    assert later.t == 0.5 and later.times == field.times and later.codes is field.codes


@pytest.mark.parametrize("t", [0.0, 0.4, 1.0])
def test_values_are_the_moved_sphere(field, analytic, t):
    pts = torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) * 1.1 - 0.55
    expected = analytic.sphere_logits(Z, offset=tuple(t * v for v in Z_T))(pts)
    torch.testing.assert_close(field.at(t)(pts), expected, atol=1e-4, rtol=0)


def test_one_field_per_sequence_of_a_batch(analytic):
    model = analytic.analytic_model().eval()
    fields = occupancy_fields(model, analytic.codes([Z, (0.3, 0.1, 0.0)], [Z_T, (0, 0, 0)]))
    torch.testing.assert_close(torch.cat([f.codes.z for f in fields]), torch.tensor([Z, (0.3, 0.1, 0.0)]))
    with pytest.raises(ValueError, match="one sequence; got batch size 2"):
        OccupancyField(model, analytic.codes([Z, Z], [Z_T, Z_T]))


def test_slice_of_a_scalar_field_has_two_classes(field):
    res = slice_field(field.at(1.0), "z", 0.0, resolution=45)  # the field's own box: [-0.55, 0.55]
    assert res.probabilities.shape == (45, 45, 2)
    np.testing.assert_allclose(res.probabilities.sum(-1), 1.0, atol=1e-6)
    inside = np.linalg.norm(res.points[..., :2] - np.array([0.25, 0.0]), axis=-1) < 0.2
    edge = np.abs(np.linalg.norm(res.points[..., :2] - np.array([0.25, 0.0]), axis=-1) - 0.2) < 0.03
    assert (res.labels[inside & ~edge] == 1).all() and (res.labels[~inside & ~edge] == 0).all()
    # p(inside) is the sigmoid of the logit
    logit = field.at(1.0)(torch.as_tensor(res.points.reshape(-1, 3)))
    np.testing.assert_allclose(res.probabilities[..., 1].ravel(), torch.sigmoid(logit).numpy(), atol=1e-6)


def _slicer(field, **kw):
    return VolumeSlicer([SlicerInstance("sphere", {"model": field})], size=24, label_set=OCCUPANCY, **kw)


def test_slicer_world_planes_and_time(field):
    slicer = _slicer(field)
    assert slicer.planes == ("x", "y", "z") and slicer.times.tolist() == pytest.approx(field.times)
    assert slicer.world_bounds == pytest.approx(0.55)
    # The range covers the sphere at the first, middle and last time: x from -0.2 to 0.45, plus a margin.
    lo, hi = slicer.offset_range("x")
    assert lo < -0.2 and 0.45 < hi and hi - lo < 1.0
    centre = {t: slicer.slices("z", 0.0, t=t)["model"] for t in (0.0, 1.0)}
    xs = {t: r.points[..., 0][r.labels == 1] for t, r in centre.items()}
    assert xs[0.0].mean() == pytest.approx(0.0, abs=0.02) and xs[1.0].mean() == pytest.approx(0.25, abs=0.02)
    with pytest.raises(ValueError, match=r"unknown plane 'camera'; valid: \['x', 'y', 'z'\]"):
        slicer.slices("camera", 4.0)


def test_static_figure_has_a_row_per_time(field, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setattr(toolkit.viz.frontend, "has_widget_frontend", lambda: False)
    fig = _slicer(field).view(offsets=3)
    assert sum(1 for ax in fig.axes if ax.images) == 3 * 2 * 2  # 3 times x 2 planes x (argmax + p(inside))
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert any("t = 0.00" in s for s in titles) and any("t = 1.00" in s for s in titles)
    plt.close(fig)


def test_widget_time_slider_moves_the_sphere(field, monkeypatch):
    import ipywidgets as W

    monkeypatch.setattr(toolkit.viz.frontend, "has_widget_frontend", lambda: True)
    widget = _slicer(field).view()
    controls = {w.description: w for w in widget.children[0].children}
    assert list(controls) == ["plane", "portrait", "class", "time"]
    clock = controls["time"]
    assert isinstance(clock, W.FloatSlider) and (clock.min, clock.max, clock.step) == pytest.approx((0, 1, 0.25))
    controls["plane"].value = "z"
    images = [w for box in widget.children[2].children for w in box.children if isinstance(w, W.Image)]
    status = widget.children[1].children[1]
    before, count = images[0].value, status.value
    clock.value = 1.0
    assert images[0].value != before and status.value != count


def test_occupancy_slicer_builds_from_windows(analytic):
    torch.manual_seed(0)
    from toolkit.oflow.model import build_model

    model = build_model("tiny").eval()
    items = [{"sequence": f"s{i}", "inputs": torch.rand(model.config.seq_len, 50, 3) - 0.5,
              "times": torch.linspace(0, 1, model.config.seq_len)} for i in range(2)]
    slicer = occupancy_slicer(model, items, size=12, ode="rk4")
    assert [inst.name for inst in slicer.instances] == ["s0", "s1"] and slicer.label_set is OCCUPANCY
    assert slicer.instance_label == "sequence" and len(slicer.times) == model.config.seq_len
    res = slicer.slices("y", 0.0, instance=1, t=0.5)["model"]
    assert res.labels.shape == (12, 12) and res.probabilities.shape == (12, 12, 2)


def test_occupancy_meshing_converts_the_probability_once():
    from toolkit.oflow.fields import occupancy_meshing, resolve_meshing

    opts = occupancy_meshing(0.3, resolution0=16, upsampling_steps=1, padding=0.2)
    assert opts.level == pytest.approx(np.log(0.3 / 0.7)) and opts.resolution == 32 and opts.chunk == 100_000
    assert opts.bounds.hi == pytest.approx((0.6,) * 3)
    assert resolve_meshing(opts) is opts and resolve_meshing(threshold=0.3, resolution0=16, upsampling_steps=1,
                                                             padding=0.2) == opts
    with pytest.raises(ValueError, match=r"meshing=MeshingOptions\(...\) or the knobs \['resolution0'\], not both"):
        resolve_meshing(opts, resolution0=64)
    with pytest.raises(ValueError, match=r"occupancy probability in \(0, 1\); got 1.5"):
        occupancy_meshing(1.5)


def test_reconstruct_takes_the_options_object(analytic):
    from toolkit.oflow.fields import occupancy_meshing
    from toolkit.oflow.generate import reconstruct

    model, codes = analytic.analytic_model(), analytic.codes([Z], [Z_T])
    by_knobs = reconstruct(model, codes, times=[0.0, 1.0], resolution0=8, upsampling_steps=1, ode="rk4")[0]
    by_object = reconstruct(model, codes, times=[0.0, 1.0], ode="rk4",
                            meshing=occupancy_meshing(resolution0=8, upsampling_steps=1))[0]
    np.testing.assert_array_equal(by_knobs.vertices, by_object.vertices)
    with pytest.raises(ValueError, match="not both"):
        reconstruct(model, codes, resolution0=8, meshing=occupancy_meshing())
