# Reproducible set-up and the project's commands. Everything installs into the project:
# a Python venv (.venv, with Node 24 from PyPI), the pinned CDK CLI and the pipeline's asset
# publisher as `cdk-assets` (node_modules, from tools/asset-publisher); the
# local stack and the UI test also need Debian's redis-server, iproute2, nftables, prometheus and chromium.
# Targets are quick when nothing changed (stamp files track the inputs).

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
export PATH := $(BIN):$(abspath node_modules/.bin):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1
export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False

CDK := cdk

.PHONY: setup system-packages demo demo-down drill chaos soak batch-local synth lint check test bench bench-drill clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-local.txt requirements-dev.txt \
		images/ray-serve/requirements.txt images/gradio/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python tools/node_shims.py $(BIN)
	touch $@

node_modules/.installed: package.json package-lock.json tools/asset-publisher/package.json $(VENV)/.installed
	npm ci --no-fund --no-audit --loglevel=error
	touch $@

## Debian packages the local stack and the browser test use (installed when root).
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v nft >/dev/null || missing="$$missing nftables"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "error: missing Debian packages:$$missing; run: sudo apt-get install$$missing" >&2; exit 1; \
		fi; \
	fi

## The whole HA topology on this machine (root on Linux); Ctrl-C stops everything.
demo: setup system-packages
	$(BIN)/python -m local up

demo-down: setup
	$(BIN)/python -m local down

## The HA drill against the running demo (or a stack of its own): kill the head under load.
drill: setup system-packages
	$(BIN)/python -m local.drill $(DRILL_ARGS)

## The chaos matrix on the running demo: head kills, graceful stops, Redis restarts, worker
## kills and a head partition, one after the other (MATRIX_ARGS="--runs head=3" to shorten).
chaos: setup system-packages
	$(BIN)/python -m local.drill.matrix $(MATRIX_ARGS)

## A seeded random soak on the running demo: FAULTS faults of every kind (SEED, FAULTS;
## SOAK_ARGS="--kinds head,redis-crash" to narrow), traffic throughout, a JSON + PNG report.
soak: setup system-packages
	$(BIN)/python -m local.drill.soak --seed $(or $(SEED),1) --faults $(or $(FAULTS),20) $(SOAK_ARGS)

## A batch benchmark on the running demo's Ray cluster: JOB=xgboost|pytorch, ARGS="--rows 2000".
batch-local: setup
	$(BIN)/python -m local batch $(or $(JOB),xgboost) $(ARGS)

## The CDK app synthesized offline into cdk.out/ (no AWS account or credentials needed).
synth: setup
	$(CDK) synth --quiet

## Lint and types: ruff over the project, mypy --strict over the CDK app, the constructs,
## the charts and the local stack (incremental: .mypy_cache makes a second run quick).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy stacks charts ray_serve_ha local app.py

## The fast check: lint, then every test that needs no Ray cluster, browser, root, CDK CLI
## or staged-asset run (selected by the markers in pytest.ini; `make test` runs those too),
## on every core.
check: lint
	$(BIN)/pytest -q -n auto -m "not ray and not browser and not local_stack and not cli and not staged"

## The whole test suite: lint, then every test.
test: setup system-packages lint
	$(BIN)/pytest

## Median wall time of full `cdk synth` runs (RUNS=5 by default).
bench: setup
	$(BIN)/python bench/synth_time.py --runs $(or $(RUNS),5)

## Medians of K local head drills and where the restarted head's time goes (RUNS=5 by default;
## BENCH_ARGS="--no-cpu-weights" to measure without a cgroup per node).
bench-drill: setup system-packages
	$(BIN)/python bench/drill.py --runs $(or $(RUNS),5) $(BENCH_ARGS)

clean:
	rm -rf cdk.out .pytest_cache drill-results test-artifacts
