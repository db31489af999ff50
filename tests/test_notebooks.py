"""Every workflow notebook runs headless with QUICK=True, and is stored without outputs."""
from __future__ import annotations

import json
import os

import pytest

from toolkit.notebooks import find_notebook, list_notebooks, notebook_lane, run_notebook, run_notebooks

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


def _tiny_notebook(path, lane, code):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("QUICK = False", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["toolkit"] = {"lane": lane}
    nbformat.write(nb, path)


def test_lanes_run_side_by_side_and_a_failure_stops_nothing(tmp_path, capfd):
    # Lane "a": 01 fails, 03 still runs after it; lane "b" (02) runs beside them, in a kernel of its own.
    # Each notebook appends its number and the OMP_NUM_THREADS its kernel saw to a shared log.
    folder, log = tmp_path / "nbs", tmp_path / "log.txt"
    folder.mkdir()
    record = f"import os; open({str(log)!r}, 'a').write('{{}} ' + os.environ['OMP_NUM_THREADS'] + '\\n')"
    _tiny_notebook(folder / "01_first.ipynb", "a", record.format("01") + "\nraise RuntimeError('boom')")
    _tiny_notebook(folder / "02_other.ipynb", "b", record.format("02"))
    _tiny_notebook(folder / "03_third.ipynb", "a", record.format("03"))
    runs = run_notebooks(tmp_path / "out", directory=folder, jobs=2)
    assert [r.notebook.name[:2] for r in runs] == ["01", "02", "03"]
    assert "RuntimeError: boom" in runs[0].error and runs[1].error is None and runs[2].error is None
    assert all(r.output.is_file() for r in runs)
    lines = sorted(log.read_text().split("\n")[:-1])
    expected_threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // 2))
    assert lines == [f"{n} {expected_threads}" for n in ("01", "02", "03")]
    printed = capfd.readouterr().out  # the lanes' worker processes print to the same stdout
    assert "[1/3] 01_first.ipynb FAILED at cell" in printed and "[3/3] 03_third.ipynb done in" in printed
    assert notebook_lane(folder / "02_other.ipynb") == "b"


def test_workflow_lanes_are_sof_then_oflow():
    lanes = [notebook_lane(p) for p in NOTEBOOKS]
    assert lanes == sorted(lanes, key=lambda lane: lane != "sof") and set(lanes) == {"sof", "oflow"}


def test_a_notebook_whose_kernel_dies_is_reported_and_the_lane_goes_on(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _tiny_notebook(folder / "01_dies.ipynb", "a", "import os; os._exit(1)")
    _tiny_notebook(folder / "02_next.ipynb", "a", "x = 1")
    runs = run_notebooks(tmp_path / "out", directory=folder, jobs=1, progress=False)
    assert runs[0].error == "DeadKernelError: Kernel died"
    assert runs[1].error is None and runs[1].output.is_file()
