# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `airflow standalone` starts its components as `airflow ...` subprocesses: find ours first.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export SLEEVE_HOME ?= $(CURDIR)/.sleeve
# Airflow runs against this checkout with its metadata DB under SLEEVE_HOME.
export AIRFLOW_HOME ?= $(SLEEVE_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1
export DIFFUSERS_VERBOSITY ?= error
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: setup demo demo-ui airflow rollback test lint bench bench-gpu simulate base-model clean

# Dependencies: torch first (resolves to the local CPU build here), then the pinned rest.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# SLEEVE_HOME: warehouse schema, store and outbox folders, the base model, Airflow metadata DB.
BASE_MODEL_FILES := $(wildcard sleeve/assets/base-model/* sleeve/assets/base-model/*/*)
$(SLEEVE_HOME)/.ready: $(BIN)/.installed $(wildcard sleeve/warehouse/migrations/*.sql) $(BASE_MODEL_FILES)
	$(BIN)/python -m sleeve.cli init
	touch $@

# Every setup checks the committed base model against its SHA256SUMS (a second, fast).
setup: $(SLEEVE_HOME)/.ready
	$(BIN)/python -m sleeve.basemodel verify

demo: setup
	$(BIN)/python -m sleeve_airflow.demo

demo-ui: setup
	$(BIN)/airflow standalone

airflow: setup
	$(BIN)/airflow $(ARGS)

rollback: setup
	$(BIN)/python -m sleeve.registry rollback

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff check --select AIR --preview dags plugins  # incl. Airflow rules still in preview

test: setup lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks

# Real SDXL size with random weights: needs a CUDA GPU (says so and exits 2 without one).
bench-gpu: $(BIN)/.installed
	$(BIN)/python -m benchmarks.gpu $(ARGS)

# Simulated users with hidden tastes drive the real DAGs for WEEKS weeks, one run per strategy.
WEEKS ?= 6
TASTE ?= simulation/tastes/default.json
simulate: setup
	$(BIN)/python -m simulation.run --weeks $(WEEKS) --taste $(TASTE) $(ARGS)

# Retrain the committed base model from scratch (77 min on one core of a busy 2-core machine), then its checksums.
base-model: $(BIN)/.installed
	$(BIN)/python -m simulation.basemodel sleeve/assets/base-model.new --threads 1 --stages $(SLEEVE_HOME)/base-model-stages
	rm -rf sleeve/assets/base-model && mv sleeve/assets/base-model.new sleeve/assets/base-model
	$(BIN)/python -m sleeve.basemodel checksums

clean:
	rm -rf $(SLEEVE_HOME)
