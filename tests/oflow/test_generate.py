"""Generation (toolkit.oflow.generate) on an analytic model: sphere decoder, constant velocity.

The t=0 mesh must be exactly meshing.extract_mesh of the sphere, every frame the t=0 mesh translated
by z_t * t with the same faces, and the per-frame (ONet-4D) meshes the MISE of the translated sphere.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from toolkit.geometry.meshing import load_mesh, mesh_stats
from toolkit.oflow import generate as G
from toolkit.oflow.model import build_model

GRID = {"resolution0": 16, "upsampling_steps": 2}  # 64^3 cells
Z = [[0.30, 0.05, -0.02], [0.22, -0.1, 0.0]]      # (radius, cx, cy) of two items: different vertex counts
ZT = [[0.10, -0.05, 0.02], [0.0, 0.15, -0.1]]     # constant velocities


@pytest.mark.parametrize("ode", ["rk4", "original"])
def test_frames_are_the_t0_mesh_translated_with_shared_faces(ode, analytic):
    C = analytic.codes
    model = analytic.analytic_model()
    seqs = G.reconstruct(model, C(Z, ZT), ode=ode, **GRID)
    assert len(seqs) == 2
    for z, zt, seq in zip(Z, ZT, seqs):
        ref = analytic.expected_t0_mesh(z, **GRID)
        # t=0 mesh: the same MISE + marching cubes as meshing.extract_mesh of the analytic field
        np.testing.assert_array_equal(seq.faces, ref.mesh.faces)
        np.testing.assert_allclose(seq.vertices[0], ref.mesh.vertices, atol=1e-6)
        assert seq.stats["num_queries"] == ref.grid.num_queries
        # default times: the 17 frames t = i / 16; every frame the translated t=0 mesh
        np.testing.assert_allclose(seq.times, np.arange(17) / 16, atol=1e-7)
        assert seq.vertices.shape == (17, len(ref.mesh.vertices), 3)
        expected = seq.vertices[0][None] + np.asarray(zt, np.float32)[None, None] * seq.times[:, None, None]
        torch.testing.assert_close(torch.from_numpy(seq.vertices), torch.from_numpy(expected), atol=2e-6, rtol=0)
    assert len(seqs[0].vertices[0]) != len(seqs[1].vertices[0])  # padding in the batched solve was exercised


def test_meshes_of_a_closed_sphere_are_watertight_in_every_frame(analytic):
    C = analytic.codes
    seq = G.reconstruct(analytic.analytic_model(), C(Z[:1], ZT[:1]), ode="rk4", times=[0.0, 0.5, 1.0], **GRID)[0]
    for k in range(3):
        stats = mesh_stats(seq.frame(k))
        assert stats["watertight"] and stats["components"] == 1
        # volume of the level set r + logit(0.3) / SHARPNESS, within the 64^3 discretisation
        r = Z[0][0] - math.log(0.3 / 0.7) / 10.0  # 10 (r - d) = logit(0.3)
        assert stats["volume"] == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.03)


def test_timings_for_every_stage_and_mise_saves_queries(analytic):
    C = analytic.codes
    seq = G.reconstruct(analytic.analytic_model(), C(Z[:1], ZT[:1]), ode="rk4", resolution0=32, upsampling_steps=2)[0]
    assert set(seq.timings) == set(G.STAGES) | {"total"}
    assert all(v >= 0 for v in seq.timings.values())
    assert seq.timings["total"] == pytest.approx(sum(seq.timings[k] for k in G.STAGES))
    assert seq.timings["propagation"] > 0 and seq.timings["mise"] > 0
    dense = 129 ** 3
    assert dense / seq.stats["num_queries"] > 5  # 128^3 grid: MISE queries far fewer points than dense
    assert seq.stats["nfe"] == 4 * 16  # rk4, step 1/16 over [0, 1]


def test_real_model_from_inputs_batched_equals_encoded_codes_and_restores_train_mode():
    torch.manual_seed(0)
    model = build_model("tiny")
    model.train()
    inputs = (torch.rand(2, 17, 64, 3) - 0.5) * 0.8
    seqs = G.reconstruct(model, inputs, ode="rk4", resolution0=8, upsampling_steps=1, times=[0.0, 0.25, 1.0])
    assert model.training
    model.eval()
    with torch.no_grad():
        c = model.encode(inputs)
    again = G.reconstruct(model, c, ode="rk4", resolution0=8, upsampling_steps=1, times=[0.0, 0.25, 1.0])
    for a, b in zip(seqs, again):
        assert a.vertices.shape[0] == 3 and a.vertices.shape[1] > 0
        np.testing.assert_array_equal(a.faces, b.faces)
        np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)
        # constant vertex count and faces over time is structural; frame 0 is the t=0 mesh itself
        assert a.faces.max() < a.vertices.shape[1]
    assert seqs[0].timings["encode"] > 0


def test_per_frame_mise_is_the_mesh_of_the_translated_sphere(analytic):
    C = analytic.codes
    z, zt = Z[0], ZT[0]
    fm = G.reconstruct_per_frame(analytic.analytic_model(), C([z], [zt]), ode="rk4", times=[0.0, 0.5, 1.0], **GRID)[0]
    assert len(fm.meshes) == 3 and set(fm.timings) == {"encode", "mise", "marching_cubes", "total"}
    for t, mesh in zip(fm.times, fm.meshes):
        ref = analytic.expected_t0_mesh(z, offset=tuple(float(t) * np.asarray(zt)), **GRID).mesh
        assert len(mesh.faces) == len(ref.faces)
        np.testing.assert_allclose(mesh.vertices, ref.vertices, atol=1e-4)
    assert fm.stats["nfe"] > 0  # backward transport was solved for the t > 0 frames only
    one = G.reconstruct(analytic.analytic_model(), C([z], [zt]), ode="rk4", times=[0.0, 0.5, 1.0], **GRID)[0]
    assert fm.stats["num_queries"] > 2.5 * one.stats["num_queries"]


def test_evaluation_of_an_exact_translation(analytic):
    C = analytic.codes
    z, zt = Z[0], ZT[0]
    seq = G.reconstruct(analytic.analytic_model(), C([z], [zt]), ode="rk4", times=[0.0, 0.5, 1.0], **GRID)[0]
    r = z[0] - math.log(0.3 / 0.7) / 10.0
    rng = np.random.default_rng(0)
    d = rng.normal(size=(40000, 3))  # dense: GT spacing ~0.007 keeps sampling error small
    gt0 = r * d / np.linalg.norm(d, axis=1, keepdims=True) + np.array([z[1], z[2], 0.0])
    shift = np.asarray(seq.times)[:, None, None] * np.asarray(zt)[None, None]
    pcl = gt0[None] + shift                                          # (T, P, 3) with correspondences
    pts = rng.uniform(-0.55, 0.55, (3, 5000, 3))
    occ = np.linalg.norm(pts - shift - np.array([z[1], z[2], 0.0]), axis=-1) < r
    m = G.evaluate_mesh_sequence(seq, pcl, pts, occ, n_points=20000)
    assert np.all(m.iou > 0.97)
    assert np.all(m.chamfer_l1_x10 < 0.05)
    # exact translation: the correspondence error is the frame-0 surface error in every frame
    np.testing.assert_allclose(m.correspondence_x10, m.correspondence_x10[0], rtol=1e-3)
    assert m.correspondence_x10[0] < 0.05


def test_save_and_load_mesh_sequence(tmp_path, analytic):
    C = analytic.codes
    seq = G.reconstruct(analytic.analytic_model(), C(Z[:1], ZT[:1]), ode="rk4", times=[0.0, 0.5, 1.0], **GRID)[0]
    path = G.save_mesh_sequence(tmp_path / "seq", seq)
    back = G.load_mesh_sequence(tmp_path / "seq")
    np.testing.assert_array_equal(back.vertices, seq.vertices)
    np.testing.assert_array_equal(back.faces, seq.faces)
    np.testing.assert_array_equal(back.times, seq.times)
    assert back.timings == pytest.approx(seq.timings) and back.stats == seq.stats
    for k in range(3):
        ply = load_mesh(tmp_path / "seq" / f"frame_{k:04d}.ply")
        np.testing.assert_array_equal(ply.faces, seq.faces)
        np.testing.assert_allclose(ply.vertices, seq.vertices[k], atol=1e-6)
        np.testing.assert_array_equal(ply.vertex_colors, G.correspondence_colors(seq.vertices[0]))
    assert path.read_bytes()[:2] == b"PK"
    assert (tmp_path / "seq" / "frame_0000.ply").read_bytes().startswith(b"ply\nformat binary")


def test_decimation_before_propagation(analytic):
    C = analytic.codes
    pytest.importorskip("fast_simplification")
    seq = G.reconstruct(analytic.analytic_model(), C(Z[:1], ZT[:1]), ode="rk4", times=[0.0, 1.0], decimate_faces=2000,
                        **GRID)[0]
    assert len(seq.faces) <= 2000 < seq.stats["faces_before_decimation"]
    assert mesh_stats(seq.frame(1))["watertight"]
    np.testing.assert_allclose(seq.vertices[1] - seq.vertices[0], np.broadcast_to(ZT[0], seq.vertices[0].shape),
                               atol=2e-6)


def test_decimation_without_the_package_says_how_to_install(monkeypatch, analytic):
    C = analytic.codes
    monkeypatch.setitem(sys.modules, "fast_simplification", None)
    with pytest.raises(ImportError, match="pip install fast-simplification"):
        G.reconstruct(analytic.analytic_model(), C(Z[:1], ZT[:1]), ode="rk4", decimate_faces=100, **GRID)


def test_errors(analytic):
    C = analytic.codes
    model = analytic.analytic_model()
    with pytest.raises(ValueError, match="probability"):
        G.reconstruct(model, C(Z, ZT), threshold=-0.8)
    with pytest.raises(ValueError, match=r"inputs\[None\]"):
        G.reconstruct(build_model("tiny"), torch.zeros(17, 10, 3))
    with pytest.raises(ValueError, match="valid"):
        G.reconstruct(model, C(Z, ZT), ode="rk5")
    with pytest.raises(TypeError, match="valid"):
        G.reconstruct(model, C(Z, ZT), ode="rk4", solver="rk4")
    with pytest.raises(ValueError, match="one item"):
        G.extract_t0_mesh(model, C(Z, ZT))
