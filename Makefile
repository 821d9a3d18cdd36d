# Pilotlight developer tasks. Needs only python3 (3.11+) and GNU make.
#
#   make run                      start the whole service on 127.0.0.1:8000 (SQLite in ./data)
#   make test                     run the suite on SQLite, and side by side on PostgreSQL
#                                 too when TEST_DATABASE_URL is set
#   make test PYTEST_ARGS='-k x'  pass extra arguments to pytest

PYTHON      ?= python3
VENV        ?= .venv
PYTEST_ARGS ?=

VENV_PY   := $(VENV)/bin/python
VENV_CFG  := $(VENV)/pyvenv.cfg
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
.PHONY: help run test lint migrate clean

help: ## List the targets
	@echo "Pilotlight make targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-zA-Z_-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: PYTEST_ARGS (extra pytest arguments), TEST_DATABASE_URL (also test on"
	@echo "PostgreSQL), PYTHON (interpreter that creates $(VENV); default python3)."

# The virtual environment, created once.
$(VENV_CFG):
	$(PYTHON) -m venv $(VENV)

# Runtime install; redone only when pyproject.toml changes (or the venv is recreated).
$(RUN_STAMP): pyproject.toml $(VENV_CFG)
	$(VENV_PY) -m pip install -q --upgrade pip
	$(VENV_PY) -m pip install -q -e .
	@touch $@

# Development install (adds pytest, ruff, mypy); its own stamp.
$(DEV_STAMP): pyproject.toml $(VENV_CFG)
	$(VENV_PY) -m pip install -q --upgrade pip
	$(VENV_PY) -m pip install -q -e '.[dev]'
	@touch $@

run: $(RUN_STAMP) ## Run everything in one process (api, scheduler, worker) on 127.0.0.1:8000
	exec $(VENV)/bin/pilotlight serve

test: $(DEV_STAMP) ## Run the tests on SQLite, and side by side on PostgreSQL if TEST_DATABASE_URL is set
	@if [ -n "$${TEST_DATABASE_URL:-}" ]; then \
		echo "==> tests on SQLite and on PostgreSQL (TEST_DATABASE_URL), side by side"; \
		bash scripts/test_both.sh $(VENV_PY) $(PYTEST_ARGS); \
	else \
		echo "==> tests on SQLite"; \
		$(VENV_PY) -m pytest $(PYTEST_ARGS) && \
		echo "==> TEST_DATABASE_URL is not set: skipped the PostgreSQL run"; \
	fi

lint: $(DEV_STAMP) ## Lint (ruff) and type-check (mypy)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy app

migrate: $(RUN_STAMP) ## Create or upgrade the database schema (PILOTLIGHT_DATABASE_URL)
	$(VENV)/bin/pilotlight migrate

clean: ## Remove the venv, build artefacts and caches (keeps ./data)
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./data -prune -o -path ./.git -prune -o \
		-type d -name __pycache__ -prune -exec rm -rf {} +
