"""Occupancy Flow training step time (batch 16): forward / backward split per ODE solver, side by side.

One training step = :func:`toolkit.oflow.losses.compute_losses` (encoders, t=0 BCE, BCE at a random frame
through backward transport, correspondence loss through forward transport over 16 frames) + backward
+ Adam. Solvers compared in one run, on the same batch and the same initial weights:

- ``dopri5 adjoint``: the original's settings (adaptive dopri5, rtol 1e-3, atol 1e-5, adjoint backward),
  with this toolkit's per-item time rescaling (one batched solve, no integration past each item's time);
- ``dopri5 adjoint, original layout``: the same solver with the original's state layout (codes in the ODE
  state, every item integrated to the largest time, ``per_item="original"``);
- ``rk4 1/16 backprop``: fixed-step rk4 (step 1/16, 16 steps per unit time), gradients straight through
  the solver (``ODE_PRESETS["rk4"]``, the CPU training presets' choice).

Models: ``small`` (the shipped CPU completion model, 0.34M parameters) and ``paper`` (the original's
pointcloud/oflow_w_correspond sizes, preset ``completion_corr``, 21M parameters). Adaptive solvers take
as many steps as the field's stiffness needs, so freshly initialised (smooth) fields are the cheap case:
``--warm N`` first trains N rk4 steps, and ``--checkpoint PATH`` times a trained model instead.

Usage: python benchmarks/bm_oflow_train.py [--device cpu|cuda] [--repeats 2] [--paper-batch N] [--threads N]
       [--models small,paper] [--checkpoint RUN_OR_FILE]
"""
from __future__ import annotations

import argparse
import functools
import time

import torch

from toolkit.oflow._sphere import sphere_batch
from toolkit.oflow.losses import compute_losses
from toolkit.oflow.model import OccupancyFlow, preset
from toolkit.oflow.ode import ODE_PRESETS, ODEOptions, SolveStats

SOLVERS = {
    "dopri5 adjoint": ODEOptions(),
    "dopri5 adjoint, original layout": ODEOptions(per_item="original"),
    "rk4 1/16 backprop": ODE_PRESETS["rk4"],
}
MODELS = {"small": "small", "paper": "completion_corr"}
print = functools.partial(print, flush=True)  # rows appear as they are measured


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(model: OccupancyFlow, batch: dict, ode: ODEOptions, device: torch.device, repeats: int):
    """Mean seconds of (forward, backward, optimizer) and field evaluations per step, after one warm-up step."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fwd = bwd = upd = 0.0
    nfe = 0
    for i in range(repeats + 1):
        stats = SolveStats()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        loss = compute_losses(model, batch, corr=True, stats=stats, **_fields(ode)).total
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        opt.step()
        _sync(device)
        t3 = time.perf_counter()
        if i > 0:  # the first step warms up allocators and caches
            fwd, bwd, upd, nfe = fwd + t1 - t0, bwd + t2 - t1, upd + t3 - t2, nfe + stats.nfe
    model.load_state_dict(state)  # every solver starts from the same weights
    return fwd / repeats, bwd / repeats, upd / repeats, nfe / repeats


def _fields(ode: ODEOptions) -> dict:
    return {k: getattr(ode, k) for k in ("method", "rtol", "atol", "adjoint", "step_size", "num_steps", "per_item")}


def _warm_up(model: OccupancyFlow, batch: dict, steps: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        compute_losses(model, batch, corr=True, **_fields(ODE_PRESETS["rk4"])).total.backward()
        opt.step()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--paper-batch", type=int, default=None,
                   help="batch of the paper-size model (default: 16 on CUDA, 2 on CPU)")
    p.add_argument("--warm", type=int, default=0, help="rk4 training steps before timing (stiffer fields)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--models", default="small,paper")
    p.add_argument("--checkpoint", default=None, help="also time this trained model (a run folder or checkpoint)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    paper_batch = args.paper_batch or (args.batch if device.type == "cuda" else 2)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU thread(s); repeats {args.repeats}, warm-up "
          f"{args.warm} rk4 steps")
    print("batch: 17-frame windows, 300 input trajectories, 512 + 512 occupancy points, 100 correspondence "
          "trajectories (the original's sampling), moving-ball data")
    header = f"{'model':6s} {'B':>3s}  {'solver':32s} {'forward s':>10s} {'backward s':>11s} {'adam s':>7s} " \
             f"{'step s':>8s} {'NFE/step':>9s} {'vs rk4':>7s}"
    print(header)
    print("-" * len(header))
    names = [n for n in args.models.split(",") if n] + (["trained"] if args.checkpoint else [])
    for name in names:
        batch_size = args.batch if name != "paper" else paper_batch
        torch.manual_seed(0)
        if name == "trained":
            from toolkit.oflow.train import load_oflow

            model = load_oflow(args.checkpoint).model.to(device).train()
            print(f"trained: {args.checkpoint} ({sum(p.numel() for p in model.parameters())} parameters, "
                  f"seq_len {model.config.seq_len})")
        else:
            model = OccupancyFlow(preset(MODELS[name])).to(device).train()
        batch = {k: v.to(device) for k, v in sphere_batch(batch_size, length=model.config.seq_len, seed=0).items()}
        if args.warm:
            _warm_up(model, batch, args.warm)
        rows = {label: step_times(model, batch, ode, device, args.repeats) for label, ode in SOLVERS.items()}
        base = sum(rows["rk4 1/16 backprop"][:3])
        for label, (f, b, u, nfe) in rows.items():
            total = f + b + u
            print(f"{name:6s} {batch_size:3d}  {label:32s} {f:10.3f} {b:11.3f} {u:7.3f} {total:8.3f} {nfe:9.0f} "
                  f"{total / base:6.2f}x")
        if batch_size != args.batch:
            print(f"{'':6s} note: batch reduced from {args.batch} to {batch_size} on {device.type} (paper-size model; "
                  "step time grows about linearly with the batch)")
    if device.type != "cuda":
        for name in names:
            for label in SOLVERS:
                print(f"{name:6s} {args.batch:3d}  {label:32s} {'not measured (no CUDA)':>48s}")


if __name__ == "__main__":
    main()
