"""SOF speed: training rays/s and 128x128 render frames/s, paper-size and shipped-size models.

Prints, side by side in one run, the toolkit's path against a plain path that does what the original did:
- training: a train step (forward + backward + Adam) on random ray subsets vs the original's full 128x128
  images (the original had no ray subsets); both report rays/s.
- rendering: ``model.render`` with cached hypernetwork weights and ray chunks under no_grad vs a plain
  forward that regenerates the phi weights per call and marches the full image with autograd enabled;
  then ``toolkit.sof.render.render_label_maps`` (4096-ray chunks on a CPU) vs the same with
  ``compile=True`` (marching steps through torch.compile, compiled once before timing).

Usage: python benchmarks/bm_sof.py [--device cuda] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from toolkit.geometry.cameras import default_intrinsics, orbit_cameras, pixel_grid
from toolkit.sof.model import SOFModel, model_config
from toolkit.sof.render import render_label_maps

SHIPPED = {"latent_dim": 32, "phi_width": 64, "marcher_width": 64}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats):
    fn()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def bench(name: str, overrides: dict, device: torch.device, repeats: int, batch: int, rays: int, size: int = 128):
    torch.manual_seed(0)
    model = SOFModel(model_config("paper" if name == "paper" else "small", num_instances=16, **overrides)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    cams = torch.tensor(orbit_cameras(4.5, torch.linspace(-0.5, 0.5, batch).numpy(), 0.0), dtype=torch.float32,
                        device=device)
    K = torch.tensor(default_intrinsics(size), dtype=torch.float32, device=device).expand(batch, 3, 3)
    full_uv = pixel_grid(size, size, device=device)
    idx = torch.arange(batch, device=device)

    def train_step(uv):
        z = model.embedding(idx)
        out = model(z, cams, K, uv)
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]),
                                                 torch.zeros(out.logits.shape[:2].numel(), dtype=torch.long,
                                                             device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()

    subset = full_uv[torch.randperm(size * size, device=device)[:rays]]
    t_subset = _time(lambda: train_step(subset), device, repeats)
    t_full = _time(lambda: train_step(full_uv), device, max(1, repeats // 2))
    model.eval()
    z1 = model.embedding(idx[:1])

    def fast_render():
        model.render(z1, cams[:1], K[:1], size, size)

    def plain_render():
        model.clear_phi_cache()
        model(z1, cams[:1], K[:1], full_uv[None])  # autograd on, weights regenerated

    t_fast = _time(fast_render, device, repeats)
    t_plain = _time(plain_render, device, repeats)
    cam1, K1, code = cams[:1].cpu().numpy(), K[0].cpu().numpy(), z1[0].detach()
    t_maps = _time(lambda: render_label_maps(model, code, cam1, K1, size), device, repeats)
    start = time.perf_counter()
    render_label_maps(model, code, cam1, K1, size, compile=True)  # compiles the marching step
    t_compile = time.perf_counter() - start
    t_compiled = _time(lambda: render_label_maps(model, code, cam1, K1, size, compile=True), device, repeats)
    n_sub, n_full = batch * rays, batch * size * size
    print(f"{name:8s} train: {n_sub / t_subset:9.0f} rays/s (ray subsets, {batch}x{rays})  "
          f"{n_full / t_full:9.0f} rays/s (plain: full {size}x{size} images)  ratio {t_full / n_full * n_sub / t_subset:5.2f}x")
    print(f"{name:8s} render {size}x{size}: {1 / t_fast:7.2f} frames/s (cached, chunked, no_grad)  "
          f"{1 / t_plain:7.2f} frames/s (plain forward)  ratio {t_plain / t_fast:5.2f}x")
    print(f"{name:8s} render {size}x{size}: {1 / t_compiled:7.2f} frames/s (render_label_maps compile=True, "
          f"compiled in {t_compile:.0f} s)  {1 / t_maps:7.2f} frames/s (render_label_maps)  "
          f"ratio {t_maps / t_compiled:5.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"threads: {torch.get_num_threads()}, torch {torch.__version__}")
    small = device.type == "cpu"
    bench("shipped", SHIPPED, device, args.repeats, batch=8 if not small else 2, rays=1024)
    bench("paper", {}, device, args.repeats, batch=8 if not small else 1, rays=1024 if not small else 256)


if __name__ == "__main__":
    main()
