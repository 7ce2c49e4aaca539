"""Ahead-of-time compilation of the Triton kernels for a GPU target, without a GPU (for the PTX checks)."""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys

TRITON_DTYPES = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}


def compile_ptx(module: str, dtype: str = "fp32", arch: int = 90, aligned: bool = True, num_warps: int = 4) -> str:
    """PTX of fastercache_kernels.triton.<module>'s kernel for sm_<arch>.

    The module's AOT dict gives the kernel, its signature (with {dtype} placeholders), constexprs and the
    arguments that carry a 16-byte divisibility hint when `aligned` (as Triton's launcher infers them for
    aligned tensors and sizes divisible by 16 at run time).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return _compile_outside_interpreter(module, arch, aligned, num_warps)[dtype]
    spec = importlib.import_module(f"fastercache_kernels.triton.{module}").AOT
    fmt = lambda v: v.format(dtype=TRITON_DTYPES[dtype]) if isinstance(v, str) else tuple(map(fmt, v))  # noqa: E731
    sig = {k: fmt(v) for k, v in spec["signature"].items()}
    names = list(sig)
    attrs = {}
    for a in spec["aligned"] if aligned else ():
        i = names.index(a)
        # a tuple argument (a list of pointers): every element carries the hint
        paths = [(i, j) for j in range(len(sig[a]))] if isinstance(sig[a], tuple) else [(i,)]
        attrs.update({p: [["tt.divisibility", 16]] for p in paths})
    kernel = spec["kernel"]
    if not hasattr(kernel, "cache_key"):  # under TRITON_INTERPRET=1 @triton.jit gave an InterpretedFunction
        from triton.runtime.jit import JITFunction

        kernel = JITFunction(kernel.fn)
    src = ASTSource(fn=kernel, signature=sig, constexprs=spec["constexprs"], attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    return compiled.asm["ptx"]


@functools.lru_cache(maxsize=None)
def _compile_outside_interpreter(module: str, arch: int, aligned: bool, num_warps: int) -> dict:
    """PTX for every dtype, compiled in a fresh interpreter without TRITON_INTERPRET. Under the interpreter,
    triton.jit turns every @jit function into an InterpretedFunction when it is defined, triton.language's own
    (tl.sum's combine function among them) included, and those cannot be compiled: kernels that reduce need a
    clean process. One process per module serves all dtypes."""
    code = (
        "import json, sys\n"
        "from fastercache_kernels.triton.aot import compile_ptx, TRITON_DTYPES\n"
        f"ptx = {{d: compile_ptx({module!r}, d, {arch}, {aligned}, {num_warps}) for d in TRITON_DTYPES}}\n"
        "sys.stdout.write(json.dumps(ptx))\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="0")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"AOT compilation of {module} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout)
