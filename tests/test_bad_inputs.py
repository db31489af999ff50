"""Issue 17's bad-input corpus: for each case, the exit status, a message naming the file or key, no
traceback, and no existing file changed (see tests/bad_inputs/cases.py for the cases)."""
from __future__ import annotations

import os
from collections import Counter

import pytest

from tests.bad_inputs.cases import CASES
from tests.bad_inputs.harness import (
    VERDICTS,
    Workspace,
    build_templates,
    can_run_readonly,
    quiet,
    run_case,
    verdict,
)

RESULTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    with quiet():
        return build_templates(tmp_path_factory.mktemp("templates"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, templates, tmp_path, monkeypatch, capsys):
    if case.mode == "readonly" and not can_run_readonly():
        pytest.skip("root here cannot drop CAP_DAC_OVERRIDE, so read-only folders do not hold")
    root = tmp_path
    ws = Workspace(root, templates, monkeypatch)
    try:
        result = run_case(case, ws, capsys)
        kind, reason = verdict(case, result)
        if kind == "clear" and case.check is not None:
            case.check(ws, result)
        RESULTS[case.id] = kind
        assert kind == "clear", f"{case.id} ({case.issue}): {kind}: {reason}"
    finally:
        if getattr(ws, "held_lock", None) is not None:
            ws.held_lock.close()
        for p in [root, *root.rglob("*")]:  # read-only folders of a case: let pytest remove them
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)


def test_counts():
    """The closing note's counts: cases / clear / traceback / silent / lost (run after the cases)."""
    if len(RESULTS) < len(CASES):
        pytest.skip(f"only {len(RESULTS)} of {len(CASES)} cases ran")
    counts = Counter(RESULTS.values())
    by_issue = Counter(c.issue for c in CASES)
    print(f"\nbad-input corpus: {len(CASES)} cases ({dict(by_issue)}): "
          + ", ".join(f"{k} {counts.get(k, 0)}" for k in VERDICTS))
    assert counts.get("traceback", 0) == counts.get("silent", 0) == counts.get("lost", 0) == 0
    assert counts["clear"] == len(CASES)
