"""SOF loss terms against closed-form values."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from toolkit.sof.losses import (
    LossWeights,
    latent_l2,
    masked_depth_loss,
    negative_depth_penalty,
    segmentation_cross_entropy,
    sof_losses,
)


def test_cross_entropy_includes_background_and_averages_all_pixels():
    logits = torch.zeros(2, 6, 4)
    target = torch.tensor([[0, 0, 1, 2, 3, 0], [1, 1, 1, 0, 0, 0]])
    assert_close(segmentation_cross_entropy(logits, target), torch.tensor(math.log(4)))
    logits[0, 0, 0] = 100.0  # one confident correct background pixel out of 12
    expected = (11 * math.log(4) + 0.0) / 12
    assert_close(segmentation_cross_entropy(logits, target), torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert_close(segmentation_cross_entropy(logits, target.float()), torch.tensor(expected), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"logits \(2, 6, 4\) and target \(2, 5\) disagree"):
        segmentation_cross_entropy(logits, target[:, :5])


def test_negative_depth_penalty_and_latent_l2():
    depth = torch.tensor([[1.0, -0.5, 2.0, -0.1]])
    assert_close(negative_depth_penalty(depth), torch.tensor(1e4 * (0.25 + 0.01) / 4))
    assert negative_depth_penalty(depth.abs()).item() == 0.0
    z = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    assert_close(latent_l2(z), torch.tensor(14.0 / 4))


def test_depth_supervision_is_masked_to_foreground():
    depth = torch.tensor([[1.0, 2.0, 5.0, 0.2]], requires_grad=True)
    target = torch.tensor([[1.5, 0.0, 2.0, 0.0]])  # GT depth 0 = background
    mask = target > 0
    loss = masked_depth_loss(depth, target, mask)
    assert_close(loss, torch.tensor((0.5 * 0.5**2 + (3.0 - 0.5)) / 2))
    loss.backward()
    assert depth.grad[0, 1] == 0 and depth.grad[0, 3] == 0  # background untouched
    assert masked_depth_loss(depth, target, torch.zeros_like(mask)).item() == 0.0


def test_depth_supervision_skips_unknown_depth():
    """NaN target depth (background in depth maps) is left out even where the labels say foreground."""
    depth = torch.tensor([[1.0, 2.0, 5.0]], requires_grad=True)
    target_depth = torch.tensor([[1.5, float("nan"), 2.0]])
    labels = torch.tensor([[3, 3, 0]])
    out = sof_losses(torch.zeros(1, 3, 20), depth, labels, torch.zeros(1, 4),
                     weights=LossWeights(depth_supervision=1.0), target_depth=target_depth)
    assert_close(out.depth_supervision, torch.tensor(0.5 * 0.5**2))  # only pixel 0: known and foreground
    out.total.backward()
    assert torch.isfinite(depth.grad).all() and depth.grad[0, 1] == 0 and depth.grad[0, 2] == 0


def test_total_uses_the_original_weights():
    assert LossWeights() == LossWeights(segmentation=200.0, negative_depth=1e-3, latent=1.0, depth_supervision=0.0)
    g = torch.Generator().manual_seed(0)
    logits, depth = torch.randn(2, 9, 20, generator=g), torch.randn(2, 9, 1, generator=g)
    target, z = torch.randint(0, 20, (2, 9), generator=g), torch.randn(2, 16, generator=g)
    out = sof_losses(logits, depth, target, z)
    expected = 200 * out.segmentation + 1e-3 * out.negative_depth + out.latent
    assert_close(out.total, expected)
    assert out.depth_supervision.item() == 0.0
    with pytest.raises(ValueError, match="needs target_depth"):
        sof_losses(logits, depth, target, z, weights=LossWeights(depth_supervision=1.0))
    gt = depth[..., 0].detach() + 0.3
    sup = sof_losses(logits, depth, target, z, weights=LossWeights(depth_supervision=2.0), target_depth=gt)
    assert_close(sup.depth_supervision, masked_depth_loss(depth[..., 0], gt, target > 0))
    assert_close(sup.total, expected + 2.0 * sup.depth_supervision)
