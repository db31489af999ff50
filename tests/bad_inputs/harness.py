"""Harness of the bad-input corpus: case records, tiny template datasets, the runner and the verdict.

A case is data: a setup that builds its inputs in a fresh workspace (copies of tiny templates, then the
fault), the command line, the expected exit status and the text the message must contain (the file or
key it names). :func:`run_case` runs the command line (in-process through ``toolkit.cli.main``, or as a
subprocess where signals, resource limits or another user matter) and :func:`verdict` sorts the outcome
into the issue's classes: ``clear``, ``traceback``, ``silent``, ``lost`` (or ``unclear``).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@dataclass(frozen=True)
class Case:
    """One bad input (or fault) and what the toolkit must do with it.

    Attributes:
        id: readable name (the test id).
        issue: where the case comes from: "lost", "traceback", "silent", "unclear" (rows of issue 17 that
            did not hold) or "held" (kinds that already passed).
        argv: the command line after ``python -m toolkit``; ``{name}`` fields are filled from the setup.
        code: expected exit status.
        expect: texts the output must contain (after filling), e.g. the file or key the message names.
        setup: builds the inputs in the workspace; returns the ``{name}`` values of ``argv``/``expect``.
        mode: "inprocess", "subprocess", "sigint" (SIGINT once training has checkpointed), "readonly"
            (without the capability that lets root write into read-only folders) or "fsize" (a small
            file-size limit: a full disk).
        may_change: glob patterns (workspace-relative) of files the command may change or remove.
        check: extra assertion on (workspace, result), e.g. that a dataset validates afterwards.
    """

    id: str
    issue: str
    argv: Sequence[str]
    code: int
    expect: Sequence[str] = ()
    setup: Callable[[Workspace], dict[str, Any]] | None = None
    mode: str = "inprocess"
    may_change: Sequence[str] = ()
    check: Callable[[Workspace, Result], None] | None = None


@dataclass
class Result:
    code: int | None
    out: str
    err: str
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    escaped: str | None = None
    """An exception that escaped ``main`` (in-process), as text."""

    @property
    def output(self) -> str:
        return self.out + self.err


@dataclass(frozen=True)
class Templates:
    """Tiny datasets and runs built once per session and copied into each workspace."""

    sof: Path
    """A SOF dataset: 2 synthetic portraits, 3 views of 16 px."""
    sof_run: Path
    """A finished 2-step SOF run on ``sof`` (quick config, 16 px)."""
    oflow: Path
    """A moving-sphere OFlow dataset: sequences s0, s1 of 17 frames (256 points, 128 surface points)."""


class Workspace:
    """A case's folder, with helpers that copy the templates in."""

    def __init__(self, root: Path, templates: Templates, monkeypatch):
        self.root, self.templates, self.monkeypatch = root, templates, monkeypatch

    def path(self, rel: str) -> Path:
        return self.root / rel

    def sof(self, rel: str = "sof") -> Path:
        return _copy(self.templates.sof, self.root / rel)

    def sof_run(self, rel: str = "run", data: str = "sof") -> tuple[Path, Path]:
        """A copy of the finished run and of its data, the run pointing at the copy (data_root is recorded)."""
        return _copy(self.templates.sof_run, self.root / rel), self.sof(data)

    def oflow(self, rel: str = "oflow") -> Path:
        return _copy(self.templates.oflow, self.root / rel)


def build_templates(base: Path) -> Templates:
    from toolkit.oflow._sphere import write_moving_sphere_dataset
    from toolkit.sof.train import train_from_config
    from toolkit.synthetic.heads import write_portrait_dataset

    sof = write_portrait_dataset(base / "sof", instances=2, views=3, size=16, seed=0)
    run = base / "sof_run"
    train_from_config("quick", sof_overrides(sof, run), progress=False)
    oflow = write_moving_sphere_dataset(base / "oflow", frames=17, n_points=256, n_pcl=128)
    return Templates(sof, run, oflow)


def sof_overrides(data: Path, run: Path, steps: int = 2) -> list[str]:
    """``--set`` values of a tiny, fast SOF run (the quick preset at 16 px)."""
    return [f"data_root={data}", f"out_dir={run}", f"max_steps={steps}", "image_size=16", "num_rays=64",
            "val_image_size=16", "batch_size=2", "ckpt_every=1", "log_every=1", "val_every=0", "val_max_views=1"]


def sof_train_argv(data: str, run: str, *extra: str, steps: int = 2) -> list[str]:
    argv = ["train", "sof", "--config", "quick"]
    for o in sof_overrides(Path(data), Path(run), steps):
        argv += ["--set", o]
    for o in extra:
        argv += ["--set", o]
    return argv


def oflow_train_argv(data: str, run: str, *extra: str) -> list[str]:
    argv = ["train", "oflow", "--config", "quick"]
    for o in (f"data_root={data}", f"out_dir={run}", "max_steps=1", "n_eval_points=64", "val_split=null",
              "ckpt_every=1", "log_every=1", *extra):
        argv += ["--set", o]
    return argv


# ------------------------------------------------------------------------------------------ running


def run_case(case: Case, ws: Workspace, capsys) -> Result:
    values = case.setup(ws) if case.setup else {}
    values = {"ws": str(ws.root), **{k: str(v) for k, v in (values or {}).items()}}
    argv = [a.format(**values) for a in case.argv]
    before = snapshot(ws.root)
    start = time.perf_counter()
    if case.mode == "inprocess":
        result = _run_inprocess(argv, capsys)
    else:
        result = _run_subprocess(argv, case.mode, ws)
    result.seconds = time.perf_counter() - start
    after = snapshot(ws.root)
    result.changed = [rel for rel, sig in before.items()
                      if after.get(rel) != sig and not any(Path(rel).match(p) for p in case.may_change)]
    result.expect = [e.format(**values) for e in case.expect]  # type: ignore[attr-defined]
    return result


def _run_inprocess(argv: list[str], capsys) -> Result:
    from toolkit.cli import main

    capsys.readouterr()
    escaped = None
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - the verdict reports it
        import traceback

        code, escaped = None, "".join(traceback.format_exception(exc))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err + (escaped or ""), escaped=escaped)


def _run_subprocess(argv: list[str], mode: str, ws: Workspace) -> Result:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [PYTHON, "-m", "toolkit", *argv]
    preexec = None
    if mode == "fsize":
        preexec = _limit_file_size
    elif mode == "readonly" and os.geteuid() == 0:
        preexec = _drop_dac_override
    if mode == "sigint":
        proc = subprocess.Popen(cmd, cwd=ws.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        marker = ws.root / "run" / "checkpoints" / "latest.json"
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        return Result(proc.returncode, out, err)
    proc = subprocess.run(cmd, check=False, cwd=ws.root, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=preexec)
    return Result(proc.returncode, proc.stdout, proc.stderr)


FILE_SIZE_LIMIT = 512
"""Bytes a file may grow to in "fsize" cases: checkpoints and eval JSON exceed it, small records do not."""


def _limit_file_size() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def _drop_dac_override() -> None:
    """Remove CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set: root then meets permission bits."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def can_run_readonly() -> bool:
    """Whether "readonly" cases can run here (not root, or root allowed to drop capabilities)."""
    if os.geteuid() != 0:
        return True
    try:
        return subprocess.run(["true"], preexec_fn=_drop_dac_override, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file below ``root`` (symlinks not followed): relative path -> (size, mtime_ns, sha1).

    Run-folder lock files (``.lock``, which only hold the pid of the last run) are not data and are left out.
    """
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if name == ".lock":
                continue
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            try:
                st = p.lstat()
                digest = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else "link"
            except OSError:
                digest, st = "unreadable", None
            out[rel] = (st.st_size if st else None, st.st_mtime_ns if st else None, digest)
    return out


# ------------------------------------------------------------------------------------------ verdict


VERDICTS = ("clear", "traceback", "silent", "lost", "unclear")


def verdict(case: Case, result: Result) -> tuple[str, str]:
    """(class, reason) of a case's outcome."""
    text = result.output
    if result.escaped or "Traceback (most recent call last)" in text or "internal error" in text:
        return "traceback", (result.escaped or text)[-2000:]
    if result.changed:
        return "lost", f"existing files changed: {result.changed[:5]}"
    if result.code != case.code:
        kind = "silent" if result.code == 0 else "unclear"
        return kind, f"exit status {result.code}, expected {case.code}; output: {text[-1500:]}"
    missing = [e for e in result.expect if not _contains(text, e)]  # type: ignore[attr-defined]
    if missing:
        return ("silent" if case.code == 0 else "unclear"), f"output lacks {missing}; output: {text[-1500:]}"
    if case.code != 0:  # errors on stderr; validate lists its problems on stdout
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("warning:")]
        if not lines:
            return "unclear", f"no message; output: {text[-1500:]}"
    return "clear", ""


def _contains(text: str, expected: str) -> bool:
    if expected.startswith("re:"):
        return re.search(expected[3:], text) is not None
    # printed file names show undecodable bytes as \xNN
    printable = expected.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return expected in text or printable in text


# ------------------------------------------------------------------------------------------ helpers


def _copy(src: Path, dst: Path) -> Path:
    if not dst.exists():
        shutil.copytree(src, dst, symlinks=True)
    return dst


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
