# One-line entry points. `make main` and `make test` work on a fresh machine:
# they create .venv, install mlcbuild with its pinned toolchain, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup main test bench lint

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: Llama 3.2 3B (q4f16_1) for this machine's CPU.
main: $(STAMP)
	$(BIN)/mlcbuild compile recipes/llama32-3b.toml --target host

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benches/compile_times.py

lint: $(STAMP)
	$(BIN)/pip install -q ruff && $(BIN)/ruff check mlcbuild tests benches
