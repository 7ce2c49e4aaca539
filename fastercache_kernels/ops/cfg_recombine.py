"""fastercache::cfg_recombine(_guided): FasterCache's CFG-Cache reconstruction of the skipped branch, with no FFT.

By linearity (docs/algorithms.md section 2), `real(ifft2(ifftshift(LF(c) + a*dLF + HF(c) + b*dHF)))` equals
`c + a*low + b*high` where (low, high) = cfg_residual_split(other, computed) of the last full call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference import cfg_recombine as reference_recombine
from ..reference import cfg_recombine_guided as reference_guided
from ._common import DTYPE_CODES, as_scalar, check_float_tensor, check_like, check_scalar, run_map
from ._define import _randn, define

__all__ = ["cfg_recombine", "cfg_recombine_guided"]


def _check(op: str, computed: Tensor, low: Tensor, high: Tensor, scalars: dict, out: Tensor | None = None) -> None:
    check_float_tensor(op, "computed", computed)
    check_float_tensor(op, "low", low)
    if low.shape != computed.shape:
        raise ValueError(f"{op}: `low` has shape {tuple(low.shape)} but `computed` has shape {tuple(computed.shape)}")
    if low.device != computed.device:
        raise ValueError(f"{op}: `low` is on {low.device} but `computed` is on {computed.device}")
    check_like(op, "high", high, "low", low)
    for name, s in scalars.items():
        check_scalar(op, name, s, computed.device)
    if out is not None:
        check_like(op, "out", out, "computed", computed)


def _empty(computed: Tensor, *args) -> Tensor:
    return torch.empty(computed.shape, dtype=computed.dtype, device=computed.device)


def _run(d, computed: Tensor, low: Tensor, high: Tensor, *scalars_out: Tensor) -> None:
    *scalars, out = scalars_out
    run_map(d, out, [computed, low, high], scalars, codes=[DTYPE_CODES[out.dtype], DTYPE_CODES[low.dtype]])


# ---- cfg_recombine ----------------------------------------------------------------------------------------------

_OP = "cfg_recombine"


def _check_recombine(computed, low, high, low_weight, high_weight, out=None):
    _check(_OP, computed, low, high, {"low_weight": low_weight, "high_weight": high_weight}, out)


OP = define(
    "cfg_recombine",
    elementwise=True,
    schema="(Tensor computed, Tensor low, Tensor high, Tensor low_weight, Tensor high_weight) -> Tensor",
    out="Tensor(a!) out",
    check=_check_recombine,
    fake=_empty,
    run_out=lambda *args: _run(OP, *args),
    reference=reference_recombine,
    triton="cfg_recombine",
    example=lambda dev: (*(_randn(dev, 2, 4, 30, 45) for _ in range(3)), torch.tensor(1.1), torch.tensor(1.2)),
    launcher="cfg_recombine",
)


def cfg_recombine(computed: Tensor, low: Tensor, high: Tensor, low_weight, high_weight, *,
                  out: Tensor | None = None) -> Tensor:
    """other = computed + low_weight * low + high_weight * high: the CFG branch a skip call did not run.

    Equal, by linearity, to the reference reconstruction `real(ifft2(ifftshift(LF(c) + a*dLF + HF(c) + b*dHF)))`
    of docs/algorithms.md section 2, with (low, high) from `cfg_residual_split(other, computed)` on the last full call.

    Args:
        computed: [*, H, W] the branch this call ran; fp32, fp16 or bf16, any strides.
        low: [*, H, W] the low-frequency part of the residual other - computed; any float dtype (a cache storage
            dtype, e.g. bf16 next to an fp32 model), same shape and device as `computed`.
        high: [*, H, W] the high-frequency part; same shape, dtype and device as `low`.
        low_weight, high_weight: Python floats or 0-d tensors (FasterCache's compounding multipliers a and b).
        out: optional [*, H, W] tensor like `computed` to write into (may be `computed` itself).

    Returns:
        [*, H, W] tensor in computed's dtype, computed in fp32 and rounded once.
    """
    a = as_scalar(_OP, "low_weight", low_weight, computed)
    b = as_scalar(_OP, "high_weight", high_weight, computed)
    return OP(computed, low, high, a, b, out=out)


# ---- cfg_recombine_guided ---------------------------------------------------------------------------------------

_OPG = "cfg_recombine_guided"


def _check_guided(computed, low, high, low_weight, high_weight, guidance_scale, out=None):
    scalars = {"low_weight": low_weight, "high_weight": high_weight, "guidance_scale": guidance_scale}
    _check(_OPG, computed, low, high, scalars, out)


OPG = define(
    "cfg_recombine_guided",
    elementwise=True,
    schema="(Tensor computed, Tensor low, Tensor high, Tensor low_weight, Tensor high_weight, "
           "Tensor guidance_scale) -> Tensor",
    out="Tensor(a!) out",
    check=_check_guided,
    fake=_empty,
    run_out=lambda *args: _run(OPG, *args),
    reference=reference_guided,
    triton="cfg_recombine",
    example=lambda dev: (*(_randn(dev, 2, 4, 30, 45) for _ in range(3)), *map(torch.tensor, (1.1, 1.2, 6.0))),
    launcher="cfg_recombine_guided",
)


def cfg_recombine_guided(computed: Tensor, low: Tensor, high: Tensor, low_weight, high_weight, guidance_scale, *,
                         out: Tensor | None = None) -> Tensor:
    """guided = computed + (1 - guidance_scale) * (low_weight * low + high_weight * high): the CFG-guided output
    of a skip call in one pass.

    With computed = cond and other = uncond reconstructed as in `cfg_recombine`, `uncond + s * (cond - uncond)`
    equals this formula (docs/algorithms.md section 2, "The linear fast form"). When the skip call computes uncond
    instead (CogVideoX), the guided output is computed + s * (a*low + b*high): pass `guidance_scale = 1 - s`.

    Args:
        computed: [*, H, W] the branch this call ran (cond); fp32, fp16 or bf16, any strides.
        low, high: [*, H, W] the split residual other - computed of the last full call; one float dtype, which
            may differ from computed's; same shape and device as `computed`.
        low_weight, high_weight: Python floats or 0-d tensors (the multipliers a and b).
        guidance_scale: Python float or 0-d tensor s (a tensor in compiled code for dynamic guidance).
        out: optional [*, H, W] tensor like `computed` to write into (may be `computed` itself).

    Returns:
        [*, H, W] tensor in computed's dtype, computed in fp32 and rounded once.
    """
    a = as_scalar(_OPG, "low_weight", low_weight, computed)
    b = as_scalar(_OPG, "high_weight", high_weight, computed)
    s = as_scalar(_OPG, "guidance_scale", guidance_scale, computed)
    return OPG(computed, low, high, a, b, s, out=out)
