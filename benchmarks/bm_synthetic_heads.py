"""Speed of the procedural-portrait renderer: views per second at 128x128, as write_portrait_dataset renders them.

Usage: python benchmarks/bm_synthetic_heads.py [--size 128] [--instances 8] [--views 12] [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from toolkit.geometry.cameras import default_intrinsics
from toolkit.synthetic.heads import SyntheticHead, portrait_cameras, sample_head


def bench(projection: str, *, size: int, instances: int, views: int, device: str) -> tuple[float, float, float]:
    """(views per wall second, views per CPU second, mean parts per head) over ``instances`` random heads.

    The CPU-time figure is what one dedicated core would give when the machine is shared.
    """
    K = default_intrinsics(size, projection)
    jobs = []
    for i in range(instances):
        rng = np.random.default_rng([0, i])
        head = SyntheticHead(sample_head(rng))
        jobs.append((head, portrait_cameras(views, rng, projection)))
    jobs[0][0].render(jobs[0][1][:1], K, size, size, projection=projection, device=device)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for head, cams in jobs:
        head.render(cams, K, size, size, projection=projection, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = instances * views
    return n / elapsed, n / cpu, float(np.mean([len(h.parts) for h, _ in jobs]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--views", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.size}x{args.size}, "
          f"{args.instances} heads x {args.views} views per render call")
    for projection in ("ortho", "perspective"):
        wall, cpu, parts = bench(projection, size=args.size, instances=args.instances, views=args.views,
                                 device=args.device)
        print(f"{projection:12s} {wall:7.1f} views/s wall, {cpu:7.1f} views per CPU second "
              f"(mean {parts:.1f} parts per head)")


if __name__ == "__main__":
    main()
