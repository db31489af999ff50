"""File helpers shared by every loader and writer: one error type, atomic writes, label PNGs.

Every reader raises :class:`DataError` naming the file and what is wrong; every writer goes through
:func:`atomic_write`, so an interrupted run never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Bad input data. The message names the file (or key, or index) and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; on success rename it over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)


def atomic_save_npz(path: str | os.PathLike, compressed: bool = True, **arrays: np.ndarray) -> None:
    with atomic_write(path) as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def atomic_save_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """``np.load`` of a .npy file with a clear error for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for corrupt files
        raise DataError(path, f"not a readable .npy array ({exc})") from exc


def load_npz(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read every array of an .npz file; missing ``required`` keys and corrupt files raise DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise DataError(path, f"not a readable .npz archive ({exc})") from exc
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(path, f"missing keys {missing}; found {sorted(arrays)}")
    return arrays


def read_png(path: str | os.PathLike) -> tuple[str, np.ndarray]:
    """(PIL mode, pixel array) of an image file; DataError naming the file if missing or unreadable."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with Image.open(path) as img:
            img.load()
            return img.mode, np.array(img)
    except Exception as exc:
        raise DataError(path, f"unreadable PNG ({exc})") from exc


def read_label_png(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read a single-channel 8-bit label map as (H, W) uint8 class ids.

    Raises DataError if the file is missing, unreadable, not single-channel, or (when
    ``num_classes`` is given) holds an id >= num_classes.
    """
    path = Path(path)
    mode, labels = read_png(path)
    if mode not in ("L", "P") or labels.ndim != 2:
        raise DataError(path, f"expected a single-channel 8-bit label map, got mode {mode} shape {labels.shape}")
    labels = labels.astype(np.uint8)
    if num_classes is not None and labels.size and int(labels.max()) >= num_classes:
        bad = sorted(int(v) for v in np.unique(labels) if v >= num_classes)
        raise DataError(path, f"label ids {bad} out of range for {num_classes} classes (0..{num_classes - 1})")
    return labels


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write (H, W) integer class ids as an 8-bit single-channel PNG, atomically."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W); got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"labels must be in 0..255; got range {labels.min()}..{labels.max()}")
    with atomic_write(path) as f:
        Image.fromarray(labels.astype(np.uint8), mode="L").save(f, format="PNG")


def write_rgb_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write (H, W, 3) uint8 colours as a PNG, atomically."""
    from PIL import Image

    rgb = np.asarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be (H, W, 3); got shape {rgb.shape}")
    with atomic_write(path) as f:
        Image.fromarray(rgb, mode="RGB").save(f, format="PNG")


class Problem:
    """One problem found by a validator: the file (or folder) it concerns and what is wrong."""

    __slots__ = ("message", "path")

    def __init__(self, path: str | os.PathLike, message: str):
        self.path, self.message = str(path), message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({self.path!r}, {self.message!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Problem) and (self.path, self.message) == (other.path, other.message)

    def __hash__(self) -> int:
        return hash((self.path, self.message))
