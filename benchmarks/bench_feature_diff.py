"""feature_diff rel_l1 at 16M elements: the eager formula against the fused op, and the copy it is held to.

Run: make bench  (or .venv/bin/python -m pytest benchmarks/bench_feature_diff.py --benchmark-only)
Compare medians within one run; the same table comes from
`python -m fastercache_kernels bench --ops feature_diff,residual_diff_update,motion_score`.
Bytes: the two reads of a and b (the copy moves the same number: one read, one write).
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
    a = torch.randn(N, device=device).to(dtype)
    b = torch.randn(N, device=device).to(dtype)
    return request.param, a, b, torch.empty_like(a)


def _group(benchmark, tensors):
    name, a = tensors[0], tensors[1]
    benchmark.group = f"feature_diff rel_l1 {name}"
    benchmark.extra_info["bytes"] = 2 * N * a.element_size()


def test_eager(benchmark, tensors):
    _, a, b, _ = tensors
    _group(benchmark, tensors)
    benchmark(lambda: (a - b).abs().sum() / b.abs().sum())


def test_copy(benchmark, tensors):
    _, a, _, out = tensors
    _group(benchmark, tensors)
    benchmark(lambda: out.copy_(a))


@pytest.mark.parametrize("backend", fk_backends(torch.device("cuda" if torch.cuda.is_available() else "cpu")))
def test_fused(benchmark, tensors, backend):
    _, a, b, _ = tensors
    _group(benchmark, tensors)

    def run():
        with fk.use_backend(backend):
            fk.ops.feature_diff(a, b, "rel_l1")

    benchmark(run)
