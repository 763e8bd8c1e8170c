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
	$(BIN)/pip install -q -e '.[dev,postgres]'
	touch $@ $(STAMP)

# Debian packages used by tests and benchmarks: readpst (the peer in the scan benchmark), a
# PostgreSQL server (the store's PostgreSQL tests), chromium and pdftoppm (rendered reports).
DEBIAN_PACKAGES := pst-utils:readpst postgresql:/usr/lib/postgresql chromium:chromium poppler-utils:pdftoppm
system-deps:
	@missing=""; for pair in $(DEBIAN_PACKAGES); do pkg=$${pair%%:*}; probe=$${pair#*:}; \
	  if ! command -v $$probe >/dev/null 2>&1 && [ ! -e $$probe ]; then missing="$$missing $$pkg"; fi; done; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then echo "installing$$missing"; apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	    else echo "missing Debian packages:$$missing (tests that need them are skipped)"; fi; fi

demo: $(STAMP) system-deps
	$(BIN)/pstlib demo --out $(DEMO_DIR)

lint: $(DEV_STAMP)
	$(BIN)/ruff check pstlib tests benchmarks

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

# The PostgreSQL tests get a throw-away server on 127.0.0.1 (skipped where none can start).
PG_DIR := $(CURDIR)/.pytest-postgres
pytest: $(DEV_STAMP) system-deps
	@url=$$(scripts/test-postgres.sh start $(PG_DIR)); \
	  PSTLIB_TEST_POSTGRES_URL=$$url $(BIN)/pytest -q; rc=$$?; \
	  scripts/test-postgres.sh stop $(PG_DIR); rm -rf $(PG_DIR); exit $$rc

test: lint typecheck pytest

bench: $(DEV_STAMP) system-deps
	$(BIN)/python benchmarks/scan.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(PG_DIR) .pytest_cache .mypy_cache .ruff_cache
