"""Where things live: the repository's shipped data, generated outputs, and the optional real data.

- ``DATA_DIR``: ``<repo>/data``, shipped small assets (pretrained checkpoints with their README).
- ``GENERATED_DIR``: ``<repo>/data/generated``, gitignored; notebooks write datasets and runs here.
- ``shared_data_dir()``: the real reference data (``../shared/data`` beside the checkout, or
  ``$TOOLKIT_SHARED/data``); None when absent, so notebooks can skip real-data cells with a message.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
GENERATED_DIR = DATA_DIR / "generated"


def shared_data_dir() -> Path | None:
    """The real reference data folder, or None when it is not present."""
    candidates = []
    if os.environ.get("TOOLKIT_SHARED"):
        candidates.append(Path(os.environ["TOOLKIT_SHARED"]) / "data")
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def user_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path with ``~`` expanded (config values, command-line arguments)."""
    return Path(path).expanduser()


def generated(*parts: str) -> Path:
    """A path under the generated-data folder (created)."""
    path = GENERATED_DIR.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
