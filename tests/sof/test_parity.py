"""Numerical parity of SOFModel and the SOF losses with the ORIGINAL implementation's recorded outputs.

Fixtures: ../shared/fixtures/sof (README there): `sof_model.pt` (released-checkpoint widths, float8 weights)
and `sof_model_small.pt` (L 32, F 64), with their `sof_io*.npz` (forward, march trace, slices, phi weights)
and `sof_loss*.npz` (one train.py loss evaluation with gradients).

Tolerances (float32, one thread; the README's suggestions): generated phi weights, slice points / phi /
logits 1e-5; per-step marcher output fed with the recorded points 1e-6; start points 5e-5 (the original's
+1e-6 terms move them by up to 3e-4, so dropping them fails); full ray-marched points, logits and depth
2e-4 (x_0 differs from the original by float rounding, which the marcher amplifies); loss terms rtol 1e-5;
gradients rtol 1e-4 plus atol 1e-5 * max|reference gradient| (the original itself differs by 4e-7
relative between one and two threads).
"""
from __future__ import annotations

import copy
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from toolkit.geometry.cameras import lift
from toolkit.sof.losses import LossWeights, sof_losses
from toolkit.sof.model import SOFModel, to_original_state_dict

pytestmark = pytest.mark.fixtures

MODELS = {"full": "", "small": "_small"}
PROJECTIONS = {"ortho": "ortho", "persp": "perspective"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(MODELS))
def case(request, sof_fixtures):
    suffix = MODELS[request.param]
    path = sof_fixtures / f"sof_model{suffix}.pt"
    io = np.load(sof_fixtures / f"sof_io{suffix}.npz")
    loss = np.load(sof_fixtures / f"sof_loss{suffix}.npz")
    ortho = SOFModel.from_original(path, projection="ortho", start_jitter=0.0)
    persp = copy.deepcopy(ortho)  # one file, both camera models (no parameter depends on the projection)
    persp.config = replace(ortho.config, projection="perspective")
    models = {"ortho": ortho, "persp": persp}
    return SimpleNamespace(name=request.param, path=path, io={k: io[k] for k in io.files},
                           loss={k: loss[k] for k in loss.files}, models=models)


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array))


def _inputs(case, p: str):
    io = case.io
    model = case.models[p]
    z = model.embedding(_t(io["instance_idx"]))
    return model, z, _t(io[f"{p}_cam2world"]), _t(io[f"{p}_intrinsics"]), _t(io["uv"])


def test_checkpoint_keys_and_values_round_trip(case):
    stored = torch.load(case.path, map_location="cpu", weights_only=True)["model"]
    ours = to_original_state_dict(case.models["ortho"])
    assert list(ours) == list(stored)  # same names, same order
    for key, value in stored.items():
        assert_close(ours[key], value.float(), rtol=0, atol=0, msg=key)


def test_inferred_sizes(case):
    config = case.models["ortho"].config
    expected = {"full": (4, 256, 256, 256, 20), "small": (4, 32, 64, 256, 20)}[case.name]
    assert (config.num_instances, config.latent_dim, config.phi_width, config.marcher_width,
            config.num_classes) == expected
    assert config.steps == 10 and config.projection == "ortho"


def test_codes_and_generated_phi_weights(case):
    model, z, *_ = _inputs(case, "ortho")
    assert_close(z, _t(case.io["z"]), rtol=0, atol=0)
    with torch.no_grad():
        weights = model.phi_weights(z).select(0)  # instance 1
    for layer in range(3):
        assert_close(weights.weights[layer][0], _t(case.io[f"phi_inst1_w{layer}"]), rtol=0, atol=1e-5)
        assert_close(weights.biases[layer][0], _t(case.io[f"phi_inst1_b{layer}"]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("p", list(PROJECTIONS))
def test_slice_path(case, p):
    model, z, cam2world, K, uv = _inputs(case, p)
    depth = float(case.io[f"{p}_slice_depth"])
    with torch.no_grad():
        points = lift(uv.float(), depth, cam2world, K, PROJECTIONS[p])
        phi = model.phi(model.phi_weights(z), points)
        logits = model.slice_logits(z, cam2world, K, uv, depth)
    assert_close(points, _t(case.io[f"{p}_slice_points"]), rtol=0, atol=1e-5)
    assert_close(phi, _t(case.io[f"{p}_slice_phi"]), rtol=0, atol=1e-5)
    assert_close(logits, _t(case.io[f"{p}_slice_logits"]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("p", list(PROJECTIONS))
def test_march_per_step(case, p):
    model, z, cam2world, K, uv = _inputs(case, p)
    points, steps = _t(case.io[f"{p}_march_points"]), _t(case.io[f"{p}_march_step"])[..., 0]
    with torch.no_grad():
        weights = model.phi_weights(z)
        trace = model.march(None, cam2world, K, uv, weights=weights)
        assert_close(trace.directions, _t(case.io[f"{p}_ray_dirs"]), rtol=0, atol=1e-6)
        for k in range(10):
            s = model.step_lengths(weights, points[k], trace.directions)
            assert_close(s, steps[k], rtol=0, atol=1e-6, msg=lambda m, k=k: f"step {k}: {m}")


@pytest.mark.parametrize("p", list(PROJECTIONS))
def test_full_ray_march(case, p):
    model, z, cam2world, K, uv = _inputs(case, p)
    io = case.io
    with torch.no_grad():
        trace = model.march(z, cam2world, K, uv)
    assert_close(trace.points[0], _t(io[f"{p}_march_points"][0]), rtol=0, atol=5e-5)
    assert_close(trace.points, _t(io[f"{p}_march_points"]), rtol=0, atol=2e-4)
    assert_close(trace.steps, _t(io[f"{p}_march_step"])[..., 0], rtol=0, atol=2e-4)
    assert_close(trace.logits, _t(io[f"{p}_logits"]), rtol=0, atol=2e-4)
    assert_close(trace.depth, _t(io[f"{p}_depth"])[..., 0], rtol=0, atol=2e-4)


@pytest.mark.parametrize("p", list(PROJECTIONS))
def test_dpt_scale_minus_one(case, p):
    # The original's train.py default dpt_scale = -1 puts the provisional start behind the camera.
    model, z, cam2world, K, uv = _inputs(case, p)
    with torch.no_grad():
        out = model(z, cam2world, K, uv, start_depth=-0.05)
    assert_close(out.logits, _t(case.io[f"{p}_logits_dptscale_neg1"]), rtol=0, atol=2e-4)
    assert_close(out.depth, _t(case.io[f"{p}_depth_dptscale_neg1"])[..., 0], rtol=0, atol=2e-4)


def test_losses_and_gradients(case):
    ref = case.loss
    model = case.models["ortho"]
    model.train()  # start_jitter is 0, as in the recorded (de-randomised) original
    model.zero_grad(set_to_none=True)
    try:
        z = model.embedding(_t(ref["instance_idx"]))
        out = model(z, _t(ref["cam2world"]), _t(ref["intrinsics"]), _t(ref["uv"]))
        weights = LossWeights()  # the defaults are the original's (stored as float32)
        stored = (ref["l1_weight"], ref["reg_weight"], ref["kl_weight"])
        assert stored == tuple(np.float32(w) for w in (weights.segmentation, weights.negative_depth, weights.latent))
        losses = sof_losses(out.logits, out.depth, _t(ref["target"]), z, weights=weights)
        pairs = [(losses.segmentation, "ce_loss"), (losses.negative_depth, "depth_reg_loss"),
                 (losses.latent, "latent_loss"), (200 * losses.segmentation, "weighted_ce_loss"),
                 (1e-3 * losses.negative_depth, "weighted_depth_reg_loss"),
                 (losses.latent, "weighted_latent_loss"), (losses.total, "total_loss")]
        for value, key in pairs:
            assert_close(value.detach(), _t(ref[key]), rtol=1e-5, atol=0, msg=lambda m, key=key: f"{key}: {m}")
        losses.total.backward()
        grads = [(model.latent_codes.weight.grad, "grad_latent_codes"),
                 (model.classifier.out.weight.grad, "grad_pixel_generator_last_weight"),
                 (model.classifier.out.bias.grad, "grad_pixel_generator_last_bias")]
        for grad, key in grads:
            expected = _t(ref[key])
            assert_close(grad, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item(),
                         msg=lambda m, key=key: f"{key}: {m}")
        assert torch.count_nonzero(model.latent_codes.weight.grad.abs().sum(1)) == 2  # rows 1 and 3 only
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
