"""Backend choice: automatic per device, or forced by FASTERCACHE_BACKEND or `use_backend(name)`.

Automatic: a CUDA tensor goes to the _cuda module when built, else Triton, else the reference; a CPU tensor goes
to _cpu when built, else the reference. Triton runs CPU tensors only under its interpreter (TRITON_INTERPRET=1,
set before fastercache_kernels' Triton kernels are first imported): that is how the tests check the GPU kernels.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os

import torch

from . import _ext

BACKENDS = ("reference", "cpu", "triton", "cuda")

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("fastercache_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """A forced backend cannot run on the given device; the message says why."""


def _check_name(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source}: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def forced_backend() -> str | None:
    """The backend forced by `use_backend` (innermost first) or FASTERCACHE_BACKEND, else None."""
    name = _forced.get()
    if name is not None:
        return name
    env_name = _ext.env("FASTERCACHE_BACKEND").strip().lower()
    return _check_name(env_name, "FASTERCACHE_BACKEND") if env_name and env_name != "auto" else None


@contextlib.contextmanager
def use_backend(name: str):
    """Force every fastercache op called inside the block onto one backend: "reference", "cpu", "triton", "cuda",
    or one build of the CPU module, "cpu-baseline" or "cpu-avx2" (FASTERCACHE_CPU_ISA for the block).

    >>> with fk.use_backend("reference"):
    ...     y = fk.ops.forecast(history, weights)

    The backend is a context variable (it holds in the thread that entered the block, not in threads started
    inside it); the CPU build choice is process-wide while the block runs.
    """
    base, _, isa = name.partition("-") if isinstance(name, str) else (name, "", "")
    if isa and (base != "cpu" or isa not in ("baseline", "avx2")):
        raise ValueError(f"use_backend: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}, "
                         "cpu-baseline, cpu-avx2")
    token = _forced.set(_check_name(base, "use_backend"))
    old = os.environ.get("FASTERCACHE_CPU_ISA")
    if isa:
        os.environ["FASTERCACHE_CPU_ISA"] = isa
    try:
        yield
    finally:
        _forced.reset(token)
        if isa:
            if old is None:
                os.environ.pop("FASTERCACHE_CPU_ISA", None)
            else:
                os.environ["FASTERCACHE_CPU_ISA"] = old


backend_context = use_backend  # the name the tests and benchmarks use for their backend ids


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def why_unavailable(name: str, device_type: str) -> str | None:
    """None when backend `name` can run tensors of `device_type`, else the reason it cannot."""
    if name == "reference":
        return None
    if name == "cpu":
        if device_type != "cpu":
            return f"the cpu backend runs CPU tensors only, not {device_type}"
        return _ext.why_not("_cpu")
    if name == "cuda":
        if device_type != "cuda":
            return f"the cuda backend runs CUDA tensors only, not {device_type}"
        return _ext.why_not("_cuda")
    if name == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install triton)"
        if device_type == "cuda":
            return None
        if device_type == "cpu":
            return None if triton_interpreting() else "triton runs CPU tensors only under TRITON_INTERPRET=1"
        return f"triton does not run {device_type} tensors"
    raise ValueError(f"unknown backend {name!r}")


def select(device: torch.device) -> str:
    """The backend an op uses for tensors on `device`."""
    forced = forced_backend()
    if forced is not None:
        reason = why_unavailable(forced, device.type)
        if reason:
            raise BackendUnavailableError(f"backend {forced!r} is unavailable for {device.type} tensors: {reason}")
        return forced
    return _automatic(device.type)


@functools.cache  # what is built and installed does not change in a process (the modules load once)
def _automatic(device_type: str) -> str:
    order = ("cuda", "triton") if device_type == "cuda" else ("cpu",)
    for name in order:
        if why_unavailable(name, device_type) is None:
            return name
    return "reference"


def available_backends(device_type: str = "cpu") -> dict[str, str | None]:
    """{backend: None if usable for `device_type` tensors, else why not}."""
    return {name: why_unavailable(name, device_type) for name in BACKENDS}


def _cuda_device_note() -> str | None:
    """None when a CUDA device is visible, else why none is (for `info`)."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return "no CUDA device visible (this torch is a CPU-only build)"
    return "no CUDA device visible"


def report() -> dict[str, tuple[bool, str]]:
    """{backend: (usable on this machine, one line saying what it is and why)}, for `python -m fastercache_kernels
    info`. Unlike `why_unavailable` it looks at the machine: a built _cuda module with no device is not usable."""
    no_device = _cuda_device_note()
    out = {"reference": (True, "pure PyTorch, any device; the fallback and the tests' oracle")}
    cpu_why = _ext.why_not("_cpu")
    if cpu_why is None:
        built = [n for n in _ext.CPU_VARIANTS.values() if _ext.why_not(n) is None]
        in_use = _ext.CPU_VARIANTS[_ext.cpu_variant()]
        out["cpu"] = (True, f"{in_use} in use for CPU tensors (built: {', '.join(built)})")
    else:
        out["cpu"] = (False, cpu_why)
    cuda_why = _ext.why_not("_cuda")
    if cuda_why is not None:
        out["cuda"] = (False, cuda_why + (f"; {no_device}" if no_device else ""))
    else:
        built = f"module built for {_ext.cuda_built_for() or 'unrecorded architectures'}"
        if no_device:
            out["cuda"] = (False, f"{built}; {no_device}, so unused")
        else:
            names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
            out["cuda"] = (True, f"{built}; runs CUDA tensors on {', '.join(names)}")
    triton_why = why_unavailable("triton", "cuda")
    if triton_why is not None:
        out["triton"] = (False, triton_why)
    else:
        import triton

        version = f"triton {triton.__version__} installed"
        if no_device is None:
            out["triton"] = (True, f"{version}; runs CUDA tensors when the _cuda module is not built")
        elif triton_interpreting():
            out["triton"] = (True, f"{version}; {no_device}: CPU tensors under TRITON_INTERPRET=1 (the interpreter, "
                                   "for tests; slow)")
        else:
            out["triton"] = (False, f"{version}; {no_device}, so unused (the tests run its kernels on CPU tensors "
                                    "under TRITON_INTERPRET=1)")
    return out
