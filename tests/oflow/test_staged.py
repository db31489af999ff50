"""The staged Occupancy Flow recipe: near-surface samples, the direct velocity loss, correspondence at a
few times, the shape / motion stages (what each trains), warm starts between stages, exact resume of each
stage and validation that decodes t=0 only."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.oflow.conftest import analytic_model, codes
from tests.oflow.test_train import _config as train_config
from toolkit.io import DataError
from toolkit.oflow._sphere import sphere_batch, write_moving_sphere_dataset
from toolkit.oflow.data import NEAR_DIR, SequenceDataset, pack_sequence, read_points_frame
from toolkit.oflow.losses import compute_losses, correspondence_frames, correspondence_loss, velocity_loss
from toolkit.oflow.model import OccupancyFlow, build_model
from toolkit.oflow.train import _warm_start, train


@pytest.fixture(scope="module")
def sphere_root(tmp_path_factory):
    return write_moving_sphere_dataset(tmp_path_factory.mktemp("staged") / "data", frames=9, n_points=1024,
                                       n_pcl=256, n_near=1024)


def _config(root, out, **kw):
    """test_train's tiny setting, 8 steps."""
    return train_config(root, out, **{"max_steps": 8, "log_every": 2, "val_every": 4, "ckpt_every": 4, **kw})


# --- data -------------------------------------------------------------------------------------------

def test_near_surface_labels_are_the_exact_inside_test(sphere_root):
    frame = read_points_frame(sphere_root / "s0" / NEAR_DIR / "00000003.npz")
    # the sphere is the ball of radius 0.5 about the frame's own origin; labels are of the stored float16 points
    r = np.linalg.norm(frame.points.astype(np.float64), axis=1)
    np.testing.assert_array_equal(frame.occupancies, r <= 0.5)
    # two noise scales around the surface: about half inside, all within a few sigma of the surface
    assert 0.35 < frame.occupancies.mean() < 0.65 and np.abs(r - 0.5).max() < 0.25
    assert np.median(np.abs(r - 0.5)) < 0.03


def test_near_surface_fraction_of_training_points(sphere_root):
    uniform = SequenceDataset(sphere_root, length=5, n_points=400, n_points_t=400)
    near = SequenceDataset(sphere_root, length=5, n_points=400, n_points_t=400, near_surface=0.5)
    close = {}
    for name, ds in (("uniform", uniform), ("near", near)):
        item = ds[0]
        r = item["points"].norm(dim=-1)  # frame 0 of window 0: the ball of radius 0.5 at the origin
        assert torch.equal(item["points.occ"], (r <= 0.5).float())
        close[name] = float(((r - 0.5).abs() < 0.05).float().mean())
    # half the points come from near the surface: about 90 % of those lie within 0.05 of it (sigmas 0.01, 0.04)
    assert close["near"] == pytest.approx(0.5 * close["uniform"] + 0.45, abs=0.06), close
    with pytest.raises(ValueError, match="near_surface must be a fraction"):
        SequenceDataset(sphere_root, length=5, near_surface=1.5)


def test_missing_near_surface_points_are_named(tmp_path):
    root = write_moving_sphere_dataset(tmp_path / "plain", frames=5, n_points=64, n_pcl=32)
    with pytest.raises(DataError, match=r"s0.*no points_near_seq/ for near_surface=0\.5.*regenerate"):
        SequenceDataset(root, length=5, near_surface=0.5)


def test_pack_cache_holds_the_near_field(sphere_root):
    pack = pack_sequence(sphere_root / "s1")
    frame = read_points_frame(sphere_root / "s1" / NEAR_DIR / "00000002.npz")
    np.testing.assert_array_equal(pack.near_points[2], frame.points)
    np.testing.assert_array_equal(pack.near_occupancy(2), frame.occupancies)


# --- losses -----------------------------------------------------------------------------------------

class AcceleratedField(nn.Module):
    """v(p, t) = a + b t, a = z_t per item, b fixed: trajectories x0 + a t + b t^2 / 2."""

    b = torch.tensor([0.3, -0.2, 0.1])

    def forward(self, p, t, c, z):
        return (z[:, None, :] + t.reshape(-1, 1, 1) * self.b).expand_as(p)


def test_velocity_loss_is_zero_for_the_true_field_of_an_analytic_motion():
    model = analytic_model()
    model.vector_field = AcceleratedField()
    a = torch.tensor([[0.2, 0.0, -0.1], [0.0, 0.5, 0.0]])
    times = torch.linspace(0, 1, 17)
    x0 = torch.rand(2, 1, 50, 3)
    traj = x0 + a[:, None, None] * times[None, :, None, None] + AcceleratedField.b * times[None, :, None, None] ** 2 / 2
    cd = codes(torch.zeros(2, 3), a)
    assert float(velocity_loss(model, cd, traj, times)) < 1e-6
    # a wrong motion is penalised by its velocity error
    assert float(velocity_loss(model, codes(torch.zeros(2, 3), a + 0.1), traj, times)) == pytest.approx(
        0.1 * 3 ** 0.5, rel=1e-4)


def test_correspondence_at_a_few_times():
    assert correspondence_frames(17, 4).tolist() == [4, 8, 12, 16]
    assert correspondence_frames(17, 16).tolist() == list(range(1, 17))
    with pytest.raises(ValueError, match="corr_times must be in 1..16"):
        correspondence_frames(17, 17)
    model = analytic_model()  # v = z_t: exact translation
    times = torch.linspace(0, 1, 17)
    v = torch.tensor([[0.3, 0.0, 0.0]])
    traj = torch.rand(1, 1, 20, 3) + v[:, None, None] * times[None, :, None, None]
    traj[:, 5] += 1.0  # a frame the 4-time loss does not look at
    assert float(correspondence_loss(model, codes(torch.zeros(1, 3), v), traj, times, frames=4)) < 1e-5
    assert float(correspondence_loss(model, codes(torch.zeros(1, 3), v), traj, times)) > 0.05


@pytest.mark.parametrize("stage, trained, untouched", [
    ("shape", ("decoder",), ("vector_field", "encoder_temporal")),  # (CBN starts blind to c_s: no encoder grad)
    ("motion", ("vector_field", "encoder_temporal"), ("decoder", "encoder.")),
])
def test_each_stage_trains_only_its_networks(stage, trained, untouched):
    torch.manual_seed(0)
    model = build_model("tiny", seq_len=5)
    batch = sphere_batch(4, length=5, n_input_points=32, n_points=64, n_corr_points=16)
    losses = compute_losses(model, batch, stage=stage, corr_times=2)
    losses.total.backward()
    grads = {name: p.grad is not None and bool(p.grad.abs().sum() > 0) for name, p in model.named_parameters()}
    for prefix in trained:  # (zero-initialised last layers leave some weights without a first gradient)
        assert any(has for name, has in grads.items() if name.startswith(prefix)), f"{stage}: {prefix} gets no gradient"
    for prefix in untouched:
        assert not any(has for name, has in grads.items() if name.startswith(prefix)), f"{stage}: {prefix} trains"
    assert float(losses.total.detach()) > 0 and (losses.velocity is not None) == (stage == "motion")


# --- training ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["shape", "motion"])
def test_each_stage_resumes_exactly(sphere_root, tmp_path, stage):
    kw = {"stage": stage, "near_surface": 0.5, "corr_times": 2, "val_every": 0, "lr_milestones": [3, 6]}
    full = train(_config(sphere_root, tmp_path / "full", **kw), progress=False)
    part = _config(sphere_root, tmp_path / "part", **kw)
    train(part, progress=False, resume=False, stop_at=4)
    torch.manual_seed(99)
    resumed = train(part, progress=False, resume=True)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    logs = [r for r in full.history if r["split"] == "train"]
    assert ("velocity" in logs[0]) == (stage == "motion") and ("recon_t0" in logs[0]) == (stage == "shape")


def test_stages_chain_by_init_from_and_shape_validates_t0_only(sphere_root, tmp_path):
    shape = train(_config(sphere_root, tmp_path / "a", stage="shape", near_surface=0.5, val_frames="t0"),
                  progress=False)
    val = [r for r in shape.history if r["split"] == "val"]
    assert [r["step"] for r in val] == [4, 8]
    assert all(set(r) - {"step", "split"} == {"iou_t0"} for r in val)  # decoding only: the flow is untrained
    motion = train(_config(sphere_root, tmp_path / "b", stage="motion", init_from=str(tmp_path / "a"), max_steps=2,
                           val_every=2, val_frames="t0"), progress=False)
    assert {"iou", "iou_t1", "corr_l2"} <= set(motion.history[-1])  # a stage that trains the flow: every frame last
    for name, w in shape.model.state_dict().items():
        if name.startswith(("decoder", "encoder.")):
            assert torch.equal(motion.model.state_dict()[name], w), name  # motion leaves the shape alone
    with pytest.raises(DataError, match="init_from: model config differs.*c_dim"):
        train(_config(sphere_root, tmp_path / "c", init_from=str(tmp_path / "a"), model_overrides={"c_dim": 8}),
              progress=False)
    # what the temporal encoders read changes no weight's shape: a motion stage may switch it
    disp = train(_config(sphere_root, tmp_path / "d", stage="motion", init_from=str(tmp_path / "a"), max_steps=1,
                         model_overrides={"temporal_input": "displacements"}), progress=False)
    assert disp.model.config.temporal_input == "displacements"
    assert torch.equal(disp.model.state_dict()["decoder.fc_p.weight"], shape.model.state_dict()["decoder.fc_p.weight"])
    # switching on the velocity prior keeps the shape but not the field, whose network becomes a residual
    prior = OccupancyFlow(shape.model.config.replace(velocity_prior="input_trajectories"))
    _warm_start(prior, tmp_path / "a")
    mine, theirs = prior.state_dict(), shape.model.state_dict()
    assert all(torch.equal(mine[k], w) for k, w in theirs.items() if not k.startswith("vector_field."))
    assert not mine["vector_field.fc_out.weight"].any() and theirs["vector_field.fc_out.weight"].any()


def test_init_logstd_z_t_starts_the_motion_posterior_narrow_and_resume_keeps_its_own(sphere_root, tmp_path):
    kw = dict(model_preset="generative", stage="motion", init_logstd_z_t=-3.0, val_every=2, ckpt_every=1)
    first = train(_config(sphere_root, tmp_path / "g", max_steps=2, **kw), progress=False)
    bias = first.model.encoder_latent_temporal.fc_logstd.bias.detach()
    assert float((bias + 3.0).abs().max()) < 0.01 and not torch.all(bias == -3.0)  # set, then two small steps
    resumed = train(_config(sphere_root, tmp_path / "g", max_steps=3, **kw), progress=False)  # resumes at 2
    straight = train(_config(sphere_root, tmp_path / "h", max_steps=3, **kw), progress=False)
    # a resume keeps the run's own weights: resetting the bias again would part it from the uninterrupted run
    assert torch.equal(resumed.model.encoder_latent_temporal.fc_logstd.bias,
                       straight.model.encoder_latent_temporal.fc_logstd.bias)


def test_staged_configs_chain_the_stages_and_run(sphere_root, tmp_path):
    from toolkit.oflow.train import staged_configs

    cfgs = staged_configs("completion", quick=True, steps=3, run_root=tmp_path / "runs",
                          overrides=[f"data_root={sphere_root}", "length=5", "n_eval_points=256", "val_max_windows=1"])
    assert [c.stage for c in cfgs] == ["shape", "motion", "joint"]
    assert cfgs[0].init_from == "" and cfgs[1].init_from == cfgs[0].out_dir and cfgs[2].init_from == cfgs[1].out_dir
    assert all(c.max_steps == 3 and c.lr_milestones is None and c.model_preset == "tiny" for c in cfgs)
    assert cfgs[0].near_surface == 0.5 and cfgs[1].corr_times == 4  # the stages' own settings are kept
    later = {"temporal_input": "displacements", "velocity_prior": "input_trajectories", "prior_neighbors": 8}
    assert cfgs[1].model_overrides == cfgs[2].model_overrides == later
    assert cfgs[1].model_config().temporal_input == "displacements" and cfgs[0].model_config().temporal_input == "positions"
    assert cfgs[1].model_config().velocity_prior == "input_trajectories" and cfgs[0].model_config().velocity_prior == "none"
    for cfg in cfgs:
        result = train(cfg, progress=False)
        assert result.history[-1]["step"] == 3
    gen = staged_configs("generative", quick=True)
    assert [c.model_preset for c in gen] == ["generative"] * 3 and gen[0].vae_beta == 1e-4
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        staged_configs("nope")
