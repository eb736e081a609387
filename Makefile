# Reproducible set-up and the project's commands. Everything installs into the project:
# a Python venv (.venv, with Node 24 from PyPI) and the pinned CDK CLI (node_modules).
# Targets are quick when nothing changed (stamp files track the inputs).

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
export PATH := $(BIN):$(abspath node_modules/.bin):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1
CDK := cdk

.PHONY: setup synth test bench clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python tools/node_shims.py $(BIN)
	touch $@

node_modules/.installed: package.json package-lock.json $(VENV)/.installed
	npm ci --no-fund --no-audit --loglevel=error
	touch $@

## The CDK app synthesized offline into cdk.out/ (no AWS account or credentials needed).
synth: setup
	$(CDK) synth --quiet

## The whole test suite (unit, schema, snapshot, cdk-nag, cfn-lint, CLI).
test: setup
	$(BIN)/pytest

## Median wall time of full `cdk synth` runs (RUNS=5 by default).
bench: setup
	$(BIN)/python bench/synth_time.py --runs $(or $(RUNS),5)

clean:
	rm -rf cdk.out .pytest_cache
