"""The Semantic Occupancy Field model (reference: sof.md section 1; fixtures/sof/README.md sections 4-5).

SOF is an SRN-style auto-decoder. Every training portrait (instance) owns a latent code z (B, L). A
hypernetwork maps z to the weights of a small per-instance MLP ``phi: R^3 -> R^F``. A learned,
direction-conditioned ray marcher moves each pixel's ray ``steps`` times, starting where the ray enters a
sphere of radius 1.5 around the world origin: ``x_{k+1} = x_k + r * M(phi(x_k), r)``. At the final point a
shared classifier (the original's "pixel generator") turns ``phi(x_steps)`` into C class logits. The 3D
semantic field is ``field(z, xyz) = classifier(phi_z(xyz))``; rendering, slicing, volumes and meshes all
use it.

Conventions: OpenCV cameras (x right, y down, z forward), Y-up world, pixel coordinates (column, row)
with the original's integer convention (``pixel_center=0.0``); see :mod:`toolkit.geometry.cameras`.
Depth is camera-space z (not Euclidean distance), as in the original. Dimension letters: B batch,
N points or rays, L latent size, F phi width, C classes, H x W pixels, S marching steps.

The original's checkpoint layout loads through :func:`load_original_state_dict` /
:meth:`SOFModel.from_original`, whose key-mapping shim is :func:`original_to_native_key`.
"""
from __future__ import annotations

import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.geometry.cameras import camera_depth, check_projection, generate_rays, lift, pixel_grid
from toolkit.io import DataError
from toolkit.training.checkpoints import load_checkpoint

DEFAULT_CHUNK = 16384
"""Rays (or points) per batch item processed at once by :meth:`SOFModel.render` / :meth:`SOFModel.field`."""

ORIGINAL_START_DEPTH = 0.05
"""Camera depth of the original's provisional start point (d0 = 0.05 * dpt_scale) before it is moved to
the sphere entry. It only changes float rounding of the start point (fixtures README section 5)."""


# ----------------------------------------------------------------------------------------------------
# Configuration and presets
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SOFModelConfig:
    """Sizes and knobs of :class:`SOFModel`; ``dataclasses.asdict`` of it is stored in checkpoints."""

    num_instances: int = 1
    """Rows of the latent-code table (training portraits)."""
    latent_dim: int = 256
    """L, size of a latent code; also the hypernetworks' hidden width (as in the original)."""
    phi_width: int = 256
    """F, width of the per-instance MLP phi and of the classifier's hidden layers."""
    marcher_width: int = 256
    """Hidden width of the ray-marcher step MLP (fixed at 256 in the original)."""
    steps: int = 10
    """Ray-marching steps (the original hard-coded 10 and ignored --tracing_steps)."""
    num_classes: int = 20
    """C, number of semantic classes (20 for the SOF label set)."""
    projection: str = "ortho"
    """Camera model: "ortho" (the released checkpoint) or "perspective"."""
    sphere_radius: float = 1.5
    """Rays start where they enter this sphere around the world origin."""
    start_jitter: float = 0.01
    """Std of the random shift of the start point along the ray, in training mode only (0 disables)."""

    def __post_init__(self) -> None:
        for name in ("num_instances", "latent_dim", "phi_width", "marcher_width", "steps", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SOFModelConfig.{name} must be a positive int; got {value!r}")
        check_projection(self.projection)
        if not self.sphere_radius > 0:
            raise ValueError(f"SOFModelConfig.sphere_radius must be > 0; got {self.sphere_radius!r}")
        if not self.start_jitter >= 0:
            raise ValueError(f"SOFModelConfig.start_jitter must be >= 0; got {self.start_jitter!r}")


MODEL_PRESETS: dict[str, SOFModelConfig] = {
    # The released checkpoint's sizes (34.9 M parameters without codes).
    "paper": SOFModelConfig(latent_dim=256, phi_width=256, marcher_width=256, steps=10, num_classes=20),
    # About 2.3 M parameters (2.1 M of them hypernetwork outputs): for CPU training at 32-64 px.
    "small": SOFModelConfig(latent_dim=64, phi_width=128, marcher_width=128, steps=10, num_classes=20),
}


def model_config(preset: str = "paper", **overrides: Any) -> SOFModelConfig:
    """A preset from :data:`MODEL_PRESETS` with fields replaced, e.g. ``model_config("small", num_instances=30)``."""
    try:
        base = MODEL_PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown SOF model preset {preset!r}; valid: {sorted(MODEL_PRESETS)}") from None
    return replace(base, **overrides)


# ----------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------

class PhiWeights(NamedTuple):
    """Hypernetwork-generated weights of phi for a batch of codes.

    Layer l computes ``relu(layer_norm(x @ weights[l].T + biases[l]))``.
    """

    weights: tuple[torch.Tensor, ...]
    """Per layer (B, out, in): (B, F, 3), (B, F, F), (B, F, F)."""
    biases: tuple[torch.Tensor, ...]
    """Per layer (B, out)."""

    @property
    def batch_size(self) -> int:
        return self.weights[0].shape[0]

    def select(self, index: int | slice | torch.Tensor) -> PhiWeights:
        """The weights of some batch items (an int keeps a batch dimension of 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return PhiWeights(tuple(w[index] for w in self.weights), tuple(b[index] for b in self.biases))


class SOFOutput(NamedTuple):
    logits: torch.Tensor
    """(B, N, C) class logits at the final marched points."""
    depth: torch.Tensor
    """(B, N) camera-space z of the final marched points."""


class MarchTrace(NamedTuple):
    points: torch.Tensor
    """(S + 1, B, N, 3) world points x_0..x_S (x_0 is the sphere-entry start point)."""
    steps: torch.Tensor
    """(S, B, N) raw step lengths s_0..s_{S-1}; points[k + 1] = points[k] + directions * steps[k]."""
    directions: torch.Tensor
    """(B, N, 3) unit ray directions."""
    logits: torch.Tensor
    """(B, N, C) logits at points[-1]."""
    depth: torch.Tensor
    """(B, N) camera-space z of points[-1]."""


class RenderResult(NamedTuple):
    logits: torch.Tensor
    """(B, H, W, C) class logits."""
    depth: torch.Tensor
    """(B, H, W) camera-space depth of the final marched points."""


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------

class _FCLayer(nn.Module):
    """Linear -> LayerNorm(affine) -> ReLU (the original's FCLayer)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.norm = nn.LayerNorm(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.linear(x)))


class _MLP(nn.Module):
    """``depth`` FC layers of width ``hidden``, then a plain Linear (the original's FCBlock)."""

    def __init__(self, in_features: int, hidden: int, depth: int, out_features: int):
        super().__init__()
        widths = [in_features] + [hidden] * depth
        self.hidden = nn.ModuleList(_FCLayer(a, b) for a, b in pairwise(widths))
        self.out = nn.Linear(widths[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = layer(x)
        return self.out(x)


class _StepMLP(nn.Module):
    """Ray-marcher step predictor: h <- W_i h + (A_i r + a_i), ReLU except after the last layer.

    The original named it ``lstm`` although it is a stateless MLP (sof.md 1.4).
    """

    def __init__(self, in_features: int, hidden: int, depth: int = 3):
        super().__init__()
        widths = [in_features] + [hidden] * depth + [1]
        self.linears = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in pairwise(widths))
        self.directions = nn.ModuleList(nn.Linear(3, b) for b in widths[1:])

    def direction_terms(self, directions: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer affine terms A_i r + a_i, computed once per ray and reused at every step."""
        return [d(directions) for d in self.directions]

    def forward(self, features: torch.Tensor, terms: list[torch.Tensor]) -> torch.Tensor:
        h = features
        last = len(self.linears) - 1
        for i, (linear, term) in enumerate(zip(self.linears, terms)):
            h = linear(h) + term
            if i < last:
                h = F.relu(h)
        return h


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, a=0.0, nonlinearity="relu", mode="fan_in")


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------

class SOFModel(nn.Module):
    """Semantic Occupancy Field: latent codes, hypernetwork phi, ray marcher and classifier.

    Args:
        config: sizes and knobs (:class:`SOFModelConfig`, or a preset via :func:`model_config`).
    """

    PHI_LAYERS = 3
    HYPER_HIDDEN_LAYERS = 2
    CLASSIFIER_HIDDEN_LAYERS = 3
    MARCHER_HIDDEN_LAYERS = 3

    def __init__(self, config: SOFModelConfig | None = None):
        super().__init__()
        self.config = config = SOFModelConfig() if config is None else config
        L, F_, C = config.latent_dim, config.phi_width, config.num_classes
        self.phi_shapes = [(F_, 3)] + [(F_, F_)] * (self.PHI_LAYERS - 1)
        """(out, in) of each phi layer."""

        self.latent_codes = nn.Embedding(config.num_instances, L)
        self.hypernets = nn.ModuleList(
            _MLP(L, L, self.HYPER_HIDDEN_LAYERS, out * inp + out) for out, inp in self.phi_shapes)
        self.marcher = _StepMLP(F_, config.marcher_width, self.MARCHER_HIDDEN_LAYERS)
        self.classifier = _MLP(F_, F_, self.CLASSIFIER_HIDDEN_LAYERS, C)

        self.apply(_init_weights)
        for hyper in self.hypernets:
            hyper.out.weight.data.mul_(0.1)  # small generated weights at init, as the original
        nn.init.normal_(self.latent_codes.weight, 0.0, 0.01)

        self.phi_cache_size = 64
        """Codes whose phi weights are kept at inference (0 disables the cache)."""
        self._phi_cache: OrderedDict[tuple, PhiWeights] = OrderedDict()
        self._phi_cache_version: tuple | None = None

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, preset: str = "paper", **overrides: Any) -> SOFModel:
        """Build from a named preset (:data:`MODEL_PRESETS`) with config fields replaced."""
        return cls(model_config(preset, **overrides))

    @classmethod
    def from_original(cls, state_dict_or_path: Mapping[str, Any] | str | os.PathLike, projection: str = "ortho",
                      *, num_classes: int | None = None, **config_overrides: Any) -> SOFModel:
        """Load an original SOF checkpoint (``{'model': sd, ...}`` or a bare state dict, or a path to one).

        Sizes are inferred from the tensor shapes; see :func:`load_original_state_dict`.
        """
        return load_original_state_dict(cls, state_dict_or_path, projection=projection,
                                        num_classes=num_classes, **config_overrides)

    def config_dict(self) -> dict[str, Any]:
        """``asdict(self.config)``, for checkpoints."""
        return asdict(self.config)

    # -- latent codes -------------------------------------------------------------------------------

    def embedding(self, instance_idx: torch.Tensor | int | list[int]) -> torch.Tensor:
        """Latent codes of instances: (B,) indices -> (B, L)."""
        idx = torch.as_tensor(instance_idx, dtype=torch.long, device=self.latent_codes.weight.device)
        return self.latent_codes(idx.reshape(-1))

    # -- phi ----------------------------------------------------------------------------------------

    def phi_weights(self, z: torch.Tensor) -> PhiWeights:
        """Generate phi's weights from codes z (B, L).

        At inference (eval mode, and no gradient wanted through z or the hypernetworks) results are kept
        in an LRU cache keyed on each code's values; the cache is dropped when hypernetwork parameters
        change (optimizer step, ``load_state_dict``, ``.to``). In training mode they are always computed
        afresh, so gradients reach z and the hypernetworks.
        """
        z = self._check_codes(z)
        if not self._use_phi_cache(z):
            return self._generate_phi(z)
        self._validate_phi_cache()
        values = z.detach().to("cpu", torch.float64).numpy()  # exact for every float dtype
        keys = [(str(z.device), z.dtype, row.tobytes()) for row in values]
        missing = [i for i, k in enumerate(keys) if k not in self._phi_cache]
        if missing:
            with torch.no_grad():
                fresh = self._generate_phi(z[missing].detach())
            for j, i in enumerate(missing):
                row = fresh.select(j)  # cloned: a view would keep the whole batch alive
                self._phi_cache[keys[i]] = PhiWeights(tuple(w.clone() for w in row.weights),
                                                      tuple(b.clone() for b in row.biases))
        rows = []
        for k in keys:
            self._phi_cache.move_to_end(k)
            rows.append(self._phi_cache[k])
        while len(self._phi_cache) > self.phi_cache_size:
            self._phi_cache.popitem(last=False)
        return PhiWeights(tuple(torch.cat([r.weights[i] for r in rows]) for i in range(self.PHI_LAYERS)),
                          tuple(torch.cat([r.biases[i] for r in rows]) for i in range(self.PHI_LAYERS)))

    def clear_phi_cache(self) -> None:
        self._phi_cache.clear()

    def phi(self, weights: PhiWeights, xyz: torch.Tensor) -> torch.Tensor:
        """phi features of world points: xyz (B, N, 3) -> (B, N, F), non-negative."""
        h = xyz
        for w, b in zip(weights.weights, weights.biases):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            h = F.relu(F.layer_norm(h, h.shape[-1:], eps=1e-5))
        return h

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits from phi features: (..., F) -> (..., C)."""
        return self.classifier(features)

    # -- the field ----------------------------------------------------------------------------------

    def field(self, z: torch.Tensor | None, xyz: torch.Tensor, *, weights: PhiWeights | None = None,
              chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Class logits of the semantic field at world points: ``classifier(phi_z(xyz))``.

        Args:
            z: (B, L) codes, or (L,) for one code (then xyz is (N, 3) and the result (N, C)). May be None
                when ``weights`` is given.
            xyz: (B, N, 3) world points, or (N, 3) shared by all codes.
            weights: precomputed :meth:`phi_weights` (skips the hypernetwork).
            chunk: points per batch item evaluated at once (bounds memory).
        Returns:
            (B, N, C) logits ((N, C) for an unbatched code).
        """
        unbatched = z is not None and z.dim() == 1
        if weights is None:
            if z is None:
                raise ValueError("field: give codes z or precomputed weights")
            weights = self.phi_weights(z.unsqueeze(0) if unbatched else z)
        B = weights.batch_size
        if xyz.dim() == 2:
            xyz = xyz.unsqueeze(0).expand(B, -1, -1)
        if xyz.dim() != 3 or xyz.shape[-1] != 3 or xyz.shape[0] != B:
            raise ValueError(f"field: xyz must be ({B}, N, 3) or (N, 3); got {tuple(xyz.shape)}")
        _check_chunk(chunk)
        xyz = xyz.to(weights.weights[0])  # dtype and device of the model
        out = [self.classify(self.phi(weights, xyz[:, i:i + chunk])) for i in range(0, xyz.shape[1], chunk)]
        logits = torch.cat(out, dim=1) if out else xyz.new_zeros(B, 0, self.config.num_classes)
        return logits[0] if unbatched else logits

    # -- ray marching -------------------------------------------------------------------------------

    def step_lengths(self, weights: PhiWeights, xyz: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """One marcher evaluation: raw step lengths (B, N) at points xyz (B, N, 3) along unit directions."""
        terms = self.marcher.direction_terms(directions.to(xyz.dtype))
        return self.marcher(self.phi(weights, xyz), terms).squeeze(-1)

    def start_points(self, cam2world: torch.Tensor, K: torch.Tensor, uv: torch.Tensor, directions: torch.Tensor,
                     *, start_depth: float = ORIGINAL_START_DEPTH) -> torch.Tensor:
        """Sphere-entry start points (B, N, 3), before any jitter.

        Like the original, a provisional point at camera depth ``start_depth`` is moved to the point of
        the ray's line closest to the origin, and then back by sqrt(R^2 - dist^2) where the line passes
        within R. Rays that miss the sphere start at the closest point.
        """
        p0 = lift(uv, start_depth, cam2world, K, self.config.projection)
        radius = self.config.sphere_radius
        to_centre = -p0
        length = to_centre.norm(dim=-1, keepdim=True)
        cos = ((to_centre / length) * directions).sum(-1, keepdim=True)
        # The +1e-6 terms are the original's; kept for parity (they shift points by < 1e-5).
        sin = torch.sqrt(1.0 - cos * cos + 1e-6)
        dist = sin * length
        closest = p0 + directions * (cos * length)
        hit = dist < radius
        # Double where: no NaN (nor NaN gradients) from the square root on rays that miss.
        back = torch.sqrt(torch.where(hit, radius * radius - dist * dist + 1e-6, torch.ones_like(dist)))
        return torch.where(hit, closest - directions * back, closest)

    def march(self, z: torch.Tensor | None, cam2world: torch.Tensor, K: torch.Tensor, uv: torch.Tensor, *,
              weights: PhiWeights | None = None, start_depth: float = ORIGINAL_START_DEPTH) -> MarchTrace:
        """Ray-march and return every intermediate point (for tests and figures).

        Same arguments as :meth:`forward`.
        """
        return self._march(z, cam2world, K, uv, weights=weights, start_depth=start_depth, trace=True)

    def forward(self, z: torch.Tensor | None, cam2world: torch.Tensor, K: torch.Tensor, uv: torch.Tensor, *,
                weights: PhiWeights | None = None, start_depth: float = ORIGINAL_START_DEPTH) -> SOFOutput:
        """Ray-march pixels and classify the final points (differentiable; used for training).

        Args:
            z: (B, L) latent codes (None when ``weights`` is given).
            cam2world: (B, 4, 4) or (4, 4) OpenCV cam2world.
            K: (B, 3, 3) or (3, 3) pixel intrinsics (a (4, 4) matrix works too; fx, fy, cx, cy are read).
            uv: (B, N, 2) or (N, 2) pixel coordinates (column, row), integer convention.
            weights: precomputed :meth:`phi_weights` for z.
            start_depth: camera depth of the provisional start point (the original's 0.05 * dpt_scale);
                it only changes float rounding of the sphere-entry start.
        Returns:
            SOFOutput(logits (B, N, C), depth (B, N)).
        """
        trace = self._march(z, cam2world, K, uv, weights=weights, start_depth=start_depth, trace=False)
        return SOFOutput(trace.logits, trace.depth)

    @torch.no_grad()
    def render(self, z: torch.Tensor | None, cam2world: torch.Tensor, K: torch.Tensor, height: int, width: int,
               *, weights: PhiWeights | None = None, chunk: int = DEFAULT_CHUNK, pixel_center: float = 0.0,
               start_depth: float = ORIGINAL_START_DEPTH, step: MarchStep | None = None) -> RenderResult:
        """Render full images without gradients, ``chunk`` rays per batch item at a time.

        Args:
            z, cam2world, K: as :meth:`forward` (K in pixels of the height x width image).
            height, width: image size H, W.
            pixel_center: 0.0 (the original's integer pixel coordinates) or 0.5 (pixel centres).
            step: a replacement for :func:`march_step` with the same result, e.g. ``torch.compile(march_step)``.
                The last chunk is then padded to ``chunk`` rays so that the step always sees one shape.
        Returns:
            RenderResult(logits (B, H, W, C), depth (B, H, W)).
        """
        _check_chunk(chunk)
        if weights is None:
            weights = self.phi_weights(self._check_codes(z))
        ref = weights.weights[0]
        uv = pixel_grid(height, width, pixel_center, device=ref.device, dtype=ref.dtype)
        total = uv.shape[0]
        pad = -total % chunk if step is not None and total > chunk else 0
        if pad:  # copies of the last ray, dropped below
            uv = torch.cat([uv, uv[-1:].expand(pad, 2)])
        logits, depth = [], []
        for i in range(0, uv.shape[0], chunk):
            out = self._march(None, cam2world, K, uv[i:i + chunk], weights=weights, start_depth=start_depth,
                              trace=False, step=step)
            logits.append(out.logits)
            depth.append(out.depth)
        B = weights.batch_size
        return RenderResult(torch.cat(logits, 1)[:, :total].reshape(B, height, width, -1),
                            torch.cat(depth, 1)[:, :total].reshape(B, height, width))

    def slice_logits(self, z: torch.Tensor | None, cam2world: torch.Tensor, K: torch.Tensor, uv: torch.Tensor,
                     depth: float | torch.Tensor, *, weights: PhiWeights | None = None,
                     chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
        """Logits on the camera-parallel plane at camera depth ``depth``, no marching (the original's dpt=float).

        Args:
            z, cam2world, K, uv: as :meth:`forward`.
            depth: scalar camera-space depth, or (B, N) per-pixel depths.
        Returns:
            (B, N, C) logits.
        """
        if weights is None:
            weights = self.phi_weights(self._check_codes(z))
        cam2world, K, uv = self._check_cameras(weights.batch_size, cam2world, K, uv, weights.weights[0])
        points = lift(uv, depth, cam2world, K, self.config.projection)
        return self.field(None, points, weights=weights, chunk=chunk)

    # -- internals ----------------------------------------------------------------------------------

    def _march(self, z, cam2world, K, uv, *, weights, start_depth, trace, step: MarchStep | None = None
               ) -> MarchTrace:
        if weights is None:
            if z is None:
                raise ValueError("give codes z or precomputed weights")
            weights = self.phi_weights(z)
        B = weights.batch_size
        cam2world, K, uv = self._check_cameras(B, cam2world, K, uv, weights.weights[0])
        directions = generate_rays(cam2world, K, uv, self.config.projection).directions
        x = self.start_points(cam2world, K, uv, directions, start_depth=start_depth)
        if self.training and self.config.start_jitter > 0:
            # Jitter along the ray in training only; the original also jittered at inference, which made
            # its renders stochastic.
            x = x + directions * (torch.randn_like(x[..., :1]) * self.config.start_jitter)
        terms = self.marcher.direction_terms(directions)
        points, steps = [x], []
        for _ in range(self.config.steps):
            if not trace:
                x = (step or march_step)(self, weights, x, directions, terms)
                continue
            s = self.marcher(self.phi(weights, x), terms)
            x = x + directions * s
            points.append(x)
            steps.append(s.squeeze(-1))
        logits = self.classify(self.phi(weights, x))
        depth = camera_depth(x, cam2world)
        if not trace:
            return MarchTrace(x.unsqueeze(0), x.new_zeros(0, *x.shape[:2]), directions, logits, depth)
        return MarchTrace(torch.stack(points), torch.stack(steps) if steps else x.new_zeros(0, *x.shape[:2]),
                          directions, logits, depth)

    def _generate_phi(self, z: torch.Tensor) -> PhiWeights:
        weights, biases = [], []
        for hyper, (out, inp) in zip(self.hypernets, self.phi_shapes):
            p = hyper(z)
            weights.append(p[:, :out * inp].reshape(-1, out, inp))  # row-major (out, in), as the original
            biases.append(p[:, out * inp:])
        return PhiWeights(tuple(weights), tuple(biases))

    def _use_phi_cache(self, z: torch.Tensor) -> bool:
        if self.training or self.phi_cache_size <= 0:
            return False
        needs_grad = z.requires_grad or any(p.requires_grad for p in self.hypernets.parameters())
        return not (torch.is_grad_enabled() and needs_grad)

    def _validate_phi_cache(self) -> None:
        version = tuple((p.data_ptr(), p.dtype, p._version) for p in self.hypernets.parameters())
        if version != self._phi_cache_version:
            self._phi_cache.clear()
            self._phi_cache_version = version

    def _check_codes(self, z: torch.Tensor | None) -> torch.Tensor:
        if z is None:
            raise ValueError("give codes z or precomputed weights")
        L = self.config.latent_dim
        if z.dim() != 2 or z.shape[1] != L:
            raise ValueError(f"latent codes must be (B, {L}); got {tuple(z.shape)}")
        return z

    def _check_cameras(self, B: int, cam2world: torch.Tensor, K: torch.Tensor, uv: torch.Tensor,
                       ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device, dtype = ref.device, ref.dtype
        cam2world, K, uv = (torch.as_tensor(t) for t in (cam2world, K, uv))
        if cam2world.shape[-2:] != (4, 4) or cam2world.dim() not in (2, 3):
            raise ValueError(f"cam2world must be ({B}, 4, 4) or (4, 4); got {tuple(cam2world.shape)}")
        if K.shape[-2:] not in ((3, 3), (4, 4)) or K.dim() not in (2, 3):
            raise ValueError(f"K must be ({B}, 3, 3) or (3, 3); got {tuple(K.shape)}")
        if uv.shape[-1] != 2 or uv.dim() not in (2, 3):
            raise ValueError(f"uv must be ({B}, N, 2) or (N, 2); got {tuple(uv.shape)}")
        cam2world = cam2world.expand(B, 4, 4) if cam2world.dim() == 2 else cam2world
        K = K.expand(B, *K.shape) if K.dim() == 2 else K
        uv = uv.expand(B, *uv.shape) if uv.dim() == 2 else uv
        for name, t in (("cam2world", cam2world), ("K", K), ("uv", uv)):
            if t.shape[0] != B:
                raise ValueError(f"{name} has batch size {t.shape[0]}; the codes have {B}")
        return tuple(t.to(device=device, dtype=dtype) for t in (cam2world, K, uv))


def march_step(model: SOFModel, weights: PhiWeights, x: torch.Tensor, directions: torch.Tensor,
               terms: list[torch.Tensor]) -> torch.Tensor:
    """One ray-marching update: ``x + d * marcher(phi(x))`` for points ``x`` (B, N, 3) along ``directions``."""
    return x + directions * model.marcher(model.phi(weights, x), terms)


MarchStep = Callable[[SOFModel, PhiWeights, torch.Tensor, torch.Tensor, list[torch.Tensor]], torch.Tensor]


def _check_chunk(chunk: int) -> None:
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int; got {chunk!r}")


# ----------------------------------------------------------------------------------------------------
# Original checkpoints (walnut-REE/sof layout): key-mapping shim and loader
# ----------------------------------------------------------------------------------------------------

# (original key pattern, native key template). The original's names come from SRN: the hypernetworks are
# `hyper_phi.layers.l.hyper_linear.hypo_params` FCBlocks (`net.i.net.0` Linear, `net.i.net.1` LayerNorm,
# last `net.K` Linear), the step MLP is `ray_marcher.lstm` (not an LSTM) and the classifier is
# `pixel_generator`.
_KEY_RULES: list[tuple[str, str]] = [
    (r"latent_codes\.weight", "latent_codes.weight"),
    (r"hyper_phi\.layers\.(\d+)\.hyper_linear\.hypo_params\.net\.([01])\.net\.0\.(weight|bias)",
     r"hypernets.\1.hidden.\2.linear.\3"),
    (r"hyper_phi\.layers\.(\d+)\.hyper_linear\.hypo_params\.net\.([01])\.net\.1\.(weight|bias)",
     r"hypernets.\1.hidden.\2.norm.\3"),
    (r"hyper_phi\.layers\.(\d+)\.hyper_linear\.hypo_params\.net\.2\.(weight|bias)", r"hypernets.\1.out.\2"),
    (r"ray_marcher\.lstm\.linear\.(\d+)\.weight", r"marcher.linears.\1.weight"),
    (r"ray_marcher\.lstm\.bias\.(\d+)\.(weight|bias)", r"marcher.directions.\1.\2"),
    (r"pixel_generator\.net\.([012])\.net\.0\.(weight|bias)", r"classifier.hidden.\1.linear.\2"),
    (r"pixel_generator\.net\.([012])\.net\.1\.(weight|bias)", r"classifier.hidden.\1.norm.\2"),
    (r"pixel_generator\.net\.3\.(weight|bias)", r"classifier.out.\1"),
]
_REVERSE_RULES: list[tuple[str, str]] = [
    (r"latent_codes\.weight", "latent_codes.weight"),
    (r"hypernets\.(\d+)\.hidden\.(\d+)\.linear\.(weight|bias)",
     r"hyper_phi.layers.\1.hyper_linear.hypo_params.net.\2.net.0.\3"),
    (r"hypernets\.(\d+)\.hidden\.(\d+)\.norm\.(weight|bias)",
     r"hyper_phi.layers.\1.hyper_linear.hypo_params.net.\2.net.1.\3"),
    (r"hypernets\.(\d+)\.out\.(weight|bias)", r"hyper_phi.layers.\1.hyper_linear.hypo_params.net.2.\2"),
    (r"marcher\.linears\.(\d+)\.weight", r"ray_marcher.lstm.linear.\1.weight"),
    (r"marcher\.directions\.(\d+)\.(weight|bias)", r"ray_marcher.lstm.bias.\1.\2"),
    (r"classifier\.hidden\.(\d+)\.linear\.(weight|bias)", r"pixel_generator.net.\1.net.0.\2"),
    (r"classifier\.hidden\.(\d+)\.norm\.(weight|bias)", r"pixel_generator.net.\1.net.1.\2"),
    (r"classifier\.out\.(weight|bias)", r"pixel_generator.net.3.\1"),
]
# Legacy entries the original's own loader dropped (custom_load): unused camera table, old renderers.
_IGNORED_ORIGINAL_PREFIXES = ("cam_pose.", "rendering_net")

_HYPER0_OUT = "hyper_phi.layers.0.hyper_linear.hypo_params.net.2.weight"
_MARCHER0 = "ray_marcher.lstm.linear.0.weight"
_CLASSIFIER_OUT = "pixel_generator.net.3.weight"
_LATENTS = "latent_codes.weight"


def original_to_native_key(key: str) -> str | None:
    """The :class:`SOFModel` state-dict key of an original checkpoint key (None if it has no counterpart)."""
    for pattern, template in _KEY_RULES:
        if re.fullmatch(pattern, key):
            return re.sub(f"^{pattern}$", template, key)
    return None


def native_to_original_key(key: str) -> str:
    """The original checkpoint key of a :class:`SOFModel` state-dict key."""
    for pattern, template in _REVERSE_RULES:
        if re.fullmatch(pattern, key):
            return re.sub(f"^{pattern}$", template, key)
    raise KeyError(f"no original counterpart for state-dict key {key!r}")


def to_original_state_dict(model: SOFModel) -> OrderedDict[str, torch.Tensor]:
    """The model's parameters under the original's key names (in the original's order)."""
    return OrderedDict((native_to_original_key(k), v) for k, v in model.state_dict().items())


def load_original_state_dict(model_or_cls: SOFModel | type[SOFModel],
                             state_dict: Mapping[str, Any] | str | os.PathLike, *, projection: str | None = None,
                             num_classes: int | None = None, load_latents: bool = True,
                             source: str | os.PathLike | None = None, **config_overrides: Any) -> SOFModel:
    """Load an original SOF state dict into a model, or build one sized from it.

    Args:
        model_or_cls: an :class:`SOFModel` to load into (its sizes must match), or the class itself
            to build a model whose sizes are inferred from the tensor shapes (num_instances, L, F,
            marcher width, C). The projection is not stored in original checkpoints: pass it (the
            released checkpoint is "ortho").
        state_dict: ``{'model': sd, ...}`` as saved by the original's train.py, a bare state dict, or a
            path to either. Every tensor is cast to the model's float dtype (the fixtures store float8).
        projection: camera model of a newly built model (default "ortho").
        num_classes: expected label count; a checkpoint with another count is rejected.
        load_latents: False keeps the model's own codes (the original's ``overwrite_embeddings``);
            only for loading into an existing model.
        source: the file ``state_dict`` was read from, named in errors (set when a path is given).
        config_overrides: other :class:`SOFModelConfig` fields of a newly built model (steps, start_jitter).
    Returns:
        The loaded model (in eval mode when newly built).
    Raises:
        DataError (a ValueError) naming the file, the key, the expected and the found shape, for an
        unreadable file, missing or unexpected keys, wrong shapes, a wrong label count, or a wrong number
        of latent codes; ValueError for arguments that conflict with the model.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        source = Path(state_dict)
        state_dict = load_checkpoint(source, "cpu")
    where = f"{source}: " if source else ""
    sd = _unwrap_original(state_dict, source)

    if isinstance(model_or_cls, SOFModel):
        model = model_or_cls
        if projection is not None and projection != model.config.projection:
            raise ValueError(f"{where}projection={projection!r} conflicts with the model's "
                             f"{model.config.projection!r}")
    else:
        config = _infer_original_config(sd, source, projection or "ortho", config_overrides)
        with torch.device("meta"):  # no random init of 35 M parameters that are overwritten anyway
            model = model_or_cls(config)
        model.eval()

    C = model.config.num_classes
    found_c = sd[_CLASSIFIER_OUT].shape[0] if _CLASSIFIER_OUT in sd else None
    if num_classes is not None and num_classes != C:
        raise ValueError(f"{where}num_classes={num_classes} conflicts with the model's {C}")
    if found_c is not None and found_c != C:
        raise DataError(source, f"label count mismatch: the checkpoint predicts {found_c} classes "
                         f"({_CLASSIFIER_OUT} has shape {tuple(sd[_CLASSIFIER_OUT].shape)}), the model expects "
                         f"{C} (shape ({C}, {model.config.phi_width}))")

    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in sd.items():
        native = original_to_native_key(key)
        if native is None or native not in target:
            unexpected.append(key)
            continue
        mapped[native] = value
    if unexpected:
        raise DataError(source, f"unexpected keys in the original checkpoint: {unexpected}")
    missing = [native_to_original_key(k) for k in target if k not in mapped
               and not (k == "latent_codes.weight" and not load_latents)]
    if missing:
        raise DataError(source, f"missing keys in the original checkpoint: {missing}")
    if not load_latents:
        mapped.pop("latent_codes.weight", None)
    for native, value in mapped.items():
        expected = tuple(target[native].shape)
        if tuple(value.shape) != expected:
            key = native_to_original_key(native)
            hint = (" (a different number of instances; pass load_latents=False to keep fresh codes)"
                    if native == "latent_codes.weight" else "")
            raise DataError(source, f"{key}: expected shape {expected}, found {tuple(value.shape)}{hint}")
    dtype = target["latent_codes.weight"].dtype
    # .float() first: float8 tensors do not convert to every dtype directly.
    on_meta = target["latent_codes.weight"].is_meta
    model.load_state_dict({k: v.float().to(dtype) for k, v in mapped.items()}, strict=load_latents, assign=on_meta)
    model.clear_phi_cache()
    return model


def _unwrap_original(state_dict: Any, source) -> dict[str, torch.Tensor]:
    where = f"{source}: " if source else ""
    if isinstance(state_dict, Mapping) and "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    if not isinstance(state_dict, Mapping):
        raise DataError(source, f"expected a state dict or {{'model': state_dict}}; got {type(state_dict).__name__}")
    sd = {}
    for key, value in state_dict.items():
        if any(key.startswith(p) for p in _IGNORED_ORIGINAL_PREFIXES):
            warnings.warn(f"{where}ignoring legacy key {key!r} (the original loader dropped it too)")
            continue
        if not isinstance(value, torch.Tensor):
            raise DataError(source, f"{key}: expected a tensor, found {type(value).__name__}")
        sd[key] = value
    return sd


def _infer_original_config(sd: Mapping[str, torch.Tensor], source, projection: str,
                           overrides: dict[str, Any]) -> SOFModelConfig:
    for key, ndim in ((_LATENTS, 2), (_HYPER0_OUT, 2), (_MARCHER0, 2), (_CLASSIFIER_OUT, 2)):
        if key not in sd:
            raise DataError(source, f"missing key {key!r}; is this an original SOF checkpoint?")
        if sd[key].dim() != ndim:
            raise DataError(source, f"{key}: expected a {ndim}-d tensor, found shape {tuple(sd[key].shape)}")
    num_instances, latent_dim = sd[_LATENTS].shape
    phi_out = sd[_HYPER0_OUT].shape[0]
    if phi_out % 4:
        raise DataError(source, f"{_HYPER0_OUT}: expected shape (4 * F, L) for phi layer 0 (3 -> F), "
                         f"found {tuple(sd[_HYPER0_OUT].shape)}")
    fields = {"num_instances": int(num_instances), "latent_dim": int(latent_dim), "phi_width": phi_out // 4,
              "marcher_width": int(sd[_MARCHER0].shape[0]), "num_classes": int(sd[_CLASSIFIER_OUT].shape[0]),
              "projection": projection, "steps": 10}
    fields.update(overrides)
    return SOFModelConfig(**fields)
