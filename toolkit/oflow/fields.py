"""Occupancy Flow as a point field: the occupancy of one sequence at a time t, and the inference settings.

:class:`OccupancyField` implements the point-field contract of :mod:`toolkit.geometry.fields` for an
Occupancy Flow model with the codes of ONE sequence: ``field(xyz (N, 3)) -> (N,)`` occupancy logits at
its time t (t = 0 is the decoder; t > 0 transports each point back to t = 0 through the ODE and decodes,
oflow.md section 1), on the box ``[-0.55, 0.55]^3`` (box 1 + padding 0.1), on the model's device. It is
also time-varying (``times``, ``at(t)``), so slicing, meshing and the volume slicer's time slider take it
like any other field (:func:`toolkit.viz.occupancy_slicer` builds that slicer from evaluation windows). Coordinates are frame-0 normalised units; times in [0, 1].

:func:`occupancy_meshing` turns the original's meshing knobs (an occupancy PROBABILITY threshold, the
MISE lattice, a box padding) into one validated :class:`toolkit.geometry.meshing.MeshingOptions` whose level
is the threshold's logit and whose box is ``1 + padding``: the conversion happens once, where the knobs
enter, and generation, latent tools and evaluation pass the options object down.

Also here, shared by generation, latent tools and evaluation: :func:`window_codes`, :func:`eval_mode`,
:func:`model_device`, :func:`frame_times` and :func:`inference_ode` (the solver of a query: a preset,
options or the model's own, never the adjoint).
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from toolkit.geometry.grids import Bounds, box
from toolkit.geometry.meshing import MeshingOptions
from toolkit.oflow.data import BOX_HALF
from toolkit.oflow.ode import ODEOptions, SolveStats, ode_preset, resolve_options

__all__ = ["OccupancyField", "eval_mode", "frame_times", "inference_ode", "model_device", "occupancy_fields",
           "occupancy_meshing", "ode_kwargs", "query_settings", "resolve_meshing", "window_codes"]


class OccupancyField:
    """The occupancy logits of one sequence at time ``t``: a point field that is also time-varying.

    Args:
        model: an :class:`toolkit.oflow.model.OccupancyFlow` (queried in eval mode).
        codes: ``Codes`` of ONE sequence (batch size 1), e.g. from ``model.encode``.
        t: the time of this field's values.
        times: frame times the field is shown at (default ``linspace(0, 1, config.seq_len)``).
        ode: the transport for t > 0 (:func:`inference_ode`: a preset name, options, or None for the
            model's own).
        chunk: points per call (the original's 100000).
        bounds: the box (default the original's ``[-0.55, 0.55]^3``).
        stats: counters of velocity evaluations, filled by every query.
    """

    def __init__(self, model: Any, codes: Any, t: float = 0.0, *, times: Sequence[float] | None = None,
                 ode: str | ODEOptions | None = None, chunk: int = 100_000, bounds: Bounds = BOX_HALF,
                 stats: SolveStats | None = None):
        if codes.c_t.shape[0] != 1:
            raise ValueError(f"an OccupancyField holds the codes of one sequence; got batch size {codes.c_t.shape[0]}")
        self.model, self.codes, self.t = model, codes, float(t)
        self.device = model_device(model)
        self.bounds = box(bounds)
        self.chunk = int(chunk)
        self.times = frame_times(model, times).tolist()
        self.ode = inference_ode(model, ode)
        self.stats = stats

    @torch.no_grad()
    def __call__(self, xyz: Tensor) -> Tensor:
        """(N, 3) frame-0 normalised points at time t -> (N,) occupancy logits (on the model's device)."""
        p = torch.as_tensor(xyz, dtype=torch.float32).to(self.device)[None]
        with eval_mode(self.model):
            if self.t == 0.0:  # the decoder itself: no ODE to solve
                return self.model.decode(self.codes, p)[0]
            return self.model.occupancy(self.codes, p, self.t, stats=self.stats, **ode_kwargs(self.ode))[0]

    def at(self, t: float) -> OccupancyField:
        """The same sequence's occupancy at time ``t`` (shares codes, solver, times and counters)."""
        return OccupancyField(self.model, self.codes, t, times=self.times, ode=self.ode, chunk=self.chunk,
                              bounds=self.bounds, stats=self.stats)

    def __repr__(self) -> str:
        return f"OccupancyField(t={self.t:.3f}, {len(self.times)} times, ode={self.ode.method!r}, device={self.device})"


def occupancy_fields(model: Any, codes: Any, **kwargs: Any) -> list[OccupancyField]:
    """One :class:`OccupancyField` per sequence of a batch of ``Codes`` (keyword arguments as the class's)."""
    return [OccupancyField(model, type(codes)(*(c[i:i + 1] for c in codes)), **kwargs)
            for i in range(codes.c_t.shape[0])]


# ----------------------------------------------------------------------------------------------------
# Inference settings shared by generation, latent tools and evaluation
# ----------------------------------------------------------------------------------------------------


def occupancy_meshing(threshold: float = 0.3, *, resolution0: int = 32, upsampling_steps: int = 2,
                      padding: float = 0.1, chunk: int = 100_000, impl: str = "auto") -> MeshingOptions:
    """Meshing options of an occupancy field from Occupancy Flow's knobs, validated once.

    Args:
        threshold: occupancy probability of the surface (the original: 0.3); the level is its logit
            ``log(p / (1 - p))``, since the field gives logits.
        resolution0, upsampling_steps: MISE coarse lattice and refinements (final grid
            ``resolution0 * 2**upsampling_steps`` cells; the original: 32 and 2, i.e. 128^3).
        padding: box = 1 + padding, i.e. the cube ``[-(1 + padding) / 2, (1 + padding) / 2]^3``.
        chunk: decoder queries per call (the original: 100000).
        impl: marching-cubes backend (see :func:`toolkit.geometry.meshing.marching_cubes`).

    Raises:
        ValueError: a threshold outside (0, 1), resolution0 < 2, upsampling_steps < 0 or padding < 0.
    """
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold is an occupancy probability in (0, 1); got {threshold} "
                         f"(the original: 0.3, i.e. logit {math.log(0.3 / 0.7):.3f})")
    if int(resolution0) < 2 or int(upsampling_steps) < 0:
        raise ValueError(f"need resolution0 >= 2 and upsampling_steps >= 0; got {resolution0}, {upsampling_steps}")
    if not padding >= 0:
        raise ValueError(f"padding must be >= 0 (box = 1 + padding); got {padding}")
    level = math.log(float(threshold) / (1.0 - float(threshold)))
    return MeshingOptions(level=level, resolution0=int(resolution0), upsampling_steps=int(upsampling_steps),
                          bounds=0.5 * (1.0 + float(padding)), chunk=int(chunk), impl=impl)


_MESHING_DEFAULTS = {k: p.default for k, p in inspect.signature(occupancy_meshing).parameters.items()}


MESHING_KNOBS = ("threshold", "resolution0", "upsampling_steps", "padding", "chunk", "impl")
"""Keyword settings of :func:`occupancy_meshing` that generation calls accept one by one."""


def query_settings(model: Any, meshing: MeshingOptions | None = None, ode: str | ODEOptions | None = None,
                   **settings: Any) -> tuple[MeshingOptions, ODEOptions]:
    """The meshing and transport settings of a generation call, from its keywords, validated once.

    Args:
        meshing: the meshing settings as one object (default :func:`occupancy_meshing` of the keywords).
        ode: the transport (see :func:`inference_ode`).
        **settings: single meshing settings (:data:`MESHING_KNOBS`, only without ``meshing``) and single ODE
            options (method, rtol, atol, step_size, num_steps, per_item).

    Raises:
        TypeError: a keyword that is neither (the message lists both kinds).
        ValueError: ``meshing`` together with single meshing settings, or an invalid value.
    """
    knobs = {k: settings.pop(k) for k in list(settings) if k in MESHING_KNOBS}
    if meshing is not None and knobs:
        raise ValueError(f"give the meshing settings once: meshing=MeshingOptions(...) or {sorted(knobs)}, not both")
    unknown = sorted(set(settings) - set(ODEOptions.__dataclass_fields__))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; valid: meshing {list(MESHING_KNOBS)}, "
                        f"ODE {sorted(ODEOptions.__dataclass_fields__)}")
    return (meshing if meshing is not None else occupancy_meshing(**knobs)), inference_ode(model, ode, **settings)


def resolve_meshing(meshing: MeshingOptions | None = None, **knobs: Any) -> MeshingOptions:
    """``meshing`` when given (then every knob must keep its default), else :func:`occupancy_meshing` of the
    knobs: how the public functions that take both an options object and the original's knobs read them.

    Raises:
        ValueError: ``meshing`` together with a knob changed from its default.
    """
    if meshing is None:
        return occupancy_meshing(**knobs)
    changed = sorted(k for k, v in knobs.items() if v != _MESHING_DEFAULTS[k])
    if changed:
        raise ValueError(f"give the meshing settings once: meshing=MeshingOptions(...) or the knobs {changed}, "
                         "not both")
    return meshing


class eval_mode:
    """Eval mode inside the block (the CBN decoder must not use batch statistics), restored after."""

    def __init__(self, model: Any):
        self.model, self.was = model, getattr(model, "training", False)

    def __enter__(self):
        if hasattr(self.model, "eval"):
            self.model.eval()

    def __exit__(self, *exc):
        if hasattr(self.model, "train"):
            self.model.train(self.was)


def window_codes(model: Any, inputs: Tensor | None) -> Any:
    """Codes of one window (posterior means for the VAE). ``inputs``: (L, N, 3), or None without encoders."""
    if not model.needs_inputs:
        return model.encode(None, batch_size=1)
    if inputs is None:
        raise ValueError("this model has encoders: window_codes() needs the window's inputs (L, N, 3)")
    return model.encode(torch.as_tensor(inputs, dtype=torch.float32, device=model_device(model))[None])


def model_device(model: Any) -> torch.device:
    """The device of the model's parameters (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def frame_times(model: Any, times: Any = None, device: torch.device | None = None) -> Tensor:
    """(T,) float32 times: ``times`` checked, or ``linspace(0, 1, config.seq_len)`` (t = i / 16 for 17 frames).

    Raises:
        ValueError: not a non-empty 1-D sequence of finite values.
    """
    if times is None:
        n = int(getattr(getattr(model, "config", None), "seq_len", 17))
        return torch.linspace(0.0, 1.0, n, device=device)
    t = torch.as_tensor(times, dtype=torch.float32, device=device)
    if t.ndim != 1 or t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"times must be a non-empty 1-D sequence of finite values; got shape {tuple(t.shape)}")
    return t


def inference_ode(model: Any, ode: str | ODEOptions | None = None, **overrides: Any) -> ODEOptions:
    """The transport of a query: a key of ``ODE_PRESETS``, an ``ODEOptions``, or None for the model's
    ``config.ode``; ``overrides`` change single fields. Never the adjoint (queries need no gradients)."""
    if isinstance(ode, str):
        base = ode_preset(ode)
    elif isinstance(ode, ODEOptions):
        base = ode
    elif ode is None:
        base = getattr(getattr(model, "config", None), "ode", None) or ODEOptions()
    else:
        raise TypeError(f"ode must be a preset name, ODEOptions or None; got {type(ode).__name__}")
    return resolve_options(base, **{"adjoint": False, **overrides})


def ode_kwargs(opts: ODEOptions) -> dict[str, Any]:
    """The fields of ``opts`` as keyword arguments of the model's transport methods."""
    return {k: getattr(opts, k) for k in ODEOptions.__dataclass_fields__}
