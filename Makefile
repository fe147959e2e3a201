# provisioner: `make run` to try it, `make test` before every commit.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
STAMP  := $(VENV)/.installed

export PROVISIONER_WORKFLOWS_DIR ?= $(CURDIR)/examples/workflows

.PHONY: run test lint format migrate bench clean help

help:
	@echo "make run    - install into $(VENV), migrate, serve on http://$(HOST):$(PORT)/"
	@echo "make test   - install test tools, run ruff and the whole pytest suite"
	@echo "make bench  - performance benchmarks (not part of make test)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

run: $(STAMP)
	$(BIN)/provisioner db upgrade
	$(BIN)/provisioner serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
