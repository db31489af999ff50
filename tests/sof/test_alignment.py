"""Stage-2 alignment: the similarity read off a mask's eyes and mouth recovers a known scale, shift and
roll; the camera corrections compose as the camera model says (orbit = orbit cameras, similarity =
intrinsics and roll)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.geometry.cameras import DEFAULT_TARGET, orbit_cameras, portrait_intrinsics
from toolkit.sof.alignment import PortraitCameras, aligned_crop, mask_landmarks, mask_similarity, orbit
from toolkit.synthetic.heads import head_from_seed

SIZE = 128
FRONTAL = orbit_cameras(4.5, 0.0, 0.0)


def _render(head, similarity, yaw=0.0, size=SIZE):
    cams = PortraitCameras(torch.tensor([DEFAULT_TARGET]), torch.tensor([similarity]).float())
    with torch.no_grad():
        cams.pose[0, 0] = yaw
        c, k = cams(torch.tensor([0]), torch.tensor(FRONTAL[None]).float(),
                    torch.tensor(portrait_intrinsics(size)[None]).float())
    return head.render(c[0].numpy(), k[0].numpy(), size, size, device="cpu")


@pytest.mark.parametrize("seed", [1, 4])
def test_known_similarity_is_recovered_from_the_mask(seed):
    head = head_from_seed(seed)
    K = portrait_intrinsics(SIZE)
    canonical = _render(head, [0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(mask_similarity(canonical, K), 0.0, atol=0.04)
    for truth in ([np.log(1.2), 0.1, -0.06, 0.25], [np.log(0.8), -0.12, 0.05, -0.3]):
        moved = _render(head, truth)
        assert (moved != canonical).mean() > 0.2  # the transform really changes the mask
        est = mask_similarity(moved, K)
        np.testing.assert_allclose(est[0], truth[0], atol=0.05)
        np.testing.assert_allclose(est[1:3], truth[1:3], atol=0.02)   # focal lengths: 1.3 px at 128 px
        np.testing.assert_allclose(est[3], truth[3], atol=0.04)


def test_positive_roll_turns_the_displayed_image_counter_clockwise():
    rolled = _render(head_from_seed(2), [0.0, 0.0, 0.0, 0.3])
    lm = mask_landmarks(rolled)
    assert lm.eye_image_right[1] < lm.eye_image_left[1]  # the image-right eye rises (smaller row)
    assert aligned_crop(lm).angle == pytest.approx(-0.3, abs=0.04)


def test_orbit_yaw_equals_orbit_camera():
    frontal = torch.tensor(FRONTAL[None]).float()
    target = torch.tensor([DEFAULT_TARGET]).float()
    for yaw, pitch in ((0.5, 0.0), (0.0, 0.3)):
        moved = orbit(frontal, target, torch.tensor([yaw]), torch.tensor([pitch]))[0].numpy()
        np.testing.assert_allclose(moved, orbit_cameras(4.5, yaw, pitch), atol=1e-5)


def test_landmarks_need_eyes_and_mouth():
    labels = np.zeros((32, 32), np.uint8)
    assert mask_landmarks(labels) is None
    np.testing.assert_array_equal(mask_similarity(labels, portrait_intrinsics(32)), np.zeros(4))
