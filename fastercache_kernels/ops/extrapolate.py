"""fastercache::extrapolate: the FasterCache attention reuse F = newer + w * (newer - older) as a standalone op. The
FasterCache policy computes it with fastercache::forecast over its slot store (weights (1 + w, -w): the same up to
fp32 rounding, docs/algorithms.md section 9); this op stays for callers holding two separate tensors."""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference import extrapolate as reference_extrapolate
from ._common import as_scalar, check_float_tensor, check_like, check_scalar, run_map
from ._define import _randn, define

_OP = "extrapolate"
__all__ = ["extrapolate"]


def _check(newer: Tensor, older: Tensor, weight: Tensor, out: Tensor | None = None) -> None:
    check_float_tensor(_OP, "newer", newer)
    check_like(_OP, "older", older, "newer", newer)
    check_scalar(_OP, "weight", weight, newer.device)
    if out is not None:
        check_like(_OP, "out", out, "newer", newer)


def _empty(newer: Tensor, older: Tensor, weight: Tensor) -> Tensor:
    return torch.empty(newer.shape, dtype=newer.dtype, device=newer.device)


def _run(newer: Tensor, older: Tensor, weight: Tensor, out: Tensor) -> None:
    run_map(OP, out, [newer, older], [weight])


OP = define(
    "extrapolate",
    elementwise=True,
    schema="(Tensor newer, Tensor older, Tensor weight) -> Tensor",
    out="Tensor(a!) out",
    check=_check,
    fake=_empty,
    run_out=_run,
    reference=reference_extrapolate,
    triton="extrapolate",
    example=lambda dev: (_randn(dev, 3, 1001), _randn(dev, 3, 1001), torch.tensor(0.3)),
    launcher="extrapolate",
)


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
    return OP(newer, older, w, out=out)
