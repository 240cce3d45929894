# edgecron developer targets. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
ARGS ?=
TESTS ?=

.PHONY: help venv dev lock test test-fast coverage lint fmt docs bench demo demo-fleet demo-serve crontab warm purge import checklogs status rules clean

help:
	@echo "make demo      run the jobs against the embedded demo site (no credentials)"
	@echo "make demo-fleet  two nodes sharing one throwaway PostgreSQL: each job runs once per slot"
	@echo "make venv      the production install: .venv with the pinned runtime dependencies only"
	@echo "make dev       add the pinned dev tools (pytest, ruff, mypy) to .venv"
	@echo "make test      make dev, then run every test on $(WORKERS) workers, measuring coverage (CI runs this)"
	@echo "make test-fast the tests not marked slow (no real daemons, kill matrices, big files), no coverage"
	@echo "make coverage  make test, then the coverage of each file of lib/ and scripts/"
	@echo "make lint      ruff check, ruff format --check, mypy"
	@echo "make fmt       apply ruff fixes and formatting"
	@echo "make bench     measure speed against peers and physical limits (ARGS=storage: SQLite vs PostgreSQL)"
	@echo "make lock      re-resolve pyproject.toml into the hashed lock files (needs network)"
	@echo "make warm ARGS='--dry-run'   run scripts/warm_cache.py with .env"

# Installs come from the lock files `make lock` writes from pyproject.toml, every file checked against
# its hash: requirements-build.lock (pip, setuptools), requirements.lock (what the VPS runs),
# requirements-dev.lock (that plus the dev tools, the same production pins). The venv is rebuilt from
# scratch when pyproject.toml or a lock file changes, so it holds exactly the pinned set.
LOCKS := requirements-build.lock requirements.lock
$(VENV)/.installed: pyproject.toml $(LOCKS)
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-build.lock
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.lock
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	touch $@

venv: $(VENV)/.installed

dev: $(VENV)/.dev-installed

# Resolve pyproject.toml again (newest versions within its bounds) with uv in a throwaway venv:
# universal locks (valid on any Python >= 3.11, any OS), hashes of every file of each pinned release.
UV_VERSION := 0.13.8
COMPILE = "$$tool/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock'
lock:
	@tool=$$(mktemp -d) && trap 'rm -rf "$$tool"' EXIT && \
	$(PYTHON) -m venv "$$tool" && "$$tool/bin/pip" install --quiet uv==$(UV_VERSION) && \
	$(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], "pip", sep="\n")' \
		| $(COMPILE) - -o requirements-build.lock && \
	$(COMPILE) pyproject.toml -o requirements.lock && \
	$(COMPILE) pyproject.toml --extra dev -c requirements.lock -o requirements-dev.lock

# Tests run on WORKERS processes (pytest-xdist): most wait on subprocesses and loopback servers, so
# more workers than the 2 CPUs pay. `make test` measures line coverage of lib/ and scripts/ in the
# same run, subprocesses included ([tool.coverage.*] in pyproject.toml), and fails below
# COVERAGE_FLOOR when the whole suite ran (no TESTS): the lowest figure measured (94.7-95.2% over runs
# on busy and quiet machines: retry and signal paths are reached or not by timing) rounded down.
WORKERS ?= 4
COVERAGE_FLOOR := 94
PYTEST_ARGS = -n $(WORKERS) --dist loadgroup $(if $(TESTS),-k '$(TESTS)',)
COVERAGE = $(PY) -m coverage

test: dev
	@rm -f .coverage .coverage.*
	$(COVERAGE) run -m pytest $(PYTEST_ARGS)
	@$(COVERAGE) combine -q
	@echo "line coverage of lib/ and scripts/: $$($(COVERAGE) report --format=total --precision=1)% (floor $(COVERAGE_FLOOR)%)"
	$(if $(TESTS),,@$(COVERAGE) report --format=total --fail-under=$(COVERAGE_FLOOR) >/dev/null \
		|| { echo "coverage fell below the floor of $(COVERAGE_FLOOR)%: test the new code (make coverage shows where)"; exit 2; })

test-fast: dev
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow"

coverage: test
	$(COVERAGE) report --show-missing --skip-covered

lint: dev
	$(BIN)/ruff check lib scripts demo tests bench tools
	$(BIN)/ruff format --check lib scripts demo tests bench tools
	$(BIN)/mypy

fmt: dev
	$(BIN)/ruff check --fix lib scripts demo tests bench tools
	$(BIN)/ruff format lib scripts demo tests bench tools

# Regenerate .env.example and the README config table from lib/edgecron/configtable.py (a test checks them).
docs: venv
	$(PY) tools/sync_docs.py

bench: venv
	$(PY) bench/run.py $(ARGS)

demo: venv
	$(PY) demo/run_demo.py $(ARGS)

# Two nodes (NODE_NAME, STATE_DIR, LOCK_DIR each) sharing a throwaway PostgreSQL STATE_DB; needs the server binaries.
demo-fleet: venv
	$(PY) demo/fleet.py

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
