# CivicGrid — `make run` serves the demo, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install run test test-fast lint bench system-deps clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/civicgrid db upgrade
	$(BIN)/civicgrid demo load --if-empty
	@echo "Serving on http://$${CIVICGRID_HOST:-127.0.0.1}:$${CIVICGRID_PORT:-8000} (Ctrl-C stops)"
	$(BIN)/civicgrid serve

# Browser tests need Debian's chromium and a CJK font; installed here when we are root.
system-deps:
	@bash scripts/system-deps.sh

test: install system-deps
	$(BIN)/pytest -n 2 --dist loadfile

test-fast: install
	$(BIN)/pytest -n 2 --dist loadfile -m "not e2e"

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/point_to_grid.py
	$(BIN)/python bench/demo_load.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
