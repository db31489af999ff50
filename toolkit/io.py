"""File helpers shared by every loader and writer: one error type, atomic writes, label PNGs.

Every reader raises :class:`DataError` naming the file and what is wrong; every writer goes through
:func:`atomic_write`, so an interrupted run never leaves a half-written file behind, and a failed write
(full disk, read-only folder) raises :class:`OutputError` naming the file. Outputs made of many files
(a dataset, a sequence's ``points_seq``) are written into a sibling folder by :func:`staged_folder` and
appear at once, after one flush of all their files (not one ``fsync`` per file). Temporary files carry
their writer's process id, so the ones a killed process left behind are removed by the next writer of
the same file (:func:`remove_stale_temps`).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Bad input data. The message names the file (or key, or index) and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class OutputError(DataError, OSError):
    """An output could not be written (full disk, read-only folder, ...): names the file and the reason.

    Both a :class:`DataError` (one clear line in the command line) and an ``OSError`` (what the failed
    write raised)."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        DataError.__init__(self, path, problem)


def output_error(path: str | os.PathLike, exc: BaseException) -> OutputError:
    """An :class:`OutputError` for ``exc`` raised while writing ``path`` (strerror of OS errors,
    torch's "file write failed" enforce messages reduced to their reason)."""
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:
        text = str(exc).strip()
        reason = text.splitlines()[-1].strip() if text else type(exc).__name__
        if "file write failed" in text or "inline_container" in text:
            reason = "file write failed (disk full or the device refused the write)"
    return OutputError(path, f"cannot write ({reason})")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; on success rename it over ``path`` (atomic on POSIX).

    A failure to create, write or rename it (OSError, or torch's "file write failed") raises
    :class:`OutputError` naming ``path``; the temporary file is removed. Temporary files of
    ``path`` left by dead processes are removed first.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.name)
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if not _in_staging(path):  # a staged folder is synced once, when it is published
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if _is_write_failure(exc):
            raise output_error(path, exc) from exc
        raise


def remove_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary files (and staging folders) in ``folder`` whose writing process is dead.

    Args:
        folder: where to look (not recursive).
        name: only the temporaries of this target name (default: all).
    Returns:
        What was removed. Temporaries of live processes, and names without a process id, are kept.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP_RE.match(p.name)
        if not m or (name is not None and m.group("name") != name) or _pid_alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike, *, overwrite: bool = False,
                  owned: Callable[[Path], bool] | None = None, what: str = "output folder") -> Iterator[Path]:
    """Write a multi-file output into a sibling folder that replaces ``out`` at once on success.

    Args:
        out: the folder to produce. An existing empty folder is filled; an existing non-empty one is an
            error unless ``overwrite``.
        overwrite: replace an existing ``out`` (only when ``owned(out)`` says it is this writer's own output).
        owned: test that an existing ``out`` is an earlier output of the same writer (default: anything).
        what: how ``out`` is named in errors.
    Yields:
        The staging folder to write into (``.<name>.<pid>-<token>.partial`` beside ``out``); removed when
        the block raises (including KeyboardInterrupt), so nothing of a failed run is left at ``out``.
    Raises:
        DataError: ``out`` is a file, exists without ``overwrite``, is not ``owned``, or appeared while writing.
        OutputError: the parent folder cannot be written.
    """
    out = Path(out)
    _check_replaceable(out, overwrite, owned, what)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out.parent, out.name)
        work = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.partial"
        work.mkdir()
    except OSError as exc:
        raise output_error(out, exc) from exc
    with _STAGING_LOCK:
        _STAGING.add(work.resolve())
    try:
        yield work
        if hasattr(os, "sync"):
            os.sync()  # the files' data reaches the disk before the folder appears (one flush, not one per file)
        _publish(work, out, overwrite, owned, what)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if _is_write_failure(exc):
            raise output_error(out, exc) from exc
        raise
    finally:
        with _STAGING_LOCK:
            _STAGING.discard(work.resolve())


_STAGING: set[Path] = set()  # staging folders being written in this process
_STAGING_LOCK = threading.Lock()


def _in_staging(path: Path) -> bool:
    if not hasattr(os, "sync"):  # no system-wide flush at publication: sync every file
        return False
    with _STAGING_LOCK:
        if not _STAGING:
            return False
        staging = set(_STAGING)
    return any(parent in staging for parent in path.resolve().parents)


def _is_nonempty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return True


_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]+\.(?:tmp|partial|old)$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO,
                 errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG}


def _is_write_failure(exc: BaseException) -> bool:
    """An OSError of a failed write (not one of ours, not a read error of the block), or torch's enforce
    failure of a write."""
    if isinstance(exc, OutputError):
        return False
    if isinstance(exc, OSError):
        return exc.errno is None or exc.errno in _WRITE_ERRNOS
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("file write failed" in text or "inline_container" in text)


def _check_replaceable(out: Path, overwrite: bool, owned: Callable[[Path], bool] | None, what: str) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(out, f"exists and is not a folder; the {what} must be a folder")
    if not _is_nonempty_dir(out):
        return
    if not overwrite:
        raise DataError(out, f"{what} exists and is not empty; choose another or pass --overwrite "
                             "(overwrite=True) to replace it")
    if owned is not None and not owned(out):
        raise DataError(out, f"exists and is not an earlier {what} of this command; refusing to replace it "
                             "(remove it yourself or choose another folder)")


def _publish(work: Path, out: Path, overwrite: bool, owned, what: str) -> None:
    """Move the finished staging folder to ``out`` (replacing an earlier output when allowed)."""
    old = None
    if _is_nonempty_dir(out):  # checked again: another writer may have finished meanwhile
        if not overwrite or (owned is not None and not owned(out)) or not out.is_dir():
            raise DataError(out, f"{what} appeared while writing (another run writing the same folder?); nothing "
                                 "of this run was kept")
        old = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.old"
        os.rename(out, old)
    elif out.is_dir():
        out.rmdir()  # an empty folder is simply filled
    try:
        os.rename(work, out)  # fails if another writer created a non-empty ``out`` in between
    except OSError as exc:
        if old is not None:
            os.rename(old, out)
        if _is_nonempty_dir(out):
            raise DataError(out, f"{what} appeared while writing (another run writing the same folder?); "
                                 "nothing of this run was kept") from exc
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
