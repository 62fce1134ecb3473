# Entry points: `make demo` (the main job), `make test` (the whole suite), `make docs` (completions + man pages).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit docs bench clean proto
setup:
	@./scripts/setup.sh

demo: setup
	@$(VENV)/bin/ciliumctl demo

test: setup
	@$(PY) -m pytest tests

test-unit: setup
	@$(PY) -m pytest tests/unit

docs: setup
	@$(PY) -m ciliumctl.cli.docgen completions man

proto: setup
	@$(PY) proto/generate.py

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
