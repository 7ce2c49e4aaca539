"""Benchmark cases per op: the eager formula a user would write against each available backend."""

from __future__ import annotations

import torch

from .. import _backend, ops
from .core import Row, copy_gbps, measure

DTYPE_NAMES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def fk_backends(device: torch.device) -> list[str]:
    """The compiled backends that can run on `device` (the reference is the eager formula itself)."""
    names = [b for b in ("cpu", "cuda", "triton") if _backend.why_unavailable(b, device.type) is None]
    if device.type == "cpu":  # the Triton interpreter says nothing about speed
        names = [b for b in names if b != "triton"]
    return names


def bench_extrapolate(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu", **kw) -> list[Row]:
    device = torch.device(device)
    newer = torch.randn(numel, device=device).to(dtype)
    older = torch.randn(numel, device=device).to(dtype)
    out = torch.empty_like(newer)
    tmp = torch.empty_like(newer)
    w = torch.tensor(0.3, device=device)

    def eager_out():  # the same formula without temporaries
        torch.sub(newer, older, out=tmp)
        tmp.mul_(w)
        tmp.add_(newer)

    impls = {"eager": lambda: newer + w * (newer - older), "eager (in place)": eager_out}
    for b in fk_backends(device):
        impls[f"fk {b}"] = _forced(b, lambda: ops.extrapolate(newer, older, w))
        impls[f"fk {b} out="] = _forced(b, lambda: ops.extrapolate(newer, older, w, out=out))
    nbytes = 3 * numel * newer.element_size()
    copy = copy_gbps(numel, dtype, device, **kw)
    case = f"{numel} {str(dtype).removeprefix('torch.')}"
    return measure("extrapolate", case, impls, nbytes, device, copy, **kw)


def _forced(backend: str, fn):
    def run():
        with _backend.use_backend(backend):
            return fn()

    return run


BENCHES = {"extrapolate": bench_extrapolate}
