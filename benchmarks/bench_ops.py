"""Every declared op's benchmark cases, generated from the declarations (`bench=` in fastercache_kernels/ops/<op>.py):
one pytest-benchmark test per (op, dtype, case, implementation), plus the device copy each case is held to.

Run: make bench  (or .venv/bin/python -m pytest benchmarks/bench_ops.py --benchmark-only -k forecast)
Compare medians within one group; each timed call ends with a device synchronise (CUDA work is not just launched).
The CLI gives the same cases with GB/s and ratios: python -m fastercache_kernels bench.
"""

import pytest
import torch

from fastercache_kernels.bench.core import copy_case, sync
from fastercache_kernels.bench.ops import BENCHES, SHAPE_KIND, cases, custom_shapes

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NUMEL = 1 << 22 if DEVICE.type == "cuda" else 1 << 20
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _shape(name: str, numel: int):
    return next(s for s in custom_shapes(numel) if s.kind == SHAPE_KIND[name])


def _params() -> list:
    """(op, dtype, case index, impl) for every case, listed from the same declarations at a tiny size."""
    params = []
    for name in BENCHES:
        for dname, dtype in DTYPES.items():
            for i, case in enumerate(cases(name, dtype, DEVICE, _shape(name, 4096))):
                impls = list(case.impls) + (["copy"] if case.copy_numel else [])
                params += [pytest.param(name, dname, i, impl, id=f"{name}-{dname}-{i}-{impl}") for impl in impls]
    return params


@pytest.mark.parametrize("name,dname,index,impl", _params())
def test_case(benchmark, name, dname, index, impl):
    dtype = DTYPES[dname]
    for i, case in enumerate(cases(name, dtype, DEVICE, _shape(name, NUMEL))):
        if i == index:  # a case's tensors live while the generator stays here
            break
    if impl == "copy":
        copy = copy_case(case.copy_numel, dtype, DEVICE)
        fn, nbytes = copy.fn, copy.nbytes
    else:
        fn, nbytes = case.impls[impl], case.nbytes
    benchmark.group = f"{name} {case.label}"
    benchmark.extra_info["bytes"] = nbytes

    def run():
        fn()
        sync(DEVICE)

    run()  # warm-up: allocations, Triton compiles
    benchmark(run)
