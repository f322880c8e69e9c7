#!/usr/bin/env bash
# MLC-LLM's C++ engine (cpp/ of mlc-ai/mlc-llm, json_ffi left out) and xgrammar's C++ compiled
# against apache TVM 0.27's runtime and tvm-ffi as this project's .venv has them, linked into
# OUT/libmlc_llm.so. No network: the sources are checkouts given as arguments (GitHub is not
# reachable from CI machines; this is a bench, not a test).
#
#   benches/mlc_engine/build.sh MLC_LLM_SRC XGRAMMAR_SRC TVM_SRC OUT
#
# MLC_LLM_SRC: mlc-ai/mlc-llm at 79d603f; XGRAMMAR_SRC: mlc-ai/xgrammar at d4f57c4 (MLC's
# submodule pin); TVM_SRC: apache/tvm (its include/ and src/support, src/runtime headers, which
# the wheel does not ship; the wheel's own include/tvm/runtime is laid over them so the headers
# match the runtime library). tokenizers-cpp is replaced by stand_in_tokenizers_cpp.h (its Rust
# crates cannot be fetched here): token ids in, token ids out.
set -euo pipefail
MLC=$(realpath "$1"); XG=$(realpath "$2"); TVM=$(realpath "$3"); OUT=$(realpath -m "$4")
HERE=$(cd "$(dirname "$0")" && pwd)
SITE=$(cd "$HERE/../.." && .venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$OUT/obj" "$OUT/include/tvm" "$OUT/stub" "$OUT/mlc/3rdparty/tvm"
cp -r "$TVM/include/." "$OUT/include/"
cp -r "$SITE/tvm/include/tvm/runtime/." "$OUT/include/tvm/runtime/"
cp "$HERE/stand_in_tokenizers_cpp.h" "$OUT/stub/tokenizers_cpp.h"
# MLC's cpp/support/utils.h includes ../../3rdparty/tvm/src/support/base64.h
rm -rf "$OUT/mlc/cpp" && cp -r "$MLC/cpp" "$OUT/mlc/cpp"
cp -r "$TVM/src" "$OUT/mlc/3rdparty/tvm/"
INC="-I$OUT/include -I$SITE/tvm_ffi/include -I$XG/include -I$XG/3rdparty/picojson -I$OUT/mlc/cpp -I$OUT/stub"
{ find "$OUT/mlc/cpp" -name '*.cc' -not -path '*/json_ffi/*'; find "$XG/cpp" -name '*.cc' -not -path '*pybind*' -not -path '*nanobind*'; } |
  sort | xargs -P"$(nproc)" -I{} sh -c 'o="$0/obj/$(echo "{}" | md5sum | cut -c1-12).o"; [ -f "$o" ] || g++ -std=c++17 -O1 -fPIC $1 -c "{}" -o "$o"' "$OUT" "$INC"
g++ -shared -o "$OUT/libmlc_llm.so" "$OUT"/obj/*.o -L"$SITE/tvm/lib" -ltvm_runtime -ltvm_runtime_extra -L"$SITE/tvm_ffi/lib" -ltvm_ffi \
  -Wl,-rpath,"$SITE/tvm/lib" -Wl,-rpath,"$SITE/tvm_ffi/lib"
echo "$OUT/libmlc_llm.so"
