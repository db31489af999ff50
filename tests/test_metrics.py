"""Metrics on hand-computed cases, analytic fields and the original MeshEvaluator's recorded outputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from toolkit.metrics import (
    MIoUAccumulator,
    chamfer_distance,
    confusion_matrix,
    correspondence_error,
    field_miou_3d,
    mesh_contains,
    mesh_metrics,
    nearest_neighbor,
    occupancy_iou,
    sample_mesh_surface,
    segmentation_miou,
)

# ----------------------------------------------------------------------------------------------- mIoU


def test_confusion_matrix_counts_gt_rows_pred_columns():
    gt = np.array([0, 0, 1, 1, 2, 255])
    pred = np.array([0, 1, 1, 1, 0, 2])
    conf = confusion_matrix(pred, gt, 3, ignore_index=255)
    expected = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    torch.testing.assert_close(conf, expected)


def test_miou_hand_computed_single_image():
    # 2x4 image, 4 classes; class 3 absent from both GT and prediction.
    gt = np.array([[0, 0, 1, 1], [0, 2, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 2, 0]])
    r = segmentation_miou(pred, gt, 4)
    # class 0: inter 2 (0,0),(1,0); union = gt{(0,0),(0,1),(1,0)} ∪ pred{(0,0),(1,0),(1,3)} = 4 -> 1/2
    # class 1: inter 2; union 3 -> 2/3;  class 2: inter 2; union 3 -> 2/3;  class 3: absent -> NaN
    np.testing.assert_allclose(r.per_class_iou[:3], [0.5, 2 / 3, 2 / 3])
    assert math.isnan(r.per_class_iou[3])
    assert r.dataset_miou == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert r.dataset_miou_no_bg == pytest.approx(2 / 3)
    # one image: per-image mean equals the dataset value
    assert r.image_miou == pytest.approx(r.dataset_miou)
    assert r.image_miou_no_bg == pytest.approx(r.dataset_miou_no_bg)
    assert r.confusion.sum() == 8


def test_miou_class_only_in_prediction_counts_zero():
    gt = np.zeros((2, 2), dtype=np.int64)
    pred = np.array([[0, 0], [0, 1]])
    r = segmentation_miou(pred, gt, 3)
    np.testing.assert_allclose(r.per_class_iou[:2], [0.75, 0.0])
    assert math.isnan(r.per_class_iou[2])
    assert r.dataset_miou == pytest.approx(0.375)
    # without background only the false-positive class remains
    assert r.dataset_miou_no_bg == pytest.approx(0.0)


def test_miou_empty_prediction_and_background_only_image():
    # Prediction is all background: the missed foreground class scores 0 (not dropped, unlike the
    # original's training log which averaged only non-zero IoUs).
    gt = np.array([[[0, 1], [1, 1]], [[0, 0], [0, 0]]])
    pred = np.zeros_like(gt)
    r = segmentation_miou(pred, gt, 2)
    np.testing.assert_allclose(r.per_image_miou, [(0.25 + 0.0) / 2, 1.0])
    # second image holds only background: no foreground class to score -> NaN, skipped in the mean
    assert r.per_image_miou_no_bg[0] == 0.0 and math.isnan(r.per_image_miou_no_bg[1])
    assert r.image_miou_no_bg == 0.0
    np.testing.assert_allclose(r.per_class_iou, [5 / 8, 0.0])


def test_per_image_and_dataset_level_differ():
    # Image A: big class-1 region predicted perfectly; image B: one class-1 pixel missed.
    gt_a = np.ones((4, 4), np.int64)
    gt_b = np.zeros((4, 4), np.int64)
    gt_b[0, 0] = 1
    pred_a, pred_b = gt_a.copy(), np.zeros((4, 4), np.int64)
    r = segmentation_miou(np.stack([pred_a, pred_b]), np.stack([gt_a, gt_b]), 2)
    # per image: A -> class 1 IoU 1 (class 0 absent) -> 1; B -> class0 15/16, class1 0 -> 15/32
    np.testing.assert_allclose(r.per_image_miou, [1.0, 15 / 32])
    assert r.image_miou == pytest.approx((1 + 15 / 32) / 2)
    np.testing.assert_allclose(r.per_image_miou_no_bg, [1.0, 0.0])
    # dataset: class 1 inter 16, union 17; class 0 inter 15, union 16
    assert r.dataset_miou == pytest.approx((16 / 17 + 15 / 16) / 2)
    assert r.dataset_miou_no_bg == pytest.approx(16 / 17)
    assert abs(r.dataset_miou - r.image_miou) > 0.2


def test_background_none_and_torch_inputs():
    gt = torch.tensor([0, 1, 1, 2])
    pred = torch.tensor([0, 1, 2, 2])
    r = segmentation_miou(pred, gt, 3, background=None)
    assert r.dataset_miou == r.dataset_miou_no_bg == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_accumulator_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 5, (6, 9, 7), generator=g)
    pred = torch.where(torch.rand(6, 9, 7, generator=g) < 0.7, gt, torch.randint(0, 5, (6, 9, 7), generator=g))
    one = segmentation_miou(pred, gt, 6)
    acc = MIoUAccumulator(6)
    acc.update(pred[:2], gt[:2])
    acc.update(pred[2], gt[2])  # a single (H, W) image
    acc.update(pred[3:].numpy(), gt[3:].numpy())
    many = acc.compute()
    for a, b in zip(one, many):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert math.isnan(one.per_class_iou[5])


@pytest.mark.parametrize("bad, match", [
    (lambda p, g: (p.float(), g), "integer class ids"),
    (lambda p, g: (p, g[:-1]), "same shape"),
    (lambda p, g: (p + 3, g), r"pred has class ids \[3, 4\] outside 0..2"),
])
def test_miou_rejects_bad_input(bad, match):
    p, g = torch.tensor([0, 1]), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=match):
        segmentation_miou(*bad(p, g), 3)


# --------------------------------------------------------------------------------------------- 3D mIoU


def _halfspace(a):
    return lambda p: (p[:, 0] < a).long()


def _sphere(r, num_classes=2):
    def field(p):  # logits form
        inside = (p.norm(dim=-1) < r).float()
        return torch.stack([1 - inside, inside], dim=-1)[:, :num_classes]
    return field


def test_field_miou_3d_self_is_one():
    r = field_miou_3d(_sphere(0.5), _sphere(0.5), bounds=1.0, resolution=24, num_classes=2, chunk=1000)
    assert r.dataset_miou == 1.0 and r.dataset_miou_no_bg == 1.0


def test_field_miou_3d_halfspaces_exact_on_cell_boundaries():
    # Box [-1,1]^3 with 20 cells per axis: a=-0.4, b=0.2 lie on cell boundaries, so the grid value is exact.
    a, b = -0.4, 0.2
    r = field_miou_3d(_halfspace(a), _halfspace(b), bounds=((-1, 1), (-1, 1), (-1, 1)), resolution=(20, 3, 5),
                      num_classes=2, chunk=77)
    iou1 = (a + 1) / (b + 1)
    iou0 = (1 - b) / (1 - a)
    np.testing.assert_allclose(r.per_class_iou, [iou0, iou1], rtol=1e-12)
    assert r.dataset_miou_no_bg == pytest.approx(iou1)


def test_field_miou_3d_spheres_analytic():
    r1, r2, h = 0.5, 0.7, 1.0
    res = field_miou_3d(_sphere(r1), _sphere(r2), bounds=h, resolution=64, num_classes=2, chunk=50000)
    vol = (2 * h) ** 3
    v1, v2 = 4 / 3 * math.pi * r1 ** 3, 4 / 3 * math.pi * r2 ** 3
    expected = [(vol - v2) / (vol - v1), (r1 / r2) ** 3]
    np.testing.assert_allclose(res.per_class_iou, expected, atol=5e-3)


def test_field_miou_3d_rejects_float_labels():
    with pytest.raises(ValueError, match="integer labels or"):
        field_miou_3d(lambda p: p[:, 0], _halfspace(0), bounds=1, resolution=4, num_classes=2)


# ---------------------------------------------------------------------------------- occupancy IoU


def test_occupancy_iou_per_item_and_threshold():
    pred = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
    gt = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], bool)
    iou = occupancy_iou(pred, gt)
    assert iou[0] == pytest.approx(1 / 3) and math.isnan(iou[1])
    assert occupancy_iou(np.array([0.6, 0.4]), np.array([1.0, 0.0])) == 1.0


def _icosphere(radius=0.35, subdivisions=3):
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(m.vertices), np.asarray(m.faces)


def test_mesh_contains_sphere_matches_analytic():
    v, f = _icosphere(0.35, 3)
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (4000, 3))
    inside = mesh_contains(v, f, pts)
    r = np.linalg.norm(pts, axis=1)
    clear = (r < 0.33) | (r > 0.351)  # the polyhedron lies between radius ~0.34 and 0.35
    np.testing.assert_array_equal(inside[clear], r[clear] < 0.33)


# ---------------------------------------------------------------------------------- nearest neighbours


@pytest.mark.parametrize("backend, chunk", [("torch", 37), ("torch", 1 << 24), ("kdtree", 1 << 24)])
def test_nearest_neighbor_matches_brute_force(backend, chunk):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 300, 3, generator=g, dtype=torch.float64), torch.rand(2, 517, 3, generator=g,
                                                                                dtype=torch.float64)
    nn = nearest_neighbor(x, y, chunk=chunk, backend=backend)
    full = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
    dmin, amin = full.min(dim=-1)
    torch.testing.assert_close(nn.dist, dmin)
    torch.testing.assert_close(nn.idx, amin)
    single = nearest_neighbor(x[0], y[0], backend=backend, chunk=chunk)
    torch.testing.assert_close(single.dist, dmin[0])


def test_nearest_neighbor_errors():
    with pytest.raises(ValueError, match="y is empty"):
        nearest_neighbor(torch.rand(3, 3), torch.rand(0, 3))
    with pytest.raises(ValueError, match='unknown nearest-neighbour backend "faiss"'):
        nearest_neighbor(torch.rand(3, 3), torch.rand(4, 3), backend="faiss")


# ---------------------------------------------------------------------------------- surface metrics


def test_chamfer_identical_and_shifted():
    g = torch.Generator().manual_seed(2)
    pts = torch.rand(500, 3, generator=g, dtype=torch.float64)
    normals = torch.randn(500, 3, generator=g, dtype=torch.float64)
    same = chamfer_distance(pts, pts, normals, -2 * normals)  # sign and length of normals are ignored
    assert same.chamfer_l1 == 0 and same.chamfer_l2_sq == 0
    assert same.normal_consistency == pytest.approx(1.0)
    # Two copies of a lattice whose spacing (1.0) exceeds twice the shift: every NN is the shifted twin.
    lattice = torch.stack(torch.meshgrid(*[torch.arange(5.0, dtype=torch.float64)] * 3, indexing="ij"), -1)
    lattice = lattice.reshape(-1, 3)
    shift = torch.tensor([0.1, -0.2, 0.2], dtype=torch.float64)  # |shift| = 0.3
    r = chamfer_distance(lattice + shift, lattice)
    assert r.accuracy == pytest.approx(0.3) and r.completeness == pytest.approx(0.3)
    assert r.chamfer_l1 == pytest.approx(0.3) and r.chamfer_l1_x10 == pytest.approx(3.0)
    assert r.chamfer_l2_sq == pytest.approx(2 * 0.09)
    assert math.isnan(r.normal_consistency)


def test_mesh_metrics_identical_meshes():
    v, f = _icosphere(0.3, 2)
    gt_pts, gt_nrm = sample_mesh_surface(v, f, 3000, seed=5)
    q = np.random.default_rng(3).uniform(-0.4, 0.4, (3000, 3))
    m = mesh_metrics(v, f, gt_pts, gt_normals=gt_nrm, points_iou=q, occ_gt=mesh_contains(v, f, q),
                     n_points=3000, seed=5)
    assert m.chamfer_l1 == 0.0 and m.iou == 1.0
    assert m.normal_consistency == pytest.approx(1.0)


def test_correspondence_error_rigid_translation():
    g = torch.Generator().manual_seed(4)
    gt0 = torch.rand(400, 3, generator=g, dtype=torch.float64)
    offsets = torch.tensor([[0, 0, 0], [0.1, 0, 0], [0.3, 0.4, 0.0]], dtype=torch.float64)
    gt_seq = gt0[None] + offsets[:, None]
    verts0 = gt0[::3]  # vertices coincide with every third GT point
    shift = torch.tensor([0.0, 0.0, 0.05], dtype=torch.float64)  # predicted motion overshoots by 0.05 in z
    pred_seq = verts0[None] + offsets[:, None] + shift * torch.arange(3, dtype=torch.float64)[:, None, None]
    err = correspondence_error(pred_seq, gt_seq)
    np.testing.assert_allclose(err, [0.0, 0.05, 0.10], atol=1e-12)


# ---------------------------------------------------------------------------------- original parity


def _fixture(oflow_fixtures):
    with np.load(oflow_fixtures / "metrics_io.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.mark.fixtures
@pytest.mark.parametrize("backend", ["kdtree", "torch"])
def test_chamfer_matches_original_evaluator(oflow_fixtures, backend):
    d = _fixture(oflow_fixtures)
    n = None if backend == "kdtree" else 4000  # the brute-force path is slow on CPU: check a prefix
    if n is None:
        r = chamfer_distance(d["pred_samples"], d["pointcloud_tgt"], d["pred_samples_normals"], d["normals_tgt"],
                             backend=backend)
        pairs = {"accuracy": "accuracy", "completeness": "completeness", "accuracy2": "accuracy2",
                 "completeness2": "completeness2", "chamfer_l2_sq": "chamfer"}
        for ours, theirs in pairs.items():
            assert getattr(r, ours) == pytest.approx(float(d[f"eval_mesh__{theirs}"]), rel=1e-6), ours
        for ours, theirs in {"normal_accuracy": "normals_accuracy", "normal_completeness": "normals_completeness",
                             "normal_consistency": "normals"}.items():
            ref = float(d[f"eval_pointcloud_normals__{theirs}"])
            assert getattr(r, ours) == pytest.approx(ref, rel=1e-6), ours
        x10 = 10 * 0.5 * (float(d["eval_mesh__accuracy"]) + float(d["eval_mesh__completeness"]))
        assert r.chamfer_l1_x10 == pytest.approx(x10, rel=1e-6)
    else:
        a, b = d["pred_samples"][:n], d["pointcloud_tgt"][:n]
        fast = chamfer_distance(a, b, backend="kdtree")
        brute = chamfer_distance(a, b, backend="torch")
        for x, y in zip(fast, brute):
            assert x == pytest.approx(y, rel=1e-6, nan_ok=True)


@pytest.mark.fixtures
def test_iou_and_inside_test_match_original(oflow_fixtures):
    d = _fixture(oflow_fixtures)
    assert occupancy_iou(d["occ_pred"], d["occ_tgt"]) == pytest.approx(float(d["eval_mesh__iou"]), rel=1e-6)
    np.testing.assert_array_equal(mesh_contains(d["gt_vertices"], d["faces"], d["points_iou"]), d["occ_tgt"] >= 0.5)
    np.testing.assert_array_equal(mesh_contains(d["pred_vertices"], d["faces"], d["points_iou"]),
                                  d["occ_pred"] >= 0.5)


@pytest.mark.fixtures
def test_mesh_metrics_matches_original_eval_mesh(oflow_fixtures):
    import trimesh

    d = _fixture(oflow_fixtures)
    if trimesh.__version__ != "5.2.0":
        pytest.skip(f"mesh samples are reproducible only with trimesh 5.2.0 (have {trimesh.__version__})")
    pts, _ = sample_mesh_surface(d["pred_vertices"], d["faces"], 20000, seed=13)
    np.testing.assert_array_equal(pts, d["pred_samples"])
    m = mesh_metrics(d["pred_vertices"], d["faces"], d["pointcloud_tgt"], points_iou=d["points_iou"],
                     occ_gt=d["occ_tgt"], n_points=20000, seed=13)
    for ours, theirs in {"accuracy": "accuracy", "completeness": "completeness", "chamfer_l2_sq": "chamfer",
                         "iou": "iou"}.items():
        assert getattr(m, ours) == pytest.approx(float(d[f"eval_mesh__{theirs}"]), rel=1e-6), ours
    assert math.isnan(m.normal_consistency)


@pytest.mark.fixtures
def test_empty_mesh_gets_original_sentinels(oflow_fixtures):
    d = _fixture(oflow_fixtures)
    with pytest.warns(UserWarning, match="empty prediction"):
        m = mesh_metrics(np.zeros((0, 3)), np.zeros((0, 3), np.int64), d["pointcloud_tgt"],
                         points_iou=d["points_iou"], occ_gt=d["occ_tgt"])
    for ours, theirs in {"accuracy": "accuracy", "completeness": "completeness", "accuracy2": "accuracy2",
                         "completeness2": "completeness2", "chamfer_l2_sq": "chamfer", "iou": "iou"}.items():
        assert getattr(m, ours) == pytest.approx(float(d[f"eval_mesh_empty__{theirs}"])), ours


@pytest.mark.fixtures
def test_correspondence_error_matches_original(oflow_fixtures):
    d = _fixture(oflow_fixtures)
    nn = nearest_neighbor(d["corr_mesh_vertices"][0], d["corr_pcl_tgt"][0])
    np.testing.assert_array_equal(nn.idx.numpy(), d["corr_nn_index_t0"])
    np.testing.assert_allclose(correspondence_error(d["corr_mesh_vertices"], d["corr_pcl_tgt"]), d["corr_l2"],
                               rtol=1e-6)
    np.testing.assert_allclose(
        correspondence_error(d["corr_mesh_vertices"], d["corr_pcl_tgt"], project_to_final_mesh=True),
        d["corr_l2_project_to_final_mesh"], rtol=1e-6)


def test_versus_baseline_says_whether_a_result_beats_it():
    from toolkit.metrics import versus_baseline

    assert versus_baseline(0.02, 0.04, name="a", baseline_name="b") == "a 0.02 vs b 0.04: 50% lower, so it beats the baseline"
    assert versus_baseline(0.0345, 0.0335, name="a", baseline_name="b").endswith("3% higher, so it does NOT beat the baseline")
    assert versus_baseline(0.9, 0.8, name="iou", baseline_name="b", lower_is_better=False).endswith("beats the baseline")
    assert versus_baseline(1.0, 0.0, name="a", baseline_name="b").endswith("not comparable")
