"""Occupancy Flow latent tools (toolkit.oflow.latent): tables, embeddings, interpolation, motion transfer.

The analytic model (conftest: sphere decoder with z = (r, cx, cy), velocity v = z_t) gives closed-form
answers: a motion path is a path of velocities, a shape path a path of spheres.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.latent import slerp
from toolkit.oflow import generate as G
from toolkit.oflow import latent as L
from toolkit.oflow.model import build_model

GRID = {"resolution0": 16, "upsampling_steps": 2, "ode": "rk4", "times": [0.0, 0.25, 0.5, 1.0]}
Z = torch.tensor([0.3, 0.05, -0.02])
ZA, ZB = torch.tensor([0.1, -0.05, 0.02]), torch.tensor([-0.05, 0.12, 0.0])


@pytest.mark.parametrize("mode", ["linear", "slerp"])
def test_motion_interpolation_keeps_the_shape_and_hits_both_end_motions(analytic, mode):
    model = analytic.analytic_model()
    result = L.interpolate_motion(model, Z, ZA, ZB, 5, mode=mode, **GRID)
    assert result.fixed == "shape" and result.path.shape == (5, 3)
    ends = G.reconstruct(model, analytic.codes(torch.stack([Z, Z]), torch.stack([ZA, ZB])), **GRID)
    for seq, end in zip((result.sequences[0], result.sequences[-1]), ends):
        np.testing.assert_array_equal(seq.faces, end.faces)
        torch.testing.assert_close(torch.from_numpy(seq.vertices), torch.from_numpy(end.vertices), atol=1e-6, rtol=0)
    # the shape is held fixed: one t=0 mesh for every step; each step moves by its own velocity
    mid = (0.5 * (ZA + ZB) if mode == "linear" else slerp(ZA, ZB, 0.5)).numpy()
    for seq, v in zip(result.sequences, result.path.numpy()):
        np.testing.assert_array_equal(seq.vertices[0], result.sequences[0].vertices[0])
        np.testing.assert_allclose(seq.vertices[-1] - seq.vertices[0], np.broadcast_to(v, seq.vertices[0].shape),
                                   atol=2e-6)
    np.testing.assert_allclose(result.path[2].numpy(), mid, atol=1e-6)
    assert set(result.sequences[2].timings) == set(G.STAGES) | {"total"}


def test_shape_interpolation_keeps_the_motion_and_hits_both_end_shapes(analytic):
    model = analytic.analytic_model()
    za, zb, zt = torch.tensor([0.25, 0.0, 0.0]), torch.tensor([0.35, 0.1, -0.05]), ZA
    result = L.interpolate_shape(model, za, zb, zt, 3, **GRID)
    assert result.fixed == "motion"
    ends = G.reconstruct(model, analytic.codes(torch.stack([za, zb]), torch.stack([zt, zt])), **GRID)
    for seq, end in zip((result.sequences[0], result.sequences[-1]), ends):
        np.testing.assert_array_equal(seq.faces, end.faces)
        np.testing.assert_allclose(seq.vertices, end.vertices, atol=1e-6)
    for seq, z in zip(result.sequences, result.path):
        # each step: the mesh of its own sphere, moved by the one fixed motion
        ref = analytic.expected_t0_mesh(z.numpy(), resolution0=16, upsampling_steps=2).mesh
        np.testing.assert_allclose(seq.vertices[0], ref.vertices, atol=1e-6)
        np.testing.assert_allclose(seq.vertices[-1] - seq.vertices[0], np.broadcast_to(zt.numpy(), ref.vertices.shape),
                                   atol=2e-6)
    assert len(result.sequences[0].faces) < len(result.sequences[1].faces) < len(result.sequences[2].faces)


def test_transfer_ignores_the_shape_code_and_moves_any_vertices(analytic):
    model = analytic.analytic_model()
    rng = np.random.default_rng(0)
    verts, faces = rng.uniform(-0.4, 0.4, (50, 3)).astype(np.float32), rng.integers(0, 50, (20, 3))
    seq = L.transfer_motion(model, ZA, verts, faces, ode="rk4")
    assert seq.vertices.shape == (17, 50, 3) and np.array_equal(seq.faces, faces)
    np.testing.assert_allclose(seq.vertices, verts[None] + seq.times[:, None, None] * ZA.numpy(), atol=2e-6)
    # Codes with two different shape codes give the same motion
    a = L.transfer_motion(model, analytic.codes([[0.3, 0, 0]], [ZA.tolist()]), verts, ode="rk4", times=[0, 1])
    b = L.transfer_motion(model, analytic.codes([[0.1, 0.2, 0.2]], [ZA.tolist()]), verts, ode="rk4", times=[0, 1])
    np.testing.assert_array_equal(a.vertices, b.vertices)
    assert a.faces.shape == (0, 3) and a.timings["propagation"] > 0


def test_transfer_with_a_completion_model_uses_its_motion_code():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    with torch.no_grad():
        codes = model.encode((torch.rand(2, 17, 32, 3) - 0.5) * 0.8)
        verts = torch.rand(40, 3) - 0.5
        swapped = codes._replace(c_s=codes.c_s.flip(0))  # the shape code of the other item: no effect
        ref = model.transport_forward(codes, verts[None].expand(2, -1, -1), torch.tensor([0.0, 0.5, 1.0]),
                                      method="rk4", step_size=1 / 16, adjoint=False)
    for i in range(2):
        seq = L.transfer_motion(model, G._item(swapped, i), verts, times=[0.0, 0.5, 1.0], ode="rk4")
        np.testing.assert_allclose(seq.vertices, ref[i].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="generative"):
        L.transfer_motion(model, torch.zeros(16), verts)


def test_latent_table_encodes_means_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = build_model("generative", z_dim=4, latent_hidden=8, decoder_hidden=8, vf_hidden=8)
    rng = np.random.default_rng(0)
    items = [{"inputs": torch.from_numpy(rng.uniform(-0.5, 0.5, (17, 30, 3)).astype(np.float32)),
              "sequence": name, "start": torch.tensor(s)}
             for name, s in [("50002_light_hopping_loose", 0), ("50002_light_hopping_loose", 3),
                             ("10003_jumping_jacks", 0), ("odd", 5), ("10001_punching", 1)]]
    table = L.encode_latent_table(model, items, batch_size=2)
    assert len(table) == 5 and table.z.shape == (5, 4) and table.z_t.shape == (5, 4)
    assert table.motion == ("light_hopping_loose", "light_hopping_loose", "jumping_jacks", "odd", "punching")
    with torch.no_grad():
        q = model.eval().encode_latent(torch.stack([it["inputs"] for it in items]))
    np.testing.assert_allclose(table.z, q.q_z.loc.numpy(), atol=1e-6)
    np.testing.assert_allclose(table.z_t_std, q.q_z_t.scale.numpy(), atol=1e-6)
    assert table.index("50002_light_hopping_loose", 3) == 1 and table.index("10001_punching") == 4
    with pytest.raises(KeyError, match="no window"):
        table.index("nope")
    for ext in (".npz", ".csv"):
        back = L.LatentTable.load(table.save(tmp_path / f"latent{ext}"))
        assert back.sequence == table.sequence and back.motion == table.motion
        np.testing.assert_array_equal(back.start, table.start)
        np.testing.assert_array_equal(back.z_t, table.z_t)  # repr() of floats round-trips exactly
    with pytest.raises(ValueError, match="z_dim"):
        L.encode_latent_table(build_model("tiny"), items)


def test_motion_embedding_separates_two_motions():
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(0, 0.1, (10, 8)) + 3, rng.normal(0, 0.1, (10, 8)) - 3])
    for method in L.EMBEDDINGS:
        xy = L.motion_embedding(codes, method=method)
        assert xy.shape == (20, 2)
        gap = np.linalg.norm(xy[:10].mean(0) - xy[10:].mean(0))
        spread = max(xy[:10].std(0).max(), xy[10:].std(0).max())
        assert gap > 5 * spread, method
    with pytest.raises(ValueError, match="valid"):
        L.motion_embedding(codes, method="umap")


def test_trajectory_error_closed_form():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(5, 6, 3))
    pred = gt.copy()
    pred[1:, :3] += np.array([0.3, 0.4, 0.0])  # part 0 off by 0.5 after frame 0; part 1 exact
    err = L.trajectory_error(pred, gt, np.array([0, 0, 0, 1, 1, 1]), ["arm", "leg"])
    np.testing.assert_allclose(err.per_frame, [0, 0.25, 0.25, 0.25, 0.25])
    assert err.per_part == pytest.approx({"arm": 0.5, "leg": 0.0}) and err.mean == pytest.approx(0.25)
    with pytest.raises(ValueError, match="parts"):
        L.trajectory_error(pred, gt, np.zeros(5))


def test_synthetic_transfer_case_is_the_target_identity_doing_the_source_motion(tmp_path):
    from toolkit.synthetic.bodies import write_body_dataset

    root = write_body_dataset(tmp_path / "bodies", sequences=2, frames=5, n_points=64, n_pcl=64, mesh_resolution=24,
                              progress=False)
    seqs = sorted(p.parent for p in root.glob("*/*/body.json"))
    same = L.synthetic_transfer_case(seqs[0], seqs[0], length=5, n_points=200, mesh_resolution=64)
    # transferring a sequence's motion onto its own identity: the answer is the source itself
    np.testing.assert_allclose(same.points, same.source_points, atol=1e-6)
    other = L.synthetic_transfer_case(seqs[0], seqs[1], length=5, n_points=200, mesh_resolution=64)
    assert other.points.shape == (5, 200, 3) and other.parts.shape == (200,)
    assert np.abs(other.points[0] - same.points[0]).max() > 1e-3  # a different body
    # frame-0 normalisation: the body spans at most [-0.5, 0.5] and its points lie on the t=0 mesh
    assert np.abs(other.points[0]).max() <= 0.5 + 1e-3
    lo, hi = other.mesh.vertices.min(0), other.mesh.vertices.max(0)
    assert np.all(other.points[0].min(0) >= lo - 0.02) and np.all(other.points[0].max(0) <= hi + 0.02)
    np.testing.assert_allclose(other.times, np.arange(5) / 4)


def test_interpolation_needs_a_generative_model():
    with pytest.raises(ValueError, match="generative"):
        L.interpolate_motion(build_model("tiny"), torch.zeros(16), torch.zeros(16), torch.ones(16), 3)
