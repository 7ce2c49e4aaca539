"""fastercache::motion_score: AdaCache's MoReg motion estimate, the normalised difference between frames of a
residual, for one or more frame strides, in one pass."""

from __future__ import annotations

import functools
import numbers

import torch
from torch import Tensor

from ..reference.motion_score import motion_score as reference_motion_score
from ._common import DTYPE_CODES, check_float_tensor, dense
from ._define import Launch, _randn, define
from ._reduce import MOTION_MAX_STRIDES, f32_empty, workspace

_OP = "motion_score"
LAYOUTS = ("BNC", "BCTHW")
__all__ = ["motion_score"]


def _check(residual: Tensor, num_frames: int, strides, layout: str, partials: bool) -> None:
    check_float_tensor(_OP, "residual", residual)
    if layout not in LAYOUTS:
        raise ValueError(f"{_OP}: `layout` must be 'BNC' ([B, T*S, C]) or 'BCTHW' ([B, C, T, H, W]), got {layout!r}")
    if not isinstance(num_frames, numbers.Integral) or isinstance(num_frames, bool) or num_frames < 1:
        raise ValueError(f"{_OP}: `num_frames` must be a positive int, got {num_frames!r}")
    if layout == "BNC":
        if residual.dim() != 3:
            raise ValueError(f"{_OP}: layout 'BNC' needs `residual` of shape [B, T*S, C], got {tuple(residual.shape)}")
        if residual.shape[1] % num_frames:
            raise ValueError(f"{_OP}: `num_frames` = {num_frames} does not divide the token count "
                             f"{residual.shape[1]} of `residual` {tuple(residual.shape)}")
    else:
        if residual.dim() != 5:
            raise ValueError(f"{_OP}: layout 'BCTHW' needs `residual` of shape [B, C, T, H, W], "
                             f"got {tuple(residual.shape)}")
        if residual.shape[2] != num_frames:
            raise ValueError(f"{_OP}: `num_frames` = {num_frames} but `residual` {tuple(residual.shape)} has "
                             f"{residual.shape[2]} frames (dim 2)")
    if not isinstance(strides, (list, tuple)) or not strides:
        raise ValueError(f"{_OP}: `strides` must be a non-empty list of frame strides, got {strides!r}")
    if len(strides) > MOTION_MAX_STRIDES:
        raise ValueError(f"{_OP}: at most {MOTION_MAX_STRIDES} `strides`, got {len(strides)}")
    for s in strides:
        if not isinstance(s, numbers.Integral) or isinstance(s, bool) or not 1 <= s <= num_frames - 1:
            raise ValueError(f"{_OP}: every entry of `strides` must be an int in 1..num_frames-1 = "
                             f"1..{num_frames - 1}, got {s!r}")
    if not isinstance(partials, bool):
        raise TypeError(f"{_OP}: `partials` must be a bool, got {type(partials).__name__}")


def _geometry(residual: Tensor, num_frames: int, layout: str) -> tuple[int, int, int]:
    """(G, T, F): the residual viewed as [G, T, F]."""
    if layout == "BNC":
        b, n, c = residual.shape
        return b, num_frames, n // num_frames * c
    b, c, t, h, w = residual.shape
    return b * c, t, h * w


@functools.lru_cache(maxsize=64)
def _device_strides(strides: tuple, device: torch.device) -> Tensor:
    # The Triton kernels read the strides from memory; keep one copy per (strides, device) rather than copying
    # them to the device on every call.
    return torch.tensor(strides, dtype=torch.int64, device=device)


def _out_shape(strides, partials: bool) -> tuple:
    return (len(strides), 2) if partials else (len(strides),)


def _run(residual: Tensor, num_frames: int, strides: list, layout: str, partials: bool) -> Tensor:
    strides = list(strides)
    launch = Launch(OP, residual.device)
    if launch.backend == "reference":
        return reference_motion_score(residual, num_frames, strides, layout, partials)
    out = f32_empty(_out_shape(strides, partials), residual.device)
    g, t, f = _geometry(residual, num_frames, layout)
    p = dense(residual)
    if launch.backend == "triton":
        tk = launch.triton()
        ws = workspace(tk.workspace_numel(g, t, f, len(strides)), p.device)
        tk.launch(out, ws, p, _device_strides(tuple(strides), p.device), g, t, f, partials)
        return out
    host = torch.tensor(strides, dtype=torch.int64)
    ws = launch.cuda_workspace("motion_score_workspace", g, t, f, len(strides))
    launch(DTYPE_CODES[p.dtype], out.data_ptr(), p.data_ptr(), g, t, f, host.data_ptr(), len(strides), partials,
           cuda=ws)
    return out


OP = define(
    "motion_score",
    schema="(Tensor residual, SymInt num_frames, SymInt[] strides, str layout, bool partials) -> Tensor",
    check=_check,
    fake=lambda residual, num_frames, strides, layout, partials: f32_empty(_out_shape(strides, partials),
                                                                           residual.device),
    compute=_run,
    reference=reference_motion_score,
    triton="motion_score",
    example=lambda dev: (_randn(dev, 2, 13 * 77, 16), 13, [1, 2, 5], "BNC", False),
    launcher="motion_score",
)


def motion_score(residual: Tensor, num_frames: int, strides=(1,), layout: str = "BNC", *,
                 partials: bool = False) -> Tensor:
    """MoReg's normalised frame difference (AdaCache, docs/algorithms.md section 4), per frame stride k:

        m_k = sum_t |p[t+k] - p[t]| / (sum |p[k..T-1]| + sum |p[0..T-1-k]|)

    summed over the batch (and channels) and all t = 0..T-1-k, in one pass with fp32 accumulation (per-frame sums
    of |p_t| give every denominator). The (m / 0.385)^8 transform belongs to the policy. Deterministic.

    Args:
        residual: [B, T*S, C] frame-major tokens (layout "BNC") or [B, C, T, H, W] (layout "BCTHW"); fp32, fp16
            or bf16, any strides.
        num_frames: T; must divide the token count (BNC) or equal dim 2 (BCTHW).
        strides: frame strides k, each in 1..T-1 (at most 64 of them).
        layout: "BNC" or "BCTHW".
        partials: return [len(strides), 2] raw (num, den) sums instead, e.g. to all-reduce them.

    Returns:
        fp32 [len(strides)] (or [len(strides), 2]).
    """
    strides = [strides] if isinstance(strides, numbers.Integral) else list(strides)
    _check(residual, num_frames, strides, layout, partials)  # here too: schema errors would not name the argument
    return OP(residual, num_frames, strides, layout, partials, checked=True)
