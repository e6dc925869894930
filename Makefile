# loanops: `make demo` and `make test` work from a clean clone with only python3 (3.11+) and make.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The CLI sets its own embedded defaults (Prefect's home under .loanops, telemetry off), so a
# command behaves the same run through make or straight from .venv/bin (cli/environment.py).
# Use the interpreter we were given; never download one.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: help install lint format test test-fast test-container demo bench lock clean manifests
.PHONY: test-manifests container-deps
.PHONY: stack stack-down stack-status api-docs system-deps

help: ## List the targets
	@grep -E '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# --compile-bytecode: this machine (and CI) sets PYTHONDONTWRITEBYTECODE=1, so without it every
# Python process compiles the ~2,000 modules it imports again: `loanops models list` took 7.8 s,
# and 3.6 s with the venv compiled; the tests start hundreds of such processes. Compiling once
# adds about 40 s to a fresh install.
$(STAMP): pyproject.toml uv.lock Makefile
	@echo "installing the locked dependencies into $(VENV) (about 1.8 GB with the test tools)…"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install -qq --disable-pip-version-check "uv==$(UV_VERSION)"
	@$(BIN)/uv sync --frozen --quiet --compile-bytecode
	@touch $@

install: $(STAMP) ## Install the locked dependencies into .venv

lint: install ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Two processes, each taking whole modules (their module fixtures start servers once): 11 min
# against 17 serially on 2 cores, measured on a clean clone.
# The project's own modules are compiled first, as the venv is (PYTHONDONTWRITEBYTECODE): each
# `loanops`, API, worker and kernel process the tests start would otherwise compile the modules
# it imports again: measured 0.2 s of CPU for `loanops models show`, 0.3-0.9 s for a process that
# imports the flows and the API; compiling them all takes 0.3 s. Python checks each file's
# timestamp, so an edited module never runs from a stale .pyc.
test: install system-deps lint ## Install, lint, and run the whole test suite against real services
	$(BIN)/python -m compileall -q loanops cli flows serving
	$(BIN)/pytest -n 2 --dist loadfile

# Debian packages the tests drive: chromium for the UI check, docker-compose to validate the
# compose file (no Docker engine is needed for that). Browsers are never downloaded.
system-deps:
	@command -v chromium >/dev/null || { echo "installing chromium (Debian package) for the UI check"; \
		apt-get install -y -qq chromium >/dev/null; }
	@command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || \
		{ echo "installing docker-compose (Debian package) to validate docker-compose.yml"; \
		apt-get install -y -qq docker-compose >/dev/null || true; }

# Builds the image on a base made from Debian's packages (no registry is reachable) and runs the
# API, a worker and retrain in containers as the manifests run them. Needs a Docker engine: one is
# started (and stopped after) when dockerd is installed and this runs as root.
test-container: install container-deps ## Build the image and run it as the manifests do (needs Docker)
	$(BIN)/pytest tests/container -m container

# The base image is made from Debian's packages by debootstrap; the Docker engine itself is not
# installed here, so a machine without one fails the tier saying so.
container-deps:
	@command -v debootstrap >/dev/null || { echo "installing debootstrap (Debian package) to make the base image"; \
		apt-get install -y -qq debootstrap >/dev/null || echo "could not install debootstrap: apt-get install debootstrap"; }

test-fast: install ## Only the tiers that need no services
	$(BIN)/pytest -m "not integration"

demo: install ## Tune, train, register and promote a model on embedded defaults
	@$(BIN)/loanops demo

stack: install ## MLflow UI, Prefect UI, the API and a worker in the background; prints the URLs
	$(BIN)/loanops stack up $(STACK_ARGS)

stack-down: ## Stop everything `make stack` started, then its supervisord, and check that nothing is left
	@if [ -x $(BIN)/loanops ]; then $(BIN)/loanops stack down; else echo "no $(VENV): nothing to stop"; fi

stack-status: ## What `make stack` runs, and whether each part answers
	$(BIN)/loanops stack status

api-docs: install ## Rewrite docs/api.md from the API's OpenAPI schema
	$(BIN)/python tools/api_docs.py

bench: install ## Benchmarks; each prints its figure against a baseline from the same run
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package) for bench/api.py"; \
		apt-get install -y -qq wrk >/dev/null || { echo "bench/api.py needs wrk: apt-get install wrk"; exit 2; }; }
	@# Every benchmark runs; the target fails at the end if any of them missed a target.
	@failed=""; \
	for bench in cli_startup fast_path batch decision_log api synthetic_auc tuning monitor; do \
		echo "== bench/$$bench.py"; \
		args=""; if [ $$bench = api ]; then args="--challenger"; fi; \
		if [ $$bench = synthetic_auc ]; then $(BIN)/python bench/$$bench.py; \
		else OMP_NUM_THREADS=1 $(BIN)/python bench/$$bench.py $$args; fi || failed="$$failed $$bench"; \
	done; \
	if [ -n "$$failed" ]; then echo "benchmarks that failed:$$failed"; exit 1; fi

lock: ## Re-resolve uv.lock after editing pyproject.toml
	$(BIN)/uv lock

clean: ## Remove the venv and all embedded state
	rm -rf $(VENV) .loanops .pytest_cache .mypy_cache .ruff_cache

manifests: install ## Re-render manifests/rendered/ after changing manifests/ (review the diff, commit)
	tools/render-manifests.sh

test-manifests: install ## The Kubernetes manifests and the container image, offline
	$(BIN)/pytest tests/manifests
