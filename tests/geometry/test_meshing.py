"""Meshing on analytic fields: MISE against dense evaluation, areas and volumes, labels, export."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from toolkit.geometry import meshing as M
from toolkit.labels import SOF20_PALETTE


def sphere(radius=0.4, centre=(0.0, 0.0, 0.0)):
    c = torch.tensor(centre)
    return lambda p: radius - (p - c).norm(dim=-1)


def torus(R=0.3, r=0.1):
    return lambda p: r - torch.sqrt((torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2) - R) ** 2 + p[:, 1] ** 2)


def test_sphere_area_and_volume_within_one_percent_at_256():
    result = M.extract_mesh(sphere(0.4), resolution0=32, upsampling_steps=3)  # 256^3 cells
    stats = M.mesh_stats(result.mesh)
    assert stats["watertight"] and stats["components"] == 1
    assert stats["area"] == pytest.approx(4 * math.pi * 0.4 ** 2, rel=0.01)
    assert stats["volume"] == pytest.approx(4 / 3 * math.pi * 0.4 ** 3, rel=0.01)
    # Every vertex lies on the sphere to within a small fraction of a cell.
    radii = np.linalg.norm(result.mesh.vertices, axis=1)
    assert np.abs(radii - 0.4).max() < 0.2 * (1.1 / 256)


@pytest.mark.parametrize("shape", ["sphere", "torus", "two_spheres"])
def test_mise_gives_the_dense_mesh_with_far_fewer_queries(shape):
    field = {"sphere": sphere(0.33, (0.05, -0.02, 0.01)), "torus": torus(),
             "two_spheres": lambda p: torch.maximum(sphere(0.15, (-0.25, 0, 0))(p), sphere(0.2, (0.2, 0.1, 0))(p))}[shape]
    mise = M.extract_mesh(field, resolution0=16, upsampling_steps=3)   # 128^3 cells
    dense = M.dense_grid(field, resolution=128)
    dense_mesh = M.marching_cubes(dense.values, 0.0)
    assert len(mise.mesh.faces) == len(dense_mesh.faces)
    np.testing.assert_allclose(np.sort(mise.mesh.vertices, axis=0), np.sort(dense_mesh.vertices, axis=0), atol=1e-5)
    ratio = dense.num_queries / mise.grid.num_queries
    assert ratio > 5, f"MISE saved only {ratio:.1f}x queries"
    assert M.mesh_stats(mise.mesh)["watertight"]


def test_surface_touching_the_box_is_closed():
    # A sphere larger than the box: the padded marching cubes closes it against the box faces.
    mesh = M.extract_mesh(sphere(0.7), bounds=0.5, resolution0=16, upsampling_steps=1).mesh
    stats = M.mesh_stats(mesh)
    assert stats["watertight"]
    assert np.abs(mesh.vertices).max() <= 0.5 + 1e-6


def test_two_class_field_gives_two_labelled_components():
    left, right = sphere(0.2, (-0.25, 0, 0)), sphere(0.2, (0.25, 0, 0))
    occupancy = lambda p: torch.maximum(left(p), right(p))
    labels = lambda p: torch.where(p[:, 0] < 0, torch.tensor(4), torch.tensor(5))  # l_eye / r_eye ids
    mesh = M.label_vertices(M.extract_mesh(occupancy, resolution0=16, upsampling_steps=2).mesh, labels,
                            palette=SOF20_PALETTE, inset=0.01)
    import trimesh

    parts = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).split(only_watertight=False)
    assert len(parts) == 2
    assert set(np.unique(mesh.vertex_labels)) == {4, 5}
    assert (mesh.vertex_labels[mesh.vertices[:, 0] < 0] == 4).all()
    assert (mesh.vertex_colors == SOF20_PALETTE[mesh.vertex_labels]).all()


def test_empty_field_gives_empty_mesh():
    mesh = M.extract_mesh(lambda p: -torch.ones(len(p)), resolution0=8, upsampling_steps=2).mesh
    assert len(mesh.vertices) == 0 and len(mesh.faces) == 0


@pytest.mark.parametrize("ext", [".ply", ".obj", ".npz"])
def test_save_and_load_round_trip(tmp_path, ext):
    mesh = M.extract_mesh(sphere(0.3), resolution0=8, upsampling_steps=1).mesh
    mesh = mesh._replace(vertex_colors=np.tile(np.array([[10, 20, 30]], dtype=np.uint8), (len(mesh.vertices), 1)))
    M.save_mesh(tmp_path / f"m{ext}", mesh)
    back = M.load_mesh(tmp_path / f"m{ext}")
    assert len(back.faces) == len(mesh.faces)
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-5)
    if ext != ".obj":
        assert (back.vertex_colors == mesh.vertex_colors).all()


def test_save_rejects_unknown_format(tmp_path):
    mesh = M.Mesh(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="valid"):
        M.save_mesh(tmp_path / "m.stl", mesh)


# ----------------------------------------------------------------------------------------------- options


def test_options_object_and_loose_knobs_give_the_same_mesh():
    opts = M.MeshingOptions(level=0.05, resolution0=8, upsampling_steps=2, bounds=0.5)
    assert opts.resolution == 32 and opts.bounds == ((-0.5,) * 3, (0.5,) * 3)
    by_object = M.extract_mesh(sphere(0.4), opts).mesh
    by_knobs = M.extract_mesh(sphere(0.4), threshold=0.05, resolution0=8, upsampling_steps=2, bounds=0.5).mesh
    np.testing.assert_array_equal(by_object.faces, by_knobs.faces)
    np.testing.assert_array_equal(by_object.vertices, by_knobs.vertices)
    # a knob on top of an object changes only that field
    finer = M.meshing_options(opts, upsampling_steps=3)
    assert (finer.level, finer.resolution, finer.bounds) == (0.05, 64, opts.bounds)


class _Field:
    """A point field that declares its own box and chunk."""

    bounds = M.box(((-0.2, 0.2), (-0.3, 0.3), (-0.4, 0.4)))
    device = torch.device("cpu")
    chunk = 100

    def __init__(self):
        self.calls = []

    def __call__(self, p):
        self.calls.append(len(p))
        return 0.15 - p.norm(dim=-1)


def test_the_field_supplies_box_and_chunk_the_options_leave_open():
    field = _Field()
    mesh = M.extract_mesh(field, M.MeshingOptions(resolution0=8, upsampling_steps=0)).mesh
    assert max(field.calls) == 100  # the field's chunk
    np.testing.assert_allclose(mesh.vertices.min(0), [-0.15, -0.15, -0.15], atol=0.03)
    grid = M.dense_grid(field, resolution=8)
    assert grid.values.shape == (9, 9, 9) and grid.values[0, 0, 0] == pytest.approx(0.15 - math.sqrt(0.29), abs=1e-6)
    field.calls.clear()
    M.mise_grid(field, M.MeshingOptions(resolution0=4, upsampling_steps=0, chunk=7, bounds=1.0))
    assert max(field.calls) == 7  # the options' chunk wins


@pytest.mark.parametrize("knobs, error, match", [
    ({"resolution0": 0}, ValueError, "resolution0 must be an int >= 1; got 0"),
    ({"upsampling_steps": -1}, ValueError, "upsampling_steps must be an int >= 0"),
    ({"chunk": 0}, ValueError, "chunk must be a positive int or None"),
    ({"impl": "gpu"}, ValueError, r"unknown marching-cubes implementation \"gpu\"; valid: \['auto', 'triton', 'pymcubes'\]"),
    ({"bounds": -1.0}, ValueError, "bounds half-size must be > 0"),
    ({"level": float("nan")}, ValueError, "level must be a finite number"),
    ({"resolution": 64}, TypeError, r"unknown meshing option\(s\) \['resolution'\]; valid:"),
    ({"threshold": 0.1, "level": 0.2}, TypeError, "threshold \\(its old name\\) or level, not both"),
], ids=["resolution0", "steps", "chunk", "impl", "bounds", "level", "unknown", "threshold-and-level"])
def test_options_are_validated_once_with_a_clear_message(knobs, error, match):
    with pytest.raises(error, match=match):
        M.meshing_options(**knobs)
