#!/usr/bin/env bash
# Build llama.cpp's own C++ tools (llama-bench, llama-perplexity, llama-quantize, llama-tokenize) from the tree
# vendored in the llama-cpp-python 0.3.36 sdist, for this CPU without AMX
# (benches/llamacpp_cmake_args.py says why), into benches/.llamacpp/bin.
#   bash benches/llamacpp_build.sh        # ~10 min on 2 cores; a second run reuses the build
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benches/.llamacpp
mkdir -p "$OUT"
if [ ! -d "$OUT/src" ]; then
  .venv/bin/pip download -q --no-binary :all: --no-deps llama-cpp-python==0.3.36 -d "$OUT"
  tar xzf "$OUT"/llama_cpp_python-0.3.36.tar.gz -C "$OUT"
  mv "$OUT"/llama_cpp_python-0.3.36/vendor/llama.cpp "$OUT/src"
  rm -rf "$OUT"/llama_cpp_python-0.3.36 "$OUT"/llama_cpp_python-0.3.36.tar.gz
fi
# shellcheck disable=SC2046
cmake -S "$OUT/src" -B "$OUT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF $(.venv/bin/python benches/llamacpp_cmake_args.py) > "$OUT/cmake.log"
cmake --build "$OUT/build" -j "$(nproc)" --target llama-bench llama-perplexity llama-quantize llama-tokenize
mkdir -p "$OUT/bin"
cp "$OUT"/build/bin/llama-bench "$OUT"/build/bin/llama-perplexity "$OUT"/build/bin/llama-quantize "$OUT"/build/bin/llama-tokenize "$OUT/bin/"
echo "built: $OUT/bin (llama-bench, llama-perplexity, llama-quantize, llama-tokenize)"
