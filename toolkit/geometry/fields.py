"""Point fields: the one contract that slicing, meshing and 3D metrics are written against.

A point field maps world points to values, ``field(xyz: (N, 3) tensor) -> (N,)`` scalars (an occupancy
logit, a signed distance, a foreground score) or ``(N, C)`` class logits, and says where it lives:

- ``bounds``: the :class:`toolkit.geometry.grids.Box` it is meaningful in, the default box of its slices
  and meshes (None: the consumer's default);
- ``device``: where its queries run; points are sent there, and meshing picks its marching-cubes kernel
  by it (a field on a GPU gets the Triton kernel);
- ``chunk``: points per call, bounding memory; consumers evaluate in chunks of this size.

A field that changes with time also has ``times`` (the frame times it is shown at, e.g. a time slider's
stops) and ``at(t)`` (the point field at time t): :class:`TimeField`.

Implementations: SOF's :class:`toolkit.sof.render.BoundField` (a model with one code bound, (N, C)
logits), Occupancy Flow's :class:`toolkit.oflow.fields.OccupancyField` (the occupancy logit at time t,
(N,)), and any plain callable (synthetic ground truth, a lambda) through :func:`as_point_field`, which
adds the attributes with defaults. Everything here is duck-typed: a field need not inherit anything.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from toolkit.geometry.grids import Bounds, Box, box

__all__ = ["DEFAULT_CHUNK", "FunctionField", "PointField", "TimeField", "as_point_field", "field_at",
           "is_time_field"]

DEFAULT_CHUNK = 65536
"""Points per call of a field that declares no ``chunk``."""


@runtime_checkable
class PointField(Protocol):
    """Values at world points: ``(N, 3) -> (N,)`` or ``(N, C)``, with its box, device and chunk size."""

    bounds: Box | None
    """The box the field is meaningful in (default box of slices and meshes), or None."""
    device: torch.device
    """Where queries run (points are moved there)."""
    chunk: int
    """Points per call."""

    def __call__(self, xyz: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class TimeField(Protocol):
    """A field that changes with time: the point field at each time t."""

    times: Sequence[float]
    """Times it is shown at (frame times)."""

    def at(self, t: float) -> PointField: ...


class FunctionField:
    """A plain callable with the point-field attributes.

    Args:
        fn: ``(N, 3) -> (N,)`` or ``(N, C)``.
        bounds: its box (:data:`toolkit.geometry.grids.Bounds`), or None.
        device: where its queries run (default CPU).
        chunk: points per call (default :data:`DEFAULT_CHUNK`).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, bounds: Bounds | None = None,
                 device: torch.device | str | None = None, chunk: int | None = None):
        if not callable(fn):
            raise TypeError(f"a point field must be callable on (N, 3) points; got {type(fn).__name__}")
        self.fn = fn
        self.bounds = None if bounds is None else box(bounds)
        self.device = torch.device(device or "cpu")
        self.chunk = _check_chunk(chunk or DEFAULT_CHUNK)

    def __call__(self, xyz: torch.Tensor) -> torch.Tensor:
        return self.fn(xyz)

    def __repr__(self) -> str:
        return f"FunctionField({getattr(self.fn, '__name__', type(self.fn).__name__)}, bounds={self.bounds})"


def as_point_field(field, *, bounds: Bounds | None = None, device: torch.device | str | None = None,
                   chunk: int | None = None) -> PointField:
    """``field`` as a :class:`PointField`: itself when it has the attributes and none is overridden,
    else a :class:`FunctionField` with the given values, then the field's own, then the defaults.

    Raises:
        TypeError: a time-varying field (choose a time with ``field.at(t)``), or not callable.
    """
    if is_time_field(field) and not callable(field):
        raise TypeError("a time-varying field has no values of its own: pick a time with field.at(t)")
    if isinstance(field, PointField) and bounds is None and device is None and chunk is None:
        return field
    fn = field.fn if isinstance(field, FunctionField) else field
    return FunctionField(fn, bounds=bounds if bounds is not None else getattr(field, "bounds", None),
                         device=device or getattr(field, "device", None),
                         chunk=chunk or getattr(field, "chunk", None))


def is_time_field(field) -> bool:
    """Whether ``field`` changes with time (has ``times`` and ``at``)."""
    return isinstance(field, TimeField)


def field_at(field, t: float | None):
    """The field at time ``t`` for a time-varying field (its first time when ``t`` is None); others as they are."""
    if not is_time_field(field):
        return field
    return field.at(float(field.times[0]) if t is None else float(t))


def _check_chunk(chunk: int) -> int:
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int; got {chunk!r}")
    return chunk
