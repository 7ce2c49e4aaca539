"""fastercache::residual_sum: x + the sum of a list of cached residuals in one pass (AdaCache / TeaCache reuse calls:
`x_L = x_0 + sum of every block's cached residuals`, docs/algorithms.md section 4)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext
from ..reference import residual_sum as reference_residual_sum
from ._common import (
    DTYPE_CODES,
    backend_for,
    call,
    check_float_tensor,
    check_like,
    cpu_module,
    cuda_stream,
    custom_op,
    dense,
    writable_dense,
)

_OP = "residual_sum"


def _check(x: Tensor, residuals, out: Tensor | None = None) -> None:
    check_float_tensor(_OP, "x", x)
    if not isinstance(residuals, (list, tuple)):
        raise TypeError(f"{_OP}: `residuals` must be a list of tensors, got {type(residuals).__name__}")
    for i, r in enumerate(residuals):
        check_like(_OP, f"residuals[{i}]", r, "x", x)
    if out is not None:
        check_like(_OP, "out", out, "x", x)


def _run(out: Tensor, x: Tensor, residuals: list[Tensor]) -> None:
    backend = backend_for(out)
    if backend == "reference":
        out.copy_(reference_residual_sum(x, residuals))
        return
    if out.numel() == 0:
        return
    xs = dense(x)
    rs = [dense(r) for r in residuals]
    with writable_dense(out, x, *residuals) as o:
        if backend == "triton":
            from ..triton.residual_sum import launch

            launch(o, xs, rs)
        elif backend == "cpu":
            cpu_module().residual_sum(DTYPE_CODES[o.dtype], o.data_ptr(), xs.data_ptr(), [r.data_ptr() for r in rs],
                                      o.numel())
        else:
            mod = _ext.cuda()
            # beyond one launch's capacity the kernel sums in chunks through an fp32 workspace
            work = (torch.empty(o.shape, dtype=torch.float32, device=o.device)
                    if len(rs) > mod.RESIDUAL_SUM_CAPACITY else None)
            with torch.cuda.device(o.device):
                mod.residual_sum(DTYPE_CODES[o.dtype], o.data_ptr(), xs.data_ptr(), [r.data_ptr() for r in rs],
                                 o.numel(), 0 if work is None else work.data_ptr(), cuda_stream(o.device))


@custom_op("fastercache::residual_sum", mutates_args=())
def _residual_sum(x: Tensor, residuals: list[Tensor]) -> Tensor:
    _check(x, residuals)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _run(out, x, residuals)
    return out


@_residual_sum.register_fake
def _(x, residuals):
    _check(x, residuals)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


@custom_op("fastercache::residual_sum_out", mutates_args=("out",))
def _residual_sum_out(x: Tensor, residuals: list[Tensor], out: Tensor) -> None:
    _check(x, residuals, out)
    _run(out, x, residuals)


@_residual_sum_out.register_fake
def _(x, residuals, out):
    _check(x, residuals, out)


def residual_sum(x: Tensor, residuals, *, out: Tensor | None = None) -> Tensor:
    """y = x + residuals[0] + residuals[1] + ... + residuals[K - 1], one pass, fp32 accumulation in list order.

    Args:
        x: [*] the input of the skipped blocks; fp32, fp16 or bf16, any strides.
        residuals: list of K [*] tensors with x's shape, dtype and device (any K, including 0 and 56+).
        out: optional [*] tensor like x to write into (may be x itself, for x += sum).

    Returns:
        [*] tensor in x's dtype, summed in fp32 and rounded once.
    """
    if not isinstance(residuals, (list, tuple)):
        raise TypeError(f"{_OP}: `residuals` must be a list of tensors, got {type(residuals).__name__}")
    residuals = list(residuals)
    if out is None:
        return call(_residual_sum, x, residuals)
    call(_residual_sum_out, x, residuals, out)
    return out
