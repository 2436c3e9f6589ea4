# One command per habit. `make demo` and `make test` do all set-up on a fresh machine
# (Python 3.11 and nothing else): they create .venv, install torch 2.13.0 first (a looser pin
# pulls a multi-GB CUDA build), then the project.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
TORCH  ?= torch==2.13.0
SERVICE_PKGS := optim_core core records search workers api optforge

.PHONY: demo test test-fast lint fmt typecheck serve up worker migrate bench clean help

help:
	@echo "make demo | test | test-fast | lint | fmt | typecheck | serve | up | worker | migrate | bench"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install -q $(TORCH)
	@touch $@

$(VENV)/.service: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e ".[service]"
	@touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e ".[dev,ref]"
	@touch $@ $(VENV)/.service

demo: $(VENV)/.service  ## short comparison on the default workload, then the leaderboard
	$(BIN)/optforge demo

test: $(VENV)/.dev lint typecheck  ## lint, type check, then the whole test suite
	$(BIN)/python -m pytest -ra --durations=15

test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -ra -m "not integration and not browser"

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV)/.dev
	$(BIN)/mypy $(SERVICE_PKGS)

serve: $(VENV)/.service
	$(BIN)/optforge serve

up: $(VENV)/.service
	$(BIN)/optforge up

worker: $(VENV)/.service
	$(BIN)/optforge worker

migrate: $(VENV)/.service
	$(BIN)/optforge db upgrade

bench: $(VENV)/.dev
	$(BIN)/python bench/optimizer_step.py
	$(BIN)/python bench/trainer_overhead.py
	$(BIN)/python bench/service.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
