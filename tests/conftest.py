"""Shared fixtures. The Triton interpreter is switched on here, before any kernel module is imported, on
machines without a GPU: that is how the Triton kernels run against the references on CPU tensors."""

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


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    """Runs the test body once per CPU-tensor backend, with that backend forced."""
    with backend_context(request.param):
        yield request.param


@pytest.fixture(params=FAST_CPU_BACKENDS)
def fast_backend(request):
    with backend_context(request.param):
        yield request.param


def pytest_report_header(config):
    return [f"fastercache backends for CPU tensors: {', '.join(CPU_BACKENDS)}; GPU: {HAS_GPU}"]


@st.composite
def strided_layouts(draw):
    """(shape, perm, step) for testing.strided_randn in the property tests: 1-4 dims of 1..9, any dim order, steps
    1..3 (step > 1 leaves gaps: non-contiguous)."""
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    return shape, tuple(draw(st.permutations(range(len(shape))))), draw(st.integers(1, 3))
