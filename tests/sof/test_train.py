"""SOF training on tiny synthetic portraits: learning, exact resume, stage 2, checkpoints, CLI."""
from __future__ import annotations

import json

import pytest
import torch

from toolkit.io import DataError
from toolkit.sof.train import (
    SofTrainConfig,
    evaluate_views,
    export_checkpoint,
    fit_codes,
    load_sof,
    train_from_config,
    train_multiview,
)
from toolkit.synthetic.heads import write_portrait_dataset

TINY_MODEL = {"latent_dim": 16, "phi_width": 32, "marcher_width": 32, "steps": 6}


@pytest.fixture(scope="module")
def portraits(tmp_path_factory):
    root = tmp_path_factory.mktemp("sof") / "portraits"
    write_portrait_dataset(root, instances=2, views=6, size=32, seed=3)
    return root


def _config(root, out, **kw):
    base = dict(data_root=str(root), model_overrides=TINY_MODEL, image_size=32, num_rays=512, batch_size=4,
                lr=1e-3, max_steps=100, log_every=10, val_every=100, ckpt_every=30, val_views_per_instance=1,
                val_image_size=32, out_dir=str(out), seed=0)
    base.update(kw)
    return SofTrainConfig(**base)


@pytest.fixture(scope="module")
def trained(portraits, tmp_path_factory):
    torch.manual_seed(0)
    cfg = _config(portraits, tmp_path_factory.mktemp("run"))
    result = train_multiview(cfg, progress=False)
    return cfg, result


def test_training_lowers_the_loss_and_raises_held_out_miou(trained, portraits):
    cfg, result = trained
    train = [r for r in result.history if r["split"] == "train"]
    assert train[-1]["ce"] < 0.7 * train[0]["ce"]
    untrained = _config(portraits, cfg.out_dir + "_untrained", max_steps=0)
    from toolkit.sof.model import SOFModel, model_config

    fresh = SOFModel(model_config("small", num_instances=2, **TINY_MODEL))
    before = evaluate_views(fresh, portraits, result.split.val, 32, instances=result.split.instances)
    after = evaluate_views(result.model, portraits, result.split.val, 32, instances=result.split.instances)
    assert after.dataset_miou > before.dataset_miou + 0.1, (before.dataset_miou, after.dataset_miou)
    val = [r for r in result.history if r["split"] == "val"]
    assert val and val[-1]["miou"] == pytest.approx(after.dataset_miou, abs=1e-6)
    assert untrained.max_steps == 0


def test_held_out_views_are_not_trained_on(trained):
    _, result = trained
    assert not set(result.split.train) & set(result.split.val)
    assert {n for n, _ in result.split.val} <= set(result.split.instances)


def test_exact_resume_equals_uninterrupted_run(portraits, tmp_path):
    full = train_multiview(_config(portraits, tmp_path / "full", max_steps=12, val_every=0, ckpt_every=6),
                           progress=False)
    part_cfg = _config(portraits, tmp_path / "part", max_steps=12, val_every=0, ckpt_every=6)
    # "Interrupted" after 6 steps (a checkpoint is left), then resumed to 12 by a fresh call.
    train_multiview(part_cfg, progress=False, resume=False, stop_at=6)
    torch.manual_seed(1234)  # global RNG state must not matter
    resumed = train_multiview(part_cfg, progress=False, resume=True)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    losses = lambda h: [r["loss"] for r in h if r["split"] == "train"]
    assert losses(full.history) == losses(resumed.history)


def test_checkpoint_round_trip_and_export(trained, tmp_path):
    _, result = trained
    loaded = load_sof(result.checkpoint)
    assert loaded.meta["system"] == "sof" and loaded.meta["label_set"] == "sof20"
    assert loaded.meta["camera"]["projection"] == "ortho"
    for (k, a), (_, b) in zip(result.model.state_dict().items(), loaded.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    slim = export_checkpoint(result.run_dir, tmp_path / "slim.pt")
    assert slim.stat().st_size < result.checkpoint.stat().st_size  # no optimizer state
    again = load_sof(slim)
    torch.testing.assert_close(again.model.latent_codes.weight, loaded.model.latent_codes.weight)


def test_wrong_checkpoints_give_clear_errors(trained, tmp_path):
    _, result = trained
    ck = torch.load(result.checkpoint, weights_only=True)
    ck["meta"]["model_config"]["num_classes"] = 19
    torch.save(ck, tmp_path / "labels.pt")
    with pytest.raises(DataError, match="does not fit"):
        load_sof(tmp_path / "labels.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt"):
        load_sof(tmp_path / "junk.pt")


def test_stage2_fits_codes_and_leaves_networks_untouched(trained, portraits, tmp_path):
    _, result = trained
    new = tmp_path / "new"
    write_portrait_dataset(new, instances=2, views=3, size=32, seed=11)
    s2 = _config(new, tmp_path / "s2", stage="inverse", checkpoint=str(result.checkpoint), max_steps=20,
                 val_every=20, lr=1e-2, optimize_camera=True)
    fitted = fit_codes(s2, progress=False)
    base = load_sof(result.checkpoint).model.state_dict()
    for k, v in fitted.model.state_dict().items():
        if k.startswith("latent_codes"):
            assert v.shape == (2, TINY_MODEL["latent_dim"])
        else:
            assert torch.equal(v, base[k]), f"{k} changed in stage 2"
    assert fitted.split.train == [(n, 0) for n in fitted.split.instances]
    assert any(r["split"] == "val" for r in fitted.history)
    ck = torch.load(fitted.checkpoint, weights_only=True)
    assert ck["model"]["cameras.pose"].shape == (2, 2) and ck["model"]["cameras.pose"].abs().sum() > 0
    assert torch.equal(ck["model"]["cameras.similarity"], torch.zeros(2, 4))  # not fitted without `align`
    assert load_sof(fitted.checkpoint).cameras.pose.shape == (2, 2)


def test_cli_train_and_eval(portraits, tmp_path, capsys):
    from toolkit.cli import main

    out = tmp_path / "cli_run"
    assert main(["train", "sof", "--config", "quick", "--set", f"data_root={portraits}", "--set", f"out_dir={out}",
                 "--set", "max_steps=4", "--set", "image_size=32"]) == 0
    assert main(["eval", "sof", str(out), str(portraits), "--json", str(tmp_path / "m.json")]) == 0
    res = json.loads((tmp_path / "m.json").read_text())
    assert 0.0 <= res["dataset_miou"] <= 1.0 and res["views"] > 0 and "skin" in res["per_class_iou"]


def test_unknown_config_keys_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="valid"):
        train_from_config("quick", ["learning_rate=0.1"])
    with pytest.raises(ValueError, match="packaged"):
        train_from_config("nonexistent_preset")


def test_depth_supervision_pulls_depth_to_ground_truth(portraits, tmp_path):
    """The marched depth of foreground rays moves toward the synthetic heads' exact depth when supervised."""
    from toolkit.sof.data import SofDataset
    from toolkit.sof.train import SofTrainable

    def depth_error(result):
        ds = SofDataset.from_split(portraits, result.split, "train", image_size=32, with_depth=True)
        batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}
        with torch.no_grad():
            out, _ = SofTrainable(result.model).eval()(batch)
        fg = (batch["labels"] > 0) & torch.isfinite(batch["depth"])
        return (out.depth.squeeze(-1) - batch["depth"])[fg].abs().mean().item()

    common = dict(max_steps=40, val_every=0, ckpt_every=0)
    plain = train_multiview(_config(portraits, tmp_path / "plain", **common), progress=False)
    supervised = train_multiview(_config(portraits, tmp_path / "depth", loss={"depth_supervision": 1000.0},
                                         lr_milestones=[30], lr_gamma=0.5, **common), progress=False)
    logs = [r for r in supervised.history if r["split"] == "train"]
    assert "depth_sup" in logs[0] and logs[-1]["depth_sup"] < 0.5 * logs[0]["depth_sup"]
    assert logs[-1]["lr"] == pytest.approx(5e-4)  # 1e-3 halved at step 30
    assert depth_error(supervised) < 0.7 * depth_error(plain), (depth_error(supervised), depth_error(plain))


def test_exponent_floats_in_yaml_and_overrides_are_numbers(tmp_path):
    """PyYAML alone reads `3e-3` as a string; configs must hand the optimizer a number."""
    from toolkit.config import load_config_dict

    path = tmp_path / "c.yaml"
    path.write_text("lr: 3e-3\nloss: {depth_supervision: 1E+3}\nout_dir: run3e3\n")
    data = load_config_dict("sof", path, ["max_steps=12", "loss.latent=5e-1"])
    assert data["lr"] == 3e-3 and isinstance(data["lr"], float)
    assert data["loss"] == {"depth_supervision": 1000.0, "latent": 0.5}
    assert data["out_dir"] == "run3e3" and data["max_steps"] == 12


def test_stage2_code_inits(trained, portraits, tmp_path):
    """"nearest" gives each portrait the stage-1 code whose full render of its fitted view has the lowest
    cross-entropy (checked against model.render); "mean" gives the mean code."""
    import torch.nn.functional as F

    from toolkit.sof.data import SofDataset, Split
    from toolkit.sof.train import NEAREST_CODE_SIZE, _initial_codes

    _, result = trained
    base = load_sof(result.checkpoint).model
    codes = base.latent_codes.weight.detach().clone()
    codes[1] = codes[0] + 0.5 * torch.randn(codes.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base.latent_codes.weight.copy_(codes)
    names = result.split.instances
    split = Split(instances=names[::-1], train=[(n, 0) for n in names[::-1]], val=[], seed=0,
                  val_views_per_instance=0)
    views = SofDataset.from_split(portraits, split, "train", image_size=NEAREST_CODE_SIZE)
    cost = torch.zeros(2, 2)
    for item in views:
        for c in range(2):
            logits = base.render(codes[c:c + 1], item["cam2world"], item["intrinsics"], NEAREST_CODE_SIZE,
                                 NEAREST_CODE_SIZE).logits.reshape(-1, base.config.num_classes)
            cost[int(item["instance_idx"]), c] = F.cross_entropy(logits, item["labels"])
    nearest = _initial_codes(base, "nearest", portraits, split)
    torch.testing.assert_close(nearest, codes[cost.argmin(1)])
    assert cost.min(1).values.lt(cost.max(1).values).all()  # the choice was not a tie
    torch.testing.assert_close(_initial_codes(base, "mean", portraits, split), codes.mean(0).expand(2, -1))
    with pytest.raises(ValueError, match="valid"):
        _config(portraits, tmp_path, stage="inverse", checkpoint="x.pt", code_init="closest")


def test_init_from_extends_a_trained_model_with_new_portraits(trained, tmp_path):
    _, result = trained
    more = tmp_path / "more"
    write_portrait_dataset(more, instances=3, views=6, size=32, seed=3)  # instances 0-1 are `portraits`
    ext = _config(more, tmp_path / "ext", init_from=str(result.checkpoint))
    extended = train_multiview(ext, progress=False, stop_at=0).model
    base = load_sof(result.checkpoint).model
    for k, v in base.state_dict().items():
        if not k.startswith("latent_codes"):
            assert torch.equal(extended.state_dict()[k], v), k
    old = {n: i for i, n in enumerate(result.split.instances)}
    codes = extended.latent_codes.weight
    for i, name in enumerate(sorted(old) + ["00002"]):
        if name in old:
            assert torch.equal(codes[i], base.latent_codes.weight[old[name]])
        else:  # a new portrait starts from the small random init
            assert 0 < codes[i].abs().max() < 0.1
    wrong = _config(more, tmp_path / "wrong", init_from=str(result.checkpoint),
                    model_overrides={**TINY_MODEL, "phi_width": 16})
    with pytest.raises(DataError, match="phi_width"):
        train_multiview(wrong, progress=False, stop_at=0)


def test_stage2_unfreezes_the_networks_at_their_own_rate(trained, tmp_path):
    _, result = trained
    new = tmp_path / "new"
    write_portrait_dataset(new, instances=2, views=2, size=32, seed=11)
    s2 = _config(new, tmp_path / "s2", stage="inverse", checkpoint=str(result.checkpoint), max_steps=10,
                 val_every=10, ckpt_every=5, keep_last=None, lr=1e-2, unfreeze_at=5, network_lr=1e-4)
    fitted = fit_codes(s2, progress=False)
    base = load_sof(result.checkpoint).model.state_dict()
    at_unfreeze = torch.load(tmp_path / "s2" / "checkpoints" / "step_00000005.pt", weights_only=True)["model"]
    change = 0.0
    for k, v in fitted.model.state_dict().items():
        if not k.startswith("latent_codes"):
            assert torch.equal(at_unfreeze[f"sof.{k}"], base[k]), f"{k} moved before unfreeze_at"
            change = max(change, (v - base[k]).abs().max().item())
    # 5 Adam steps at 1e-4 move a weight by at most about 5 x 3.2e-4; at the codes' 1e-2 it would be 30x more
    assert 0 < change < 1.6e-3
