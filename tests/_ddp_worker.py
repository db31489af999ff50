"""Worker for tests/test_ddp.py: ``torchrun --nproc_per_node 2 tests/_ddp_worker.py OUT``.

Also imported by the test for the single-process reference run (same model, data and step function).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from toolkit.metrics import MIoUAccumulator
from toolkit.training import Callback, Trainer, TrainerConfig, distributed_info
from toolkit.training import trainer as training  # the loop module: its globals are patched below

W_TRUE = torch.tensor([1.0, -2.0, 0.5])
COMBOS = [("batch_fn", "wrap"), ("batch_fn", "allreduce"), ("dataset", "wrap")]


def batch_fn(step, g):
    x = torch.randn(8, 3, generator=g)  # global batch of 8: 4 per rank under 2 processes
    return x, x @ W_TRUE


class Points(torch.utils.data.Dataset):
    def __init__(self):
        self.x = torch.randn(20, 3, generator=torch.Generator().manual_seed(3))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.x[i] @ W_TRUE


SEEN: list[torch.Tensor] = []  # inputs this process trained on, to check the sharding


def step_fn(model, batch):
    x, y = batch
    SEEN.append(x.detach().clone())
    err = model(x).squeeze(-1) - y
    return (err ** 2).mean(), {"abs_err": float(err.detach().abs().mean())}


class RecordGrads(Callback):
    def __init__(self):
        self.grads = []

    def on_step_end(self, trainer, step, logs):
        self.grads.append({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()})


def miou_labels() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    gt = torch.randint(0, 4, (6, 5, 5), generator=g)
    pred = torch.where(torch.rand(6, 5, 5, generator=g) < 0.6, gt, torch.randint(0, 4, (6, 5, 5), generator=g))
    return pred, gt


def make_trainer(out_dir, data_mode: str, ddp: str, callbacks=()):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cfg = TrainerConfig(max_steps=4, batch_size=8, log_every=1, ckpt_every=2, out_dir=None if out_dir is None
                        else str(out_dir), device="cpu", ddp=ddp, progress=False, seed=1)
    data = batch_fn if data_mode == "batch_fn" else Points()
    return Trainer(model, opt, step_fn, config=cfg, data=data, callbacks=callbacks, meta={"test": "ddp"})


def run_combo(out_dir, data_mode: str, ddp: str) -> dict:
    rec = RecordGrads()
    t = make_trainer(out_dir, data_mode, ddp, [rec])
    SEEN.clear()
    history = t.fit()
    return {"grads": rec.grads, "params": {k: v.clone() for k, v in t.model.state_dict().items()},
            "history": history, "inputs": list(SEEN)}


def main(out: Path) -> None:
    info = distributed_info()
    writes = out / f"writes_rank{info.rank}.txt"

    def spy(fn):  # log every file this rank writes through the trainer
        def wrapper(path, *a, **k):
            with open(writes, "a") as f:
                f.write(f"{path}\n")
            return fn(path, *a, **k)
        return wrapper

    training.atomic_write = spy(training.atomic_write)
    training.atomic_save_text = spy(training.atomic_save_text)
    results = {}
    for data_mode, ddp in COMBOS:
        results[f"{data_mode}-{ddp}"] = run_combo(out / f"{data_mode}-{ddp}", data_mode, ddp)
    # Resume under DDP: stop at step 2, resume with fresh trainers on both ranks, run to 4.
    make_trainer(out / "resume", "dataset", "wrap").fit(max_steps=2)
    resumed = make_trainer(out / "resume", "dataset", "wrap")
    resumed.fit(resume=True)
    results["resumed"] = {"params": resumed.model.state_dict(), "history": resumed.history}
    results["world_size"] = info.world_size
    # Streaming mIoU over ranks: each rank scores its half of the images, then all_reduce.
    pred, gt = miou_labels()
    acc = MIoUAccumulator(4)
    half = len(pred) // info.world_size
    acc.update(pred[info.rank * half:(info.rank + 1) * half], gt[info.rank * half:(info.rank + 1) * half])
    acc.all_reduce()
    results["miou"] = acc.compute()
    torch.save(results, out / f"result_rank{info.rank}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
