"""Headless notebook runner (papermill), used by ``python -m toolkit notebooks`` and by the tests.

Each notebook has one cell tagged ``parameters`` holding every knob, ``QUICK`` among them; papermill
injects the overrides after it, so notebooks run unmodified.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def list_notebooks(directory: str | os.PathLike | None = None) -> list[Path]:
    """The workflow notebooks (``NN_name.ipynb``) in order."""
    directory = Path(directory) if directory else NOTEBOOK_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: notebook folder not found (is this a source checkout?)")
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def find_notebook(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Resolve a notebook by file name, stem, or number prefix (``"01"``)."""
    notebooks = list_notebooks(directory)
    hits = [p for p in notebooks if name in (p.name, p.stem) or p.name.startswith(f"{name}_")]
    if len(hits) != 1:
        raise ValueError(f"notebook {name!r} matches {len(hits)} notebooks; available: {[p.name for p in notebooks]}")
    return hits[0]


def run_notebook(path: str | os.PathLike, out_dir: str | os.PathLike, *, quick: bool = True,
                 parameters: dict[str, Any] | None = None, timeout: int = 1800,
                 kernel_name: str = "python3", progress: bool | dict = False) -> Path:
    """Execute one notebook headless and write the executed copy to ``out_dir``.

    Args:
        path: the notebook.
        out_dir: where the executed notebook goes (same file name).
        quick: value injected as ``QUICK``.
        parameters: further parameter overrides.
        timeout: per-cell timeout in seconds.
        progress: a per-cell progress bar (True, or tqdm keyword arguments).
    Returns:
        The executed notebook's path. Raises papermill's PapermillExecutionError when a cell fails.
    """
    import papermill

    path = Path(path).resolve()
    out = Path(out_dir).resolve() / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"QUICK": bool(quick), **(parameters or {})}
    # Headless: matplotlib never opens a window and widgets draw static figures (toolkit.viz).
    with _environment(MPLBACKEND="Agg", TOOLKIT_HEADLESS="1"):
        papermill.execute_notebook(str(path), str(out), parameters=params, kernel_name=kernel_name,
                                   cwd=str(path.parent), progress_bar=progress, execution_timeout=timeout)
    return out


class NotebookRun(NamedTuple):
    """Outcome of one notebook in :func:`run_notebooks`."""

    notebook: Path
    output: Path
    seconds: float
    error: str | None
    """None when it ran through; else the failing cell and the error, one line."""


def run_notebooks(out_dir: str | os.PathLike, *, quick: bool = False, full: bool = False,
                  only: str | None = None, progress: bool = True) -> list[NotebookRun]:
    """Run every notebook (or one) in order; a failing notebook is reported and the next one still runs.

    Args:
        out_dir: where the executed notebooks go.
        quick: ``QUICK=True`` (tiny sizes, CI).
        full: ``FULL=True``: notebooks that train retrain their full schedules instead of starting from the
            shipped checkpoints (hours on a CPU).
        only: one notebook by name or number.
        progress: a line per notebook (which, how far, elapsed) and a per-cell bar.
    Returns:
        One :class:`NotebookRun` per notebook; check ``error``.
    """
    from papermill.exceptions import PapermillExecutionError

    notebooks = [find_notebook(only)] if only else list_notebooks()
    results: list[NotebookRun] = []
    begin = time.perf_counter()
    for i, nb in enumerate(notebooks, 1):
        start = time.perf_counter()
        if progress:
            print(f"[{i}/{len(notebooks)}] {nb.name} (QUICK={quick}, FULL={full}) started at "
                  f"{_clock(start - begin)} ...", flush=True)
        error = None
        try:
            out = run_notebook(nb, out_dir, quick=quick, parameters={"FULL": True} if full and _declares(nb, "FULL") else {},
                               progress={"desc": nb.stem[:24], "leave": False} if progress else False)
        except PapermillExecutionError as exc:
            out = Path(out_dir).resolve() / nb.name
            error = f"cell {exc.cell_index} (In [{exc.exec_count}]): {exc.ename}: {_first_line(exc.evalue)}"
        seconds = time.perf_counter() - start
        if progress:
            status = "done" if error is None else f"FAILED at {error}"
            print(f"[{i}/{len(notebooks)}] {nb.name} {status} in {_clock(seconds)} (total {_clock(time.perf_counter() - begin)})"
                  f" -> {out}", flush=True)
        results.append(NotebookRun(nb, out, seconds, error))
    return results


def _declares(path: Path, name: str) -> bool:
    """Whether the notebook's ``parameters`` cell sets ``name``."""
    import json

    cells = json.loads(path.read_text())["cells"]
    return any(f"{name} =" in "".join(c["source"]) for c in cells
               if "parameters" in c.get("metadata", {}).get("tags", []))


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


def _first_line(text: str, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[:limit] + " ..."


@contextlib.contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
