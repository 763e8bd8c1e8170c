# The two commands that matter: `make demo` and `make test`. Both work on a fresh machine with only
# Python 3.11+ and apt (the Debian packages the tests need are installed here, not by hand).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DEMO_DIR ?= demo

.PHONY: demo test lint typecheck pytest bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(STAMP)

# Debian packages used by tests and benchmarks (readpst is the peer in the scan benchmark).
system-deps:
	@command -v readpst >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pst-utils >/dev/null; \
	  else echo "readpst missing: apt-get install pst-utils (tests that need it are skipped)"; fi; }

demo: $(STAMP)
	$(BIN)/pstlib demo --out $(DEMO_DIR)

lint: $(DEV_STAMP)
	$(BIN)/ruff check pstlib tests benchmarks

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

pytest: $(DEV_STAMP) system-deps
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(DEV_STAMP) system-deps
	$(BIN)/python benchmarks/scan.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
