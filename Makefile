# qhybrid — every target installs what it needs first (`setup`), so a fresh clone needs only `make demo` / `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

RUN    ?= runs/demo
BACKENDS ?= fake_torino,fake_fez,fake_kyiv
SHOTS    ?= 1024,4096,32768
# MITIGATION="--mitigation trex" (or readout, zne, twirling; a comma list compares them): the floor is then a lower bound
MITIGATION ?=

.PHONY: setup demo demo-quick noisy-eval mitigation-sweep surrogates noise-aware test test-fast bench clean

setup: $(STAMP)

# the tested set: pyproject.toml's ranges, narrowed to the exact versions in constraints.txt
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -c constraints.txt
	@touch $(STAMP)

# --resume: finished stages are kept, so `make demo` twice does not retrain
demo: $(STAMP)
	$(VENV)/bin/qhybrid demo --out $(RUN) --resume

demo-quick: $(STAMP)
	$(VENV)/bin/qhybrid demo --quick --out runs/demo-quick --resume

# the demo's hybrid model on fake backends at several shot counts, next to the shot-noise floor
# (runs the demo first if it is missing; --resume: an interrupted evaluation continues)
noisy-eval: $(STAMP)
	@test -f $(RUN)/ldm-hybrid/config.json || $(MAKE) demo
	$(VENV)/bin/qhybrid noisy-eval --model $(RUN)/ldm-hybrid --backends $(BACKENDS) --shots $(SHOTS) $(MITIGATION) --resume

# every mitigation (none, readout, TREX, ZNE, twirling) per backend at 4,096 shots: error, cost, a recommendation
mitigation-sweep: $(STAMP)
	@test -f $(RUN)/ldm-hybrid/config.json || $(MAKE) demo
	$(VENV)/bin/qhybrid noisy-eval --model $(RUN)/ldm-hybrid --backends $(BACKENDS) --mitigation-sweep --resume

# the noise surrogate of each backend on the demo's hybrid: how well it reproduces Aer on held-out inputs
surrogates: $(STAMP)
	@test -f $(RUN)/ldm-hybrid/config.json || $(MAKE) demo
	$(VENV)/bin/qhybrid noise surrogate --model $(RUN)/ldm-hybrid --backends $(BACKENDS) --out $(RUN)/surrogates

# plain against noise-aware (fake_torino) training, 3 seeds each on the demo's VAE, evaluated on
# fake_torino and the unseen fake_fez (finished models and evaluations are kept)
noise-aware: $(STAMP)
	@test -f $(RUN)/vae/config.json || $(MAKE) demo
	$(VENV)/bin/qhybrid noise-aware --vae $(RUN)/vae --backend fake_torino --unseen fake_fez --out runs/noise-aware

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# PennyLane is a comparison in the benchmark only, never a dependency of qhybrid.
bench: $(STAMP)
	$(PY) -m pip install --quiet pennylane==0.45.1 || echo "PennyLane not installed: its column will be skipped"
	$(PY) benchmarks/run.py --out BENCHMARKS.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
