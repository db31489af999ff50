"""Latent tools: easing, interpolation end points, slerp geometry, GMM selection, sampling, novelty."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from toolkit.latent import LatentGMM, ease, interpolate_codes, novelty, slerp


@pytest.mark.parametrize("easing", ["linear", "cosine", "gaussian_cdf"])
def test_easing_hits_ends_and_is_monotone(easing):
    t = np.linspace(0, 1, 21)
    e = ease(t, easing)
    assert e[0] == pytest.approx(0.0, abs=1e-12) and e[-1] == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(e) >= 0)
    assert e[10] == pytest.approx(0.5, abs=1e-9)  # symmetric curves pass through the middle


@pytest.mark.parametrize("mode", ["linear", "slerp"])
def test_interpolation_reproduces_end_codes(mode):
    a, b = torch.randn(8, generator=torch.Generator().manual_seed(0)), torch.randn(8)
    path = interpolate_codes(a, b, 5, mode=mode, easing="cosine")
    assert path.shape == (5, 8)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)


def test_slerp_moves_along_the_great_circle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    mid = slerp(a, b, 0.5)
    # Halfway in angle (45 degrees), halfway in norm (1.5).
    assert_close(mid, 1.5 * torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4)]))
    assert_close(slerp(a, 3 * a, 0.5), 2 * a)  # parallel vectors fall back to linear


def test_unknown_modes_list_valid():
    with pytest.raises(ValueError, match="valid"):
        interpolate_codes(torch.zeros(2), torch.ones(2), 3, mode="cubic")
    with pytest.raises(ValueError, match="valid"):
        ease(np.zeros(2), "bounce")


def _blobs(seed=0, n=120, dim=6):
    rng = np.random.default_rng(seed)
    centres = np.array([[-3.0] * dim, [3.0] * dim])
    return np.concatenate([rng.normal(c, 0.3, size=(n // 2, dim)) for c in centres])


def test_bic_finds_two_clusters_and_guards_full_covariance():
    codes = _blobs()
    gmm = LatentGMM.fit(codes, components=(1, 2, 4), covariance_types=("full", "diag"))
    assert gmm.gmm.n_components == 2
    # 120 points of dim 64 cannot support 4 full covariances: that candidate is skipped with a reason.
    wide = np.random.default_rng(1).normal(size=(120, 64))
    fit = LatentGMM.fit(wide, components=(1, 4), covariance_types=("full", "diag"))
    skipped = [row for row in fit.selection if row["skipped"]]
    assert any(row["covariance"] == "full" and row["components"] == 4 for row in skipped)


def test_sampling_is_reproducible_by_seed_and_save_load_round_trip(tmp_path):
    gmm = LatentGMM.fit(_blobs(), components=(2,), covariance_types=("full",))
    s1, s2, s3 = gmm.sample(50, seed=3), gmm.sample(50, seed=3), gmm.sample(50, seed=4)
    np.testing.assert_array_equal(s1, s2)
    assert not np.allclose(s1, s3)
    gmm.save(tmp_path / "gmm.npz")
    back = LatentGMM.load(tmp_path / "gmm.npz")
    np.testing.assert_array_equal(back.sample(50, seed=3), s1)
    np.testing.assert_allclose(back.gmm.score_samples(s1), gmm.gmm.score_samples(s1), rtol=1e-10)
    # Samples land near the two clusters.
    assert np.all(np.abs(np.abs(s1.mean(1)) - 3.0) < 1.0)


def test_novelty_of_copies_is_zero():
    codes = _blobs()
    res = novelty(codes[:5], codes)
    np.testing.assert_allclose(res.distance, 0.0, atol=1e-12)
    np.testing.assert_array_equal(res.nearest, np.arange(5))
    far = novelty(codes[:1] + 10.0, codes)
    assert far.relative[0] > 10
