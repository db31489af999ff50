"""Occupancy Flow evaluation plumbing on a moving sphere with an exact model: IoU 1, zero Chamfer and
correspondence error on constructed ground truth, chunk invariance, normals only with GT normals, the table."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from toolkit.metrics import chamfer_distance, sample_mesh_surface
from toolkit.oflow._sphere import write_moving_sphere_dataset
from toolkit.oflow.data import SequenceDataset
from toolkit.oflow.evaluate import (
    METRICS,
    evaluate_model,
    evaluate_window,
    format_table,
    occupancy_probabilities,
    occupancy_projection,
    predict_window,
    reconstruct_sequence,
    window_codes,
)
from toolkit.oflow.model import Codes, OccupancyFlow, preset
from toolkit.oflow.ode import ODE_PRESETS

LOGIT_03 = math.log(0.3 / 0.7)


class ExactSphereFlow(nn.Module):
    """The OccupancyFlow field contract for a ball of radius 0.5 translating at the inputs' mean velocity.

    ``encode`` reads the velocity from the input trajectories (last frame minus first, per unit time); the
    decoder's 0.3-probability level set is exactly |p| = 0.5, so its IoU against exact labels is 1.
    """

    needs_inputs = True

    def __init__(self, seq_len: int):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device
        self.config = preset("tiny", seq_len=seq_len)

    def encode(self, inputs, **_):
        v = (inputs[:, -1] - inputs[:, 0]).mean(dim=1)  # (B, 3): t runs 0..1 over the window
        empty = inputs.new_zeros(inputs.shape[0], 0)
        return Codes(empty, v, empty, empty, empty)

    def decode(self, codes, p0):
        return 20.0 * (0.5 - p0.norm(dim=-1)) + LOGIT_03

    def occupancy(self, codes, xyz, t=0.0):
        t = torch.as_tensor(t, dtype=xyz.dtype, device=xyz.device).expand(xyz.shape[0])
        return self.decode(codes, xyz - codes.c_t[:, None, :] * t[:, None, None])

    def transport_forward(self, codes, p0, times, **_ode):
        return p0[:, None] + codes.c_t[:, None, None, :] * times[None, :, None, None]


@pytest.fixture(scope="module")
def sphere_root(tmp_path_factory):
    # frames 9 (t = f/8) and windows of 5: dyadic positions, so the stored labels are exact
    return write_moving_sphere_dataset(tmp_path_factory.mktemp("sphere") / "data", frames=9, n_points=1024,
                                       n_pcl=256)


@pytest.fixture(scope="module")
def eval_set(sphere_root):
    return SequenceDataset(sphere_root, split="test", length=5, eval=True, n_eval_points=1024, eval_jitter=0.0,
                           input_noise=0.0, n_input_points=64)


def test_exact_model_gives_iou_one_in_every_frame(eval_set):
    model = ExactSphereFlow(5)
    for i in (0, len(eval_set) - 1):  # sequence 0 and the faster sequence 1
        pred = predict_window(model, eval_set[i])
        assert pred.iou.shape == (5,)
        np.testing.assert_array_equal(pred.iou, np.ones(5))
        assert 0 < pred.occ.mean() < 1
    # a model that ignores the motion is wrong at t > 0 only
    still = ExactSphereFlow(5)
    still.encode = lambda inputs, **_: Codes(*(inputs.new_zeros(1, k) for k in (0, 3, 0, 0, 0)))
    iou = predict_window(still, eval_set[len(eval_set) - 1]).iou
    assert iou[0] == 1.0 and np.all(iou[1:] < 0.95) and np.all(np.diff(iou) < 0)


def test_constructed_ground_truth_gives_zero_chamfer_and_zero_correspondence_error(eval_set):
    model = ExactSphereFlow(5)
    item = eval_set[len(eval_set) - 1]
    meshes = reconstruct_sequence(model, item["inputs"], item["times"], resolution0=16, upsampling_steps=1)
    assert len(meshes) == 5 and all(m.faces is meshes[0].faces for m in meshes)
    radius = np.linalg.norm(meshes[0].vertices, axis=1)
    assert np.abs(radius - 0.5).max() < 2e-3  # the 0.3 level of the decoder is |p| = 0.5
    # GT surface = points sampled on the predicted meshes with the evaluation's seed: Chamfer exactly 0
    samples = [sample_mesh_surface(m.vertices, m.faces, 500, seed=3) for m in meshes]
    same = dict(item, pointcloud=torch.from_numpy(np.stack([s[0] for s in samples])))
    metrics, seconds = evaluate_window(model, same, resolution0=16, upsampling_steps=1, n_surface_points=500,
                                       seed=3, gt_normals=samples, field_iou=True)
    for k in ("chamfer_l1", "chamfer_l1_x10", "chamfer_l2_sq"):
        np.testing.assert_array_equal(metrics[k], np.zeros(5))
    np.testing.assert_allclose(metrics["normal_consistency"], np.ones(5), atol=1e-6)
    np.testing.assert_array_equal(metrics["iou_field"], np.ones(5))
    assert np.all(metrics["iou"] > 0.9)  # the mesh at 32^3 cells: discretisation only
    assert set(seconds) == {"encode", "iou_field", "mesh_t0_and_propagation", "surface_metrics"}
    # GT trajectories = the propagated vertices themselves: correspondence error exactly 0
    traj = dict(item, pointcloud=torch.from_numpy(np.stack([m.vertices for m in meshes])))
    metrics, _ = evaluate_window(model, traj, resolution0=16, upsampling_steps=1, n_surface_points=500)
    np.testing.assert_array_equal(metrics["corr_l2"], np.zeros(5))
    assert "normal_consistency" not in metrics  # no GT normals, no normal score


def test_surface_metrics_match_the_metric_functions(eval_set):
    model = ExactSphereFlow(5)
    item = eval_set[0]
    metrics, _ = evaluate_window(model, item, resolution0=16, upsampling_steps=1, n_surface_points=400, seed=1)
    meshes = reconstruct_sequence(model, item["inputs"], item["times"], resolution0=16, upsampling_steps=1)
    for t in (0, 4):
        pts, _ = sample_mesh_surface(meshes[t].vertices, meshes[t].faces, 400, seed=1)
        ch = chamfer_distance(pts, item["pointcloud"][t].numpy())
        assert metrics["chamfer_l1"][t] == pytest.approx(ch.chamfer_l1, rel=1e-12)
        assert metrics["chamfer_l1_x10"][t] == pytest.approx(10 * ch.chamfer_l1, rel=1e-12)
        assert metrics["chamfer_l2_sq"][t] == pytest.approx(ch.chamfer_l2_sq, rel=1e-12)
    np.testing.assert_allclose(metrics["corr_l2_x10"], 10 * metrics["corr_l2"])
    # the exact flow keeps every vertex on its sphere: only the frame-0 surface error is left
    assert np.ptp(metrics["corr_l2"]) < 1e-5 and metrics["corr_l2"][0] < 0.1  # 256 GT points: spacing ~0.1


def test_evaluate_model_aggregates_per_frame_and_formats_a_table(eval_set):
    result = evaluate_model(ExactSphereFlow(5), eval_set, max_windows=2, resolution0=16, upsampling_steps=1,
                            n_surface_points=300, field_iou=True)
    assert result["windows"] == 2 and result["frames"] == 5 and result["times"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # 10 windows (2 sequences x 5 starts); two evenly spaced ones: the first and the last
    assert [(w["sequence"], w["start"]) for w in result["per_window"]] == [("s0", 0), ("s1", 4)]
    assert list(result["per_frame"]) == [k for k in METRICS if k != "normal_consistency"]
    assert result["mean"]["iou_field"] == 1.0 and result["mean"]["iou"] > 0.9
    expected = np.mean([w["chamfer_l1"] for w in result["per_window"]], axis=0)
    np.testing.assert_allclose(result["per_frame"]["chamfer_l1"], expected)
    assert result["mean"]["chamfer_l1_x10"] == pytest.approx(10 * result["mean"]["chamfer_l1"])
    table = format_table(result)
    lines = table.splitlines()
    assert "chamfer_l1_x10" in lines[0] and "corr_l2_x10" in lines[0] and "normal_consistency" not in lines[0]
    assert [line.split()[:2] for line in lines[2:7]] == [[str(i), f"{i / 4:.3f}"] for i in range(5)]
    assert lines[8].startswith("mean") and float(lines[8].split()[1]) > 0.9  # mean IoU (mesh containment)
    assert "papers' reporting unit" in lines[-1]


def test_front_view_projection_follows_the_moving_ball():
    model = ExactSphereFlow(5)
    inputs = torch.zeros(5, 8, 3)
    inputs[:, :, 0] = torch.linspace(0, 0.25, 5)[:, None]  # the ball moves +0.25 in x over the window
    codes = window_codes(model, inputs)
    img = occupancy_projection(model, codes, [0.0, 1.0], resolution=23, depth=23)
    assert img.shape == (2, 23, 23)
    xs = np.linspace(-0.55, 0.55, 23)
    inside = lambda cx: (np.hypot(xs[None, :] - cx, xs[::-1, None]) < 0.5 - 0.03)  # rows: +y at the top
    assert np.all(img[0][inside(0.0)] > 0.3) and np.all(img[1][inside(0.25)] > 0.3)
    outside = lambda cx: (np.hypot(xs[None, :] - cx, xs[::-1, None]) > 0.5 + 0.03)
    assert np.all(img[0][outside(0.0)] < 0.3) and np.all(img[1][outside(0.25)] < 0.3)
    assert img[1][11, 3] < 0.3 < img[0][11, 3]  # x = -0.4: inside at t=0, left behind at t=1


def test_learned_model_queries_are_chunk_invariant_and_need_inputs(eval_set):
    torch.manual_seed(0)
    # fixed steps: chunks only change the batching (an adaptive solve picks its steps per chunk)
    model = OccupancyFlow(preset("tiny", seq_len=5, ode=ODE_PRESETS["rk4"])).eval()
    item = eval_set[1]
    codes = window_codes(model, item["inputs"])
    a = occupancy_probabilities(model, codes, item["points"], item["times"])
    b = occupancy_probabilities(model, codes, item["points"], item["times"], chunk=100)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert a.shape == (5, 1024)
    with pytest.raises(ValueError, match="needs the window's inputs"):
        window_codes(model, None)
    no_points = {k: v for k, v in item.items() if not k.startswith("points")}
    metrics, _ = evaluate_window(model, no_points, meshes=False)
    assert metrics == {}
    with pytest.raises(ValueError, match="eval=True"):
        evaluate_model(model, SequenceDataset(eval_set.root, split="test", length=5))
