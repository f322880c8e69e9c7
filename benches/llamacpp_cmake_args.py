"""CMake flags that build llama.cpp (llama-cpp-python) for this CPU without AMX.

``GGML_NATIVE=ON`` compiles with ``-march=native``: on this project's machine (Sapphire
Rapids-class, AMX) llama.cpp's AMX kernels then segfault in batched Q4_0 matmuls (prefill
with ``n_batch > 1``; decode works; llama-cpp-python 0.3.36). So: native off, and every ISA
extension this CPU reports (``/proc/cpuinfo``) on, except AMX. Printed for ``benches/llamacpp_build.sh``
(``make llamacpp``).
"""

from pathlib import Path

FLAGS = {  # ggml CMake option -> /proc/cpuinfo flag
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_BMI2": "bmi2",
    "GGML_AVX_VNNI": "avx_vnni",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
}


def main() -> None:
    info = Path("/proc/cpuinfo")
    if not info.exists():  # not Linux x86: llama.cpp's own native build
        print("-DGGML_NATIVE=ON")
        return
    from mlcbuild.spec.target import linux_cpu_flags

    have = linux_cpu_flags()
    args = ["-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    args += [f"-D{opt}={'ON' if flag in have else 'OFF'}" for opt, flag in FLAGS.items()]
    print(" ".join(args))


if __name__ == "__main__":
    main()
