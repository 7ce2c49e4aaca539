"""TEMPORARY pure-torch stand-ins for the CFG-Cache ops another helper is building (same public signatures).

The integrator deletes this file at merge; fk.ops then exposes the fused versions under the same names. They are
custom ops in their own namespace (`fastercache_pending`) so torch.compile sees each as one opaque node, as it
will the real ones, and so they can never collide with `fastercache::*`.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ._common import as_scalar


@functools.lru_cache(maxsize=64)
def _lowpass_mask(h: int, w: int, radius_divisor: int, device: torch.device) -> Tensor:
    """SPEC section 2's circular mask, moved back to unshifted FFT order: built once per (H, W, radius, device)."""
    r = min(h, w) // radius_divisor
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    m = ((x - w // 2) ** 2 + (y - h // 2) ** 2 <= r * r).to(torch.float32)
    return torch.fft.ifftshift(m).to(device)


def _split(other: Tensor, computed: Tensor, radius_divisor: int) -> tuple[Tensor, Tensor]:
    r = other.float() - computed.float()
    mask = _lowpass_mask(r.shape[-2], r.shape[-1], radius_divisor, r.device)
    low = torch.fft.ifft2(torch.fft.fft2(r) * mask).real
    return low, r - low


def _check_split(other: Tensor, computed: Tensor) -> None:
    if other.shape != computed.shape:
        raise ValueError(f"cfg_residual_split: `other` has shape {tuple(other.shape)} but `computed` has shape "
                         f"{tuple(computed.shape)}")
    if computed.dim() < 2:
        raise ValueError("cfg_residual_split: `computed` needs at least 2 dims (..., H, W)")


@torch.library.custom_op("fastercache_pending::cfg_residual_split", mutates_args=())
def _cfg_residual_split(other: Tensor, computed: Tensor, radius_divisor: int, storage_dtype: torch.dtype
                        ) -> tuple[Tensor, Tensor]:
    _check_split(other, computed)
    low, high = _split(other, computed, radius_divisor)
    return low.to(storage_dtype), high.to(storage_dtype)


@_cfg_residual_split.register_fake
def _(other, computed, radius_divisor, storage_dtype):
    _check_split(other, computed)
    return (torch.empty(computed.shape, dtype=storage_dtype, device=computed.device),
            torch.empty(computed.shape, dtype=storage_dtype, device=computed.device))


@torch.library.custom_op("fastercache_pending::cfg_residual_split_out", mutates_args=("low", "high"))
def _cfg_residual_split_out(other: Tensor, computed: Tensor, radius_divisor: int, low: Tensor, high: Tensor) -> None:
    _check_split(other, computed)
    lo, hi = _split(other, computed, radius_divisor)
    low.copy_(lo)
    high.copy_(hi)


@_cfg_residual_split_out.register_fake
def _(other, computed, radius_divisor, low, high):
    _check_split(other, computed)


def cfg_residual_split(other: Tensor, computed: Tensor, radius_divisor: int = 5, storage_dtype=None, *, out=None):
    """R = other - computed over the last two dims; low = circular low-pass of R, high = R - low (stand-in)."""
    if out is not None:
        low, high = out
        torch.ops.fastercache_pending.cfg_residual_split_out(other, computed, int(radius_divisor), low, high)
        return low, high
    dtype = computed.dtype if storage_dtype is None else storage_dtype
    return torch.ops.fastercache_pending.cfg_residual_split(other, computed, int(radius_divisor), dtype)


@torch.library.custom_op("fastercache_pending::cfg_recombine", mutates_args=())
def _cfg_recombine(computed: Tensor, low: Tensor, high: Tensor, low_weight: Tensor, high_weight: Tensor) -> Tensor:
    a = low_weight.to(device=computed.device, dtype=torch.float32)
    b = high_weight.to(device=computed.device, dtype=torch.float32)
    return (computed.float() + a * low.float() + b * high.float()).to(computed.dtype)


@_cfg_recombine.register_fake
def _(computed, low, high, low_weight, high_weight):
    return torch.empty_like(computed)


def cfg_recombine(computed: Tensor, low: Tensor, high: Tensor, low_weight, high_weight, *, out=None) -> Tensor:
    """computed + low_weight * low + high_weight * high, in fp32, rounded once to computed's dtype (stand-in)."""
    a = as_scalar("cfg_recombine", "low_weight", low_weight, computed)
    b = as_scalar("cfg_recombine", "high_weight", high_weight, computed)
    res = torch.ops.fastercache_pending.cfg_recombine(computed, low, high, a, b)
    if out is None:
        return res
    return out.copy_(res)


def cfg_recombine_guided(computed: Tensor, low: Tensor, high: Tensor, low_weight, high_weight, guidance_scale, *,
                         out=None) -> Tensor:
    """The guided output uncond + s * (cond - uncond) with computed = cond: computed + (1 - s) * (a*low + b*high)."""
    s = as_scalar("cfg_recombine_guided", "guidance_scale", guidance_scale, computed)
    a = as_scalar("cfg_recombine_guided", "low_weight", low_weight, computed)
    b = as_scalar("cfg_recombine_guided", "high_weight", high_weight, computed)
    return cfg_recombine(computed, low, high, (1 - s) * a, (1 - s) * b, out=out)
