"""Fixtures of the Occupancy Flow tests: ``analytic``, a model with analytic parts for exact answers.

A real :class:`toolkit.oflow.model.OccupancyFlow` (generative layout, z_dim = 3) whose decoder and
velocity field are replaced:

- decoder: logits ``SHARPNESS * (r - |p - c|)`` with r = z[0] and c = (z[1], z[2], 0): a sphere;
- velocity field: ``v(p, t) = z_t`` (constant per item), so transport is an exact translation by z_t * t.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from toolkit.geometry.meshing import extract_mesh
from toolkit.oflow.model import Codes, build_model

SHARPNESS = 10.0


class SphereDecoder(nn.Module):
    def forward(self, p, z, c):
        centre = torch.cat([z[:, 1:3], torch.zeros_like(z[:, :1])], dim=1)[:, None]
        return SHARPNESS * (z[:, :1] - (p - centre).norm(dim=-1))


class ConstantVelocity(nn.Module):
    def forward(self, p, t, c, z):
        return z[:, None, :].expand_as(p)


def analytic_model():
    model = build_model("generative", z_dim=3, latent_hidden=8, latent_blocks=1, decoder_hidden=8,
                        decoder_blocks=1, vf_hidden=8, vf_blocks=1)
    model.decoder, model.vector_field = SphereDecoder(), ConstantVelocity()
    return model


def codes(z, z_t):
    """Codes of B items from (B, 3) shape latents (r, cx, cy) and (B, 3) velocities."""
    z, z_t = torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(z_t, dtype=torch.float32)
    empty = z.new_zeros(z.shape[0], 0)
    return Codes(empty, empty, z, z_t, empty)


def sphere_logits(z, offset=(0.0, 0.0, 0.0)):
    """The decoder's field for one latent (r, cx, cy), translated by ``offset``."""
    r, cx, cy = (float(v) for v in z)
    c = torch.tensor([cx, cy, 0.0]) + torch.tensor(offset, dtype=torch.float32)
    return lambda p: SHARPNESS * (r - (p - c).norm(dim=-1))


def expected_t0_mesh(z, *, threshold=0.3, resolution0=16, upsampling_steps=2, offset=(0.0, 0.0, 0.0)):
    """meshing.extract_mesh of the analytic sphere at the same settings as generation uses."""
    return extract_mesh(sphere_logits(z, offset), threshold=math.log(threshold / (1 - threshold)), bounds=0.55,
                        resolution0=resolution0, upsampling_steps=upsampling_steps)


@pytest.fixture
def analytic():
    """The analytic model's helpers: analytic_model(), codes(z, z_t), sphere_logits(z), expected_t0_mesh(z)."""
    return SimpleNamespace(analytic_model=analytic_model, codes=codes, sphere_logits=sphere_logits,
                           expected_t0_mesh=expected_t0_mesh, SHARPNESS=SHARPNESS)
