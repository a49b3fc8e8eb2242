# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/scoring: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install demo test bench lint
install: $(BIN)/scoring

demo: install  ## run the whole pipeline on an embedded local broker and Redis
	$(BIN)/scoring demo

test: install  ## lint, type-check, then unit, integration and end-to-end tests
	$(BIN)/ruff check stream consumers models bench tests
	$(BIN)/mypy
	$(BIN)/pytest

bench: install  ## throughput, latency and memory next to two baselines and the broker (minutes)
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check stream consumers models bench tests
	$(BIN)/ruff format --check stream consumers models bench tests
