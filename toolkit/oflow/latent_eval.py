"""How much a generative model's motion code carries the motion (the ``eval oflow-latent`` command).

Three measurements, in frame-0 normalised units (the window's first-frame body has largest side 1):

- **retrieval**: each query window's motion code (posterior mean of z_t) is matched to its nearest
  reference code; the reference's motion name is the prediction. Query identities are never among the
  reference identities, so a code that only knew the body would fail; ``chance`` is 1 / motions.
- **transfer** on procedural bodies, whose answer is exact (:func:`toolkit.oflow.latent.synthetic_transfer_case`):
  the target identity's frame-0 surface points are carried by the source window's motion code and compared
  with the target doing the source motion. ``transfer_error_ratio`` = transferred / static error (the
  points left where they are: 1 means no motion was transferred), ``transfer_vs_own`` = transferred /
  the model's own error on the source body itself.
- **real scan** (optional): the scan's own motion code carrying its frame-0 points, against the true
  trajectories (its point indices correspond), relative to the static baseline: ``gain`` = 1 - own / static.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from toolkit.io import DataError
from toolkit.oflow.data import SequenceDataset
from toolkit.oflow.latent import (
    LatentTable,
    encode_latent_table,
    identity_name,
    synthetic_transfer_case,
    trajectory_error,
    transfer_motion,
)

__all__ = ["Retrieval", "evaluate_latent", "latent_figures", "motion_retrieval", "real_motion_gain", "transfer_scores"]


class Retrieval(NamedTuple):
    """Nearest-code motion retrieval."""

    accuracy: float
    chance: float
    """1 / number of distinct reference motions."""
    predicted: tuple[str, ...]
    """(Q,) predicted motion of each query."""
    truth: tuple[str, ...]
    """(Q,) true motion of each query."""


def motion_retrieval(reference: LatentTable, query: LatentTable) -> Retrieval:
    """Predict each query window's motion as that of the nearest reference motion code (Euclidean).

    Reference windows of the query's own identity are never matched (identities held out)."""
    ref, qry = np.asarray(reference.z_t, np.float64), np.asarray(query.z_t, np.float64)
    if len(ref) == 0 or len(qry) == 0:
        raise ValueError("motion_retrieval needs reference and query windows")
    dist = ((qry[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    ref_ids = np.array([identity_name(s) for s in reference.sequence])
    for q, seq in enumerate(query.sequence):
        dist[q, ref_ids == identity_name(seq)] = np.inf
    nearest = dist.argmin(1)
    predicted = tuple(reference.motion[i] for i in nearest)
    accuracy = float(np.mean([p == t for p, t in zip(predicted, query.motion)]))
    return Retrieval(accuracy, 1.0 / len(set(reference.motion)), predicted, tuple(query.motion))


@torch.no_grad()
def transfer_scores(model: Any, dataset: SequenceDataset, pairs: Sequence[tuple[int, str | os.PathLike]], *,
                    n_points: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Motion transfer onto procedural bodies, scored against the exact answer.

    Args:
        model: a generative model.
        dataset: evaluation windows (``eval=True``) of synthetic sequences (with ``body.json``).
        pairs: (source window index in ``dataset``, target sequence folder): the target's identity receives
            the source window's motion.
        n_points: surface points whose trajectories are compared.
    Returns:
        One dict per pair: source, target, start, and the mean errors ``transfer``, ``static``, ``own``.
    """
    from toolkit.oflow.evaluate import window_codes

    out = []
    for s, target in pairs:
        item = dataset[s]
        seq_s, start = dataset.windows[s]
        src = dataset.sequences[seq_s]
        case = synthetic_transfer_case(src.path, target, start=start, length=dataset.length, n_points=n_points,
                                       seed=seed, mesh_resolution=16)  # (its mesh is not used here)
        motion = window_codes(model, item["inputs"])
        moved = transfer_motion(model, motion, case.points[0]).vertices
        own = transfer_motion(model, motion, case.source_points[0]).vertices
        static = np.broadcast_to(case.points[0], case.points.shape)
        out.append({"source": src.name, "target": Path(target).name, "start": int(start),
                    "transfer": trajectory_error(moved, case.points).mean,
                    "static": trajectory_error(static, case.points).mean,
                    "own": trajectory_error(own, case.source_points).mean})
    return out


@torch.no_grad()
def real_motion_gain(model: Any, sequence: str | os.PathLike, *, n_points: int = 5000, length: int | None = None,
                     n_input_points: int = 1000, input_noise: float = 0.0, seed: int = 0) -> dict[str, float]:
    """A real scan's own motion code carrying its frame-0 surface points, against the true trajectories.

    Args:
        sequence: a sequence folder with ``pcl_seq`` (index correspondences; occupancy not needed).
        n_points: surface points scored (a fixed random subset).
    Returns:
        ``own`` and ``static`` mean errors and ``gain`` = 1 - own / static (the first window).
    """
    from toolkit.oflow.evaluate import window_codes

    ds = SequenceDataset(sequence, eval=True, occupancy=False, length=length or model.config.seq_len,
                         n_input_points=n_input_points, input_noise=input_noise, seed=seed)
    item = ds[0]
    pcl = item["pointcloud"].numpy()
    pick = np.sort(np.random.default_rng(seed).choice(pcl.shape[1], size=min(n_points, pcl.shape[1]), replace=False))
    truth = pcl[:, pick]
    moved = transfer_motion(model, window_codes(model, item["inputs"]), truth[0]).vertices
    own = trajectory_error(moved, truth).mean
    static = trajectory_error(np.broadcast_to(truth[0], truth.shape), truth).mean
    return {"sequence": str(sequence), "own": own, "static": static, "gain": 1.0 - own / static}


def evaluate_latent(checkpoint: str | os.PathLike, data: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """The latent-space figures of a generative checkpoint (the ``python -m toolkit eval oflow-latent`` command).

    Loads the checkpoint and returns :func:`latent_figures` (same keyword arguments) plus ``checkpoint``.
    """
    from toolkit.oflow.checkpoint import load_oflow

    start_time = time.perf_counter()
    loaded = load_oflow(checkpoint)
    if int(loaded.model.config.z_dim) <= 0:
        raise DataError(checkpoint, "not a generative model (z_dim = 0): the latent figures need motion codes")
    result = {"checkpoint": str(checkpoint),
              **latent_figures(loaded.model, data, train_config=loaded.meta.get("train_config") or {}, **kwargs)}
    result["seconds"] = round(time.perf_counter() - start_time, 1)
    return result


def latent_figures(model: Any, data: str | os.PathLike, *, train_config: dict | None = None,
                   reference_split: str | Sequence[str] = ("train", "val", "test", "test_new_motion"),
                   query_split: str = "test_new_individual", stride: int = 4, max_pairs: int = 12,
                   n_points: int = 2000, real: str | os.PathLike | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """How much a generative model's motion code carries the motion (see the module docstring).

    Args:
        model: a generative (VAE) model.
        data: a synthetic dataset root (``write_body_dataset``: the transfer answers need ``body.json``).
        train_config: the model's training settings (input points and noise; default 1000 points, no noise).
        reference_split, query_split: windows whose codes are looked up, and those that look up (held-out
            identities). Transfer pairs carry a query window's motion (a person the reference never shows)
            onto the body of a reference identity.
        stride: step between the windows taken from each sequence.
        max_pairs: transfer pairs scored (evenly spread over all query-window / reference-body pairs).
        real: optional real sequence folder for :func:`real_motion_gain`.
    Returns:
        A JSON-ready dict: ``transfer_error_ratio``, ``transfer_vs_own``, ``retrieval_accuracy``, ``chance``,
        ``pairs``, per-pair rows, the retrieval confusion and, with ``real``, ``real_gain``.
    """
    from toolkit.oflow.train import _split_arg

    model = model.eval()
    tc = train_config or {}
    kw = {"eval": True, "occupancy": False, "length": model.config.seq_len, "stride": int(stride),
          "n_input_points": int(tc.get("n_input_points", 1000)), "input_noise": float(tc.get("input_noise", 0.0)),
          "seed": int(tc.get("seed", 0))}
    root = Path(data)
    splits = [reference_split] if isinstance(reference_split, str) else list(reference_split)
    present = [s for s in splits if any(root.glob(f"**/{s}.lst"))]
    reference = SequenceDataset(root, split=_split_arg(root, present), **kw)
    query = SequenceDataset(root, split=query_split, **kw)
    ref_table = encode_latent_table(model, reference, progress=progress)
    qry_table = encode_latent_table(model, query, progress=progress)
    retrieval = motion_retrieval(ref_table, qry_table)
    first = {}
    for i, (seq, _) in enumerate(query.windows):  # the first window of each query sequence
        first.setdefault(seq, i)
    bodies = {}
    for info in reference.sequences:  # one sequence (body) per reference identity
        bodies.setdefault(identity_name(info.name), info.path)
    candidates = [(first[a], path) for a in first for who, path in bodies.items()
                  if who != identity_name(query.sequences[a].name)]
    if not candidates:
        raise DataError(root, f"no reference identity other than those of split {query_split!r} to transfer onto")
    pick = np.unique(np.linspace(0, len(candidates) - 1, min(max_pairs, len(candidates))).round().astype(int))
    rows = transfer_scores(model, query, [candidates[i] for i in pick], n_points=n_points)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("transfer", "static", "own")}
    motions = sorted(set(retrieval.truth) | set(retrieval.predicted))
    confusion = {t: {p: sum(1 for a, b in zip(retrieval.truth, retrieval.predicted) if a == t and b == p)
                     for p in motions} for t in motions}
    result = {
        "data": str(root), "query_split": query_split,
        "transfer_error_ratio": mean["transfer"] / mean["static"], "transfer_vs_own": mean["transfer"] / mean["own"],
        "retrieval_accuracy": retrieval.accuracy, "chance": retrieval.chance, "pairs": len(rows),
        "query_windows": len(qry_table), "reference_windows": len(ref_table),
        "mean_error": mean, "per_pair": rows, "retrieval_confusion": confusion,
        "units": "mean point distance over frames 1.., frame-0 normalised units",
    }
    if real is not None:
        result["real"] = real_motion_gain(model, real, n_input_points=kw["n_input_points"],
                                          input_noise=kw["input_noise"])
        result["real_gain"] = result["real"]["gain"]
    return result
