"""Latent-space tools shared by both systems: interpolation with easing, a BIC-selected GMM, novelty.

SOF samples new portraits from a Gaussian mixture fitted to its per-instance codes (the original used
16 full-covariance components on 221 codes of 256 dimensions: about 14 points per 256x256 covariance,
a degenerate fit held up only by ``reg_covar``, sof.md 6). Here the number of components and the
covariance type are chosen by BIC, and a covariance type is only tried when every component can have
enough points to estimate it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from toolkit.io import DataError, atomic_save_npz, load_npz

EASINGS = ("linear", "cosine", "gaussian_cdf")
INTERPOLATIONS = ("linear", "slerp")


def ease(t: np.ndarray, easing: str = "linear", sigma: float = 0.25) -> np.ndarray:
    """Map fractions t in [0, 1] through an easing curve with ease(0) = 0 and ease(1) = 1.

    "cosine" is the smoothstep-like 0.5 - 0.5 cos(pi t); "gaussian_cdf" is the original's easing
    (a Gaussian CDF centred at 0.5 with width ``sigma`` in units of the whole path, renormalised so
    the ends are exact).
    """
    t = np.asarray(t, dtype=np.float64)
    if easing == "linear":
        return t
    if easing == "cosine":
        return 0.5 - 0.5 * np.cos(np.pi * t)
    if easing == "gaussian_cdf":
        from scipy.special import ndtr

        lo, hi = ndtr(-0.5 / sigma), ndtr(0.5 / sigma)
        return (ndtr((t - 0.5) / sigma) - lo) / (hi - lo)
    raise ValueError(f"unknown easing {easing!r}; valid: {list(EASINGS)}")


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation of vectors (last dim), falling back to linear for (anti)parallel pairs.

    Norms are interpolated linearly so codes of different lengths blend smoothly.
    """
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    t = t.reshape(t.shape + (1,) * (a.dim() - t.dim())) if t.dim() else t
    direction = torch.where(so > 1e-6, (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so.clamp_min(1e-12),
                            (1 - t) * ua + t * ub)
    return direction * ((1 - t) * na + t * nb)


def interpolate_codes(a: torch.Tensor, b: torch.Tensor, steps: int, *, mode: str = "linear",
                      easing: str = "linear") -> torch.Tensor:
    """Codes along a path from ``a`` to ``b`` (both (L,)): (steps, L), first = a and last = b exactly."""
    if mode not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {mode!r}; valid: {list(INTERPOLATIONS)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2; got {steps}")
    t = torch.as_tensor(ease(np.linspace(0.0, 1.0, steps), easing), dtype=a.dtype, device=a.device)
    if mode == "linear":
        path = (1 - t)[:, None] * a + t[:, None] * b
    else:
        path = slerp(a.expand(steps, -1), b.expand(steps, -1), t)
    path[0], path[-1] = a, b
    return path


class NoveltyResult(NamedTuple):
    distance: np.ndarray
    """(S,) Euclidean distance of each sample to its nearest training code."""
    nearest: np.ndarray
    """(S,) index of that training code."""
    relative: np.ndarray
    """(S,) distance divided by the median nearest-neighbour distance among training codes."""


def novelty(samples: np.ndarray, codes: np.ndarray) -> NoveltyResult:
    """How far sampled codes lie from the training codes (0 = a copy of a training code)."""
    from scipy.spatial import cKDTree

    samples, codes = np.asarray(samples, np.float64), np.asarray(codes, np.float64)
    tree = cKDTree(codes)
    dist, idx = tree.query(samples, k=1)
    train_nn = tree.query(codes, k=2)[0][:, 1] if len(codes) > 1 else np.ones(1)
    return NoveltyResult(dist, idx, dist / max(float(np.median(train_nn)), 1e-12))


class LatentGMM:
    """A Gaussian mixture over latent codes, with BIC model selection and a degeneracy guard.

    Use :meth:`fit` (classmethod), :meth:`sample`, :meth:`save` / :meth:`load`.
    """

    COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")

    def __init__(self, gmm, selection: list[dict] | None = None):
        self.gmm = gmm
        self.selection = selection or []

    @classmethod
    def fit(cls, codes: np.ndarray, *, components: Sequence[int] = (1, 2, 4, 8, 16),
            covariance_types: Sequence[str] = ("full", "diag", "spherical"), min_points_per_parameter: float = 1.0,
            reg_covar: float = 1e-6, seed: int = 0, n_init: int = 2) -> LatentGMM:
        """Fit mixtures for every (components, covariance type) allowed and keep the lowest BIC.

        A candidate is skipped when the codes cannot support it: "full" needs at least
        ``min_points_per_parameter * (L + 1)`` points per component (L = code length), "diag" and
        "spherical" need at least 2 per component. The table of tried candidates (with their BIC, or the
        reason for skipping) is kept in ``.selection``.
        """
        from sklearn.mixture import GaussianMixture

        codes = np.asarray(codes, dtype=np.float64)
        if codes.ndim != 2 or len(codes) < 2:
            raise ValueError(f"codes must be (N >= 2, L); got shape {codes.shape}")
        if not np.all(np.isfinite(codes)):
            raise ValueError("codes contain NaN or inf")
        for ct in covariance_types:
            if ct not in cls.COVARIANCE_TYPES:
                raise ValueError(f"unknown covariance type {ct!r}; valid: {list(cls.COVARIANCE_TYPES)}")
        n, dim = codes.shape
        best, table = None, []
        for ct in covariance_types:
            for k in components:
                # "full": one L x L covariance per component; "tied": one shared L x L covariance in total.
                need = {"full": min_points_per_parameter * (dim + 1)}.get(ct, 2)
                if ct == "tied" and n < min_points_per_parameter * (dim + 1):
                    table.append({"components": k, "covariance": ct, "bic": None,
                                  "skipped": f"{n} points < {dim + 1} needed for one shared covariance"})
                    continue
                if n / k < need:
                    table.append({"components": k, "covariance": ct, "bic": None,
                                  "skipped": f"{n / k:.1f} points per component < {need:.0f} needed"})
                    continue
                gmm = GaussianMixture(k, covariance_type=ct, reg_covar=reg_covar, random_state=seed, n_init=n_init)
                gmm.fit(codes)
                bic = float(gmm.bic(codes))
                table.append({"components": k, "covariance": ct, "bic": bic, "skipped": None})
                if best is None or bic < best[0]:
                    best = (bic, gmm)
        if best is None:
            raise ValueError(f"no mixture could be fitted to {n} codes of dimension {dim}: {table}")
        return cls(best[1], table)

    @property
    def summary(self) -> str:
        g = self.gmm
        return f"GaussianMixture({g.n_components} components, {g.covariance_type} covariance)"

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Draw ``n`` codes, reproducibly by ``seed`` (independent of any global RNG)."""
        rng = np.random.default_rng(seed)
        g = self.gmm
        comp = rng.choice(g.n_components, size=n, p=g.weights_)
        out = np.empty((n, g.means_.shape[1]))
        for k in range(g.n_components):
            sel = comp == k
            if sel.any():
                out[sel] = rng.multivariate_normal(g.means_[k], self._covariance(k), size=int(sel.sum()),
                                                   method="cholesky")
        return out

    def _covariance(self, k: int) -> np.ndarray:
        g, dim = self.gmm, self.gmm.means_.shape[1]
        cov = g.covariances_
        return {"full": lambda: cov[k], "tied": lambda: cov, "diag": lambda: np.diag(cov[k]),
                "spherical": lambda: np.eye(dim) * cov[k]}[g.covariance_type]()

    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted parameters (no pickle) atomically to an .npz file."""
        g = self.gmm
        atomic_save_npz(path, weights=g.weights_, means=g.means_, covariances=g.covariances_,
                        covariance_type=np.array(g.covariance_type), reg_covar=np.array(g.reg_covar))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentGMM:
        from sklearn.mixture import GaussianMixture
        from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

        d = load_npz(path, required=("weights", "means", "covariances", "covariance_type"))
        ct = str(d["covariance_type"])
        if ct not in cls.COVARIANCE_TYPES:
            raise DataError(path, f"unknown covariance type {ct!r}")
        g = GaussianMixture(len(d["weights"]), covariance_type=ct, reg_covar=float(d.get("reg_covar", 1e-6)))
        g.weights_, g.means_, g.covariances_ = d["weights"], d["means"], d["covariances"]
        g.precisions_cholesky_ = _compute_precision_cholesky(g.covariances_, ct)
        g.converged_, g.n_iter_ = True, 0
        return cls(g)
