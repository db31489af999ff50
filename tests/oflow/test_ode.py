"""ODE transport (toolkit.oflow.ode): closed-form flows, per-item times, inverse flows, gradients, options."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from toolkit.oflow import ode

DT = torch.float64
ADAPTIVE = [m for m, k in ode.METHODS.items() if k == "adaptive"]
FIXED = [m for m, k in ode.METHODS.items() if k == "fixed"]
# per method: rtol (adaptive) or step (fixed, time units), and the accepted max error on the rotating field
ADAPTIVE_RTOL = {
    "dopri5": (1e-7, 5e-5),
    "dopri8": (1e-7, 5e-5),
    "bosh3": (1e-6, 1e-4),
    "adaptive_heun": (1e-5, 1e-4),
    "fehlberg2": (1e-6, 5e-4),
}
FIXED_STEP = {
    "rk4": (1 / 64, 1e-6),
    "heun3": (1 / 64, 2e-5),
    "midpoint": (1 / 64, 1e-3),
    "heun2": (1 / 64, 1e-3),
    "euler": (1 / 512, 5e-3),
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _method_kwargs(method: str) -> dict:
    if ode.METHODS[method] == "adaptive":
        rtol = ADAPTIVE_RTOL[method][0]
        return {"rtol": rtol, "atol": rtol / 100}
    return {"step_size": FIXED_STEP[method][0]}


def _tolerance(method: str) -> float:
    return (ADAPTIVE_RTOL if ode.METHODS[method] == "adaptive" else FIXED_STEP)[method][1]


def constant_field(p, t, cond):
    """v = c_b for item b: transport is an exact translation by c_b (t_to - t_from)."""
    return cond[0].view(-1, 1, 3).expand_as(p)


def rotating_field(p, t, cond):
    """Rotation about z at angular speed w_b (1 + t): the angle is w_b [(t + t^2/2)] from t_from to t_to."""
    w = cond[0][:, 0] * (1 + t)
    v = torch.stack([-p[..., 1], p[..., 0], torch.zeros_like(p[..., 0])], dim=-1)
    return w.view(-1, 1, 1) * v


def rotation_exact(p, w, t_from, t_to):
    ang = w[:, 0] * ((t_to + t_to**2 / 2) - (t_from + t_from**2 / 2))
    c, s = ang.cos().view(-1, 1), ang.sin().view(-1, 1)
    return torch.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1], p[..., 2]], dim=-1)


class MLPField(nn.Module):
    """A small nonlinear, time- and code-dependent field for the inverse/gradient tests."""

    def __init__(self, c_dim: int = 2, hidden: int = 16, seed: int = 0, scale: float = 0.3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(3 + 1 + c_dim, hidden).to(DT)
        self.l2 = nn.Linear(hidden, 3).to(DT)
        with torch.no_grad():
            for prm in self.parameters():
                prm.copy_(torch.randn(prm.shape, generator=g, dtype=DT) * scale)

    def forward(self, p, t, cond):
        b, n, _ = p.shape
        x = torch.cat([p, t.view(b, 1, 1).expand(b, n, 1), cond[0].view(b, 1, -1).expand(b, n, -1)], dim=-1)
        return self.l2(torch.tanh(self.l1(x)))


def _setup(seed=0, b=3, n=5, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    p = (torch.rand(b, n, 3, generator=g, dtype=DT) - 0.5).to(device)
    t_from = torch.tensor([0.0, 0.8, 0.25], dtype=DT, device=device)[:b]
    t_to = torch.tensor([0.7, 0.1, 0.75], dtype=DT, device=device)[:b]
    return p, t_from, t_to


@pytest.mark.parametrize("per_item", list(ode.PER_ITEM))
@pytest.mark.parametrize("method", list(ode.METHODS))
def test_constant_field_is_exact_translation(method, per_item):
    p, tf, tt = _setup()
    c = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.0, -0.5], [0.0, 0.4, 0.2]], dtype=DT)
    out = ode.transport(
        constant_field,
        p,
        tf,
        tt,
        cond=(c,),
        method=method,
        per_item=per_item,
        adjoint=False,
        **_method_kwargs(method),
    )
    torch.testing.assert_close(out, p + c.view(-1, 1, 3) * (tt - tf).view(-1, 1, 1), atol=1e-9, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_item", list(ode.PER_ITEM))
@pytest.mark.parametrize("method", list(ode.METHODS))
def test_rotating_field_is_exact_rotation(method, per_item, device):
    p, tf, tt = _setup(device=device)
    w = torch.tensor([[2.0], [-1.5], [1.0]], dtype=DT, device=device)
    out = ode.transport(
        rotating_field,
        p,
        tf,
        tt,
        cond=(w,),
        method=method,
        per_item=per_item,
        adjoint=False,
        **_method_kwargs(method),
    )
    torch.testing.assert_close(out, rotation_exact(p, w, tf, tt), atol=_tolerance(method), rtol=0)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_transport_forward_matches_closed_form_and_keeps_start(method):
    p, _, _ = _setup()
    w = torch.tensor([[2.0], [-1.5], [1.0]], dtype=DT)
    times = torch.tensor([0.5, 0.0, 1.0, -0.25, 0.5, 0.125], dtype=DT)  # unsorted, repeated, one before start
    out = ode.transport_forward(
        rotating_field, p, times, cond=(w,), method=method, adjoint=False, **_method_kwargs(method)
    )
    assert out.shape == (3, 6, 5, 3)
    assert torch.equal(out[:, 1], p)  # the start time returns the input exactly
    for k, t in enumerate(times):
        exp = rotation_exact(p, w, torch.zeros(3, dtype=DT), t.expand(3))
        torch.testing.assert_close(out[:, k], exp, atol=_tolerance(method), rtol=0)


@pytest.mark.parametrize("per_item", list(ode.PER_ITEM))
@pytest.mark.parametrize(
    "opts",
    [{"method": "dopri5", "rtol": 1e-5, "atol": 1e-7}, {"method": "rk4", "step_size": 1 / 16}],
    ids=["dopri5", "rk4"],
)
def test_forward_then_backward_returns_start(opts, per_item):
    field = MLPField()
    p, tf, tt = _setup(seed=1)
    c = torch.randn(3, 2, generator=torch.Generator().manual_seed(3), dtype=DT)
    kw = dict(cond=(c,), per_item=per_item, adjoint=False, **opts)
    there = ode.transport(field, p, tf, tt, **kw)
    assert (there - p).abs().max() > 0.1  # the flow moves the points
    back = ode.transport(field, there, tt, tf, **kw)
    torch.testing.assert_close(back, p, atol=2e-4, rtol=0)


@pytest.mark.parametrize("per_item", list(ode.PER_ITEM))
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_per_item_times_equal_separate_solves(method, per_item):
    field = MLPField()
    p, tf, tt = _setup(seed=2)
    c = torch.randn(3, 2, generator=torch.Generator().manual_seed(4), dtype=DT)
    kw = {"rtol": 1e-8, "atol": 1e-10} if method == "dopri5" else {"step_size": 1 / 32}
    batched = ode.transport(
        field, p, tf, tt, cond=(c,), method=method, per_item=per_item, adjoint=False, **kw
    )
    alone = torch.cat(
        [
            ode.transport(
                field,
                p[i : i + 1],
                tf[i : i + 1],
                tt[i : i + 1],
                cond=(c[i : i + 1],),
                method=method,
                per_item="group",
                adjoint=False,
                **kw,
            )
            for i in range(3)
        ]
    )
    exact_grid = method == "rk4" and per_item in ("group", "original")  # same real-time grid per item
    torch.testing.assert_close(batched, alone, atol=1e-12 if exact_grid else 1e-6, rtol=0)


def test_rescale_evaluates_only_inside_each_items_time_range():
    seen: list[torch.Tensor] = []

    def recording(p, t, cond):
        seen.append(t.detach().clone())
        return rotating_field(p, t, cond)

    p, _, _ = _setup()
    w = torch.ones(3, 1, dtype=DT)
    t_item = torch.tensor([0.125, 0.5, 1.0], dtype=DT)
    for per_item in ("rescale", "original"):
        seen.clear()
        ode.transport(recording, p, t_item, 0.0, cond=(w,), per_item=per_item, adjoint=False)
        ts = torch.stack(seen)  # (evaluations, B)
        inside = bool(((ts >= -1e-12) & (ts <= t_item + 1e-12)).all())
        # the original layout integrates every item to the batch maximum: negative times for short items
        assert inside == (per_item == "rescale")


@pytest.mark.parametrize("per_item", list(ode.PER_ITEM))
def test_adjoint_gradients_match_direct(per_item):
    field = MLPField(seed=5)
    p, tf, tt = _setup(seed=6)
    g = torch.Generator().manual_seed(7)
    c = torch.randn(3, 2, generator=g, dtype=DT)
    weight = torch.randn(3, 5, 3, generator=g, dtype=DT)

    def grads(adjoint: bool):
        pp, cc = p.clone().requires_grad_(True), (c * 1.0).requires_grad_(True)
        code = cc * 2.0  # a non-leaf code, as produced by an encoder
        params = tuple(field.parameters())
        out = ode.transport(
            field,
            pp,
            tf,
            tt,
            cond=(code,),
            params=params,
            method="dopri5",
            rtol=1e-7,
            atol=1e-9,
            adjoint=adjoint,
            per_item=per_item,
        )
        gs = torch.autograd.grad((out * weight).sum(), (pp, cc) + params)
        return gs

    direct, adjoint = grads(False), grads(True)
    assert adjoint[1].abs().max() > 1e-3  # the codes get a gradient through the adjoint
    for a, d in zip(adjoint, direct):
        torch.testing.assert_close(a, d, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("per_item", list(ode.PER_ITEM))
def test_gradcheck_fixed_step(per_item):
    field = MLPField(seed=8, hidden=6)
    p, tf, tt = _setup(seed=9, n=2)
    c = torch.randn(3, 2, generator=torch.Generator().manual_seed(10), dtype=DT)

    def fn(points, code):
        return ode.transport(
            field, points, tf, tt, cond=(code,), method="rk4", num_steps=3, adjoint=False, per_item=per_item
        )

    assert torch.autograd.gradcheck(fn, (p.requires_grad_(True), c.requires_grad_(True)))


def test_fixed_step_counts_evaluations():
    p, tf, tt = _setup()
    w = torch.ones(3, 1, dtype=DT)
    stats = ode.SolveStats()
    ode.transport(rotating_field, p, tf, tt, cond=(w,), method="rk4", num_steps=5, adjoint=False, stats=stats)
    assert (stats.nfe, stats.solves) == (20, 1)  # 4 stages x 5 steps, one solve for all items
    stats = ode.SolveStats()
    # the largest span is 0.7: ceil(0.7 / 0.25) = 3 steps for every item
    ode.transport(
        rotating_field, p, tf, tt, cond=(w,), method="midpoint", step_size=0.25, adjoint=False, stats=stats
    )
    assert stats.nfe == 6
    stats = ode.SolveStats()
    ode.transport(
        rotating_field,
        p,
        tf,
        tt,
        cond=(w,),
        method="rk4",
        step_size=0.25,
        adjoint=False,
        stats=stats,
        per_item="group",
    )
    assert stats.solves == 3


def test_zero_span_is_identity():
    p, _, _ = _setup()
    out = ode.transport(constant_field, p, 0.3, 0.3, cond=(torch.ones(3, 3, dtype=DT),))
    assert torch.equal(out, p)


def test_options_and_errors():
    with pytest.raises(ValueError, match=r"unknown ODE method 'rk5'; valid: .*'dopri5'.*'rk4'"):
        ode.ODEOptions(method="rk5")
    with pytest.raises(ValueError, match="unknown per_item strategy 'batch'; valid"):
        ode.ODEOptions(per_item="batch")
    with pytest.raises(ValueError, match=r"needs exactly one of step_size \(e.g. 1/16\) or num_steps"):
        ode.ODEOptions(method="rk4")
    with pytest.raises(ValueError, match="apply to fixed-step methods only; 'dopri5' is adaptive"):
        ode.ODEOptions(step_size=0.1)
    with pytest.raises(ValueError, match="unknown ODE preset 'fast'; valid"):
        ode.ode_preset("fast")
    with pytest.raises(TypeError, match=r"unknown ODE option\(s\) \['stepsize'\]"):
        ode.resolve_options(stepsize=0.1)
    rk4 = ode.ode_preset("rk4")
    assert ode.resolve_options(rk4, method="dopri5").step_size is None  # switching to adaptive drops the step
    assert ode.resolve_options(rk4, num_steps=8) == ode.ODEOptions("rk4", adjoint=False, num_steps=8)
    p, tf, tt = _setup()
    with pytest.raises(ValueError, match=r"t_to must be a float or have shape \(B,\) = \(3,\); got \(2,\)"):
        ode.transport(constant_field, p, tf, tt[:2], cond=(torch.ones(3, 3, dtype=DT),))
    with pytest.raises(ValueError, match="t_from must be finite"):
        ode.transport(constant_field, p, tf * math.inf, tt, cond=(torch.ones(3, 3, dtype=DT),))
    with pytest.raises(ValueError, match=r"cond\[0\] must have shape \(B, K\) with B=3"):
        ode.transport(constant_field, p, tf, tt, cond=(torch.ones(2, 3, dtype=DT),))
    with pytest.raises(ValueError, match=r"points must be a float tensor \(B, N, D\)"):
        ode.transport(constant_field, p[0], tf, tt)
    with pytest.raises(ValueError, match="times must be a non-empty 1-D tensor"):
        ode.transport_forward(constant_field, p, torch.zeros(2, 2, dtype=DT))
