# ModelRollout: the two commands are `make demo` and `make test`; both set up everything from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_FLAGS ?= -q -ra

.PHONY: help venv deps system-deps control-plane demo test test-loaded test-unit test-integration test-e2e lint bench mutation clean

help:
	@echo "make demo         run the demo (local control plane + Prometheus; no cluster of your own needed)"
	@echo "make test         install everything and run the whole suite (unit, integration, e2e)"
	@echo "make test-loaded  the whole suite while 2 busy-loop processes compete for the CPU all along"
	@echo "                  (MODELROLLOUT_TEST_CPU_HOGS=N on any pytest run starts N of them)"
	@echo "make test-unit    pure tests only, no external processes"
	@echo "make lint         ruff + mypy --strict"
	@echo "make bench        run the benchmarks; results in benchmarks/results/"
	@echo "make mutation     mutation testing of the pure core against tests/unit (tens of minutes, nice 19,"
	@echo "                  1 worker); results in benchmarks/results/mutation.json"

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(INSTALLED)

system-deps:
	@scripts/install-system-deps.sh

control-plane: venv
	$(PY) -m modelrollout.devcluster build

deps: venv system-deps control-plane

demo: deps
	$(PY) -m modelrollout.demo

test: deps
	$(PY) -m pytest tests $(PYTEST_FLAGS)

test-loaded: deps
	MODELROLLOUT_TEST_CPU_HOGS=2 $(PY) -m pytest tests $(PYTEST_FLAGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_FLAGS)

test-integration: deps
	$(PY) -m pytest tests/integration $(PYTEST_FLAGS)

test-e2e: deps
	$(PY) -m pytest tests/e2e $(PYTEST_FLAGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: deps
	@scripts/install-bench-tools.sh
	$(PY) -m benchmarks

mutation: venv
	$(PY) scripts/mutation.py run

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .mutation
