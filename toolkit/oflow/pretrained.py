"""The Occupancy Flow authors' pretrained models, downloaded once into the torch hub cache (oflow.md §2).

The original code fetches its pretrained checkpoints at run time from the authors' S3 bucket; their file
names end in the first hex digits of the file's sha256 (``oflow_model-3ff330bc.pt``), which is checked
on download, as :func:`torch.hub.load_state_dict_from_url` does. The checkpoints hold the original
layout (``{'model': state_dict}``) and load through :func:`toolkit.oflow.checkpoint.load_oflow`.

``TOOLKIT_OFLOW_MODELS_URL`` replaces the base URL (a mirror, or a local folder as ``file:///...``).
"""
from __future__ import annotations

import os
import re
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import torch

from toolkit.io import DataError

AUTHORS_BASE_URL = "https://s3.eu-central-1.amazonaws.com/avg-projects/occupancy_flow/models/"
AUTHORS_MODELS: dict[str, str] = {
    "pointcloud_w_correspond": "pointcloud/oflow_w_correspond_model-13c0a3ed.pt",
    "pointcloud": "pointcloud/oflow_model-3ff330bc.pt",
    "interpolation": "interpolation/oflow_model-a2935036.pt",
    "generative": "generative/oflow_model-187b81a1.pt",
    "shape_matching": "shape_matching/oflow_model-cb3b57e3.pt",
}
"""The authors' models (configs/<task>/*_pretrained.yaml of the original) -> path under the base URL."""
_HASH = re.compile(r"-([a-f0-9]{6,64})\.[^.]+$")


def authors_model_url(name: str) -> str:
    """Download URL of one of :data:`AUTHORS_MODELS` (honours ``TOOLKIT_OFLOW_MODELS_URL``)."""
    if name not in AUTHORS_MODELS:
        raise ValueError(f"unknown authors' model {name!r}; valid: {sorted(AUTHORS_MODELS)}")
    base = os.environ.get("TOOLKIT_OFLOW_MODELS_URL", AUTHORS_BASE_URL)
    return base.rstrip("/") + "/" + AUTHORS_MODELS[name]


def fetch_checkpoint(url: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The local copy of a checkpoint URL, downloaded on first use and checked against its name's hash.

    The file goes to ``<torch hub dir>/checkpoints/<file name>`` (or ``cache_dir``); the name must end in
    ``-<sha256 prefix>.<ext>``. The download is written beside the target and renamed only when its
    sha256 starts with that prefix, so a failed or corrupt download leaves nothing in the cache.

    Raises:
        DataError: no hash in the name, the host cannot be reached, or the hash does not match.
    """
    name = Path(urlparse(url).path).name
    match = _HASH.search(name)
    if not match:
        raise DataError(url, "file name carries no sha256 prefix (expected NAME-<hex>.pt)")
    folder = Path(cache_dir) if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=match.group(1), progress=progress)
    except RuntimeError as exc:
        if "invalid hash value" in str(exc):
            raise DataError(url, f"downloaded file's sha256 does not start with {match.group(1)}: corrupt or "
                                 "not the expected file; nothing was written to the cache") from exc
        raise
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(url, f"download failed ({reason}); without network, copy the file to {target}") from exc
    return target


def load_authors_model(name: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True):
    """One of :data:`AUTHORS_MODELS`, downloaded once and converted (a
    :class:`toolkit.oflow.checkpoint.LoadedOFlow`)."""
    from toolkit.oflow.checkpoint import load_oflow

    return load_oflow(fetch_checkpoint(authors_model_url(name), cache_dir=cache_dir, progress=progress))
