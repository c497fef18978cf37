# ovstad: `make reproduce` (main job) and `make test` (the test suite) each set everything up first.
# Both use the active virtual environment, or create and use ./.venv when none is active.
SHELL := /bin/bash
PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
BIN := $(VENV)/bin
STAMP := $(VENV)/.ovstad-installed
export HF_HUB_OFFLINE := 1
export MPLBACKEND := agg
PROFILE ?= mini
PYTEST_ARGS ?=

.PHONY: setup reproduce test test-fast sync-check lab export clean-nbs bench outputs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,browser]'
	$(BIN)/python -m ipykernel install --sys-prefix --name ovstad --display-name 'Python (ovstad)' >/dev/null
	@touch $(STAMP)

## setup: create/update the virtual environment and register the `ovstad` Jupyter kernel inside it
setup: $(STAMP)

## reproduce: regenerate the paper's tables on the embedded mini world into reports/
reproduce: setup
	$(BIN)/ovstad reproduce --profile $(PROFILE)

## test: notebooks/library sync check, library notebooks (nbdev-test via pytest), then tests/
test: setup sync-check
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

sync-check: setup
	$(BIN)/python tools/check_sync.py

## lab: open JupyterLab on the notebooks with the project's kernel
lab: setup
	cd nbs && $(BIN)/jupyter lab

export: setup
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

## outputs: re-execute the library notebooks and keep their deterministic example outputs
outputs: setup
	$(BIN)/python tools/keep_outputs.py

bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
