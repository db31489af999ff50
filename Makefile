# Every target sets itself up on a fresh machine: a local virtual environment with torch pinned
# to the CPU wheel 2.13.0 (other versions pull gigabytes of CUDA packages).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup test demo bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,mesh]"
	$(PY) -m pip install -q triton || echo "triton not installable here: kernel tests will skip"
	touch $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m toolkit notebooks --out outputs/notebooks

bench: $(STAMP)
	for f in benchmarks/bm_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check toolkit tests benchmarks

clean:
	rm -rf $(VENV) build outputs .pytest_cache
