"""The run lifecycle both systems share: the records, trainer configs, shipped paths, training data, exports."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import toolkit.oflow.train as oflow_train
import toolkit.sof.train as sof_train
from toolkit.io import DataError
from toolkit.paths import DATA_DIR
from toolkit.training import (
    Trainer,
    TrainerConfig,
    export_checkpoint,
    lifecycle,
    load_checkpoint,
    trainer_config,
)

SYSTEMS = {"sof": sof_train.SYSTEM, "oflow": oflow_train.SYSTEM}


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_each_system_has_one_record(name):
    system = SYSTEMS[name]
    assert system.name == name and dataclasses.is_dataclass(system.config)
    assert all(callable(getattr(system, f)) for f in ("train", "load", "write_data", "evaluate", "validate"))
    assert system.export_format == f"toolkit-{name}-export-1"


def test_shipped_paths_are_the_documented_files():
    assert sof_train.shipped_checkpoint() == DATA_DIR / "sof_synthetic.pt"
    assert oflow_train.shipped_checkpoint("generative") == DATA_DIR / "oflow_generative.pt"
    with pytest.raises(ValueError, match=r"unknown pretrained kind 'huge'; valid: \['completion', 'generative'\]"):
        oflow_train.shipped_checkpoint("huge")


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_trainer_config_takes_the_same_named_fields(name, tmp_path):
    config = SYSTEMS[name].config(max_steps=7, log_every=3, seed=5, out_dir=str(tmp_path))
    tcfg = trainer_config(config, batch_size=2, progress=False)
    assert (tcfg.max_steps, tcfg.log_every, tcfg.seed, tcfg.batch_size, tcfg.progress) == (7, 3, 5, 2, False)
    assert (tcfg.val_every, tcfg.ckpt_every, tcfg.device, tcfg.amp) == (config.val_every, config.ckpt_every,
                                                                       config.device, config.amp)
    # a field the system config lacks keeps the trainer's default
    assert tcfg.num_workers == getattr(config, "num_workers", TrainerConfig().num_workers)
    with pytest.raises(TypeError, match=r"unknown TrainerConfig field\(s\) \['batch'\]"):
        trainer_config(config, batch=2)


def _fake_system(written: list) -> lifecycle.System:
    return dataclasses.replace(sof_train.SYSTEM, write_data=lambda root, **kw: written.append((Path(root), kw)))


class _Loaded:
    def __init__(self, meta):
        self.meta = meta


def test_training_data_is_regenerated_from_the_recorded_settings(tmp_path):
    written = []
    system = _fake_system(written)
    root = tmp_path / "portraits"
    got = lifecycle.training_data(system, _Loaded({"train_config": {"data_root": str(root),
                                                                    "synthetic": {"instances": 2, "seed": 3}}}))
    assert got == root and written == [(root, {"instances": 2, "seed": 3})]
    root.mkdir()
    (root / "x").write_text("present")
    assert lifecycle.training_data(system, _Loaded({"train_config": {"data_root": str(root)}})) == root
    assert len(written) == 1  # present data is used as it is
    with pytest.raises(DataError, match="no generator settings"):
        lifecycle.training_data(system, _Loaded({"train_config": {"data_root": str(tmp_path / "gone")}}))


class _Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 1)

    def forward(self, batch):
        return self.net(batch)


def _step(model, batch):
    loss = model(batch).pow(2).mean()
    return loss, {}


def test_trainer_checkpoints_the_state_module_and_exports_it(tmp_path):
    wrapper = _Wrapper()
    cfg = TrainerConfig(max_steps=2, ckpt_every=2, out_dir=str(tmp_path / "run"), progress=False, device="cpu")
    trainer = Trainer(wrapper, torch.optim.SGD(wrapper.parameters(), lr=0.1), _step, config=cfg,
                      data=lambda step, g: torch.randn(4, 2, generator=g), state=wrapper.net,
                      meta={"system": "toy"})
    trainer.fit()
    ck = load_checkpoint(tmp_path / "run")
    assert list(ck["model"]) == ["weight", "bias"]  # the inner network's own keys
    resumed = _Wrapper()
    again = Trainer(resumed, torch.optim.SGD(resumed.parameters(), lr=0.1), _step, config=cfg,
                    data=lambda step, g: torch.randn(4, 2, generator=g), state=resumed.net)
    again.resume(tmp_path / "run")
    torch.testing.assert_close(resumed.net.weight, wrapper.net.weight)
    slim = load_checkpoint(export_checkpoint(tmp_path / "run", tmp_path / "slim.pt", fmt="toy-export-1"))
    assert slim["format"] == "toy-export-1" and slim["meta"] == {"system": "toy", "step": 2}
    assert "optimizer" not in slim and list(slim["model"]) == ["weight", "bias"]
    with pytest.raises(ValueError, match="state must be the model or one of its submodules"):
        Trainer(wrapper, torch.optim.SGD(wrapper.parameters(), lr=0.1), _step, config=cfg,
                data=lambda step, g: None, state=nn.Linear(2, 1))
