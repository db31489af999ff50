"""The generic trainer: learning, bit-exact resume in both data modes, atomic checkpoints, errors, live plot."""
from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch
from torch import nn

from toolkit.io import DataError
from toolkit.training import (
    Callback,
    LivePlot,
    Trainer,
    TrainerConfig,
    drop_schedule,
    latest_checkpoint,
    load_checkpoint,
    shard_batch,
)
from toolkit.training import trainer as training  # the loop module: its globals are patched below
from toolkit.viz.plots import plot_history

W_TRUE = torch.tensor([1.5, -2.0, 0.5])


class Net(nn.Module):
    """Small MLP with dropout, so training consumes the global torch RNG."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.l1, self.drop, self.l2 = nn.Linear(3, 16), nn.Dropout(dropout), nn.Linear(16, 1)

    def forward(self, x):
        return self.l2(self.drop(torch.tanh(self.l1(x)))).squeeze(-1)


def batch_fn(step, g):
    # Uses the trainer's generator, numpy's and python's global RNGs: resume must restore all three.
    x = torch.randn(8, 3, generator=g)
    noise = torch.as_tensor(np.random.normal(scale=0.01, size=8), dtype=torch.float32)
    return x, x @ W_TRUE + noise + 0.01 * random.random()


def step_fn(model, batch):
    x, y = batch
    pred = model(x)
    loss = ((pred - y) ** 2).mean()
    return loss, {"mae": (pred - y).abs().mean()}


def val_fn(model):
    x = torch.randn(16, 3)  # global RNG: the trainer forks and seeds it, training must not notice
    return {"val_mse": float(((model(x) - x @ W_TRUE) ** 2).mean()), "np": float(np.random.rand())}


class NoisyDataset(torch.utils.data.Dataset):
    """Items carry their index and fresh global-RNG noise (exact resume must restore it)."""

    def __init__(self, n=20):
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(n, 3, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i] + 0.01 * torch.randn(3), "y": self.x[i] @ W_TRUE, "index": i}


def dict_step_fn(model, batch):
    pred = model(batch["x"])
    return ((pred - batch["y"]) ** 2).mean(), {}


class Crash(Exception):
    pass


class CrashAfterCheckpoint(Callback):
    def __init__(self, step):
        self.step = step

    def on_checkpoint(self, trainer, path):
        if trainer.step == self.step:
            raise Crash(f"simulated crash after saving {path.name}")


def _trainer(out_dir, *, data=batch_fn, init_seed=0, callbacks=(), **cfg):
    torch.manual_seed(init_seed)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    kw = {"max_steps": 12, "log_every": 5, "val_every": 3, "ckpt_every": 4, "out_dir": out_dir, "progress": False,
          "batch_size": 6}
    kw.update(cfg)
    step = dict_step_fn if isinstance(data, torch.utils.data.Dataset) else step_fn
    return Trainer(model, opt, step, config=TrainerConfig(**kw), data=data, val_fn=val_fn, scheduler=sched,
                   meta={"system": "test"}, callbacks=callbacks)


def _assert_same_state(a: Trainer, b: Trainer):
    for (na, pa), (nb, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), f"parameter {na} differs"
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for k in sa:
        for key in sa[k]:
            assert torch.equal(sa[k][key], sb[k][key]), f"optimizer state {k}.{key} differs"
    assert a.history == b.history  # floats compared exactly


def test_loss_decreases_on_regression():
    torch.manual_seed(0)
    model = Net(dropout=0.0)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=3e-2), step_fn,
                      config=TrainerConfig(max_steps=100, log_every=10, progress=True), data=batch_fn)
    history = trainer.fit()
    losses = [r["loss"] for r in history if r["split"] == "train"]
    assert len(losses) == 10 and history[-1]["step"] == 100
    assert losses[-1] < 0.02 * losses[0], losses


@pytest.mark.parametrize("mode", ["batch_fn", "dataset"])
def test_resume_is_bit_exact(tmp_path, mode):
    data = batch_fn if mode == "batch_fn" else NoisyDataset()
    full = _trainer(tmp_path / "full", data=data)
    full.fit()

    # Crash right after the step-8 checkpoint (mid-epoch for the dataset: 3 steps per epoch).
    first = _trainer(tmp_path / "cut", data=data, callbacks=[CrashAfterCheckpoint(8)])
    with pytest.raises(Crash):
        first.fit()
    assert first.step == 8
    resumed = _trainer(tmp_path / "cut", data=data, init_seed=123)  # different init: all state must come back
    resumed.fit(resume=True)
    assert resumed.step == 12
    _assert_same_state(full, resumed)
    assert [r["step"] for r in resumed.history if r["split"] == "val"] == [3, 6, 9, 12]
    assert [r["step"] for r in resumed.history if r["split"] == "train"] == [5, 10, 12]


def test_stop_with_max_steps_then_resume_is_exact(tmp_path):
    full = _trainer(tmp_path / "full", ckpt_every=0)
    full.fit()
    part = _trainer(tmp_path / "part", ckpt_every=0)
    part.fit(max_steps=7)  # not a log, val or checkpoint step: the partial log window is checkpointed
    assert latest_checkpoint(tmp_path / "part").name == "step_00000007.pt"
    rest = _trainer(tmp_path / "part", ckpt_every=0, init_seed=5)
    rest.fit(resume=True)
    _assert_same_state(full, rest)


def test_validation_does_not_change_training(tmp_path):
    with_val = _trainer(None, val_every=2)
    without = _trainer(None, val_every=2)
    without.val_fn = None
    with_val.fit()
    without.fit()
    train = lambda t: [r for r in t.history if r["split"] == "train"]
    assert train(with_val) == train(without)
    vals = [r["val_mse"] for r in with_val.history if r["split"] == "val"]
    assert len(vals) == 6 and len(set(vals)) == 6


def test_dataset_order_is_epoch_seeded_permutation():
    seen = []

    def record(model, batch):
        seen.append(batch["index"].tolist())
        return dict_step_fn(model, batch)

    torch.manual_seed(0)
    model = Net()
    cfg = TrainerConfig(max_steps=6, batch_size=6, progress=False, seed=3)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), record, config=cfg, data=NoisyDataset(20)).fit()
    epochs = [[i for b in seen[0:3] for i in b], [i for b in seen[3:6] for i in b]]
    for e in epochs:
        assert len(e) == 18 and len(set(e)) == 18 and set(e) <= set(range(20))  # drop_last: 2 items left out
    assert epochs[0] != epochs[1]
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([3, 0]).generate_state(1)[0]))
    assert epochs[0] == torch.randperm(20, generator=g)[:18].tolist()


def test_checkpoint_embeds_meta_config_and_is_safe_to_load(tmp_path):
    torch.manual_seed(0)
    model = Net()
    meta = {"label_set": "sof20", "camera": {"projection": "ortho", "K": np.eye(3)}, "sizes": (64, 64),
            "root": tmp_path}
    cfg = TrainerConfig(max_steps=4, ckpt_every=2, out_dir=tmp_path, progress=False, keep_last=1)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), step_fn, config=cfg, data=batch_fn,
            meta=meta).fit()
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["latest.json", "step_00000004.pt"]  # keep_last=1 pruned step 2
    ck = load_checkpoint(tmp_path)  # a run folder resolves to its latest checkpoint; weights_only load
    assert ck["step"] == 4 and ck["trainer_config"] == training.asdict(cfg)
    assert ck["meta"]["label_set"] == "sof20" and ck["meta"]["sizes"] == (64, 64)
    assert ck["meta"]["root"] == str(tmp_path)
    torch.testing.assert_close(ck["meta"]["camera"]["K"], torch.eye(3, dtype=torch.float64))
    assert [r["step"] for r in ck["history"]] == [4]
    for k, v in model.state_dict().items():
        assert torch.equal(ck["model"][k], v)
    assert (tmp_path / "history.json").is_file()


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, ckpt_every=2, val_every=0)
    trainer.fit(max_steps=2)
    good = latest_checkpoint(tmp_path)
    assert good.name == "step_00000002.pt"

    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")  # partial bytes, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.fit()
    monkeypatch.setattr(torch, "save", real_save)
    ckdir = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["latest.json", "step_00000002.pt"]  # no temp file left
    assert latest_checkpoint(tmp_path) == good
    assert load_checkpoint(good)["step"] == 2
    fresh = _trainer(tmp_path, ckpt_every=2, val_every=0)
    fresh.fit(resume=True, max_steps=2)
    assert fresh.step == 2


def test_corrupt_and_missing_checkpoints_raise_data_error(tmp_path):
    bad = tmp_path / "checkpoints" / "step_00000003.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError, match=r"step_00000003\.pt: corrupt or unreadable checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(DataError, match=r"step_00000003\.pt: corrupt"):
        _trainer(tmp_path).fit(resume=True)
    with pytest.raises(DataError, match=r"nope\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no checkpoint found"):
        _trainer(None).resume(tmp_path / "empty")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(DataError, match=r"other\.pt: not a Trainer checkpoint: missing keys"):
        _trainer(None).resume(other)


def test_resume_with_other_architecture_names_file(tmp_path):
    _trainer(tmp_path, val_every=0).fit(max_steps=4)
    model = nn.Linear(3, 1)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), step_fn,
                config=TrainerConfig(out_dir=str(tmp_path), progress=False), data=batch_fn)
    with pytest.raises(DataError, match=r"step_00000004\.pt: model does not match the checkpoint"):
        t.fit(resume=True)


def test_interrupt_saves_checkpoint_and_resumes_exactly(tmp_path):
    class Interrupt(Callback):
        def on_step_end(self, trainer, step, logs):
            if step == 6:
                os.kill(os.getpid(), signal.SIGINT)

    full = _trainer(tmp_path / "full")
    full.fit()
    cut = _trainer(tmp_path / "cut", callbacks=[Interrupt()])
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup or a background job, else the default
    with pytest.raises(KeyboardInterrupt, match="after step 6"):
        cut.fit()
    assert signal.getsignal(signal.SIGINT) is before  # the trainer restores whatever handler it found
    assert latest_checkpoint(tmp_path / "cut").name == "step_00000006.pt"
    rest = _trainer(tmp_path / "cut", init_seed=9)
    rest.fit(resume=True)
    _assert_same_state(full, rest)


def test_input_validation(monkeypatch):
    with pytest.raises(ValueError, match=r"invalid amp \"fp16\"; must be one of \['off', 'bf16'\]"):
        TrainerConfig(amp="fp16")
    with pytest.raises(ValueError, match="keep_last"):
        TrainerConfig(keep_last=0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="data must be a batch function"):
        Trainer(model, opt, step_fn, config=TrainerConfig(), data=[1, 2, 3])
    with pytest.raises(TypeError, match=r"meta\['cam'\]\['obj'\]: cannot store object"):
        Trainer(model, opt, step_fn, config=TrainerConfig(), data=batch_fn, meta={"cam": {"obj": object()}})
    with pytest.raises(ValueError, match="fewer than batch_size"):
        Trainer(model, opt, dict_step_fn, config=TrainerConfig(batch_size=50), data=NoisyDataset(20))
    monkeypatch.setattr(training, "_warned", set())
    with pytest.warns(UserWarning, match='amp="bf16" is ignored on cpu'):
        Trainer(model, opt, step_fn, config=TrainerConfig(amp="bf16", device="cpu"), data=batch_fn)


def test_non_finite_loss_stops_before_update():
    torch.manual_seed(0)
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = lambda m, b: (m(b[0]).sum() * float("nan"), {})
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), bad,
                config=TrainerConfig(max_steps=3, progress=False), data=batch_fn)
    with pytest.raises(FloatingPointError, match="step 0: loss is nan"):
        t.fit()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_grad_clip_logs_norm_and_limits_update():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    nn.init.zeros_(model.weight)
    big = lambda m, b: (1000.0 * m(b[0]).sum(), {})
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=1.0), big,
                config=TrainerConfig(max_steps=1, log_every=1, grad_clip=0.5, progress=False), data=batch_fn)
    rec = t.fit()[0]
    assert rec["grad_norm"] > 0.5
    torch.testing.assert_close(model.weight.norm(), torch.tensor(0.5))


def test_tensorboard_missing_warns_once(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    monkeypatch.setattr(training, "_warned", set())
    t = _trainer(tmp_path, tensorboard=True, val_every=0)
    with pytest.warns(UserWarning, match="tensorboard package is not installed"):
        t.fit(max_steps=2)
    t.fit(max_steps=3)  # no second warning (would fail under -W error)
    assert t.step == 3


def test_shard_batch_splits_leading_dims():
    batch = {"x": torch.arange(8).reshape(4, 2), "t": torch.tensor(0.5), "name": "a", "pair": (torch.arange(4), 3)}
    out = shard_batch(batch, 1, 2)
    assert out["x"].tolist() == [[4, 5], [6, 7]] and out["t"].item() == 0.5 and out["name"] == "a"
    assert out["pair"][0].tolist() == [2, 3] and out["pair"][1] == 3
    with pytest.raises(ValueError, match=r"batch\['x'\]: leading dim 4 is not divisible by the world size 3"):
        shard_batch(batch, 0, 3)


def test_live_plot_is_silent_outside_notebooks_and_updates_inside(monkeypatch):
    history = [{"step": 1, "split": "train", "loss": 1.0, "lr": 0.1}, {"step": 2, "split": "train", "loss": 0.5},
               {"step": 2, "split": "val", "miou": 0.4}]
    fig = plot_history(history)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 1 and len(fig.axes[1].lines) == 1
    plot = LivePlot()
    assert plot.draw(history) is False  # plain python: nothing displayed

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def fake_display(obj, display_id=False):
        shown.append(("display", obj))
        return Handle()

    import IPython.display

    monkeypatch.setattr(training, "_in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    assert plot.draw(history) and plot.draw(history)
    assert [kind for kind, _ in shown] == ["display", "update"]
    assert shown[0][1].data[:4] == b"\x89PNG"

    # During fit: first record drawn, later ones throttled by min_interval, final curves drawn at the end.
    shown.clear()
    t = _trainer(None, callbacks=[LivePlot(min_interval=1e9)])
    t.fit()
    assert [kind for kind, _ in shown] == ["display", "update"]


def test_schedule_added_on_resume_is_replayed_to_the_checkpoint_step(tmp_path):
    """A constant-rate run continued with a scheduler resumes at the rate the schedule gives at that step."""
    plain = _trainer(tmp_path / "run", max_steps=7)
    plain.scheduler = None
    plain.fit()
    resumed = _trainer(tmp_path / "run", max_steps=8)  # StepLR(5, 0.5): step 7 lies past one decay
    resumed.fit(resume=True)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5)
    assert resumed.scheduler.last_epoch == 8


def test_schedule_replaced_on_resume_replays_from_the_base_rate(tmp_path):
    """A decayed run continued with a later milestone (checkpoint scheduler state dropped) gets its base rate back."""
    first = _trainer(tmp_path / "run", max_steps=8)  # StepLR(5, 0.5): the saved rate is decayed to 5e-3
    first.fit()
    assert first.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
    dropped = drop_schedule(tmp_path / "run")
    assert dropped.name == "step_00000008.pt" and torch.load(dropped, weights_only=True)["scheduler"] is None
    resumed = _trainer(tmp_path / "run", max_steps=9)
    resumed.scheduler = torch.optim.lr_scheduler.MultiStepLR(resumed.optimizer, milestones=[20], gamma=0.1)
    resumed.fit(resume=True)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)  # before the new milestone
    assert resumed.scheduler.last_epoch == 9
