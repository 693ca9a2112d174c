# Two commands on a fresh clone: `make run` (the whole pipeline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := $(abspath ../shared/data)

# Datasets: ../shared/data when it exists, else data/raw in the repo.
export RECPIPE_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA),$(CURDIR)/data/raw)
export RECPIPE_DATASET ?= ml-100k
# Dagster: SQLite run/event storage in a project-local home.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# DVC: a local-directory remote outside the git tree (any DVC remote URL works).
export RECPIPE_DVC_REMOTE ?= $(HOME)/.cache/recpipe/dvc-remote

.PHONY: install run test ui serve bench clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: orchestration/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp orchestration/dagster.yaml $@

run: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster job execute -m orchestration.definitions -j full_pipeline

test: install
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; status=0; fi; exit $$status

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

# The serving service on the registry `make run` wrote (champion by default); see deploy/README.md.
serve: install
	PYTHONPATH=deploy RECSERVE_REGISTRY=artifacts/registry $(BIN)/uvicorn --factory recserve.app:create_app --host 127.0.0.1 --port 8000

bench: install
	$(BIN)/python benchmarks/baselines.py

clean:
	rm -rf artifacts .dagster_home
