"""Cameras: look-at convention, hand-computed rays for both projections, intrinsics scaling, paths."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from toolkit.geometry import cameras as C


def test_look_at_frontal_is_opencv_flip():
    # Camera on +z looking at the origin: x right = +x, y down = -y, z forward = -z.
    m = C.look_at([0.0, 0.0, 4.5], [0.0, 0.0, 0.0])
    assert_close(torch.tensor(m[:3, :3]), torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)))
    assert_close(torch.tensor(m[:3, 3]), torch.tensor([0.0, 0.0, 4.5], dtype=torch.float64))
    assert C.rigid_problem(m) is None


def test_look_at_side_camera_axes():
    # Camera on +x looking at the origin: forward -x, right = forward x up = (0,0,-1)... check by hand.
    m = C.look_at([3.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(m[:3, 2], [-1, 0, 0], atol=1e-12)   # forward
    np.testing.assert_allclose(m[:3, 0], [0, 0, -1], atol=1e-12)   # right = (-1,0,0) x (0,1,0)
    np.testing.assert_allclose(m[:3, 1], [0, -1, 0], atol=1e-12)   # down = -up


def test_look_at_rejects_vertical_view():
    with pytest.raises(ValueError, match="parallel to the up"):
        C.look_at([0.0, 3.0, 0.0], [0.0, 0.0, 0.0])


def test_orbit_position_matches_formula():
    p = C.orbit_position(2.0, 0.3, 0.2, target=(0.0, 0.1, 0.0))
    expected = [2 * math.sin(0.3) * math.cos(0.2), 0.1 + 2 * math.sin(0.2), 2 * math.cos(0.3) * math.cos(0.2)]
    np.testing.assert_allclose(p, expected, atol=1e-12)
    cams = C.orbit_cameras([2.0, 3.0], [0.3, -0.4], [0.2, 0.0])
    assert cams.shape == (2, 4, 4)
    for cam in cams:  # every orbit camera looks at the target
        forward, centre = cam[:3, 2], cam[:3, 3]
        to_target = np.array(C.DEFAULT_TARGET) - centre
        np.testing.assert_allclose(forward, to_target / np.linalg.norm(to_target), atol=1e-12)


def _frontal(size=4, f=2.0):
    cam = torch.tensor(C.look_at([0.0, 0.0, 5.0], [0.0, 0.0, 0.0]), dtype=torch.float32)[None]
    K = torch.tensor(C.intrinsics_matrix(f, f, size / 2, size / 2), dtype=torch.float32)[None]
    return cam, K


@pytest.mark.parametrize("pixel_center", [0.0, 0.5], ids=["integer_pixels", "pixel_centres"])
def test_ortho_rays_hand_computed(pixel_center):
    cam, K = _frontal()
    uv = torch.tensor([[0.0, 0.0], [3.0, 1.0]]) + pixel_center
    rays = C.generate_rays(cam, K, uv, "ortho")
    # x_cam = (u - 2)/2, y_cam = (v - 2)/2; world x = x_cam, world y = -y_cam, on the plane z = 5.
    u, v = uv[:, 0], uv[:, 1]
    expected = torch.stack([(u - 2) / 2, -(v - 2) / 2, torch.full_like(u, 5.0)], -1)[None]
    assert_close(rays.origins, expected)
    assert_close(rays.directions, torch.tensor([0.0, 0.0, -1.0]).expand(1, 2, 3))


def test_perspective_rays_hand_computed():
    cam, K = _frontal()
    uv = torch.tensor([[2.0, 2.0], [4.0, 2.0], [2.0, 0.0]])
    rays = C.generate_rays(cam, K, uv, "perspective")
    assert_close(rays.origins, torch.tensor([0.0, 0.0, 5.0]).expand(1, 3, 3))
    s = 1 / math.sqrt(2)
    # Principal point looks straight ahead; u = 4 is one focal length right (45 degrees); v = 0 is up.
    expected = torch.tensor([[0.0, 0.0, -1.0], [s, 0.0, -s], [0.0, s, -s]])[None]
    assert_close(rays.directions, expected)


def test_lift_and_camera_depth_round_trip():
    cams = torch.tensor(C.orbit_cameras([3.0, 4.0], [0.4, -0.2], [0.1, 0.3]), dtype=torch.float64)
    K = torch.tensor(C.intrinsics_matrix(20.0, 22.0, 16.0, 15.0)).expand(2, 3, 3)
    uv = C.pixel_grid(8, 8, dtype=torch.float64).expand(2, -1, -1)
    for projection in C.PROJECTIONS:
        pts = C.lift(uv, 2.5, cams, K, projection)
        assert_close(C.camera_depth(pts, cams), torch.full((2, 64), 2.5, dtype=torch.float64))
        # The lifted points lie on the rays through the same pixels.
        rays = C.generate_rays(cams, K, uv, projection)
        offset = pts - rays.origins
        assert_close(torch.linalg.cross(offset, rays.directions).norm(dim=-1), torch.zeros(2, 64, dtype=torch.float64),
                     atol=1e-9, rtol=0)


def test_pixel_grid_row_major():
    g = C.pixel_grid(2, 3)
    assert g.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]


def test_scale_intrinsics_conventions():
    K = C.intrinsics_matrix(36.0, 36.0, 64.0, 64.0)
    half = C.scale_intrinsics(K, 0.5)
    np.testing.assert_allclose(half[[0, 1, 0, 1], [0, 1, 2, 2]], [18, 18, 32, 32])
    centred = C.scale_intrinsics(K, 0.5, pixel_center=0.5)
    np.testing.assert_allclose(centred[0, 2], (64 + 0.5) * 0.5 - 0.5)
    np.testing.assert_allclose(C.default_intrinsics(512)[0, 0], 144.0)


def test_rigid_problem_reports_each_defect():
    good = C.look_at([0.0, 0.0, 3.0])
    assert C.rigid_problem(good) is None
    scaled = good.copy(); scaled[:3, :3] *= 1.1
    assert "orthonormal" in C.rigid_problem(scaled)
    mirrored = good.copy(); mirrored[:3, 0] *= -1
    assert "reflection" in C.rigid_problem(mirrored)
    bad_row = good.copy(); bad_row[3, 0] = 1
    assert "last row" in C.rigid_problem(bad_row)
    nan = good.copy(); nan[0, 3] = np.nan
    assert "NaN" in C.rigid_problem(nan)
    assert "shape" in C.rigid_problem(np.eye(3))


@pytest.mark.parametrize("name", sorted(C.CAMERA_PATHS))
def test_camera_paths_are_rigid_and_look_at_target(name):
    cams = C.camera_path(name)
    assert cams.ndim == 3 and cams.shape[1:] == (4, 4) and len(cams) > 4
    for cam in cams:
        assert C.rigid_problem(cam) is None
        to_target = np.array(C.DEFAULT_TARGET) - cam[:3, 3]
        np.testing.assert_allclose(cam[:3, 2], to_target / np.linalg.norm(to_target), atol=1e-9)


def test_yaw_sweep_visits_both_extremes_and_returns():
    cams = C.yaw_sweep_path(40, max_yaw=0.55)
    yaw = np.arctan2(cams[:, 0, 3], cams[:, 2, 3])
    assert yaw[0] == pytest.approx(0.0, abs=1e-9) and yaw[-1] == pytest.approx(0.0, abs=1e-9)
    assert yaw.min() == pytest.approx(-0.55, abs=1e-9) and yaw.max() == pytest.approx(0.55, abs=0.03)
    assert np.argmin(yaw) < np.argmax(yaw)  # left first, then right


def test_unknown_names_list_valid_keys():
    with pytest.raises(ValueError, match="valid"):
        C.camera_path("zigzag")
    with pytest.raises(ValueError, match="ortho"):
        C.generate_rays(torch.eye(4)[None], torch.eye(3)[None], torch.zeros(1, 2), "fisheye")


def test_look_at_torch_matches_numpy_and_is_differentiable():
    eyes = C.orbit_position([3.0, 4.5], [0.3, -0.7], [0.2, -0.1])
    expected = torch.tensor(C.look_at(eyes), dtype=torch.float64)
    eye_t = torch.tensor(eyes, requires_grad=True)
    got = C.look_at_torch(eye_t)
    assert_close(got, expected)
    got[..., :3, 3].sum().backward()
    assert_close(eye_t.grad, torch.ones_like(eye_t))
