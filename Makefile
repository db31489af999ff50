# Every target sets itself up on a fresh machine: a local virtual environment with torch pinned
# to the CPU wheel 2.13.0 (other versions pull gigabytes of CUDA packages).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.tests-stamp
PYTEST_ARGS ?=
# `make lab`: the folder JupyterLab opens and its server options (the browser test passes its own).
LAB_DIR ?= notebooks
LAB_ARGS ?= --ip=127.0.0.1
# Jupyter refuses to run as root (containers, CI machines) unless told to.
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup gpu-setup gpu-check test demo lab bench lint clean

setup: $(STAMP)

# Triton (about 1 GB) only where it is used: on a machine with an NVIDIA GPU (nvidia-smi), by `make gpu-setup`,
# and for `make test`, whose kernel tests run the kernels on the CPU through its interpreter (TRITON_INTERPRET=1).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,mesh,lab,browser]"
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install -q -e ".[gpu]" || echo "triton not installable here: kernels fall back to torch"; fi
	touch $(STAMP)

gpu-setup: $(STAMP)
	$(PY) -m pip install -q -e ".[gpu]"

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[gpu]" || echo "triton not installable here: kernel tests will skip"
	touch $(TEST_STAMP)

test: $(TEST_STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# `make demo FULL=1`: the training notebooks retrain their full schedules instead of starting from the
# shipped checkpoints (hours on a CPU).
demo: $(STAMP)
	$(PY) -m toolkit notebooks --out outputs/notebooks $(if $(FULL),--full)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(LAB_ROOT) $(LAB_ARGS) $(LAB_DIR)

# On a CUDA machine: the CUDA tests and every GPU benchmark row into benchmarks/gpu_check_<device>.json;
# elsewhere it says there is no GPU and exits 0.
gpu-check: $(STAMP)
	if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q -e ".[gpu]"; fi
	$(PY) benchmarks/gpu_check.py

bench: $(STAMP)
	for f in benchmarks/bm_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check toolkit tests benchmarks

clean:
	rm -rf $(VENV) build outputs .pytest_cache
