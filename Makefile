# Two commands on a fresh clone: `make run` (the whole pipeline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := $(abspath ../shared/data)

# Datasets: ../shared/data when it exists, else data/raw in the repo.
export RECPIPE_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA),$(CURDIR)/data/raw)
export RECPIPE_DATASET ?= ml-100k
# Dagster: SQLite run/event storage in a project-local home; RECPIPE_INSTANCE=postgres stores them in
# PostgreSQL instead (the DAGSTER_PG_* variables; orchestration/dagster-postgres.yaml, docs/pipeline.md).
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export RECPIPE_INSTANCE ?= sqlite
# DVC: a local-directory remote outside the git tree (any DVC remote URL works).
export RECPIPE_DVC_REMOTE ?= $(HOME)/.cache/recpipe/dvc-remote

.PHONY: install instance run test format ui replay serve bench clean release

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# $(DAGSTER_HOME)/dagster.yaml: orchestration/dagster.yaml with the RECPIPE_INSTANCE profile's storage.
instance: install
	$(BIN)/python -m orchestration.instance

run: instance
	$(BIN)/python -m orchestration.slots
	$(BIN)/dagster job execute -m orchestration.definitions -j full_pipeline

test: install
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; status=0; fi; exit $$status

# The style `make test` enforces (tests/test_style.py), applied.
format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# `dagster dev` runs the daemon beside the webserver, so the sensors and the schedule tick;
# artifacts/ is served on :3001 so report links in asset metadata (drift reports) open.
ui: instance
	mkdir -p artifacts
	$(BIN)/python -m http.server 3001 --bind 127.0.0.1 --directory artifacts >/dev/null 2>&1 & server=$$!; \
	trap "kill $$server" EXIT INT TERM; \
	$(BIN)/dagster dev -m orchestration.definitions -h 127.0.0.1 -p 3000

# Feed MovieLens-100K into incoming/ one week every REPLAY_INTERVAL seconds (run beside `make ui`).
REPLAY_INTERVAL ?= 30
replay: install
	$(BIN)/python -m orchestration.replay --interval $(REPLAY_INTERVAL)

# The serving service on the registry `make run` wrote (champion by default); see deploy/README.md.
# SERVE_REGISTRY=artifacts/live_registry serves the live loop's promoted champion instead.
SERVE_REGISTRY ?= artifacts/registry
serve: install
	PYTHONPATH=deploy RECSERVE_REGISTRY=$(SERVE_REGISTRY) $(BIN)/python -m recserve --host 127.0.0.1 --port 8000

bench: install
	$(BIN)/python benchmarks/baselines.py

# Publish the registry and raw data the last run materialised: push to RECPIPE_RELEASE_REMOTE (any DVC
# remote URL) and commit release/registry.dvc, data.dvc and .dvc/config; see docs/serving.md.
release: instance
	$(BIN)/python -m orchestration.release

clean:
	rm -rf artifacts .dagster_home incoming
