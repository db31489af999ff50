"""Rendering with a SOF model: label maps along camera paths, field slices, volumes, animations.

Everything here goes through the model's field API (``render``, ``field``, ``slice_logits``). A learned
field with one code bound to it is :func:`bind_code` (its phi weights computed once): a point field
(:mod:`toolkit.geometry.fields`: (N, 3) world points -> (N, C) logits, with its box, device and chunk),
sliced, meshed and scored like the synthetic ground truth ``SyntheticHead.logits``. The slicing functions
themselves live in :mod:`toolkit.geometry.slicing` (re-exported here).

Conventions: OpenCV cameras (x right, y down, z forward), Y-up world, camera paths from
:mod:`toolkit.geometry.cameras` orbiting (0, 0.1, 0). Depths are camera-space z. Dimension letters:
S codes (samples), V views, H x W pixels, C classes, L code length.

Speed (``benchmarks/README.md``): on a CPU, label maps are rendered 4096 rays at a time (the activations
stay in cache: 1.1-1.9x faster than 16384, identical results). ``render_label_maps(..., compile=True)``
runs each marching step through ``torch.compile``: after a one-off compilation (10-30 s on a CPU) frames
render 1.2-1.7x faster again, with the same logits to float rounding; worth it for paths of many views.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from toolkit.geometry.cameras import (
    check_projection,
    lift,
    pixel_grid,
    portrait_intrinsics,
    scale_intrinsics,
)
from toolkit.geometry.grids import box
from toolkit.geometry.slicing import SliceResult, camera_plane_points, slice_camera_plane, slice_field

__all__ = [
    "CPU_RENDER_CHUNK", "FIELD_BOUNDS", "BoundField", "SliceResult", "bind_code", "camera_plane_points", "camera_slice",
    "clean_small_regions", "frontal_camera", "intrinsics_for_size", "orbit_radius", "path_cameras", "render_grid",
    "render_label_maps", "save_animation", "save_label_animation", "save_label_sequence", "slice_camera_plane",
    "slice_field", "view_intrinsics",
]

FIELD_BOUNDS = 1.5
"""Half-size of the box a SOF field is sliced and meshed in: the ray-marching sphere (radius 1.5) fits inside."""

CPU_RENDER_CHUNK = 4096
"""Rays per chunk when rendering on a CPU (``chunk=None``); GPUs use the model's default (16384)."""


def render_label_maps(model, codes: torch.Tensor, cam2world: np.ndarray | torch.Tensor, K: np.ndarray | torch.Tensor,
                      size: int, *, batch: int = 8, chunk: int | None = None, return_depth: bool = False,
                      compile: bool = False):
    """Render label maps of codes seen from cameras.

    Args:
        model: a :class:`toolkit.sof.SOFModel`.
        codes: (B, L) latent codes, or (L,) for one code shared by every camera.
        cam2world: (V, 4, 4) cameras; with B codes and V cameras, either B == V (paired), B == 1 or V == 1.
        K: (3, 3) or (V, 3, 3) intrinsics in pixels of a ``size`` x ``size`` image.
        size: output side in pixels.
        batch: views rendered at once (plain path).
        chunk: rays per view marched at once; None: :data:`CPU_RENDER_CHUNK` on a CPU, the model's default
            (16384) on a GPU. Results do not depend on it.
        compile: march through ``torch.compile``d steps, one view at a time (see the module docstring).
            The first call per model and chunk size compiles (needs a C++ compiler on a CPU, Triton on a
            GPU); results equal the plain path's to float rounding (labels can differ only at ties).
    Returns:
        (N, size, size) uint8 class ids (N = max(B, V)); with ``return_depth`` also (N, size, size) depths.
    """
    device = next(model.parameters()).device
    if chunk is None:
        chunk = CPU_RENDER_CHUNK if device.type == "cpu" else 16384
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"render_label_maps: chunk must be a positive int or None; got {chunk!r}")
    codes = torch.as_tensor(codes, dtype=torch.float32, device=device)
    codes = codes[None] if codes.dim() == 1 else codes
    cams = torch.as_tensor(np.asarray(cam2world), dtype=torch.float32, device=device).reshape(-1, 4, 4)
    Ks = torch.as_tensor(np.asarray(K), dtype=torch.float32, device=device).reshape(-1, 3, 3)
    n = max(len(codes), len(cams))
    if len(codes) not in (1, n) or len(cams) not in (1, n):
        raise ValueError(f"render_label_maps: {len(codes)} codes and {len(cams)} cameras cannot be paired")
    codes, cams, Ks = codes.expand(n, -1), cams.expand(n, -1, -1), Ks.expand(n, -1, -1)
    labels, depths = [], []
    was_training = model.training
    model.eval()
    try:
        step = 1 if compile else batch
        for i in range(0, n, step):
            if compile:
                out = _render_compiled(model, codes[i:i + 1], cams[i:i + 1], Ks[i:i + 1], size, size, chunk)
            else:
                out = model.render(codes[i:i + batch], cams[i:i + batch], Ks[i:i + batch], size, size, chunk=chunk)
            labels.append(out.logits.argmax(-1).to(torch.uint8).cpu())
            depths.append(out.depth.cpu())
    finally:
        model.train(was_training)
    labels = torch.cat(labels).numpy()
    return (labels, torch.cat(depths).numpy()) if return_depth else labels


def intrinsics_for_size(K: np.ndarray, stored_size: int, size: int, pixel_center: float = 0.0) -> np.ndarray:
    """Rescale pixel intrinsics of a ``stored_size`` image to ``size`` (the data loader's convention)."""
    return scale_intrinsics(K, size / stored_size, size / stored_size, pixel_center=pixel_center)


def camera_slice(model, code: torch.Tensor, cam2world: np.ndarray, K: np.ndarray, size: int,
                 depth: float, *, weights=None, chunk: int = 4096) -> SliceResult:
    """The original's slice: the classifier on the camera-parallel plane at camera depth ``depth``.

    Args:
        model: a :class:`toolkit.sof.SOFModel`.
        code: (L,) latent code (ignored when ``weights`` is given).
        cam2world: (4, 4) camera; K: (3, 3) intrinsics in pixels of a ``size`` x ``size`` image.
        depth: camera-space depth of the plane.
        weights: precomputed ``model.phi_weights(code[None])``, so repeated slices (a slider) skip the
            hypernetwork.
        chunk: points evaluated at once (a few thousand keep the activations in cache: faster on a CPU).
    """
    device = next(model.parameters()).device
    cam = torch.as_tensor(np.asarray(cam2world), dtype=torch.float32, device=device).reshape(1, 4, 4)
    Kt = torch.as_tensor(np.asarray(K), dtype=torch.float32, device=device).reshape(1, 3, 3)
    uv = pixel_grid(size, size, device=device)[None]
    z = None if weights is not None else torch.as_tensor(code, dtype=torch.float32,
                                                         device=device).reshape(1, -1)
    with torch.no_grad():
        logits = model.slice_logits(z, cam, Kt, uv, depth, weights=weights, chunk=chunk)[0]
    pts = lift(uv, depth, cam, Kt, model.config.projection)[0]
    probs = torch.softmax(logits.float(), -1).reshape(size, size, -1)
    return SliceResult(probs.argmax(-1).cpu().numpy().astype(np.uint8), probs.cpu().numpy(),
                       pts.reshape(size, size, 3).cpu().numpy())


def save_label_sequence(labels: np.ndarray, folder: str | os.PathLike, *, palette: np.ndarray | None = None,
                        prefix: str = "") -> list[Path]:
    """Write (T, H, W) label maps as raw-id PNGs ``{prefix}%04d.png`` (and colour PNGs with a palette)."""
    from toolkit.io import write_label_png, write_rgb_png

    folder = Path(folder)
    paths = []
    for t, lab in enumerate(np.asarray(labels)):
        path = folder / f"{prefix}{t:04d}.png"
        write_label_png(path, lab)
        if palette is not None:
            write_rgb_png(folder / f"{prefix}{t:04d}_vis.png", np.asarray(palette)[lab])
        paths.append(path)
    return paths


def save_animation(frames: np.ndarray, path: str | os.PathLike, *, fps: int = 12) -> Path:
    """Write (T, H, W, 3) uint8 frames as an animated GIF (or MP4 when imageio-ffmpeg is installed)."""
    import imageio.v3 as iio

    from toolkit.io import atomic_write

    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    ext = path.suffix.lower()
    if ext not in (".gif", ".mp4"):
        raise ValueError(f"{path}: unsupported animation format {ext!r}; valid: .gif, .mp4")
    with atomic_write(path) as f:
        if ext == ".gif":
            iio.imwrite(f, frames, extension=".gif", duration=1000 / fps, loop=0)
        else:
            iio.imwrite(f, frames, extension=".mp4", fps=fps)
    return path


# ----------------------------------------------------------------------------------------------------
# Fields with a bound code, views of many codes, camera paths
# ----------------------------------------------------------------------------------------------------

class BoundField:
    """A learned SOF field with one latent code bound to it: ``field(xyz (N, 3)) -> (N, C) logits``.

    A point field (:class:`toolkit.geometry.fields.PointField`): ``bounds`` is the cube of half-size
    :data:`FIELD_BOUNDS`, ``device`` the model's, ``chunk`` its points per call. The phi weights are generated
    once, so repeated queries (sliders, MISE levels, 3D mIoU chunks) skip the hypernetwork. They are a
    snapshot: bind again after the model's weights change. Use :func:`bind_code` to build one.
    """

    bounds = box(FIELD_BOUNDS)

    def __init__(self, model, code: torch.Tensor, *, chunk: int | None = None):
        self.model = model
        device = next(model.parameters()).device
        self.code = torch.as_tensor(code, dtype=torch.float32, device=device).reshape(1, -1).detach()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                self.weights = model.phi_weights(self.code)
        finally:
            model.train(was_training)
        # A few thousand points keep a CPU's activations in cache (about 25% faster than 16k); GPUs want more.
        self.chunk = chunk or (4096 if device.type == "cpu" else 65536)
        self.device = device
        self.num_classes = model.config.num_classes
        self.projection = model.config.projection

    @torch.no_grad()
    def __call__(self, xyz: torch.Tensor) -> torch.Tensor:
        xyz = torch.as_tensor(xyz)
        return self.model.field(None, xyz.reshape(1, -1, 3), weights=self.weights, chunk=self.chunk)[0]

    def __repr__(self) -> str:
        return f"BoundField(L={self.code.shape[1]}, C={self.num_classes}, projection={self.projection!r})"


def bind_code(model, code: torch.Tensor | np.ndarray, *, chunk: int | None = None) -> BoundField:
    """The semantic field of one code: a callable (N, 3) world points -> (N, C) logits.

    Args:
        model: a :class:`toolkit.sof.SOFModel`.
        code: (L,) or (1, L) latent code (a training code ``model.embedding(i)[0]``, a GMM sample, ...).
        chunk: points evaluated at once (default 4096 on a CPU, 65536 on a GPU).
    """
    code_t = torch.as_tensor(np.asarray(code.detach().cpu() if isinstance(code, torch.Tensor) else code))
    if code_t.numel() != model.config.latent_dim:
        raise ValueError(f"bind_code: expected one code of length {model.config.latent_dim}; "
                         f"got shape {tuple(code_t.shape)}")
    return BoundField(model, code_t, chunk=chunk)


def render_grid(model, codes: torch.Tensor | np.ndarray, cam2world: np.ndarray, K: np.ndarray, size: int, *,
                batch: int = 8, chunk: int | None = None, compile: bool = False) -> np.ndarray:
    """Every code seen from every camera (all pairs, unlike :func:`render_label_maps`).

    Args:
        codes: (S, L) latent codes.
        cam2world: (V, 4, 4) cameras (e.g. a camera path).
        K: (3, 3) intrinsics of a ``size`` x ``size`` image.
        batch, chunk, compile: as :func:`render_label_maps`.
    Returns:
        (S, V, size, size) uint8 class ids.
    """
    codes = torch.as_tensor(np.asarray(codes.detach().cpu() if isinstance(codes, torch.Tensor) else codes),
                            dtype=torch.float32).reshape(-1, model.config.latent_dim)
    cams = np.asarray(cam2world).reshape(-1, 4, 4)
    return np.stack([render_label_maps(model, z, cams, K, size, batch=batch, chunk=chunk, compile=compile)
                     for z in codes])


def orbit_radius(projection: str) -> float:
    """Camera distance from the target of the synthetic portraits' cameras for a projection."""
    from toolkit.synthetic.heads import CAMERA_SETUPS

    radius = CAMERA_SETUPS[check_projection(projection)]["radius"]
    return float(radius) if np.isscalar(radius) else float(np.mean(radius))


def path_cameras(name: str, *, projection: str = "ortho", **kwargs) -> np.ndarray:
    """A named camera path (:data:`toolkit.geometry.cameras.CAMERA_PATHS`: "spiral", "turntable", "sphere",
    "yaw_sweep") at the orbit radius of ``projection`` unless ``radius`` is given: (V, 4, 4)."""
    from toolkit.geometry.cameras import camera_path

    kwargs.setdefault("radius", orbit_radius(projection))
    return camera_path(name, **kwargs)


def frontal_camera(projection: str = "ortho") -> np.ndarray:
    """(4, 4) cam2world of the frontal view (view 00 of the synthetic portraits), looking at (0, 0.1, 0)."""
    from toolkit.geometry.cameras import orbit_cameras

    return orbit_cameras(orbit_radius(projection), 0.0, 0.0)


def view_intrinsics(size: int, projection: str = "ortho") -> np.ndarray:
    """(3, 3) intrinsics of a ``size`` x ``size`` render that frames the portraits as the training data."""
    return portrait_intrinsics(size, projection)


# ----------------------------------------------------------------------------------------------------
# Clean-up and animations
# ----------------------------------------------------------------------------------------------------

def clean_small_regions(labels: np.ndarray, min_area: int, *, connectivity: int = 1,
                        max_passes: int = 20) -> np.ndarray:
    """Give every connected region smaller than ``min_area`` pixels the majority label of its border.

    The original's Test_MV_Inference cleaned renders with ``skimage.morphology.area_closing(area_threshold=
    6000)``, a grey-level closing that treats class ids as intensities (it can only raise ids, and which
    class wins depends on the numbering). Here each small region takes the most frequent label among the
    pixels bordering it; regions are handled smallest first, and passes repeat until nothing changes
    (each relabel merges a region into a neighbour, so this terminates).

    Args:
        labels: (H, W) or (T, H, W) integer class ids.
        min_area: regions with fewer pixels are relabelled (<= 1 returns a copy unchanged).
        connectivity: 1 (4-neighbourhood) or 2 (8-neighbourhood), for regions and their borders.
    Returns:
        Cleaned labels, same shape and dtype.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim == 3:
        return np.stack([clean_small_regions(m, min_area, connectivity=connectivity, max_passes=max_passes)
                         for m in labels]) if len(labels) else labels.copy()
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W) or (T, H, W); got shape {labels.shape}")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2; got {connectivity}")
    out = labels.copy()
    if min_area <= 1 or out.size == 0:
        return out
    structure = ndimage.generate_binary_structure(2, connectivity)
    for _ in range(max_passes):
        small = []  # (area, mask slice, region mask within the slice)
        for c in np.unique(out):
            comp, n = ndimage.label(out == c, structure)
            if n == 0:
                continue
            areas = np.bincount(comp.ravel())
            for k, sl in enumerate(ndimage.find_objects(comp), start=1):
                if areas[k] < min_area:
                    # Grow the box by one pixel so the border is inside it.
                    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
                    small.append((int(areas[k]), box, comp[box] == k))
        if not small:
            break
        small.sort(key=lambda item: item[0])
        touched = np.zeros(out.shape, dtype=bool)
        changed = False
        for _, box, region in small:
            border = ndimage.binary_dilation(region, structure) & ~region
            if not border.any() or touched[box][border | region].any():
                continue  # whole image, or a neighbour changed this pass: its size is stale, retry next pass
            votes = np.bincount(out[box][border].astype(np.int64).ravel())
            out[box][region] = votes.argmax()
            touched[box][region] = True
            changed = True
        if not changed:
            break
    return out


def save_label_animation(labels: np.ndarray, path: str | os.PathLike, *, fps: int = 12, scale: int = 1,
                         label_set: str = "sof20") -> Path:
    """Colour (T, H, W) label maps with the class palette and write them as an animation.

    Args:
        scale: integer nearest-neighbour upscaling of every frame (small renders stay crisp).
    """
    from toolkit.labels import colorize

    frames = colorize(np.asarray(labels), label_set)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    return save_animation(frames, path, fps=fps)


# ----------------------------------------------------------------------------------------------------
# Compiled marching (render_label_maps(compile=True))
# ----------------------------------------------------------------------------------------------------

_COMPILED: dict[str, Callable] = {}
"""The compiled marching step, created on first use."""


@torch.no_grad()
def _render_compiled(model, codes: torch.Tensor, cam2world: torch.Tensor, K: torch.Tensor, height: int, width: int,
                     chunk: int):
    """``model.render`` of ONE view in eval mode with each marching step compiled (10 of its 11 phi
    evaluations; the classifier runs once per ray and stays eager, which halves the compilation time).

    ``render`` pads the last chunk, so a model and chunk size compile once; the weights are arguments, so
    new codes need no recompilation.
    """
    from toolkit.sof.model import march_step

    if not _COMPILED:
        _COMPILED["step"] = torch.compile(march_step, dynamic=False)
    return model.render(None, cam2world, K, height, width, weights=model.phi_weights(codes),
                        chunk=chunk, step=_COMPILED["step"])
