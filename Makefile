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
# Airflow on a small machine (`make demo-ui` on 2 cores): the LocalExecutor forks `parallelism`
# workers at start (default 32), the API server 4 and the DAG processor 2; SQLite writers wait
# for the lock instead of failing "database is locked". Override any of them in the environment.
export AIRFLOW__CORE__PARALLELISM ?= 4
export AIRFLOW__API__WORKERS ?= 1
export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES ?= 1
ifeq ($(origin AIRFLOW__DATABASE__SQL_ALCHEMY_CONN),undefined)
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS ?= sleeve_airflow.local_airflow.SQLITE_CONNECT_ARGS
endif
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1
export DIFFUSERS_VERBOSITY ?= error
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: setup demo demo-ui serve airflow rollback test test-cluster lint bench bench-table bench-gpu clean

# Dependencies: torch first (resolves to the local CPU build here), then the pinned rest.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# SLEEVE_HOME: warehouse schema, store and outbox folders, tiny model, Airflow metadata DB.
$(SLEEVE_HOME)/.ready: $(BIN)/.installed $(wildcard sleeve/warehouse/migrations/*.sql) sleeve/tinymodel.py
	$(BIN)/python -m sleeve.cli init
	touch $@

setup: $(SLEEVE_HOME)/.ready

demo: setup
	$(BIN)/python -m sleeve_airflow.demo

demo-ui: setup
	$(BIN)/airflow standalone

# The covers web service on http://127.0.0.1:8000 (SLEEVE_SERVICE_HOST / SLEEVE_SERVICE_PORT).
serve: setup
	$(BIN)/python -m service

airflow: setup
	$(BIN)/airflow $(ARGS)

rollback: setup
	$(BIN)/python -m sleeve.registry rollback

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff check --select AIR --preview dags plugins  # incl. Airflow rules still in preview

# The BigQuery emulator tests build its own environment .venv-bqemu on first use (tests/bqemu.py);
# when it cannot be built they skip and say why.
test: setup lint
	$(BIN)/python -m pytest -q

# The CeleryExecutor stack (Celery, Redis and PostgreSQL providers) with the images' own install
# script, then the local cluster test (cluster/run.py): PostgreSQL + Redis + Airflow on loopback.
$(BIN)/.cluster-installed: $(BIN)/.installed docker/install.sh docker/requirements/airflow-celery.txt
	docker/install.sh $(BIN)/pip celery
	touch $@

test-cluster: setup $(BIN)/.cluster-installed
	$(BIN)/python -m cluster

# Every CPU part, >= 3 rounds each: $(SLEEVE_HOME)/bench.json (ARGS="--only generate,train" for some).
bench: setup
	$(BIN)/python -m benchmarks $(ARGS)

# The README's benchmark table from $(SLEEVE_HOME)/bench.json.
bench-table: $(BIN)/.installed
	$(BIN)/python -m benchmarks.table

# Real SDXL size with random weights, within 8 minutes: needs a CUDA GPU (says so and exits 2
# without one); writes $(SLEEVE_HOME)/bench-gpu.json.
bench-gpu: $(BIN)/.installed
	$(BIN)/python -m benchmarks.gpu $(ARGS)

clean:
	rm -rf $(SLEEVE_HOME)
