"""Plumbing shared by the reduction ops (feature_diff, residual_diff_update, motion_score): metric names, the
metric from its raw sums, output buffers and workspaces."""

from __future__ import annotations

import torch
from torch import Tensor

# Same codes as fastercache::Metric in csrc/include/fastercache/reduce.h.
METRICS = ("l1", "rel_l1", "rel_l2", "cosine")
METRIC_CODES = {name: code for code, name in enumerate(METRICS)}
# Raw sums per metric: l1 (sum|a-b|, count, 0), rel_l1 (sum|a-b|, sum|b|, 0), rel_l2 (sum (a-b)^2, sum b^2, 0),
# cosine (sum a*b, sum a^2, sum b^2).
NUM_SUMS = 3
# csrc/include/fastercache/reduce.h kMotionMaxStrides: the CUDA kernels take the strides by value.
MOTION_MAX_STRIDES = 64


def check_metric(op: str, metric) -> None:
    if not isinstance(metric, str) or metric not in METRIC_CODES:
        raise ValueError(f"{op}: `metric` must be one of {', '.join(map(repr, METRICS))}, got {metric!r}")


def finalize(sums: Tensor, metric: str) -> Tensor:
    """The metric from its raw sums `sums` [..., 3]: the expressions of finalize_metric in reduce.h, in the same
    order, each rounded once to fp32 as IEEE fp32 arithmetic does, so the fused ops' results and this agree bit for
    bit. Each step runs in fp64 and is rounded to fp32 (exact for +, *, / and sqrt of fp32 operands: fp64 has more
    than 2 * 24 + 2 bits): torch's own fp32 sqrt on the CPU is not always correctly rounded (measured: one ulp off
    for sqrt(20.76...) with torch 2.13)."""

    def rn(x: Tensor) -> Tensor:
        return x.to(torch.float32).to(torch.float64)

    s0, s1, s2 = rn(sums).unbind(-1)
    if metric in ("l1", "rel_l1"):
        res = s0 / s1
    elif metric == "rel_l2":
        res = rn(torch.sqrt(s0)) / rn(torch.sqrt(s1))
    else:
        res = 1.0 - rn(s0 / rn(rn(torch.sqrt(s1)) * rn(torch.sqrt(s2))))
    return res.to(torch.float32)


def f32_empty(shape, device) -> Tensor:
    return torch.empty(shape, dtype=torch.float32, device=device)


def workspace(numel: int, device: torch.device) -> Tensor:
    """Per-block partial sums of the CUDA and Triton launches (no float atomics: a second stage combines them)."""
    return torch.empty(max(1, numel), dtype=torch.float32, device=device)


def shares_memory(t: Tensor, *others: Tensor) -> bool:
    """Whether `t` may overlap any of `others` (same storage): an in-place update then goes through a copy."""
    if t.numel() == 0:
        return False
    ptr = t.untyped_storage().data_ptr()
    return any(o.numel() and o.untyped_storage().data_ptr() == ptr for o in others)
