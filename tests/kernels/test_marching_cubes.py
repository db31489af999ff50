"""Marching cubes (Triton kernels and vectorised reference) against PyMCubes, case by case and on fields."""
from __future__ import annotations

import math
import warnings

import mcubes
import numpy as np
import pytest
import torch

from toolkit.geometry import meshing
from toolkit.kernels import _mc_tables
from toolkit.kernels import marching_cubes as MC
from toolkit.kernels._testing import all_cases_lattice, cell_cases, random_lattice, sphere_lattice


def _field(name: str, device="cpu") -> tuple[torch.Tensor, float]:
    """(values, isovalue) of a named test field."""
    if name == "all-256-cases":
        return all_cases_lattice(device=device), 0.0
    if name == "random-7x9x11-iso0.3":
        return random_lattice((7, 9, 11), seed=1, device=device), 0.3
    if name == "random-12-float32":
        return random_lattice((12, 12, 12), seed=2, dtype=torch.float32, device=device), -0.25
    if name == "values-equal-isovalue":  # many lattice values are exactly the isovalue: they are "below"
        return random_lattice((9, 8, 10), seed=3, integer=True, device=device), 0.0
    if name == "isovalue-not-float32":
        # PyMCubes rounds the isovalue 0.1 to float32 (0.10000000149...): values 0.1 + 1e-10 are below it.
        choice = torch.randint(0, 3, (6, 7, 5), generator=torch.Generator().manual_seed(4))
        levels = torch.tensor([-1.0, 1.0, 0.1 + 1e-10], dtype=torch.float64)
        return levels[choice].to(device), 0.1
    if name == "sphere-32":
        return sphere_lattice(32, device=device), 0.0
    if name == "noisy-sphere-24-float64":
        return sphere_lattice(24, noise=0.02, dtype=torch.float64, device=device), 0.01
    if name == "constant":
        return torch.ones(5, 6, 7, device=device), 0.0
    if name == "flat-1x5x5":
        return random_lattice((1, 5, 5), device=device), 0.0
    raise KeyError(name)


FIELDS = ["all-256-cases", "random-7x9x11-iso0.3", "random-12-float32", "values-equal-isovalue",
          "isovalue-not-float32", "sphere-32", "noisy-sphere-24-float64", "constant", "flat-1x5x5"]


def _assert_equals_pymcubes(out: MC.MarchingCubesResult, values: torch.Tensor, isovalue: float) -> None:
    verts, faces = mcubes.marching_cubes(values.cpu().double().numpy(), isovalue)
    assert out.vertices.dtype == values.dtype and out.faces.dtype == torch.int64
    assert out.vertices.shape == verts.shape and out.faces.shape == faces.shape
    # Same vertices in the same order (float32 lattices interpolate in float32: ~1e-7 relative).
    atol = 1e-12 if values.dtype == torch.float64 else 1e-5 * max(values.shape)
    np.testing.assert_allclose(out.vertices.cpu().double().numpy(), verts, rtol=0, atol=atol)
    # Same triangles, same order, same winding.
    np.testing.assert_array_equal(out.faces.cpu().numpy(), faces.astype(np.int64))


def test_tables_are_pymcubes_on_all_256_cases():
    edges, triangles = _mc_tables.derive_from_pymcubes()
    assert edges == _mc_tables.EDGES
    assert triangles == _mc_tables.TRIANGLES
    assert sum(len(t) // 3 for t in triangles) == 820  # the classic table's triangle count


def test_reference_on_every_single_cube_case():
    for case in range(256):
        values = torch.from_numpy(_mc_tables.single_cube(case, inside=0.75, outside=-1.5))
        _assert_equals_pymcubes(MC.marching_cubes_reference(values, 0.0), values, 0.0)


def test_all_cases_lattice_holds_each_case_once():
    assert sorted(cell_cases(all_cases_lattice()).tolist()) == list(range(256))


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("impl", ["triton", "reference"])
def test_equals_pymcubes(kernel_device, impl, field):
    values, iso = _field(field, device=kernel_device)
    op = MC.marching_cubes if impl == "triton" else MC.marching_cubes_reference
    _assert_equals_pymcubes(op(values, iso), values, iso)


def test_small_blocks_in_the_interpreter(interpreter, monkeypatch):
    # Many programs with ragged last blocks in both kernels.
    monkeypatch.setattr(MC, "_INTERPRETER_BLOCK", (128, 32))
    values, iso = random_lattice((9, 7, 8), seed=5), 0.2
    _assert_equals_pymcubes(MC.marching_cubes(values, iso), values, iso)


@pytest.mark.parametrize("close", [True, False], ids=["closed", "open"])
def test_mesh_equals_meshing_marching_cubes(kernel_device, close):
    # A sphere cut by the box: the closing pad matters.
    values = sphere_lattice(20, radius=0.6, center=(0.1, 0.0, 0.0), bounds=0.5, device=kernel_device)
    bounds = ((-0.5, 0.5), (-0.5, 0.6), (-0.5, 0.5))
    got = meshing.marching_cubes(values, 0.0, bounds=bounds, close=close, impl="triton")
    want = meshing.marching_cubes(values.cpu().numpy(), 0.0, bounds=bounds, close=close, impl="pymcubes")
    assert got.vertices.dtype == np.float32 and got.faces.dtype == np.int64
    np.testing.assert_array_equal(got.faces, want.faces)
    np.testing.assert_allclose(got.vertices, want.vertices, rtol=0, atol=1e-6)


def test_sphere_closed_form(kernel_device):
    # Vertices lie on the sphere to a fraction of a cell; area within 1.5% of 4 pi r^2 at 48^3 cells.
    r, res = 0.35, 48
    values = sphere_lattice(res, radius=r, center=(0, 0, 0), device=kernel_device)
    mesh = meshing.marching_cubes(values, 0.0, bounds=0.55, impl="triton")
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - r).max() < 0.1 * (1.1 / res)
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    assert area == pytest.approx(4 * math.pi * r ** 2, rel=0.015)
    # Closed and consistently wound: every edge is used once in each direction.
    directed = np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]])
    assert len({tuple(e) for e in directed.tolist()}) == len(directed)
    assert {tuple(e) for e in directed.tolist()} == {tuple(e) for e in directed[:, ::-1].tolist()}


def test_errors():
    with pytest.raises(ValueError, match=r"values must be an \(X, Y, Z\) lattice; got shape \(4, 4\)"):
        MC.marching_cubes_reference(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="at least 2 points per axis; got shape"):
        meshing.marching_cubes(torch.zeros(1, 4, 4), impl="pymcubes")
    with pytest.raises(ValueError, match="unknown implementation"):
        MC.marching_cubes_auto(torch.zeros(3, 3, 3), impl="pymcubes")
    with pytest.raises(ValueError, match=r"unknown marching-cubes implementation \"reference\"; valid: \['auto'"):
        meshing.marching_cubes(torch.zeros(3, 3, 3), impl="reference")


def test_meshing_auto_picks_pymcubes_off_the_gpu(no_interpreter, monkeypatch):
    # "auto" on a CPU lattice never touches the kernels (not even with the interpreter available).
    values = sphere_lattice(12, device="cpu")
    monkeypatch.setattr(MC, "marching_cubes", lambda *a, **k: pytest.fail("the kernel ran for a CPU lattice"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mesh = meshing.marching_cubes(values, 0.0, bounds=0.55)
    assert len(mesh.faces) > 0


def test_fallback_warns_once_with_the_reason(no_interpreter):
    values, iso = random_lattice((6, 6, 6), seed=6), 0.0
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = MC.marching_cubes_auto(values, iso)
        MC.marching_cubes_auto(values, iso)
    messages = [str(w.message) for w in rec if "marching_cubes" in str(w.message)]
    assert len(messages) == 1
    assert "marching_cubes: using the PyTorch reference because the inputs are on cpu" in messages[0]
    _assert_equals_pymcubes(out, values, iso)
    with pytest.raises(RuntimeError, match="Use marching_cubes_reference"):
        MC.marching_cubes(values, iso)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MC.marching_cubes_auto(values, iso, impl="reference")


@pytest.mark.parametrize("res", [128, 256])
def test_cuda_sphere_equals_pymcubes(cuda, res):
    values = sphere_lattice(res, noise=0.3 / res, device=cuda)
    _assert_equals_pymcubes(MC.marching_cubes_auto(values, 0.0, impl="triton"), values, 0.0)


def test_cuda_random_and_all_cases(cuda):
    fields = [(random_lattice((70, 65, 80), seed=7, device=cuda), 0.1), (all_cases_lattice(device=cuda), 0.0)]
    for values, iso in fields:
        _assert_equals_pymcubes(MC.marching_cubes(values, iso), values, iso)
        _assert_equals_pymcubes(MC.marching_cubes_reference(values, iso), values, iso)


def test_compiles_for_h100(aot_compile):
    aot_compile(f"""
        from toolkit.kernels._mc_triton import mc_classify_kernel, mc_emit_kernel
        for dt in ("fp32", "fp64"):
            sig = {{"vol_ptr": "*" + dt, "iso": "fp32", "case_ptr": "*u8", "ntri_ptr": "*i32",
                   "nvert_ptr": "*i32", "edge_mask_ptr": "*i32", "num_tri_ptr": "*i32", "owned_ptr": "*i32",
                   "C": "i64", "NY": "i32", "NZ": "i32", "BLOCK": "constexpr"}}
            compile(mc_classify_kernel, sig, {{"BLOCK": {MC._CUDA_BLOCK[0]}}}, {MC._CUDA_WARPS})
            sig = {{"vol_ptr": "*" + dt, "iso": "fp32", "active_ptr": "*i64", "A": "i32", "case_ptr": "*u8",
                   "vstart_ptr": "*i32", "fstart_ptr": "*i64", "verts_ptr": "*" + dt, "faces_ptr": "*i64",
                   "num_tri_ptr": "*i32", "tri_ptr": "*i32", "edge_mask_ptr": "*i32", "owned_ptr": "*i32",
                   "edge_info_ptr": "*i32", "local_edge_ptr": "*i32", "NY": "i32", "NZ": "i32",
                   "BLOCK": "constexpr"}}
            compile(mc_emit_kernel, sig, {{"BLOCK": {MC._CUDA_BLOCK[1]}}}, {MC._CUDA_WARPS})
    """)
