# One-line entry points. `make main` and `make test` work on a fresh machine:
# they create .venv, install mlcbuild with its pinned toolchain, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup main test bench bench-deps lint

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

# Benchmark-only: llama.cpp for the side-by-side (benches/decode_host.py --llamacpp).
# llama-cpp-python is an sdist: pip compiles llama.cpp (~9 min on 2 cores). Native ISA
# except AMX: its batched Q4_0 kernels segfault on this project's machine (prefill,
# n_batch > 1; decode works), so AMX is off and AVX-512/VNNI stay on where present.
LLAMACPP_CMAKE ?= -DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
bench-deps: $(STAMP)
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" $(BIN)/pip install -q llama-cpp-python==0.3.36 gguf==0.19.0

lint: $(STAMP)
	$(BIN)/pip install -q ruff && $(BIN)/ruff check mlcbuild tests benches
