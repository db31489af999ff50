"""Unit tests of SOFModel: geometry of the start points, marching, chunking, caching, presets, loading."""
from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from toolkit.geometry.cameras import (
    camera_depth,
    default_intrinsics,
    generate_rays,
    lift,
    orbit_cameras,
    pixel_grid,
)
from toolkit.io import DataError
from toolkit.sof.model import (
    MODEL_PRESETS,
    SOFModel,
    SOFModelConfig,
    load_original_state_dict,
    model_config,
    native_to_original_key,
    original_to_native_key,
    to_original_state_dict,
)

PROJECTIONS = ["ortho", "perspective"]
TINY = {"num_instances": 3, "latent_dim": 8, "phi_width": 16, "marcher_width": 16, "num_classes": 5}


@pytest.fixture(autouse=True)
def _frugal():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(projection: str = "ortho", seed: int = 0, **overrides) -> SOFModel:
    torch.manual_seed(seed)
    return SOFModel(SOFModelConfig(**{**TINY, "projection": projection, **overrides})).eval()


def _cameras(projection: str, size: int = 8, radius: float = 3.0):
    cam2world = torch.from_numpy(orbit_cameras(radius, [0.3, -0.5], [0.1, -0.2])).float()
    K = default_intrinsics(size, "ortho")
    if projection == "perspective":
        K[0, 0] = K[1, 1] = K[0, 0] / 2  # a wide lens
    K = torch.from_numpy(np.stack([K, K])).float()
    return cam2world, K


# ---------------------------------------------------------------------------------------------------
# Config and presets
# ---------------------------------------------------------------------------------------------------

def test_presets_and_config_validation():
    assert asdict(model_config("paper")) | {"num_instances": 1} == asdict(SOFModelConfig())
    small = model_config("small", num_instances=7)
    assert (small.latent_dim, small.phi_width, small.num_instances) == (64, 128, 7)
    with pytest.raises(ValueError, match=r"unknown SOF model preset 'tiny'; valid: \['paper', 'small'\]"):
        model_config("tiny")
    with pytest.raises(ValueError, match=r"unknown projection 'fisheye'; valid: \['ortho', 'perspective'\]"):
        SOFModelConfig(projection="fisheye")
    with pytest.raises(ValueError, match="phi_width must be a positive int; got 0"):
        SOFModelConfig(phi_width=0)
    assert set(MODEL_PRESETS) == {"paper", "small"}


def test_paper_parameter_counts_match_the_original():
    model = SOFModel.from_preset("paper", num_instances=221)
    def count(module):
        return sum(p.numel() for p in module.parameters())

    # sof.md 1.3-1.6: hyper_phi 34,478,080 (395,776 + 2 x 17,041,152), marcher 199,940, classifier 204,052.
    assert [count(h) for h in model.hypernets] == [395_776, 17_041_152, 17_041_152]
    assert (count(model.marcher), count(model.classifier)) == (199_940, 204_052)
    assert count(model) - model.latent_codes.weight.numel() == 34_882_072
    # Init: codes N(0, 0.01^2); last hypernet layer Kaiming(fan_in = L) scaled by 0.1.
    assert model.latent_codes.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert model.hypernets[1].out.weight.std().item() == pytest.approx(0.1 * math.sqrt(2 / 256), rel=0.01)


def test_config_round_trips_through_asdict():
    model = _tiny()
    clone = SOFModel(SOFModelConfig(**model.config_dict()))
    clone.load_state_dict(model.state_dict())
    assert clone.config == model.config


# ---------------------------------------------------------------------------------------------------
# Geometry of the start points and the march
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("projection", PROJECTIONS)
def test_start_points_enter_the_sphere(projection):
    model = _tiny(projection)
    cam2world, K = _cameras(projection, size=16)
    uv = pixel_grid(16, 16).expand(2, -1, -1)
    rays = generate_rays(cam2world, K, uv, projection)
    x0 = model.start_points(cam2world, K, uv, rays.directions)
    radius = model.config.sphere_radius
    # On the ray's line.
    offset = x0 - rays.origins
    assert_close(torch.linalg.cross(offset, rays.directions), torch.zeros_like(x0), rtol=0, atol=1e-5)
    along = (x0 * rays.directions).sum(-1)  # signed distance past the closest point to the origin
    closest_dist = torch.linalg.cross(rays.origins, rays.directions).norm(dim=-1)
    hit = closest_dist < radius
    assert 0 < hit.sum() < hit.numel()  # both branches exercised
    # Hits start on the sphere, before the closest point; misses start at the closest point.
    assert_close(x0.norm(dim=-1)[hit], torch.full_like(along[hit], radius), rtol=0, atol=1e-4)
    assert (along[hit] < 0).all()
    assert_close(along[~hit], torch.zeros_like(along[~hit]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_march_follows_the_update_rule_and_field(projection):
    model = _tiny(projection)
    cam2world, K = _cameras(projection)
    z = model.embedding([0, 2])
    uv = pixel_grid(8, 8)
    with torch.no_grad():
        trace = model.march(z, cam2world, K, uv)
        out = model(z, cam2world, K, uv)
        field = model.field(z, trace.points[-1])
        phi = model.phi(model.phi_weights(z), trace.points[-1])
    S = model.config.steps
    assert trace.points.shape == (S + 1, 2, 64, 3) and trace.steps.shape == (S, 2, 64)
    assert_close(trace.points[1:], trace.points[:-1] + trace.directions * trace.steps[..., None], rtol=0, atol=0)
    assert (trace.steps.abs() > 0).any()
    assert_close(out.logits, trace.logits, rtol=0, atol=0)
    assert_close(out.depth, camera_depth(trace.points[-1], cam2world), rtol=0, atol=0)
    # field(z, xyz) equals classifier(phi(xyz)) at the final marched points.
    assert_close(field, out.logits, rtol=1e-6, atol=1e-6)
    assert_close(model.classify(phi), out.logits, rtol=1e-6, atol=1e-6)
    assert (phi >= 0).all()


def test_eval_is_deterministic_and_train_jitters_along_the_ray():
    model = _tiny(start_jitter=0.01)
    cam2world, K = _cameras("ortho", size=32)
    z = model.embedding([0, 1])
    uv = pixel_grid(32, 32)
    with torch.no_grad():
        a, b = model.march(z, cam2world, K, uv), model.march(z, cam2world, K, uv)
        assert_close(a.logits, b.logits, rtol=0, atol=0)
        assert_close(a.points, b.points, rtol=0, atol=0)
        model.train()
        torch.manual_seed(1)
        jittered = model.march(z, cam2world, K, uv)
        model.eval()
    shift = jittered.points[0] - a.points[0]
    along = (shift * a.directions).sum(-1)
    assert_close(shift, along[..., None] * a.directions, rtol=0, atol=1e-6)  # only along the ray
    assert along.std().item() == pytest.approx(0.01, rel=0.1)
    assert abs(along.mean().item()) < 1e-3


def test_zero_jitter_disables_it_in_training():
    model = _tiny(start_jitter=0.0)
    cam2world, K = _cameras("ortho")
    z = model.embedding([0, 1])
    with torch.no_grad():
        ref = model(z, cam2world, K, pixel_grid(8, 8))
        model.train()
        out = model(z, cam2world, K, pixel_grid(8, 8))
    assert_close(out.logits, ref.logits, rtol=0, atol=0)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_chunked_render_equals_unchunked_forward(projection):
    model = _tiny(projection)
    cam2world, K = _cameras(projection, size=6)
    z = model.embedding([1, 2])
    H, W = 5, 6
    for center in (0.0, 0.5):
        result = model.render(z, cam2world, K, H, W, chunk=7, pixel_center=center)
        with torch.no_grad():
            ref = model(z, cam2world, K, pixel_grid(H, W, center))
        assert result.logits.shape == (2, H, W, 5) and result.depth.shape == (2, H, W)
        # Chunking changes matmul blocking, hence rounding, which the march amplifies a little.
        assert_close(result.logits.reshape(2, H * W, -1), ref.logits, rtol=1e-5, atol=1e-5)
        assert_close(result.depth.reshape(2, H * W), ref.depth, rtol=1e-5, atol=1e-5)
    # A single (4, 4) pose and (3, 3) K broadcast over the codes.
    single = model.render(z, cam2world[0], K[0], H, W)
    assert_close(single.logits[0], model.render(z[:1], cam2world[:1], K[:1], H, W).logits[0])


def test_field_chunking_broadcasting_and_slices():
    model = _tiny("perspective")
    z = model.embedding([0, 1])
    xyz = torch.randn(2, 37, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model.field(z, xyz, chunk=1000)
        assert full.shape == (2, 37, 5)
        assert_close(model.field(z, xyz, chunk=5), full, rtol=1e-6, atol=1e-6)
        assert_close(model.field(z[1], xyz[1]), full[1], rtol=1e-6, atol=1e-6)  # unbatched code
        assert_close(model.field(z, xyz[0])[1], model.field(z[1], xyz[0]), rtol=1e-6, atol=1e-6)  # shared points
        cam2world, K = _cameras("perspective")
        uv = pixel_grid(8, 8)
        sliced = model.slice_logits(z, cam2world, K, uv, 2.5)
        plane = lift(uv.expand(2, -1, -1), 2.5, cam2world, K, "perspective")
        assert_close(sliced, model.field(z, plane), rtol=1e-6, atol=1e-6)
        assert_close(camera_depth(plane, cam2world), torch.full((2, 64), 2.5), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"xyz must be \(2, N, 3\) or \(N, 3\); got \(3, 4, 3\)"):
        model.field(z, torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match=r"latent codes must be \(B, 8\); got \(2, 9\)"):
        model.phi_weights(torch.zeros(2, 9))
    with pytest.raises(ValueError, match="cam2world has batch size 3; the codes have 2"):
        model(z, torch.eye(4).expand(3, 4, 4), K, uv)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = _tiny("perspective")
    cam2world, K = _cameras("perspective")  # CPU inputs are moved to the model's device
    z = model.embedding([0, 1])
    ref = model.render(z, cam2world, K, 8, 8)
    gpu = model.to("cuda")
    out = gpu.render(gpu.embedding([0, 1]), cam2world, K, 8, 8)
    assert out.logits.device.type == "cuda"
    assert_close(out.logits.cpu(), ref.logits, rtol=1e-4, atol=1e-4)
    assert_close(out.depth.cpu(), ref.depth, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# Training behaviour and the phi-weight cache
# ---------------------------------------------------------------------------------------------------

def test_training_gradients_reach_every_parameter():
    model = _tiny().train()
    cam2world, K = _cameras("ortho")
    z = model.embedding([0, 2])
    out = model(z, cam2world, K, pixel_grid(8, 8))
    (out.logits.square().mean() + out.depth.square().mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.latent_codes.weight.grad[1].abs().sum() == 0  # only used rows


def test_phi_cache_matches_fresh_weights_and_is_invalidated():
    model = _tiny()
    model.phi_cache_size = 2
    z = model.embedding([0, 1, 2]).detach()
    fresh = model._generate_phi(z)
    with torch.no_grad():
        cached = model.phi_weights(z[:2])
        assert len(model._phi_cache) == 2
        again = model.phi_weights(z[[1, 0]])
        assert len(model._phi_cache) == 2
        model.phi_weights(z[2:])
        assert len(model._phi_cache) == 2  # LRU bound
    for got, idx in ((cached, [0, 1]), (again, [1, 0])):
        for layer in range(3):
            assert_close(got.weights[layer], fresh.weights[layer][idx], rtol=0, atol=0)
            assert_close(got.biases[layer], fresh.biases[layer][idx], rtol=0, atol=0)
    with torch.no_grad():
        model.hypernets[2].out.bias.add_(1.0)  # a parameter update must drop stale entries
        updated = model.phi_weights(z[:1])
    assert_close(updated.biases[2], model._generate_phi(z[:1]).biases[2], rtol=0, atol=0)


def test_phi_cache_never_blocks_gradients():
    model = _tiny()
    cam2world, K = _cameras("ortho")
    uv = pixel_grid(8, 8)
    with torch.no_grad():
        model(model.embedding([0, 1]), cam2world, K, uv)  # fills the cache
    assert len(model._phi_cache) == 2
    model.train()
    model.config = SOFModelConfig(**{**model.config_dict(), "start_jitter": 0.0})
    weights = model.phi_weights(model.embedding([0, 1]))
    assert weights.weights[1].grad_fn is not None
    model(None, cam2world, K, uv, weights=weights).logits.sum().backward()
    grad_cached = model.hypernets[1].out.weight.grad.clone()
    model.zero_grad()
    model.clear_phi_cache()
    model(model.embedding([0, 1]), cam2world, K, uv).logits.sum().backward()
    assert_close(grad_cached, model.hypernets[1].out.weight.grad, rtol=0, atol=0)
    # Eval mode with a code that needs gradients (inverse rendering) bypasses the cache too.
    model.eval()
    code = model.embedding([0]).detach().requires_grad_(True)
    model(code, cam2world[:1], K[:1], uv).logits.sum().backward()
    assert code.grad is not None and code.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# Original checkpoints
# ---------------------------------------------------------------------------------------------------

def test_key_mapping_shim():
    assert original_to_native_key("hyper_phi.layers.2.hyper_linear.hypo_params.net.1.net.1.bias") == \
        "hypernets.2.hidden.1.norm.bias"
    assert original_to_native_key("ray_marcher.lstm.bias.3.weight") == "marcher.directions.3.weight"
    assert original_to_native_key("pixel_generator.net.3.weight") == "classifier.out.weight"
    assert original_to_native_key("rendering_net.0.weight") is None
    model = _tiny()
    for key in model.state_dict():
        assert original_to_native_key(native_to_original_key(key)) == key


def test_original_layout_round_trip(tmp_path):
    model = _tiny("perspective", seed=3)
    sd = to_original_state_dict(model)
    path = tmp_path / "epoch_0001_iter_000010.pth"
    torch.save({"model": sd, "optimizer": {}}, path)
    cam2world, K = _cameras("perspective")
    z = model.embedding([0, 2])
    with torch.no_grad():
        ref = model(z, cam2world, K, pixel_grid(8, 8))
    for source in (path, sd, {"model": sd}):
        loaded = SOFModel.from_original(source, projection="perspective")
        assert loaded.config == model.config
        assert not loaded.training
        with torch.no_grad():
            out = loaded(loaded.embedding([0, 2]), cam2world, K, pixel_grid(8, 8))
        assert_close(out.logits, ref.logits, rtol=0, atol=0)
    half = {k: v.half() for k, v in sd.items()}  # any float dtype is cast
    assert SOFModel.from_original(half, projection="perspective").latent_codes.weight.dtype == torch.float32


def test_original_loading_errors(tmp_path):
    sd = to_original_state_dict(_tiny())
    key = "hyper_phi.layers.1.hyper_linear.hypo_params.net.2.weight"
    bad = dict(sd, **{key: torch.zeros(10, 8)})
    with pytest.raises(ValueError, match=rf"{key}: expected shape \(272, 8\), found \(10, 8\)"):
        SOFModel.from_original(bad)
    # Label count: a 5-class checkpoint into a 4-class model, or a declared count that differs.
    with pytest.raises(ValueError, match=r"label count mismatch: the checkpoint predicts 5 classes .* expects 4"):
        load_original_state_dict(_tiny(num_classes=4), sd)
    with pytest.raises(ValueError, match="num_classes=19 conflicts with the model's 5"):
        SOFModel.from_original(sd, num_classes=19)
    missing = {k: v for k, v in sd.items() if k != "ray_marcher.lstm.bias.2.bias"}
    with pytest.raises(ValueError, match=r"missing keys .*\['ray_marcher.lstm.bias.2.bias'\]"):
        SOFModel.from_original(missing)
    with pytest.raises(ValueError, match=r"unexpected keys .*\['decoder.weight'\]"):
        SOFModel.from_original(dict(sd, **{"decoder.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match=r"missing key 'pixel_generator.net.3.weight'"):
        SOFModel.from_original({k: v for k, v in sd.items() if not k.startswith("pixel_generator.net.3")})
    # Instance count: rejected with a hint, or kept fresh (the original's overwrite_embeddings).
    other = _tiny(num_instances=5)
    with pytest.raises(ValueError, match=r"latent_codes.weight: expected shape \(5, 8\), found \(3, 8\).*load_latents"):
        load_original_state_dict(other, sd)
    codes = other.latent_codes.weight.detach().clone()
    load_original_state_dict(other, sd, load_latents=False)
    assert_close(other.latent_codes.weight, codes, rtol=0, atol=0)
    assert_close(other.classifier.out.weight, sd["pixel_generator.net.3.weight"], rtol=0, atol=0)
    with pytest.warns(UserWarning, match="ignoring legacy key 'cam_pose.weight'"):
        SOFModel.from_original(dict(sd, **{"cam_pose.weight": torch.zeros(3, 3)}))
    with pytest.raises(DataError, match="nope.pth: checkpoint not found"):
        SOFModel.from_original(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pth: corrupt or unreadable checkpoint"):
        SOFModel.from_original(tmp_path / "junk.pth")
