"""fastercache::forecast: a reused quantity forecast from its stored history in one pass,
`x + sum_k weights[k] * history[k]` (plain reuse: one-hot weights; Taylor / Lagrange extrapolation over the
step index or timestep: runtime/forecast.py's History.weights; FasterCache's attention extrapolation: the
weights (1 + w, -w), docs/algorithms.md section 9)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference import forecast as reference_forecast
from ._common import DTYPE_CODES, check_float_tensor, dense, writable_dense
from ._define import Launch, _randn, define

_OP = "forecast"
__all__ = ["forecast", "extrapolation_weights"]
MAX_SLOTS = 4  # kForecastMaxSlots of csrc/include/fastercache/elementwise.h


def _shape(t: Tensor) -> tuple:
    return tuple(t.shape)


def _check_value(name: str, t, history: Tensor) -> None:
    """`t` is a tensor like one slot of `history` (its shape without the first dim, its dtype and device)."""
    check_float_tensor(_OP, name, t)
    if t.shape != history.shape[1:]:
        raise ValueError(f"{_OP}: `{name}` has shape {_shape(t)} but one slot of `history` (shape "
                         f"{_shape(history)}) has shape {_shape(history)[1:]}")
    if t.dtype != history.dtype:
        raise TypeError(f"{_OP}: `{name}` is {t.dtype} but `history` is {history.dtype}")
    if t.device != history.device:
        raise ValueError(f"{_OP}: `{name}` is on {t.device} but `history` is on {history.device}")


def _check(history: Tensor, weights: Tensor, x: Tensor | None = None, out: Tensor | None = None) -> None:
    check_float_tensor(_OP, "history", history)
    if history.dim() < 1 or not 1 <= history.shape[0] <= MAX_SLOTS:
        raise ValueError(f"{_OP}: `history` must be [K, ...] with 1 <= K <= {MAX_SLOTS} stored values, got shape "
                         f"{_shape(history)} (pass the slots the forecast reads, e.g. history[:{MAX_SLOTS}])")
    k = history.shape[0]
    if not isinstance(weights, Tensor):
        raise TypeError(f"{_OP}: `weights` must be a [{k}] float tensor (on the device: no host read, no "
                        f"recompile as the values change), got {type(weights).__name__}")
    if not weights.dtype.is_floating_point:
        raise TypeError(f"{_OP}: `weights` must be a float tensor, got {weights.dtype}")
    if weights.shape != (k,):
        raise ValueError(f"{_OP}: `weights` has shape {_shape(weights)} but `history` holds {k} values: it must "
                         f"be [{k}], one weight per slot")
    if weights.device != history.device and weights.device.type != "cpu":
        raise ValueError(f"{_OP}: `weights` is on {weights.device} but `history` is on {history.device}")
    if x is not None:
        _check_value("x", x, history)
    if out is not None:
        _check_value("out", out, history)


def _empty(history: Tensor, weights: Tensor, x: Tensor | None = None) -> Tensor:
    return torch.empty(history.shape[1:], dtype=history.dtype, device=history.device)


def _run(history: Tensor, weights: Tensor, x: Tensor | None, out: Tensor) -> None:
    launch = Launch(OP, out.device)
    if launch.backend == "reference":
        out.copy_(reference_forecast(history, weights, x))
        return
    if out.numel() == 0:
        return
    slots = [dense(history[k]) for k in range(history.shape[0])]  # views when each slot is contiguous
    w = weights.to(device=out.device, dtype=torch.float32).contiguous()
    xs = None if x is None else dense(x)
    with writable_dense(out, *slots, *(() if x is None else (x,))) as o:
        if launch.backend == "triton":
            launch.triton().launch(o, slots, w, xs)
            return
        launch(DTYPE_CODES[o.dtype], o.data_ptr(), [s.data_ptr() for s in slots], w.data_ptr(),
               0 if xs is None else xs.data_ptr(), o.numel())


def _direct(mod, history: Tensor, weights: Tensor, x: Tensor | None) -> Tensor:
    """`_run` on the CPU module for a plain eager CPU call (OpDef.cpu_direct; a fresh output overlaps nothing): the
    per-module forecast of TaylorSeer's hooks pays the op layers on every forecast module of a call (16 us through
    them, 5 us here on a [2, 1, 48, 16] ring: benchmarks/bench_overhead_taylorseer.py)."""
    out = torch.empty(history.shape[1:], dtype=history.dtype)
    n = out.numel()
    if n:
        if history.is_contiguous():  # the slots' addresses without a view per slot (about 1 us each)
            base, step = history.data_ptr(), history.stride(0) * history.element_size()
            ptrs = [base + k * step for k in range(history.shape[0])]
        else:
            slots = [dense(history[k]) for k in range(history.shape[0])]  # alive until the launcher returns
            ptrs = [s.data_ptr() for s in slots]
        w = weights if weights.dtype == torch.float32 and weights.is_contiguous() else \
            weights.to(torch.float32).contiguous()
        xs = None if x is None else dense(x)
        mod.forecast(DTYPE_CODES[out.dtype], out.data_ptr(), ptrs, w.data_ptr(), 0 if xs is None else xs.data_ptr(), n)
    return out


OP = define(
    "forecast",
    elementwise=True,
    schema="(Tensor history, Tensor weights, Tensor? x) -> Tensor",
    out="Tensor(a!) out",
    check=_check,
    fake=_empty,
    run_out=_run,
    reference=reference_forecast,
    triton="forecast",
    launcher="forecast",
    example=lambda dev: (_randn(dev, 3, 2, 77), torch.tensor([1.5, -0.75, 0.25], device=dev), _randn(dev, 2, 77)),
    cpu_direct=_direct,
)


def forecast(history: Tensor, weights: Tensor, x: Tensor | None = None, *, out: Tensor | None = None) -> Tensor:
    """y = x + weights[0] * history[0] + ... + weights[K - 1] * history[K - 1] in one pass.

    The forecast of a reused quantity from its last K computed values: plain reuse is one-hot weights,
    a Taylor (Lagrange) extrapolation over the step index or timestep is runtime.forecast.History.weights,
    FasterCache's attention extrapolation `newer + w * (newer - older)` is extrapolation_weights(w) over
    (newer, older).

    Args:
        history: [K, *] stored values, 1 <= K <= 4 (a ring buffer: the order of the slots does not matter, the
            weights say which is which); fp32, fp16 or bf16, any strides (each slot contiguous: no copy).
        weights: [K] float tensor, one weight per slot, best fp32 on history's device (computed there, so no
            host read and no recompile as the values change). A slot of weight exactly 0 is left out of the sum
            (NaN or Inf left in an unused slot does not reach the result).
        x: optional [*] tensor like one slot (e.g. the input the forecast residual is added to); None adds 0.
        out: optional [*] tensor like one slot to write into (may be x itself).

    Returns:
        [*] tensor in history's dtype, accumulated in fp32 in slot order and rounded once.
    """
    return OP(history, weights, x, out=out)


def extrapolation_weights(weight) -> Tensor:
    """The [2] fp32 weights (1 + w, -w) under which forecast over (newer, older) is FasterCache's extrapolation
    newer + w * (newer - older) (docs/algorithms.md section 1), computed where `weight` is (a 0-d tensor stays
    on its device; a Python float gives CPU weights). The two forms differ only in fp32 rounding (a few ulps)."""
    w = weight.to(torch.float32) if isinstance(weight, Tensor) else torch.tensor(float(weight))
    if w.dim() != 0:
        raise ValueError(f"{_OP}: the extrapolation weight must be a Python float or a 0-d tensor, got shape "
                         f"{_shape(w)}")
    return torch.stack([1 + w, -w])
