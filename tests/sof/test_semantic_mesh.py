"""Semantic meshes: analytic fields with closed-form answers, a tiny SOF model and a synthetic head."""
from __future__ import annotations

import math
import mmap
import time

import numpy as np
import pytest
import torch

from toolkit.geometry.meshing import mesh_stats
from toolkit.labels import SOF20
from toolkit.sof import semantic_mesh as S
from toolkit.sof.model import SOFModel, model_config

OFF = -1e4  # logit of classes absent from a field: exp(OFF) == 0


def sphere_classes(spheres, *, slope: float = 10.0):
    """A "model field": class c has logit slope * (r - |p - centre|) inside-out, background 0, others OFF."""
    def field(p):
        out = torch.full((len(p), 20), OFF)
        out[:, 0] = 0.0
        for c, centre, r in spheres:
            out[:, c] = slope * (r - (p - torch.tensor(centre)).norm(dim=-1))
        return out
    return field


TWO_SPHERES = sphere_classes([(4, (-0.45, 0.0, 0.0), 0.3), (5, (0.45, 0.1, 0.0), 0.35)])


def test_scores_closed_form():
    logits = torch.tensor([[0.0, 2.0, 1.0, OFF], [3.0, 1.0, 2.0, OFF]])
    torch.testing.assert_close(S.foreground_score(logits, score="logit"), torch.tensor([2.0, -1.0]))
    p = torch.softmax(logits, -1)
    expected = torch.stack([p[0, 1] - p[0, 0], p[1, 2] - p[1, 0]])
    torch.testing.assert_close(S.foreground_score(logits), expected)
    torch.testing.assert_close(S.class_score(logits, 2, score="logit"), torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(S.class_score(logits, 0, score="logit"), torch.tensor([-2.0, 1.0]))
    with pytest.raises(ValueError, match="valid"):
        S.foreground_score(logits, score="margin")
    with pytest.raises(ValueError, match="not in 0..3"):
        S.class_score(logits, 4)


def test_two_spheres_give_two_labelled_watertight_components():
    result = S.semantic_mesh(TWO_SPHERES, resolution=64, resolution0=16, bounds=1.0)
    mesh = result.mesh
    stats = mesh_stats(mesh)
    assert stats["watertight"] and stats["components"] == 2
    left = mesh.vertices[:, 0] < 0
    assert (mesh.vertex_labels[left] == 4).all() and (mesh.vertex_labels[~left] == 5).all()
    np.testing.assert_array_equal(mesh.vertex_colors, SOF20.palette[mesh.vertex_labels])
    expected = 4 / 3 * math.pi * (0.3 ** 3 + 0.35 ** 3)
    assert stats["volume"] == pytest.approx(expected, rel=0.03)
    assert result.seconds > 0 and result.peak_memory >= 0
    assert result.grid.num_queries < 65 ** 3  # MISE queried less than the dense grid
    assert S.label_histogram(mesh) == {"l_eye": int(left.sum()), "r_eye": int((~left).sum())}


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_foreground_level_sets_match_the_closed_form_radius(score):
    r, slope = 0.5, 10.0
    field = sphere_classes([(1, (0.0, 0.0, 0.0), r)], slope=slope)
    mesh = S.semantic_mesh(field, resolution=64, resolution0=16, bounds=0.8, score=score).mesh
    stats = mesh_stats(mesh)
    assert stats["watertight"] and stats["components"] == 1
    assert stats["volume"] == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.02)
    # Probability score at level 0.5: p_fg - p_bg = tanh(m / 2) = 0.5 at logit margin m = 2 atanh(0.5).
    if score == "probability":
        inner = S.semantic_mesh(field, resolution=64, resolution0=16, bounds=0.8, threshold=0.5).mesh
        r_half = r - 2 * math.atanh(0.5) / slope
        radii = np.linalg.norm(inner.vertices, axis=1)
        assert np.abs(radii - r_half).max() < 0.2 * (1.6 / 64) + 0.004  # within a fraction of a cell


def test_class_meshes_find_and_mesh_each_class():
    meshes = S.class_meshes(TWO_SPHERES, resolution=32, resolution0=16, bounds=1.0)
    assert sorted(meshes) == [4, 5]
    for c, radius in ((4, 0.3), (5, 0.35)):
        stats = mesh_stats(meshes[c])
        assert stats["watertight"] and stats["components"] == 1
        assert stats["volume"] == pytest.approx(4 / 3 * math.pi * radius ** 3, rel=0.06)
        assert (meshes[c].vertex_labels == c).all()
    dense = S.dense_class_meshes(TWO_SPHERES, resolution=32, bounds=1.0)
    assert sorted(dense) == [4, 5]
    assert mesh_stats(dense[5])["volume"] == pytest.approx(mesh_stats(meshes[5])["volume"], rel=0.01)
    assert S.present_classes(TWO_SPHERES, bounds=1.0, resolution=16) == [0, 4, 5]
    merged = S.merge_meshes([meshes[4], meshes[5]])
    assert len(merged.vertices) == len(meshes[4].vertices) + len(meshes[5].vertices)
    assert mesh_stats(merged)["components"] == 2


def test_logits_are_reduced_chunk_by_chunk():
    sizes = []

    def spy(p):
        sizes.append(len(p))
        return TWO_SPHERES(p)

    S.semantic_mesh(spy, resolution=32, resolution0=16, bounds=1.0, chunk=1000)
    assert max(sizes) <= 1000  # never more than chunk x C logits at once


def test_tiny_model_and_its_code():
    torch.manual_seed(0)
    model = SOFModel(model_config("small", num_instances=2, latent_dim=16, phi_width=32, marcher_width=32,
                                  steps=4)).eval()
    code = model.latent_codes.weight[1].detach()
    via_model = S.foreground_field(model, code)
    via_field = S.foreground_field(lambda p: model.field(code, p))
    xyz = torch.rand(64, 3) * 2 - 1
    torch.testing.assert_close(via_model(xyz), via_field(xyz))
    result = S.semantic_mesh(model, code, resolution=16, resolution0=8)
    assert result.grid.values.shape == (17, 17, 17)
    if len(result.mesh.vertices):
        assert result.mesh.vertex_labels.min() >= 1
    with pytest.raises(ValueError, match="needs a code"):
        S.foreground_field(model)
    with pytest.raises(ValueError, match="only meaningful"):
        S.foreground_field(TWO_SPHERES, code)


def test_synthetic_head_ground_truth():
    from toolkit.synthetic.heads import head_from_seed

    head = head_from_seed(3)
    mesh = S.semantic_mesh(head.logits, resolution=32, resolution0=16).mesh
    assert len(mesh.faces) > 100
    assert mesh.vertex_labels.min() >= 1
    assert {1, 15, 17} <= set(np.unique(mesh.vertex_labels).tolist())  # skin, neck and cloth on the surface


def test_resolution_must_be_a_power_of_two_refinement():
    with pytest.raises(ValueError, match="power of 2"):
        S.semantic_mesh(TWO_SPHERES, resolution=96, resolution0=64)
    with pytest.raises(ValueError, match="resolution0"):
        S.semantic_mesh(TWO_SPHERES, resolution=16, resolution0=32)


def test_peak_memory_sees_a_large_allocation():
    # Fresh anonymous pages: a numpy block may reuse pages the allocator kept resident from an earlier
    # test in the same worker, and then RSS does not grow at all.
    with S.PeakMemory() as mem:
        block = mmap.mmap(-1, 160_000_000)
        np.frombuffer(block, dtype=np.uint8)[::4096] = 1  # touch every page
        time.sleep(0.05)  # alive for several 5 ms sampling intervals (freed at once, it can fall between two)
        block.close()
    assert 120e6 < mem.peak < 400e6

