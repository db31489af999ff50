"""Occupancy Flow inference per 17-frame sequence (encode, MISE at t=0, marching cubes, propagation), side by side.

Paths compared in one run, on the same input, the same weights and the same t=0 surface:

- ``plain (original)``: the original generator's settings written out plainly (oflow.md section 4): octree
  MISE as libmise (33^3 coarse lattice, 2 refinements of the voxels whose corners straddle the threshold,
  queries in batches of 100000, unqueried points filled by copying the previous known value along x, y,
  z), PyMCubes on the grid padded with -1e6, then ONE dopri5 solve (rtol 1e-3, atol 1e-5) of all t=0
  vertices to t = 0, 1/16, ..., 1 with the original state layout ``[points | c_t]`` (torchdiffeq directly);
- ``toolkit``: :func:`toolkit.oflow.generate.reconstruct` with the model's solver settings (dopri5, rtol
  1e-3, atol 1e-5, per-item rescaled times), i.e. ``toolkit.geometry.meshing.mise_grid`` and marching
  cubes (the Triton kernel on CUDA);
- ``toolkit fused``: the same with ``fused=True`` (velocity MLP through
  :class:`toolkit.oflow.ode.FusedVelocity`).

Models: ``paper`` (preset ``completion_corr``: the original's pointcloud/oflow_w_correspond sizes, 512 wide,
21M parameters) and ``small`` (the shipped CPU preset), random weights (seed 0). Input: a synthetic moving
body (``toolkit.synthetic.bodies``), 300 surface trajectories over 17 frames, frame-0 normalised, with the
original's 0.001 input noise. A random decoder has no body-shaped surface, so the decoder's logits are
replaced by the body's exact t=0 field (read from a lattice computed before timing), while the random
decoder is still evaluated on every query for its cost: MISE refines, and the mesh has the vertices, of a
real body surface. The velocity field is the random one: freshly initialised fields are smooth, so an
adaptive solver takes few steps (NFE is printed; propagation time grows linearly with it).

Usage: python benchmarks/bm_oflow_inference.py [--device cpu|cuda] [--models small,paper] [--repeats 1]
       [--threads N] [--quick]
"""
from __future__ import annotations

import argparse
import functools
import math
import time

import numpy as np
import torch
from torch import nn
from torchdiffeq import odeint

from toolkit.geometry.meshing import mise_grid
from toolkit.kernels._testing import timed
from toolkit.oflow.generate import reconstruct
from toolkit.oflow.model import OccupancyFlow, preset
from toolkit.synthetic.bodies import Body, random_identity

MODELS = {"small": "small", "paper": "completion_corr"}
THRESHOLD = 0.3  # occupancy probability of the surface (the original's)
PADDING = 0.1  # box 1.1: [-0.55, 0.55]^3
QUERY_BATCH = 100_000  # the original's points_batch_size
ORIGINALS = "1.84 s per sequence (OFlow, ICCV 2019), 0.23 s (LPDC-Net, CVPR 2021), on 2019-2021 GPUs"
GPU_TARGET_S = 0.1  # issue 8: paper-size model, one 17-frame sequence on an H100/H200
print = functools.partial(print, flush=True)  # rows appear as they are measured


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------
# Input and geometry
# ----------------------------------------------------------------------------------------------------


def body_input(*, frames: int = 17, points: int = 300, noise: float = 0.001, seed: int = 0):
    """(body, its frame-0 normalisation, (1, frames, points, 3) noisy frame-0-normalised trajectories)."""
    body = Body(random_identity(np.random.default_rng(seed)), "jumping_jacks", frames=frames)
    norm = body.normalization(0)
    sample = body.surface_points(points, seed)
    traj = np.stack([body.points_at(sample, f) for f in range(frames)])
    traj = (traj - norm.loc) / norm.scale + noise * np.random.default_rng(seed + 1).standard_normal(traj.shape)
    return body, norm, torch.tensor(traj[None], dtype=torch.float32)


def body_lattice(body: Body, norm, *, resolution0: int, upsampling_steps: int, slope: float = 100.0) -> torch.Tensor:
    """(R+1)^3 logits of the body at t=0 on the final MISE lattice: ``logit(0.3) - slope * F`` (F the
    signed distance in normalised units), exact wherever MISE queries, interpolated elsewhere."""
    sdf = body.sdf_fn(0, loc=norm.loc, scale=norm.scale)
    thr = math.log(THRESHOLD / (1 - THRESHOLD))
    grid = mise_grid(lambda p: thr - slope * sdf(p), threshold=thr, bounds=0.5 * (1 + PADDING),
                     resolution0=resolution0, upsampling_steps=upsampling_steps, chunk=QUERY_BATCH)
    return torch.as_tensor(grid.values, dtype=torch.float32)


class BodyShapedDecoder(nn.Module):
    """Runs the wrapped (random) decoder for its cost, answers with the body's logits at the nearest lattice point."""

    def __init__(self, decoder: nn.Module, lattice: torch.Tensor, bounds: float):
        super().__init__()
        self.inner, self.bounds = decoder, bounds
        self.register_buffer("lattice", lattice, persistent=False)

    def forward(self, p: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        self.inner(p, z, c)  # the decoder's work, as in a trained model
        r = self.lattice.shape[0] - 1
        idx = ((p + self.bounds) * (r / (2 * self.bounds))).round().long().clamp(0, r)
        return self.lattice[idx[..., 0], idx[..., 1], idx[..., 2]]


# ----------------------------------------------------------------------------------------------------
# The original's generation, written plainly
# ----------------------------------------------------------------------------------------------------


def plain_mise(field, *, resolution0: int, upsampling_steps: int, threshold: float, box: float) -> tuple[np.ndarray, int]:
    """libmise: coarse lattice, then octant subdivision of straddling voxels; returns (dense values, queries)."""
    r = resolution0 * 2 ** upsampling_steps
    values = np.full((r + 1,) * 3, np.nan, dtype=np.float32)

    def query(idx: np.ndarray) -> None:
        pts = box * (idx.astype(np.float32) / r - 0.5)
        for i in range(0, len(pts), QUERY_BATCH):
            out = field(torch.from_numpy(pts[i:i + QUERY_BATCH]))
            values[tuple(idx[i:i + QUERY_BATCH].T)] = out.float().cpu().numpy()

    stride = 2 ** upsampling_steps
    coarse = np.stack(np.meshgrid(*(np.arange(0, r + 1, stride),) * 3, indexing="ij"), -1).reshape(-1, 3)
    query(coarse)
    n = len(coarse)
    for _ in range(upsampling_steps):
        v = values[::stride, ::stride, ::stride]
        corners = [v[i:v.shape[0] - 1 + i, j:v.shape[1] - 1 + j, k:v.shape[2] - 1 + k]
                   for i in (0, 1) for j in (0, 1) for k in (0, 1)]
        with np.errstate(invalid="ignore"):  # voxels with unknown corners are not voxels of this level
            known = np.all([~np.isnan(c) for c in corners], axis=0)
            active = known & np.any([c >= threshold for c in corners], axis=0) \
                & np.any([c <= threshold for c in corners], axis=0)
        half = stride // 2
        vox = np.argwhere(active) * stride
        todo = np.zeros(values.shape, dtype=bool)
        for a in range(3):
            for b in range(3):
                for c in range(3):
                    todo[vox[:, 0] + a * half, vox[:, 1] + b * half, vox[:, 2] + c * half] = True
        todo &= np.isnan(values)
        idx = np.argwhere(todo)
        query(idx)
        n += len(idx)
        stride = half
    for axis in range(3):  # to_dense: copy the previous known value along x, then y, then z
        values = _forward_fill(values, axis)
    return values, n


def _forward_fill(a: np.ndarray, axis: int) -> np.ndarray:
    a = np.moveaxis(a, axis, -1)
    idx = np.where(np.isnan(a), 0, np.arange(a.shape[-1]))
    np.maximum.accumulate(idx, axis=-1, out=idx)
    return np.moveaxis(np.take_along_axis(a, idx, axis=-1), -1, axis)


def plain_sequence(model: OccupancyFlow, inputs: torch.Tensor, times: torch.Tensor, device: torch.device, *,
                   resolution0: int, upsampling_steps: int) -> dict:
    """The original's pipeline; returns seconds per stage, vertex/face/query/NFE counts and the vertices."""
    import mcubes

    thr = math.log(THRESHOLD / (1 - THRESHOLD))
    box = 1 + PADDING
    r = resolution0 * 2 ** upsampling_steps
    out: dict = {}
    with torch.no_grad():
        _sync(device)
        t = time.perf_counter()
        codes = model.encode(inputs.to(device))
        _sync(device)
        out["encode"] = time.perf_counter() - t

        t = time.perf_counter()
        grid, out["queries"] = plain_mise(lambda p: model.decode(codes, p[None].to(device))[0],
                                          resolution0=resolution0, upsampling_steps=upsampling_steps,
                                          threshold=thr, box=box)
        out["mise"] = time.perf_counter() - t

        t = time.perf_counter()
        verts, faces = mcubes.marching_cubes(np.pad(grid, 1, constant_values=-1e6), thr)
        verts = box * ((verts - 1) / r - 0.5)  # upstream PyMCubes: no -0.5 quirk of the vendored copy
        out["marching_cubes"] = time.perf_counter() - t

        t = time.perf_counter()
        v = torch.as_tensor(verts, dtype=torch.float32, device=device)[None]
        nv, c_t, z_t = v.shape[1], codes.c_t, codes.z_t
        nfe = [0]

        def func(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # state [points | c_t | z_t], codes constant
            nfe[0] += 1
            p = y[:, :nv * 3].reshape(1, nv, 3)
            c, z = y[:, nv * 3:nv * 3 + c_t.shape[1]], y[:, nv * 3 + c_t.shape[1]:]
            vel = model.vector_field(p, s.reshape(1), c, z)
            return torch.cat([vel.reshape(1, -1), torch.zeros_like(y[:, nv * 3:])], dim=1)

        y0 = torch.cat([v.reshape(1, -1), c_t, z_t], dim=1)
        sol = odeint(func, y0, times, rtol=1e-3, atol=1e-5, method="dopri5")
        traj = sol[:, :, :nv * 3].reshape(len(times), nv, 3).cpu().numpy()
        _sync(device)
        out["propagation"] = time.perf_counter() - t
    out.update(vertices=traj, faces=faces, nfe=nfe[0])
    return out


# ----------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------


def toolkit_sequence(model: OccupancyFlow, inputs: torch.Tensor, device: torch.device, *, fused: bool,
                     resolution0: int, upsampling_steps: int) -> dict:
    seq = reconstruct(model, inputs.to(device), threshold=THRESHOLD, resolution0=resolution0,
                      upsampling_steps=upsampling_steps, padding=PADDING, chunk=QUERY_BATCH, fused=fused)[0]
    return {**seq.timings, "queries": seq.stats["num_queries"], "nfe": seq.stats["nfe"], "vertices": seq.vertices,
            "faces": seq.faces}


STAGE_COLS = ("encode", "mise", "marching_cubes", "propagation")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="small,paper")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per path (the best total is kept)")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                   help="one untimed run per path first (default: on CUDA only)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quick", action="store_true",
                   help="one run; the paper-size model on a 16 * 2^2 = 64^3 grid instead of 128^3 (about a minute on a CPU)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup = device.type == "cuda" if args.warmup is None else args.warmup
    repeats = 1 if args.quick else args.repeats
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {unknown}; valid: {sorted(MODELS)}")

    t0 = time.perf_counter()
    body, norm, inputs = body_input()
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU thread(s); best of {repeats} run(s)"
          f"{', after one warm-up run' if warmup else ''}")
    print(f"input: synthetic body {body.name} (jumping jacks), 17 frames x 300 trajectories, noise 0.001 "
          f"(built in {time.perf_counter() - t0:.1f} s); t=0 surface: the body's; velocity field: random weights")
    print("threshold 0.3, box 1.1, queries in batches of 100000, dopri5 rtol 1e-3 atol 1e-5, t = 0, 1/16, ..., 1")
    header = (f"{'model':6s} {'grid':>5s} {'path':18s} {'verts':>7s} {'faces':>7s} {'queries':>8s} {'NFE':>4s} "
              f"{'encode':>7s} {'MISE':>7s} {'MC':>7s} {'prop':>7s} {'total s':>8s} {'best s':>7s} {'vs plain':>8s}")
    print(header)
    print("-" * len(header))
    times = torch.linspace(0, 1, 17, device=device)
    paper_total = None
    for name in names:
        res0, steps = (16, 2) if args.quick and name == "paper" else (32, 2)
        torch.manual_seed(0)
        model = OccupancyFlow(preset(MODELS[name])).to(device).eval()
        params = sum(q.numel() for q in model.parameters())
        lattice = body_lattice(body, norm, resolution0=res0, upsampling_steps=steps)
        model.decoder = BodyShapedDecoder(model.decoder, lattice, 0.5 * (1 + PADDING)).to(device)
        grid = f"{res0 * 2 ** steps}^3"
        grid_kw = {"resolution0": res0, "upsampling_steps": steps}
        runs = {
            "plain (original)": functools.partial(plain_sequence, model, inputs, times, device, **grid_kw),
            "toolkit": functools.partial(toolkit_sequence, model, inputs, device, fused=False, **grid_kw),
            "toolkit fused": functools.partial(toolkit_sequence, model, inputs, device, fused=True, **grid_kw),
        }
        results, base = {}, None
        for label, fn in runs.items():
            best, r, _ = timed(fn, repeats, device, warmup=warmup)
            results[label] = r
            total = sum(r[k] for k in STAGE_COLS)
            base = best if base is None else base
            print(f"{name:6s} {grid:>5s} {label:18s} {r['vertices'].shape[1]:7d} {len(r['faces']):7d} "
                  f"{r['queries']:8d} {r['nfe']:4d} " + " ".join(f"{r[k]:7.3f}" for k in STAGE_COLS)
                  + f" {total:8.3f} {best:7.3f} {base / best:7.2f}x")
            if name == "paper" and label == "toolkit fused" and grid == "128^3":
                paper_total = best
        a, b = results["toolkit"]["vertices"], results["toolkit fused"]["vertices"]
        c = results["plain (original)"]["vertices"]
        same_mesh = a.shape == c.shape
        print(f"{name:6s} {params / 1e6:.2f}M parameters; fused vs toolkit vertices: max |dv| "
              f"{np.abs(a - b).max():.2e}; toolkit vs plain: "
              + (f"same vertex count, max |dv| over frames {np.abs(a - c).max():.2e} (solver tolerance)"
                 if same_mesh else f"{a.shape[1]} vs {c.shape[1]} vertices (MISE fill differs)"))
    print(f"originals: {ORIGINALS}")
    if device.type != "cuda":
        print(f"GPU target: paper-size model <= {GPU_TARGET_S} s per sequence: not measured (no CUDA)")
    elif paper_total is not None:
        verdict = "met" if paper_total <= GPU_TARGET_S else "missed"
        print(f"GPU target: paper-size model <= {GPU_TARGET_S} s per sequence: {paper_total:.3f} s ({verdict})")


if __name__ == "__main__":
    main()
