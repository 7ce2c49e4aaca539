"""fastercache::feature_diff and fastercache::feature_diff_partials: how far a feature moved between two steps
(the decision metric of TeaCache, First-Block-Cache and AdaCache), in one deterministic pass."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..reference.feature_diff import feature_diff_partials as reference_partials
from ._common import DTYPE_CODES, check_float_tensor, check_like, dense
from ._define import Launch, _randn, define
from ._reduce import METRIC_CODES, NUM_SUMS, check_metric, f32_empty, finalize, workspace

__all__ = ["feature_diff", "feature_diff_from_partials", "feature_diff_partials"]


def _check(op: str, a: Tensor, b: Tensor, metric: str, per_sample: bool) -> None:
    check_float_tensor(op, "a", a)
    check_like(op, "b", b, "a", a)
    check_metric(op, metric)
    if not isinstance(per_sample, bool):
        raise TypeError(f"{op}: `per_sample` must be a bool, got {type(per_sample).__name__}")
    if per_sample and a.dim() == 0:
        raise ValueError(f"{op}: per_sample=True needs `a` with a batch dim, got a 0-d tensor")


def _shape(a: Tensor, per_sample: bool, partials: bool) -> tuple:
    rows = (a.shape[0],) if per_sample else ()
    return rows + ((NUM_SUMS,) if partials else ())


def _compute(d, a: Tensor, b: Tensor, metric: str, per_sample: bool, partials: bool) -> Tensor:
    launch = Launch(d, a.device)
    if launch.backend == "reference":  # the metric as every backend forms it from its sums (see finalize)
        sums = d.reference(a, b, metric, per_sample)
        return sums if partials else finalize(sums, metric)
    out = f32_empty(_shape(a, per_sample, partials), a.device)
    if out.numel() == 0:
        return out
    rows = a.shape[0] if per_sample else 1
    cols = math.prod(a.shape[1:]) if per_sample else a.numel()
    a, b = dense(a), dense(b)
    code, mcode = DTYPE_CODES[a.dtype], METRIC_CODES[metric]
    if launch.backend == "triton":
        tk = launch.triton()
        tk.launch(out, workspace(tk.workspace_numel(rows, cols), a.device), a, b, mcode, partials, rows, cols)
        return out
    ws = launch.cuda_workspace("feature_diff_workspace", rows, cols)
    launch(code, out.data_ptr(), a.data_ptr(), b.data_ptr(), mcode, partials, rows, cols, cuda=ws)
    return out


def _direct(partials: bool):
    """`_compute` on the CPU module, called by the op layer for a plain eager CPU call (see OpDef.cpu_direct)."""

    def run(mod, a: Tensor, b: Tensor, metric: str, per_sample: bool) -> Tensor:
        out = torch.empty(_shape(a, per_sample, partials), dtype=torch.float32)
        if out.numel():
            rows, cols = (a.shape[0], math.prod(a.shape[1:])) if per_sample else (1, a.numel())
            a, b = dense(a), dense(b)
            mod.feature_diff(DTYPE_CODES[a.dtype], out.data_ptr(), a.data_ptr(), b.data_ptr(), METRIC_CODES[metric],
                             partials, rows, cols)
        return out

    return run


_SCHEMA = "(Tensor a, Tensor b, str metric, bool per_sample) -> Tensor"
OP = define(
    "feature_diff",
    schema=_SCHEMA,
    check=lambda a, b, metric, per_sample: _check("feature_diff", a, b, metric, per_sample),
    fake=lambda a, b, metric, per_sample: f32_empty(_shape(a, per_sample, False), a.device),
    compute=lambda a, b, metric, per_sample: _compute(OP, a, b, metric, per_sample, partials=False),
    reference=reference_partials,
    triton="feature_diff",
    example=lambda dev: (_randn(dev, 3, 40001), _randn(dev, 3, 40001), "rel_l1", True),
    launcher="feature_diff",
    cpu_direct=_direct(partials=False),
)
OP_PARTIALS = define(
    "feature_diff_partials",
    schema=_SCHEMA,
    check=lambda a, b, metric, per_sample: _check("feature_diff_partials", a, b, metric, per_sample),
    fake=lambda a, b, metric, per_sample: f32_empty(_shape(a, per_sample, True), a.device),
    compute=lambda a, b, metric, per_sample: _compute(OP_PARTIALS, a, b, metric, per_sample, partials=True),
    reference=reference_partials,
    triton="feature_diff",
    example=lambda dev: (_randn(dev, 3, 40001), _randn(dev, 3, 40001), "cosine", False),
    launcher="feature_diff",
    cpu_direct=_direct(partials=True),
)


def feature_diff(a: Tensor, b: Tensor, metric: str = "rel_l1", per_sample: bool = False) -> Tensor:
    """d(a, b) for a feature-difference metric, reduced in one pass with fp32 accumulation:

        l1     = mean |a - b|                      rel_l1 = sum |a - b| / sum |b|
        rel_l2 = ||a - b||_2 / ||b||_2             cosine = 1 - <a, b> / (||a||_2 ||b||_2)

    Deterministic on the CPU module, CUDA and Triton: bit-identical from call to call and for any thread count
    (fixed-size blocks reduced into partials, combined in a fixed order; no float atomics). The reference backend
    uses torch's own reductions, which can differ by an ulp or two between thread counts.

    Args:
        a: [B, *] fp32, fp16 or bf16, any strides (e.g. the current feature).
        b: [B, *] same shape, dtype and device (e.g. the cached one; the denominator of the relative metrics).
        metric: "l1", "rel_l1", "rel_l2" or "cosine".
        per_sample: reduce over every dim but the first, one value per sample.

    Returns:
        fp32 0-d tensor, or [B] with per_sample=True. Empty inputs give NaN (0 / 0), as torch's mean does.
    """
    _check("feature_diff", a, b, metric, per_sample)  # here too: schema errors would not name the argument
    return OP(a, b, metric, per_sample, checked=True)


def feature_diff_partials(a: Tensor, b: Tensor, metric: str = "rel_l1", per_sample: bool = False) -> Tensor:
    """The raw sums behind feature_diff, so callers can all-reduce (SUM) them across ranks before dividing:

        l1: (sum |a-b|, count, 0)        rel_l1: (sum |a-b|, sum |b|, 0)
        rel_l2: (sum (a-b)^2, sum b^2, 0)    cosine: (sum a*b, sum a^2, sum b^2)

    Args: as feature_diff. Returns: fp32 [3], or [B, 3] with per_sample=True.
    feature_diff_from_partials(feature_diff_partials(a, b, m), m) equals feature_diff(a, b, m) bit for bit.
    """
    _check("feature_diff_partials", a, b, metric, per_sample)
    return OP_PARTIALS(a, b, metric, per_sample, checked=True)


def feature_diff_from_partials(partials: Tensor, metric: str = "rel_l1") -> Tensor:
    """The metric from raw sums: s0 / s1 (l1, rel_l1), sqrt(s0) / sqrt(s1) (rel_l2),
    1 - s0 / (sqrt(s1) sqrt(s2)) (cosine), each in fp32.

    Args:
        partials: [..., 3] float tensor from feature_diff_partials (summed over ranks, or over several tensors).
        metric: the metric the sums were taken for.

    Returns:
        fp32 tensor of shape partials.shape[:-1].
    """
    op = "feature_diff_from_partials"
    check_float_tensor(op, "partials", partials)
    if partials.dim() == 0 or partials.shape[-1] != NUM_SUMS:
        raise ValueError(f"{op}: `partials` must have shape [..., 3], got {tuple(partials.shape)}")
    check_metric(op, metric)
    return finalize(partials.float(), metric)
