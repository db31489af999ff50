"""Rendering fast paths of toolkit.sof.render: the CPU chunk size and compiled marching steps.

Both must reproduce ``SOFModel.render`` (the plain path): the chunk size exactly up to float rounding of
the matrix products, the compiled steps to float rounding of the fused kernels.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from toolkit.geometry.cameras import default_intrinsics, orbit_cameras
from toolkit.sof.model import SOFModel, march_step, model_config
from toolkit.sof.render import CPU_RENDER_CHUNK, _render_compiled, render_label_maps

SIZE = 20  # 400 rays: with chunk 128 the last chunk is padded


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SOFModel(model_config("small", num_instances=2, latent_dim=16, phi_width=32, marcher_width=32,
                                 steps=4)).eval()


@pytest.fixture(scope="module")
def cams():
    return orbit_cameras(4.5, np.array([0.0, 0.4]), np.array([0.0, 0.15]))


def _plain(model, code, cam, K):
    with torch.no_grad():
        return model.render(code[None], torch.as_tensor(cam, dtype=torch.float32)[None],
                            torch.as_tensor(K, dtype=torch.float32)[None], SIZE, SIZE)


def test_the_cpu_chunk_does_not_change_the_render(model, cams):
    K = default_intrinsics(SIZE)
    codes = model.latent_codes.weight.detach()
    assert CPU_RENDER_CHUNK < SIZE * SIZE * 64  # the default really chunks a 128 x 128 render
    labels, depth = render_label_maps(model, codes, cams, K, SIZE, return_depth=True)
    for chunk in (16384, 37):
        other, other_depth = render_label_maps(model, codes, cams, K, SIZE, chunk=chunk, return_depth=True)
        np.testing.assert_array_equal(other, labels)
        np.testing.assert_allclose(other_depth, depth, rtol=1e-6, atol=1e-6)  # matmul blocking rounding
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        render_label_maps(model, codes, cams, K, SIZE, chunk=0)


def test_a_march_step_hook_pads_the_last_chunk_and_keeps_the_render(model, cams):
    seen = []

    def counting_step(*args):
        seen.append(args[2].shape[1])
        return march_step(*args)

    K = torch.as_tensor(default_intrinsics(SIZE), dtype=torch.float32)
    cam = torch.as_tensor(cams[0], dtype=torch.float32)
    weights = model.phi_weights(model.latent_codes.weight.detach()[:1])
    ref = model.render(None, cam, K, SIZE, SIZE, weights=weights)
    got = model.render(None, cam, K, SIZE, SIZE, weights=weights, chunk=37, step=counting_step)
    assert (SIZE * SIZE) % 37 and set(seen) == {37}  # every call sees one shape, the tail included
    assert len(seen) == model.config.steps * -(-SIZE * SIZE // 37)
    torch.testing.assert_close(got.logits, ref.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.depth, ref.depth, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
                    reason="torch.compile on a CPU needs a C++ compiler")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_marching_equals_the_plain_render(model, cams):
    K = default_intrinsics(SIZE)
    codes = model.latent_codes.weight.detach()
    for i in range(2):  # two codes: the second reuses the compiled steps (weights are arguments)
        cam = torch.as_tensor(cams[i], dtype=torch.float32)[None]
        Kt = torch.as_tensor(K, dtype=torch.float32)[None]
        got = _render_compiled(model, codes[i:i + 1], cam, Kt, SIZE, SIZE, 128)
        ref = _plain(model, codes[i], cams[i], K)
        assert got.logits.shape == ref.logits.shape == (1, SIZE, SIZE, 20)
        torch.testing.assert_close(got.logits, ref.logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.depth, ref.depth, rtol=1e-5, atol=1e-5)
    plain, plain_depth = render_label_maps(model, codes, cams, K, SIZE, return_depth=True)
    fast, fast_depth = render_label_maps(model, codes, cams, K, SIZE, chunk=128, compile=True, return_depth=True)
    assert len(np.unique(plain)) > 1  # not a blank render
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_allclose(fast_depth, plain_depth, rtol=0, atol=1e-5)
