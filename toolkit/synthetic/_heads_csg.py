"""Constructive solids for the procedural heads: exact point membership and closed-form ray intervals.

A :class:`Solid` is a convex set: an ellipsoid, a finite elliptic cylinder (axis = local y), a box, or
all of space, each cut by any number of half-spaces ``n · x <= d`` (world coordinates). A
:class:`Part` is ``solid`` minus an optional convex ``minus`` solid, with one class id (> 0). A scene is
a list of parts in ascending priority: where parts overlap, the later one wins. Everything is clipped
to the ball ``|x| <= clip_radius``; outside it the label is 0.

Two algorithms read the same description:

- :meth:`CompiledScene.label` tests points against the parts (the exact label field);
- :meth:`CompiledScene.cast` intersects rays with the parts in closed form (quadratics, slabs and
  half-lines, then interval logic for ``solid − minus``). Because every part has a non-zero class,
  the first entry into the union of parts is the first non-background point along the ray; the label
  there is the highest-priority part whose ray intervals contain a parameter just behind that entry.

Both work on (part, point) or (part, ray) pairs that survive a bounding-sphere test, so the cost is
proportional to the pixels each part covers rather than to parts x pixels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch

SOLID_KINDS = ("ellipsoid", "cylinder", "box", "space")
_TINY = 1e-12


@dataclass(frozen=True)
class Solid:
    """A convex solid: ``kind`` in local coordinates q = Rᵀ(x − center) / radii, cut by world half-spaces.

    Attributes:
        kind: "ellipsoid" (|q| <= 1), "cylinder" (q_x² + q_z² <= 1, |q_y| <= 1), "box" (max |q_j| <= 1)
            or "space" (everything; only the planes cut it).
        center: (3,) world centre.
        radii: (3,) semi-axes (half-sizes for boxes; radii and half-height for cylinders).
        rotation: (3, 3) rows of the matrix whose columns are the local axes in world coordinates.
        planes: rows (nx, ny, nz, d); the solid keeps points with n · x <= d.
    """

    kind: str
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radii: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotation: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    planes: tuple[tuple[float, float, float, float], ...] = ()

    def __post_init__(self):
        if self.kind not in SOLID_KINDS:
            raise ValueError(f"unknown solid kind {self.kind!r}; valid: {list(SOLID_KINDS)}")
        if min(self.radii) <= 0:
            raise ValueError(f"solid radii must be positive; got {self.radii}")

    def with_planes(self, planes: Sequence[Sequence[float]]) -> Solid:
        """The same solid further cut by half-spaces ``n · x <= d`` (rows (nx, ny, nz, d))."""
        return replace(self, planes=self.planes + tuple(tuple(float(v) for v in p) for p in planes))

    @property
    def bounding_radius(self) -> float:
        """Radius of a ball around ``center`` that holds the solid (inf for "space")."""
        r = np.asarray(self.radii)
        return {"ellipsoid": float(r.max()), "cylinder": float(np.hypot(max(r[0], r[2]), r[1])),
                "box": float(np.linalg.norm(r)), "space": float("inf")}[self.kind]


@dataclass(frozen=True)
class Part:
    """``solid`` minus ``minus`` (optional), labelled ``label`` (> 0)."""

    name: str
    label: int
    solid: Solid
    minus: Solid | None = None


class Cast(NamedTuple):
    labels: torch.Tensor
    """(M,) int64 class just behind the first surface (0 where the ray hits nothing)."""
    t: torch.Tensor
    """(M,) ray parameter of the first surface (inf where the ray hits nothing)."""


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def solid(kind: str, center: Sequence[float] = (0, 0, 0), radii: Sequence[float] = (1, 1, 1),
          rotation: np.ndarray | None = None, planes: Sequence[Sequence[float]] = ()) -> Solid:
    """Build a :class:`Solid` from array-likes (stored as plain float tuples)."""
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    return Solid(kind, tuple(float(v) for v in center), tuple(float(v) for v in radii),
                 tuple(tuple(float(v) for v in row) for row in rot),
                 tuple(tuple(float(v) for v in p) for p in planes))


class _SolidT:
    """One solid's parameters as tensors, with its kind-specific membership and ray interval.

    Points and rays come component-major, (3, Q): sums over x, y, z are then fast row additions.
    """

    def __init__(self, s: Solid, device, dtype):
        kw = {"device": device, "dtype": dtype}
        self.kind = s.kind
        center = torch.tensor(s.center, **kw)
        # Local coordinates q = to_local (x - c): rows of Rᵀ scaled by 1 / radii.
        self.to_local = torch.tensor(s.rotation, **kw).T / torch.tensor(s.radii, **kw)[:, None]
        self.local_center = (self.to_local @ center)[:, None]
        planes = torch.tensor(s.planes, **kw).reshape(-1, 4) if s.planes else None
        self.normals = None if planes is None else planes[:, :3].contiguous()
        self.offsets = None if planes is None else planes[:, 3:].contiguous()

    def inside(self, x: torch.Tensor) -> torch.Tensor:
        """(3, Q) points -> (Q,) bool."""
        inside = torch.ones(x.shape[1], dtype=torch.bool, device=x.device)
        if self.kind != "space":
            q = self.to_local @ x - self.local_center
            q2 = q * q
            if self.kind == "ellipsoid":
                inside = q2.sum(0) <= 1.0
            elif self.kind == "cylinder":
                inside = (q2[0] + q2[2] <= 1.0) & (q2[1] <= 1.0)
            else:
                inside = (q2 <= 1.0).all(0)
        if self.normals is not None:
            inside &= (self.normals @ x <= self.offsets).all(0)
        return inside

    def interval(self, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form [lo, hi] of rays o + t d, (3, Q) each, in the solid; empty when lo > hi.

        The origins should lie near the scene (within a few units) for the quadratics to be well
        conditioned; :meth:`CompiledScene.cast` moves them to each ray's point closest to the world origin.
        """
        inf = torch.full_like(o[0], float("inf"))
        lo, hi, empty = -inf, inf, torch.zeros_like(inf, dtype=torch.bool)
        if self.kind != "space":
            q0 = self.to_local @ o - self.local_center
            qd = self.to_local @ d
            if self.kind in ("ellipsoid", "cylinder"):
                # a t^2 + 2 b t + c <= 0 on the quadric axes.
                q0q, qdq = (q0[::2], qd[::2]) if self.kind == "cylinder" else (q0, qd)
                a, b, c = (qdq * qdq).sum(0), (q0q * qdq).sum(0), (q0q * q0q).sum(0) - 1.0
                disc = b * b - a * c
                root = torch.sqrt(disc.clamp(min=0))
                quad = a > _TINY  # a = 0: a cylinder ray parallel to the axis
                safe_a = torch.where(quad, a, torch.ones_like(a))
                lo = torch.where(quad, (-b - root) / safe_a, -inf)
                hi = torch.where(quad, (-b + root) / safe_a, inf)
                empty = torch.where(quad, disc < 0, c > 0)
            if self.kind in ("cylinder", "box"):
                for j in ([1] if self.kind == "cylinder" else [0, 1, 2]):
                    lo, hi, empty = _clip(lo, hi, empty, qd[j], 1.0 - q0[j])      # q_j <= 1
                    lo, hi, empty = _clip(lo, hi, empty, -qd[j], 1.0 + q0[j])     # -q_j <= 1
        if self.normals is not None:
            nd = self.normals @ d
            room = self.offsets - self.normals @ o
            for k in range(nd.shape[0]):
                lo, hi, empty = _clip(lo, hi, empty, nd[k], room[k])
        return torch.where(empty, inf, lo), torch.where(empty, -inf, hi)


def _clip(lo, hi, empty, slope, room):
    """Intersect [lo, hi] with {t : slope * t <= room}."""
    par = slope.abs() < _TINY
    t = room / torch.where(par, torch.ones_like(slope), slope)
    lo = torch.where(slope < -_TINY, torch.maximum(lo, t), lo)
    hi = torch.where(slope > _TINY, torch.minimum(hi, t), hi)
    return lo, hi, empty | (par & (room < 0))


class CompiledScene:
    """Parts as tensors on one device and dtype (see the module docstring)."""

    def __init__(self, parts: Sequence[Part], *, clip_radius: float, device=None, dtype=torch.float32):
        if not parts:
            raise ValueError("a scene needs at least one part")
        for p in parts:
            if p.label <= 0:
                raise ValueError(f"part {p.name!r}: label must be > 0 (background is the absence of parts)")
            if p.solid.kind == "space":
                raise ValueError(f"part {p.name!r}: an unbounded solid can only be subtracted")
        kw = {"device": device, "dtype": dtype}
        self.device, self.dtype = torch.device(device or "cpu"), dtype
        self.clip_radius = float(clip_radius)
        self.a = [_SolidT(p.solid, device, dtype) for p in parts]
        self.b = [None if p.minus is None else _SolidT(p.minus, device, dtype) for p in parts]
        # Culling balls of the parts (their solid's), slightly enlarged against rounding.
        bound = np.array([p.solid.bounding_radius for p in parts]) * 1.01 + 1e-3
        self.bound_center = torch.tensor([p.solid.center for p in parts], **kw)                    # (P, 3)
        self.bound_c2 = (self.bound_center * self.bound_center).sum(1, keepdim=True)
        self.bound_r2 = torch.tensor(bound ** 2, **kw)[:, None]
        # Index 0 is background; part p is 1 + p, so "largest index inside" is the highest priority.
        self.part_labels = torch.tensor([0] + [p.label for p in parts], device=device, dtype=torch.long)

    # --- point membership ------------------------------------------------------------------------

    def label(self, xyz: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N,) int64 class ids (0 outside every part)."""
        x = xyz.T.contiguous()
        cand = self._candidates(x, None) & ((x * x).sum(0) <= self.clip_radius ** 2)
        top = torch.zeros(xyz.shape[0], dtype=torch.long, device=xyz.device)
        for p, (a, b) in enumerate(zip(self.a, self.b)):
            idx = cand[p].nonzero()[:, 0]
            xp = x.index_select(1, idx)
            inside = a.inside(xp)
            if b is not None:
                inside &= ~b.inside(xp)
            top[idx[inside]] = p + 1  # parts come in ascending priority
        return self.part_labels[top]

    def _candidates(self, o: torch.Tensor, d: torch.Tensor | None) -> torch.Tensor:
        """(P, M) bool: point o (or the ray line o + t d), (3, M), meets the part's culling ball."""
        c = self.bound_center
        d2 = (o * o).sum(0) - 2 * (c @ o) + self.bound_c2
        if d is not None:
            along = c @ d - (o * d).sum(0)
            d2 = d2 - along * along
        return d2 <= self.bound_r2

    # --- rays ------------------------------------------------------------------------------------

    def cast(self, origins: torch.Tensor, directions: torch.Tensor, *, t_min: float = 0.0,
             probe_depth: float = 1e-4) -> Cast:
        """Label and parameter of the first surface along each ray (t >= t_min).

        Args:
            origins, directions: (M, 3) rays, unit directions.
            probe_depth: how far behind the first surface the label is read (capped at half the
                entered part's thickness along the ray).
        """
        m = origins.shape[0]
        o, d = origins.T.contiguous(), directions.T.contiguous()
        # Move each origin to the ray's point closest to the world origin (|o'| <= clip radius for rays
        # that meet the ball): well-conditioned quadratics; parameters are shifted back at the end.
        t0 = -(o * d).sum(0)
        o_near = o + t0 * d
        cand = self._candidates(o_near, d)
        disc = self.clip_radius ** 2 - (o_near * o_near).sum(0)
        root = torch.sqrt(disc.clamp(min=0))
        ball_lo = torch.clamp(-root, min=t_min - t0)
        ball_hi = torch.where(disc >= 0, root, torch.full_like(root, -float("inf")))
        feat = torch.cat([o_near, d, ball_lo[None], ball_hi[None]])                                 # (8, M)
        cols = {k: [] for k in ("ray", "part", "a0", "a1", "b0", "b1")}
        for p, (a, b) in enumerate(zip(self.a, self.b)):
            ray = cand[p].nonzero()[:, 0]
            if ray.shape[0] > m // 2:  # culling is only a shortcut: a big part takes every ray, no gather
                ray, f = torch.arange(m, device=origins.device), feat
            else:
                f = feat.index_select(1, ray)
            op, dp = f[0:3], f[3:6]
            a0, a1 = a.interval(op, dp)
            a0, a1 = torch.maximum(a0, f[6]), torch.minimum(a1, f[7])
            if b is None:
                b0 = b1 = torch.full_like(a0, float("inf"))
            else:
                b0, b1 = b.interval(op, dp)
                none = b0 > b1
                b0 = torch.where(none, torch.full_like(b0, float("inf")), b0)
                b1 = torch.where(none, torch.full_like(b1, float("inf")), b1)
            for k, v in zip(cols, (ray, torch.full_like(ray, p), a0, a1, b0, b1)):
                cols[k].append(v)
        ray, part, a0, a1, b0, b1 = (torch.cat(cols[k]) for k in cols)
        # Part = [a0, a1] minus [b0, b1]: its first interval is [entry, exit_].
        starts_in_b = (b0 <= a0) & (a0 < b1)
        entry = torch.where(starts_in_b, b1, a0)
        exit_ = torch.where(~starts_in_b & (b0 > a0), torch.minimum(a1, b0), a1)
        entry = torch.where(entry < exit_, entry, torch.full_like(entry, float("inf")))
        t = torch.full((m,), float("inf"), device=origins.device, dtype=origins.dtype)
        t.scatter_reduce_(0, ray, entry, reduce="amin")
        # Probe just behind the first entry, inside the part that was entered there.
        first = torch.isfinite(entry) & (entry == t[ray])
        depth = torch.full((m,), probe_depth, device=origins.device, dtype=origins.dtype)
        depth.scatter_reduce_(0, ray[first], (0.5 * (exit_ - entry))[first], reduce="amin")
        probe = (t + depth)[ray]
        covers = (a0 <= probe) & (probe <= a1) & ~((b0 <= probe) & (probe <= b1))
        top = torch.zeros(m, dtype=torch.long, device=origins.device)
        top.scatter_reduce_(0, ray[covers], part[covers] + 1, reduce="amax")
        return Cast(self.part_labels[top], t + t0)
