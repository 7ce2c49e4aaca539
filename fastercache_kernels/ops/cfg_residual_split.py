"""fastercache::cfg_residual_split: FasterCache's CFG-Cache frequency split, in the linear form of
docs/algorithms.md section 2.

The reference splits both branches, `LF = M * fftshift(fft2(y))`, `HF = (1 - M) * ...`, and stores complex deltas
`dLF = LF(other) - LF(computed)`, `dHF = ...`. Since fft2, the shift and the mask are linear and M + (1 - M) = 1,
the same information is the real pair `low = lowpass(R)`, `high = R - low` with `R = other - computed`: one FFT
pair instead of two forward FFTs, real storage instead of complex, and a skip call needs no FFT at all.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..reference import cfg_residual_split as reference_split
from ..reference.cfg_residual_split import radius, shifted_mask
from ._common import DTYPE_CODES, FLOAT_DTYPES, check_float_tensor, check_like, run_map
from ._define import Launch, _randn, define

_OP = "cfg_residual_split"
__all__ = ["cfg_residual_split"]


def _check(other: Tensor, computed: Tensor, radius_divisor, storage_dtype, low=None, high=None) -> None:
    check_float_tensor(_OP, "other", other)
    check_like(_OP, "computed", computed, "other", other)
    if other.dim() < 2:
        raise ValueError(f"{_OP}: `other` must have at least two dims (..., H, W), got shape {tuple(other.shape)}")
    if isinstance(radius_divisor, bool) or not isinstance(radius_divisor, (int, torch.SymInt)) or radius_divisor < 1:
        raise ValueError(f"{_OP}: `radius_divisor` must be a positive int, got {radius_divisor!r}")
    if storage_dtype is not None and storage_dtype not in FLOAT_DTYPES:
        raise TypeError(f"{_OP}: `storage_dtype` must be float32, float16 or bfloat16, got {storage_dtype}")
    if low is None:
        return
    check_float_tensor(_OP, "low", low)
    if low.shape != other.shape:
        raise ValueError(f"{_OP}: `low` has shape {tuple(low.shape)} but `other` has shape {tuple(other.shape)}")
    if low.device != other.device:
        raise ValueError(f"{_OP}: `low` is on {low.device} but `other` is on {other.device}")
    check_like(_OP, "high", high, "low", low)
    if storage_dtype is not None and low.dtype != storage_dtype:
        raise TypeError(f"{_OP}: `low` is {low.dtype} but `storage_dtype` is {storage_dtype}")


def _byte_range(t: Tensor) -> tuple[int, int]:
    start = t.data_ptr()
    return start, start + (1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))) * t.element_size()


def _check_disjoint(low: Tensor, high: Tensor) -> None:
    if low.numel() == 0 or low.untyped_storage().data_ptr() != high.untyped_storage().data_ptr():
        return
    (a0, a1), (b0, b1) = _byte_range(low), _byte_range(high)
    if a0 < b1 and b0 < a1:
        raise ValueError(f"{_OP}: `out` low and high share memory; they must be separate buffers")


@functools.lru_cache(maxsize=64)
def lowpass_plan(height: int, width: int, r: int, device: torch.device) -> tuple[str, Tensor | None]:
    """How the low-pass of an [..., H, W] fp32 tensor is computed, with its mask built once per (H, W, r, device).

    "dc": r == 0 keeps only frequency 0, the mean over (H, W) (Vchitect's // 200): no FFT.
    "real": real transforms with the mask's half in natural (unshifted) frequency order, cut to the columns
    k_w <= r where it is nonzero: [H, min(r, W // 2) + 1]. Valid when the mask is Hermitian-symmetric,
    M[k] == M[-k], so the filtered spectrum stays that of a real tensor and irfft2 equals the real part of the
    complex ifft2. The reference mask depends on (k_h^2 + k_w^2) of the signed frequency fftshift assigns to
    each bin, which is symmetric for every r (including r >= min(H, W) / 2, where docs/algorithms.md only claims
    it); the check below is kept so a mask that is not would take the complex path.
    "complex": fft2 / ifft2 with the full mask, real part.
    """
    if r == 0:
        return "dc", None
    mask = torch.fft.ifftshift(shifted_mask(height, width, r, device))  # frequency 0 back at [0, 0]
    rows = (-torch.arange(height, device=device)) % height
    cols = (-torch.arange(width, device=device)) % width
    if torch.equal(mask, mask[rows][:, cols]):
        keep = min(r, width // 2) + 1
        assert not mask[:, keep : width // 2 + 1].any()
        return "real", mask[:, :keep].to(torch.float32).contiguous()
    return "complex", mask.to(torch.float32)


def lowpass(residual: Tensor, r: int) -> Tensor:
    """The low-pass of the fp32 [..., H, W] tensor `residual`, fp32 (an expanded view on the "dc" path)."""
    h, w = residual.shape[-2:]
    kind, mask = lowpass_plan(h, w, r, residual.device)
    if kind == "dc":
        return residual.mean(dim=(-2, -1), keepdim=True).expand(residual.shape)
    if kind == "real":
        # irfft2(M * rfft2(R), s=(H, W)) taken one dim at a time: the transforms over H run only on the columns
        # the mask keeps (13 of 46 at 60x90), and irfft over W zero-pads the rest. Same result; measured on the
        # 2-core EPYC dev machine, one thread, fp32 [13, 16, 60, 90]: 2.6 ms against 4.8 ms for rfft2 / irfft2.
        spec = torch.fft.rfft(residual, dim=-1)[..., : mask.shape[-1]]
        spec = torch.fft.fft(spec, dim=-2)
        spec.mul_(mask)
        spec = torch.fft.ifft(spec, dim=-2)
        return torch.fft.irfft(spec, n=w, dim=-1)
    spec = torch.fft.fft2(residual)
    spec.mul_(mask)
    return torch.fft.ifft2(spec).real


def _difference(out: Tensor, a: Tensor, b: Tensor) -> None:
    """out = a - b in fp32, stored in out's dtype (a and b share one dtype): one fused pass on every backend."""
    run_map(OP, out, [a, b], [], codes=[DTYPE_CODES[out.dtype], DTYPE_CODES[a.dtype]],
            reference=lambda x, y: x.float() - y.float())


def _split(other: Tensor, computed: Tensor, radius_divisor: int, dtype: torch.dtype,
           low: Tensor | None, high: Tensor | None) -> tuple[Tensor, Tensor]:
    """Writes (low, high) in `dtype` into the given buffers, or new ones when None."""
    if low is None:
        high = torch.empty(other.shape, dtype=dtype, device=other.device)
    if other.numel() == 0:
        return (torch.empty_like(high) if low is None else low), high
    if Launch(OP, other.device).backend == "reference":
        lo, hi = reference_split(other, computed, radius_divisor, dtype)
        if low is None:
            return lo, hi
        low.copy_(lo)
        high.copy_(hi)
        return low, high
    res = torch.empty(other.shape, dtype=torch.float32, device=other.device)
    _difference(res, other, computed)  # R = other - computed, fp32
    lo = lowpass(res, radius(*other.shape[-2:], radius_divisor))
    _difference(high, res, lo)  # high = R - low, rounded once to the storage dtype
    if low is None:
        low = lo.to(dtype).contiguous()  # no copy when irfft already gave fp32 (the "dc" view is copied)
    else:
        low.copy_(lo)
    return low, high


def _compute(other: Tensor, computed: Tensor, radius_divisor: int, storage_dtype) -> tuple[Tensor, Tensor]:
    dtype = other.dtype if storage_dtype is None else storage_dtype
    return _split(other, computed, radius_divisor, dtype, None, None)


def _empty(other: Tensor, computed: Tensor, radius_divisor: int, storage_dtype) -> tuple[Tensor, Tensor]:
    dtype = other.dtype if storage_dtype is None else storage_dtype
    return (torch.empty(other.shape, dtype=dtype, device=other.device),
            torch.empty(other.shape, dtype=dtype, device=other.device))


def _run_out(other: Tensor, computed: Tensor, radius_divisor: int, low: Tensor, high: Tensor) -> None:
    _check_disjoint(low, high)
    _split(other, computed, radius_divisor, low.dtype, low, high)


OP = define(
    "cfg_residual_split",
    schema="(Tensor other, Tensor computed, SymInt radius_divisor, ScalarType? storage_dtype) -> (Tensor, Tensor)",
    out="Tensor(a!) low, Tensor(b!) high",
    out_drop=("storage_dtype",),
    check=_check,
    check_out=lambda other, computed, radius_divisor, low, high: _check(other, computed, radius_divisor, None, low,
                                                                        high),
    fake=_empty,
    compute=_compute,
    run_out=_run_out,
    reference=reference_split,
    triton="cfg_residual_split",
    example=lambda dev: (_randn(dev, 2, 4, 30, 45), _randn(dev, 2, 4, 30, 45), 5, None),
    launcher="cfg_residual_split_diff",
)


def cfg_residual_split(other: Tensor, computed: Tensor, radius_divisor: int = 5, storage_dtype=None, *,
                       out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """(low, high) with R = other - computed (fp32), low = lowpass(R), high = R - low: FasterCache's CFG residual
    split into low and high frequencies over the last two dims, in the linear form (docs/algorithms.md section 2).

    lowpass is the reference's circular mask on the centred spectrum: with Y indexing H (dim -2) and X indexing W
    (dim -1) (meshgrid 'ij'), M = (X - W//2)^2 + (Y - H//2)^2 <= r^2, r = min(H, W) // radius_divisor, applied
    as real(ifft2(ifftshift(M * fftshift(fft2(R))))). Computed with real transforms and a mask cached per
    (H, W, r, device); r == 0 keeps only the mean over (H, W) (no FFT). low = LF(other) - LF(computed) and
    high = HF(other) - HF(computed) of the reference, as real tensors.

    Args:
        other: [*, H, W] the branch a skip call will reconstruct (e.g. uncond); fp32, fp16 or bf16, any strides.
        computed: [*, H, W] the branch skip calls compute; same shape, dtype and device as `other`.
        radius_divisor: r = min(H, W) // radius_divisor (FasterCache 5: 60x90 -> 12; Vchitect 200 -> 0).
        storage_dtype: dtype of low and high (default other's dtype); e.g. bf16 to halve the cache.
        out: optional (low, high), two separate [*, H, W] tensors of one float dtype to write into.

    Returns:
        (low, high), each [*, H, W] in storage_dtype (or out's dtype); high is R - low rounded once.
    """
    if out is None:
        return OP(other, computed, radius_divisor, storage_dtype)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"{_OP}: `out` must be a (low, high) pair of tensors")
    low, high = out
    if storage_dtype is not None and isinstance(low, Tensor) and low.dtype != storage_dtype:
        raise TypeError(f"{_OP}: `out` low is {low.dtype} but `storage_dtype` is {storage_dtype}")
    OP(other, computed, radius_divisor, storage_dtype, out=(low, high))
    return low, high
