# The Makefile only calls the `sebench` CLI (and pip/pytest); all logic lives in the package.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= quick
TABLE  ?= cifar10_se_vs_baseline
# Parallel runs. On this project's 2-core CPUs, 2 single-thread runs beat one 2-thread run; on a GPU
# machine use the GPU count (each run gets one GPU).
JOBS   ?= 2
RESULTS ?= results
RUN_ARGS ?=

.PHONY: setup test test-fast models reproduce-table reproduce-all claims notebook clean

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

# One table: run what is missing (resuming what was interrupted), re-measure its configurations' speeds side
# by side (sebench speed), consolidate, report. Extra options for
# `sebench run` (e.g. RUN_ARGS="--data-path ~/data/cifar10") go in RUN_ARGS.
reproduce-table: setup
	$(BIN)/sebench run $(TABLE) --profile $(PROFILE) --jobs $(JOBS) --results $(RESULTS) $(RUN_ARGS)
	$(BIN)/sebench speed $(TABLE) --profile $(PROFILE) --results $(RESULTS)
	$(BIN)/sebench collect --profile $(PROFILE) --results $(RESULTS)
	$(BIN)/sebench report $(TABLE) --profile $(PROFILE) --results $(RESULTS)

# Every spec; a spec whose data is not available here fails and the others go on (listed at the end). Each
# `sebench run` shows its sweep live; the line before it says which spec of how many it is.
reproduce-all: setup
	@specs="$$($(BIN)/sebench specs)"; n=$$(echo $$specs | wc -w); i=0; failed=""; for spec in $$specs; do \
	  i=$$((i + 1)); echo "== spec $$i/$$n: $$spec"; \
	  $(BIN)/sebench run $$spec --profile $(PROFILE) --jobs $(JOBS) --results $(RESULTS) $(RUN_ARGS) \
	    || failed="$$failed $$spec"; done; \
	$(BIN)/sebench speed all --profile $(PROFILE) --results $(RESULTS); \
	$(BIN)/sebench collect --profile $(PROFILE) --results $(RESULTS); \
	$(BIN)/sebench report all --profile $(PROFILE) --results $(RESULTS); \
	if [ -n "$$failed" ]; then echo "specs with failed runs:$$failed"; exit 1; fi

# The claims ledger from the committed runs (results/<profile>/runs.csv and the committed analyses):
# results/CLAIMS.md, results/claims.csv, results/claims.png. Trains nothing.
claims: setup
	$(BIN)/sebench claims --results $(RESULTS)

# Execute the excitation-distribution notebook in place (nbclient's `jupyter execute`). It analyses the
# run folder SEBENCH_ANALYSIS_RUN when set, else the best finished SE run of SEBENCH_ANALYSIS_DATASET
# (default CIFAR-10) in the first profile group of SEBENCH_ANALYSIS_PROFILES (default
# "full40,full40_bf16;quick") that has one, preferring analysable runs.
notebook: setup
	$(BIN)/jupyter execute --inplace --timeout=3600 notebooks/excitation_distributions.ipynb

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
