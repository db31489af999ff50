"""Occupancy Flow training losses (reference oflow.md §2 "Losses"; Niemeyer et al., ICCV 2019, Sec. 3.3).

Terms, each weighted and summed into ``total``:

- ``recon_t0``: mean BCE-with-logits of the t=0 decoder on ``points`` (always added, even when the
  random frame is frame 0, as in the original);
- ``recon_t``: mean BCE of the decoder on ``points_t`` transported back from ``points_t.time`` to 0;
- ``corr``: mean over batch, times t_i = i/(L-1) (i >= 1) and points of the unsquared L2 distance
  between the forward-transported frame-0 surface points and their true positions;
- ``kl_z``, ``kl_z_t`` (VAE): ``vae_beta`` x mean over batch and dimensions of KL(q || N(0, I));
  ``kl`` is their sum;
- ``velocity`` (the toolkit's staged recipe): mean unsquared L2 between the velocity field and the
  finite-difference velocity of the true trajectories, at the midpoints of consecutive frames.

Stages (``stage``): ``"joint"`` is the original's single-stage objective (recon_t0 + recon_t [+ corr]
+ kl). The staged recipe splits it so that a CPU budget goes where it pays: ``"shape"`` trains the t=0
occupancy network alone (recon_t0 + kl_z: no ODE at all), ``"motion"`` the velocity field with direct
supervision (velocity + corr [at a few times] + kl_z_t), then a short ``"joint"`` fine-tune.

Batch keys (the original data pipeline's names): ``inputs (B, L, N_in, 3)``, ``points (B, N, 3)``,
``points.occ (B, N)``, ``points_t (B, N, 3)``, ``points_t.occ (B, N)``, ``points_t.time (B,)``,
``pointcloud (B, L, M, 3)`` (correspondence loss only) and optionally ``times (L,)`` (default
``linspace(0, 1, L)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from toolkit.oflow.model import Codes, OccupancyFlow

__all__ = ["REQUIRED_KEYS", "STAGES", "OFlowLosses", "compute_losses", "correspondence_frames", "correspondence_loss",
           "kl_loss", "recon_loss", "velocity_loss"]

STAGES = ("joint", "shape", "motion")
"""Training objectives of :func:`compute_losses` (see the module docstring)."""

REQUIRED_KEYS: tuple[str, ...] = (
    "inputs",
    "points",
    "points.occ",
    "points_t",
    "points_t.occ",
    "points_t.time",
)


class OFlowLosses(NamedTuple):
    """Named loss terms (0-d tensors); ``total`` is the weighted sum that is backpropagated."""

    recon_t0: Tensor
    recon_t: Tensor
    corr: Tensor
    kl_z: Tensor
    kl_z_t: Tensor
    kl: Tensor
    total: Tensor
    velocity: Tensor | None = None


def compute_losses(
    model: OccupancyFlow,
    batch: Mapping[str, Tensor],
    *,
    stage: str = "joint",
    corr: bool = True,
    corr_times: int | None = None,
    vae_beta: float = 1e-4,
    w_recon: float = 1.0,
    w_corr: float = 1.0,
    w_velocity: float = 1.0,
    eps_z: Tensor | None = None,
    eps_z_t: Tensor | None = None,
    generator: torch.Generator | None = None,
    **ode_options: Any,
) -> OFlowLosses:
    """All loss terms of one training batch.

    Args:
        model: the model (its train/eval mode decides the decoder's batch-norm statistics).
        batch: dict with the keys listed in the module docstring.
        stage: "joint" (the original), "shape" or "motion" (see the module docstring).
        corr: add the correspondence loss (needs ``pointcloud``); the original's ``loss_corr``.
        corr_times: score the correspondence at this many evenly spaced frames (ending at the last one)
            instead of every frame; None: every frame (the original).
        vae_beta: KL weight (original 1e-4); only used when the model has latents (z_dim > 0).
        w_recon, w_corr, w_velocity: weights of the reconstruction, correspondence and velocity terms.
        eps_z, eps_z_t: (B, z_dim) fixed reparameterization noise (default: drawn from ``generator``).
        generator: random source for the VAE samples.
        **ode_options: transport overrides (method, rtol, atol, adjoint, step_size, num_steps, per_item).
    Returns:
        OFlowLosses; terms that do not apply are 0.
    Raises:
        KeyError: a required batch key is missing (the message lists what is present).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid: {list(STAGES)}")
    _check_batch(batch, corr or stage == "motion", stage)
    inputs = batch["inputs"]
    zero = inputs.new_zeros(())
    codes, kl_z, kl_z_t = _codes_and_kl(model, inputs, eps_z, eps_z_t, generator)
    kl_z, kl_z_t = vae_beta * kl_z, vae_beta * kl_z_t
    if stage == "shape":
        recon_t0 = recon_loss(model, codes, batch["points"], batch["points.occ"], 0.0)
        return OFlowLosses(recon_t0, zero, zero, kl_z, zero, kl_z, w_recon * recon_t0 + kl_z)
    if stage == "motion":
        times = _times(batch)
        velocity = velocity_loss(model, codes, batch["pointcloud"], times)
        corr_term = correspondence_loss(model, codes, batch["pointcloud"], times, frames=corr_times,
                                        **ode_options) if corr else zero
        total = w_velocity * velocity + w_corr * corr_term + kl_z_t
        return OFlowLosses(zero, zero, corr_term, zero, kl_z_t, kl_z_t, total, velocity)

    recon_t0 = recon_loss(model, codes, batch["points"], batch["points.occ"], 0.0)
    recon_t = recon_loss(
        model, codes, batch["points_t"], batch["points_t.occ"], batch["points_t.time"], **ode_options
    )
    corr_term = zero
    if corr:
        corr_term = correspondence_loss(model, codes, batch["pointcloud"], _times(batch), frames=corr_times,
                                        **ode_options)
    kl = kl_z + kl_z_t
    total = w_recon * (recon_t0 + recon_t) + w_corr * corr_term + kl
    return OFlowLosses(recon_t0, recon_t, corr_term, kl_z, kl_z_t, kl, total)


def recon_loss(
    model: OccupancyFlow, codes: Codes, points: Tensor, occ: Tensor, t: Tensor | float, **ode_options: Any
) -> Tensor:
    """Mean BCE-with-logits of the occupancy at time ``t``: points (B, N, 3), occ (B, N) in [0, 1], t (B,)."""
    logits = model.occupancy(codes, points, t, **ode_options)
    return F.binary_cross_entropy_with_logits(logits, occ.to(logits.dtype))


def correspondence_loss(
    model: OccupancyFlow, codes: Codes, pointcloud: Tensor, times: Tensor, *, frames: int | None = None,
    **ode_options: Any
) -> Tensor:
    """Mean unsquared L2 between forward-transported frame-0 points and their true later positions.

    Args:
        pointcloud: (B, L, M, 3) corresponding surface trajectories.
        times: (L,) time of each frame; frame 0 is the start (t = times[0] must be 0).
        frames: score only this many evenly spaced frames, the last one included (None: frames 1..L-1).
            With a fixed-step solver whose grid holds those times, the solve takes a few steps instead of
            one per frame.
    """
    n = pointcloud.shape[1]
    index = torch.arange(1, n, device=pointcloud.device) if frames is None else correspondence_frames(n, frames)
    index = index.to(pointcloud.device)
    pred = model.transport_forward(codes, pointcloud[:, 0], times[index], **ode_options)  # (B, K, M, 3)
    return torch.linalg.vector_norm(pred - pointcloud[:, index], dim=-1).mean()


def correspondence_frames(length: int, frames: int) -> Tensor:
    """``frames`` evenly spaced frame indices in 1..length-1 ending at the last frame, e.g. (17, 4) -> 4, 8, 12, 16."""
    if not 1 <= frames <= length - 1:
        raise ValueError(f"corr_times must be in 1..{length - 1} for {length}-frame windows; got {frames}")
    return torch.linspace(0, length - 1, frames + 1)[1:].round().long()


def velocity_loss(model: OccupancyFlow, codes: Codes, pointcloud: Tensor, times: Tensor) -> Tensor:
    """Mean unsquared L2 between the velocity field and the trajectories' finite-difference velocity.

    Between frames i and i+1 the true velocity is ``(x_{i+1} - x_i) / (t_{i+1} - t_i)`` up to
    O(dt^2) at the midpoint ``((x_i + x_{i+1}) / 2, (t_i + t_{i+1}) / 2)``, where the field is evaluated;
    it is exact for motions of constant velocity.

    Args:
        pointcloud: (B, L, M, 3) corresponding surface trajectories (frame-0 coordinates).
        times: (L,) increasing frame times.
    """
    b, n, m, _ = pointcloud.shape
    dt = (times[1:] - times[:-1]).to(pointcloud.dtype)                                     # (L-1,)
    target = (pointcloud[:, 1:] - pointcloud[:, :-1]) / dt[None, :, None, None]            # (B, L-1, M, 3)
    mid = 0.5 * (pointcloud[:, 1:] + pointcloud[:, :-1])
    t_mid = (0.5 * (times[1:] + times[:-1])).to(pointcloud.dtype).repeat(b)                # (B * (L-1),)
    rep = Codes(*(c.repeat_interleave(n - 1, dim=0) for c in codes))
    pred = model.velocity(rep, mid.reshape(b * (n - 1), m, 3), t_mid)
    return torch.linalg.vector_norm(pred - target.reshape(b * (n - 1), m, 3), dim=-1).mean()


def kl_loss(q: Normal) -> Tensor:
    """Mean over batch and dimensions of KL(q || N(0, I)); 0 for an empty q or a NaN value."""
    if q.loc.numel() == 0:
        return q.loc.new_zeros(())
    kl = kl_divergence(q, Normal(torch.zeros_like(q.loc), torch.ones_like(q.loc))).mean()
    if torch.isnan(kl):  # the original replaces a NaN KL by 0 (no gradient from this term)
        return kl.new_zeros(())
    return kl


def _codes_and_kl(
    model: OccupancyFlow,
    inputs: Tensor,
    eps_z: Tensor | None,
    eps_z_t: Tensor | None,
    generator: torch.Generator | None,
) -> tuple[Codes, Tensor, Tensor]:
    if (eps_z is None) != (eps_z_t is None):
        raise ValueError("give both eps_z and eps_z_t, or neither")
    eps = None if eps_z is None else (eps_z, eps_z_t)
    codes, q = model.encode_with_posteriors(inputs, sample=True, generator=generator, eps=eps)
    return codes, kl_loss(q.q_z), kl_loss(q.q_z_t)


def _times(batch: Mapping[str, Tensor]) -> Tensor:
    pc = batch["pointcloud"]
    n_frames = pc.shape[1]
    if "times" not in batch:
        return torch.linspace(0.0, 1.0, n_frames, dtype=pc.dtype, device=pc.device)
    times = torch.as_tensor(batch["times"], dtype=pc.dtype, device=pc.device)
    if times.ndim == 2:  # collated (B, L): the windows must share their times
        if not bool((times == times[:1]).all()):
            raise ValueError("batch 'times' differ between items; the correspondence loss needs shared times")
        times = times[0]
    if times.shape != (n_frames,):
        raise ValueError(
            f"batch 'times' must have shape (L,) = ({n_frames},) to match 'pointcloud'; "
            f"got {tuple(times.shape)}"
        )
    if float(times[0]) != 0.0:
        raise ValueError(f"batch 'times' must start at 0 (frame 0 is the reference); got {float(times[0])}")
    return times


def _check_batch(batch: Mapping[str, Tensor], corr: bool, stage: str = "joint") -> None:
    required = {"joint": REQUIRED_KEYS, "shape": ("inputs", "points", "points.occ"), "motion": ("inputs",)}[stage]
    required = required + (("pointcloud",) if corr else ())
    missing = [k for k in required if k not in batch]
    if missing:
        hint = " (or pass corr=False)" if missing == ["pointcloud"] else ""
        raise KeyError(f"batch is missing {missing}{hint}; present: {sorted(batch)}")
