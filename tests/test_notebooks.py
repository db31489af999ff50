"""Every workflow notebook runs headless with QUICK=True, and is stored without outputs."""
from __future__ import annotations

import json

import pytest

from toolkit.notebooks import find_notebook, list_notebooks, run_notebook

NOTEBOOKS = list_notebooks()


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_clean_with_badge_setup_and_parameters(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    assert all(not c.get("outputs") and not c.get("execution_count") for c in cells), "outputs must be stripped"
    assert "colab.research.google.com" in "".join(cells[0]["source"]), "first cell needs the Colab badge"
    assert "import toolkit" in "".join(cells[1]["source"]), "second cell is the setup cell"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "QUICK" in "".join(tagged[0]["source"])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_quick(path, tmp_path):
    out = run_notebook(path, tmp_path, quick=True, parameters={"OUTPUT_ROOT": str(tmp_path / "outputs")})
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_find_notebook_by_number_and_errors():
    assert find_notebook(NOTEBOOKS[0].name[:2]) == NOTEBOOKS[0]
    with pytest.raises(ValueError, match="available"):
        find_notebook("99_nope")
