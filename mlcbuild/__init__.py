"""mlcbuild: a compiler-centric build system for on-device LLMs, on Apache TVM.

The pipeline, one module per step:
recipe -> model -> quantize -> compile -> cache -> run / bench / package.
"""

__version__ = "0.1.0"
