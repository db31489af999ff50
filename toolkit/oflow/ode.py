"""Transport of points through a time-dependent velocity field with torchdiffeq (OFlow, oflow.md §1).

A trajectory solves ``dp/dt = v(p, t | cond)``. :func:`transport` carries item b's points from
``t_from[b]`` to ``t_to[b]`` (either direction); :func:`transport_forward` carries all items from one
start time to a set of shared output times (mesh propagation, the correspondence loss).

The velocity callable is ``velocity(p (B, N, D), t (B,), cond) -> (B, N, D)``: each item is evaluated
at its own time, and ``cond`` is a tuple of per-item condition tensors ``(B, K_i)`` (the codes c_t, z_t and,
with a velocity prior, the flattened input trajectories: ``OccupancyFlow.flow_cond``).
The codes travel as closure state; with ``adjoint=True`` they are handed to ``odeint_adjoint`` as
``adjoint_params`` (beside the field's own ``params``), so gradients reach the encoders.

Solver settings (:class:`ODEOptions`, each also a keyword of every call):

- ``method``: a key of :data:`METHODS`. Adaptive methods (the original: ``dopri5``, ``rtol=1e-3``,
  ``atol=1e-5``) take ``rtol``/``atol``; fixed-step methods (``rk4``, ``midpoint``, ``euler``, ...) take
  ``step_size`` (in time units) or ``num_steps`` (steps over the longest span). torchdiffeq's ``rk4``
  is Kutta's 3/8 rule, as in the original fork. Fixed grids include every output time, so outputs
  never come from interpolation.
- ``adjoint``: backpropagate with the adjoint method (memory O(1) in the steps, a second solve) or,
  if False, directly through the solver's operations (faster for a few fixed steps).
- ``per_item``: how items with different times share one solve (a key of :data:`PER_ITEM`):

  - ``"rescale"`` (default): every item integrates s in [0, 1] with
    ``dp/ds = (t_to[b] - t_from[b]) * v(p, t_from[b] + (t_to[b] - t_from[b]) * s)``, i.e. its own time
    span mapped to the unit interval. One batched solve; no item integrates past its own end time
    (adaptive solves end their last step exactly at s = 1 via torchdiffeq's ``step_t``; only the
    initial-step probe of a very slow field may look beyond it). With a fixed step,
    ``ceil(max span / step_size)`` steps are used, so every item's real step is at most ``step_size``.
    The step size of an adaptive solve is still shared by the batch (set by the hardest item).
  - ``"group"``: one solve per distinct (t_from, t_to) pair, in real time. Reproduces per-item fixed
    grids exactly (the original's rk4 results for every item); costs one solve per distinct pair.
  - ``"original"``: the original layout, kept for checkpoint parity. The state is one tensor
    ``[points (B, N*D) | cond]`` (the codes are constant state, diluting the error norm), all items
    integrate ``s`` from 0 to the largest span with ``dp/ds = sign_b * v(p, t_from[b] + sign_b * s)``,
    and item b is read out at ``s = |t_to[b] - t_from[b]|``. Items with shorter spans keep integrating,
    which evaluates v outside their time range (negative times for backward transport); those
    outputs are discarded but share the step size.

All three agree within solver tolerance; forward and backward transport are inverse to solver
tolerance only (the flow is a diffeomorphism; meshes and occupancies agree to that tolerance).

Fast path: :class:`FusedVelocity` evaluates a ``toolkit.oflow.model.VelocityField`` at inference with
the per-item terms (codes, time, biases) folded into the matrix products and its activations written
into reused buffers, so a solve allocates almost nothing per evaluation. Results equal the module's to
float rounding; measured about 1.4x faster propagation (``small`` and paper-size fields, dopri5, one CPU
thread; ``benchmarks/README.md``). Under autograd it runs the module itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

__all__ = [
    "METHODS",
    "ODE_PRESETS",
    "PER_ITEM",
    "FusedVelocity",
    "ODEOptions",
    "SolveStats",
    "Velocity",
    "ode_preset",
    "resolve_options",
    "transport",
    "transport_forward",
]

Velocity = Callable[[Tensor, Tensor, tuple[Tensor, ...]], Tensor]
"""``velocity(p (B, N, D), t (B,), cond) -> (B, N, D)``"""

METHODS: dict[str, str] = {
    "dopri5": "adaptive",
    "dopri8": "adaptive",
    "bosh3": "adaptive",
    "adaptive_heun": "adaptive",
    "fehlberg2": "adaptive",
    "rk4": "fixed",
    "midpoint": "fixed",
    "euler": "fixed",
    "heun2": "fixed",
    "heun3": "fixed",
}
"""torchdiffeq method name -> 'adaptive' or 'fixed'."""

PER_ITEM: dict[str, str] = {
    "rescale": "one solve, each item's span mapped onto s in [0, 1]",
    "group": "one real-time solve per distinct (t_from, t_to) pair",
    "original": "the original's layout: codes in the state, all items to the largest span",
}


@dataclass(frozen=True)
class ODEOptions:
    """Transport settings. The defaults are the original's: adaptive dopri5 with the adjoint method."""

    method: str = "dopri5"
    """a key of METHODS"""
    rtol: float = 1e-3
    """relative tolerance (adaptive methods)"""
    atol: float = 1e-5
    """absolute tolerance (adaptive methods)"""
    adjoint: bool = True
    """backpropagate with the adjoint method (True) or through the solver (False)"""
    step_size: float | None = None
    """fixed-step methods: step in time units (exclusive with num_steps)"""
    num_steps: int | None = None
    """fixed-step methods: steps over the longest span of a solve (exclusive with step_size)"""
    per_item: str = "rescale"
    """how items with different times share a solve: a key of PER_ITEM"""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown ODE method {self.method!r}; valid: {sorted(METHODS)}")
        if self.per_item not in PER_ITEM:
            raise ValueError(f"unknown per_item strategy {self.per_item!r}; valid: {sorted(PER_ITEM)}")
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"rtol and atol must be > 0; got rtol={self.rtol}, atol={self.atol}")
        if METHODS[self.method] == "fixed":
            if (self.step_size is None) == (self.num_steps is None):
                raise ValueError(
                    f"fixed-step method {self.method!r} needs exactly one of step_size (e.g. 1/16) "
                    f"or num_steps; got step_size={self.step_size}, num_steps={self.num_steps}"
                )
            if self.step_size is not None and not self.step_size > 0:
                raise ValueError(f"step_size must be > 0; got {self.step_size}")
            if self.num_steps is not None and int(self.num_steps) < 1:
                raise ValueError(f"num_steps must be >= 1; got {self.num_steps}")
        elif self.step_size is not None or self.num_steps is not None:
            raise ValueError(
                f"step_size/num_steps apply to fixed-step methods only; {self.method!r} is adaptive "
                f"(fixed-step: {sorted(k for k, v in METHODS.items() if v == 'fixed')})"
            )


ODE_PRESETS: dict[str, ODEOptions] = {
    "original": ODEOptions(),
    "rk4": ODEOptions(method="rk4", step_size=1 / 16, adjoint=False),
    "midpoint": ODEOptions(method="midpoint", step_size=1 / 16, adjoint=False),
    "euler": ODEOptions(method="euler", step_size=1 / 32, adjoint=False),
}
"""Named settings: the original adaptive adjoint solve, and fixed-step direct-backprop solves."""


def ode_preset(name: str) -> ODEOptions:
    """The named :data:`ODE_PRESETS` entry; unknown names list the valid ones."""
    if name not in ODE_PRESETS:
        raise ValueError(f"unknown ODE preset {name!r}; valid: {sorted(ODE_PRESETS)}")
    return ODE_PRESETS[name]


@dataclass
class SolveStats:
    """Counters filled by a transport call (adjoint backward evaluations are counted too)."""

    nfe: int = 0
    """velocity-field evaluations (each over the whole batch of a solve)"""
    solves: int = 0
    """odeint calls"""


def resolve_options(base: ODEOptions | None = None, **overrides: Any) -> ODEOptions:
    """``base`` with keyword overrides applied.

    Switching ``method`` to an adaptive one without mentioning step_size/num_steps drops them; giving
    one of step_size/num_steps drops the other. Unknown keywords raise TypeError naming the valid ones.
    """
    base = ODEOptions() if base is None else base
    names = {f.name for f in dataclasses.fields(ODEOptions)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown ODE option(s) {unknown}; valid: {sorted(names)}")
    if not overrides:
        return base
    changes = dict(overrides)
    steps_given = "step_size" in changes or "num_steps" in changes
    if METHODS.get(changes.get("method", base.method)) == "adaptive" and not steps_given:
        changes.update(step_size=None, num_steps=None)
    if changes.get("step_size") is not None and "num_steps" not in changes:
        changes["num_steps"] = None
    if changes.get("num_steps") is not None and "step_size" not in changes:
        changes["step_size"] = None
    return dataclasses.replace(base, **changes)


def transport(
    velocity: Velocity,
    points: Tensor,
    t_from: Tensor | float,
    t_to: Tensor | float,
    *,
    cond: Sequence[Tensor] = (),
    params: Sequence[Tensor] = (),
    options: ODEOptions | None = None,
    stats: SolveStats | None = None,
    **overrides: Any,
) -> Tensor:
    """Carry item b's points along the flow from time ``t_from[b]`` to ``t_to[b]``.

    Args:
        velocity: ``velocity(p (B, N, D), t (B,), cond) -> (B, N, D)``.
        points: (B, N, D) positions at ``t_from``.
        t_from, t_to: (B,) per-item times, or floats; ``t_to < t_from`` transports backwards.
        cond: per-item condition tensors (B, K_i) passed to ``velocity`` (the codes).
        params: the field's parameters (needed by the adjoint method to return their gradients).
        options: base settings (default: the original's); ``**overrides`` change single fields
            (method, rtol, atol, adjoint, step_size, num_steps, per_item).
        stats: optional counters of field evaluations and solves.
    Returns:
        (B, N, D) positions at ``t_to``.
    Raises:
        ValueError: bad shapes, non-finite times, or invalid options (listing the valid ones).
    """
    opts = resolve_options(options, **overrides)
    points, cond = _check_points_cond(points, cond)
    b = points.shape[0]
    t_from = _check_times(t_from, points, "t_from")
    t_to = _check_times(t_to, points, "t_to")
    delta = t_to - t_from
    if bool((delta == 0).all()):
        return points.clone()
    solve = _Solve(velocity, points, cond, tuple(params), opts, stats)

    if opts.per_item == "rescale":
        span = float(delta.abs().max())
        n = opts.num_steps if opts.num_steps is not None else _num_steps(span, opts.step_size)
        s = points.new_tensor([0.0, 1.0])
        return solve(s, offset=t_from, rate=delta, h=1.0 / n if n else None)[-1]

    if opts.per_item == "original":
        sign = torch.sign(delta)
        s, inverse = torch.unique(torch.cat([delta.new_zeros(1), delta.abs()]), return_inverse=True)
        h = _real_step(opts, float(s[-1]))
        sol = solve(s, offset=t_from, rate=sign, h=h, cond_in_state=True)  # (S, B, N, D)
        return sol[inverse[1:], torch.arange(b, device=points.device)]

    # "group": one real-time solve per distinct (t_from, t_to) pair
    pairs, group = torch.unique(torch.stack([t_from, t_to], dim=1), dim=0, return_inverse=True)
    outs, order = [], []
    for g in range(pairs.shape[0]):
        idx = torch.nonzero(group == g).squeeze(1)
        tf, tt = pairs[g, 0], pairs[g, 1]
        if tf == tt:
            outs.append(points[idx])
        else:
            sub = _Solve(velocity, points[idx], tuple(c[idx] for c in cond), tuple(params), opts, stats)
            outs.append(sub(torch.stack([tf, tt]), h=_real_step(opts, float((tt - tf).abs())))[-1])
        order.append(idx)
    inv = torch.argsort(torch.cat(order))
    return torch.cat(outs)[inv]


def transport_forward(
    velocity: Velocity,
    points: Tensor,
    times: Tensor | Sequence[float],
    *,
    t_start: float = 0.0,
    cond: Sequence[Tensor] = (),
    params: Sequence[Tensor] = (),
    options: ODEOptions | None = None,
    stats: SolveStats | None = None,
    **overrides: Any,
) -> Tensor:
    """Carry all items from ``t_start`` to each of a set of shared output times (one solve per direction).

    Args:
        velocity, cond, params, options, stats, **overrides: as in :func:`transport`.
        points: (B, N, D) positions at ``t_start``.
        times: (T,) output times in any order (repeats allowed); times before ``t_start`` are reached
            by a second, backward solve.
        t_start: start time (default 0).
    Returns:
        (B, T, N, D) positions; outputs at ``t_start`` equal ``points`` exactly.
    """
    opts = resolve_options(options, **overrides)
    points, cond = _check_points_cond(points, cond)
    times = torch.as_tensor(times, dtype=points.dtype, device=points.device).detach()
    if times.ndim != 1 or times.numel() == 0 or not bool(torch.isfinite(times).all()):
        raise ValueError(
            f"times must be a non-empty 1-D tensor of finite values; got shape {tuple(times.shape)}"
        )
    t0 = points.new_tensor([float(t_start)])
    uniq = torch.unique(torch.cat([t0, times]))
    i0 = int(torch.searchsorted(uniq, t0))
    span = float((uniq - t0).abs().max())
    h = _real_step(opts, span)
    solve = _Solve(velocity, points, cond, tuple(params), opts, stats)
    cond_in_state = opts.per_item == "original"
    states: list[Tensor] = [points] * len(uniq)
    if i0 < len(uniq) - 1:
        sol = solve(uniq[i0:], h=h, cond_in_state=cond_in_state)
        states[i0 + 1 :] = list(sol[1:])
    if i0 > 0:
        sol = solve(uniq[: i0 + 1].flip(0), h=h, cond_in_state=cond_in_state)
        states[:i0] = list(sol[1:].flip(0))
    stacked = torch.stack(states)  # (S, B, N, D)
    return stacked[torch.searchsorted(uniq, times)].transpose(0, 1)


class FusedVelocity:
    """Inference-time evaluation of a concatenation velocity field (``toolkit.oflow.model.VelocityField``).

    A :data:`Velocity` callable, ``fused(p (B, N, D), t (B,), (c_t, z_t)) -> (B, N, D)``, with the same
    values as ``field(p, t, c_t, z_t)`` up to float rounding:

    - the time column of ``fc_p`` and the code terms ``fc_c[i](c_t) + fc_z[i](z_t)`` are per-item vectors,
      so they are added to the biases of the matrix products instead of to (B, N, H) activations
      (no ``cat`` of the time, no separate additions);
    - activations live in three (B, N, H) buffers reused by every call with the same shape, updated in
      place (a solve otherwise allocates and frees several (B, N, H) tensors per evaluation, which costs
      more than the arithmetic for small widths on a CPU).

    The returned tensor is fresh (the solver keeps it). With gradients enabled the call runs ``field``
    itself, so training and adjoint solves are unchanged. The weights are read at every call (never
    copied), so the object stays valid while the field trains.

    Args:
        field: a module with ``fc_p`` (Linear D+1 -> H), ``blocks`` (residual blocks with ``fc_0``,
            ``fc_1`` H -> H and no shortcut), ``fc_c`` / ``fc_z`` (ModuleLists of Linear, or None) and
            ``fc_out`` (Linear H -> out).
    Raises:
        TypeError: ``field`` does not have that structure (e.g. an analytic test field).
    """

    def __init__(self, field: nn.Module):
        problems = []
        linears = {name: getattr(field, name, None) for name in ("fc_p", "fc_out")}
        blocks = getattr(field, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            problems.append("no ModuleList of residual blocks 'blocks'")
            blocks = []
        for i, block in enumerate(blocks):
            if getattr(block, "shortcut", None) is not None:
                problems.append(f"blocks[{i}] has a shortcut layer")
            linears.update({f"blocks[{i}].fc_0": getattr(block, "fc_0", None),
                            f"blocks[{i}].fc_1": getattr(block, "fc_1", None)})
        for name, layer in linears.items():
            if not isinstance(layer, nn.Linear) or layer.bias is None:
                problems.append(f"{name} is not a Linear layer with a bias")
        for name in ("fc_c", "fc_z"):
            terms = getattr(field, name, None)
            if terms is not None and len(terms) != len(blocks):
                problems.append(f"{name} has {len(terms)} layers for {len(blocks)} blocks")
        if not problems:
            width = linears["fc_p"].out_features
            wrong = [n for n, layer in linears.items() if n != "fc_p" and layer.in_features != width
                     or n.endswith(("fc_0", "fc_1")) and layer.out_features != width]
            problems += [f"{n} is not {width} -> {width} wide" for n in wrong]
        if problems:
            raise TypeError(f"FusedVelocity needs a toolkit.oflow.model.VelocityField-like module; "
                            f"{type(field).__name__}: {'; '.join(problems)}")
        self.field = field
        self._buffers: tuple[Tensor, Tensor, Tensor] | None = None

    def __call__(self, p: Tensor, t: Tensor, cond: tuple[Tensor, ...]) -> Tensor:
        c, z = cond
        f = self.field
        if torch.is_grad_enabled():
            return f(p, t, c, z)
        b, n, _ = p.shape
        blocks = f.blocks
        h = f.fc_p.out_features
        codes = [_code_term(f.fc_c, c, i) + _code_term(f.fc_z, z, i) for i in range(len(blocks))]
        net, h0, h1 = self._buffers_for(b, n, h, p)
        w_p = f.fc_p.weight
        bias = f.fc_p.bias + t.to(p.dtype)[:, None] * w_p[:, -1] + codes[0]  # (B, H): bias + time + code 0
        torch.baddbmm(bias[:, None, :].expand(b, n, h), p, w_p[:, :-1].t().expand(b, -1, -1), out=net)
        for i, block in enumerate(blocks):
            torch.clamp_min(net, 0.0, out=h0)
            torch.baddbmm(block.fc_0.bias.expand(b, n, h), h0, block.fc_0.weight.t().expand(b, -1, -1), out=h1)
            h1.clamp_min_(0.0)
            net.baddbmm_(h1, block.fc_1.weight.t().expand(b, -1, -1))
            # fc_1's bias and the next block's code term, added once
            tail = block.fc_1.bias + codes[i + 1] if i + 1 < len(blocks) else block.fc_1.bias
            net.add_(tail.expand(b, h)[:, None, :])
        net.clamp_min_(0.0)
        w_out = f.fc_out.weight
        return torch.baddbmm(f.fc_out.bias.expand(b, n, w_out.shape[0]), net, w_out.t().expand(b, -1, -1))

    def _buffers_for(self, b: int, n: int, h: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        buf = self._buffers
        if buf is None or buf[0].shape != (b, n, h) or buf[0].dtype != like.dtype or buf[0].device != like.device:
            self._buffers = buf = tuple(like.new_empty(b, n, h) for _ in range(3))
        return buf

    def __repr__(self) -> str:
        return f"FusedVelocity({type(self.field).__name__}, hidden={self.field.fc_p.out_features}, " \
               f"blocks={len(self.field.blocks)})"


# ----------------------------------------------------------------------------------------------------
# private
# ----------------------------------------------------------------------------------------------------


class _Solve:
    """One odeint call of ``dp/ds = rate_b * v(p, offset_b + rate_b * s, cond)`` at output ``s`` values."""

    def __init__(
        self,
        velocity: Velocity,
        points: Tensor,
        cond: tuple[Tensor, ...],
        params: tuple[Tensor, ...],
        opts: ODEOptions,
        stats: SolveStats | None,
    ):
        self.velocity, self.points, self.cond, self.params = velocity, points, cond, params
        self.opts, self.stats = opts, stats

    def __call__(
        self,
        s: Tensor,
        *,
        offset: Tensor | None = None,
        rate: Tensor | None = None,
        h: float | None,
        cond_in_state: bool = False,
    ) -> Tensor:
        p0, cond, opts, stats = self.points, self.cond, self.opts, self.stats
        b, n, d = p0.shape
        offset = p0.new_zeros(b) if offset is None else offset.detach()
        rate = p0.new_ones(b) if rate is None else rate.detach()
        r3 = rate.view(b, 1, 1)
        sizes = [c.shape[1] for c in cond]
        velocity = self.velocity

        if cond_in_state:
            # original layout: [points | codes], the codes have zero derivative
            y0 = torch.cat([p0.reshape(b, n * d), *cond], dim=1)
            zeros = p0.new_zeros(b, sum(sizes))

            def func(t: Tensor, y: Tensor) -> Tensor:
                if stats is not None:
                    stats.nfe += 1
                p = y[:, : n * d].reshape(b, n, d)
                cs = tuple(torch.split(y[:, n * d :], sizes, dim=1)) if cond else ()
                v = r3 * velocity(p, offset + rate * t, cs)
                return torch.cat([v.reshape(b, n * d), zeros], dim=1)

            adjoint_params = self.params
        else:
            y0 = p0

            def func(t: Tensor, y: Tensor) -> Tensor:
                if stats is not None:
                    stats.nfe += 1
                return r3 * velocity(y, offset + rate * t, cond)

            adjoint_params = self.params + tuple(c for c in cond if c.requires_grad and c.numel() > 0)

        options = None
        if METHODS[opts.method] == "fixed":
            options = {"grid_constructor": _fixed_grid(h)}
        elif not cond_in_state:
            # end the last step exactly at the final time instead of stepping past it and interpolating
            options = {"step_t": s[-1:].detach()}
        if stats is not None:
            stats.solves += 1
        s = s.to(p0.dtype)
        if opts.adjoint:
            sol = odeint_adjoint(
                func,
                y0,
                s,
                rtol=opts.rtol,
                atol=opts.atol,
                method=opts.method,
                options=options,
                adjoint_params=adjoint_params,
            )
        else:
            sol = odeint(func, y0, s, rtol=opts.rtol, atol=opts.atol, method=opts.method, options=options)
        if cond_in_state:
            sol = sol[:, :, : n * d].reshape(len(s), b, n, d)
        return sol


def _num_steps(span: float, step_size: float | None) -> int | None:
    if step_size is None:
        return None
    return max(math.ceil(span / step_size - 1e-6), 1)


def _real_step(opts: ODEOptions, span: float) -> float | None:
    """Step in time units for a real-time solve over ``span`` (None for adaptive methods)."""
    if METHODS[opts.method] != "fixed":
        return None
    if opts.step_size is not None:
        return float(opts.step_size)
    return max(span, 1e-12) / int(opts.num_steps)


def _fixed_grid(h: float | None) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """Grid ``t[0] + k h`` (either direction) merged with every output time, so outputs are exact nodes."""
    assert h is not None and h > 0

    def construct(func: Any, y0: Tensor, t: Tensor) -> Tensor:
        span = float(t[-1] - t[0])
        sign = 1.0 if span >= 0 else -1.0
        n = max(math.ceil(abs(span) / h - 1e-6), 1)
        uniform = t[0] + (sign * h) * torch.arange(n, dtype=t.dtype, device=t.device)
        # drop nodes that (nearly) coincide with an output time: no tiny steps
        gap = (uniform[:, None] - t[None, :]).abs().min(dim=1).values
        grid = torch.unique(torch.cat([uniform[gap > 1e-6 * h], t]))
        return grid if sign > 0 else grid.flip(0)

    return construct


def _check_points_cond(points: Tensor, cond: Sequence[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
    if not torch.is_tensor(points) or points.ndim != 3 or not points.is_floating_point():
        raise ValueError(
            f"points must be a float tensor (B, N, D); got "
            f"{tuple(points.shape) if torch.is_tensor(points) else type(points).__name__}"
        )
    cond = tuple(cond)
    for i, c in enumerate(cond):
        if not torch.is_tensor(c) or c.ndim != 2 or c.shape[0] != points.shape[0]:
            raise ValueError(
                f"cond[{i}] must have shape (B, K) with B={points.shape[0]}; got "
                f"{tuple(c.shape) if torch.is_tensor(c) else type(c).__name__}"
            )
    return points, cond


def _check_times(t: Tensor | float, points: Tensor, name: str) -> Tensor:
    b = points.shape[0]
    t = torch.as_tensor(t, dtype=points.dtype, device=points.device).detach()
    if t.ndim == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise ValueError(f"{name} must be a float or have shape (B,) = ({b},); got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite; got {t.tolist()}")
    return t


def _code_term(layers: nn.ModuleList | None, code: Tensor, i: int) -> Tensor | float:
    return 0.0 if layers is None else layers[i](code)
