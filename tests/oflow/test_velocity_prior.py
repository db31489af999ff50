"""The velocity prior read from the input trajectories (``OFlowConfig.velocity_prior``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.oflow import generate as G
from toolkit.oflow.model import Codes, build_model, preset, trajectory_velocity

EULER_PER_FRAME = {"method": "euler", "step_size": 1 / 16, "adjoint": False}  # one step per frame interval


def _prior_model(**changes):
    torch.manual_seed(0)
    return build_model(preset("tiny", velocity_prior="input_trajectories", **changes)).eval()


def _wavy_inputs(b: int = 2, n: int = 40, seed: int = 0) -> torch.Tensor:
    """(B, 17, N, 3) trajectories whose points move differently: each its own path, bending every frame."""
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(b, 1, n, 3, generator=g) - 0.5
    phase = torch.rand(b, 1, n, 1, generator=g) * 6.28
    t = torch.linspace(0, 1, 17).view(1, 17, 1, 1)
    wave = torch.cat([torch.sin(6 * t + phase), torch.cos(4 * t + phase), t * phase / 6.28], dim=3)
    return start + 0.05 * wave


def test_a_translation_gives_its_velocity_everywhere():
    v = torch.tensor([0.3, -0.1, 0.2])
    x = (torch.rand(1, 1, 30, 3) - 0.5) + torch.linspace(0, 1, 17).view(1, 17, 1, 1) * v
    p = torch.rand(1, 50, 3) - 0.5
    for t in (0.0, 0.37, 1.0):
        out = trajectory_velocity(x, p, torch.tensor([t]))
        torch.testing.assert_close(out, v.expand(1, 50, 3), atol=1e-5, rtol=0)


def test_a_query_on_an_input_point_takes_that_points_velocity_between_frames():
    x = _wavy_inputs()
    t = torch.tensor([0.4, 0.9])  # between frames: 6.4 and 14.4
    s = t * 16
    lo = s.floor().long()
    rows = torch.arange(2)
    here = x[rows, lo] + (s - lo).view(2, 1, 1) * (x[rows, lo + 1] - x[rows, lo])
    torch.testing.assert_close(trajectory_velocity(x, here, t), 16 * (x[rows, lo + 1] - x[rows, lo]),
                               atol=1e-5, rtol=1e-5)


def test_the_blend_is_chunked_identically():
    import toolkit.oflow.model as M

    x, p, t = _wavy_inputs(), torch.rand(2, 333, 3) - 0.5, torch.tensor([0.2, 0.7])
    whole = trajectory_velocity(x, p, t, neighbors=3)
    old = M._PRIOR_CHUNK
    try:
        M._PRIOR_CHUNK = 2 * 40 * 7  # 7 query points per block
        assert torch.equal(trajectory_velocity(x, p, t, neighbors=3), whole)
    finally:
        M._PRIOR_CHUNK = old


def test_the_gradient_is_finite_on_an_input_point():
    x = _wavy_inputs()
    p = x[:, 0].clone().requires_grad_(True)  # exactly on the inputs at t = 0
    trajectory_velocity(x, p, torch.zeros(2)).square().sum().backward()
    assert torch.isfinite(p.grad).all()


def test_an_untrained_prior_model_carries_input_points_along_their_trajectories():
    model = _prior_model()
    x = _wavy_inputs()
    codes = model.encode(x)
    assert codes.trajectories.shape == (2, 17 * 40 * 3)
    assert not model.vector_field.fc_out.weight.any()  # the network is a residual that starts at zero
    times = torch.linspace(0, 1, 17)
    with torch.no_grad():
        traj = model.transport_forward(codes, x[:, 0], times, **EULER_PER_FRAME)
    torch.testing.assert_close(traj, x, atol=1e-5, rtol=0)
    # without the prior the same untrained model does not move the points along them
    plain = build_model(preset("tiny")).eval()
    with torch.no_grad():
        still = plain.transport_forward(plain.encode(x), x[:, 0], times, **EULER_PER_FRAME)
    assert (still - x).norm(dim=-1).mean() > 0.02


def test_network_and_prior_add_and_the_fused_path_agrees():
    model = _prior_model()
    with torch.no_grad():
        model.vector_field.fc_out.weight.normal_(0, 0.1)
    x = _wavy_inputs()
    codes = model.encode(x)
    p, t = torch.rand(2, 25, 3) - 0.5, torch.tensor([0.3, 0.8])
    with torch.no_grad():
        net = model.vector_field(p, t, codes.c_t, codes.z_t)
        torch.testing.assert_close(model.velocity(codes, p, t), net + trajectory_velocity(x, p, t))
        verts = [np.random.default_rng(0).uniform(-0.4, 0.4, (30, 3)).astype(np.float32)] * 2
        fused = G.propagate_vertices(model, codes, verts, [0.0, 0.5, 1.0], ode="rk4", fused=True)
        plain = G.propagate_vertices(model, codes, verts, [0.0, 0.5, 1.0], ode="rk4", fused=False)
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_codes_without_trajectories_and_bad_settings_are_named():
    model = _prior_model()
    empty = torch.zeros(1, 0)
    codes = Codes(empty, torch.zeros(1, model.config.c_dim), empty, empty, empty)
    with pytest.raises(ValueError, match="velocity_prior='input_trajectories' needs codes from encode"):
        model.velocity(codes, torch.zeros(1, 4, 3), 0.5)
    with pytest.raises(ValueError, match=r"unknown velocity_prior 'knn'; valid: \['none', 'input_trajectories'\]"):
        preset("tiny", velocity_prior="knn")
    with pytest.raises(ValueError, match="prior_neighbors must be >= 1"):
        preset("tiny", prior_neighbors=0)
