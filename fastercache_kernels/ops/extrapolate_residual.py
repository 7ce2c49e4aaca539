"""fastercache::extrapolate_residual: Open-Sora's attention reuse path `x = x + gate * F` in one in-place pass, where
F = newer + w * (newer - older) is FasterCache's extrapolated attention output. No policy calls it (the FasterCache
policy reuses through fastercache::forecast, docs/algorithms.md section 9); it stays as a standalone op."""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference import extrapolate_residual as reference_extrapolate_residual
from ._common import DTYPE_CODES, _overlaps, as_scalar, check_float_tensor, check_like, check_scalar, dense, scalar_f32
from ._define import Launch, _randn, define

_OP = "extrapolate_residual"
__all__ = ["extrapolate_residual"]


def _gate_stride(x: Tensor, gate: Tensor) -> int:
    """0 when one gate row serves every sample, else the channel count (one row per sample)."""
    return 0 if gate.dim() == 1 or gate.shape[0] == 1 else x.shape[-1]


def _check(x: Tensor, gate: Tensor | None, newer: Tensor, older: Tensor, weight: Tensor) -> None:
    check_float_tensor(_OP, "x", x)
    if x.dim() < 2:
        raise ValueError(f"{_OP}: `x` must be [B, ..., C] (at least two dims), got shape {tuple(x.shape)}")
    check_float_tensor(_OP, "newer", newer)
    if newer.shape != x.shape:
        raise ValueError(f"{_OP}: `newer` has shape {tuple(newer.shape)} but `x` has shape {tuple(x.shape)}")
    if newer.device != x.device:
        raise ValueError(f"{_OP}: `newer` is on {newer.device} but `x` is on {x.device}")
    check_like(_OP, "older", older, "newer", newer)
    check_scalar(_OP, "weight", weight, x.device)
    if gate is None:
        return
    check_float_tensor(_OP, "gate", gate)
    if gate.device != x.device:
        raise ValueError(f"{_OP}: `gate` is on {gate.device} but `x` is on {x.device}")
    b, c = x.shape[0], x.shape[-1]
    shape = tuple(gate.shape)
    ok = (
        gate.dim() >= 1 and shape[-1] == c
        and (gate.dim() == 1 or (shape[0] in (1, b) and all(s == 1 for s in shape[1:-1])))
    )
    if not ok:
        raise ValueError(
            f"{_OP}: `gate` has shape {shape}; with x of shape {tuple(x.shape)} (viewed as [B={b}, N, C={c}]) it must "
            f"be [B, C], [B, 1, C], [1, C] or [C] (one gate per sample and channel)"
        )


def _run(x: Tensor, gate: Tensor | None, newer: Tensor, older: Tensor, weight: Tensor) -> None:
    launch = Launch(OP, x.device)
    if launch.backend == "reference":
        x.copy_(reference_extrapolate_residual(x, gate, newer, older, weight))
        return
    if x.numel() == 0:
        return
    channels = x.shape[-1]
    sample_numel = x.numel() // x.shape[0]
    stride = 0 if gate is None else _gate_stride(x, gate)
    g = None if gate is None else gate.reshape(-1, channels).to(torch.float32).contiguous()
    w = scalar_f32(weight, x.device)
    nw, od = dense(newer), dense(older)
    # x is read and written in place when contiguous and not partly overlapping an input; else a copy.
    overlap = _overlaps(x, newer) or _overlaps(x, older)
    work = x if x.is_contiguous() and not overlap else x.clone(memory_format=torch.contiguous_format)
    if launch.backend == "triton":
        launch.triton().launch(work, nw, od, g, w, channels, sample_numel, stride)
    else:
        launch(DTYPE_CODES[x.dtype], DTYPE_CODES[newer.dtype], work.data_ptr(), nw.data_ptr(), od.data_ptr(),
               0 if g is None else g.data_ptr(), w.data_ptr(), channels, sample_numel, stride, x.numel())
    if work is not x:
        x.copy_(work)


OP = define(
    "extrapolate_residual",
    elementwise=True,
    schema="(Tensor(a!) x, Tensor? gate, Tensor newer, Tensor older, Tensor weight) -> ()",
    check=_check,
    fake=None,
    compute=_run,
    reference=reference_extrapolate_residual,
    triton="extrapolate_residual",
    example=lambda dev: (_randn(dev, 2, 77, 24), _randn(dev, 2, 24), _randn(dev, 2, 77, 24), _randn(dev, 2, 77, 24),
                         torch.tensor(0.3)),
    launcher="extrapolate_residual",
)


def extrapolate_residual(x: Tensor, gate: Tensor | None, newer: Tensor, older: Tensor, weight) -> Tensor:
    """x += gate * (newer + weight * (newer - older)), in place: a block's residual add of FasterCache's
    extrapolated attention output (Open-Sora's reuse path) in one pass.

    x is viewed as [B, N, C] (B = x.shape[0], C = x.shape[-1]); the gate is per sample and channel.

    Args:
        x: [B, ..., C] hidden states, updated in place; fp32, fp16 or bf16, any strides.
        gate: None (gate 1), or [B, C], [B, 1, C], [1, C] or [C] in any float dtype ([B, C] is per sample, as
            adaLN's gate.unsqueeze(1)).
        newer: [B, ..., C] the most recent computed attention output; any float dtype (a cache storage dtype may
            differ from x's), same shape and device as x.
        older: [B, ..., C] the one before it; same shape, dtype and device as `newer`.
        weight: Python float or 0-d tensor w.

    Returns:
        x itself, computed in fp32 and rounded once to x's dtype.
    """
    w = as_scalar(_OP, "weight", weight, x)
    OP(x, gate, newer, older, w)
    return x
