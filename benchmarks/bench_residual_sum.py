"""residual_sum with 56 residuals (AdaCache's 28 blocks x 2) of [2, 4096, 1152]: sequential eager adds, in-place eager
adds, and the one-pass fused sum.

Run: .venv/bin/python -m pytest benchmarks/bench_residual_sum.py --benchmark-only
or: python -m fastercache_kernels bench --ops residual_sum --dtypes fp32,bf16
"""

import pytest
import torch

import fastercache_kernels as fk
from fastercache_kernels.bench.ops import fk_backends

SHAPE = (2, 4096, 1152)
COUNT = 56
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BACKENDS = fk_backends(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


@pytest.fixture(params=list(DTYPES), scope="module")
def tensors(request, device):
    dtype = DTYPES[request.param]
    x = torch.randn(SHAPE, device=device).to(dtype)
    res = [torch.randn(SHAPE, device=device).to(dtype) for _ in range(COUNT)]
    return request.param, x, res, torch.empty_like(x)


def _group(benchmark, tensors):
    benchmark.group = f"residual_sum {tensors[0]}"
    benchmark.extra_info["bytes"] = (COUNT + 2) * tensors[1].numel() * tensors[1].element_size()


def test_eager_sequential(benchmark, tensors):
    _, x, res, _ = tensors
    _group(benchmark, tensors)

    def run():
        y = x
        for r in res:
            y = y + r
        return y

    benchmark(run)


def test_eager_in_place(benchmark, tensors):
    _, x, res, out = tensors
    _group(benchmark, tensors)

    def run():
        out.copy_(x)
        for r in res:
            out.add_(r)

    benchmark(run)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused(benchmark, tensors, backend):
    _, x, res, out = tensors
    _group(benchmark, tensors)

    def run():
        with fk.use_backend(backend):
            fk.ops.residual_sum(x, res, out=out)

    benchmark(run)
