"""One command for a CUDA machine: the CUDA tests and every GPU benchmark row, in minutes, into one JSON.

``make gpu-check`` runs this. On a machine without CUDA it says so and exits 0. With CUDA it runs

1. the tests that have CUDA cases (``pytest -k cuda``: kernels compiled for the GPU against their
   references, device-parametrised model and ODE tests);
2. each GPU benchmark with settings sized to finish in about a minute: SOF render frames/s and training
   rays/s (``bm_sof.py``), Occupancy Flow inference per sequence (``bm_oflow_inference.py``) and training
   step (``bm_oflow_train.py``), nearest neighbour / Chamfer (``bm_nearest_neighbor.py``), marching cubes
   (``bm_marching_cubes.py``);

and writes ``benchmarks/gpu_check_<device name>.json``: device, torch and CUDA versions, the test summary,
and each benchmark's command, exit status, seconds and printed table (the rows for benchmarks/README.md).

Usage: python benchmarks/gpu_check.py [--out FILE] [--timeout SECONDS]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BENCHMARKS = [
    ("sof", ["bm_sof.py", "--repeats", "2"]),
    ("oflow_inference", ["bm_oflow_inference.py", "--models", "small,paper", "--repeats", "2"]),
    ("oflow_train", ["bm_oflow_train.py", "--models", "small,paper", "--repeats", "2"]),
    ("nearest_neighbor", ["bm_nearest_neighbor.py", "--sizes", "10000", "100000", "--repeats", "3"]),
    ("marching_cubes", ["bm_marching_cubes.py", "--resolutions", "128", "256", "--repeats", "3"]),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/gpu_check_<device>.json)")
    ap.add_argument("--timeout", type=int, default=150, help="seconds allowed per benchmark")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check. "
              "Run it where `nvidia-smi` lists a GPU, with a CUDA build of torch.")
        return 0
    device = torch.cuda.get_device_name()
    out = args.out or HERE / f"gpu_check_{re.sub(r'[^A-Za-z0-9]+', '_', device).strip('_')}.json"
    report = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "tests": _tests(), "benchmarks": {}}
    for name, cmd in BENCHMARKS:
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        report["benchmarks"][name] = _run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], args.timeout)
        print(report["benchmarks"][name]["output"], flush=True)
    text = json.dumps(report, indent=2)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, out)
    failed = [n for n, b in report["benchmarks"].items() if b["returncode"] != 0]
    print(f"gpu-check on {device}: tests {report['tests']['summary']}; benchmarks failed: {failed or 'none'}; "
          f"wrote {out}")
    return 1 if failed or report["tests"]["returncode"] not in (0, 5) else 0


def _tests() -> dict:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "tests", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "summary": lines[-1] if lines else "",
            "seconds": round(time.perf_counter() - start, 1)}


def _run(cmd: list[str], timeout: int) -> dict:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        code, output = proc.returncode, proc.stdout + (proc.stderr[-2000:] if proc.returncode else "")
    except subprocess.TimeoutExpired as exc:
        code, output = -1, (exc.stdout or b"").decode(errors="replace") + f"\n(timed out after {timeout} s)"
    return {"command": " ".join(Path(c).name if i == 1 else c for i, c in enumerate(cmd[1:], 1)),
            "returncode": code, "seconds": round(time.perf_counter() - start, 1), "output": output}


if __name__ == "__main__":
    raise SystemExit(main())
