"""Chamfer nearest neighbours (both directions): fused Triton kernel vs chunked torch.cdist vs SciPy cKDTree.

Point sets are N = M points on the unit sphere (a surface sample, as Chamfer distances see them), float32.
The Triton kernel runs on CUDA only; on a machine without CUDA its rows read "not measured (no CUDA)".
The chunked cdist reference is O(N M): on the CPU it is only run up to --cdist-max points and its time at
larger sizes is extrapolated (N M scaling) and marked as such.

Usage: python benchmarks/bm_nearest_neighbor.py [--sizes 1000 10000 100000] [--cdist-max 20000]
       [--repeats 3] [--threads 0]
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from toolkit.kernels import _dispatch
from toolkit.kernels._testing import point_cloud, timed
from toolkit.kernels.nearest_neighbor import chamfer


def kdtree_chamfer(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.spatial import cKDTree

    d_xy, _ = cKDTree(y).query(x, k=1, workers=-1)
    d_yx, _ = cKDTree(x).query(y, k=1, workers=-1)
    return d_xy, d_yx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--cdist-max", type=int, default=20_000, help="largest N for the cdist reference on CPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    triton_reason = _dispatch.triton_unavailable_reason(torch.zeros(1, device=device))
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"device: {device} ({name}); torch {torch.__version__}, {torch.get_num_threads()} threads")
    if device.type == "cuda":
        print(f"triton kernel: {'compiled for this GPU' if triton_reason is None else triton_reason}")
    else:
        print("triton kernel: not measured (no CUDA; it runs on CUDA tensors only)")
    print("task: Chamfer nearest neighbours x->y and y->x, N = M points on the unit sphere, float32\n")
    header = (f"{'N = M':>9}  {'method':<30} {'time':>22} {'peak mem':>10} {'vs cKDTree':>11} "
              f"{'chamfer-L2':>12}")
    print(header)
    print("-" * len(header))
    cdist_ref = None  # (N, seconds) of the largest cdist run on CPU, for extrapolation
    for n in args.sizes:
        x = point_cloud(n, kind="sphere", seed=1, device=device)
        y = point_cloud(n, kind="sphere", seed=2, device=device)
        xn, yn = x.cpu().double().numpy(), y.cpu().double().numpy()
        rows = []
        t_kd, (d_xy, d_yx), _ = timed(lambda a=xn, b=yn: kdtree_chamfer(a, b), max(1, args.repeats),
                                        torch.device("cpu"))
        kd_value = float((d_xy ** 2).mean() + (d_yx ** 2).mean())

        if device.type == "cuda" and triton_reason is None:
            t, res, peak = timed(lambda a=x, b=y: chamfer(a, b, impl="triton"), args.repeats, device)
            rows.append(("triton fused (cuda)", f"{t:10.4f} s", peak, t, float(res.chamfer_l2_sq())))
        else:
            rows.append(("triton fused", "not measured (no CUDA)", None, None, None))

        label = f"torch.cdist chunked ({device.type})"
        if device.type == "cuda" or n <= args.cdist_max:
            slow = device.type == "cpu" and n > 2000  # seconds per run: one run, no warm-up
            reps = 1 if slow else args.repeats
            t, res, peak = timed(lambda a=x, b=y: chamfer(a, b, impl="reference"), reps, device,
                                 warmup=not slow)
            cdist_ref = (n, t)
            rows.append((label, f"{t:10.4f} s", peak, t, float(res.chamfer_l2_sq())))
        elif cdist_ref is not None:
            est = cdist_ref[1] * (n / cdist_ref[0]) ** 2
            rows.append((label + " *", f"~{est:9.1f} s", None, est, None))
        else:
            rows.append((label, "not measured (too slow)", None, None, None))

        rows.append(("scipy cKDTree (workers=-1)", f"{t_kd:10.4f} s", None, t_kd, kd_value))
        for method, shown, peak, t, value in rows:
            mem = f"{peak:8.1f} MB" if peak is not None else f"{'-':>10}"
            ratio = f"{t / t_kd:10.2f}x" if t is not None else f"{'-':>11}"
            val = f"{value:12.4e}" if value is not None else f"{'-':>12}"
            print(f"{n:>9,}  {method:<30} {shown:>22} {mem} {ratio} {val}")
        if rows[1][0].endswith("*"):
            print(f"{'':>11}* not run (too slow on this CPU): extrapolated from N = {cdist_ref[0]:,} "
                  "by N*M scaling")
    print("\nvs cKDTree: time / cKDTree time (lower is faster). chamfer-L2: mean d^2 x->y + mean d^2 y->x,")
    print("equal across methods up to float32 rounding (a cross-check). Times: best of --repeats after a "
          "warm-up (one run without warm-up for the slow CPU cdist rows).")


if __name__ == "__main__":
    main()
