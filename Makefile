# qhybrid — every target installs what it needs first (`setup`), so a fresh clone needs only `make demo` / `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-quick test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/qhybrid demo

demo-quick: $(STAMP)
	$(VENV)/bin/qhybrid demo --quick

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# PennyLane is a comparison in the benchmark only, never a dependency of qhybrid.
bench: $(STAMP)
	$(PY) -m pip install --quiet pennylane==0.45.1 || echo "PennyLane not installed: its column will be skipped"
	$(PY) benchmarks/run.py --out BENCHMARKS.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
