"""Marching cubes at 128^3 and 256^3 cells: Triton kernels (CUDA only) vs PyMCubes vs the torch reference.

The lattice is a bumpy sphere (signed distance plus noise of 0.3 cells), the kind of grid MISE hands to
meshing. PyMCubes runs on the CPU from a float64 numpy array, as toolkit.geometry.meshing calls it; the
kernels and the torch reference run on the lattice where it lives (CUDA when present), timed without
host transfers. Every row is checked against PyMCubes (same face array, vertices to float rounding).

Usage: python benchmarks/bm_marching_cubes.py [--resolutions 128 256] [--repeats 3] [--threads 0]
"""
from __future__ import annotations

import argparse
import os

import mcubes
import numpy as np
import torch

from toolkit.kernels import _dispatch
from toolkit.kernels._testing import sphere_lattice, timed
from toolkit.kernels.marching_cubes import marching_cubes, marching_cubes_reference


def same_mesh(out, verts: np.ndarray, faces: np.ndarray) -> str:
    if out.faces.shape != faces.shape or not np.array_equal(out.faces.cpu().numpy(), faces.astype(np.int64)):
        return "DIFFERENT faces"
    err = np.abs(out.vertices.cpu().double().numpy() - verts).max() if len(verts) else 0.0
    return f"same (max |dv| {err:.1e})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"device: {device} ({name}); torch {torch.__version__}, {torch.get_num_threads()} threads")
    reason = _dispatch.triton_unavailable_reason(torch.zeros(1, device=device))
    if device.type == "cuda":
        print(f"triton kernels: {'compiled for this GPU' if reason is None else reason}")
    else:
        print("triton kernels: not measured (no CUDA; they run on CUDA tensors only)")
    print("task: isosurface 0 of a bumpy sphere (float32 lattice), mesh identical to PyMCubes'\n")
    header = f"{'cells':>6}  {'method':<24} {'time':>22} {'peak mem':>10} {'vs PyMCubes':>12}  {'mesh':<24}"
    print(header)
    print("-" * len(header))
    for res in args.resolutions:
        values = sphere_lattice(res, noise=0.3 / res, device=device)
        values_np = values.cpu().double().numpy()
        t_mc, (verts, faces), _ = timed(lambda v=values_np: mcubes.marching_cubes(v, 0.0), args.repeats,
                                         torch.device("cpu"))
        rows = [("PyMCubes (cpu)", t_mc, None, f"reference: {len(verts):,} v, {len(faces):,} f")]
        if device.type == "cuda" and reason is None:
            t, out, peak = timed(lambda v=values: marching_cubes(v, 0.0), args.repeats, device)
            rows.insert(0, ("triton (cuda)", t, peak, same_mesh(out, verts, faces)))
        else:
            rows.insert(0, ("triton", None, None, "not measured (no CUDA)"))
        # The reference is plain torch: on the CPU one run is enough to see its speed.
        reps = args.repeats if device.type == "cuda" else 1
        t, out, peak = timed(lambda v=values: marching_cubes_reference(v, 0.0), reps, device)
        rows.append((f"torch reference ({device.type})", t, peak, same_mesh(out, verts, faces)))
        for method, t, peak, note in rows:
            shown = f"{t:10.4f} s" if t is not None else "not measured (no CUDA)"
            mem = f"{peak:8.1f} MB" if peak is not None else f"{'-':>10}"
            ratio = f"{t / t_mc:11.2f}x" if t is not None else f"{'-':>12}"
            print(f"{res:>5}^3  {method:<24} {shown:>22} {mem} {ratio}  {note if t is not None else ''}")
    print("\nvs PyMCubes: time / PyMCubes time (lower is faster). Times: best of --repeats after a warm-up "
          "(one run for the torch reference on CPU).")


if __name__ == "__main__":
    main()
