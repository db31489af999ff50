"""Occupancy Flow training on a moving sphere: learning, exact resume, checkpoint round trip, configs, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from toolkit.cli import main as cli_main
from toolkit.config import load_config_dict, packaged_configs
from toolkit.io import DataError
from toolkit.oflow._sphere import write_moving_sphere_dataset
from toolkit.oflow.model import OccupancyFlow, preset
from toolkit.oflow.model import load_checkpoint as model_load_checkpoint
from toolkit.oflow.train import (
    OFlowTrainable,
    OFlowTrainConfig,
    export_checkpoint,
    load_oflow,
    train,
    train_from_config,
)


@pytest.fixture(scope="module")
def sphere_root(tmp_path_factory):
    return write_moving_sphere_dataset(tmp_path_factory.mktemp("sphere") / "data", frames=9, n_points=1024,
                                       n_pcl=256)


def _config(root, out, **kw):
    base = {"data_root": str(root), "model_preset": "tiny", "ode": "rk4", "ode_overrides": {"step_size": 0.25},
            "length": 5, "n_input_points": 64, "n_points": 128, "n_points_t": 128, "n_corr_points": 32,
            "n_eval_points": 512, "val_max_windows": 2, "batch_size": 4, "lr": 3e-3, "max_steps": 30,
            "log_every": 5, "val_every": 30, "ckpt_every": 10, "out_dir": str(out), "seed": 0}
    return OFlowTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(sphere_root, tmp_path_factory):
    cfg = _config(sphere_root, tmp_path_factory.mktemp("run"))
    return cfg, train(cfg, progress=False)


def test_quick_training_lowers_every_loss_term_and_validates(trained):
    _, result = trained
    tr = [r for r in result.history if r["split"] == "train"]
    for key in ("recon_t0", "recon_t", "corr"):
        assert tr[-1][key] < 0.6 * tr[0][key], (key, tr[0][key], tr[-1][key])
    assert "kl" not in tr[0]  # no latents
    val = [r for r in result.history if r["split"] == "val"]
    assert [r["step"] for r in val] == [30] and set(val[0]) >= {"iou", "iou_t0", "iou_t1", "corr_l2"}
    assert 0.3 < val[0]["iou"] <= 1.0
    assert result.checkpoint is not None and result.checkpoint.name == "step_00000030.pt"


def test_exact_resume_equals_uninterrupted_run(sphere_root, tmp_path):
    kw = {"max_steps": 8, "ckpt_every": 4, "val_every": 0, "lr_milestones": [3, 6], "lr_gamma": 0.5}
    full = train(_config(sphere_root, tmp_path / "full", **kw), progress=False)
    part = _config(sphere_root, tmp_path / "part", **kw)
    train(part, progress=False, resume=False, stop_at=4)  # "interrupted" after a checkpoint
    torch.manual_seed(1234)  # the global RNG state must not matter
    resumed = train(part, progress=False, resume=True)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    losses = lambda h: [r["loss"] for r in h if r["split"] == "train"]
    assert losses(full.history) == losses(resumed.history) and len(losses(full.history)) == 2
    rates = lambda h: [r["lr"] for r in h if r["split"] == "train"]
    assert rates(full.history) == rates(resumed.history) and rates(full.history)[0] > rates(full.history)[1]


def test_checkpoint_meta_round_trip_rebuilds_the_same_model(trained, tmp_path):
    cfg, result = trained
    loaded = load_oflow(result.checkpoint)
    assert loaded.meta["system"] == "oflow" and loaded.meta["step"] == 30
    assert loaded.meta["train_config"]["model_preset"] == "tiny"
    assert loaded.meta["data"]["sequences"] == ["s0", "s1"] and loaded.meta["data"]["length"] == 5
    assert loaded.model.config == result.model.config == cfg.model_config()
    assert loaded.model.config.ode.method == "rk4" and loaded.model.config.ode.step_size == 0.25
    direct = model_load_checkpoint(result.checkpoint)  # the model module's loader reads Trainer checkpoints
    run_dir = load_oflow(result.run_dir)  # a run folder means its latest checkpoint
    for k, v in result.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
        assert torch.equal(direct.state_dict()[k], v) and torch.equal(run_dir.model.state_dict()[k], v), k
    slim = load_oflow(export_checkpoint(result.run_dir, tmp_path / "oflow_test.pt"))
    assert slim.meta["step"] == 30 and slim.model.config == loaded.model.config
    torch.testing.assert_close(slim.model.state_dict(), loaded.model.state_dict())


def test_trainable_holds_the_model_and_checkpoints_keep_its_own_keys(trained):
    model = OccupancyFlow(preset("tiny"))
    trainable = OFlowTrainable(model)
    assert trainable.oflow is model and dict(trainable.named_children()) == {"oflow": model}
    assert all(a is b for a, b in zip(trainable.parameters(), model.parameters()))
    trainable.eval()
    assert not model.training  # an ordinary child: modes follow
    # The trainer stores the model itself (state=trainable.oflow): a training checkpoint has its bare keys.
    _, result = trained
    stored = torch.load(result.checkpoint, weights_only=True)["model"]
    assert list(stored) == list(result.model.state_dict())


def test_config_errors_name_the_problem(sphere_root, tmp_path):
    with pytest.raises(ValueError, match="valid"):
        OFlowTrainConfig(model_preset="huge")
    with pytest.raises(ValueError, match="unknown ode preset"):
        OFlowTrainConfig(ode="rk45")
    with pytest.raises(ValueError, match="length"):
        OFlowTrainConfig(model_overrides={"seq_len": 9}, length=17).model_config()
    with pytest.raises(ValueError, match="unknown ODE option"):
        OFlowTrainConfig(ode_overrides={"stepsize": 0.1}).model_config()
    assert OFlowTrainConfig(lr="3e-3").lr == 0.003  # YAML 1.1 reads 3e-3 as a string
    with pytest.raises(ValueError, match="max_steps must be an integer"):
        OFlowTrainConfig(max_steps=2.5)
    with pytest.raises(ValueError, match="unknown keys"):
        train_from_config("quick", overrides=["learning_rate=1"])
    with pytest.raises(DataError, match="synthetic"):
        train(_config(tmp_path / "missing", tmp_path / "run"), progress=False)
    with pytest.raises(DataError, match="nope.lst"):
        train(_config(sphere_root, tmp_path / "run", val_split="nope"), progress=False)


def test_packaged_presets_build_their_models():
    names = ("quick", "completion_shape", "completion_motion", "completion", "completion_single_stage", "generative",
             "representation", "paper")
    assert set(names) <= set(packaged_configs("oflow"))
    sizes, stages = {}, {}
    for name in names:
        cfg = OFlowTrainConfig(**load_config_dict("oflow", name))
        sizes[name], stages[name] = sum(p.numel() for p in OccupancyFlow(cfg.model_config()).parameters()), cfg.stage
        assert cfg.model_config().seq_len == cfg.length
    assert sizes["quick"] < 20_000 < sizes["completion_single_stage"] < 1_000_000 < sizes["completion"] < sizes["paper"]
    # the staged recipe: one model through three stages, each starting from the previous one's run
    assert sizes["completion_shape"] == sizes["completion_motion"] == sizes["completion"]
    assert [stages[n] for n in ("completion_shape", "completion_motion", "completion")] == ["shape", "motion", "joint"]
    assert load_config_dict("oflow", "completion")["init_from"] == load_config_dict("oflow", "completion_motion")["out_dir"]
    assert load_config_dict("oflow", "completion_motion")["init_from"] == load_config_dict("oflow", "completion_shape")["out_dir"]
    paper = OFlowTrainConfig(**load_config_dict("oflow", "paper")).model_config()
    assert paper.ode.method == "dopri5" and paper.ode.adjoint and paper.c_dim == 512  # the original's


def test_cli_trains_and_evaluates_the_quick_config(tmp_path, capsys, monkeypatch):
    import dataclasses
    import functools

    import toolkit.oflow.train as oflow_train

    # the command's defaults are the original protocol (128^3 MISE, 100k surface samples): too slow here;
    # the command evaluates through the system's record
    monkeypatch.setattr(oflow_train, "SYSTEM", dataclasses.replace(oflow_train.SYSTEM, evaluate=functools.partial(
        oflow_train.evaluate_checkpoint, n_surface_points=2000, resolution0=16, upsampling_steps=1)))
    out = tmp_path / "run"
    # the quick preset on the sphere data (17-frame windows need 17 frames), a few steps
    root = write_moving_sphere_dataset(tmp_path / "sphere17", frames=17, n_points=512, n_pcl=256)
    assert cli_main(["train", "oflow", "--config", "quick", "--set", f"data_root={root}", "--set", f"out_dir={out}",
                     "--set", "max_steps=3", "--set", "n_eval_points=512"]) == 0
    capsys.readouterr()
    assert cli_main(["eval", "oflow", str(out), str(root), "--json", str(tmp_path / "eval.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert printed == saved and saved["split"] == "test" and saved["windows"] == 2 and saved["frames"] == 17
    assert saved["model"]["preset"] == "tiny" and saved["model"]["step"] == 3
    assert saved["model"]["velocity_prior"] == "none"
    assert len(saved["per_frame"]["iou"]) == 17 and 0.0 <= saved["mean"]["iou"] <= 1.0
    assert {"chamfer_l1_x10", "chamfer_l2_sq", "corr_l2_x10"} <= set(saved["mean"]) and "x10" in saved["units"]
    assert np.isfinite(saved["seconds"]["total"])
    assert saved["iou_points_per_frame"] == 512
    assert cli_main(["eval", "oflow", str(out), str(root), "--split", "train", "--max-windows", "1",
                     "--points", "100"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["split"] == "train" and one["windows"] == 1 and one["iou_points_per_frame"] == 100
    assert cli_main(["eval", "sof", str(out), str(root), "--split", "train"]) == 2  # a usage error
    assert "--split apply to oflow only" in capsys.readouterr().err


def test_load_pretrained_falls_back_to_a_quick_model_and_reuses_it(tmp_path, monkeypatch):
    import dataclasses

    import toolkit.oflow.train as oflow_train

    monkeypatch.setattr("toolkit.paths.DATA_DIR", tmp_path / "no_shipped_files")
    # the quick data folder exists (a 17-frame sphere), so nothing is generated
    write_moving_sphere_dataset(tmp_path / "bodies_quick", frames=17, n_points=512, n_pcl=256)
    first = oflow_train.load_pretrained("generative", work_dir=tmp_path, progress=False)
    assert first.meta["step"] == 40 and first.model.config.z_dim == 32 and not first.model.training
    calls = []
    monkeypatch.setattr(oflow_train, "SYSTEM", dataclasses.replace(oflow_train.SYSTEM,
                                                                   train=lambda *a, **k: calls.append(1)))
    again = oflow_train.load_pretrained("generative", work_dir=tmp_path, progress=False)
    assert calls == [] and again.meta["step"] == 40  # the finished quick run is reused
    torch.testing.assert_close(again.model.state_dict(), first.model.state_dict())
    with pytest.raises(ValueError, match="unknown pretrained kind 'interpolation'; valid"):
        oflow_train.load_pretrained("interpolation", source="shipped")
    with pytest.raises(ValueError, match=r"unknown pretrained model 'nope'; valid: shipped .* authors'"):
        oflow_train.load_pretrained("nope")
