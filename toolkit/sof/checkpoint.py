"""SOF checkpoints: loading a model with its meta (and stage-2 camera corrections), and slim exports.

Below the train, evaluation and fit modules (all read checkpoints through here). Three layouts load:
training checkpoints of :class:`toolkit.training.Trainer` (or their run folder; the trainable stores the
network under ``sof.`` and the stage-2 camera corrections under ``cameras.``), slim exports
(``data/sof_synthetic.pt``), and the original's ``epoch_XXXX_iter_XXXXXX.pth`` (recognised by its keys).
Every problem is a :class:`toolkit.io.DataError` naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch

from toolkit.config import from_dict
from toolkit.io import DataError
from toolkit.sof.alignment import PortraitCameras
from toolkit.sof.model import SOFModel, SOFModelConfig, load_original_state_dict
from toolkit.training import load_checkpoint, model_state

__all__ = ["EXPORT_FORMAT", "LoadedSof", "export_checkpoint", "load_sof"]

EXPORT_FORMAT = "toolkit-sof-export-1"


class LoadedSof(NamedTuple):
    model: SOFModel
    meta: dict
    cameras: PortraitCameras | None
    """Stage-2 fits: the fitted per-portrait camera corrections (pose, similarity)."""
    path: Path | None = None
    """The checkpoint file (or run folder) it was read from."""


def load_sof(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> LoadedSof:
    """Load a SOF model from a toolkit checkpoint (training or exported), or an original checkpoint.

    Original checkpoints (``epoch_XXXX_iter_XXXXXX.pth``, ``{'model': state_dict}`` with the original keys)
    are recognised by their keys and loaded orthographic with their own sizes; their meta is minimal.

    Raises:
        DataError: unreadable file, another system's checkpoint, or a state dict that does not fit.
    """
    ck = load_checkpoint(path, map_location, weights_only=True)
    state = model_state(ck, path)
    meta = ck.get("meta")
    if isinstance(meta, dict) and meta.get("system", "sof") != "sof":
        raise DataError(path, f"not a SOF checkpoint: it holds a {meta['system']!r} model")
    if meta is None or "model_config" not in meta:
        if any(k.startswith("hyper_phi.") for k in state):
            model = load_original_state_dict(SOFModel, state, projection="ortho", source=path)
            return LoadedSof(model, {"system": "sof", "source": "original", "label_set": "sof20",
                                     "model_config": model.config_dict()}, None, Path(path))
        raise DataError(path, "not a SOF checkpoint: no meta['model_config'] and no original SOF keys")
    try:
        model = SOFModel(from_dict(SOFModelConfig, dict(meta["model_config"]), f"{path}: model_config"))
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"invalid model_config ({exc})") from exc
    try:
        model.load_state_dict({k: v.float() for k, v in model_state(ck, path, prefix="sof.").items()})
    except RuntimeError as exc:
        raise DataError(path, f"state dict does not fit the stored model_config ({exc})") from exc
    model.eval()
    return LoadedSof(model, dict(meta), _load_cameras(state, path), Path(path))


def export_checkpoint(run_or_checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                      half: bool = False) -> Path:
    """Write a slim, self-contained checkpoint (model, meta, step, validation history; no optimizer state).

    This is how ``data/sof_synthetic.pt`` is made from a finished run (see
    :func:`toolkit.sof.train.load_pretrained`).
    """
    from toolkit.training import export_checkpoint as export

    return export(run_or_checkpoint, out, fmt=EXPORT_FORMAT, half=half)


def _load_cameras(state: dict, path) -> PortraitCameras | None:
    """The fitted camera corrections of a stage-2 checkpoint (keys ``cameras.*``), or None."""
    cam_state = {k[len("cameras."):]: v for k, v in state.items() if k.startswith("cameras.")}
    if not cam_state:
        return None
    try:
        cameras = PortraitCameras(cam_state["targets"])
        cameras.load_state_dict({k: v.float() for k, v in cam_state.items()})
    except (KeyError, RuntimeError) as exc:
        raise DataError(path, f"stage-2 camera corrections do not load ({exc})") from exc
    return cameras
