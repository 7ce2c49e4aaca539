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


# Reductions: bytes are what the op must move (each input read once; residual_diff_update also writes the cache).
def bench_feature_diff(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu", **kw) -> list[Row]:
    device = torch.device(device)
    a = torch.randn(numel, device=device).to(dtype)
    b = torch.randn(numel, device=device).to(dtype)
    impls = {"eager": lambda: (a - b).abs().sum() / b.abs().sum()}
    for be in fk_backends(device):
        impls[f"fk {be}"] = _forced(be, lambda: ops.feature_diff(a, b, "rel_l1"))
    nbytes = 2 * numel * a.element_size()
    copy = copy_gbps(numel, dtype, device, **kw)
    case = f"{numel} {str(dtype).removeprefix('torch.')} rel_l1"
    return measure("feature_diff", case, impls, nbytes, device, copy, **kw)


def bench_residual_diff_update(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu",
                               **kw) -> list[Row]:
    device = torch.device(device)
    x = torch.randn(numel, device=device).to(dtype)
    y = torch.randn(numel, device=device).to(dtype)
    cache = torch.randn(numel, device=device).to(dtype)

    def eager():  # what First-Block-Cache implementations write
        r = y - x
        d = (r - cache).abs().sum() / cache.abs().sum()
        cache.copy_(r)
        return d

    impls = {"eager": eager}
    for be in fk_backends(device):
        impls[f"fk {be}"] = _forced(be, lambda: ops.residual_diff_update(y, x, cache, "rel_l1"))
    nbytes = 4 * numel * x.element_size()  # output, input and cache read, cache written
    copy = copy_gbps(numel, dtype, device, **kw)
    case = f"{numel} {str(dtype).removeprefix('torch.')} rel_l1"
    return measure("residual_diff_update", case, impls, nbytes, device, copy, **kw)


def motion_shape(numel: int, frames: int = 13, channels: int = 1920, batch: int = 2) -> tuple[int, int, int]:
    """[B, T*S, C] with CogVideoX-2B's width and latent frame count and about `numel` elements (CogVideoX-2B's
    full [2, 17550, 1920] is 67M elements: minutes of eager runs on a small CPU, so the default is 16M)."""
    s = max(1, numel // (batch * frames * channels))
    return batch, frames * s, channels


def bench_motion_score(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu", **kw) -> list[Row]:
    device = torch.device(device)
    b, n, c = motion_shape(numel)
    t = 13
    s = n // t
    p = torch.randn(b, n, c, device=device).to(dtype)
    # SPEC section 4, as AdaCache's reference code computes it
    impls = {"eager": lambda: (p[:, s:] - p[:, :-s]).abs().sum() / (p[:, s:].abs().sum() + p[:, :-s].abs().sum())}
    for be in fk_backends(device):
        impls[f"fk {be}"] = _forced(be, lambda: ops.motion_score(p, t, (1,)))
    nbytes = p.numel() * p.element_size()
    copy = copy_gbps(p.numel(), dtype, device, **kw)
    case = f"[{b}, {n}, {c}] {str(dtype).removeprefix('torch.')} T={t}"
    return measure("motion_score", case, impls, nbytes, device, copy, **kw)


BENCHES.update(feature_diff=bench_feature_diff, residual_diff_update=bench_residual_diff_update,
               motion_score=bench_motion_score)
