"""extrapolate_residual (Open-Sora's attention reuse: x += gate * (newer + w * (newer - older))) on x [2, 7296, 1152]
(about 16M elements) with a per-sample gate, against the same in eager PyTorch, in place.

Run: .venv/bin/python -m pytest benchmarks/bench_extrapolate_residual.py --benchmark-only
"""

import pytest
import torch

import fastercache_kernels as fk
from fastercache_kernels.bench.ops import fk_backends

SHAPE = (2, 7296, 1152)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BACKENDS = fk_backends(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


@pytest.fixture(params=list(DTYPES), scope="module")
def tensors(request, device):
    dtype = DTYPES[request.param]
    x, newer, older = (torch.randn(SHAPE, device=device).to(dtype) for _ in range(3))
    gate = torch.randn(2, 1, SHAPE[-1], device=device).to(dtype)
    return request.param, x, gate, newer, older, torch.tensor(0.3, device=device)


def _group(benchmark, tensors):
    benchmark.group = f"extrapolate_residual {tensors[0]}"
    benchmark.extra_info["bytes"] = 4 * tensors[1].numel() * tensors[1].element_size()


def test_eager(benchmark, tensors):
    _, x, gate, newer, older, w = tensors
    _group(benchmark, tensors)
    benchmark(lambda: x.add_(gate * (newer + w * (newer - older))))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused(benchmark, tensors, backend):
    _, x, gate, newer, older, w = tensors
    _group(benchmark, tensors)

    def run():
        with fk.use_backend(backend):
            fk.ops.extrapolate_residual(x, gate, newer, older, w)

    benchmark(run)
