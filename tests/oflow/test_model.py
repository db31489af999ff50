"""Occupancy Flow model and losses: shapes, determinism, checkpoints, gradients, training."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from toolkit.io import DataError
from toolkit.oflow.losses import compute_losses
from toolkit.oflow.model import (
    DISPLACEMENT_SCALE,
    PRESETS,
    Codes,
    OccupancyFlow,
    OFlowConfig,
    _flatten_trajectories,
    build_model,
    infer_config,
    load_checkpoint,
    load_state_dict,
    preset,
)

FAST = {"method": "rk4", "num_steps": 2, "adjoint": False}


def _randomize_zero_weights(model: OccupancyFlow, seed: int = 0) -> OccupancyFlow:
    """The constructors zero some weights (fc_1, CBN gamma/beta); draw them so every path is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2 and not p.any():
                fan_in = p[0].numel()
                p.uniform_(-1, 1, generator=g).mul_(fan_in**-0.5)
    return model


def _tiny(seed: int = 0, **changes) -> OccupancyFlow:
    torch.manual_seed(seed)
    return _randomize_zero_weights(build_model(preset("tiny", **changes)), seed)


def _inputs(b: int = 2, seq_len: int = 17, n: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 1, n, 3, generator=g) - 0.5
    t = torch.linspace(0, 1, seq_len).view(1, seq_len, 1, 1)
    return base + 0.2 * t * torch.tensor([1.0, 0.5, 0.0])  # translating trajectories


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shapes_for_every_preset(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    cfg = model.config
    b, n = 2, 8
    xyz = torch.rand(b, n, 3) - 0.5
    with torch.no_grad():
        codes = (
            model.encode(_inputs(b, cfg.seq_len)) if model.needs_inputs else model.encode(None, batch_size=b)
        )
        assert [tuple(c.shape) for c in codes] == [
            (b, cfg.c_dim),
            (b, cfg.c_dim),
            (b, cfg.z_dim),
            (b, cfg.z_dim),
            (b, 0),  # no velocity prior in the presets
        ]
        assert model.decode(codes, xyz).shape == (b, n)
        assert model.velocity(codes, xyz, 0.5).shape == (b, n, 3)
        assert model.occupancy(codes, xyz, torch.tensor([0.25, 1.0]), **FAST).shape == (b, n)
        assert model.transport(codes, xyz, 0.0, torch.tensor([0.5, 1.0]), **FAST).shape == (b, n, 3)
        traj = model.transport_forward(codes, xyz, torch.linspace(0, 1, 3), **FAST)
        assert traj.shape == (b, 3, n, 3)
        assert torch.equal(traj[:, 0], xyz)


def test_parameter_counts_match_the_original():
    # counts reported for the original checkpoints (fixtures README) and the w_correspond estimate (21.2M)
    counts = {
        name: sum(p.numel() for p in build_model(name).parameters())
        for name in ("completion", "generative", "completion_corr")
    }
    assert counts["completion"] == 2_503_556
    assert counts["generative"] == 905_348
    assert abs(counts["completion_corr"] - 21.2e6) < 0.05e6


def test_vae_latents_and_prior():
    torch.manual_seed(0)
    model = build_model(preset("generative").quick()).eval()
    inputs = _inputs()
    q = model.encode_latent(inputs)
    assert q.q_z.loc.shape == q.q_z_t.scale.shape == (2, 32)
    codes = model.encode(inputs)
    torch.testing.assert_close(codes.z, q.q_z.loc)
    s1 = model.encode(inputs, sample=True, generator=torch.Generator().manual_seed(1))
    s2 = model.encode(inputs, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1.z_t, s2.z_t) and not torch.equal(s1.z, codes.z)
    prior = model.sample_codes(3, generator=torch.Generator().manual_seed(2))
    assert prior.z.shape == prior.z_t.shape == (3, 32) and prior.c_s.shape == (3, 0)
    empty = build_model("tiny").encode_latent(_inputs())
    assert empty.q_z.loc.shape == (2, 0)


def test_eval_mode_is_deterministic_and_batch_independent():
    model = _tiny().eval()
    inputs, xyz, t = _inputs(), torch.rand(2, 16, 3) - 0.5, torch.tensor([0.3, 0.9])
    with torch.no_grad():
        codes = model.encode(inputs)
        a = model.occupancy(codes, xyz, t)
        b = model.occupancy(codes, xyz, t)
        assert torch.equal(a, b)
        one = model.decode(Codes(*(c[:1] for c in codes)), xyz[:1])
        torch.testing.assert_close(one, model.decode(codes, xyz)[:1], atol=1e-6, rtol=0)
        model.train()  # train-mode CBN normalizes with this call's statistics, so the batch matters
        assert not torch.allclose(
            model.decode(Codes(*(c[:1] for c in codes)), xyz[:1]), model.decode(codes, xyz)[:1]
        )


@pytest.mark.parametrize("per_item", ["rescale", "original"])
def test_adjoint_gradients_reach_the_encoders(per_item):
    model = _tiny(seed=1).eval()
    inputs, xyz, t = _inputs(seed=1), torch.rand(2, 16, 3) - 0.5, torch.tensor([0.4, 1.0])

    def grads(adjoint: bool):
        model.zero_grad()
        codes = model.encode(inputs)
        # fixed grid: the continuous adjoint and the discrete gradient agree to solver accuracy (ReLU field)
        logits = model.occupancy(codes, xyz, t, method="rk4", num_steps=8, adjoint=adjoint, per_item=per_item)
        logits.square().sum().backward()
        return {
            k: p.grad.clone()
            for k, p in model.named_parameters()
            if k.startswith(("encoder_temporal.", "vector_field."))
        }

    direct, adjoint = grads(False), grads(True)
    assert direct["encoder_temporal.fc_c.weight"].abs().max() > 1e-4
    for k in direct:
        torch.testing.assert_close(
            adjoint[k], direct[k], atol=2e-2 * float(direct[k].abs().max()), rtol=0, msg=k
        )


def _toy_batch(seed: int = 0, b: int = 2):
    """A translating sphere: occupancy labels at t=0 and at a per-item time, corresponding surface points."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.tensor([0.25, 0.0, 0.0])
    times = torch.linspace(0, 1, 17)

    def occ(p, t):
        return ((p - t.view(-1, 1, 1) * shift).norm(dim=-1) < 0.3).float()

    points = torch.rand(b, 64, 3, generator=g) - 0.5
    points_t = torch.rand(b, 64, 3, generator=g) - 0.5
    time = times[torch.tensor([4, 12])[:b]]
    d = torch.randn(b, 1, 16, 3, generator=g)
    surface = 0.3 * d / d.norm(dim=-1, keepdim=True) + times.view(1, 17, 1, 1) * shift
    return {
        "inputs": _inputs(b, 17, 12, seed),
        "points": points,
        "points.occ": occ(points, torch.zeros(b)),
        "points_t": points_t,
        "points_t.occ": occ(points_t, time),
        "points_t.time": time,
        "pointcloud": surface,
        "times": times,
    }


def test_loss_decreases_on_a_fixed_batch():
    model = _tiny(seed=2).train()
    batch = _toy_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    totals = []
    for _ in range(12):
        losses = compute_losses(model, batch, **FAST)
        opt.zero_grad()
        losses.total.backward()
        opt.step()
        totals.append(losses.total.item())
    assert all(torch.isfinite(torch.tensor(totals)))
    assert totals[-1] < 0.8 * totals[0], totals


def test_vae_loss_terms():
    torch.manual_seed(3)
    model = build_model(preset("generative").quick())
    losses = compute_losses(model, _toy_batch(), generator=torch.Generator().manual_seed(0), **FAST)
    assert losses.kl_z > 0 and losses.kl_z_t > 0 and losses.kl < 1e-2  # weighted by vae_beta 1e-4
    torch.testing.assert_close(losses.total, losses.recon_t0 + losses.recon_t + losses.corr + losses.kl)
    unweighted = compute_losses(
        model, _toy_batch(), vae_beta=1.0, generator=torch.Generator().manual_seed(0), **FAST
    )
    torch.testing.assert_close(unweighted.kl_z, losses.kl_z * 1e4, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match=r"eps_z must have shape \(2, 32\); got \(2, 8\)"):
        compute_losses(model, _toy_batch(), eps_z=torch.zeros(2, 8), eps_z_t=torch.zeros(2, 32), **FAST)
    with pytest.raises(ValueError, match="give both eps_z and eps_z_t, or neither"):
        compute_losses(model, _toy_batch(), eps_z=torch.zeros(2, 32), **FAST)


def test_loss_batch_errors():
    model = _tiny()
    batch = _toy_batch()
    del batch["pointcloud"]
    with pytest.raises(KeyError, match=r"batch is missing \['pointcloud'\] \(or pass corr=False\)"):
        compute_losses(model, batch, **FAST)
    assert compute_losses(model, batch, corr=False, **FAST).corr == 0
    bad = _toy_batch()
    bad["times"] = torch.linspace(0.1, 1, 17)
    with pytest.raises(ValueError, match="'times' must start at 0"):
        compute_losses(model, bad, **FAST)


def test_checkpoint_round_trip_both_layouts(tmp_path):
    model = _tiny(seed=4).eval()
    inputs, xyz = _inputs(), torch.rand(2, 10, 3) - 0.5
    with torch.no_grad():
        ref = model.occupancy(model.encode(inputs), xyz, 0.5, **FAST)
    original, ours = tmp_path / "original.pt", tmp_path / "ours.pt"
    torch.save({"model": model.state_dict()}, original)
    torch.save({"model": model.state_dict(), "config": asdict(model.config)}, ours)
    trainer = tmp_path / "trainer.pt"  # toolkit.training.Trainer layout: the model config sits in 'meta'
    torch.save(
        {"model": model.state_dict(), "meta": {"model_config": asdict(model.config)}, "step": 3}, trainer
    )
    assert infer_config(model.state_dict()) == model.config.replace(ode=OFlowConfig().ode)
    for path in (original, ours, trainer):
        loaded = load_checkpoint(path)
        with torch.no_grad():
            assert torch.equal(loaded.occupancy(loaded.encode(inputs), xyz, 0.5, **FAST), ref)
    json.dumps(asdict(model.config))  # checkpoints embed a JSON-able config
    assert OFlowConfig.from_dict(asdict(model.config)) == model.config


def test_legacy_cbatchnorm_names():
    model = _tiny(decoder_legacy=True)
    sd = model.state_dict()
    assert sd["decoder.block0.bn_0.fc_gamma.weight"].shape == (16, 16)
    assert "decoder.block0.bn_0.conv_gamma.weight" not in sd
    assert infer_config(sd).decoder_legacy
    with pytest.raises(DataError, match=r"missing keys \['decoder.block0.bn_0.conv_gamma.weight'"):
        load_state_dict(build_model("tiny"), sd)


def test_loading_errors(tmp_path):
    sd = _tiny().state_dict()
    with pytest.raises(DataError, match=r"missing keys \['decoder.fc_out.bias'\]"):
        load_state_dict(build_model("tiny"), {k: v for k, v in sd.items() if k != "decoder.fc_out.bias"})
    with pytest.raises(DataError, match=r"unexpected keys \['decoder.extra'\]"):
        load_state_dict(build_model("tiny"), {**sd, "decoder.extra": torch.zeros(1)})
    with pytest.raises(
        DataError, match=r"key 'vector_field.fc_p.weight': expected shape \(32, 4\), found \(16, 4\)"
    ):
        load_checkpoint({"model": sd}, config=preset("tiny", vf_hidden=32))
    path = tmp_path / "m.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(
        DataError,
        match=r"m.pt: key 'decoder.fc_p.weight': expected shape \(256, 3, 1\), found "
        r"\(16, 3, 1\);.* more shape mismatches; missing keys .*preset 'completion'",
    ):
        load_checkpoint(path, config="completion")
    with pytest.raises(DataError, match="absent.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt: corrupt or unreadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(DataError, match="expected a dict with a 'model' entry"):
        load_checkpoint({"state_dict": sd})
    with pytest.raises(DataError, match="key 'vector_field.fc_out.weight' not found: not an Occupancy Flow"):
        infer_config({"net.weight": torch.zeros(2, 2)})


def test_config_and_input_errors():
    with pytest.raises(ValueError, match=r"unknown Occupancy Flow preset 'huge'; valid: \['completion', "):
        preset("huge")
    with pytest.raises(ValueError, match=r"unknown decoder 'mlp'; valid: \['cbatchnorm', 'simple'\]"):
        OFlowConfig(decoder="mlp")
    with pytest.raises(ValueError, match="decoder 'cbatchnorm' needs c_dim > 0"):
        OFlowConfig(c_dim=0)
    with pytest.raises(ValueError, match=r"unknown OFlowConfig keys \['width'\]"):
        OFlowConfig.from_dict({"width": 3})
    assert preset("completion_corr").quick().vf_hidden == 32
    model = _tiny()
    with pytest.raises(ValueError, match=r"inputs have L=5 frames; the temporal encoders expect seq_len=17"):
        model.encode(torch.zeros(2, 5, 10, 3))
    with pytest.raises(ValueError, match="this model has encoders: encode\\(\\) needs inputs"):
        model.encode(None)
    codes = model.encode(_inputs())
    with pytest.raises(ValueError, match=r"xyz must have shape \(B, N, 3\); got \(10, 3\)"):
        model.occupancy(codes, torch.zeros(10, 3), 0.5)
    with pytest.raises(ValueError, match="xyz has batch size 3 but the codes have 2"):
        model.occupancy(codes, torch.zeros(3, 10, 3), 0.5)
    with pytest.raises(ValueError, match=r"t must be a float or have shape \(B,\) = \(2,\); got \(3,\)"):
        model.occupancy(codes, torch.zeros(2, 10, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="unknown ODE method 'rk45'"):
        model.transport(codes, torch.zeros(2, 10, 3), 0.0, 1.0, method="rk45")


def test_displacement_input_is_the_trajectories_rescaled():
    x = _inputs(seq_len=5, n=7)  # translating trajectories
    pos = _flatten_trajectories(x).reshape(2, 7, 5, 3)
    disp = _flatten_trajectories(x, "displacements").reshape(2, 7, 5, 3)
    assert torch.equal(disp[:, :, 0], pos[:, :, 0])  # frame 0 as it is
    torch.testing.assert_close(disp[:, :, 1:], DISPLACEMENT_SCALE * (pos[:, :, 1:] - pos[:, :, :1]))
    assert not _flatten_trajectories(x[:, :1].expand_as(x), "displacements").reshape(2, 7, 5, 3)[:, :, 1:].any()
    # same weights, same layout; only what the temporal encoders read differs
    a, b = _tiny(), _tiny(temporal_input="displacements")
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    b.load_state_dict(a.state_dict())
    inputs = _inputs()
    ca, cb = a.encode(inputs), b.encode(inputs)
    assert torch.equal(ca.c_s, cb.c_s) and not torch.allclose(ca.c_t, cb.c_t)
    assert OFlowConfig.from_dict(b.config.to_dict()).temporal_input == "displacements"
    with pytest.raises(ValueError, match=r"unknown temporal_input 'velocity'; valid: \['positions', 'displacements'\]"):
        OFlowConfig(temporal_input="velocity")
