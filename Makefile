# Entry points: `make demo` (the main job), `make test` (lint, then the whole suite), `make lint` (ruff + mypy, a few
# seconds; settings in pyproject.toml), `make docs` (completions + man pages),
# `make image` (the agent, test and pause images), `make cluster` / `make cluster-down` (a real Kubernetes cluster
# on this machine with the agent installed).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo lint test test-unit docs bench clean proto image cluster cluster-down
setup:
	@./scripts/setup.sh

demo: setup
	@$(VENV)/bin/ciliumctl demo

lint: setup
	@$(VENV)/bin/ruff check ciliumctl tests benchmarks scripts proto
	@$(VENV)/bin/mypy

test: setup lint
	@$(PY) -m pytest tests

test-unit: setup
	@$(PY) -m pytest tests/unit

image: setup
	@./scripts/image.sh

cluster: setup
	@./scripts/cluster.sh up

cluster-down:
	@./scripts/cluster.sh down

docs: setup
	@$(PY) -m ciliumctl.cli.write_docs completions man

proto: setup
	@$(PY) proto/generate.py

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
