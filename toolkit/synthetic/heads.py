"""Procedural semantic portraits with an exact 3D label field (ground truth for SOF; sof.md 1.1, 1.5, 1.7, 3).

A head is a handful of simple solids (ellipsoids, elliptic cylinders, boxes, cut by planes and by one
subtracted solid each), every one carrying a SOF20 class: skull and jaw (skin), eyes, brows, a nose split
at x = 0 into r_nose (x < 0) and l_nose (x >= 0), lips and the mouth between them, ears, neck, a torso
(cloth, with the chest under a scoop neckline labelled neck, as CelebAMask-HQ does), one of several hair
styles, and optional earrings, glasses, necklace and hat. :class:`HeadParams` holds every identity
parameter (JSON-serialisable); :func:`sample_head` draws them from a seeded NumPy generator.

Conventions (those of the SOF data):

- World is Y-up, in SOF's units; the face looks toward +z, so the frontal camera sits on +z looking at
  (0, 0.1, 0). Left/right are the *person's*: ``l_eye``, ``l_brow``, ``l_ear``, ``l_nose`` lie at x > 0,
  which a frontal view shows on the image's right (as CelebAMask-HQ's ``l_eye``).
- Everything lies inside the ball of radius :data:`CLIP_RADIUS` = 1.45 around the origin (SOF starts ray
  marching on the radius-1.5 sphere); the label field is 0 outside it, which also rounds off the
  bottom of the torso like a bust. Chin to crown is about 1.3 units (1.5 with hair), the bust about 2.6:
  at the default orthographic camera (f = 36 px at 128 px, 3.56 units across) the portrait spans about
  three quarters of the image height and the head about 35 px across.
- Priority where solids overlap (low to high, the later wins)::

      chest(neck) < neck < cloth < skin < hair < ears < r_nose < l_nose < mouth < lips < eyes < brows
      < necklace < earrings < glasses < hat

The label field :meth:`SyntheticHead.label` tests points against the solids. The renderer
:meth:`SyntheticHead.render` is a different algorithm: it intersects every ray with the solids in closed
form (quadratics, slabs, half-lines), takes the first entry into any labelled part, and reports the
highest-priority part whose ray intervals contain the point :data:`PROBE_DEPTH` behind that entry, i.e.
the label just inside the first surface. Rays come from :func:`toolkit.geometry.cameras.generate_rays`,
so pixel coordinates, principal point and ortho/perspective models match the SOF model exactly. The
tests check the renders against a uniform march of :meth:`SyntheticHead.label` with bisection.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from toolkit.geometry.cameras import (
    DEFAULT_TARGET,
    PORTRAIT_CROP_SIDE,
    check_projection,
    generate_rays,
    orbit_cameras,
    pixel_grid,
    portrait_intrinsics,
    random_orbit_cameras,
)
from toolkit.io import DataError, atomic_save_text
from toolkit.labels import NUM_SOF_CLASSES, SOF20
from toolkit.synthetic._heads_csg import CompiledScene, Part, Solid, rot_x, rot_y, rot_z, solid

CLIP_RADIUS = 1.45
"""Radius of the ball around the origin that contains every head (the label field is 0 outside)."""
HEAD_FILE = "head.json"
HEAD_MODEL = 2
"""Version of the head generator written into ``head.json``: the same parameters mean another head under
another version, so :func:`load_head` refuses other versions. 1: the first heads (small in a wide frame);
2: canon proportions in face units, the frontal view the CelebA-HQ / FFHQ alignment crop."""
PROBE_DEPTH = 1e-4
"""How far behind the first surface the renderer reads the label (world units; at most half the
thickness of the part entered there)."""

HAIR_STYLES = ("bald", "short", "long", "bob", "bun", "ponytail")
NECKLINES = ("crew", "scoop")
CAMERA_SETUPS: dict[str, dict] = {
    # The original data's orbit: radius 4.5 around (0, 0.1, 0).
    "ortho": {"radius": 4.5, "max_yaw": 0.8, "max_pitch": 0.35},
    # At radius 9-10 the aligned crop fills a field of view of about 11 degrees (portrait_intrinsics).
    "perspective": {"radius": (9.0, 10.0), "max_yaw": 0.8, "max_pitch": 0.35},
}

_ID = {name: i for i, name in enumerate(SOF20.names)}


# ----------------------------------------------------------------------------------------------------
# Identity parameters
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadParams:
    """Identity of one procedural head.

    Lengths are in *face units*: the distance between the eye centres is 1, the origin is the eye
    midpoint, y is up and +z the face's direction; :func:`alignment` maps them to world units. Angles in
    radians.
    """

    skull_center: tuple[float, float, float]
    """Centre of the skull ellipsoid."""
    skull_radii: tuple[float, float, float]
    jaw_center: tuple[float, float, float]
    """Centre of the lower-face ellipsoid (cheeks, jaw, chin)."""
    jaw_radii: tuple[float, float, float]
    neck_radius: float
    torso_y: float
    """Height of the torso ellipsoid's centre."""
    torso_radii: tuple[float, float, float]
    neckline: str
    """One of :data:`NECKLINES`."""
    neckline_size: tuple[float, float]
    """Half-width and half-depth (y) of the scoop neckline."""
    eye_radii: tuple[float, float, float]
    """Eye ellipsoid semi-axes; the eye centres are at x = ±0.5, y = 0."""
    brow_offset: tuple[float, float]
    """Brow centre relative to the eye centre: (outward x shift, y lift)."""
    brow_radii: tuple[float, float, float]
    brow_tilt: float
    """Rotation raising the brows' outer ends."""
    nose_top: float
    """Height of the nose bridge's upper end."""
    nose_bottom: float
    """Height of the nostrils' lower edge."""
    nose_widths: tuple[float, float]
    """Half-widths of the bridge and of the tip (nostrils)."""
    nose_protrusion: float
    """How far the tip stands out of the face."""
    mouth_drop: float
    """Distance from the eye line down to the mouth line (the alignment's eye-to-mouth length)."""
    lip_half_width: float
    lip_thickness: tuple[float, float]
    """Upper and lower lip semi-axes in y."""
    mouth_open: float
    """Vertical gap between the lips (0: closed, no mouth class visible)."""
    ear_radii: tuple[float, float, float]
    ear_drop: float
    """Ear centre below the eye line."""
    ear_flare: float
    """Rotation turning the ears' back edges outward."""
    hair_style: str
    """One of :data:`HAIR_STYLES`."""
    hair_volume: float
    """Hair thickness over the skull."""
    hair_width: float
    """Extra width of long hair at the sides of the face."""
    hair_shift: float
    """Sideways shift of long hair's mass (a parting off the middle)."""
    hairline: float
    """Height of the face opening's top above the eye line (low values are bangs)."""
    hair_bottom: float
    """Height of the lower end of long hair (and of a bob)."""
    hair_over_ears: bool
    """Hair covers the ears (otherwise they show in front of it)."""
    ponytail_length: float
    bun_radius: float
    earrings: bool
    earring_radius: float
    glasses: bool
    glasses_radii: tuple[float, float]
    """Outer half-width and half-height of each rim."""
    glasses_frame: float
    """Rim width."""
    necklace: bool
    necklace_height: float
    """Height of the necklace ring's centre."""
    necklace_tilt: float
    hat: bool
    hat_brim: float
    """How far the brim reaches beyond the crown."""
    hat_height: float
    """Brim height above the eye line."""

    def __post_init__(self):
        if self.hair_style not in HAIR_STYLES:
            raise ValueError(f"unknown hair style {self.hair_style!r}; valid: {list(HAIR_STYLES)}")
        if self.neckline not in NECKLINES:
            raise ValueError(f"unknown neckline {self.neckline!r}; valid: {list(NECKLINES)}")

    def to_dict(self) -> dict:
        """Plain JSON types (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> HeadParams:
        """Inverse of :meth:`to_dict`; unknown, missing or mistyped keys raise ValueError naming them
        (TypeError when ``data`` is not a dict)."""
        if not isinstance(data, dict):
            raise TypeError(f"head parameters must be a JSON object; got {type(data).__name__}")
        names = {f.name: f for f in fields(cls)}
        unknown, missing = sorted(set(data) - set(names)), sorted(set(names) - set(data))
        if unknown or missing:
            raise ValueError(f"head parameters: unknown keys {unknown}, missing keys {missing}")
        values = {}
        for name, f in names.items():
            v, kind = data[name], str(f.type)
            if kind.startswith("tuple"):
                n = kind.count("float")
                if not (isinstance(v, (list, tuple)) and len(v) == n and all(_is_number(x) for x in v)):
                    raise ValueError(f"head parameters: {name!r} must be a list of {n} numbers; got {v!r}")
                values[name] = tuple(float(x) for x in v)
            elif kind == "bool":
                if not isinstance(v, bool):
                    raise ValueError(f"head parameters: {name!r} must be true or false; got {v!r}")
                values[name] = v
            elif kind == "str":
                if not isinstance(v, str):
                    raise ValueError(f"head parameters: {name!r} must be a string; got {v!r}")
                values[name] = v
            else:
                if not _is_number(v):
                    raise ValueError(f"head parameters: {name!r} must be a number; got {v!r}")
                values[name] = float(v)
        return cls(**values)


HAIR_STYLE_FREQUENCIES = {"bald": 0.03, "short": 0.30, "long": 0.42, "bob": 0.13, "bun": 0.06, "ponytail": 0.06}
"""Hair styles of :func:`sample_head`, roughly those of aligned celebrity portraits (CelebA: 42 % men)."""
ACCESSORY_FREQUENCIES = {"earrings": 0.25, "glasses": 0.15, "necklace": 0.15, "hat": 0.08}
"""Accessory rates of :func:`sample_head`: CelebA's attributes (earrings 19 %, eyeglasses 6.5 %,
necklace 12 %, hat 4.8 %) raised a little so that a few hundred portraits teach every class."""


def sample_head(rng: np.random.Generator) -> HeadParams:
    """Draw a random identity. The draws happen in a fixed order, so a seeded generator gives one head.

    Proportions follow the classical facial canons, in face units (eye-centre distance 1): eye width
    about 0.42, nose as wide as the gap between the eyes and ending about 0.75 below the eye line, mouth
    line 0.95-1.2 below it and as wide as the eye distance, brows 0.2-0.3 above, ears between the brow
    line and the nose's base, chin 1.6-1.85 below the eyes, crown about as far above; hair styles and
    accessories by :data:`HAIR_STYLE_FREQUENCIES` and :data:`ACCESSORY_FREQUENCIES`, bangs 20 %.
    """
    u = rng.uniform
    style = str(rng.choice(list(HAIR_STYLE_FREQUENCIES), p=list(HAIR_STYLE_FREQUENCIES.values())))
    crown, skull_y = u(1.7, 1.95), u(0.1, 0.3)
    chin, jaw_y = u(1.7, 1.95), u(-0.55, -0.35)
    mouth_open = 0.0 if u() < 0.65 else u(0.05, 0.25)
    bangs = u() < 0.2
    long_hair = style in ("long", "bob")
    acc = {name: bool(u() < p) for name, p in ACCESSORY_FREQUENCIES.items()}
    return HeadParams(
        skull_center=(0.0, skull_y, u(-0.45, -0.3)),
        skull_radii=(u(1.12, 1.3), crown - skull_y, u(1.45, 1.6)),
        jaw_center=(0.0, jaw_y, u(-0.1, 0.05)),
        jaw_radii=(u(0.9, 1.06), jaw_y + chin, u(1.1, 1.2)),
        neck_radius=u(0.85, 1.05),
        torso_y=u(-3.2, -2.6),
        torso_radii=(u(2.7, 3.2), u(1.4, 1.7), u(1.1, 1.35)),
        neckline=str(rng.choice(NECKLINES)),
        neckline_size=(u(0.7, 1.1), u(0.4, 0.9)),
        eye_radii=(u(0.2, 0.25), u(0.085, 0.115), 0.12),
        brow_offset=(u(0.0, 0.08), u(0.22, 0.32)),
        brow_radii=(u(0.28, 0.38), u(0.05, 0.1), 0.07),
        brow_tilt=u(-0.1, 0.2),
        nose_top=u(0.0, 0.15),
        nose_bottom=u(-0.82, -0.65),
        nose_widths=(u(0.1, 0.15), u(0.24, 0.32)),
        nose_protrusion=u(0.25, 0.4),
        mouth_drop=u(0.95, 1.2),
        lip_half_width=u(0.38, 0.5),
        lip_thickness=(u(0.06, 0.1), u(0.08, 0.13)),
        mouth_open=mouth_open,
        ear_radii=(u(0.1, 0.13), u(0.3, 0.4), u(0.2, 0.26)),
        ear_drop=u(0.25, 0.45),
        ear_flare=u(0.2, 0.4),
        hair_style=style,
        hair_volume=u(0.12, 0.3),
        hair_width=u(0.2, 0.9),
        hair_shift=u(-0.3, 0.3),
        hairline=u(0.35, 0.55) if bangs else u(1.0, 1.4),
        hair_bottom=u(-4.0, -2.5) if style == "long" else u(-1.9, -1.2),
        hair_over_ears=bool(u() < (0.45 if long_hair else 0.15)),
        ponytail_length=u(0.6, 0.9),
        bun_radius=u(0.3, 0.42),
        earrings=acc["earrings"],
        earring_radius=u(0.07, 0.11),
        glasses=acc["glasses"],
        glasses_radii=(u(0.3, 0.38), u(0.2, 0.26)),
        glasses_frame=u(0.05, 0.07),
        necklace=acc["necklace"],
        necklace_height=u(-2.2, -1.85),
        necklace_tilt=u(0.25, 0.45),
        hat=acc["hat"],
        hat_brim=u(0.1, 0.45),
        hat_height=u(0.95, 1.3),
    )


class Alignment(NamedTuple):
    """Similarity from face units to world units: ``world = scale * (p - center) + offset``."""

    scale: float
    center: tuple[float, float, float]
    offset: tuple[float, float, float]


def alignment(params: HeadParams) -> Alignment:
    """The CelebA-HQ / FFHQ alignment of a head's frontal view, as a map from face units to world units.

    The crop of an aligned portrait is built from the eye midpoint ``e``, the eye-to-eye vector ``d`` and
    the eye-to-mouth vector ``m``: half-side ``max(2 |d|, 1.8 |m|)``, centre ``e + 0.1 m``, axes from
    ``d`` minus ``m`` turned by 90 degrees (upright here: faces are symmetric and level). The head is
    scaled so that this crop is :data:`PORTRAIT_CROP_SIDE` wide and moved so that its centre is the camera
    target (0, 0.1, 0); the frontal view at :func:`toolkit.geometry.cameras.portrait_intrinsics` is then
    exactly the aligned crop. Depth is scaled about the skull centre.
    """
    half_side = max(2.0 * 1.0, 1.8 * params.mouth_drop)  # |d| = 1 in face units
    center = (0.0, -0.1 * params.mouth_drop, params.skull_center[2])
    return Alignment(0.5 * PORTRAIT_CROP_SIDE / half_side, center, DEFAULT_TARGET)


def head_from_seed(seed: int) -> SyntheticHead:
    """The head of ``sample_head(np.random.default_rng(seed))``, ready to query and render."""
    return SyntheticHead(sample_head(np.random.default_rng(seed)))


# ----------------------------------------------------------------------------------------------------
# The head
# ----------------------------------------------------------------------------------------------------

class HeadRender(NamedTuple):
    labels: np.ndarray
    """(V, H, W) uint8 SOF ids."""
    depth: np.ndarray
    """(V, H, W) float32 camera-space depth (z) of the first surface; inf where background."""


class SyntheticHead:
    """The exact 3D label field of one procedural head, and its analytic renderer.

    Calling the head, ``head(xyz)``, returns :meth:`logits`: it plugs in wherever a "callable field on
    points" with class scores is expected (slicing, marching cubes, 3D mIoU).

    Args:
        params: identity parameters.
    """

    num_classes = NUM_SOF_CLASSES

    def __init__(self, params: HeadParams):
        self.params = params
        self.parts: list[Part] = build_parts(params)
        self._compiled: dict[tuple, CompiledScene] = {}

    def __repr__(self) -> str:
        p = self.params
        acc = [a for a in ("earrings", "glasses", "necklace", "hat") if getattr(p, a)]
        return f"SyntheticHead(hair={p.hair_style!r}, accessories={acc}, parts={len(self.parts)})"

    def scene(self, device=None, dtype: torch.dtype = torch.float32) -> CompiledScene:
        """The parts as tensors on ``device`` (cached)."""
        device = torch.device(device or "cpu")
        key = (str(device), dtype)
        if key not in self._compiled:
            self._compiled[key] = CompiledScene(self.parts, clip_radius=CLIP_RADIUS, device=device, dtype=dtype)
        return self._compiled[key]

    # --- the field --------------------------------------------------------------------------------

    def label(self, xyz: torch.Tensor | np.ndarray, *, chunk: int = 65536) -> torch.Tensor | np.ndarray:
        """Exact class id of world points.

        Args:
            xyz: (..., 3) world points, a tensor (any device) or a NumPy array.
        Returns:
            (...,) int64 SOF ids, of the input's kind (tensor on the input's device, or NumPy).
        """
        is_numpy = not isinstance(xyz, torch.Tensor)
        pts = torch.as_tensor(np.asarray(xyz, dtype=np.float32)) if is_numpy else xyz
        if pts.shape[-1] != 3:
            raise ValueError(f"xyz must have shape (..., 3); got {tuple(pts.shape)}")
        flat = pts.reshape(-1, 3)
        dtype = flat.dtype if flat.dtype in (torch.float32, torch.float64) else torch.float32
        sc = self.scene(flat.device, dtype)
        flat = flat.to(dtype)
        out = torch.cat([sc.label(flat[i:i + chunk]) for i in range(0, flat.shape[0], chunk)]) \
            if flat.shape[0] else torch.zeros(0, dtype=torch.long, device=flat.device)
        out = out.reshape(pts.shape[:-1])
        return out.numpy() if is_numpy else out

    def logits(self, xyz: torch.Tensor, *, scale: float = 10.0) -> torch.Tensor:
        """One-hot class scores, a drop-in "callable field on points" like the learned SOF field.

        Args:
            xyz: (N, 3) world points (tensor or NumPy array).
            scale: score of the true class (the others are 0), so softmax is sharp but finite.
        Returns:
            (N, C) float32 scores, C = 20, on the input's device.
        """
        lab = self.label(torch.as_tensor(xyz))
        return torch.nn.functional.one_hot(lab, self.num_classes).to(torch.float32) * scale

    __call__ = logits

    # --- rendering --------------------------------------------------------------------------------

    def render(self, cam2world: np.ndarray | torch.Tensor, K: np.ndarray | torch.Tensor, height: int, width: int, *,
               projection: str = "ortho", pixel_center: float = 0.0, device=None) -> np.ndarray:
        """Label maps seen by cameras (closed-form ray casting; see the module docstring).

        Args:
            cam2world: (4, 4) or (V, 4, 4) OpenCV cam2world.
            K: (3, 3) or (V, 3, 3) pixel intrinsics.
            height, width: image size in pixels.
            projection: "ortho" or "perspective" (as the SOF model's camera models).
            pixel_center: 0.0 (the original's integer pixel coordinates) or 0.5.
            device: where to compute (default: CUDA when available, else CPU).
        Returns:
            (H, W) uint8 SOF ids for one camera, (V, H, W) for a stack.
        """
        single = (cam2world.dim() if isinstance(cam2world, torch.Tensor) else np.ndim(cam2world)) == 2
        out = self.raycast(cam2world, K, height, width, projection=projection, pixel_center=pixel_center,
                           device=device).labels
        return out[0] if single else out

    def raycast(self, cam2world: np.ndarray | torch.Tensor, K: np.ndarray | torch.Tensor, height: int, width: int, *,
                projection: str = "ortho", pixel_center: float = 0.0, device=None,
                chunk: int = 262144) -> HeadRender:
        """Labels and depths of every pixel (same arguments as :meth:`render`); always (V, H, W)."""
        check_projection(projection)
        device = _default_device(device)
        cams, Ks = _as_tensor(cam2world, device), _as_tensor(K, device)
        cams = cams[None] if cams.dim() == 2 else cams
        if cams.dim() != 3 or cams.shape[1:] != (4, 4):
            raise ValueError(f"cam2world must be (4, 4) or (V, 4, 4); got {tuple(np.shape(cam2world))}")
        if Ks.shape[-2:] != (3, 3) or Ks.dim() not in (2, 3) or (Ks.dim() == 3 and Ks.shape[0] not in (1, len(cams))):
            raise ValueError(f"K must be (3, 3) or (V, 3, 3) with V = {len(cams)}; got {tuple(np.shape(K))}")
        with _single_cpu_thread(device):
            uv = pixel_grid(height, width, pixel_center, device=device)
            rays = generate_rays(cams, Ks.expand(len(cams), 3, 3), uv, projection)
            origins, dirs = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)
            labels, t_hit = self._cast(origins, dirs, device, chunk)
            view = torch.arange(len(cams), device=device).repeat_interleave(height * width)
            forward = cams[view, :3, 2]
            depth = torch.where(torch.isfinite(t_hit), t_hit * (dirs * forward).sum(-1)
                                + ((origins - cams[view, :3, 3]) * forward).sum(-1), t_hit)
        shape = (len(cams), height, width)
        return HeadRender(labels.reshape(shape).cpu().numpy(), depth.reshape(shape).cpu().numpy())

    def _cast(self, origins: torch.Tensor, dirs: torch.Tensor, device: torch.device,
              chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        sc = self.scene(device)
        labels = torch.zeros(origins.shape[0], dtype=torch.uint8, device=device)
        t_hit = torch.full((origins.shape[0],), float("inf"), device=device)
        # Only rays that meet the clip ball can hit anything.
        ob = (origins * dirs).sum(-1)
        meets = (ob * ob - (origins * origins).sum(-1) + CLIP_RADIUS ** 2 > 0).nonzero()[:, 0]
        for i in range(0, meets.shape[0], chunk):
            idx = meets[i:i + chunk]
            cast = sc.cast(origins[idx], dirs[idx], probe_depth=PROBE_DEPTH)
            labels[idx] = cast.labels.to(torch.uint8)
            t_hit[idx] = cast.t
        return labels, t_hit


def load_head(folder: str | os.PathLike) -> SyntheticHead:
    """Rebuild the ground-truth head of an instance folder written by :func:`write_portrait_dataset`."""
    path = Path(folder) / HEAD_FILE
    if not path.is_file():
        raise DataError(path, "file not found (not a synthetic portrait instance?)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not readable JSON ({exc})") from exc
    if not isinstance(data, dict) or "params" not in data:
        raise DataError(path, "expected a JSON object with key 'params'")
    # files written before the version was recorded: version 2 heads are the ones with a skull in face units
    version = data.get("head_model", 2 if isinstance(data["params"], dict) and "skull_center" in data["params"] else 1)
    if version != HEAD_MODEL:
        raise DataError(path, f"written by head generator version {version}, this toolkit builds version {HEAD_MODEL} "
                              "(aligned portraits): write the dataset again with `python -m toolkit synth portraits`")
    try:
        return SyntheticHead(HeadParams.from_dict(data["params"]))
    except (ValueError, TypeError) as exc:
        raise DataError(path, str(exc)) from exc


# ----------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------

def portrait_cameras(views: int, rng: np.random.Generator, projection: str = "ortho") -> np.ndarray:
    """(V, 4, 4) orbit cameras around (0, 0.1, 0): view 0 is frontal, the rest random (:data:`CAMERA_SETUPS`)."""
    check_projection(projection)
    if views < 1:
        raise ValueError(f"views must be >= 1; got {views}")
    setup = CAMERA_SETUPS[projection]
    radius = setup["radius"]
    frontal_radius = radius if np.isscalar(radius) else float(np.mean(radius))
    frontal = orbit_cameras(frontal_radius, 0.0, 0.0)[None]
    rest = random_orbit_cameras(views - 1, rng, radius=radius, max_yaw=setup["max_yaw"], max_pitch=setup["max_pitch"])
    return np.concatenate([frontal, rest.reshape(-1, 4, 4)], axis=0)


def write_portrait_dataset(out: str | os.PathLike, *, instances: int = 8, views: int = 12, size: int = 128,
                           projection: str = "ortho", seed: int = 0, device: str | torch.device = "cpu",
                           depth: bool = True, overwrite: bool = True) -> Path:
    """Write a SOF-format dataset of procedural portraits with their exact 3D ground truth.

    Instance i draws its head and cameras from ``np.random.default_rng([seed, i])``: view 00 is the
    frontal camera (yaw = pitch = 0), the others random orbit cameras (:data:`CAMERA_SETUPS`);
    intrinsics are ``portrait_intrinsics(size, projection)`` (the aligned crop) and pixels use the original's integer
    convention (pixel_center = 0). Layout: ``out/meta.json`` and ``out/<i:05d>/`` with the files of
    :func:`toolkit.sof.data.write_instance` plus ``head.json`` (``{"params": ...}``, see :func:`load_head`);
    with ``depth`` also the exact first-hit depth of every pixel (``depth_XX.png`` and ``zRange.npy``),
    which optional depth supervision trains on.
    Rendering defaults to the CPU so that a seed gives the same files on every machine (a GPU may differ
    from it on a few grazing pixels).

    The dataset is written into a sibling folder that becomes ``out`` when complete, so ``out`` never
    mixes two runs' portraits and an interrupted run leaves nothing. An existing non-empty ``out`` is
    replaced only with ``overwrite`` (the ``synth portraits`` command's ``--overwrite``) and only when it
    is a portrait dataset written here before.

    Returns:
        The dataset root ``out``.
    Raises:
        DataError: ``out`` is a file, or a non-empty folder that may not be replaced.
    """
    from tqdm.auto import tqdm

    from toolkit.io import staged_folder
    from toolkit.sof.data import write_instance, write_meta

    check_projection(projection)
    for name, v in (("instances", instances), ("views", views), ("size", size)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1; got {v}")
    out = Path(out)
    K = portrait_intrinsics(size, projection)
    with staged_folder(out, overwrite=overwrite, owned=_is_portrait_dataset, what="dataset folder") as work:
        for i in tqdm(range(instances), desc="portraits", unit="instance"):
            rng = np.random.default_rng([seed, i])
            params = sample_head(rng)
            cams = portrait_cameras(views, rng, projection)
            cast = SyntheticHead(params).raycast(cams, K, size, size, projection=projection, device=device)
            folder = work / f"{i:05d}"
            write_instance(folder, cast.labels, cams, K, depth=cast.depth if depth else None)
            record = {"generator": "toolkit.synthetic.heads", "head_model": HEAD_MODEL, "seed": [int(seed), i],
                      "params": params.to_dict()}
            atomic_save_text(folder / HEAD_FILE, json.dumps(record, indent=2) + "\n")
        setup = CAMERA_SETUPS[projection]
        write_meta(work, projection=projection, image_size=size, generator="toolkit.synthetic.heads",
                   seed=int(seed), instances=int(instances), views=int(views), pixel_center=0.0,
                   cameras={"target": [0.0, 0.1, 0.0], "frontal_view": 0,
                            **{k: list(v) if isinstance(v, tuple) else v for k, v in setup.items()}})
    return out


def _is_portrait_dataset(folder: Path) -> bool:
    """Whether ``folder`` is a dataset :func:`write_portrait_dataset` wrote (its meta.json says so)."""
    try:
        return json.loads((folder / "meta.json").read_text()).get("generator") == "toolkit.synthetic.heads"
    except (OSError, ValueError, AttributeError):
        return False


# ----------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------

def build_parts(p: HeadParams) -> list[Part]:
    """The labelled parts of a head in world units, in ascending priority (see the module docstring)."""
    g = _Frame(p)
    parts: list[Part] = []

    def add(name: str, sol: Solid, minus: Solid | None = None):
        parts.append(Part(name, _ID[name], sol, minus))

    # Torso: cloth over a slightly smaller "chest" labelled neck, revealed by a scoop neckline. The neck
    # cylinder runs from inside the head down into the torso, under the cloth.
    t_c = (0.0, p.torso_y, g.neck_z - 0.2)
    add("neck", solid("ellipsoid", t_c, np.array(p.torso_radii) * 0.96))
    top, bottom = g.hy, p.torso_y
    add("neck", solid("cylinder", (0.0, (top + bottom) / 2, g.neck_z),
                      (p.neck_radius, (top - bottom) / 2, p.neck_radius * 0.92)))
    scoop = None
    if p.neckline == "scoop":
        nw, nd = p.neckline_size
        scoop = solid("ellipsoid", (0.0, p.torso_y + p.torso_radii[1] * 0.95, g.neck_z + 0.5), (nw, nd, 1.2))
    add("cloth", solid("ellipsoid", t_c, p.torso_radii), scoop)
    for sk in g.skin:
        add("skin", sk)
    hair = _HAIR_BUILDERS[p.hair_style](p, g)
    if not p.hair_over_ears:
        for sol, minus in hair:
            add("hair", sol, minus)
    for s, name in ((1, "l_ear"), (-1, "r_ear")):
        add(name, solid("ellipsoid", (s * g.ear_x, g.ear_y, g.ear_z), p.ear_radii, rot_y(-s * p.ear_flare)))
    if p.hair_over_ears:
        for sol, minus in hair:
            add("hair", sol, minus)
    for sol in _nose(p, g):
        add("r_nose", sol.with_planes([(1, 0, 0, 0)]))    # x <= 0
        add("l_nose", sol.with_planes([(-1, 0, 0, 0)]))   # x >= 0
    my, lw, (ut, lt), gap = g.mouth_y, p.lip_half_width, p.lip_thickness, p.mouth_open
    zm = g.surface_z(0.0, my)
    if gap > 0:
        add("mouth", solid("ellipsoid", (0.0, my, zm - 0.06), (0.85 * lw, gap / 2 + 0.5 * min(ut, lt), 0.1)))
    add("u_lip", solid("ellipsoid", (0.0, my + gap / 2 + 0.6 * ut, zm - 0.02), (lw, ut, 0.1)))
    add("l_lip", solid("ellipsoid", (0.0, my - gap / 2 - 0.6 * lt, zm - 0.03), (0.92 * lw, lt, 0.1)))
    for s, name in ((1, "l_eye"), (-1, "r_eye")):
        x = 0.5 * s
        add(name, solid("ellipsoid", (x, 0.0, g.surface_z(x, 0.0) - 0.35 * p.eye_radii[2]), p.eye_radii,
                        rot_y(g.surface_yaw(x, 0.0))))
    for s, name in ((1, "l_brow"), (-1, "r_brow")):
        x, y = s * (0.5 + p.brow_offset[0]), p.brow_offset[1]
        add(name, solid("ellipsoid", (x, y, g.surface_z(x, y) - 0.4 * p.brow_radii[2]), p.brow_radii,
                        rot_y(g.surface_yaw(x, y)) @ rot_z(s * p.brow_tilt)))
    # Accessories.
    if p.necklace:
        rn, a = p.neck_radius, p.necklace_tilt
        ring = (rn + 0.09, 0.05, rn * 0.92 + 0.09)
        c = np.array([0.0, p.necklace_height, g.neck_z])
        add("neck_l", solid("cylinder", c, ring, rot_x(a)),
            solid("cylinder", c, (rn + 0.008, 2.0, rn * 0.92 + 0.008), rot_x(a)))
        front = c + rot_x(a) @ np.array([0.0, 0.0, ring[2]])
        add("neck_l", solid("ellipsoid", front + (0.0, -0.09, 0.024), (0.07, 0.1, 0.05)))
    if p.earrings:
        r = p.earring_radius
        for s in (1, -1):
            add("ear_r", solid("ellipsoid", (s * g.ear_x, g.ear_y - p.ear_radii[1] - 0.9 * r, g.ear_z + 0.02),
                               (r, 1.3 * r, r)))
    if p.glasses:
        for sol, minus in _glasses(p, g):
            add("eye_g", sol, minus)
    if p.hat:
        vh = 0.0 if p.hair_style == "bald" else p.hair_volume
        y_brim = p.hat_height
        crown = (g.rx + vh + 0.1, g.ry + vh + 0.08, g.rz + vh + 0.12)
        add("hat", solid("ellipsoid", (0.0, g.hy + 0.1, g.hz - 0.04), crown, planes=[(0, -1, 0, -y_brim)]))
        add("hat", solid("cylinder", (0.0, y_brim, g.hz + 0.1),
                         (g.rx + vh + p.hat_brim, 0.04, g.rz + vh + p.hat_brim)))
    al = alignment(p)
    return [Part(q.name, q.label, _aligned(q.solid, al), None if q.minus is None else _aligned(q.minus, al))
            for q in parts]


def _aligned(s: Solid, al: Alignment) -> Solid:
    """``s`` mapped by the similarity ``world = scale * (p - center) + offset``."""
    k, c, o = al.scale, np.asarray(al.center), np.asarray(al.offset)
    planes = [(*n, k * (d - float(np.dot(n, c))) + float(np.dot(n, o)))
              for *n, d in (np.asarray(pl) for pl in s.planes)]
    return solid(s.kind, k * (np.asarray(s.center) - c) + o, k * np.asarray(s.radii), np.asarray(s.rotation), planes)


class _Frame:
    """Derived landmarks of a head in face units (skin surface, ears, mouth) used to place the parts."""

    def __init__(self, p: HeadParams):
        _, self.hy, self.hz = p.skull_center
        self.rx, self.ry, self.rz = p.skull_radii
        self.skin = [solid("ellipsoid", p.skull_center, p.skull_radii), solid("ellipsoid", p.jaw_center, p.jaw_radii)]
        self._ellipsoids = [(np.array(c), np.array(r)) for c, r in
                            ((p.skull_center, p.skull_radii), (p.jaw_center, p.jaw_radii))]
        self.chin_y = p.jaw_center[1] - p.jaw_radii[1]
        self.mouth_y = -p.mouth_drop
        self.ear_y = -p.ear_drop
        self.ear_z = self.hz - 0.05
        self.ear_x = self.half_width(self.ear_y, self.ear_z) + 0.3 * p.ear_radii[0]
        self.ear_top = self.ear_y + p.ear_radii[1]
        self.neck_z = self.hz - 0.1

    def half_width(self, y: float, z: float) -> float:
        """Largest |x| of the skin at height y and depth z."""
        ws = [r[0] * math.sqrt(v) for c, r in self._ellipsoids
              if (v := 1 - ((y - c[1]) / r[1]) ** 2 - ((z - c[2]) / r[2]) ** 2) > 0]
        return max(ws, default=0.0)

    def surface_z(self, x: float, y: float) -> float:
        """Front (largest z) of the skin at (x, y)."""
        zs = [c[2] + r[2] * math.sqrt(v) for c, r in self._ellipsoids
              if (v := 1 - ((x - c[0]) / r[0]) ** 2 - ((y - c[1]) / r[1]) ** 2) > 0]
        return max(zs) if zs else self.hz

    def surface_yaw(self, x: float, y: float, h: float = 1e-3) -> float:
        """Rotation about y turning local +z to the skin normal's horizontal direction."""
        slope = (self.surface_z(x + h, y) - self.surface_z(x - h, y)) / (2 * h)
        return math.atan2(-slope, 1.0)


def _nose(p: HeadParams, g: _Frame) -> list[Solid]:
    """Bridge and tip: a narrow ellipsoid from ``nose_top`` down, a wide one at the nostrils."""
    top, bottom = p.nose_top, p.nose_bottom
    bridge_w, tip_w = p.nose_widths
    tip_h = 0.2
    yb = 0.5 * (top + bottom + tip_h)
    bridge = solid("ellipsoid", (0.0, yb, g.surface_z(0.0, yb) - 0.12), (bridge_w, 0.5 * (top - bottom - tip_h), 0.3),
                   rot_x(-0.25))
    yt = bottom + tip_h
    tip = solid("ellipsoid", (0.0, yt, g.surface_z(0.0, yt) + p.nose_protrusion - 0.3), (tip_w, tip_h, 0.3))
    return [bridge, tip]


def _hair_cap(p: HeadParams, g: _Frame) -> list[tuple[Solid, Solid | None]]:
    v = p.hair_volume
    # Above a plane just over the ears (a little lower at the back), minus the face opening.
    y_low, slope = g.ear_top + 0.02, 0.1
    cap = solid("ellipsoid", (0.0, g.hy + 0.3 * v, g.hz - 0.2 * v), (g.rx + v, g.ry + v, g.rz + v),
                planes=[(0.0, -1.0, slope, -(y_low - slope * g.ear_z))])
    return [(cap, _face_opening(p, g))]


def _face_opening(p: HeadParams, g: _Frame) -> Solid:
    z_cut = g.hz + 0.45 * g.rz
    return solid("space", planes=[(0, 0, -1, -z_cut), (0, 1, 0, p.hairline)])   # z > z_cut, y < hairline


def _hair_long(p: HeadParams, g: _Frame) -> list[tuple[Solid, Solid | None]]:
    v, w = p.hair_volume, p.hair_width
    top, bottom = g.hy + g.ry + v, p.hair_bottom
    c, r = (p.hair_shift, (top + bottom - 0.2) / 2, g.hz - 0.12), (g.rx + v + w, (top - bottom + 0.2) / 2, g.rz + v + 0.06)
    # Above the chin the face opening is cut out; below it a channel that shows the neck's front half.
    upper = solid("ellipsoid", c, r, planes=[(0, -1, 0, -max(bottom, g.chin_y))])                  # y >= chin
    lower = solid("ellipsoid", c, r, planes=[(0, -1, 0, -bottom), (0, 1, 0, g.chin_y)])            # y <= chin
    half = p.neck_radius + 0.1
    channel = solid("space", planes=[(0, 0, -1, -g.neck_z), (1, 0, 0, half), (-1, 0, 0, half)])
    # The hanging mass narrows towards its top: a cap over the skull keeps the crown covered.
    cap = solid("ellipsoid", (0.0, g.hy + 0.3 * v, g.hz - 0.2 * v), (g.rx + v, g.ry + v, g.rz + v))
    return [(cap, _face_opening(p, g)), (upper, _face_opening(p, g)), (lower, channel)]


def _hair_bun(p: HeadParams, g: _Frame) -> list[tuple[Solid, Solid | None]]:
    r = p.bun_radius
    bun = solid("ellipsoid", (0.0, g.hy + 0.55 * g.ry, g.hz - 0.85 * g.rz - 0.5 * p.hair_volume), (r, r, r))
    return _hair_cap(p, g) + [(bun, None)]


def _hair_ponytail(p: HeadParams, g: _Frame) -> list[tuple[Solid, Solid | None]]:
    half = p.ponytail_length / 2
    tail = solid("ellipsoid", (0.0, g.hy + 0.2 - half, g.hz - g.rz - 0.12), (0.18, half, 0.2), rot_x(-0.35))
    return _hair_cap(p, g) + [(tail, None)]


_HAIR_BUILDERS: dict[str, Callable[[HeadParams, _Frame], list[tuple[Solid, Solid | None]]]] = {
    "bald": lambda p, g: [],
    "short": _hair_cap,
    "long": _hair_long,
    "bob": _hair_long,
    "bun": _hair_bun,
    "ponytail": _hair_ponytail,
}


def _glasses(p: HeadParams, g: _Frame) -> list[tuple[Solid, Solid | None]]:
    (a, b), w = p.glasses_radii, p.glasses_frame
    ex, ey = 0.5, 0.0
    eye_front = g.surface_z(ex, ey) + 0.65 * p.eye_radii[2]
    zg = eye_front + 0.1
    axis_z = rot_x(math.pi / 2)  # local y (the cylinder axis) -> world z
    out: list[tuple[Solid, Solid | None]] = []
    for s in (1, -1):
        c = (s * ex, ey, zg)
        out.append((solid("cylinder", c, (a, 0.036, b), axis_z), solid("cylinder", c, (a - w, 1.0, b - w), axis_z)))
    y_bar = ey + 0.3 * b
    out.append((solid("box", (0.0, y_bar, zg), (max(ex - a + w, 0.04), w / 2, 0.03)), None))
    for s in (1, -1):
        start = np.array([s * (ex + a - w / 2), y_bar, zg])
        end = np.array([s * (g.half_width(y_bar, g.ear_z + 0.1) + 0.03), y_bar, g.ear_z + 0.1])
        dx, _, dz = end - start
        length = math.hypot(dx, dz)
        out.append((solid("box", (start + end) / 2, (length / 2, w / 2, 0.024), rot_y(math.atan2(-dz, dx))), None))
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _as_tensor(a, device) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)


@contextlib.contextmanager
def _single_cpu_thread(device: torch.device):
    # The renderer's tensors are small (one part's rays at a time): on a CPU, intra-op threads only add
    # synchronisation, which costs up to 8x on a busy machine. The caller's setting is restored.
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _default_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
