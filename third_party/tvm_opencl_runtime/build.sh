#!/usr/bin/env bash
# Build TVM's OpenCL runtime (device API "opencl" and the "opencl" module loader) as an extension
# library of the TVM wheel's libtvm_runtime.so, as upstream TVM builds libtvm_runtime_opencl.so
# (cmake/modules/OpenCL.cmake), into .opencl/libtvm_runtime_opencl.so:
#   bash third_party/tvm_opencl_runtime/build.sh      # `make opencl-runtime`; ~1 min on 2 cores
# Sources: this directory (apache/tvm's src/backend/opencl/runtime and the support headers it
# includes, unchanged, see README.md) beside the wheel's own src/runtime and include/. OpenCL:
# Khronos headers from Debian's opencl-c-headers; linked to pyopencl's ICD loader and PoCL
# (PyPI wheels) so that no system OpenCL library is needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
OUT=.opencl
HERE=third_party/tvm_opencl_runtime
if [ ! -f /usr/include/CL/cl.h ]; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q opencl-c-headers >/dev/null
  else sudo apt-get install -y -q opencl-c-headers >/dev/null; fi
fi
read -r TVM FFI PYOCL <<<"$($PY -c 'import os, tvm, tvm_ffi, pyopencl as p; print(os.path.dirname(tvm.__file__), os.path.dirname(tvm_ffi.__file__), os.path.dirname(p.__file__))')"
mkdir -p "$OUT/src/src"
# the sources' relative includes (../../../runtime/...) resolve inside one tree: ours + the wheel's src/runtime
rm -rf "$OUT/src/src/runtime" "$OUT/src/src/backend" "$OUT/src/src/support" "$OUT/src/include"
cp -r "$HERE/src/backend" "$HERE/src/support" "$OUT/src/src/"
cp -r "$TVM/src/runtime" "$OUT/src/src/runtime"
cp -r "$HERE/include" "$OUT/src/include"
LOADER=$(ls "$PYOCL"/.libs/libOpenCL-*.so*)
POCL=$(ls "$PYOCL"/.libs/libpocl-*.so)
SRC="$OUT/src/src/backend/opencl/runtime"
objs=()
for f in opencl_device_api opencl_module; do
  c++ -std=c++17 -O2 -fPIC -fvisibility=hidden -DCL_TARGET_OPENCL_VERSION=300 -DNDEBUG \
    -DDMLC_USE_LOGGING_LIBRARY='<tvm/runtime/logging.h>' \
    -I"$OUT/src/include" -I"$TVM/include" -I"$FFI/include" -I"$OUT/src/src" \
    -c "$SRC/$f.cc" -o "$OUT/$f.o" &
  objs+=("$OUT/$f.o")
done
wait
c++ -shared -o "$OUT/libtvm_runtime_opencl.so" "${objs[@]}" \
  -L"$TVM/lib" -ltvm_runtime -L"$FFI/lib" -ltvm_ffi -Wl,--no-as-needed "$LOADER" "$POCL" \
  -Wl,-rpath,"$TVM/lib" -Wl,-rpath,"$FFI/lib" -Wl,-rpath,"$PYOCL/.libs"
rm -f "${objs[@]}"
echo "built: $OUT/libtvm_runtime_opencl.so"
