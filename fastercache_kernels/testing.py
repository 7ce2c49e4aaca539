"""Test helpers shared by tests/ and benchmarks/: the one tolerance table and the accuracy rule.

The rule (flash-attention's): against an fp32 reference, a fast path's error may be at most twice the error of
plain PyTorch computing the same formula in the input dtype, plus a small absolute floor; where no eager
comparison is given, the table's tolerance applies.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

# rtol is a few units in the last place of the dtype: fast paths compute in fp32 and round once, the
# Triton interpreter truncates fp32 -> bf16 (1 ulp), GPU code may contract to FMA.
TOLERANCES = {
    torch.float32: dict(rtol=4e-6, atol=1e-6),
    torch.float16: dict(rtol=2e-3, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-4),
}


def tol(dtype: torch.dtype) -> dict:
    return TOLERANCES[dtype]


def quirk_ulps(backend: str, dtype: torch.dtype) -> int:
    """Extra units in the last place a backend may need: the Triton interpreter truncates fp32 -> bf16."""
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return 1 if backend == "triton" and interpreting and dtype == torch.bfloat16 else 0


def assert_matches_reference(
    out: Tensor, ref: Tensor, eager: Tensor | None = None, *, what: str = "", ulps: int = 0
) -> None:
    """`out` (any dtype) against `ref` (the fp32 reference rounded to out's dtype, or fp32).

    NaN must be where the reference has NaN; infinities must match exactly. `ulps` widens the eager rule by that
    many units in the last place of out's dtype (see quirk_ulps).
    """
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    t = tol(out.dtype)
    o, r = out.float(), ref.float()
    torch.testing.assert_close(o, r, rtol=t["rtol"], atol=t["atol"], equal_nan=True, msg=lambda m: f"{what}: {m}")
    if eager is not None and out.numel():
        finite = torch.isfinite(r)
        err = (o - r)[finite].abs().max().item() if finite.any() else 0.0
        eager_err = (eager.float() - r)[finite].abs().max().item() if finite.any() else 0.0
        slack = ulps * torch.finfo(out.dtype).eps * r[finite].abs().max().item() if finite.any() else 0.0
        assert err <= 2 * eager_err + t["atol"] + slack, f"{what}: error {err:g} > 2 x eager error {eager_err:g}"


def noncontiguous(t: Tensor) -> Tensor:
    """A non-contiguous tensor equal to `t` (every other element of a buffer twice as long in the last dim)."""
    if t.dim() == 0:
        return t
    buf = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    view = buf[..., ::2]
    view.copy_(t)
    assert t.numel() <= 1 or not view.is_contiguous()
    return view


# Reductions (feature_diff, residual_diff_update, motion_score) return fp32 metrics of many elements. They are
# checked against a float64 truth computed from the same (already rounded) inputs, so only the fp32 accumulation
# is measured, whatever the input dtype. Each backend sums blocks of at most a few thousand terms and combines
# the blocks by a tree: the rounding errors, of random sign, stay within a few ulps (measured: at most 2.2 ulps of
# the result on 7 .. 4M elements for every metric and backend), and the worst case grows with the tree depth,
# so the allowance is 4 + 2 * log2(n) fp32 ulps (2.6e-6 relative at 1M elements).
def reduction_rtol(n: int) -> float:
    import math

    return torch.finfo(torch.float32).eps * (4 + 2 * math.log2(n + 1))


def assert_reduction_close(out: Tensor, truth: Tensor, n: int, *, absolute: bool = False, what: str = "") -> None:
    """`out` (fp32) against `truth` (float64): NaN where truth is NaN, equal infinities, and elsewhere
    |out - truth| <= reduction_rtol(n) * |truth| (or * max(|truth|, 1) when `absolute`, for quantities such as
    1 - cos whose error is bounded by the magnitudes of the sums rather than by the result)."""
    assert out.dtype == torch.float32, f"{what}: dtype {out.dtype}, expected float32"
    assert out.shape == truth.shape, f"{what}: shape {tuple(out.shape)} != truth {tuple(truth.shape)}"
    o, t = out.double().cpu(), truth.double().cpu()
    assert torch.equal(o.isnan(), t.isnan()), \
        f"{what}: NaN pattern {o.flatten().tolist()[:8]} vs truth {t.flatten().tolist()[:8]}"
    inf = t.isinf()
    assert torch.equal(o[inf], t[inf]), f"{what}: infinities {o[inf].tolist()} vs {t[inf].tolist()}"
    fin = t.isfinite()
    scale = t[fin].abs().clamp_min(1.0) if absolute else t[fin].abs()
    err, allowed = (o[fin] - t[fin]).abs(), reduction_rtol(n) * scale
    assert bool((err <= allowed).all()), (
        f"{what}: error {(err / scale.clamp_min(1e-300)).max().item():.3g} relative > {reduction_rtol(n):.3g} "
        f"(out {o.flatten().tolist()[:8]}, truth {t.flatten().tolist()[:8]})"
    )


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo, or 0 where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        return 0


def skip_unless_memory(need: int) -> None:
    """Skips the calling test, saying why, when less than `need` bytes of memory are available."""
    import pytest

    have = available_memory_bytes()
    if have < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB free memory, {have / 2**30:.1f} GiB available")


def strided_randn(shape, step: int, perm, dtype: torch.dtype, generator: torch.Generator,
                  scale: float = 1.0) -> Tensor:
    """scale * N(0, 1) values of `shape` seen through every `step`-th element of a larger buffer, then permuted
    by `perm`: the non-contiguous layouts of the property tests (draws from `generator` in a fixed order)."""
    big = [s * step for s in shape]
    sl = tuple(slice(None, None, step) for _ in shape)
    return (scale * torch.randn(big, generator=generator)).to(dtype)[sl].permute(perm)
