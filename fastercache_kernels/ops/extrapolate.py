"""fastercache::extrapolate: the FasterCache attention reuse F = newer + w * (newer - older)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference import extrapolate as reference_extrapolate
from ._common import as_scalar, call, check_float_tensor, check_like, check_scalar, custom_op, run_map

_OP = "extrapolate"


def _check(newer: Tensor, older: Tensor, weight: Tensor, out: Tensor | None = None) -> None:
    check_float_tensor(_OP, "newer", newer)
    check_like(_OP, "older", older, "newer", newer)
    check_scalar(_OP, "weight", weight, newer.device)
    if out is not None:
        check_like(_OP, "out", out, "newer", newer)


def _triton(out, inputs, scalars):
    from ..triton.extrapolate import launch

    launch(out, inputs, scalars)


def _run(out: Tensor, newer: Tensor, older: Tensor, weight: Tensor) -> None:
    run_map(_OP, out, [newer, older], [weight], reference_extrapolate, _triton)


@custom_op("fastercache::extrapolate", mutates_args=())
def _extrapolate(newer: Tensor, older: Tensor, weight: Tensor) -> Tensor:
    _check(newer, older, weight)
    out = torch.empty(newer.shape, dtype=newer.dtype, device=newer.device)
    _run(out, newer, older, weight)
    return out


@_extrapolate.register_fake
def _(newer, older, weight):
    _check(newer, older, weight)
    return torch.empty(newer.shape, dtype=newer.dtype, device=newer.device)


@custom_op("fastercache::extrapolate_out", mutates_args=("out",))
def _extrapolate_out(newer: Tensor, older: Tensor, weight: Tensor, out: Tensor) -> None:
    _check(newer, older, weight, out)
    _run(out, newer, older, weight)


@_extrapolate_out.register_fake
def _(newer, older, weight, out):
    _check(newer, older, weight, out)


def extrapolate(newer: Tensor, older: Tensor, weight, *, out: Tensor | None = None) -> Tensor:
    """F = newer + weight * (newer - older): FasterCache's reuse of a cached attention output.

    Args:
        newer: [*] the most recent computed output; fp32, fp16 or bf16, any strides.
        older: [*] the one before it; same shape, dtype and device as `newer`.
        weight: Python float or 0-d tensor (pass a tensor in compiled code so graphs never specialise on it).
        out: optional [*] tensor like `newer` to write into (may be `newer` itself).

    Returns:
        [*] tensor in newer's dtype, computed in fp32 and rounded once.
    """
    w = as_scalar(_OP, "weight", weight, newer)
    if out is None:
        return call(_extrapolate, newer, older, w)
    call(_extrapolate_out, newer, older, w, out)
    return out
