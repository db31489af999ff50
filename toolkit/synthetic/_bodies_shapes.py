"""Solid primitives of the procedural bodies: signed distance, its gradient, area-uniform surface samples.

Every primitive lives in its part's local frame. ``sdf`` is negative inside; ``sdf_grad`` also returns
the gradient (unit length on the surface). Round cones have an exact SDF; the ellipsoid's is the usual
first-order bound ``k0 (k0 - 1) / k1`` whose zero set is the exact ellipsoid and whose gradient is the
exact unit normal on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RoundCone:
    """Convex hull of two spheres: centre ``a`` radius ``r1`` and centre ``b`` radius ``r2`` (|r1 - r2| < |b - a|)."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    r1: float
    r2: float

    def __post_init__(self):
        length = float(np.linalg.norm(np.subtract(self.b, self.a)))
        if not (self.r1 > 0 and self.r2 > 0 and abs(self.r1 - self.r2) < length):
            raise ValueError(f"round cone needs r1, r2 > 0 and |r1 - r2| < |b - a|; got r1={self.r1}, "
                             f"r2={self.r2}, |b - a|={length}")

    # Shape constants: ends a, b, axis u, length L, sin/cos of the half-opening angle (computed once).
    def _consts(self):
        cached = self.__dict__.get("_cache")
        if cached is None:
            a, b = np.asarray(self.a, float), np.asarray(self.b, float)
            length = float(np.linalg.norm(b - a))
            s = (self.r1 - self.r2) / length
            cached = (a, b, (b - a) / length, length, s, math.sqrt(1.0 - s * s))
            object.__setattr__(self, "_cache", cached)
        return cached

    def sdf(self, q: np.ndarray) -> np.ndarray:
        return self.sdf_grad(q, grad=False)[0]

    def sdf_grad(self, q: np.ndarray, grad: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        a, b, u, length, s, c = self._consts()
        pa = q - a
        y = pa @ u                                       # axial coordinate from a
        pa2 = np.einsum("ij,ij->i", pa, pa)
        x = np.sqrt(np.maximum(pa2 - y * y, 0.0))        # distance from the axis
        # Closest feature: the cone side between the two tangent circles, beyond them a sphere.
        near_a = x * s - y * c > 0.0
        near_b = (y - length) * c - x * s > 0.0
        d = x * c + y * s - self.r1
        if near_a.any():
            d[near_a] = np.sqrt(pa2[near_a]) - self.r1
        if near_b.any():
            qb = pa[near_b] - (b - a)
            d[near_b] = np.sqrt(np.einsum("ij,ij->i", qb, qb)) - self.r2
        if not grad:
            return d, None
        with np.errstate(invalid="ignore", divide="ignore"):
            g = (c / x)[:, None] * (pa - y[:, None] * u) + s * u
            if near_a.any():
                g[near_a] = pa[near_a] / np.sqrt(pa2[near_a])[:, None]
            if near_b.any():
                qb = pa[near_b] - (b - a)
                g[near_b] = qb / np.linalg.norm(qb, axis=1, keepdims=True)
        # On the axis the radial direction is undefined: any perpendicular is a valid subgradient.
        bad = ~np.isfinite(g).all(axis=1)
        if bad.any():
            g[bad] = c * _any_perpendicular(u) + s * u
        return d, g

    def area(self) -> float:
        _, _, _, length, s, c = self._consts()
        return (2 * math.pi * self.r1 ** 2 * (1 + s) + 2 * math.pi * self.r2 ** 2 * (1 - s)
                + math.pi * (self.r1 + self.r2) * c * length * c)

    def sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 3) points uniform by area on the surface (the two sphere caps and the tangent cone)."""
        a, b, u, length, s, c = self._consts()
        e1 = _any_perpendicular(u)
        e2 = np.cross(u, e1)
        areas = np.array([2 * math.pi * self.r1 ** 2 * (1 + s), 2 * math.pi * self.r2 ** 2 * (1 - s),
                          math.pi * (self.r1 + self.r2) * c * length * c])
        piece = rng.choice(3, size=n, p=areas / areas.sum())
        theta = rng.uniform(0.0, 2 * math.pi, n)
        ring = np.cos(theta)[:, None] * e1 + np.sin(theta)[:, None] * e2
        w = rng.uniform(0.0, 1.0, n)
        out = np.empty((n, 3))
        # Archimedes: the axial coordinate of a uniform sphere point is uniform.
        for k, (centre, r, lo, hi) in enumerate(((a, self.r1, -1.0, s), (b, self.r2, s, 1.0))):
            m = piece == k
            h = lo + (hi - lo) * w[m]
            out[m] = centre + r * (h[:, None] * u + np.sqrt(np.clip(1 - h * h, 0, None))[:, None] * ring[m])
        m = piece == 2
        # Along the generating line the circle radius grows linearly: inverse CDF of a density prop. to it.
        rho1, rho2 = self.r1 * c, self.r2 * c
        v = _linear_density_icdf(w[m], rho1, rho2)
        normal = c * ring[m] + s * u
        p1 = a + self.r1 * normal
        p2 = b + self.r2 * normal
        out[m] = (1 - v)[:, None] * p1 + v[:, None] * p2
        return out

    def aabb(self, rot: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pa, pb = rot @ np.asarray(self.a, float) + trans, rot @ np.asarray(self.b, float) + trans
        lo = np.minimum(pa - self.r1, pb - self.r2)
        hi = np.maximum(pa + self.r1, pb + self.r2)
        return lo, hi

    def support(self, direction: np.ndarray) -> np.ndarray:
        """The surface point furthest along ``direction`` (local frame)."""
        d = direction / np.linalg.norm(direction)
        pa = np.asarray(self.a, float) + self.r1 * d
        pb = np.asarray(self.b, float) + self.r2 * d
        return pa if pa @ d >= pb @ d else pb


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid (in its part's frame) with centre ``c`` and semi-axes ``r``."""

    c: tuple[float, float, float]
    r: tuple[float, float, float]

    def __post_init__(self):
        if min(self.r) <= 0:
            raise ValueError(f"ellipsoid semi-axes must be > 0; got {self.r}")

    def sdf(self, q: np.ndarray) -> np.ndarray:
        return self.sdf_grad(q, grad=False)[0]

    def sdf_grad(self, q: np.ndarray, grad: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        r = np.asarray(self.r, float)
        p = q - np.asarray(self.c, float)
        k0 = np.linalg.norm(p / r, axis=1)
        k1 = np.linalg.norm(p / (r * r), axis=1)
        centre = k1 < 1e-12
        k1s = np.where(centre, 1.0, k1)
        k0s = np.where(centre, 1.0, k0)
        d = np.where(centre, -r.min(), k0 * (k0 - 1.0) / k1s)
        if not grad:
            return d, None
        dk0 = (p / (r * r)) / k0s[:, None]
        dk1 = (p / r ** 4) / k1s[:, None]
        g = ((2 * k0 - 1)[:, None] * dk0 * k1s[:, None] - (k0 * (k0 - 1))[:, None] * dk1) / (k1s ** 2)[:, None]
        g[centre] = (0.0, 0.0, 1.0)
        return d, g

    def area(self) -> float:
        # Knud Thomsen's approximation (relative error < 1.1 %): only used to split samples between parts.
        a, b, c = self.r
        pw = 1.6075
        return 4 * math.pi * (((a * b) ** pw + (a * c) ** pw + (b * c) ** pw) / 3) ** (1 / pw)

    def sample_surface(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 3) points uniform by area: sphere points mapped by the axes, accepted by the area element."""
        r = np.asarray(self.r, float)
        bound = max(r[1] * r[2], r[0] * r[2], r[0] * r[1])
        out = np.empty((0, 3))
        while len(out) < n:
            m = max(2 * (n - len(out)), 64)
            v = rng.normal(size=(m, 3))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            element = np.sqrt((r[1] * r[2] * v[:, 0]) ** 2 + (r[0] * r[2] * v[:, 1]) ** 2
                              + (r[0] * r[1] * v[:, 2]) ** 2)
            keep = rng.uniform(0.0, bound, m) < element
            out = np.concatenate([out, v[keep] * r + np.asarray(self.c, float)])
        return out[:n]

    def aabb(self, rot: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centre = rot @ np.asarray(self.c, float) + trans
        half = np.sqrt(((rot * np.asarray(self.r, float)) ** 2).sum(axis=1))
        return centre - half, centre + half

    def support(self, direction: np.ndarray) -> np.ndarray:
        r = np.asarray(self.r, float)
        d = np.asarray(direction, float)
        return np.asarray(self.c, float) + (r * r * d) / np.linalg.norm(r * d)


Primitive = RoundCone | Ellipsoid


def _any_perpendicular(u: np.ndarray) -> np.ndarray:
    helper = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    v = np.cross(u, helper)
    return v / np.linalg.norm(v)


def _linear_density_icdf(w: np.ndarray, rho1: float, rho2: float) -> np.ndarray:
    """Inverse CDF on [0, 1] of the density proportional to rho1 + (rho2 - rho1) v."""
    dr = rho2 - rho1
    if abs(dr) < 1e-12 * max(rho1, rho2):
        return w
    total = rho1 + 0.5 * dr
    # solve rho1 v + dr v^2 / 2 = w * total
    return (-rho1 + np.sqrt(rho1 * rho1 + 2 * dr * w * total)) / dr


def batch_consts(prims: list[Primitive]) -> dict[str, np.ndarray]:
    """Stacked constants of same-kind primitives for ``batch_sdf_grad``."""
    if all(isinstance(p, RoundCone) for p in prims):
        consts = [p._consts() for p in prims]
        out = {k: np.array([c[i] for c in consts], dtype=float) for i, k in enumerate("abuLsc")}
        out["r1"] = np.array([p.r1 for p in prims])
        out["r2"] = np.array([p.r2 for p in prims])
        out["perp"] = np.array([_any_perpendicular(c[2]) for c in consts])
        return {"kind": "cone", **out}
    if all(isinstance(p, Ellipsoid) for p in prims):
        return {"kind": "ellipsoid", "c": np.array([p.c for p in prims], dtype=float),
                "r": np.array([p.r for p in prims], dtype=float)}
    raise ValueError("batch_consts needs primitives of one kind")


def batch_sdf_grad(consts: dict[str, np.ndarray], q: np.ndarray, grad: bool = True):
    """Distances (P, n) and local gradients (P, n, 3) of P same-kind primitives at local points q (P, n, 3).

    Same values as each primitive's ``sdf_grad``, in one vectorised pass (for small n, where the
    per-primitive loop would be dominated by call overhead).
    """
    if consts["kind"] == "ellipsoid":
        r = consts["r"][:, None, :]
        p = q - consts["c"][:, None, :]
        k0 = np.linalg.norm(p / r, axis=-1)
        k1 = np.linalg.norm(p / (r * r), axis=-1)
        centre = k1 < 1e-12
        k1s = np.where(centre, 1.0, k1)
        k0s = np.where(centre, 1.0, k0)
        d = np.where(centre, -r.min(axis=-1), k0 * (k0 - 1.0) / k1s)
        if not grad:
            return d, None
        dk0 = (p / (r * r)) / k0s[..., None]
        dk1 = (p / r ** 4) / k1s[..., None]
        g = ((2 * k0 - 1)[..., None] * dk0 * k1s[..., None] - (k0 * (k0 - 1))[..., None] * dk1) / (k1s ** 2)[..., None]
        return d, np.where(centre[..., None], np.array([0.0, 0.0, 1.0]), g)
    a, b, u = (consts[k][:, None, :] for k in "abu")
    length, s, c, r1, r2 = (consts[k][:, None] for k in ("L", "s", "c", "r1", "r2"))
    pa = q - a
    y = (pa * u).sum(-1)
    pa2 = (pa * pa).sum(-1)
    x = np.sqrt(np.maximum(pa2 - y * y, 0.0))
    near_a = x * s - y * c > 0.0
    near_b = (y - length) * c - x * s > 0.0
    qb = pa - (b - a)
    na, nb = np.sqrt(pa2), np.sqrt((qb * qb).sum(-1))
    d = np.where(near_b, nb - r2, np.where(near_a, na - r1, x * c + y * s - r1))
    if not grad:
        return d, None
    with np.errstate(invalid="ignore", divide="ignore"):
        gs = (c / x)[..., None] * (pa - y[..., None] * u) + s[..., None] * u
        ga = pa / na[..., None]
        gb = qb / nb[..., None]
    g = np.where(near_b[..., None], gb, np.where(near_a[..., None], ga, gs))
    bad = ~np.isfinite(g).all(axis=-1, keepdims=True)
    fallback = c[..., None] * consts["perp"][:, None, :] + s[..., None] * u
    return d, np.where(bad, fallback, g)
