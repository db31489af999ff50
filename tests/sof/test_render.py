"""Rendering helpers: pairing rules, bound fields, slices, paths, clean-up, sequences and animations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.geometry.cameras import default_intrinsics, orbit_cameras
from toolkit.labels import SOF20
from toolkit.sof.model import SOFModel, model_config
from toolkit.sof.render import (
    BoundField,
    bind_code,
    camera_plane_points,
    camera_slice,
    clean_small_regions,
    frontal_camera,
    orbit_radius,
    path_cameras,
    render_grid,
    render_label_maps,
    save_animation,
    save_label_animation,
    save_label_sequence,
    slice_camera_plane,
    slice_field,
)

SIZE = 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = SOFModel(model_config("small", num_instances=2, latent_dim=16, phi_width=32, marcher_width=32,
                              steps=4))
    return m.eval()


@pytest.fixture(scope="module")
def cams():
    return orbit_cameras(4.5, np.array([0.0, 0.3, -0.3]), np.array([0.0, 0.1, -0.1]))


# ---------------------------------------------------------------------------------------- rendering

def test_render_label_maps_pairs_codes_and_cameras(model, cams):
    K = default_intrinsics(SIZE)
    codes = model.latent_codes.weight.detach()
    one_code_many_views = render_label_maps(model, codes[0], cams, K, SIZE)
    assert one_code_many_views.shape == (3, SIZE, SIZE) and one_code_many_views.dtype == np.uint8
    paired = render_label_maps(model, codes, cams[:2], K, SIZE)
    assert paired.shape == (2, SIZE, SIZE)
    np.testing.assert_array_equal(paired[0], one_code_many_views[0])  # same code, same camera
    many_codes_one_view = render_label_maps(model, codes, cams[1], K, SIZE)
    np.testing.assert_array_equal(many_codes_one_view[0], one_code_many_views[1])
    labels, depth = render_label_maps(model, codes[0], cams, K, SIZE, return_depth=True)
    np.testing.assert_array_equal(labels, one_code_many_views)
    assert depth.shape == (3, SIZE, SIZE) and np.isfinite(depth).all()
    with pytest.raises(ValueError, match="cannot be paired"):
        render_label_maps(model, codes, cams, K, SIZE)  # 2 codes, 3 cameras


def test_render_grid_is_every_code_times_every_camera(model, cams):
    K = default_intrinsics(SIZE)
    codes = model.latent_codes.weight.detach()
    views = render_grid(model, codes, cams, K, SIZE)
    assert views.shape == (2, 3, SIZE, SIZE)
    for s in range(2):
        np.testing.assert_array_equal(views[s], render_label_maps(model, codes[s], cams, K, SIZE))


def test_bound_field_equals_the_model_field(model):
    z = model.latent_codes.weight[1].detach()
    field = bind_code(model, z)
    xyz = torch.rand(50, 3) * 2 - 1
    torch.testing.assert_close(field(xyz), model.field(z, xyz))
    assert field(xyz).shape == (50, 20)
    with pytest.raises(ValueError, match="length 16"):
        bind_code(model, torch.zeros(17))


# -------------------------------------------------------------------------------------------- slices

def test_camera_plane_points_closed_form():
    K = default_intrinsics(SIZE)  # f = 36 * 8 / 128, c = 4
    pts = camera_plane_points(frontal_camera(), K, SIZE, 4.0).numpy()
    assert pts.shape == (SIZE, SIZE, 3)
    # Frontal camera at (0, 0.1, 4.5) looking down -z with image y pointing down the world's -y.
    f = 36.0 * SIZE / 128
    u = np.arange(SIZE)
    np.testing.assert_allclose(pts[..., 2], 0.5, atol=1e-6)
    np.testing.assert_allclose(pts[0, :, 0], (u - SIZE // 2) / f, atol=1e-5)
    np.testing.assert_allclose(pts[:, 0, 1], 0.1 - (u - SIZE // 2) / f, atol=1e-5)


def test_camera_slice_paths_agree(model):
    z = model.latent_codes.weight[0].detach()
    K, cam = default_intrinsics(SIZE), frontal_camera()
    bound = bind_code(model, z)
    original = camera_slice(model, z, cam, K, SIZE, 4.2)
    cached = camera_slice(model, None, cam, K, SIZE, 4.2, weights=bound.weights)
    via_bound = slice_camera_plane(bound, cam, K, SIZE, 4.2)
    generic = slice_camera_plane(lambda p: model.field(z, p), cam, K, SIZE, 4.2)  # a plain callable
    for res in (cached, via_bound, generic):
        np.testing.assert_array_equal(res.labels, original.labels)
        np.testing.assert_allclose(res.probabilities, original.probabilities, atol=1e-5)
        np.testing.assert_allclose(res.points, original.points, atol=1e-6)
    with pytest.raises(ValueError, match="projection"):
        slice_camera_plane(bound, cam, K, SIZE, 4.2, projection="perspective")


def test_slice_field_orientation_on_an_analytic_field():
    # Class 3 where x > 0, class 7 where y > 0.5, background elsewhere.
    def field(p):
        out = torch.zeros(len(p), 20)
        out[:, 3] = (p[:, 0] > 0).float() * 5
        out[:, 7] = (p[:, 1] > 0.5).float() * 10
        return out

    res = slice_field(field, "z", 0.0, bounds=1.0, resolution=9)
    assert res.labels.shape == (9, 9) and res.probabilities.shape == (9, 9, 20)
    # Rows run from +y (top) to -y, columns from -x to +x.
    assert (res.labels[0] == 7).all() and (res.labels[:2] == 7).all()
    assert (res.labels[4:, 5:] == 3).all() and (res.labels[4:, :4] == 0).all()


# --------------------------------------------------------------------------------------------- paths

def test_paths_orbit_at_the_training_distance():
    for projection in ("ortho", "perspective"):
        cams = path_cameras("spiral", projection=projection, n=7)
        assert cams.shape == (7, 4, 4)
        dist = np.linalg.norm(cams[:, :3, 3] - np.array([0.0, 0.1, 0.0]), axis=1)
        np.testing.assert_allclose(dist, orbit_radius(projection), rtol=1e-6)
    assert orbit_radius("ortho") == 4.5 and orbit_radius("perspective") == 9.5
    np.testing.assert_allclose(path_cameras("yaw_sweep", n=8)[0], frontal_camera(), atol=1e-12)
    assert len(path_cameras("sphere", n_yaw=3, n_pitch=2)) == 6
    with pytest.raises(ValueError, match="valid"):
        path_cameras("zigzag")


# ------------------------------------------------------------------------------------------ clean-up

def test_clean_small_regions_constructed_case():
    labels = np.ones((20, 20), np.uint8)
    labels[:, 10:] = 2
    labels[3:5, 3:5] = 5          # 4 px island inside class 1
    labels[15:18, 12:14] = 3      # 6 px island inside class 2
    labels[8:12, 8:12] = 9        # 16 px block: kept
    labels[0, 9:11] = 7           # 2 px on the 1|2 border: 2 border pixels of each; a tie goes to the lower id
    expected = labels.copy()
    expected[3:5, 3:5] = 1
    expected[15:18, 12:14] = 2
    expected[0, 9:11] = 1
    out = clean_small_regions(labels, 7)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == labels.dtype
    np.testing.assert_array_equal(labels[3, 3], 5)  # input untouched
    stack = clean_small_regions(np.stack([labels, labels]), 7)
    np.testing.assert_array_equal(stack[1], expected)
    np.testing.assert_array_equal(clean_small_regions(labels, 1), labels)  # off
    np.testing.assert_array_equal(clean_small_regions(labels, 17)[8:12, 8:12], 1)  # the block is small now


def test_clean_small_regions_nested_islands_and_errors():
    labels = np.zeros((12, 12), np.int64)
    labels[4:8, 4:8] = 4          # 16 px ring of class 4 ...
    labels[5:7, 5:7] = 6          # ... around a 4 px core of class 6
    out = clean_small_regions(labels, 13)
    # The core joins the ring (4 + 12 = 16 px >= 13), and the ring keeps its class.
    assert (out[4:8, 4:8] == 4).all() and (out[out != 4] == 0).all()
    assert (clean_small_regions(np.full((3, 3), 5), 100) == 5).all()  # a single region has no border
    with pytest.raises(ValueError, match="shape"):
        clean_small_regions(np.zeros(5), 3)
    with pytest.raises(ValueError, match="connectivity"):
        clean_small_regions(labels, 3, connectivity=3)


# ------------------------------------------------------------------------------ sequences, animations

def test_label_sequence_and_animation_files(tmp_path):
    import imageio.v3 as iio

    from toolkit.io import read_label_png

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 20, size=(5, 6, 7)).astype(np.uint8)
    paths = save_label_sequence(labels, tmp_path / "seq", palette=SOF20.palette)
    assert [p.name for p in paths] == [f"{t:04d}.png" for t in range(5)]
    np.testing.assert_array_equal(read_label_png(paths[3], 20), labels[3])
    assert (tmp_path / "seq" / "0003_vis.png").is_file()

    gif = save_label_animation(labels, tmp_path / "anim.gif", fps=10, scale=3)
    frames = iio.imread(gif, index=None)
    assert frames.shape[:3] == (5, 18, 21)
    first = frames[0][..., :3]
    np.testing.assert_array_equal(first[::3, ::3], SOF20.palette[labels[0]])  # lossless palette colours
    with pytest.raises(ValueError, match="valid: .gif, .mp4"):
        save_animation(np.zeros((2, 4, 4, 3), np.uint8), tmp_path / "anim.avi")
    assert not list(tmp_path.glob("*.avi*"))


def test_bound_field_is_a_bound_field(model):
    assert isinstance(bind_code(model, model.latent_codes.weight[0]), BoundField)
