# edgecron developer targets. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
ARGS ?=
TESTS ?=

.PHONY: help venv test lint fmt docs bench demo demo-serve crontab warm purge import checklogs status rules clean

help:
	@echo "make demo      run the jobs against the embedded demo site (no credentials)"
	@echo "make test      install everything into .venv and run the tests"
	@echo "make lint      ruff check, ruff format --check, mypy"
	@echo "make fmt       apply ruff fixes and formatting"
	@echo "make bench     measure speed against peers and physical limits"
	@echo "make warm ARGS='--dry-run'   run scripts/warm_cache.py with .env"

# The venv is rebuilt whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest $(if $(TESTS),-k '$(TESTS)',)

lint: venv
	$(BIN)/ruff check lib scripts demo tests bench tools
	$(BIN)/ruff format --check lib scripts demo tests bench tools
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff check --fix lib scripts demo tests bench tools
	$(BIN)/ruff format lib scripts demo tests bench tools

# Regenerate .env.example and the README config table from lib/edgecron/config.py (a test checks them).
docs: venv
	$(PY) tools/sync_docs.py

bench: venv
	$(PY) bench/run.py $(ARGS)

demo: venv
	$(PY) demo/run_demo.py $(ARGS)

# The demo site and Cloudflare emulator kept running (writes .env.demo), to try the crontab and scheduler.
demo-serve: venv
	$(PY) demo/serve.py

crontab: venv
	$(PY) scripts/jobs.py crontab

warm: venv
	$(PY) scripts/warm_cache.py $(ARGS)

purge: venv
	$(PY) scripts/purge_cache.py $(ARGS)

import: venv
	$(PY) scripts/import_stale.py $(ARGS)

checklogs: venv
	$(PY) scripts/check_logs.py $(ARGS)

status: venv
	$(PY) scripts/jobs.py status $(ARGS)

rules: venv
	$(PY) scripts/check_cache_rules.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
