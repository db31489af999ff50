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
                  only: str | None = None, progress: bool = True, jobs: int | None = None,
                  directory: str | os.PathLike | None = None) -> list[NotebookRun]:
    """Run every notebook (or one); a failing notebook is reported and the next one still runs.

    Notebooks run in order within their lane (``metadata.toolkit.lane``: ``sof`` for 01-07, ``oflow`` for
    08-12, which share no outputs); the lanes run side by side, ``jobs`` at a time, each kernel with
    ``cpus // jobs`` threads unless ``OMP_NUM_THREADS`` is set.

    Args:
        out_dir: where the executed notebooks go.
        quick: ``QUICK=True`` (tiny sizes, CI).
        full: ``FULL=True``: notebooks that train retrain their full schedules instead of starting from the
            shipped checkpoints (hours on a CPU).
        only: one notebook by name or number.
        progress: a line per notebook when it starts and ends (which, how far, elapsed); with one job also a
            per-cell bar.
        jobs: lanes at once; default: as many as there are lanes and CPUs.
        directory: the notebook folder (default: the repository's ``notebooks/``).
    Returns:
        One :class:`NotebookRun` per notebook, in notebook order; check ``error``.
    """
    notebooks = [find_notebook(only, directory)] if only else list_notebooks(directory)
    lanes: dict[str, list[tuple[int, Path]]] = {}
    for i, nb in enumerate(notebooks, 1):
        lanes.setdefault(notebook_lane(nb), []).append((i, nb))
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(lanes)))
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))
    options = dict(out_dir=out_dir, quick=quick, full=full, total=len(notebooks), begin=time.time(),
                   progress=progress, cell_bar=progress and jobs == 1, threads=threads)
    if jobs == 1:
        runs = [run for lane in lanes.values() for run in _run_lane(lane, **options)]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a fresh interpreter per lane (no forked threads or locks of the caller's)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_lane, lane, **options) for lane in lanes.values()]
            runs = [run for f in futures for run in f.result()]
    order = {nb: i for i, nb in enumerate(notebooks)}
    return sorted(runs, key=lambda r: order[r.notebook])


def notebook_lane(path: str | os.PathLike) -> str:
    """The notebook's lane (``metadata.toolkit.lane``); notebooks without one share the lane ``main``."""
    import json

    return json.loads(Path(path).read_text()).get("metadata", {}).get("toolkit", {}).get("lane", "main")


def _run_lane(lane: list[tuple[int, Path]], *, out_dir, quick: bool, full: bool, total: int, begin: float,
              progress: bool, cell_bar: bool, threads: str) -> list[NotebookRun]:
    """Run one lane's notebooks in order (in a worker process when lanes run side by side)."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    results: list[NotebookRun] = []
    for i, nb in lane:
        start = time.time()
        if progress:
            print(f"[{i}/{total}] {nb.name} (QUICK={quick}, FULL={full}) started at {_clock(start - begin)} ...",
                  flush=True)
        error = None
        try:
            with _environment(OMP_NUM_THREADS=threads):  # inherited by the kernel
                out = run_notebook(nb, out_dir, quick=quick,
                                   parameters={"FULL": True} if full and _declares(nb, "FULL") else {},
                                   progress={"desc": nb.stem[:24], "leave": False} if cell_bar else False)
        except PapermillExecutionError as exc:
            out = Path(out_dir).resolve() / nb.name
            error = f"cell {exc.cell_index} (In [{exc.exec_count}]): {exc.ename}: {_first_line(exc.evalue)}"
        except (DeadKernelError, CellTimeoutError, RuntimeError, OSError) as exc:  # kernel died, hung, no start
            out = Path(out_dir).resolve() / nb.name
            error = f"{type(exc).__name__}: {_first_line(exc)}"
        seconds = time.time() - start
        if progress:
            status = "done" if error is None else f"FAILED at {error}"
            print(f"[{i}/{total}] {nb.name} {status} in {_clock(seconds)} (elapsed {_clock(time.time() - begin)})"
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
