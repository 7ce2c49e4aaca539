"""CFG-Cache skip call at the CogVideoX-2B and Open-Sora latents: the reference FFT path of docs/algorithms.md
section 2, the eager linear formula, and the fused cfg_recombine_guided / cfg_recombine, side by side per group.

Run: .venv/bin/python -m pytest benchmarks/bench_cfg_recombine.py --benchmark-only
The same table, with the ratio to the FFT path in the JSON extra field: python -m fastercache_kernels bench
--ops cfg_recombine_guided,cfg_recombine --dtypes fp32,fp16,bf16
"""

import pytest
import torch

import fastercache_kernels as fk
from fastercache_kernels.bench.ops import LATENTS, _spec_mask, fk_backends

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BACKENDS = fk_backends(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


@pytest.fixture(params=[(m, d) for m in LATENTS for d in DTYPES], ids=lambda p: f"{p[0]}-{p[1]}", scope="module")
def case(request, device):
    model, dname = request.param
    shape, dtype = LATENTS[model], DTYPES[dname]
    g = torch.Generator().manual_seed(0)
    cond, low, high = (torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    scalars = tuple(torch.tensor(v, device=device) for v in (1.1, 1.15, 6.0))
    return f"{model} {dname}", cond, low, high, scalars


def _group(benchmark, case, op, bytes_moved):
    benchmark.group = f"{op} {case[0]}"
    benchmark.extra_info["bytes"] = bytes_moved


def test_spec_fft_path(benchmark, case):
    _, cond, low, high, (a, b, s) = case
    _group(benchmark, case, "cfg_recombine_guided", 4 * cond.numel() * cond.element_size())
    m = _spec_mask(*cond.shape[-2:], cond.device)
    d_lf = torch.fft.fftshift(torch.fft.fft2(low.float())) * m
    d_hf = torch.fft.fftshift(torch.fft.fft2(high.float())) * (1 - m)

    def run():
        spec = torch.fft.fftshift(torch.fft.fft2(cond.float()))
        uncond = torch.fft.ifft2(torch.fft.ifftshift(spec * m + a * d_lf + spec * (1 - m) + b * d_hf)).real
        return (uncond + s * (cond.float() - uncond)).to(cond.dtype)

    benchmark(run)


def test_eager_guided(benchmark, case):
    _, cond, low, high, (a, b, s) = case
    _group(benchmark, case, "cfg_recombine_guided", 4 * cond.numel() * cond.element_size())
    benchmark(lambda: cond + (1 - s) * (a * low + b * high))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_guided(benchmark, case, backend):
    _, cond, low, high, (a, b, s) = case
    _group(benchmark, case, "cfg_recombine_guided", 4 * cond.numel() * cond.element_size())
    out = torch.empty_like(cond)

    def run():
        with fk.use_backend(backend):
            fk.ops.cfg_recombine_guided(cond, low, high, a, b, s, out=out)

    benchmark(run)


def test_eager_recombine(benchmark, case):
    _, cond, low, high, (a, b, _) = case
    _group(benchmark, case, "cfg_recombine", 4 * cond.numel() * cond.element_size())
    benchmark(lambda: cond + a * low + b * high)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_recombine(benchmark, case, backend):
    _, cond, low, high, (a, b, _) = case
    _group(benchmark, case, "cfg_recombine", 4 * cond.numel() * cond.element_size())
    out = torch.empty_like(cond)

    def run():
        with fk.use_backend(backend):
            fk.ops.cfg_recombine(cond, low, high, a, b, out=out)

    benchmark(run)
