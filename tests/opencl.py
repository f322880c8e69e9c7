"""Run a GPU-scheduled TIR kernel as the OpenCL C that TVM generates for it, on PoCL (a CPU
OpenCL driver installed from PyPI as ``pocl-binary-distribution``), through ``pyopencl``.

TVM 0.27's wheel has the OpenCL code generator but no OpenCL runtime, so its own launcher
cannot be used. This does what that launcher does: the host side of the lowered module gives
the kernel's name, argument list (buffers, sizes, offsets, scalars and the host-computed
common subexpressions) and grid; the device side gives the OpenCL C source.
"""

from __future__ import annotations

import functools

import numpy as np
import tvm
from tvm import tirx
from tvm.tirx.build import codegen_build, split_host_device_mods

_TARGET = {"kind": "opencl"}


def _context():
    import pyopencl as cl

    for platform in cl.get_platforms():
        if "Portable Computing Language" in platform.name:
            return cl.Context(platform.get_devices())
    raise RuntimeError("PoCL is not installed (pip install pocl-binary-distribution)")


@functools.lru_cache(maxsize=None)
def pocl_problem() -> str | None:
    """Why PoCL cannot run kernels here (a skip reason), or ``None`` when it can.

    Beyond pyopencl, an ICD loader and the PoCL platform, a one-line kernel is compiled: PoCL
    3.0's LLVM 14 does not know CPUs newer than itself (an AMD Zen 5 is "generic" to it, and its
    clang rejects ``-target-cpu generic``: every build fails), which no environment variable of
    that release overrides.
    """
    try:
        ctx = _context()
    except Exception as e:  # no pyopencl, no ICD loader, no PoCL
        return f"no PoCL here ({e}; its PyPI wheels are for x86-64 Linux)"
    import pyopencl as cl

    try:
        cl.Program(ctx, "__kernel void probe(__global float *a) { a[0] = 1.0f; }").build()
    except cl.Error as e:
        log = " ".join(str(e).split())
        cause = log[log.find("error:") :][:120] if "error:" in log else log[-120:]
        return f"PoCL is installed but cannot compile a kernel for this CPU ({cause})"
    return None


def _launches(host: tvm.IRModule):
    """``(let bindings, [call_ffi_kernel calls])`` of the host function, in program order."""
    lets, calls = [], []

    def visit(node):  # statements only: the launches are `Evaluate(call_ffi_kernel(...))`
        if node is None:
            return
        if isinstance(node, tirx.LetStmt):
            lets.append((node.var, node.value))
        if isinstance(node, tvm.ir.expr.Call) and node.op.name == "tirx.call_ffi_kernel":
            calls.append(node)
            return
        for field in ("seq", "body", "then_case", "else_case", "value"):
            child = getattr(node, field, None)
            if isinstance(child, (tirx.Stmt, tvm.ir.expr.Call)):
                visit(child)
            elif field == "seq" and child is not None:
                for c in child:
                    visit(c)

    for func in host.functions.values():
        visit(func.body)
    return lets, calls


def run_opencl(
    func: tirx.PrimFunc, arrays: dict[str, np.ndarray], scalars: dict[str, float | int]
) -> dict[str, np.ndarray]:
    """Run ``func`` (thread-bound, scheduled) on PoCL.

    Args:
        func: the PrimFunc; its buffer parameters' symbolic shapes and element offsets are
            bound from ``arrays`` (offsets 0).
        arrays: each buffer parameter's array by the buffer's name (``q``), dtype as the buffer's.
        scalars: each scalar parameter's value by name.

    Returns:
        every buffer's array after the run, by buffer name.

    Raises:
        RuntimeError: no PoCL platform; the kernel needs a value this cannot bind.
    """
    import pyopencl as cl

    values: dict[str, object] = {}
    host_arrays: dict[str, np.ndarray] = {}
    for param in func.params:  # TVM 0.27: a buffer parameter is the buffer itself
        if isinstance(param.ty, tirx.BufferType):
            buf = param
            arr = arrays.get(buf.name)
            if arr is None:
                raise RuntimeError(f"no array for buffer {buf.name}")
            assert str(arr.dtype) == str(buf.dtype), (buf.name, arr.dtype, buf.dtype)
            for dim, n in zip(buf.shape, arr.shape, strict=True):
                if isinstance(dim, tirx.Var):
                    values[dim.name] = int(n)
            if isinstance(buf.elem_offset, tirx.Var):
                values[buf.elem_offset.name] = 0
            host_arrays[buf.name] = np.ascontiguousarray(arr).copy()
        else:
            values[param.name] = scalars[param.name]

    target = tvm.target.Target(_TARGET, host={"kind": "llvm"})
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    pipeline, _, finalize_device = tvm.tirx.get_default_tir_pipeline(target)
    host, devices = split_host_device_mods(pipeline(tvm.tirx.transform.BindTarget(target)(mod)))
    (device_mod,) = devices.values()
    source = codegen_build(finalize_device()(device_mod), target).inspect_source()
    lets, calls = _launches(host)

    env = dict(values)
    for var, value in lets:  # host values (sizes, their products), in order; the packed-call
        if var.name not in env:  # unpacking (struct reads) is skipped
            try:
                env[var.name] = _evaluate(value, env)
            except RuntimeError:
                pass

    def evaluate(expr):
        return _evaluate(expr, env), str(expr.ty)

    ctx = _context()
    queue = cl.CommandQueue(ctx)
    program = cl.Program(ctx, source).build()
    device = {
        name: cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=a)
        for name, a in host_arrays.items()
        if a.size
    }
    for call in calls:
        name = call.args[0].value
        n_launch = len(call.attrs.launch_params)
        args = list(call.args[1:])
        kernel_args, launch = args[: len(args) - n_launch], args[len(args) - n_launch :]
        cl_args = []
        for a in kernel_args:
            if isinstance(a, tvm.ir.expr.Call) and a.op.name == "tirx.buffer_data":
                cl_args.append(device[a.args[0].name])
            else:
                value, dtype = evaluate(a)
                cl_args.append(np.dtype(dtype).type(value))
        dims = [int(evaluate(x)[0]) for x in launch]
        tags = list(call.attrs.launch_params)
        grid = [dims[tags.index(f"blockIdx.{c}")] if f"blockIdx.{c}" in tags else 1 for c in "xyz"]
        block = [dims[tags.index(f"threadIdx.{c}")] if f"threadIdx.{c}" in tags else 1 for c in "xyz"]
        if min(grid) == 0:
            continue
        getattr(program, name)(queue, [g * b for g, b in zip(grid, block, strict=True)], block, *cl_args)
    for name, buf in device.items():
        cl.enqueue_copy(queue, host_arrays[name], buf)
    queue.finish()
    return host_arrays


_OPS = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "FloorDiv": lambda a, b: a // b,
    "FloorMod": lambda a, b: a % b,
    "Min": min,
    "Max": max,
}


def _evaluate(expr, env: dict[str, object]):
    """The value of a host-side size expression (constants, variables named in ``env``,
    integer arithmetic, casts)."""
    if isinstance(expr, (tirx.IntImm, tirx.FloatImm)):
        return expr.value
    if isinstance(expr, tirx.Var):
        if expr.name not in env:
            raise RuntimeError(f"kernel argument needs {expr.name}, which is not bound")
        return env[expr.name]
    if isinstance(expr, tirx.Cast):
        value = _evaluate(expr.value, env)
        return float(value) if "float" in str(expr.ty) else int(value)
    op = _OPS.get(type(expr).__name__)
    if op is None:
        raise RuntimeError(f"cannot evaluate kernel argument {expr}")
    return op(_evaluate(expr.a, env), _evaluate(expr.b, env))
