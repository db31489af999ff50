"""Inference fast path of the velocity field (toolkit.oflow.ode.FusedVelocity) against the module it fuses.

The fused evaluation must give the module's velocities to float rounding for every code layout (c_t only,
z_t only, both, none), per-item times, and reused buffers; a constant field must transport exactly; and
generation with ``fused=True`` must give the same meshes and trajectories as the plain path.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from toolkit.oflow import generate as G
from toolkit.oflow.model import build_model
from toolkit.oflow.ode import FusedVelocity, SolveStats, transport_forward

LAYOUTS = {
    "c_t only": ("tiny", {}),
    "c_t and z_t": ("tiny", {"z_dim": 4, "latent_hidden": 8, "latent_blocks": 1}),
    "z_t only": ("generative", {"z_dim": 5, "latent_hidden": 8, "latent_blocks": 1, "decoder_hidden": 8,
                                "vf_hidden": 12, "vf_blocks": 3}),
    "no codes": ("representation", {"decoder_hidden": 8, "vf_hidden": 12, "vf_blocks": 2}),
}


def _field(name: str, kw: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(name, **kw).eval()
    for block in model.vector_field.blocks:  # fc_1 starts at zero: make every layer count
        nn.init.normal_(block.fc_1.weight, std=0.3)
    return model


def _cond(model, b: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, model.config.c_dim, generator=g), torch.randn(b, model.config.z_dim, generator=g))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_fused_equals_the_module_with_per_item_times_and_codes(layout):
    model = _field(*LAYOUTS[layout])
    vf, fused = model.vector_field, FusedVelocity(model.vector_field)
    p = torch.rand(3, 40, 3, generator=torch.Generator().manual_seed(2)) - 0.5
    t = torch.tensor([0.0, 0.3, 1.0])
    cond = _cond(model, 3)
    with torch.no_grad():
        expected = vf(p, t, *cond)
        got = fused(p, t, cond)
    assert expected.abs().max() > 0.1  # a non-trivial field
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_buffers_are_reused_and_results_stay_fresh():
    model = _field(*LAYOUTS["c_t and z_t"])
    vf, fused = model.vector_field, FusedVelocity(model.vector_field)
    cond = _cond(model, 2)
    p1, p2, p3 = (torch.rand(2, n, 3, generator=torch.Generator().manual_seed(n)) for n in (30, 30, 50))
    t = torch.tensor([0.25, 0.75])
    with torch.no_grad():
        out1 = fused(p1, t, cond)
        kept = out1.clone()
        ptrs = [b.data_ptr() for b in fused._buffers]
        out2 = fused(p2, t, cond)
        assert [b.data_ptr() for b in fused._buffers] == ptrs  # same shape: no new activations
        torch.testing.assert_close(out1, kept, rtol=0, atol=0)  # an earlier result is not overwritten
        out3 = fused(p3, t, cond)  # new shape: new buffers
        torch.testing.assert_close(out2, vf(p2, t, *cond), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out3, vf(p3, t, *cond), rtol=1e-5, atol=1e-6)


def test_under_autograd_the_module_runs_and_gradients_flow():
    model = _field(*LAYOUTS["c_t only"])
    fused = FusedVelocity(model.vector_field)
    p = torch.rand(2, 10, 3, requires_grad=True)
    t = torch.tensor([0.1, 0.9])
    cond = _cond(model, 2)
    out = fused(p, t, cond)
    assert torch.equal(out, model.vector_field(p, t, *cond))
    out.square().sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert model.vector_field.fc_p.weight.grad is not None


def test_a_constant_field_transports_by_exact_translation():
    model = _field(*LAYOUTS["c_t only"])
    velocity = torch.tensor([0.2, -0.1, 0.05])
    with torch.no_grad():
        model.vector_field.fc_out.weight.zero_()
        model.vector_field.fc_out.bias.copy_(velocity)
    p0 = torch.rand(1, 25, 3) - 0.5
    times = torch.tensor([0.0, 0.25, 0.5, 1.0])
    stats = SolveStats()
    with torch.no_grad():
        traj = transport_forward(FusedVelocity(model.vector_field), p0, times, cond=_cond(model, 1), stats=stats,
                                 method="dopri5", adjoint=False)
    expected = p0[:, None] + times[None, :, None, None] * velocity
    torch.testing.assert_close(traj, expected, rtol=0, atol=5e-6)  # float32 rounding of the RK sums
    assert stats.nfe > 0


def test_other_fields_are_refused_with_the_reason():
    class ConstantVelocity(nn.Module):
        def forward(self, p, t, c, z):
            return torch.zeros_like(p)

    with pytest.raises(TypeError, match="VelocityField-like.*no ModuleList of residual blocks"):
        FusedVelocity(ConstantVelocity())
    model = _field(*LAYOUTS["c_t only"])
    model.vector_field.blocks[1].shortcut = nn.Linear(16, 16, bias=False)
    with pytest.raises(TypeError, match=r"blocks\[1\] has a shortcut"):
        FusedVelocity(model.vector_field)


@pytest.mark.parametrize("ode", ["rk4", "original"])
def test_generation_with_the_fused_field_equals_the_plain_path(ode):
    model = _field(*LAYOUTS["c_t only"])
    inputs = (torch.rand(2, 17, 64, 3, generator=torch.Generator().manual_seed(3)) - 0.5) * 0.8
    kw = {"ode": ode, "resolution0": 8, "upsampling_steps": 1, "times": [0.0, 0.25, 0.5, 1.0]}
    plain = G.reconstruct(model, inputs, fused=False, **kw)
    fused = G.reconstruct(model, inputs, fused=True, **kw)
    for a, b in zip(plain, fused):
        assert a.vertices.shape[1] > 0
        np.testing.assert_array_equal(a.faces, b.faces)
        assert a.stats["nfe"] == b.stats["nfe"]
        moved = np.abs(a.vertices[-1] - a.vertices[0]).max()
        assert moved > 1e-3  # the field really transports the vertices
        np.testing.assert_allclose(b.vertices, a.vertices, rtol=0, atol=1e-5)
