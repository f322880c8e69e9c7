#!/usr/bin/env bash
# An emulated aarch64 Linux CPU for benches/arm_emulated.py (and tests/test_arm_emulated.py):
# QEMU user mode and the GNU cross linker from Debian; in .arm64/root an aarch64 Python 3.11
# (Debian's arm64 packages, unpacked, not installed); in .arm64/site the aarch64 wheels of
# NumPy and TVM (the pinned versions) from PyPI. Needs root for apt (Debian 12 / bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."
ARM=.arm64
PIP=${PIP:-.venv/bin/pip}
apt-get install -y -q qemu-user-static gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu > /dev/null
dpkg --add-architecture arm64
apt-get update -q > /dev/null
mkdir -p "$ARM/debs" "$ARM/root"
(
  cd "$ARM/debs"
  for p in python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libstdc++6 libgcc-s1 \
           libexpat1 zlib1g libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6 libtinfo6 \
           libreadline8 libuuid1 libdb5.3 libgdbm6 libnsl2 libtirpc3 libcrypt1; do
    apt-get download -q "$p:arm64" > /dev/null
  done
)
for f in "$ARM"/debs/*.deb; do dpkg -x "$f" "$ARM/root"; done
TVM=$(sed -n 's/.*"\(apache-tvm==[^"]*\)".*/\1/p' pyproject.toml | head -1)
FFI=$(sed -n 's/.*"\(apache-tvm-ffi==[^"]*\)".*/\1/p' pyproject.toml | head -1)
"$PIP" install -q --target "$ARM/site" --python-version 3.11 --implementation cp --only-binary=:all: \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_24_aarch64 \
  --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
  "$TVM" "$FFI" numpy ml_dtypes typing_extensions
qemu-aarch64-static -cpu max -L "$ARM/root" "$ARM/root/usr/bin/python3.11" -c \
  "import platform, sys; sys.path.insert(0, '$ARM/site'); import tvm; print('aarch64 Python', platform.python_version(), 'TVM', tvm.__version__)"
