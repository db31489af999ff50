"""SOF training losses (reference: sof.md 2.1; fixtures/sof/README.md section 6).

The original inherited SRN's flag names: its ``--l1_weight`` weighs the segmentation cross-entropy,
``--reg_weight`` the negative-depth penalty and ``--kl_weight`` the latent L2. Here every term is named for
what it is:

    total = 200 * CE + 1e-3 * (1e4 * mean(min(depth, 0)^2)) + 1 * mean(z^2) [+ w * depth supervision]

Shapes: B batch, N pixels (rays), C classes, L latent size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

NEGATIVE_DEPTH_SCALE = 1e4
"""The original multiplies mean(min(depth, 0)^2) by 10^4 inside the term, before its 1e-3 weight."""


@dataclass(frozen=True)
class LossWeights:
    """Weights of the SOF loss terms (defaults: the original train.py's)."""

    segmentation: float = 200.0
    """Cross-entropy weight (the original's ``--l1_weight``)."""
    negative_depth: float = 1e-3
    """Negative-depth penalty weight (``--reg_weight``); effective coefficient 10 with the 1e4 scale."""
    latent: float = 1.0
    """Latent L2 weight (``--kl_weight``)."""
    depth_supervision: float = 0.0
    """Masked SmoothL1 depth supervision weight (``--geo_weight``; 0 = off, the original's default)."""


class SOFLosses(NamedTuple):
    """Unweighted terms and the weighted total (all scalars)."""

    segmentation: torch.Tensor
    negative_depth: torch.Tensor
    latent: torch.Tensor
    depth_supervision: torch.Tensor
    total: torch.Tensor


def segmentation_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy, mean over all B·N pixels including background.

    Args:
        logits: (B, N, C) class logits.
        target: (B, N) integer class ids (float ids, as the original's dataset served them, are accepted).
    """
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} disagree; "
                         "expected (B, N, C) and (B, N)")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1).long())


def negative_depth_penalty(depth: torch.Tensor) -> torch.Tensor:
    """1e4 · mean(min(depth, 0)^2): penalises marched points behind the camera. depth: (B, N)."""
    return NEGATIVE_DEPTH_SCALE * torch.clamp(depth, max=0.0).square().mean()


def latent_l2(z: torch.Tensor) -> torch.Tensor:
    """mean(z^2) over all B x L entries of the batch codes."""
    return z.square().mean()


def masked_depth_loss(depth: torch.Tensor, target_depth: torch.Tensor, mask: torch.Tensor, *,
                      beta: float = 1.0) -> torch.Tensor:
    """SmoothL1 between predicted and ground-truth depth, averaged over foreground pixels only.

    The original meant to mask background pixels but skipped the mask for 20-class segmentation, so
    its background (GT depth 0) was also pulled towards depth 0; here the mask is always applied.

    Args:
        depth, target_depth: (B, N) camera-space depths.
        mask: (B, N) bool, True on foreground pixels (e.g. ``labels > 0``).
    Returns:
        Scalar; 0 when no pixel is foreground.
    """
    if not (depth.shape == target_depth.shape == mask.shape):
        raise ValueError(f"depth {tuple(depth.shape)}, target_depth {tuple(target_depth.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same (B, N) shape")
    per_pixel = F.smooth_l1_loss(depth, target_depth.to(depth.dtype), reduction="none", beta=beta)
    mask = mask.to(depth.dtype)
    return (per_pixel * mask).sum() / mask.sum().clamp(min=1.0)


def sof_losses(logits: torch.Tensor, depth: torch.Tensor, target: torch.Tensor, z: torch.Tensor, *,
               weights: LossWeights = LossWeights(), target_depth: torch.Tensor | None = None,
               depth_mask: torch.Tensor | None = None) -> SOFLosses:
    """All SOF training terms and their weighted total.

    Args:
        logits: (B, N, C) logits; depth: (B, N) camera-space depths (a trailing 1 is accepted).
        target: (B, N) class ids.
        z: (B, L) the batch's latent codes.
        weights: term weights.
        target_depth: (B, N) ground-truth depth, NaN where unknown (background); needed when
            ``weights.depth_supervision > 0``.
        depth_mask: (B, N) bool foreground mask for depth supervision (default ``target > 0``); pixels
            without a finite target depth are always left out.
    """
    if depth.dim() == logits.dim():
        depth = depth.squeeze(-1)
    seg = segmentation_cross_entropy(logits, target)
    neg = negative_depth_penalty(depth)
    lat = latent_l2(z)
    total = weights.segmentation * seg + weights.negative_depth * neg + weights.latent * lat
    sup = depth.new_zeros(())
    if weights.depth_supervision > 0:
        if target_depth is None:
            raise ValueError("weights.depth_supervision > 0 needs target_depth")
        known = torch.isfinite(target_depth)
        mask = (target > 0 if depth_mask is None else depth_mask) & known
        # zero the unknown targets too: a masked-out NaN would still turn the sum into NaN
        sup = masked_depth_loss(depth, torch.where(known, target_depth, 0.0), mask)
        total = total + weights.depth_supervision * sup
    return SOFLosses(seg, neg, lat, sup, total)
