"""extrapolate at 16M elements: the eager formula against the fused op, and the copy it is held to.

Run: make bench  (or .venv/bin/python -m pytest benchmarks/bench_extrapolate.py --benchmark-only)
Compare medians within one run; the same table comes from `python -m fastercache_kernels bench --ops extrapolate`.
"""

import pytest
import torch

import fastercache_kernels as fk
from fastercache_kernels.bench.ops import fk_backends

N = 1 << 24
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@pytest.fixture(params=list(DTYPES), scope="module")
def tensors(request, device):
    dtype = DTYPES[request.param]
    newer = torch.randn(N, device=device).to(dtype)
    older = torch.randn(N, device=device).to(dtype)
    return request.param, newer, older, torch.empty_like(newer), torch.tensor(0.3, device=device)


def _group(benchmark, tensors, bytes_moved):
    name = tensors[0]
    benchmark.group = f"extrapolate {name}"
    benchmark.extra_info["bytes"] = bytes_moved


def test_eager(benchmark, tensors):
    _, newer, older, _, w = tensors
    _group(benchmark, tensors, 3 * N * newer.element_size())
    benchmark(lambda: newer + w * (newer - older))


def test_copy(benchmark, tensors):
    _, newer, _, out, _ = tensors
    _group(benchmark, tensors, 2 * N * newer.element_size())
    benchmark(lambda: out.copy_(newer))


@pytest.mark.parametrize("backend", fk_backends(torch.device("cuda" if torch.cuda.is_available() else "cpu")))
@pytest.mark.parametrize("with_out", [False, True], ids=["alloc", "out"])
def test_fused(benchmark, tensors, backend, with_out):
    _, newer, older, out, w = tensors
    _group(benchmark, tensors, 3 * N * newer.element_size())
    kw = {"out": out} if with_out else {}

    def run():
        with fk.use_backend(backend):
            fk.ops.extrapolate(newer, older, w, **kw)

    benchmark(run)
