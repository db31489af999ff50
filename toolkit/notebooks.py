"""Headless notebook runner (papermill), used by ``python -m toolkit notebooks`` and by the tests.

Each notebook has one cell tagged ``parameters`` holding every knob, ``QUICK`` among them; papermill
injects the overrides after it, so notebooks run unmodified.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

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
                 kernel_name: str = "python3") -> Path:
    """Execute one notebook headless and write the executed copy to ``out_dir``.

    Args:
        path: the notebook.
        out_dir: where the executed notebook goes (same file name).
        quick: value injected as ``QUICK``.
        parameters: further parameter overrides.
        timeout: per-cell timeout in seconds.
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
                                   cwd=str(path.parent), progress_bar=False, execution_timeout=timeout)
    return out


def run_notebooks(out_dir: str | os.PathLike, *, quick: bool = False, only: str | None = None) -> list[tuple[Path, float]]:
    """Run every notebook (or one) in order; returns (executed path, seconds) pairs."""
    notebooks = [find_notebook(only)] if only else list_notebooks()
    results = []
    for nb in notebooks:
        start = time.perf_counter()
        print(f"running {nb.name} (QUICK={quick}) ...", flush=True)
        out = run_notebook(nb, out_dir, quick=quick)
        seconds = time.perf_counter() - start
        print(f"  done in {seconds:.1f} s -> {out}", flush=True)
        results.append((out, seconds))
    return results


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
