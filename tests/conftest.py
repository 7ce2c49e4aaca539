"""Shared fixtures. The Triton interpreter is switched on here, before any kernel module is imported, on
machines without a GPU: that is how the Triton kernels run against the references on CPU tensors."""

import contextlib
import os
import shutil

if not shutil.which("nvidia-smi"):
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
import torch  # noqa: E402

from fastercache_kernels import _backend, _ext  # noqa: E402
from fastercache_kernels._backend import backend_context  # noqa: E402,F401  (tests import it from here)

HAS_GPU = torch.cuda.is_available()
NO_GPU = "no CUDA device on this machine (runs on a GPU host: make gpu-check)"


def cpu_backend_ids() -> list[str]:
    """Every way this machine can run an op on CPU tensors: the reference, each built CPU module variant, and
    Triton under its interpreter."""
    ids = ["reference"]
    if _ext.why_not("_cpu") is None:
        ids.append("cpu-baseline")
    if _ext._has_avx2() and _ext.why_not("_cpu_avx2") is None:
        ids.append("cpu-avx2")
    if _backend.why_unavailable("triton", "cpu") is None:
        ids.append("triton")
    return ids


CPU_BACKENDS = cpu_backend_ids()
FAST_CPU_BACKENDS = [b for b in CPU_BACKENDS if b != "reference"]


class Target(str):
    """A (device, backend) pair of the op tests. The string is the backend id (what the tests print and pass to
    quirk_ulps); `.device` is where the test's tensors go."""

    device: torch.device

    def __new__(cls, backend_id: str, device: str):
        obj = super().__new__(cls, backend_id)
        obj.device = torch.device(device)
        return obj


def _cuda_reason(backend_name: str) -> str | None:
    if not HAS_GPU:
        return NO_GPU
    return _backend.why_unavailable(backend_name, "cuda")


def device_targets(cpu_ids: list[str]) -> list:
    """pytest params for every (device, backend) pair: the CPU backends in `cpu_ids`, then (cuda, cuda) and
    (cuda, triton compiled), skipped with the reason where they cannot run; never silently absent. On a GPU host
    the Triton interpreter is off (it would replace compiled Triton in the whole process), so (cpu, triton) is
    reported as skipped there."""
    params = [pytest.param(Target(b, "cpu"), id=f"cpu-{b}") for b in cpu_ids]
    if HAS_GPU and "triton" not in CPU_BACKENDS:
        params.append(pytest.param(Target("triton", "cpu"), id="cpu-triton", marks=pytest.mark.skip(
            reason="the Triton interpreter is off on a GPU host (compiled Triton runs the cuda-triton cases)")))
    for name in ("cuda", "triton"):
        reason = _cuda_reason(name)
        marks = [pytest.mark.gpu] + ([pytest.mark.skip(reason=reason)] if reason else [])
        params.append(pytest.param(Target(name, "cuda"), id=f"cuda-{name}", marks=marks))
    return params


_current = [torch.device("cpu")]


def device() -> torch.device:
    """The device of the running (device, backend) case (CPU outside one): the tests' input helpers put their
    tensors here."""
    return _current[0]


@contextlib.contextmanager
def _on(target: Target):
    _current[0] = target.device
    try:
        with backend_context(target):
            yield target
    finally:
        _current[0] = torch.device("cpu")


@pytest.fixture(params=device_targets(CPU_BACKENDS))
def backend(request):
    """Runs the test body once per (device, backend) pair, with that backend forced and `device()` set."""
    with _on(request.param) as target:
        yield target


@pytest.fixture(params=device_targets(FAST_CPU_BACKENDS))
def fast_backend(request):
    with _on(request.param) as target:
        yield target


def pytest_report_header(config):
    return [f"fastercache backends for CPU tensors: {', '.join(CPU_BACKENDS)}; GPU: {HAS_GPU}"]


@st.composite
def strided_layouts(draw):
    """(shape, perm, step) for testing.strided_randn in the property tests: 1-4 dims of 1..9, any dim order, steps
    1..3 (step > 1 leaves gaps: non-contiguous)."""
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    return shape, tuple(draw(st.permutations(range(len(shape))))), draw(st.integers(1, 3))
