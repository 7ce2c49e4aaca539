"""CFG-Cache full call at the CogVideoX-2B and Open-Sora latents: the reference split (both branches through
fftshift(fft2), both masks, complex deltas) against the fused cfg_residual_split.

Run: .venv/bin/python -m pytest benchmarks/bench_cfg_residual_split.py --benchmark-only
or: python -m fastercache_kernels bench --ops cfg_residual_split --dtypes fp32,fp16,bf16
"""

import pytest
import torch

import fastercache_kernels as fk
from fastercache_kernels.bench.ops import LATENTS, _spec_mask, fk_backends

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BACKENDS = fk_backends(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


@pytest.fixture(params=[(m, d) for m in LATENTS for d in DTYPES], ids=lambda p: f"{p[0]}-{p[1]}", scope="module")
def case(request, device):
    model, dname = request.param
    shape, dtype = LATENTS[model], DTYPES[dname]
    g = torch.Generator().manual_seed(0)
    other, computed = (torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    return f"{model} {dname}", other, computed


def test_spec_full_call(benchmark, case):
    name, other, computed = case
    benchmark.group = f"cfg_residual_split {name}"
    m = _spec_mask(*other.shape[-2:], other.device)

    def run():
        s_o = torch.fft.fftshift(torch.fft.fft2(other.float()))
        s_c = torch.fft.fftshift(torch.fft.fft2(computed.float()))
        return s_o * m - s_c * m, s_o * (1 - m) - s_c * (1 - m)

    benchmark(run)


@pytest.mark.parametrize("storage", [None, torch.bfloat16], ids=["default", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused(benchmark, case, backend, storage):
    name, other, computed = case
    benchmark.group = f"cfg_residual_split {name}"

    def run():
        with fk.use_backend(backend):
            fk.ops.cfg_residual_split(other, computed, storage_dtype=storage)

    benchmark(run)
