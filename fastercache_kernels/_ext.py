"""Loads the compiled modules (_cpu, _cuda) when they were built, and says why not when they were not.

Loading is lazy and never touches the CUDA driver: _cuda links cudart statically and the runtime initialises
only on the first launch.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from pathlib import Path
from types import ModuleType

_PKG = Path(__file__).resolve().parent


@functools.cache
def build_info() -> dict:
    """What the CMake build recorded (compilers, whether _cuda was built and why not), or {} without a build."""
    try:
        return json.loads((_PKG / "_build_info.json").read_text())
    except (OSError, ValueError):
        return {}


@functools.cache
def _load(name: str) -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module(f"fastercache_kernels.{name}"), None
    except ImportError as e:
        if not any(_PKG.glob(f"{name}.*")):
            status = build_info().get("cuda", "") if name == "_cuda" else ""
            if status.startswith("off ("):  # "off (why)": setup.py's reason, e.g. no GPU visible at build time
                return None, f"_cuda is not built: {status[5:].removesuffix(')')}"
            if status:
                return None, f"_cuda {status}"
            return None, f"{name} is not built (install the package with `pip install .` to compile it)"
        return None, f"{name} failed to import: {e}"


CPU_VARIANTS = {"baseline": "_cpu", "avx2": "_cpu_avx2"}

# os.environ.get runs four Python frames: about 19 us when cold inside a model call, and every op call read one or
# two (docs/results.md "Host time per call"); on POSIX its bytes-keyed dict, which os.environ (and
# monkeypatch.setenv) writes through, is read directly
_ENV = os.environ._data if os.name == "posix" and isinstance(getattr(os.environ, "_data", None), dict) else None


def env(name: str) -> str:
    """os.environ.get(name, "") for the settings read on every op call (FASTERCACHE_BACKEND, FASTERCACHE_CPU_ISA)."""
    if _ENV is None:
        return os.environ.get(name, "")
    v = _ENV.get(name.encode())
    return "" if v is None else os.fsdecode(v)


@functools.cache  # the CPU's capability is fixed for the process (torch reads ATEN_CPU_CAPABILITY at start-up)
def _has_avx2() -> bool:
    import torch

    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def cpu_variant() -> str:
    """Which build of the CPU module runs: FASTERCACHE_CPU_ISA=baseline|avx2 forces one, else the fastest
    built one this CPU supports."""
    want = env("FASTERCACHE_CPU_ISA").strip().lower() or "auto"
    if want == "auto":
        return "avx2" if _has_avx2() and _load("_cpu_avx2")[0] is not None else "baseline"
    if want not in CPU_VARIANTS:
        raise ValueError(f"FASTERCACHE_CPU_ISA must be auto, baseline or avx2, not {want!r}")
    if want == "avx2" and not _has_avx2():
        raise RuntimeError("FASTERCACHE_CPU_ISA=avx2 but this CPU has no AVX2")
    return want


def cpu() -> ModuleType | None:
    return _load(CPU_VARIANTS[cpu_variant()])[0]


def cuda() -> ModuleType | None:
    return _load("_cuda")[0]


def why_not(name: str) -> str | None:
    """None when the module `name` ("_cpu" or "_cuda") loads, else the reason it does not."""
    return _load(name)[1]


def cuda_targets(archs: str) -> str:
    """CMake CUDA architectures in words: "80-real;90-virtual" -> "sm_80 (+ PTX for compute_90)"."""
    sass, ptx = [], []
    for a in filter(None, (x.strip() for x in archs.split(";"))):
        num, _, kind = a.partition("-")
        if kind in ("", "real"):
            sass.append(f"sm_{num}")
        if kind in ("", "virtual"):
            ptx.append(f"compute_{num}")
    text = ", ".join(sass) or "no SASS"
    return text + (f" (+ PTX for {', '.join(ptx)})" if ptx else "")


def cuda_built_for() -> str | None:
    """The GPUs the built _cuda module carries code for, from the build record; None when unknown."""
    status = build_info().get("cuda", "")
    if status.startswith("built") and " for " in status:
        return cuda_targets(status.rsplit(" for ", 1)[1])
    return None
