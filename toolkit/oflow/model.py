"""Occupancy Flow networks (Niemeyer et al., ICCV 2019): encoders, t=0 decoder, velocity field, VAE heads.

One network describes the shape at t=0, ``decode(codes, p0) -> logits``; a velocity field
``v(p, t | c_t, z_t)`` carries particles through time. Occupancy at time t transports the query
back to t=0 and decodes there: ``o(p, t) = f(Phi^-1(p, t))`` (reference oflow.md §0-§1).

Conventions: B batch, L frames of the input window, N points, T output times. Coordinates are in
frame-0 normalized units (the frame-0 body fits in about [-0.5, 0.5]^3); time t in [0, 1] with frame
i of an L-frame window at t = i / (L - 1).

Module and parameter names follow the original checkpoints (``encoder.block_0.fc_0.weight``,
``decoder.block0.bn_0.conv_gamma.weight``, ``vector_field.fc_c.0.weight``, ...), so an original
``{'model': state_dict}`` loads directly: see :func:`load_checkpoint` and :func:`infer_config`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal

from toolkit.io import DataError
from toolkit.oflow import ode as _ode
from toolkit.oflow.ode import ODEOptions
from toolkit.training.checkpoints import load_checkpoint as read_checkpoint
from toolkit.training.checkpoints import model_state

__all__ = [
    "DECODERS",
    "PRESETS",
    "TEMPORAL_INPUTS",
    "VELOCITY_PRIORS",
    "CBatchNorm1d",
    "CResnetBlockConv1d",
    "Codes",
    "DecoderCBatchNorm",
    "DecoderSimple",
    "LatentDists",
    "LatentPointnet",
    "OFlowConfig",
    "OccupancyFlow",
    "ResnetBlockFC",
    "ResnetPointnet",
    "TemporalLatentPointnet",
    "TemporalResnetPointnet",
    "VelocityField",
    "build_model",
    "infer_config",
    "load_checkpoint",
    "load_state_dict",
    "preset",
    "trajectory_velocity",
]


# ----------------------------------------------------------------------------------------------------
# Building blocks (reference §1 "Shared building blocks")
# ----------------------------------------------------------------------------------------------------


class ResnetBlockFC(nn.Module):
    """Fully connected residual block: relu -> fc_0 -> relu -> fc_1, plus a (bias-free) linear shortcut.

    Args:
        size_in: input features.
        size_out: output features (default ``size_in``).
        size_h: hidden features (default ``min(size_in, size_out)``).

    Shapes: ``(..., size_in) -> (..., size_out)``. ``fc_1.weight`` starts at zero, so the block starts
    as its shortcut.
    """

    def __init__(self, size_in: int, size_out: int | None = None, size_h: int | None = None):
        super().__init__()
        size_out = size_in if size_out is None else size_out
        size_h = min(size_in, size_out) if size_h is None else size_h
        self.fc_0 = nn.Linear(size_in, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.shortcut = nn.Linear(size_in, size_out, bias=False) if size_in != size_out else None
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: Tensor) -> Tensor:
        dx = self.fc_1(F.relu(self.fc_0(F.relu(x))))
        x_s = x if self.shortcut is None else self.shortcut(x)
        return x_s + dx


class CBatchNorm1d(nn.Module):
    """Conditional batch norm: ``gamma(c) * BN(x) + beta(c)`` with an affine-free BatchNorm1d.

    Args:
        c_dim: code size.
        f_dim: feature channels.
        legacy: use Linear ``fc_gamma``/``fc_beta`` (the original image configs) instead of
            k=1 Conv1d ``conv_gamma``/``conv_beta``; only the parameter names and shapes differ.

    Shapes: ``x (B, f_dim, N)``, ``c (B, c_dim)`` -> ``(B, f_dim, N)``. gamma starts at 1, beta at 0.
    """

    def __init__(self, c_dim: int, f_dim: int, *, legacy: bool = False):
        super().__init__()
        self.legacy = legacy
        if legacy:
            self.fc_gamma = nn.Linear(c_dim, f_dim)
            self.fc_beta = nn.Linear(c_dim, f_dim)
            gamma, beta = self.fc_gamma, self.fc_beta
        else:
            self.conv_gamma = nn.Conv1d(c_dim, f_dim, 1)
            self.conv_beta = nn.Conv1d(c_dim, f_dim, 1)
            gamma, beta = self.conv_gamma, self.conv_beta
        self.bn = nn.BatchNorm1d(f_dim, affine=False)
        nn.init.zeros_(gamma.weight)
        nn.init.zeros_(beta.weight)
        nn.init.ones_(gamma.bias)
        nn.init.zeros_(beta.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if self.legacy:
            gamma, beta = self.fc_gamma(c).unsqueeze(2), self.fc_beta(c).unsqueeze(2)
        else:
            c = c.unsqueeze(2)
            gamma, beta = self.conv_gamma(c), self.conv_beta(c)
        return gamma * self.bn(x) + beta


class CResnetBlockConv1d(nn.Module):
    """Residual block of k=1 convolutions with conditional batch norm.

    ``relu(CBN0(x, c)) -> fc_0 -> relu(CBN1(., c)) -> fc_1``, plus ``x`` (or a bias-free k=1 conv
    shortcut when the sizes differ). Shapes: ``x (B, size_in, N)``, ``c (B, c_dim)`` -> ``(B, size_out, N)``.
    """

    def __init__(
        self,
        c_dim: int,
        size_in: int,
        size_h: int | None = None,
        size_out: int | None = None,
        *,
        legacy: bool = False,
    ):
        super().__init__()
        size_h = size_in if size_h is None else size_h
        size_out = size_in if size_out is None else size_out
        self.bn_0 = CBatchNorm1d(c_dim, size_in, legacy=legacy)
        self.bn_1 = CBatchNorm1d(c_dim, size_h, legacy=legacy)
        self.fc_0 = nn.Conv1d(size_in, size_h, 1)
        self.fc_1 = nn.Conv1d(size_h, size_out, 1)
        self.shortcut = nn.Conv1d(size_in, size_out, 1, bias=False) if size_in != size_out else None
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        net = self.fc_0(F.relu(self.bn_0(x, c)))
        dx = self.fc_1(F.relu(self.bn_1(net, c)))
        x_s = x if self.shortcut is None else self.shortcut(x)
        return x_s + dx


def _pool_concat(net: Tensor) -> Tensor:
    """(B, N, H) -> (B, N, 2H): each point's feature followed by the max over points."""
    pooled = net.max(dim=1, keepdim=True).values.expand_as(net)
    return torch.cat([net, pooled], dim=2)


TEMPORAL_INPUTS = ("positions", "displacements")
"""What the temporal encoders read per point (``OFlowConfig.temporal_input``)."""

DISPLACEMENT_SCALE = 10.0
"""Factor on the displacements of ``temporal_input="displacements"``: a window's motion is a few hundredths
of the unit box, so unscaled it would be a small perturbation of the positions."""


VELOCITY_PRIORS = ("none", "input_trajectories")
"""What the velocity field adds to its network (``OFlowConfig.velocity_prior``)."""

_PRIOR_CHUNK = 1 << 22
"""Query points x input points per distance block of :func:`trajectory_velocity` (16 MiB of float32)."""


def trajectory_velocity(trajectories: Tensor, p: Tensor, t: Tensor, neighbors: int = 4) -> Tensor:
    """Velocity at ``p`` interpolated from the input trajectories' own motion at time ``t``.

    Each input point moves linearly between consecutive frames (frame i at time i / (L - 1)); a query point
    takes the inverse-square-distance weighted mean velocity of its ``neighbors`` nearest input points at
    time t. Integrated, a query point on an input point follows that point's trajectory exactly.

    Args:
        trajectories: (B, L, M, 3) corresponding input points of the window.
        p: (B, N, 3) query points; t: (B,) per-item time in [0, 1].
    Returns:
        (B, N, 3) velocities (per unit time).
    """
    b, n_frames, m, _ = trajectories.shape
    s = t.to(p.dtype).clamp(0, 1) * (n_frames - 1)
    seg = s.floor().clamp(max=n_frames - 2).long()
    frac = (s - seg.to(s.dtype)).reshape(b, 1, 1)
    rows = torch.arange(b, device=p.device)
    start, end = trajectories[rows, seg], trajectories[rows, seg + 1]  # (B, M, 3)
    step = end - start
    here, vel = start + frac * step, step * (n_frames - 1)
    k = min(neighbors, m)
    out = []
    for q in torch.split(p, max(1, _PRIOR_CHUNK // max(1, b * m)), dim=1):
        # squared distances straight from the dot products: the blend needs no square root
        d2 = torch.baddbmm(q.square().sum(2, keepdim=True) + here.square().sum(2).unsqueeze(1), q,
                           here.transpose(1, 2), alpha=-2).clamp_min(0)  # (B, n, M)
        d2, idx = d2.topk(k, dim=2, largest=False)
        w = 1.0 / (d2 + 1e-10)
        w = w / w.sum(dim=2, keepdim=True)
        near = torch.gather(vel.unsqueeze(1).expand(b, q.shape[1], m, 3), 2, idx.unsqueeze(-1).expand(*idx.shape, 3))
        out.append((w.unsqueeze(-1) * near).sum(dim=2))
    return torch.cat(out, dim=1)


def _flatten_trajectories(x: Tensor, temporal_input: str = "positions") -> Tensor:
    """(B, L, N, D) -> (B, N, L*D), frame-major per point: [x0, y0, z0, x1, y1, z1, ...].

    With ``temporal_input="displacements"`` the frames after the first are replaced by
    ``DISPLACEMENT_SCALE * (x_i - x_0)``: the same information (an invertible linear map), but the
    motion is no longer a small perturbation of the position, which the first layer learns far faster.
    """
    if temporal_input == "displacements":
        x = torch.cat([x[:, :1], DISPLACEMENT_SCALE * (x[:, 1:] - x[:, :1])], dim=1)
    b, l, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, l * d)


# ----------------------------------------------------------------------------------------------------
# Encoders (reference §1 "Encoders", "Latent encoders")
# ----------------------------------------------------------------------------------------------------


class ResnetPointnet(nn.Module):
    """PointNet with residual blocks (``pointnet_resnet``): points -> one global code.

    ``fc_pos`` dim->2H, then ``n_blocks`` x ResnetBlockFC(2H->H) named ``block_0``...; after every block
    but the last, the max over points is concatenated to each point; after the last, max-pool -> relu
    -> ``fc_c`` H->c_dim.

    Shapes: ``(B, N, dim) -> (B, c_dim)``.
    """

    def __init__(self, c_dim: int = 128, dim: int = 3, hidden: int = 128, n_blocks: int = 5):
        super().__init__()
        self.n_blocks = n_blocks
        self.fc_pos = nn.Linear(dim, 2 * hidden)
        for i in range(n_blocks):
            self.add_module(f"block_{i}", ResnetBlockFC(2 * hidden, hidden))
        self.fc_c = nn.Linear(hidden, c_dim)

    def forward(self, p: Tensor) -> Tensor:
        net = self.fc_pos(p)
        for i in range(self.n_blocks):
            net = getattr(self, f"block_{i}")(net)
            if i < self.n_blocks - 1:
                net = _pool_concat(net)
        return self.fc_c(F.relu(net.max(dim=1).values))


class TemporalResnetPointnet(ResnetPointnet):
    """ResnetPointnet over point trajectories: each point's L positions are concatenated (dim = 3L).

    Needs corresponding points across frames. ``temporal_input``: see :func:`_flatten_trajectories`.
    Shapes: ``(B, L, N, 3) -> (B, c_dim)``.
    """

    def __init__(
        self, c_dim: int = 128, dim: int = 3, seq_len: int = 17, hidden: int = 128, n_blocks: int = 5,
        temporal_input: str = "positions",
    ):
        super().__init__(c_dim=c_dim, dim=dim * seq_len, hidden=hidden, n_blocks=n_blocks)
        self.temporal_input = temporal_input

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(_flatten_trajectories(x, self.temporal_input))


class LatentPointnet(nn.Module):
    """PointNet posterior head of the VAE (``pointnet`` latent encoder): points -> (mean, logstd).

    ``fc_pos`` dim->2H, ``blocks`` = n_blocks x ResnetBlockFC(2H->H) with max-pool + concat after all
    but the last, then max-pool and ``fc_mean``/``fc_logstd`` H->z_dim. q(z) = N(mean, exp(logstd)).

    Shapes: ``(B, N, dim) -> ((B, z_dim), (B, z_dim))``.
    """

    def __init__(self, z_dim: int = 128, dim: int = 3, hidden: int = 128, n_blocks: int = 3):
        super().__init__()
        self.fc_pos = nn.Linear(dim, 2 * hidden)
        self.blocks = nn.ModuleList([ResnetBlockFC(2 * hidden, hidden) for _ in range(n_blocks)])
        self.fc_mean = nn.Linear(hidden, z_dim)
        self.fc_logstd = nn.Linear(hidden, z_dim)

    def forward(self, p: Tensor) -> tuple[Tensor, Tensor]:
        net = self.fc_pos(p)
        for i, block in enumerate(self.blocks):
            net = block(net)
            if i < len(self.blocks) - 1:
                net = _pool_concat(net)
        net = net.max(dim=1).values
        return self.fc_mean(net), self.fc_logstd(net)


class TemporalLatentPointnet(LatentPointnet):
    """LatentPointnet over L-frame trajectories (dim = 3L; ``temporal_input``: see :func:`_flatten_trajectories`).

    Shapes: ``(B, L, N, 3) -> (mean, logstd)``.
    """

    def __init__(
        self, z_dim: int = 128, dim: int = 3, seq_len: int = 17, hidden: int = 128, n_blocks: int = 3,
        temporal_input: str = "positions",
    ):
        super().__init__(z_dim=z_dim, dim=dim * seq_len, hidden=hidden, n_blocks=n_blocks)
        self.temporal_input = temporal_input

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return super().forward(_flatten_trajectories(x, self.temporal_input))


# ----------------------------------------------------------------------------------------------------
# Decoders and velocity field (reference §1 "Decoder", "Velocity field")
# ----------------------------------------------------------------------------------------------------


class DecoderCBatchNorm(nn.Module):
    """Occupancy decoder with conditional batch norm (``cbatchnorm``), conditioned on c_s (and z).

    k=1 Conv1d ``fc_p`` dim->H, ``+ fc_z(z)`` when z_dim > 0, ``n_blocks`` CResnetBlockConv1d named
    ``block0``..., then CBN ``bn`` -> relu -> ``fc_out`` H->1.

    Shapes: ``p (B, N, dim)``, ``z (B, z_dim)``, ``c (B, c_dim)`` -> logits ``(B, N)``. In train mode
    the batch norm uses the statistics of this call's B*N points (the original's behaviour).
    """

    def __init__(
        self,
        dim: int = 3,
        z_dim: int = 0,
        c_dim: int = 128,
        hidden: int = 256,
        n_blocks: int = 5,
        *,
        legacy: bool = False,
    ):
        super().__init__()
        if c_dim <= 0:
            raise ValueError(
                "decoder 'cbatchnorm' needs c_dim > 0 (it is conditioned on c_s); "
                "use decoder='simple' for models without a spatial encoder"
            )
        self.z_dim, self.n_blocks = z_dim, n_blocks
        self.fc_p = nn.Conv1d(dim, hidden, 1)
        self.fc_z = nn.Linear(z_dim, hidden) if z_dim > 0 else None
        for i in range(n_blocks):
            self.add_module(f"block{i}", CResnetBlockConv1d(c_dim, hidden, legacy=legacy))
        self.bn = CBatchNorm1d(c_dim, hidden, legacy=legacy)
        self.fc_out = nn.Conv1d(hidden, 1, 1)

    def forward(self, p: Tensor, z: Tensor, c: Tensor) -> Tensor:
        net = self.fc_p(p.transpose(1, 2))
        if self.fc_z is not None:
            net = net + self.fc_z(z).unsqueeze(2)
        for i in range(self.n_blocks):
            net = getattr(self, f"block{i}")(net, c)
        return self.fc_out(F.relu(self.bn(net, c))).squeeze(1)


class DecoderSimple(nn.Module):
    """Occupancy decoder without normalization (``simple``), used by the generative/representation configs.

    ``fc_p`` dim->H, ``+ fc_z(z)``, ``+ fc_c(c)`` (each when its size > 0), ``n_blocks`` ResnetBlockFC(H)
    named ``block0``..., relu, ``fc_out`` H->1. Shapes: ``p (B, N, dim)`` -> logits ``(B, N)``.
    """

    def __init__(
        self,
        dim: int = 3,
        z_dim: int = 0,
        c_dim: int = 0,
        hidden: int = 128,
        n_blocks: int = 5,
        *,
        legacy: bool = False,
    ):
        super().__init__()
        del legacy  # no normalization layers, nothing to name differently
        self.n_blocks = n_blocks
        self.fc_p = nn.Linear(dim, hidden)
        self.fc_z = nn.Linear(z_dim, hidden) if z_dim > 0 else None
        self.fc_c = nn.Linear(c_dim, hidden) if c_dim > 0 else None
        for i in range(n_blocks):
            self.add_module(f"block{i}", ResnetBlockFC(hidden))
        self.fc_out = nn.Linear(hidden, 1)

    def forward(self, p: Tensor, z: Tensor, c: Tensor) -> Tensor:
        net = self.fc_p(p)
        if self.fc_z is not None:
            net = net + self.fc_z(z).unsqueeze(1)
        if self.fc_c is not None:
            net = net + self.fc_c(c).unsqueeze(1)
        for i in range(self.n_blocks):
            net = getattr(self, f"block{i}")(net)
        return self.fc_out(F.relu(net)).squeeze(-1)


class VelocityField(nn.Module):
    """Concatenation velocity field (``concat``): v(p, t | c_t, z_t) -> motion vector.

    Input per point is (x, y, z, t): ``fc_p`` (dim+1)->H; before residual block i the codes are added,
    ``+ fc_c[i](c_t)`` and ``+ fc_z[i](z_t)`` (each when its size > 0); then relu and ``fc_out`` H->3.

    Shapes: ``p (B, N, dim)``, ``t (B,)`` per-item time, ``c (B, c_dim)``, ``z (B, z_dim)``
    -> ``(B, N, out_dim)``.
    """

    def __init__(
        self,
        dim: int = 3,
        out_dim: int = 3,
        c_dim: int = 128,
        z_dim: int = 0,
        hidden: int = 128,
        n_blocks: int = 5,
    ):
        super().__init__()
        self.fc_p = nn.Linear(dim + 1, hidden)
        self.fc_c = nn.ModuleList([nn.Linear(c_dim, hidden) for _ in range(n_blocks)]) if c_dim > 0 else None
        self.fc_z = nn.ModuleList([nn.Linear(z_dim, hidden) for _ in range(n_blocks)]) if z_dim > 0 else None
        self.blocks = nn.ModuleList([ResnetBlockFC(hidden) for _ in range(n_blocks)])
        self.fc_out = nn.Linear(hidden, out_dim)

    def forward(self, p: Tensor, t: Tensor, c: Tensor, z: Tensor) -> Tensor:
        b, n, _ = p.shape
        tt = t.to(p.dtype).reshape(b, 1, 1).expand(b, n, 1)
        net = self.fc_p(torch.cat([p, tt], dim=2))
        for i, block in enumerate(self.blocks):
            if self.fc_c is not None:
                net = net + self.fc_c[i](c).unsqueeze(1)
            if self.fc_z is not None:
                net = net + self.fc_z[i](z).unsqueeze(1)
            net = block(net)
        return self.fc_out(F.relu(net))


DECODERS: dict[str, type[nn.Module]] = {"cbatchnorm": DecoderCBatchNorm, "simple": DecoderSimple}


# ----------------------------------------------------------------------------------------------------
# Configuration and presets
# ----------------------------------------------------------------------------------------------------


@dataclass
class OFlowConfig:
    """Sizes of an Occupancy Flow model and its default ODE settings (``asdict``-able for checkpoints)."""

    dim: int = 3
    """spatial dimension of points"""
    seq_len: int = 17
    """frames L read by the temporal encoders (input window length)"""
    c_dim: int = 128
    """size of the deterministic codes c_s and c_t; 0 = no point-cloud encoders"""
    encoder_hidden: int = 128
    """hidden width H of the ResnetPointnet encoders (fc_pos gives 2H)"""
    encoder_blocks: int = 5
    """residual blocks of the ResnetPointnet encoders"""
    z_dim: int = 0
    """size of the VAE latents z and z_t; 0 = no latent encoders (deterministic model)"""
    latent_hidden: int = 128
    """hidden width of the latent PointNet heads"""
    latent_blocks: int = 3
    """residual blocks of the latent PointNet heads"""
    decoder: str = "cbatchnorm"
    """t=0 occupancy decoder, a key of DECODERS: 'cbatchnorm' or 'simple'"""
    decoder_hidden: int = 256
    """decoder width"""
    decoder_blocks: int = 5
    """decoder residual blocks"""
    decoder_legacy: bool = False
    """CBN with Linear fc_gamma/fc_beta (original image configs) instead of Conv1d conv_gamma/conv_beta"""
    vf_hidden: int = 128
    """velocity-field width"""
    vf_blocks: int = 5
    """velocity-field residual blocks"""
    temporal_input: str = "positions"
    """what the temporal encoders read per point: "positions" (the original) or "displacements" (frame 0,
    then the scaled displacement from it; same weights' shapes, much faster to learn motion codes)"""
    velocity_prior: str = "none"
    """"none" (the original) or "input_trajectories": the field adds the input trajectories' own velocity
    near each point (:func:`trajectory_velocity`) to its network, which then learns the residual; needs
    corresponding input points (completion models)"""
    prior_neighbors: int = 4
    """input points blended by ``velocity_prior="input_trajectories"``"""
    ode: ODEOptions = field(default_factory=ODEOptions)
    """default transport settings; every transport call can override them by keyword"""

    def __post_init__(self) -> None:
        if isinstance(self.ode, Mapping):
            self.ode = ODEOptions(**self.ode)
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; valid: {sorted(DECODERS)}")
        if self.temporal_input not in TEMPORAL_INPUTS:
            raise ValueError(f"unknown temporal_input {self.temporal_input!r}; valid: {list(TEMPORAL_INPUTS)}")
        if self.velocity_prior not in VELOCITY_PRIORS:
            raise ValueError(f"unknown velocity_prior {self.velocity_prior!r}; valid: {list(VELOCITY_PRIORS)}")
        for name in (
            "dim",
            "seq_len",
            "encoder_hidden",
            "encoder_blocks",
            "latent_hidden",
            "latent_blocks",
            "decoder_hidden",
            "decoder_blocks",
            "vf_hidden",
            "vf_blocks",
            "prior_neighbors",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"OFlowConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("c_dim", "z_dim"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"OFlowConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.decoder == "cbatchnorm" and self.c_dim == 0:
            raise ValueError("decoder 'cbatchnorm' needs c_dim > 0; use decoder='simple' when c_dim == 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (``asdict``) for checkpoints; :meth:`from_dict` reverses it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OFlowConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown OFlowConfig keys {unknown}; valid: {sorted(names)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> OFlowConfig:
        """Copy with some fields changed (``ode`` may be a dict of ODEOptions fields to change)."""
        if isinstance(changes.get("ode"), Mapping):
            changes["ode"] = dataclasses.replace(self.ode, **changes["ode"])
        return dataclasses.replace(self, **changes)

    def quick(self) -> OFlowConfig:
        """Same structure with every width cut to at most 32 (CI, CPU laptops, QUICK notebooks)."""
        cut = {
            k: min(getattr(self, k), 32)
            for k in ("encoder_hidden", "latent_hidden", "decoder_hidden", "vf_hidden")
        }
        cut.update({k: min(getattr(self, k), 32) for k in ("c_dim", "z_dim") if getattr(self, k) > 0})
        return self.replace(**cut)


PRESETS: dict[str, OFlowConfig] = {
    # configs/pointcloud/oflow.yaml: 4D completion from 300 noisy trajectories, recon loss only
    "completion": OFlowConfig(
        c_dim=128, encoder_hidden=128, decoder="cbatchnorm", decoder_hidden=256, vf_hidden=128, vf_blocks=5
    ),
    # configs/pointcloud/oflow_w_correspond.yaml (the demo model): default sizes 512
    "completion_corr": OFlowConfig(
        c_dim=512, encoder_hidden=512, decoder="cbatchnorm", decoder_hidden=256, vf_hidden=512, vf_blocks=5
    ),
    # configs/generative/oflow.yaml: VAE, no deterministic encoders
    "generative": OFlowConfig(
        c_dim=0,
        z_dim=128,
        latent_hidden=128,
        latent_blocks=3,
        decoder="simple",
        decoder_hidden=128,
        vf_hidden=128,
        vf_blocks=3,
    ),
    # configs/representation_power/oflow.yaml: overfits one 50-frame sequence, no encoders, no codes
    "representation": OFlowConfig(
        seq_len=50, c_dim=0, z_dim=0, decoder="simple", decoder_hidden=128, vf_hidden=128, vf_blocks=5
    ),
    # CPU-friendly completion model (0.34M parameters) for notebooks and quick training
    "small": OFlowConfig(
        c_dim=64,
        encoder_hidden=64,
        decoder="cbatchnorm",
        decoder_hidden=64,
        decoder_blocks=3,
        vf_hidden=64,
        vf_blocks=3,
    ),
    # the staged CPU recipe's completion model (1.6M parameters): codes and decoder widened where the
    # t=0 shape is the cap, the velocity field one block deeper
    "medium": OFlowConfig(
        c_dim=128,
        encoder_hidden=128,
        decoder="cbatchnorm",
        decoder_hidden=128,
        decoder_blocks=5,
        vf_hidden=128,
        vf_blocks=4,
    ),
    # for unit tests (13k parameters)
    "tiny": OFlowConfig(
        c_dim=16,
        encoder_hidden=16,
        encoder_blocks=2,
        decoder="cbatchnorm",
        decoder_hidden=16,
        decoder_blocks=2,
        vf_hidden=16,
        vf_blocks=2,
    ),
}


def preset(name: str, **changes: Any) -> OFlowConfig:
    """A copy of the named preset, optionally with some fields changed.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown Occupancy Flow preset {name!r}; valid: {sorted(PRESETS)}")
    return PRESETS[name].replace(**changes)


def build_model(config: str | OFlowConfig | Mapping[str, Any], **changes: Any) -> OccupancyFlow:
    """An :class:`OccupancyFlow` from a preset name, a config, or a config dict."""
    if isinstance(config, str):
        config = preset(config)
    elif isinstance(config, Mapping):
        config = OFlowConfig.from_dict(config)
    if changes:
        config = config.replace(**changes)
    return OccupancyFlow(config)


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------


class Codes(NamedTuple):
    """Per-item codes. Empty tensors (B, 0) stand for absent parts."""

    c_s: Tensor
    """(B, c_dim) spatial code (decoder)"""
    c_t: Tensor
    """(B, c_dim) temporal code (velocity field)"""
    z: Tensor
    """(B, z_dim) VAE shape latent (decoder)"""
    z_t: Tensor
    """(B, z_dim) VAE motion latent (velocity field)"""
    trajectories: Tensor
    """(B, L*M*3) flattened input trajectories read by ``velocity_prior``; (B, 0) without it"""


class LatentDists(NamedTuple):
    """Posteriors of the VAE: q(z) and q(z_t), elementwise Normals of shape (B, z_dim)."""

    q_z: Normal
    q_z_t: Normal


class OccupancyFlow(nn.Module):
    """Occupancy Flow: t=0 occupancy decoder + velocity field, with optional encoders.

    Submodules (present when their sizes are > 0, named as in the original checkpoints):
    ``encoder`` (c_s from frame 0), ``encoder_temporal`` (c_t from trajectories), ``encoder_latent``
    and ``encoder_latent_temporal`` (VAE posteriors), ``decoder``, ``vector_field``.

    Field contract (used by training, generation, metrics and notebooks)::

        codes = model.encode(inputs)                      # inputs (B, L, N, 3)
        logits = model.occupancy(codes, xyz, t)           # xyz (B, N, 3), t (B,) or float -> (B, N)
        p1 = model.transport(codes, xyz, t_from, t_to)    # (B, N, 3)
        traj = model.transport_forward(codes, p0, times)  # (B, T, N, 3)
    """

    def __init__(self, config: OFlowConfig | None = None):
        super().__init__()
        cfg = OFlowConfig() if config is None else config
        self.config = cfg
        # registration order = the original checkpoints' state_dict order
        self.decoder = DECODERS[cfg.decoder](
            cfg.dim, cfg.z_dim, cfg.c_dim, cfg.decoder_hidden, cfg.decoder_blocks, legacy=cfg.decoder_legacy
        )
        self.encoder = (
            ResnetPointnet(cfg.c_dim, cfg.dim, cfg.encoder_hidden, cfg.encoder_blocks)
            if cfg.c_dim > 0
            else None
        )
        if cfg.z_dim > 0:
            self.encoder_latent = LatentPointnet(cfg.z_dim, cfg.dim, cfg.latent_hidden, cfg.latent_blocks)
            self.encoder_latent_temporal = TemporalLatentPointnet(
                cfg.z_dim, cfg.dim, cfg.seq_len, cfg.latent_hidden, cfg.latent_blocks, cfg.temporal_input
            )
        else:
            self.encoder_latent = self.encoder_latent_temporal = None
        self.vector_field = VelocityField(
            cfg.dim, cfg.dim, cfg.c_dim, cfg.z_dim, cfg.vf_hidden, cfg.vf_blocks
        )
        if cfg.velocity_prior != "none":  # the network learns a residual of the prior: start it at zero
            nn.init.zeros_(self.vector_field.fc_out.weight)
            nn.init.zeros_(self.vector_field.fc_out.bias)
        self.encoder_temporal = (
            TemporalResnetPointnet(cfg.c_dim, cfg.dim, cfg.seq_len, cfg.encoder_hidden, cfg.encoder_blocks,
                                   cfg.temporal_input)
            if cfg.c_dim > 0
            else None
        )

    # -- codes ---------------------------------------------------------------------------------------

    @property
    def needs_inputs(self) -> bool:
        """Whether :meth:`encode` reads an input sequence (False for the representation preset)."""
        return self.config.c_dim > 0 or self.config.z_dim > 0

    def encode_latent(self, inputs: Tensor) -> LatentDists:
        """VAE posteriors q(z) from frame 0 and q(z_t) from the trajectories.

        Args:
            inputs: (B, L, N, 3) corresponding input trajectories.
        Returns:
            LatentDists of Normals with (B, z_dim) parameters; empty (B, 0) when z_dim == 0.
        """
        inputs = self._check_inputs(inputs)
        if self.encoder_latent is None:
            empty = inputs.new_zeros(inputs.shape[0], 0)
            return LatentDists(Normal(empty, torch.ones_like(empty)), Normal(empty, torch.ones_like(empty)))
        mean_z, logstd_z = self.encoder_latent(inputs[:, 0])
        mean_zt, logstd_zt = self.encoder_latent_temporal(inputs)
        return LatentDists(Normal(mean_z, torch.exp(logstd_z)), Normal(mean_zt, torch.exp(logstd_zt)))

    def encode(
        self,
        inputs: Tensor | None,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> Codes:
        """Codes of a batch of input sequences.

        Args:
            inputs: (B, L, N, 3) input point trajectories (L = config.seq_len), frame-0 normalized.
                May be None for models without encoders (then give ``batch_size``).
            sample: VAE only: draw z, z_t from the posteriors (reparameterized) instead of using the means.
            generator: random source for ``sample``.
            batch_size: B when ``inputs`` is None.
        Returns:
            Codes with c_s, c_t (B, c_dim) and z, z_t (B, z_dim).
        """
        if inputs is None:
            if self.needs_inputs:
                raise ValueError("this model has encoders: encode() needs inputs (B, L, N, 3)")
            p = next(self.parameters())
            empty = p.new_zeros(1 if batch_size is None else batch_size, 0)
            return Codes(empty, empty, empty, empty, empty)
        return self.encode_with_posteriors(inputs, sample=sample, generator=generator)[0]

    def encode_with_posteriors(
        self,
        inputs: Tensor,
        *,
        sample: bool = True,
        generator: torch.Generator | None = None,
        eps: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Codes, LatentDists]:
        """Codes and the VAE posteriors from one pass of the encoders (training).

        Args:
            inputs: (B, L, N, 3) input trajectories.
            sample: draw z = mean + std * eps (reparameterized); False uses the means.
            generator: random source of eps.
            eps: fixed (eps_z, eps_z_t) noise, each (B, z_dim), instead of drawing it.
        Returns:
            (Codes, LatentDists); for z_dim == 0 the latents and posteriors are empty.
        """
        inputs = self._check_inputs(inputs)
        empty = inputs.new_zeros(inputs.shape[0], 0)
        if self.encoder is not None:
            c_s, c_t = self.encoder(inputs[:, 0]), self.encoder_temporal(inputs)
        else:
            c_s = c_t = empty
        q = self.encode_latent(inputs)
        traj = inputs.flatten(1) if self.config.velocity_prior != "none" else empty
        if self.encoder_latent is None or not sample:
            return Codes(c_s, c_t, q.q_z.loc, q.q_z_t.loc, traj), q
        if eps is None:
            eps = (_randn_like(q.q_z.loc, generator), _randn_like(q.q_z_t.loc, generator))
        for name, e, like in (("eps_z", eps[0], q.q_z.loc), ("eps_z_t", eps[1], q.q_z_t.loc)):
            if tuple(e.shape) != tuple(like.shape):
                raise ValueError(f"{name} must have shape {tuple(like.shape)}; got {tuple(e.shape)}")
        z = q.q_z.loc + q.q_z.scale * eps[0].to(q.q_z.loc)
        z_t = q.q_z_t.loc + q.q_z_t.scale * eps[1].to(q.q_z_t.loc)
        return Codes(c_s, c_t, z, z_t, traj), q

    def sample_codes(
        self, batch_size: int, *, generator: torch.Generator | None = None, inputs: Tensor | None = None
    ) -> Codes:
        """Codes with z, z_t drawn from the prior N(0, I) (generation).

        Args:
            batch_size: B.
            generator: random source.
            inputs: (B, L, N, 3), needed only by models with point-cloud encoders (for c_s, c_t).
        """
        p = next(self.parameters())
        if self.config.c_dim > 0:
            if inputs is None or inputs.shape[0] != batch_size:
                raise ValueError(
                    f"this model has point-cloud encoders: sample_codes() needs inputs "
                    f"({batch_size}, L, N, 3) for c_s and c_t"
                )
            codes = self.encode(inputs)
        else:
            codes = Codes(*(p.new_zeros(batch_size, 0),) * 5)
        shape = (batch_size, self.config.z_dim)
        z = torch.randn(shape, generator=generator, device=p.device, dtype=p.dtype)
        z_t = torch.randn(shape, generator=generator, device=p.device, dtype=p.dtype)
        return codes._replace(z=z, z_t=z_t)

    # -- field queries -------------------------------------------------------------------------------

    def decode(self, codes: Codes, p0: Tensor) -> Tensor:
        """Occupancy logits at t=0. ``p0 (B, N, 3)`` -> ``(B, N)``."""
        p0 = self._check_points(p0, codes, "p0")
        return self.decoder(p0, codes.z, codes.c_s)

    def velocity(self, codes: Codes, p: Tensor, t: Tensor | float) -> Tensor:
        """Velocity v(p, t_b) for item b. ``p (B, N, 3)``, ``t (B,)`` or float -> ``(B, N, 3)``."""
        p = self._check_points(p, codes, "p")
        return self._field(p, _batch_times(t, p, "t"), self.flow_cond(codes))

    def transport(
        self,
        codes: Codes,
        xyz: Tensor,
        t_from: Tensor | float,
        t_to: Tensor | float,
        *,
        stats: _ode.SolveStats | None = None,
        **ode_options: Any,
    ) -> Tensor:
        """Carry points along the flow from time ``t_from[b]`` to ``t_to[b]`` (per item, either direction).

        Args:
            codes: from :meth:`encode`.
            xyz: (B, N, 3) points at their start times.
            t_from, t_to: (B,) or float.
            stats: optional :class:`toolkit.oflow.ode.SolveStats` that counts field evaluations.
            **ode_options: overrides of ``config.ode`` (method, rtol, atol, adjoint, step_size, num_steps,
                per_item); see :func:`toolkit.oflow.ode.transport`.
        Returns:
            (B, N, 3) points at ``t_to``.
        """
        xyz = self._check_points(xyz, codes, "xyz")
        return _ode.transport(
            self._field,
            xyz,
            _batch_times(t_from, xyz, "t_from"),
            _batch_times(t_to, xyz, "t_to"),
            cond=self.flow_cond(codes),
            params=tuple(self.vector_field.parameters()),
            options=self.config.ode,
            stats=stats,
            **ode_options,
        )

    def transport_to_t0(
        self,
        codes: Codes,
        p: Tensor,
        t: Tensor | float,
        *,
        stats: _ode.SolveStats | None = None,
        **ode_options: Any,
    ) -> Tensor:
        """Transport item b's points back from its time ``t[b]`` to 0: ``p (B, N, 3)`` -> ``(B, N, 3)``."""
        return self.transport(codes, p, t, 0.0, stats=stats, **ode_options)

    def transport_forward(
        self,
        codes: Codes,
        p0: Tensor,
        times: Tensor,
        *,
        stats: _ode.SolveStats | None = None,
        **ode_options: Any,
    ) -> Tensor:
        """Forward transport of t=0 points to every time in ``times`` (shared by the batch).

        Args:
            p0: (B, N, 3) points at t=0 (e.g. mesh vertices).
            times: (T,) output times, any order, may repeat or include 0.
        Returns:
            (B, T, N, 3) positions; entries at t=0 equal ``p0``.
        """
        p0 = self._check_points(p0, codes, "p0")
        return _ode.transport_forward(
            self._field,
            p0,
            times,
            cond=self.flow_cond(codes),
            params=tuple(self.vector_field.parameters()),
            options=self.config.ode,
            stats=stats,
            **ode_options,
        )

    def occupancy(
        self,
        codes: Codes,
        xyz: Tensor,
        t: Tensor | float = 0.0,
        *,
        stats: _ode.SolveStats | None = None,
        **ode_options: Any,
    ) -> Tensor:
        """Occupancy logits of points at time t: transport back to t=0, then decode.

        Args:
            xyz: (B, N, 3) query points at time ``t``.
            t: (B,) per-item time or a float; at t == 0 no ODE is solved.
        Returns:
            (B, N) logits.
        """
        xyz = self._check_points(xyz, codes, "xyz")
        tb = _batch_times(t, xyz, "t")
        if bool((tb == 0).all()):
            return self.decode(codes, xyz)
        return self.decode(codes, self.transport_to_t0(codes, xyz, tb, stats=stats, **ode_options))

    def forward(self, codes: Codes, xyz: Tensor, t: Tensor | float = 0.0, **ode_options: Any) -> Tensor:
        """Same as :meth:`occupancy`."""
        return self.occupancy(codes, xyz, t, **ode_options)

    def flow_cond(self, codes: Codes) -> tuple[Tensor, Tensor, Tensor]:
        """The per-item condition tensors of the flow's ODE: ``(c_t, z_t, trajectories)``."""
        return codes.c_t, codes.z_t, codes.trajectories

    def velocity_function(self, network: Any = None) -> Any:
        """``velocity(p, t, cond)`` of the flow for :mod:`toolkit.oflow.ode` (cond from :meth:`flow_cond`).

        Args:
            network: a stand-in for ``vector_field`` with its call signature (e.g.
                :class:`toolkit.oflow.ode.FusedVelocity`); None uses ``vector_field``.
        """
        return self._field if network is None else functools.partial(self._field, network=network)

    # -- private -------------------------------------------------------------------------------------

    def _field(self, p: Tensor, t: Tensor, cond: tuple[Tensor, ...], network: Any = None) -> Tensor:
        own = self.vector_field(p, t, *cond[:2]) if network is None else network(p, t, cond[:2])
        if self.config.velocity_prior == "none":
            return own
        flat = cond[2]
        if flat.shape[1] == 0:
            raise ValueError("velocity_prior='input_trajectories' needs codes from encode(inputs) "
                             "(these codes carry no input trajectories)")
        traj = flat.reshape(p.shape[0], self.config.seq_len, -1, self.config.dim)
        return own + trajectory_velocity(traj, p, t, self.config.prior_neighbors)

    def _check_inputs(self, inputs: Tensor) -> Tensor:
        if not torch.is_tensor(inputs) or inputs.ndim != 4 or inputs.shape[-1] != self.config.dim:
            raise ValueError(
                f"inputs must have shape (B, L, N, {self.config.dim}); got "
                f"{tuple(inputs.shape) if torch.is_tensor(inputs) else type(inputs).__name__}"
            )
        temporal = self.encoder_temporal is not None or self.encoder_latent_temporal is not None
        if temporal and inputs.shape[1] != self.config.seq_len:
            raise ValueError(
                f"inputs have L={inputs.shape[1]} frames; the temporal encoders expect "
                f"seq_len={self.config.seq_len} (shape (B, {self.config.seq_len}, N, 3))"
            )
        return inputs

    def _check_points(self, p: Tensor, codes: Codes, name: str) -> Tensor:
        if not torch.is_tensor(p) or p.ndim != 3 or p.shape[-1] != self.config.dim:
            raise ValueError(
                f"{name} must have shape (B, N, {self.config.dim}); got "
                f"{tuple(p.shape) if torch.is_tensor(p) else type(p).__name__}"
            )
        if not isinstance(codes, Codes):
            raise TypeError(f"codes must be Codes (from encode()), got {type(codes).__name__}")
        if codes.c_t.shape[0] != p.shape[0]:
            raise ValueError(f"{name} has batch size {p.shape[0]} but the codes have {codes.c_t.shape[0]}")
        return p


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return (
        torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if generator is not None
        else torch.randn_like(x)
    )


def _batch_times(t: Tensor | float, p: Tensor, name: str) -> Tensor:
    """float, 0-d or (B,) -> (B,) tensor on p's device and dtype."""
    b = p.shape[0]
    t = torch.as_tensor(t, dtype=p.dtype, device=p.device)
    if t.ndim == 0:
        return t.expand(b)
    if t.shape != (b,):
        raise ValueError(f"{name} must be a float or have shape (B,) = ({b},); got {tuple(t.shape)}")
    return t


# ----------------------------------------------------------------------------------------------------
# Checkpoints: the original layout {'model': state_dict} and ours {'model': ..., 'config': asdict(...)}
# ----------------------------------------------------------------------------------------------------


def infer_config(
    state_dict: Mapping[str, Tensor],
    *,
    source: str | os.PathLike | None = None,
    ode: ODEOptions | None = None,
) -> OFlowConfig:
    """Read the sizes of a model from the shapes of its state dict (original or this toolkit's keys).

    Args:
        state_dict: parameter name -> tensor, with the original prefixes ``encoder.``,
            ``encoder_temporal.``, ``decoder.``, ``vector_field.``, ``encoder_latent.``,
            ``encoder_latent_temporal.``.
        source: file name for error messages.
        ode: ODE settings of the returned config (default: the original's dopri5 settings).
    Raises:
        DataError: required keys are absent, or the shapes contradict each other.
    """
    sd = state_dict

    def need(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise DataError(
                source,
                f"key {key!r} not found: not an Occupancy Flow state dict "
                f"(keys start with {sorted({k.split('.')[0] for k in sd})[:8]})",
            )
        return tuple(sd[key].shape)

    def count(pattern: str) -> int:
        rx = re.compile(pattern)
        return len({m.group(1) for k in sd if (m := rx.match(k))})

    dim = need("vector_field.fc_out.weight")[0]
    vf_hidden = need("vector_field.fc_p.weight")[0]
    vf_blocks = count(r"vector_field\.blocks\.(\d+)\.")
    cfg: dict[str, Any] = {"dim": dim, "vf_hidden": vf_hidden, "vf_blocks": vf_blocks}
    cfg["c_dim"] = need("vector_field.fc_c.0.weight")[1] if "vector_field.fc_c.0.weight" in sd else 0
    cfg["z_dim"] = need("vector_field.fc_z.0.weight")[1] if "vector_field.fc_z.0.weight" in sd else 0
    seq_dims = []
    if cfg["c_dim"] > 0:
        cfg["encoder_hidden"] = need("encoder.fc_pos.weight")[0] // 2
        cfg["encoder_blocks"] = count(r"encoder\.block_(\d+)\.")
        seq_dims.append(need("encoder_temporal.fc_pos.weight")[1])
    if cfg["z_dim"] > 0:
        cfg["latent_hidden"] = need("encoder_latent.fc_pos.weight")[0] // 2
        cfg["latent_blocks"] = count(r"encoder_latent\.blocks\.(\d+)\.")
        seq_dims.append(need("encoder_latent_temporal.fc_pos.weight")[1])
    if seq_dims:
        if len(set(seq_dims)) > 1 or seq_dims[0] % dim:
            raise DataError(
                source, f"temporal encoders read {seq_dims} features; expected one multiple of {dim}"
            )
        cfg["seq_len"] = seq_dims[0] // dim
    fc_p = need("decoder.fc_p.weight")
    cfg["decoder"] = "cbatchnorm" if len(fc_p) == 3 else "simple"
    cfg["decoder_hidden"] = fc_p[0]
    cfg["decoder_blocks"] = count(r"decoder\.block(\d+)\.")
    cfg["decoder_legacy"] = any(".fc_gamma." in k for k in sd if k.startswith("decoder."))
    if cfg["decoder"] == "simple" and cfg["c_dim"] == 0 and "decoder.fc_c.weight" in sd:
        raise DataError(
            source, "decoder has fc_c but the velocity field has no fc_c: c_dim cannot be inferred"
        )
    try:
        return OFlowConfig(**cfg, ode=ode if ode is not None else ODEOptions())
    except ValueError as exc:
        raise DataError(source, f"inferred an invalid configuration {cfg}: {exc}") from exc


def load_state_dict(
    model: OccupancyFlow, state_dict: Mapping[str, Tensor], *, source: str | os.PathLike | None = None
) -> OccupancyFlow:
    """Load a state dict (original key names) into ``model``, checking every key and shape first.

    Raises:
        DataError: missing or unexpected keys, or a shape mismatch; the message names the key and
            gives the expected and the found shape.
    """
    own = model.state_dict()
    problems = [
        f"key {k!r}: expected shape {tuple(v.shape)}, found {tuple(state_dict[k].shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if len(problems) > 3:
        problems = problems[:3] + [f"... {len(problems) - 3} more shape mismatches"]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if problems:
        raise DataError(
            source,
            "; ".join(problems) + f" (model built for {_describe(model.config)}; "
            "pass the matching config or preset)",
        )
    model.load_state_dict(dict(state_dict), strict=True)
    return model


def load_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    *,
    config: OFlowConfig | str | None = None,
    map_location: str | torch.device = "cpu",
) -> OccupancyFlow:
    """An :class:`OccupancyFlow` from a checkpoint file or an already loaded checkpoint dict.

    Accepts the original layout ``{'model': state_dict}`` (sizes inferred from shapes, or given by
    ``config``) and this toolkit's checkpoints, which embed ``asdict(OFlowConfig)`` as ``'config'``
    or, for :class:`toolkit.training.Trainer` checkpoints, as ``'meta': {'model_config': ...}``.

    Args:
        checkpoint: path (a file, or a run folder: its latest checkpoint) or dict.
        config: sizes to build (a config or preset name); overrides the embedded/inferred one.
        map_location: where tensors are loaded.
    Raises:
        DataError: missing or unreadable file (:func:`toolkit.training.load_checkpoint`), no 'model' entry,
            wrong keys or shapes.
    """
    source: str | None = None
    if isinstance(checkpoint, (str, os.PathLike)):
        source = str(checkpoint)
        checkpoint = read_checkpoint(source, map_location)
    sd = model_state(checkpoint, source)
    if isinstance(config, str):
        config = preset(config)
    meta = checkpoint.get("meta")
    for where, embedded in (
        ("'config'", checkpoint.get("config")),
        ("'meta.model_config'", meta.get("model_config") if isinstance(meta, Mapping) else None),
    ):
        if config is None and embedded is not None:
            try:
                config = OFlowConfig.from_dict(embedded)
            except (TypeError, ValueError) as exc:
                raise DataError(source, f"embedded {where} is invalid: {exc}") from exc
    if config is None:
        config = infer_config(sd, source=source)
    model = OccupancyFlow(config)
    load_state_dict(model, sd, source=source)
    return model.to(map_location).eval()


def _short(keys: list[str], n: int = 6) -> str:
    return str(keys[:n])[:-1] + (f", ... {len(keys) - n} more]" if len(keys) > n else "]")


def _describe(cfg: OFlowConfig) -> str:
    for name, p in PRESETS.items():
        if p.replace(ode=cfg.ode) == cfg:
            return f"preset {name!r}"
    return (
        f"c_dim={cfg.c_dim}, z_dim={cfg.z_dim}, decoder={cfg.decoder!r}, "
        f"encoder_hidden={cfg.encoder_hidden}, "
        f"vf_hidden={cfg.vf_hidden}"
    )
