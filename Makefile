# The Makefile only calls the `sebench` CLI (and pip/pytest); all logic lives in the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= quick
TABLE  ?= experiments/cifar10_se_vs_baseline.yaml

.PHONY: setup test test-fast models clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[wandb,slurm,notebook,dev]'
	touch $@
	@echo "environment ready: $(VENV) (activate with: source $(BIN)/activate)"

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration"

models: setup
	$(BIN)/sebench models

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
