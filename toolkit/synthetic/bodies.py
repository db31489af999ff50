"""Procedural moving bodies with exact 4D ground truth, written in the D-FAUST / Occupancy Flow layout.

A body is 18 smooth solids (pelvis, belly, torso, chest, neck, head, upper/lower arms, hands,
upper/lower legs, feet): ellipsoids and round cones (convex hulls of two spheres), each rigid in its
part's frame, posed by a kinematic tree. The parts are joined into one closed surface by an n-ary
quadratic smooth minimum of their signed distances,

    F = m - k/2 * S / (1 + S),   S = sum_j h_j^2 - 1,   m = min_j d_j,   h_j = max(k - (d_j - m), 0) / k,

which equals the plain union wherever no two parts are within the blend width ``k`` of each other, is
C1 except where three parts blend at once, and never lies more than k/2 below the union (so distant
parts can be skipped exactly). ``F < 0`` is the body: occupancy is exact at any point and
any (fractional) frame. Motions (see ``MOTIONS``: D-FAUST's 14 motion names, with their typical periods
at 60 fps) are smooth periodic functions of joint angles and root translation, performed from
D-FAUST's standing rest pose (arms hanging a little away from the torso, feet apart and turned out).
The foot that carries the body keeps its place on the ground; hops lift both.

Identities are D-FAUST-like (``random_identity``): adult proportions (joint heights, segment lengths,
hand and foot sizes as fractions of the height), heights 1.5-1.95 m and builds from thin to heavy. The
build moves limb girth, torso depth, belly and hip width together (with some independent spread), so
inside volumes run from about 0.06 to 0.18 m^3, about 1.0-2.1 % (1.6 % on average) of the
[-0.55, 0.55]^3 evaluation box of a standing frame (real D-FAUST subjects: 0.09-0.16 m^3, 1.8-2.1 %).
The arms of heavy bodies hang further out, just clear of the belly, as people's do.

Time is measured in frames (floats allowed). A sequence of F frames spans ``t = frame / (F - 1)`` in
[0, 1], the Occupancy Flow time of a 17-frame window.

Surface points with exact correspondences (``surface_points`` / ``points_at``): point k is drawn once,
area-uniformly on the parts' surfaces where no other part covers them in a fixed rest pose (arms away
from the torso), and its identity is (body part, spot on that part's own primitive in the part's frame).
In every frame the spot moves rigidly with its part; within ``SKIN_WIDTH`` of a parent/child joint it
is skinned instead (turned about the joint by a fraction, smooth in the rest position, of the child's
rotation). Where the smooth union is not the part's own surface (another part within the blend width,
or a skinned point) it is then projected onto F = 0 along grad F (damped Newton). So index k lies on the
surface in every frame (|F| < 1e-7 m), moves rigidly away from joints and other parts, and smoothly
near them. Points that some frame buries in a blend web or deep inside another part (the projection
fails, or would move them more than ``MAX_PROJECTION``) are dropped when sampling, never patched: the
sample is valid for every frame it was drawn for, and those regions are a little sparser.

Dataset (``write_body_dataset``): ``<out>/<category>/<identity>_<motion>/{points_seq,pcl_seq,mesh_seq}``
with the Occupancy Flow file formats (written by ``toolkit.oflow.data``), a per-sequence ``body.json`` from
which ``load_body`` rebuilds the exact field, split lists and ``bodies.json`` (see ``write_body_dataset``).
Meshes (``mesh_seq/%08d.ply``) are marching cubes of F on a grid fitted to each frame's box, in world
units (metres), like D-FAUST's registrations; per-frame normalisation is loc = bounding-box centre,
scale = largest bounding-box side (oflow.md section 3).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from toolkit.io import DataError, atomic_save_text
from toolkit.synthetic._bodies_motions import DOFS, MOTIONS, REST_POSE, STAND, get_motion, motion_angles
from toolkit.synthetic._bodies_shapes import Ellipsoid, Primitive, RoundCone, batch_consts, batch_sdf_grad

if TYPE_CHECKING:  # meshing imports torch; the field itself does not need it
    from toolkit.geometry.meshing import Mesh

__all__ = [
    "HELD_OUT_MOTION",
    "MOTIONS",
    "PARTS",
    "Body",
    "Identity",
    "Normalization",
    "SurfaceSample",
    "dataset_plan",
    "load_body",
    "load_pcl_sample",
    "random_identity",
    "write_body_dataset",
]

PARTS = (
    "pelvis", "belly", "torso", "chest", "neck", "head",
    "upper_arm_l", "lower_arm_l", "hand_l", "upper_arm_r", "lower_arm_r", "hand_r",
    "upper_leg_l", "lower_leg_l", "foot_l", "upper_leg_r", "lower_leg_r", "foot_r",
)
"""Body parts in kinematic order (every parent comes before its children); +x is the body's left. The
belly moves with the pelvis, the chest (upper chest and shoulder girdle, carrying neck and arms) turns
on the torso (rib cage and waist)."""
_PARENT = (-1, 0, 0, 2, 3, 4, 3, 6, 7, 3, 9, 10, 0, 12, 13, 0, 15, 16)
_FEET = (PARTS.index("foot_l"), PARTS.index("foot_r"))

HELD_OUT_MOTION = "running_on_spot"
"""The motion that only appears in ``test_new_motion.lst``. Running on the spot combines movements the
other motions show separately (knee lifts as in ``knees``, bounces as in the hops, arm swings), so the
split measures generalisation to a new combination; the real demo's motion (light hopping) stays seen."""

BLEND_WIDTH = 0.015
"""Smooth-union width k, in units of body height."""
SKIN_WIDTH = 0.02
"""Width of the skinned zone around joints for surface points, in units of body height."""
GROUND_SOFTNESS = 0.004
"""Softness of the lowest-foot-point soft minimum that puts the feet on the ground, in body heights."""
SURFACE_TOL = 1e-7
"""|F| (metres) that projected surface points must reach."""
MAX_PROJECTION = 0.03
"""Largest projection of a skinned point onto the surface, in body heights; beyond it the point is dropped."""
ARM_MARGIN = 0.008
"""Gap (body heights) kept between the hanging arms and the trunk in the standing pose."""
_FULL = {"n_points": 100_000, "n_pcl": 100_000, "mesh_resolution": 128}
_QUICK = {"n_points": 20_000, "n_pcl": 20_000, "mesh_resolution": 96}
BOX_HALF = 0.55  # points_seq box half-size (oflow.md section 3: padding 0.1 around [-0.5, 0.5])


@dataclass(frozen=True)
class Identity:
    """Body proportions; lengths in metres, ratios relative to ``height``.

    The defaults are an average build; ``random_identity`` draws thin to heavy ones.
    """

    id: int = 10000
    """Identity number, used in sequence names (like D-FAUST's subject ids)."""
    height: float = 1.75
    """Top of the head above the ground in the zero pose (arms down, legs straight)."""
    leg_ratio: float = 0.47
    """Hip joint to ankle / height."""
    arm_ratio: float = 1.0
    """Scale of arm and hand lengths."""
    shoulder_width: float = 0.23
    """Distance between the shoulder joints / height."""
    hip_width: float = 0.2
    """Pelvis (hip) width / height."""
    thickness: float = 1.0
    """Scale of limb girth (arm, leg and neck radii)."""
    head_size: float = 1.0
    """Scale of the head."""
    torso_depth: float = 1.0
    """Scale of the depth (front to back) of chest, waist, belly and buttocks."""
    belly: float = 0.3
    """Belly and waist: 0 flat and slim, 1 round and wide."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Identity:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown identity keys {unknown}; valid: {sorted(names)}")
        return cls(**d)


def random_identity(rng: np.random.Generator, id: int = 10000) -> Identity:
    """Draw a D-FAUST-like body from ``rng``: adult proportions, heights 1.5-1.95 m, thin to heavy.

    One build value b, uniform in [0, 1] (thin to heavy), moves girth, torso depth, belly and hip width
    together; each also gets its own small spread, so builds are not one-dimensional. Inside volumes
    (see the module docstring) run from about 0.06 m^3 (short and thin) to 0.18 m^3 (tall and heavy).

    Args:
        rng: the generator (same state, same identity).
        id: the identity number.

    Returns:
        The identity.
    """
    u = rng.uniform
    b = u(0.0, 1.0) ** 0.8  # a few more full builds than thin ones, as among D-FAUST's subjects

    def spread(centre: float, sd: float, lo: float, hi: float) -> float:
        return float(np.clip(centre + sd * rng.standard_normal(), lo, hi))

    return Identity(id=int(id), height=u(1.5, 1.95), leg_ratio=u(0.44, 0.49), arm_ratio=u(0.94, 1.06),
                    shoulder_width=spread(0.215 + 0.025 * b, 0.008, 0.2, 0.25),
                    hip_width=spread(0.19 + 0.05 * b, 0.008, 0.18, 0.25),
                    thickness=spread(0.94 + 0.4 * b, 0.04, 0.86, 1.4), head_size=u(0.93, 1.07),
                    torso_depth=spread(0.94 + 0.4 * b, 0.04, 0.86, 1.4),
                    belly=spread(b * b, 0.08, 0.0, 1.0))


class SurfaceSample(NamedTuple):
    """Surface points with fixed identities (see the module docstring)."""

    part: np.ndarray
    """(n,) int64 index into ``PARTS`` of the part each point belongs to."""
    local: np.ndarray
    """(n, 3) float64 rest position in that part's local frame (metres)."""
    blend_part: np.ndarray
    """(n,) int64 the adjacent part it is skinned with, or -1 (rigid with ``part``)."""
    blend_weight: np.ndarray
    """(n,) float64 weight in [0, 0.5] of ``blend_part`` (0 for rigid points)."""


class Normalization(NamedTuple):
    """Per-frame normalisation: world = loc + scale * normalised (values already rounded to float16)."""

    loc: np.ndarray
    """(3,) bounding-box centre."""
    scale: float
    """Largest bounding-box side."""


class PartPose(NamedTuple):
    rotations: np.ndarray
    """(P, 3, 3) part-to-world rotations."""
    translations: np.ndarray
    """(P, 3) part origins in world coordinates."""


class Body:
    """One identity performing one motion: the exact occupancy field, surface samples and meshes.

    Args:
        identity: body proportions.
        motion: a key of ``MOTIONS``.
        frames: number of frames F of the sequence (t = frame / (F - 1)).
        period: motion period in frames at 60 fps (default: the motion's typical ``Motion.period``).
        phase: motion phase at frame 0, radians.
        amplitude: scale of the motion's joint angles and jumps (1 = nominal).
    """

    def __init__(self, identity: Identity, motion: str, *, frames: int = 17, period: float | None = None,
                 phase: float = 0.0, amplitude: float = 1.0):
        period = get_motion(motion).period if period is None else period
        if int(frames) < 1:
            raise ValueError(f"frames must be >= 1; got {frames}")
        if not period > 0:
            raise ValueError(f"period must be > 0 frames; got {period}")
        self.identity, self.motion = identity, motion
        self.frames, self.period = int(frames), float(period)
        self.phase, self.amplitude = float(phase), float(amplitude)
        self.name = f"{identity.id}_{motion}"
        H = identity.height
        self.blend = BLEND_WIDTH * H
        self._offsets, self._prims, self._root = _skeleton(identity)
        self._children = [[c for c, p in enumerate(_PARENT) if p == i] for i in range(len(PARTS))]
        kinds = ([i for i, p in enumerate(self._prims) if isinstance(p, RoundCone)],
                 [i for i, p in enumerate(self._prims) if isinstance(p, Ellipsoid)])
        self._batches = [(np.array(ids), batch_consts([self._prims[i] for i in ids])) for ids in kinds if ids]
        self._poses: dict[float, PartPose] = {}
        self._bboxes: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self._arm_out = 0.0  # extra shoulder abduction of every pose (set once, from the standing pose)
        self._arm_out = self._arm_clearance()
        self._rest = self._forward(REST_POSE, ground=False)
        # standing-pose ankle positions: the supporting foot stays there (see ``Motion.planted``)
        self._stand_ankles = self._forward(STAND, ground=False).translations[list(_FEET)].copy()

    # ---------------------------------------------------------------------------------------------
    # Pose
    # ---------------------------------------------------------------------------------------------

    def time_to_frame(self, t: float) -> float:
        """Sequence time t in [0, 1] -> frame index (float)."""
        return float(t) * (self.frames - 1)

    def angles(self, frame: float) -> dict[str, float]:
        """Every degree of freedom (see ``_bodies_motions.DOFS``) at ``frame``."""
        phase = self.phase + 2.0 * math.pi * float(frame) / self.period
        return motion_angles(self.motion, phase, self.amplitude)

    def pose(self, frame: float) -> PartPose:
        """Part-to-world transforms at ``frame`` (cached)."""
        key = float(frame)
        if key not in self._poses:
            if len(self._poses) > 256:
                self._poses.clear()
            self._poses[key] = self._forward(self.angles(key), ground=True)
        return self._poses[key]

    # ---------------------------------------------------------------------------------------------
    # Field
    # ---------------------------------------------------------------------------------------------

    def sdf(self, points: np.ndarray, frame: float) -> np.ndarray:
        """Smooth-union signed distance F (metres, negative inside) at world ``points`` (N, 3) -> (N,)."""
        points = _check_points(points)
        return self._field(points, self.pose(frame))

    def occupancy(self, points: np.ndarray, frame: float) -> np.ndarray:
        """Exact inside test ``sdf < 0`` at world ``points`` (N, 3) -> (N,) bool."""
        points = _check_points(points)
        return self._field(points, self.pose(frame), reach=self._reach(0.0)) < 0.0

    def sdf_fn(self, frame: float, *, loc: np.ndarray | None = None,
               scale: float | None = None) -> Callable[[Any], Any]:
        """F at ``frame`` as a callable field on (N, 3) points.

        With ``loc``/``scale`` the callable takes normalised points (world = loc + scale * p) and returns
        F / scale. It accepts numpy arrays or torch tensors and answers in kind (a float32 tensor on the
        input's device for torch), so meshing and IoU code can call it like a network's field.
        """
        pose = self.pose(frame)
        loc_ = np.zeros(3) if loc is None else np.asarray(loc, dtype=np.float64).reshape(3)
        s = 1.0 if scale is None else float(scale)

        def field(p):
            return _in_kind(p, lambda x: self._field(loc_ + s * x, pose) / s)

        return field

    def occupancy_fn(self, frame: float, *, loc: np.ndarray | None = None,
                     scale: float | None = None) -> Callable[[Any], Any]:
        """Exact occupancy at ``frame`` as a callable on (N, 3) points -> (N,) bool (see ``sdf_fn``)."""
        pose = self.pose(frame)
        loc_ = np.zeros(3) if loc is None else np.asarray(loc, dtype=np.float64).reshape(3)
        s = 1.0 if scale is None else float(scale)
        reach = self._reach(0.0)

        def occupancy(p):
            return _in_kind(p, lambda x: self._field(loc_ + s * x, pose, reach) < 0.0)

        return occupancy

    # ---------------------------------------------------------------------------------------------
    # Surface points with correspondences
    # ---------------------------------------------------------------------------------------------

    def surface_points(self, n: int, seed: int | list[int] | np.random.Generator = 0, *,
                       frames: np.ndarray | None = None) -> SurfaceSample:
        """Draw ``n`` surface points that stay on the surface in every frame of ``frames``.

        Args:
            n: number of points.
            seed: seed (an int, a list of ints, or a Generator) of the draw; same seed, same points.
                ``write_body_dataset`` stores the one behind each ``pcl_seq`` in ``body.json``.
            frames: frames the points must be valid in (default: every frame 0..F-1 of the sequence).

        Returns:
            The sample; ``points_at(sample, frame)`` gives its (n, 3) world positions.
        """
        return self._surface_sample(n, seed, frames)[0]

    def points_at(self, sample: SurfaceSample, frame: float) -> np.ndarray:
        """(n, 3) world positions of ``sample`` at ``frame``: point k is the same surface point in every frame."""
        return self._place(sample, frame)[0]

    # ---------------------------------------------------------------------------------------------
    # Boxes, normalisation, meshes
    # ---------------------------------------------------------------------------------------------

    def bbox(self, frame: float) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box (lo (3,), hi (3,)) of the surface F = 0 at ``frame``, in metres.

        Each face is found by projected gradient ascent on the surface from the parts' extreme points,
        so it includes what the smooth blend adds beyond the parts.
        """
        key = float(frame)
        if key not in self._bboxes:
            if len(self._bboxes) > 256:
                self._bboxes.clear()
            ext = self._extremes(np.concatenate([-np.eye(3), np.eye(3)]), self.pose(key))
            self._bboxes[key] = (-ext[:3], ext[3:])
        lo, hi = self._bboxes[key]
        return lo.copy(), hi.copy()

    def normalization(self, frame: float) -> Normalization:
        """loc = bbox centre, scale = largest bbox side, both rounded to float16 as the files store them."""
        lo, hi = self.bbox(frame)
        loc = np.float16(0.5 * (lo + hi)).astype(np.float64)
        scale = float(np.float16((hi - lo).max()))
        return Normalization(loc, scale)

    def mesh(self, frame: float, *, resolution: int = 128) -> Mesh:
        """Marching-cubes mesh of F = 0 at ``frame``, world coordinates (metres).

        The grid spans the frame's bounding box plus two cells, with ``resolution`` cells along its
        largest side and cubic cells. Each part's distance is only evaluated in its own padded box (the
        field is exact wherever |F| is below a few cells), which keeps 128 cells at about 0.1 s.

        Returns:
            ``toolkit.geometry.meshing.Mesh`` (vertices float32, faces int64, outward normals).
        """
        from toolkit.geometry.meshing import marching_cubes

        if resolution < 8:
            raise ValueError(f"mesh resolution must be >= 8 cells; got {resolution}")
        pose = self.pose(frame)
        lo, hi = self.bbox(frame)
        voxel = float((hi - lo).max()) / resolution
        lo = lo - 2.0 * voxel
        cells = np.ceil((hi + 2.0 * voxel - lo) / voxel).astype(int)
        hi = lo + cells * voxel
        values = -self._grid_field(lo, voxel, cells + 1, pose)
        return marching_cubes(values, 0.0, bounds=np.stack([lo, hi], axis=1))

    # ---------------------------------------------------------------------------------------------
    # Serialisation
    # ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity.to_dict(), "motion": self.motion, "frames": self.frames,
                "period": self.period, "phase": self.phase, "amplitude": self.amplitude}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Body:
        return cls(Identity.from_dict(d["identity"]), d["motion"], frames=d["frames"], period=d["period"],
                   phase=d["phase"], amplitude=d["amplitude"])

    def __repr__(self) -> str:
        return (f"Body({self.name!r}, frames={self.frames}, period={self.period:.3g}, "
                f"amplitude={self.amplitude:.3g}, height={self.identity.height:.3f})")

    # ---------------------------------------------------------------------------------------------
    # Internals
    # ---------------------------------------------------------------------------------------------

    def _arm_clearance(self, margin: float = ARM_MARGIN) -> float:
        """Extra shoulder abduction (degrees) that keeps the standing pose's arms ``margin`` (in body
        heights) clear of pelvis, belly and torso: heavy bodies hold their arms further out."""
        H = self.identity.height
        trunk = [PARTS.index(n) for n in ("pelvis", "belly", "torso")]
        # points on the left arm's axis (part frames) below the armpit, and the arm's radius there
        axis, radius = [], []
        for name, start in (("upper_arm_l", 0.6), ("lower_arm_l", 0.0)):
            prim = self._prims[PARTS.index(name)]
            for v in np.linspace(start, 1.0, 8):
                axis.append((PARTS.index(name), (1 - v) * np.asarray(prim.a) + v * np.asarray(prim.b)))
                radius.append((1 - v) * prim.r1 + v * prim.r2)
        hand = self._prims[PARTS.index("hand_l")]
        for v in np.linspace(-0.8, 0.8, 5):
            axis.append((PARTS.index("hand_l"), np.asarray(hand.c) + v * np.array([0.0, hand.r[1], 0.0])))
            radius.append(hand.r[0])
        part = np.array([p for p, _ in axis])
        local, radius = np.stack([x for _, x in axis]), np.array(radius)

        def gap(extra: float) -> float:
            pose = self._forward({**STAND, "shoulder_l_abd": STAND["shoulder_l_abd"] + extra}, ground=False)
            world = _apply(pose, part, local)
            d = np.min([self._eval_part(i, world, pose, False)[0] for i in trunk], axis=0)
            return float((d - radius).min()) - margin * H

        if gap(0.0) >= 0.0:
            return 0.0
        lo, hi = 0.0, 45.0
        for _ in range(20):  # bisection to about 0.05 degrees
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if gap(mid) < 0.0 else (lo, mid)
        return hi

    def _forward(self, angles: dict[str, float], *, ground: bool) -> PartPose:
        a = dict.fromkeys(DOFS, 0.0)
        a.update(angles)
        a["shoulder_l_abd"] += self._arm_out
        a["shoulder_r_abd"] += self._arm_out
        H = self.identity.height
        local = _joint_rotations(a)
        P = len(PARTS)
        rot, trans = np.empty((P, 3, 3)), np.empty((P, 3))
        rot[0], trans[0] = local[0], self._root.copy()
        for i in range(1, P):
            p = _PARENT[i]
            rot[i] = rot[p] @ local[i]
            trans[i] = trans[p] + rot[p] @ self._offsets[i]
        if ground:
            shift = np.zeros(3)
            # feet on the ground: a soft minimum (smooth in time) of the feet's lowest points goes to y = 0,
            # then the motion's jump is added
            down = np.array([0.0, -1.0, 0.0])
            ends = np.array([(rot[f] @ self._prims[f].support(rot[f].T @ down) + trans[f])[1] for f in _FEET])
            kappa = GROUND_SOFTNESS * H
            soft_low = ends.min() - kappa * math.log(np.exp(-(ends - ends.min()) / kappa).sum())
            shift[1] = -soft_low + a["root_y"] * H
            if get_motion(self.motion).planted:
                # the supporting foot (a weighted mean of both, smooth in time) keeps its standing place
                w_left = 0.5 * (1.0 + min(1.0, max(-1.0, a["support"])))
                moved = trans[list(_FEET)] - self._stand_ankles
                shift[[0, 2]] = -(w_left * moved[0] + (1.0 - w_left) * moved[1])[[0, 2]]
            shift[0] += a["root_x"] * H
            shift[2] += a["root_z"] * H
            trans = trans + shift
        return PartPose(rot, trans)

    def _part_values(self, x: np.ndarray, pose: PartPose, grad: bool = False, reach: float | None = None):
        """Part distances (and world gradients) at world points x, sparsely.

        With ``reach``, a part is only evaluated at points inside its box grown so that every point with
        part distance < ``reach`` is inside (see ``_reach`` for what that keeps exact).

        Returns:
            A list of (part, idx, d, g): idx the evaluated point indices (None: all), d (len,) the
            distances, g (len, 3) the gradients or None.
        """
        n = x.shape[0]
        if n <= _SMALL_BATCH:
            return self._part_values_batched(x, pose, grad)
        boxes = self._boxes(pose, reach) if reach is not None else None
        cols = [np.ascontiguousarray(x[:, a]) for a in range(3)] if boxes is not None else None
        out = []
        for i in range(len(PARTS)):
            idx = None
            if boxes is not None:
                (x0, y0, z0), (x1, y1, z1) = boxes[i]
                inside = (cols[0] >= x0) & (cols[0] <= x1) & (cols[1] >= y0) & (cols[1] <= y1)
                inside &= (cols[2] >= z0) & (cols[2] <= z1)
                idx = np.flatnonzero(inside)
                if idx.size == 0:
                    continue
                if idx.size == n:
                    idx = None
            d, g = self._eval_part(i, x if idx is None else x[idx], pose, grad)
            out.append((i, idx, d, g))
        return out

    def _part_values_batched(self, x: np.ndarray, pose: PartPose, grad: bool):
        """Every part at every point, one vectorised pass per primitive kind (no culling)."""
        out = []
        for ids, consts in self._batches:
            R, t = pose.rotations[ids], pose.translations[ids]
            q = np.einsum("nk,pkj->pnj", x, R) - np.einsum("pk,pkj->pj", t, R)[:, None, :]
            d, g = batch_sdf_grad(consts, q, grad)
            if grad:
                g = np.einsum("pnj,pij->pni", g, R)
            out += [(int(i), None, d[j], g[j] if grad else None) for j, i in enumerate(ids)]
        return sorted(out, key=lambda v: v[0])

    def _distances(self, x: np.ndarray, pose: PartPose, grad: bool = False, reach: float | None = None):
        """Dense (P, N) part distances (culled entries ``_FAR``) and (P, N, 3) gradients or None."""
        P, n = len(PARTS), x.shape[0]
        D = np.full((P, n), _FAR)
        G = np.zeros((P, n, 3)) if grad else None
        for i, idx, d, g in self._part_values(x, pose, grad, reach):
            sel = slice(None) if idx is None else idx
            D[i, sel] = d
            if grad:
                G[i, sel] = g
        return D, G

    def _boxes(self, pose: PartPose, reach: float) -> np.ndarray:
        """(P, 2, 3) world boxes holding every point whose part distance is below ``reach``."""
        out = np.empty((len(PARTS), 2, 3))
        for i, prim in enumerate(self._prims):
            R, t = pose.rotations[i], pose.translations[i]
            if isinstance(prim, Ellipsoid):
                # the ellipsoid's distance bound satisfies f >= (k0 - 1) * r_min outside, so f < reach
                # implies k0 < 1 + reach / r_min: a scaled ellipsoid
                grown = Ellipsoid(prim.c, tuple(np.asarray(prim.r) * (1.0 + reach / min(prim.r))))
                out[i] = grown.aabb(R, t)
            else:
                lo, hi = prim.aabb(R, t)
                out[i] = lo - reach, hi + reach
        return out

    def _eval_part(self, i: int, x: np.ndarray, pose: PartPose, grad: bool):
        R, t = pose.rotations[i], pose.translations[i]
        d, g = self._prims[i].sdf_grad((x - t) @ R, grad=grad)   # world -> local: R^T (x - t)
        return d, (g @ R.T if grad else None)

    def _combine(self, n: int, values, grad: bool = False):
        """Smooth union F (n,), its gradient (n, 3) or None, and the nearest-part distance m (n,).

        dF/dd_j = g'(S) h_j for every part but the nearest o (g(S) = 2S / (1 + S) scaled by k/4), and
        1 - sum of those for o, so grad F = g_o + sum_j g'(S) h_j (g_j - g_o).
        """
        k = self.blend
        if values and all(idx is None for _, idx, _, _ in values):
            return self._combine_dense(np.stack([v[2] for v in values]),
                                       np.stack([v[3] for v in values]) if grad else None)
        m = np.full(n, _FAR)
        g_min = np.zeros((n, 3)) if grad else None
        for _, idx, d, g in values:
            if idx is None:
                closer = np.flatnonzero(d < m)
                m[closer] = d[closer]
                if grad:
                    g_min[closer] = g[closer]
            else:
                closer = d < m[idx]
                m[idx[closer]] = d[closer]
                if grad:
                    g_min[idx[closer]] = g[closer]
        S = np.full(n, -1.0)                             # the nearest part itself adds h = 1
        hs = []
        for _, idx, d, _ in values:
            sel = slice(None) if idx is None else idx
            h = np.clip(1.0 - (d - m[sel]) / k, 0.0, None)
            S[sel] += h * h
            hs.append(h)
        S = np.maximum(S, 0.0)                           # points where every part was culled
        F = m - 0.5 * k * S / (1.0 + S)
        if not grad:
            return F, None, m
        slope = 1.0 / (1.0 + S) ** 2
        G = g_min.copy()
        for (_, idx, _, g), h in zip(values, hs):
            sel = slice(None) if idx is None else idx
            G[sel] += (h * slope[sel])[:, None] * (g - g_min[sel])
        return F, G, m

    def _combine_dense(self, D: np.ndarray, G: np.ndarray | None):
        """``_combine`` for dense part values D (P, n) and gradients G (P, n, 3)."""
        k = self.blend
        o = D.argmin(axis=0)
        cols = np.arange(D.shape[1])
        m = D[o, cols]
        h = np.clip(1.0 - (D - m) / k, 0.0, None)
        S = (h * h).sum(axis=0) - 1.0
        F = m - 0.5 * k * S / (1.0 + S)
        if G is None:
            return F, None, m
        g_min = G[o, cols]
        coef = h / (1.0 + S) ** 2
        return F, g_min + np.einsum("pn,pnc->nc", coef, G - g_min), m

    def _field(self, x: np.ndarray, pose: PartPose, reach: float | None = None) -> np.ndarray:
        """F at world points; exact (``reach`` None) or with sign-exact culling (see ``_reach``)."""
        if reach is None:
            return self._field_exact(x, pose)[0]
        return self._combine(len(x), self._part_values(x, pose, reach=reach))[0]

    def _field_grad(self, x: np.ndarray, pose: PartPose):
        return self._field_exact(x, pose, grad=True)

    def _field_exact(self, x: np.ndarray, pose: PartPose, grad: bool = False):
        """Exact F (and gradient): parts are first evaluated within 2k of their box; where the nearest
        kept part is farther than k, some culled part could still enter the blend, so those points are
        evaluated again with every part."""
        near = 2.0 * self.blend
        values = self._part_values(x, pose, grad=grad, reach=near)
        F, G, m = self._combine(len(x), values, grad)
        redo = np.flatnonzero(m + self.blend > near)
        if redo.size:
            F2, G2, _ = self._combine(redo.size, self._part_values(x[redo], pose, grad=grad), grad)
            F[redo] = F2
            if grad:
                G[redo] = G2
        return F, G

    def _reach(self, band: float) -> float:
        """Culling reach that keeps F exact where |F| < band and its sign exact everywhere.

        F >= m - k/2 (m = min part distance) and only parts with d < m + k enter F. If |F| < band,
        every such part has d < band + 3k/2; if the nearest part is culled, m >= reach and both the
        true and the culled F exceed reach - k/2 > band. Culled F is never below the true F.
        """
        return band + 1.5 * self.blend

    def _project(self, x: np.ndarray, pose: PartPose, *, max_iter: int = 40) -> tuple[np.ndarray, np.ndarray]:
        """Newton steps along grad F onto F = 0; returns the points and a converged mask."""
        x = x.copy()
        idx = np.arange(len(x))
        F, G = self._field_grad(x, pose)
        alpha = np.ones(len(x))
        ok = np.ones(len(x), dtype=bool)
        max_step = 0.01 * self.identity.height
        for _ in range(max_iter):
            # drop converged points, and fail points whose backtracking found no progress
            off = np.abs(F) >= SURFACE_TOL
            ok[idx[off & (alpha <= 0.02)]] = False
            keep = off & (alpha > 0.02)
            idx, F, G, alpha = idx[keep], F[keep], G[keep], alpha[keep]
            if idx.size == 0:
                break
            g2 = np.einsum("ij,ij->i", G, G)
            step = (F / np.maximum(g2, 1e-12))[:, None] * G
            length = np.linalg.norm(step, axis=1, keepdims=True)
            step *= alpha[:, None] * np.minimum(1.0, max_step / np.maximum(length, 1e-300))
            trial = x[idx] - step
            Ft, Gt = self._field_grad(trial, pose)
            # In sharp creases (armpits) a Newton step overshoots across the surface and bounces: there,
            # take the secant point of the bracketing segment instead when it is better.
            crossed = np.flatnonzero((np.sign(Ft) != np.sign(F)) & (np.abs(Ft) >= SURFACE_TOL))
            if crossed.size:
                f0, f1 = F[crossed], Ft[crossed]
                sec = x[idx[crossed]] - (f0 / (f0 - f1))[:, None] * step[crossed]
                Fs, Gs = self._field_grad(sec, pose)
                use = np.abs(Fs) < np.abs(f1)
                pick = crossed[use]
                trial[pick], Ft[pick], Gt[pick] = sec[use], Fs[use], Gs[use]
            # damped Newton: accept steps that shrink |F| enough, halve the others; points stuck inside a
            # web of blended parts (F has no zero nearby along its gradient) run out of step and fail
            better = np.abs(Ft) < 0.7 * np.abs(F)
            x[idx[better]] = trial[better]
            F[better], G[better] = Ft[better], Gt[better]
            alpha = np.where(better, np.minimum(1.0, 2.0 * alpha), 0.5 * alpha)
        ok[idx] = np.abs(F) < SURFACE_TOL
        return x, ok

    def _surface_sample(self, n: int, seed, frames) -> tuple[SurfaceSample, np.ndarray]:
        """The sample and its (len(frames), n, 3) world positions."""
        if int(n) < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        n = int(n)
        frames = np.arange(self.frames) if frames is None else np.atleast_1d(np.asarray(frames, dtype=np.float64))
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        samples, positions, have = [], [], 0
        for _ in range(20):
            cand = self._rest_candidates(int(1.02 * (n - have)) + 64, rng)
            placed = [self._place(cand, f) for f in frames]
            ok = np.logical_and.reduce([p[1] for p in placed])
            keep = np.flatnonzero(ok)[: n - have]
            samples.append(SurfaceSample(*(a[keep] for a in cand)))
            positions.append(np.stack([p[0][keep] for p in placed]))
            have += keep.size
            if have >= n:
                break
        else:
            raise RuntimeError(f"{self.name}: could not place {n} surface points valid in every frame")
        sample = SurfaceSample(*(np.concatenate(parts) for parts in zip(*samples)))
        return sample, np.concatenate(positions, axis=1)

    def _rest_candidates(self, m: int, rng: np.random.Generator) -> SurfaceSample:
        """``m`` area-uniform points on the rest-pose union surface, with skinning partner and weight."""
        batches, have = [], 0
        while have < m:
            batch = self._rest_batch(int(1.35 * (m - have)) + 64, rng)
            batches.append(batch)
            have += len(batch.part)
        return SurfaceSample(*(np.concatenate(a)[:m] for a in zip(*batches)))

    def _rest_batch(self, m: int, rng: np.random.Generator) -> SurfaceSample:
        rest = self._rest
        areas = np.array([p.area() for p in self._prims])
        part = rng.choice(len(PARTS), size=m, p=areas / areas.sum())
        local = np.empty((m, 3))
        for i, prim in enumerate(self._prims):
            idx = np.flatnonzero(part == i)
            if idx.size:
                local[idx] = prim.sample_surface(idx.size, rng)
        world = _apply(rest, part, local)
        width = SKIN_WIDTH * self.identity.height
        reach = width + self.blend  # culled parts are farther than any weight or ownership test looks
        D, _ = self._distances(world, rest, reach=reach)
        # keep points on the outside of every other part; on shared surfaces (joint spheres) the lower index wins
        eps = 1e-9 * self.identity.height
        others = D.copy()
        others[part, np.arange(m)] = np.inf
        tie_ok = np.arange(len(PARTS))[:, None] > part[None, :]
        outside = ((others > eps) | ((others >= -eps) & tie_ok)).all(axis=0)
        # the identity of a point is its spot on its own part's primitive (F = 0 there unless another
        # part is within the blend width; then each frame projects it)
        part, local, D = part[outside], local[outside], D[:, outside]
        # skinning partner: the adjacent part (parent or child) nearest to the point; the weight falls
        # smoothly from 1/2 on the shared crease to 0 at SKIN_WIDTH, so it is continuous across parts
        best_w = np.zeros(len(part))
        best_j = np.full(len(part), -1)
        for i in range(len(PARTS)):
            mine = part == i
            if not mine.any():
                continue
            for j in [*self._children[i], *([_PARENT[i]] if _PARENT[i] >= 0 else [])]:
                x = np.clip(1.0 - D[j, mine] / width, 0.0, 1.0)
                w = 0.5 * x * x * (3.0 - 2.0 * x)
                idx = np.flatnonzero(mine)
                better = w > best_w[idx]
                best_w[idx[better]] = w[better]
                best_j[idx[better]] = j
        best_j[best_w <= 0] = -1
        return SurfaceSample(part.astype(np.int64), local, best_j.astype(np.int64), best_w)

    def _place(self, sample: SurfaceSample, frame: float) -> tuple[np.ndarray, np.ndarray]:
        """Skinned then projected positions (n, 3) and a validity mask (n,)."""
        pose, rest = self.pose(frame), self._rest
        part, local = sample.part, sample.local
        x = _apply(pose, part, local)
        blended = np.flatnonzero(sample.blend_part >= 0)
        if blended.size:
            from scipy.spatial.transform import Rotation

            own, other = part[blended], sample.blend_part[blended]
            child_is_other = _PARENT_ARR[other] == own
            parent = np.where(child_is_other, own, other)
            child = np.where(child_is_other, other, own)
            w_child = np.where(child_is_other, sample.blend_weight[blended], 1.0 - sample.blend_weight[blended])
            q = _unapply(rest, parent, _apply(rest, own, local[blended]))
            out = np.empty((blended.size, 3))
            for c in np.unique(child):
                sel = child == c
                p = _PARENT[c]
                # the child's rotation relative to its parent, from rest to this frame, about the joint
                rel_t = pose.rotations[p].T @ pose.rotations[c]
                rel_r = rest.rotations[p].T @ rest.rotations[c]
                rotvec = Rotation.from_matrix(rel_t @ rel_r.T).as_rotvec()
                joint = self._offsets[c]
                turned = Rotation.from_rotvec(w_child[sel, None] * rotvec).apply(q[sel] - joint) + joint
                out[sel] = turned @ pose.rotations[p].T + pose.translations[p]
            x[blended] = out
        # A rigid point lies on its own part's surface; unless another part comes within the blend width
        # (inside that part's grown box) F is exactly its part distance, 0: only the rest need projecting.
        todo = sample.blend_part >= 0
        boxes = self._boxes(pose, self.blend)
        cols = [np.ascontiguousarray(x[:, a]) for a in range(3)]
        for j in range(len(PARTS)):
            (x0, y0, z0), (x1, y1, z1) = boxes[j]
            inside = (cols[0] >= x0) & (cols[0] <= x1) & (cols[1] >= y0) & (cols[1] <= y1)
            inside &= (cols[2] >= z0) & (cols[2] <= z1)
            todo |= inside & (part != j)
        idx = np.flatnonzero(todo)
        ok = np.ones(len(x), dtype=bool)
        if idx.size:
            projected, ok_idx = self._project(x[idx], pose)
            moved = np.linalg.norm(projected - x[idx], axis=1)
            ok[idx] = ok_idx & (moved <= MAX_PROJECTION * self.identity.height)
            x[idx] = projected
        return x, ok

    def _extremes(self, dirs: np.ndarray, pose: PartPose, iters: int = 12) -> np.ndarray:
        """max e.x over the surface F = 0 for each unit row e of ``dirs`` (E, 3) -> (E,).

        The surface lies within k/2 of the parts (F >= min_j d_j - k/2), so only parts whose extreme
        point is within k/2 of the best one can hold the answer; projected ascent on the surface starts
        from each of them.
        """
        sup = np.array([[pose.rotations[i] @ prim.support(pose.rotations[i].T @ e) + pose.translations[i]
                         for i, prim in enumerate(self._prims)] for e in dirs])          # (E, P, 3)
        score = np.einsum("epc,ec->ep", sup, dirs)
        best = score.max(axis=1)
        which, part = np.nonzero(score >= best[:, None] - 0.5 * self.blend - 1e-12)
        x, e = sup[which, part], dirs[which]
        step = 0.004 * self.identity.height
        x, _ = self._project(x, pose)
        for _ in range(iters):
            f, g = self._field_grad(x, pose)
            g2 = np.maximum(np.einsum("nc,nc->n", g, g), 1e-12)
            # one Newton correction back to the surface plus a step along e's tangential part
            x = x - (f / g2)[:, None] * g + step * (e - (np.einsum("nc,nc->n", g, e) / g2)[:, None] * g)
        x, ok = self._project(x, pose)
        value = best.copy()
        np.maximum.at(value, which[ok], np.einsum("nc,nc->n", x, e)[ok])
        return value

    def _grid_field(self, lo: np.ndarray, voxel: float, shape: np.ndarray, pose: PartPose) -> np.ndarray:
        """F on the lattice lo + voxel * (i, j, k): exact where |F| < 2 voxels, sign exact everywhere."""
        k = self.blend
        boxes = self._boxes(pose, self._reach(2.0 * voxel))
        axes = [lo[a] + voxel * np.arange(shape[a]) for a in range(3)]
        m = np.full(tuple(shape), _FAR)
        blocks = []
        for i, prim in enumerate(self._prims):
            R, t = pose.rotations[i], pose.translations[i]
            i0 = np.clip(np.ceil((boxes[i, 0] - lo) / voxel).astype(int), 0, shape)
            i1 = np.clip(np.floor((boxes[i, 1] - lo) / voxel).astype(int) + 1, 0, shape)
            if (i1 <= i0).any():
                continue
            sl = tuple(slice(i0[a], i1[a]) for a in range(3))
            g = np.stack(np.meshgrid(*(axes[a][sl[a]] for a in range(3)), indexing="ij"), -1).reshape(-1, 3)
            d = prim.sdf((g - t) @ R).reshape(tuple(i1 - i0))
            blocks.append((sl, d))
            np.minimum(m[sl], d, out=m[sl])
        S = np.full(tuple(shape), -1.0)
        for sl, d in blocks:
            h = np.clip(1.0 - (d - m[sl]) / k, 0.0, None)
            S[sl] += h * h
        S = np.maximum(S, 0.0)  # lattice points far from every part
        return m - 0.5 * k * S / (1.0 + S)


_PARENT_ARR = np.array(_PARENT)
_FAR = 1e6  # distance given to parts too far to matter
_SMALL_BATCH = 512  # up to this many points, evaluate every part in one vectorised pass


# -------------------------------------------------------------------------------------------------
# Dataset
# -------------------------------------------------------------------------------------------------

class SequencePlan(NamedTuple):
    name: str
    identity: int
    """Index into the plan's identities."""
    motion: str
    split: str


def dataset_plan(sequences: int, seed: int = 0) -> tuple[list[Identity], list[SequencePlan]]:
    """Which (identity, motion) pairs a dataset of ``sequences`` sequences holds, and their splits.

    Splits (like D-FAUST's):

    - ``train``: seen identities doing seen motions (every motion but ``HELD_OUT_MOTION``);
    - ``val``, ``test``: seen identities doing seen motions, in pairs absent from train (both the
      identity and the motion occur in train once train has two or more sequences);
    - ``test_new_individual``: held-out identities (the last ones, never in any other split) doing seen
      motions;
    - ``test_new_motion``: seen identities doing ``HELD_OUT_MOTION`` (never in any other split).

    Sizes for N sequences: new individual ~N/6, new motion, test and val ~N/12 each, at least 1 each
    from N = 6 on (smaller N fill train first, then the test splits); train the rest.

    Returns:
        The identities (index = ``SequencePlan.identity``) and one plan per sequence.
    """
    N = int(sequences)
    if N < 1:
        raise ValueError(f"sequences must be >= 1; got {sequences}")
    rng = np.random.default_rng([int(seed), 7])
    motions = [m for m in MOTIONS if m != HELD_OUT_MOTION]
    M = len(motions)
    want = {"train": 2, "test_new_individual": max(1, round(N / 6)), "test_new_motion": max(1, round(N / 12)),
            "test": max(1, round(N / 12)), "val": max(1, round(N / 12))}
    sizes, left = {}, N
    for split in ("train", "test_new_individual", "test_new_motion", "test", "val"):
        sizes[split] = min(want[split], left)
        left -= sizes[split]
    n_seen = N - sizes["test_new_individual"] - sizes["test_new_motion"]
    n_ids = max(2, math.ceil(n_seen / 4)) if n_seen > 1 else 1
    sizes["test_new_motion"] = min(sizes["test_new_motion"], n_ids)  # one held-out-motion sequence per identity
    sizes["train"] = N - sum(v for k, v in sizes.items() if k != "train")
    n_new_ids = math.ceil(sizes["test_new_individual"] / M)
    identities = [random_identity(np.random.default_rng([int(seed), 0, i]), id=10000 + i)
                  for i in range(n_ids + n_new_ids)]
    # Round robin over the seen identities; identity i walks a shared motion order from an offset spread
    # over the order, so the first rounds (train) cover many motions and every identity.
    order = [str(m) for m in rng.permutation(motions)]
    pool = [(i, order[((i * M) // n_ids + r) % M]) for r in range(M) for i in range(n_ids)]
    train = pool[: sizes["train"]]
    seen_ids, seen_motions = {i for i, _ in train}, {m for _, m in train}
    later = pool[sizes["train"]:]
    later = [c for c in later if c[0] in seen_ids and c[1] in seen_motions] + \
            [c for c in later if not (c[0] in seen_ids and c[1] in seen_motions)]
    val = later[: sizes["val"]]
    test = later[sizes["val"]: sizes["val"] + sizes["test"]]
    new_motion = [(int(i), HELD_OUT_MOTION) for i in rng.permutation(n_ids)[: sizes["test_new_motion"]]]
    shuffled = [str(m) for m in rng.permutation(motions)]
    new_order = [m for m in shuffled if m in seen_motions] + [m for m in shuffled if m not in seen_motions]
    new_individual = [(n_ids + j // M, new_order[j % M]) for j in range(sizes["test_new_individual"])]
    plan = [SequencePlan(f"{identities[i].id}_{m}", i, m, split)
            for split, pairs in (("train", train), ("val", val), ("test", test),
                                 ("test_new_individual", new_individual), ("test_new_motion", new_motion))
            for i, m in pairs]
    return identities, plan


SPLITS = ("train", "val", "test", "test_new_individual", "test_new_motion")
"""Split lists written next to the sequences."""


def write_body_dataset(out: str | os.PathLike, *, sequences: int = 12, frames: int | tuple[int, int] = 17,
                       seed: int = 0, n_points: int | None = None, n_pcl: int | None = None,
                       n_near: int | None = None, mesh_resolution: int | None = None, quick: bool = False,
                       category: str = "synthetic", progress: bool = True, overwrite: bool = True) -> Path:
    """Write a D-FAUST-style dataset of procedural moving bodies with exact ground truth.

    Layout: ``<out>/<category>/<identity id>_<motion>/`` with, per frame f (``%08d``):
    ``points_seq/f.npz`` (``n_points`` points uniform in [-0.55, 0.55]^3 of the frame's normalised
    coordinates, with exact occupancy of the float16-stored points), ``pcl_seq/f.npz`` (``n_pcl`` surface
    points, index k the same surface point in every frame), ``points_near_seq/f.npz`` (``n_near`` points
    around the surface, :func:`toolkit.oflow.data.near_surface_samples`, exact occupancy) and
    ``mesh_seq/f.ply`` (marching cubes, world metres); plus ``body.json`` (rebuild the field with ``load_body``). In ``<out>/<category>/``:
    ``train.lst``, ``val.lst``, ``test.lst`` (seen identities, unseen identity/motion pairs),
    ``test_new_individual.lst`` (the held-out identity, the last one), ``test_new_motion.lst`` (seen
    identities doing ``HELD_OUT_MOTION``) and ``bodies.json`` (generator version, seed, splits, held-out
    identity and motion, every sequence's body). Everything is determined by ``seed``. The dataset is
    written into a sibling folder that becomes ``out`` when complete (never a mix of two runs, nothing
    left by an interrupted one); an existing non-empty ``out`` is replaced only with ``overwrite`` (the
    ``synth bodies`` command's ``--overwrite``) and only when it is a body dataset written here before. Each sequence
    draws its period (the motion's typical period times 0.85-1.2), phase and amplitude (0.8-1.15).

    Args:
        out: dataset root.
        sequences: number of sequences N (see ``dataset_plan`` for the split sizes).
        frames: frames per sequence, or an inclusive range (lo, hi) drawn per sequence (longer
            sequences give several 17-frame windows).
        seed: seed of identities, motion parameters, point draws.
        n_points, n_pcl: points per frame (default 100000 each, 20000 with ``quick``).
        n_near: near-surface occupancy points per frame (default ``n_points``; 0 writes none).
        mesh_resolution: marching-cubes cells along the largest box side (default 128, 96 with ``quick``).
        quick: small settings for notebooks and tests.
        category: the category folder name.
        progress: show a tqdm progress bar.
        overwrite: replace an earlier body dataset at ``out``.

    Returns:
        ``out`` as a Path.
    Raises:
        DataError: ``out`` is a file, or a non-empty folder that may not be replaced.
    """
    from toolkit.io import staged_folder

    defaults = _QUICK if quick else _FULL
    n_points = defaults["n_points"] if n_points is None else int(n_points)
    n_pcl = defaults["n_pcl"] if n_pcl is None else int(n_pcl)
    n_near = n_points if n_near is None else int(n_near)
    mesh_resolution = defaults["mesh_resolution"] if mesh_resolution is None else int(mesh_resolution)
    if n_points < 1 or n_pcl < 1:
        raise ValueError(f"n_points and n_pcl must be >= 1; got {n_points}, {n_pcl}")
    lo_f, hi_f = (int(frames), int(frames)) if np.isscalar(frames) else (int(frames[0]), int(frames[1]))
    if not 1 <= lo_f <= hi_f:
        raise ValueError(f"frames must be >= 1 (or a range lo <= hi); got {frames}")
    if not category or "/" in category:
        raise ValueError(f"invalid category name {category!r}")
    out = Path(out)
    with staged_folder(out, overwrite=overwrite, owned=_is_body_dataset, what="dataset folder") as work:
        _write_bodies(work / category, sequences, seed, lo_f, hi_f, n_points, n_pcl, n_near, mesh_resolution, progress)
    return out


def _is_body_dataset(folder: Path) -> bool:
    """Whether ``folder`` is a dataset :func:`write_body_dataset` wrote (a category with bodies.json)."""
    return any(folder.glob("*/bodies.json"))


def _write_bodies(root: Path, sequences: int, seed: int, lo_f: int, hi_f: int, n_points: int, n_pcl: int,
                  n_near: int, mesh_resolution: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    from toolkit.geometry.meshing import save_mesh
    from toolkit.oflow.data import (
        NEAR_DIR,
        near_surface_samples,
        write_pcl_frame,
        write_points_frame,
        write_split,
    )

    identities, plan = dataset_plan(sequences, seed)
    bodies = {}
    for k, p in enumerate(plan):
        rng = np.random.default_rng([int(seed), 1, k])
        F = int(rng.integers(lo_f, hi_f + 1))
        # people repeat an exercise a little faster or slower, and bigger or smaller, than its typical form
        period = get_motion(p.motion).period * rng.uniform(0.85, 1.2)
        bodies[p.name] = Body(identities[p.identity], p.motion, frames=F, period=period,
                              phase=rng.uniform(0.0, 2 * math.pi), amplitude=rng.uniform(0.8, 1.15))
    total = sum(b.frames for b in bodies.values())
    bar = tqdm(total=total, desc="synthetic bodies", unit="frame", disable=not progress)
    for k, p in enumerate(plan):
        body = bodies[p.name]
        seq = root / p.name
        bar.set_postfix_str(p.name)
        pcl_seed = [int(seed), 2, k]
        _, positions = body._surface_sample(n_pcl, np.random.default_rng(pcl_seed), None)
        for f in range(body.frames):
            norm = body.normalization(f)
            rng = np.random.default_rng([int(seed), 3, k, f])
            pts = rng.uniform(-BOX_HALF, BOX_HALF, (n_points, 3)).astype(np.float16)
            # occupancy of the points exactly as stored (float16 points, float16 loc and scale)
            occ = body.occupancy(norm.loc + norm.scale * pts.astype(np.float64), f)
            name = f"{f:08d}"
            write_points_frame(seq / "points_seq" / f"{name}.npz", pts, occ, norm.loc, norm.scale)
            surface = (positions[f] - norm.loc) / norm.scale
            write_pcl_frame(seq / "pcl_seq" / f"{name}.npz", surface, norm.loc, norm.scale)
            if n_near:
                near, near_occ = near_surface_samples(surface, body.occupancy_fn(f, loc=norm.loc, scale=norm.scale),
                                                      n_near, np.random.default_rng([int(seed), 4, k, f]))
                write_points_frame(seq / NEAR_DIR / f"{name}.npz", near, near_occ, norm.loc, norm.scale)
            save_mesh(seq / "mesh_seq" / f"{name}.ply", body.mesh(f, resolution=mesh_resolution))
            bar.update(1)
        _remove_stale_frames(seq, body.frames)
        # pcl_seed and n_pcl rebuild pcl_seq exactly: body.surface_points(n_pcl, pcl_seed)
        info = {"name": p.name, "split": p.split, "body_model": BODY_MODEL, **body.to_dict(), "n_pcl": n_pcl,
                "pcl_seed": pcl_seed}
        atomic_save_text(seq / BODY_FILE, json.dumps(info, indent=2))
    bar.close()
    splits = {s: [p.name for p in plan if p.split == s] for s in SPLITS}
    for s, names in splits.items():
        if names:  # an empty list is a problem for validate_dataset: small datasets lack some splits
            write_split(root, s, names)
    held_ids = sorted({identities[p.identity].id for p in plan if p.split == "test_new_individual"})
    meta = {"body_model": BODY_MODEL, "seed": int(seed), "frames": [lo_f, hi_f], "n_points": n_points,
            "n_pcl": n_pcl, "n_near": n_near, "mesh_resolution": mesh_resolution, "held_out_identities": held_ids,
            "held_out_motion": HELD_OUT_MOTION,
            "motions": {m.name: m.description for m in MOTIONS.values()},
            "splits": splits, "sequences": {name: b.to_dict() for name, b in bodies.items()}}
    atomic_save_text(root / "bodies.json", json.dumps(meta, indent=2))


BODY_FILE = "body.json"
BODY_MODEL = 2
"""Version of the body generator written into ``body.json``: the same description (identity, motion,
period, ...) gives another body under another version, so ``load_body`` refuses other versions. 1: the
first bodies (8 motions, slim builds); 2: D-FAUST-like bodies and D-FAUST's 14 motions."""


def _remove_stale_frames(seq: Path, frames: int) -> None:
    """Delete frame files numbered >= ``frames`` that an earlier, longer run left in this sequence."""
    for sub, ext in (("points_seq", ".npz"), ("pcl_seq", ".npz"), ("points_near_seq", ".npz"), ("mesh_seq", ".ply")):
        for path in (seq / sub).glob(f"*{ext}"):
            if len(path.stem) == 8 and path.stem.isdigit() and int(path.stem) >= frames:
                path.unlink()


def load_body(sequence_dir: str | os.PathLike) -> Body:
    """Rebuild the exact body of a sequence written by ``write_body_dataset`` from its ``body.json``.

    Raises:
        DataError: the file is missing, unreadable, lacks a key, or was written by another version of the
            generator (see ``BODY_MODEL``; write the dataset again).
    """
    path, d = _read_body_json(sequence_dir)
    version = d.get("body_model", 1)
    if version != BODY_MODEL:
        raise DataError(path, f"written by body generator version {version}, this is version {BODY_MODEL}: "
                              "the same description gives another body now; write the dataset again")
    try:
        return Body.from_dict(d)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(path, f"not a valid body description ({type(exc).__name__}: {exc})") from exc


def load_pcl_sample(sequence_dir: str | os.PathLike) -> tuple[Body, SurfaceSample]:
    """The body of a sequence and the surface sample behind its ``pcl_seq`` (index k = point k).

    ``body.points_at(sample, frame)`` gives the exact world positions at any (fractional) frame, so
    correspondences can be checked between the stored frames too.

    Raises:
        DataError: ``body.json`` is missing, invalid, or has no ``pcl_seed``/``n_pcl``.
    """
    path, d = _read_body_json(sequence_dir)
    body = load_body(sequence_dir)
    if "pcl_seed" not in d or "n_pcl" not in d:
        raise DataError(path, "no pcl_seed/n_pcl: not written by write_body_dataset")
    return body, body.surface_points(int(d["n_pcl"]), [int(v) for v in d["pcl_seed"]])


def _read_body_json(sequence_dir) -> tuple[Path, dict]:
    path = Path(sequence_dir) / BODY_FILE
    if not path.is_file():
        raise DataError(path, "file not found (only sequences written by write_body_dataset have one)")
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable JSON ({exc})") from exc
    if not isinstance(d, dict):
        raise DataError(path, f"expected a JSON object; got {type(d).__name__}")
    return path, d


# -------------------------------------------------------------------------------------------------
# Skeleton and kinematics
# -------------------------------------------------------------------------------------------------

def _skeleton(ident: Identity) -> tuple[np.ndarray, list[Primitive], np.ndarray]:
    """Joint offsets in parent frames (P, 3), primitives in part frames, root position (zero pose).

    Every part frame is axis-aligned with the world in the zero pose (standing, arms down); the body
    faces +z with y up, the soles are at y = 0 and the head top is at ``height``. Heights of joints and
    lengths of segments are adult averages as fractions of the height (ankle 0.04, knee ~0.28, hip joint
    ~0.5, shoulder 0.81; upper arm 0.186, forearm 0.146, hand 0.108, foot 0.15); the build parameters
    set the girths.
    """
    H, th, td, bl = ident.height, ident.thickness, ident.torso_depth, ident.belly
    hs, ar = ident.head_size, ident.arm_ratio
    sw, hw = ident.shoulder_width * H, ident.hip_width * H
    # joint heights above the ground (zero pose)
    y_ankle = 0.04 * H
    leg = ident.leg_ratio * H
    thigh, shin = 0.5 * leg, 0.5 * leg
    y_hip = y_ankle + leg
    y_root = y_hip + 0.02 * H          # pelvis centre
    y_spine = y_root + 0.05 * H        # torso joint
    y_chest = 0.75 * H                 # chest joint (the shimmy turns about it)
    y_shoulder = 0.81 * H
    y_neck = 0.835 * H
    head_r = np.array([0.05, 0.066, 0.058]) * H * hs
    y_head = H - 1.5 * head_r[1]       # head joint; the head's centre is half a radius above it
    neck_len = y_head - y_neck
    ua, fa, hand = 0.186 * H * ar, 0.146 * H * ar, 0.108 * H * ar
    r_sh, r_el, r_wr = 0.032 * H * th, 0.024 * H * th ** 0.8, 0.017 * H * th ** 0.5
    r_hip, r_knee, r_ankle = 0.062 * H * th, 0.042 * H * th, 0.023 * H * th ** 0.8
    # trunk girths: the build widens and deepens everything a little, the belly mostly the waist
    torso_w = H * (0.078 + 0.016 * th + 0.03 * bl) + 0.3 * (sw - 0.23 * H)
    torso_d = H * (0.066 + 0.02 * bl) * td
    belly_w = H * (0.075 + 0.012 * th + 0.04 * bl)
    belly_d = H * (0.052 + 0.042 * bl) * td
    pelvis_d = H * (0.066 + 0.012 * bl) * td
    T = y_shoulder - y_spine
    down = lambda length: (0.0, -length, 0.0)
    prims: list[Primitive] = [
        Ellipsoid((0.0, -0.03 * H, -0.01 * H), (0.5 * hw, 0.09 * H, pelvis_d)),                # pelvis
        Ellipsoid((0.0, 0.065 * H, 0.005 * H + 0.015 * H * bl), (belly_w, 0.09 * H, belly_d)),   # belly
        Ellipsoid((0.0, 0.5 * T, 0.0), (torso_w, 0.56 * T, torso_d)),                           # torso
        Ellipsoid((0.0, y_shoulder - y_chest - 0.03 * H, -0.005 * H),                           # chest
                  (0.5 * sw + 0.01 * H * bl, 0.05 * H, 0.06 * H * td)),
        RoundCone((0.0, 0.0, 0.0), (0.0, neck_len, 0.004 * H), 0.038 * H * th ** 0.6, 0.033 * H * th ** 0.6),
        Ellipsoid((0.0, 0.5 * head_r[1], 0.012 * H), tuple(head_r)),
    ]
    # hands: flat, palms facing the thighs in the zero pose; feet: flat, from the heel a little behind
    # the ankle to the toes, pointing forward
    arm = [RoundCone((0.0, 0.0, 0.0), down(ua), r_sh, r_el), RoundCone((0.0, 0.0, 0.0), down(fa), r_el, r_wr),
           Ellipsoid((0.0, -0.48 * hand, 0.004 * H), (0.011 * H * th ** 0.5, 0.51 * hand, 0.024 * H))]
    legs = [RoundCone((0.0, 0.0, 0.0), down(thigh), r_hip, r_knee),
            RoundCone((0.0, 0.0, 0.0), down(shin), r_knee, r_ankle),
            Ellipsoid((0.0, -0.017 * H, 0.036 * H), (0.027 * H * th ** 0.3, 0.023 * H, 0.074 * H))]
    prims += arm + arm + legs + legs
    off = np.zeros((len(PARTS), 3))
    off[1] = (0.0, 0.0, 0.0)                                    # belly, in the pelvis frame
    off[2] = (0.0, y_spine - y_root, 0.0)                       # spine joint, in the pelvis frame
    off[3] = (0.0, y_chest - y_spine, 0.0)                      # chest joint, in the torso frame
    off[4] = (0.0, y_neck - y_chest, -0.012 * H)                # neck base, in the chest frame
    off[5] = (0.0, neck_len, 0.004 * H)
    for base, s in ((6, 1.0), (9, -1.0)):
        off[base] = (s * 0.5 * sw, y_shoulder - y_chest, -0.005 * H)
        off[base + 1] = down(ua)
        off[base + 2] = down(fa)
    for base, s in ((12, 1.0), (15, -1.0)):
        # heavy thighs hold the legs further apart
        off[base] = (s * (0.05 * H + 0.1 * (hw - 0.2 * H) + 0.4 * (r_hip - 0.062 * H)), y_hip - y_root, 0.0)
        off[base + 1] = down(thigh)
        off[base + 2] = down(shin)
    return off, prims, np.array([0.0, y_root, 0.0])


def _rx(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _joint_rotations(a: dict[str, float]) -> list[np.ndarray]:
    """Each part's rotation relative to its parent (the root's relative to the world)."""
    R = [_ry(a["root_yaw"]) @ _rz(-a["root_roll"]) @ _rx(a["root_pitch"]), np.eye(3),
         _rz(-a["spine_bend"]) @ _rx(a["spine_flex"]) @ _ry(a["spine_twist"]),
         _rz(-a["chest_roll"]) @ _ry(a["chest_twist"]),
         _rx(a["neck_flex"]), _ry(a["head_turn"]) @ _rx(a["head_flex"])]
    for side, s in (("l", 1.0), ("r", -1.0)):
        R += [_rz(s * a[f"shoulder_{side}_abd"]) @ _rx(-a[f"shoulder_{side}_flex"])
              @ _ry(s * a[f"shoulder_{side}_twist"]),
              _rx(-a[f"elbow_{side}"]), _rx(-a[f"wrist_{side}"])]
    for side, s in (("l", 1.0), ("r", -1.0)):
        # the ankle keeps the foot level unless the motion tilts it (its own angle adds to that)
        flat = a[f"knee_{side}"] - a[f"hip_{side}_flex"]
        R += [_rz(s * a[f"hip_{side}_abd"]) @ _rx(-a[f"hip_{side}_flex"]) @ _ry(s * a[f"hip_{side}_twist"]),
              _rx(a[f"knee_{side}"]), _rx(-(flat + a[f"ankle_{side}"]))]
    return R


def _apply(pose: PartPose, part: np.ndarray, local: np.ndarray) -> np.ndarray:
    """World positions of part-local points: R[part] @ local + t[part]."""
    return np.einsum("nij,nj->ni", pose.rotations[part], local) + pose.translations[part]


def _unapply(pose: PartPose, part: np.ndarray, world: np.ndarray) -> np.ndarray:
    """Part-local coordinates of world points: R[part]^T (world - t[part])."""
    return np.einsum("nji,nj->ni", pose.rotations[part], world - pose.translations[part])


def _check_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3); got shape {points.shape}")
    return points


def _in_kind(p, fn: Callable[[np.ndarray], np.ndarray]):
    """Apply a numpy function to numpy or torch input and answer in the same kind."""
    if type(p).__module__.startswith("torch"):
        import torch

        x = p.detach().cpu().double().numpy()
        out = fn(_check_points(x))
        return torch.from_numpy(out.astype(np.float32)).to(p.device)
    return fn(_check_points(p))
