"""Fused nearest-neighbour kernel against its reference, closed forms, SciPy, and toolkit.metrics."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from toolkit import metrics
from toolkit.kernels import nearest_neighbor as K
from toolkit.kernels._testing import point_cloud

# (id, N, M, batch, kind, dtype, dim): sizes straddle the interpreter tiles (256 x 512) and the CUDA ones.
CASES = [
    ("600x1100", 600, 1100, None, "uniform", torch.float32, 3),
    ("batch3-77x131", 77, 131, 3, "uniform", torch.float32, 3),
    ("m1", 37, 1, None, "uniform", torch.float32, 3),
    ("n1-m600", 1, 600, None, "sphere", torch.float32, 3),
    ("float64-300x700", 300, 700, None, "uniform", torch.float64, 3),
    ("dim2-200x90", 200, 90, None, "uniform", torch.float32, 2),
    ("sphere-batch2-500x520", 500, 520, 2, "sphere", torch.float32, 3),
]


def _pair(n, m, batch, kind, dtype, dim, device="cpu"):
    x = point_cloud(n, batch=batch, kind=kind, seed=1, dim=dim, dtype=dtype, device=device)
    y = point_cloud(m, batch=batch, kind=kind, seed=2, dim=dim, dtype=dtype, device=device)
    return x, y


def _assert_same_neighbours(out: K.NNResult, ref: K.NNResult, x: torch.Tensor, y: torch.Tensor) -> None:
    """Distances close; indices equal, except where rounding may pick another point at the same distance."""
    rtol = 1e-5 if x.dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out.sqdist, ref.sqdist, rtol=rtol, atol=1e-7)
    assert out.idx.dtype == torch.int64 and out.idx.shape == ref.idx.shape
    differ = out.idx != ref.idx
    if differ.any():
        xb, yb = (x, y) if x.ndim == 3 else (x[None], y[None])

        def sqdist_to(idx: torch.Tensor) -> torch.Tensor:
            idx = idx if x.ndim == 3 else idx[None]
            picked = torch.gather(yb.double(), 1, idx[..., None].expand(*idx.shape, xb.shape[-1]))
            return (xb.double() - picked).square().sum(-1)

        torch.testing.assert_close(sqdist_to(out.idx), sqdist_to(ref.idx), rtol=1e-5, atol=1e-9)
        assert differ.float().mean() < 1e-2, f"{int(differ.sum())} indices differ"


@pytest.mark.parametrize("name,n,m,batch,kind,dtype,dim", CASES, ids=[c[0] for c in CASES])
def test_kernel_matches_reference(kernel_device, name, n, m, batch, kind, dtype, dim):
    x, y = _pair(n, m, batch, kind, dtype, dim, device=kernel_device)
    out = K.nearest_neighbor(x, y)
    ref = K.nearest_neighbor_reference(x, y)
    assert out.sqdist.dtype == dtype and out.sqdist.shape == x.shape[:-1]
    _assert_same_neighbours(out, ref, x, y)


def test_gpu_tile_sizes_in_the_interpreter(interpreter, monkeypatch):
    # The CUDA tiling (64 x 64): many programs and a ragged last tile in both directions.
    monkeypatch.setattr(K, "_INTERPRETER_TILES", K._CUDA_TILES)
    x, y = _pair(200, 333, 2, "uniform", torch.float32, 3)
    _assert_same_neighbours(K.nearest_neighbor(x, y), K.nearest_neighbor_reference(x, y), x, y)


@pytest.mark.parametrize("tiles", ["default-tiles", "other-tiles"])
def test_ties_resolve_to_the_lowest_index(kernel_device, monkeypatch, tiles):
    if tiles == "other-tiles":  # the CUDA tiling in the interpreter; a wider one on the GPU
        monkeypatch.setattr(K, "_INTERPRETER_TILES", K._CUDA_TILES)
        monkeypatch.setattr(K, "_CUDA_TILES", (32, 128, 4))
    # Integer points (exact distances), and y holds every point twice, the copy 300 indices later (in
    # another tile): each query has tied neighbours, the lowest index must win.
    x = point_cloud(400, kind="lattice", seed=3, device=kernel_device)
    base = point_cloud(300, kind="lattice", seed=4, device=kernel_device)
    y = torch.cat([base, base, base[:100]])
    out = K.nearest_neighbor(x, y)
    d2 = ((x.double()[:, None] - y.double()[None]) ** 2).sum(-1).cpu().numpy()
    np.testing.assert_array_equal(out.idx.cpu().numpy(), d2.argmin(1))  # numpy: first minimum
    np.testing.assert_array_equal(out.sqdist.cpu().numpy(), d2.min(1))
    assert (out.idx < 300).all()
    ref = K.nearest_neighbor_reference(x, y, chunk=1000)  # the reference's blocks also split the copies
    torch.testing.assert_close(ref.idx, out.idx, rtol=0, atol=0)


def test_chamfer_closed_form(kernel_device):
    # y on a unit lattice, x = y shifted by 0.1: every nearest neighbour is the point's own partner.
    g = torch.arange(5, dtype=torch.float32, device=kernel_device)
    y = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    shift = torch.tensor([0.1, 0.0, 0.0], device=kernel_device)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).to(kernel_device)
    x = (y + shift)[order]
    res = K.chamfer(x, y, impl="triton")
    assert math.isclose(float(res.chamfer_l1()), 0.1, rel_tol=1e-5)
    assert math.isclose(float(res.chamfer_l2_sq()), 0.02, rel_tol=1e-5)
    torch.testing.assert_close(y[res.x_to_y.idx], x - shift)
    torch.testing.assert_close(x[res.y_to_x.idx], y + shift)


def test_chamfer_batched_matches_reference(kernel_device):
    x, y = _pair(150, 260, 2, "sphere", torch.float32, 3, device=kernel_device)
    out, ref = K.chamfer(x, y, impl="triton"), K.chamfer(x, y, impl="reference")
    _assert_same_neighbours(out.x_to_y, ref.x_to_y, x, y)
    _assert_same_neighbours(out.y_to_x, ref.y_to_x, y, x)
    torch.testing.assert_close(out.chamfer_l1(), ref.chamfer_l1())


def test_metrics_backend(kernel_device, monkeypatch):
    # Plugged into toolkit.metrics as it will be registered there: same answers as its torch backend.
    monkeypatch.setitem(metrics._NN_BACKENDS, "triton", K.nearest_neighbor_backend)
    x, y = _pair(300, 410, None, "uniform", torch.float32, 3, device=kernel_device)
    got = metrics.nearest_neighbor(x, y, backend="triton")
    want = metrics.nearest_neighbor(x, y, backend="torch")
    torch.testing.assert_close(got.dist, want.dist, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.idx, want.idx)


def test_empty_inputs(kernel_device):
    y = point_cloud(10, device=kernel_device)
    with pytest.raises(ValueError, match="y is empty"):
        K.nearest_neighbor(y, y[:0])
    with pytest.raises(ValueError, match="y is empty"):
        K.nearest_neighbor_reference(y, y[:0])
    with pytest.raises(ValueError, match="x is empty"):
        K.chamfer(y[:0], y)
    # No queries is legal: empty answers of the right shape.
    out = K.nearest_neighbor(y.new_zeros(2, 0, 3), y.new_ones(2, 4, 3))
    assert out.sqdist.shape == (2, 0) and out.idx.shape == (2, 0)


@pytest.mark.parametrize("x_shape,y_shape,match", [
    ((5, 3), (5, 2), "equal D"),
    ((5, 3), (2, 5, 3), "equal D"),
    ((2, 5, 3), (3, 5, 3), "batch sizes differ"),
    ((5,), (5,), "equal D"),
], ids=["dim-mismatch", "rank-mismatch", "batch-mismatch", "1d"])
def test_shape_errors(x_shape, y_shape, match):
    with pytest.raises(ValueError, match=match):
        K.nearest_neighbor_reference(torch.zeros(x_shape), torch.zeros(y_shape))


def test_fallback_warns_once_with_the_reason(no_interpreter):
    x, y = _pair(50, 60, None, "uniform", torch.float32, 3)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = K.nearest_neighbor_auto(x, y)
        K.nearest_neighbor_auto(x, y)
    messages = [str(w.message) for w in rec if "nearest_neighbor" in str(w.message)]
    assert len(messages) == 1
    assert "using the PyTorch reference because the inputs are on cpu" in messages[0]
    torch.testing.assert_close(out.idx, K.nearest_neighbor_reference(x, y).idx)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K.nearest_neighbor_auto(x, y, impl="reference")  # an explicit choice does not warn


def test_impl_errors(no_interpreter):
    x = point_cloud(8)
    valid = r"\['auto', 'triton', 'reference'\]"
    with pytest.raises(ValueError, match=r'unknown implementation "cuda"; valid: ' + valid):
        K.nearest_neighbor_auto(x, x, impl="cuda")
    with pytest.raises(RuntimeError, match="need CUDA tensors"):
        K.nearest_neighbor_auto(x, x, impl="triton")
    with pytest.raises(RuntimeError, match="Use nearest_neighbor_reference"):
        K.nearest_neighbor(x, x)


def test_reference_matches_kdtree():
    from scipy.spatial import cKDTree

    x, y = _pair(400, 600, None, "uniform", torch.float64, 3)
    d, i = cKDTree(y.numpy()).query(x.numpy(), k=1)
    ref = K.nearest_neighbor_reference(x, y, chunk=50_000)
    np.testing.assert_allclose(ref.sqdist.numpy(), d ** 2, rtol=1e-12)
    np.testing.assert_array_equal(ref.idx.numpy(), i)


@pytest.mark.parametrize("batch", [None, 2], ids=["single", "batch2"])
def test_cuda_large(cuda, batch):
    x, y = _pair(50_000, 70_001, batch, "sphere", torch.float32, 3, device=cuda)
    out = K.nearest_neighbor_auto(x, y, impl="triton")
    _assert_same_neighbours(out, K.nearest_neighbor_reference(x, y), x, y)


def test_cuda_100k_against_kdtree(cuda):
    from scipy.spatial import cKDTree

    x, y = _pair(100_000, 100_000, None, "uniform", torch.float32, 3, device=cuda)
    res = K.chamfer(x, y, impl="triton")
    d, _ = cKDTree(y.cpu().double().numpy()).query(x.cpu().double().numpy(), k=1, workers=-1)
    np.testing.assert_allclose(res.x_to_y.sqdist.cpu().double().numpy(), d ** 2, rtol=1e-4, atol=1e-9)


def test_compiles_for_h100(aot_compile):
    aot_compile(f"""
        from toolkit.kernels._nn_triton import nn_kernel
        for dt in ("fp32", "fp64"):
            sig = {{"x_ptr": "*" + dt, "yt_ptr": "*" + dt, "dist_ptr": "*" + dt, "idx_ptr": "*i64",
                   "N": "i32", "M": "i32", "stride_xb": "i32", "stride_xn": "i32", "stride_xd": "i32",
                   "stride_yb": "i32", "stride_yd": "i32", "D": "constexpr", "BLOCK_N": "constexpr",
                   "BLOCK_M": "constexpr"}}
            compile(nn_kernel, sig, {{"D": 3, "BLOCK_N": {K._CUDA_TILES[0]}, "BLOCK_M": {K._CUDA_TILES[1]}}},
                    {K._CUDA_TILES[2]})
    """)
