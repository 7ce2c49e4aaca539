import functools
import importlib

import pytest
import torch
from conftest import FAST_CPU_BACKENDS, backend_context, device
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_fft import spec_deltas, spec_mask, spec_to_space

import fastercache_kernels as fk
from fastercache_kernels.reference.cfg_residual_split import radius, shifted_mask
from fastercache_kernels.testing import noncontiguous, quirk_ulps

split_mod = importlib.import_module("fastercache_kernels.ops.cfg_residual_split")  # the module, not the function

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (..., H, W): r = min(H, W) // 5 is 0 (the DC-only path) for the first three, 1, 15, 12 and 12 for the rest
SHAPES = [(0, 4, 6), (1, 1), (1, 7), (7, 111), (123, 77), (2, 3, 60, 90), (2, 16, 60, 106)]


def _inputs(shape, dtype, contiguous, seed=0):
    g = torch.Generator().manual_seed(seed)
    other = torch.randn(shape, generator=g).to(device()).to(dtype)
    computed = torch.randn(shape, generator=g).to(device()).to(dtype)
    if not contiguous:
        other, computed = noncontiguous(other), noncontiguous(computed)
    return other, computed


def _spec(other, computed, divisor=5):
    """low and high as the reference path of docs/algorithms.md section 2 has them (the deltas, back in space, fp32),
    and the scale of the pair, max(|low|, |high|)."""
    if other.numel() == 0:  # MKL's FFT rejects empty batches
        return torch.empty(other.shape), torch.empty(other.shape), 0.0
    d_lf, d_hf = spec_deltas(other, computed, divisor)
    low, high = spec_to_space(d_lf), spec_to_space(d_hf)
    return low, high, max(low.abs().max().item(), high.abs().max().item())


@functools.lru_cache(maxsize=64)
def _grid_case(shape, dtype, contiguous):
    """Inputs and docs/algorithms.md results of one grid case, computed once for all backends (the spec path is the
    slow part)."""
    other, computed = _inputs(shape, dtype, contiguous)
    return other, computed, _spec(other, computed)


def assert_spec_close(out, ref, *, scale, what="", ulps=0):
    """fp32: within 1e-5 of `scale` (max |low|, |high| of the pair: FFT rounding is relative to the residual's
    size, and high = R - low is small where the mask keeps nearly everything). Half dtypes: that plus rounding
    once to the dtype (half an ulp, `ulps` more for the Triton interpreter's truncation)."""
    assert out.shape == ref.shape, what
    if ref.numel() == 0:
        return
    err = (out.float() - ref).abs()
    eps = torch.finfo(out.dtype).eps if out.dtype != torch.float32 else 0.0
    bound = 1e-5 * scale + (0.5 + ulps) * eps * ref.abs() + 1e-30
    worst = (err - bound).max().item()
    assert worst <= 0, f"{what}: error exceeds the bound by {worst:g} (max error {err.max().item():g})"


def test_radius_examples():
    assert (radius(64, 64), radius(60, 90), radius(60, 106), radius(432 // 8, 768 // 8, 200)) == (12, 12, 12, 0)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_spec_path(backend, dtype, shape, contiguous):
    other, computed, (ref_low, ref_high, scale) = _grid_case(shape, dtype, contiguous)
    low, high = fk.ops.cfg_residual_split(other, computed)
    assert low.dtype == high.dtype == dtype and low.shape == high.shape == other.shape
    what = f"{backend} {dtype} {shape}"
    assert_spec_close(low, ref_low, what=what + " low", ulps=quirk_ulps(backend, dtype), scale=scale)
    assert_spec_close(high, ref_high, what=what + " high", ulps=quirk_ulps(backend, dtype), scale=scale)


@pytest.mark.parametrize("divisor", [1, 2, 3, 5, 200])
def test_every_radius_matches_spec_path(fast_backend, divisor):
    # divisors 1 and 2 give r >= min(H, W) / 2, beyond where docs/algorithms.md states the mask is Hermitian-symmetric:
    # the real transforms still match the complex reference (the mask is symmetric for every r)
    for shape in [(3, 60, 90), (2, 64, 64), (2, 9, 8), (2, 8, 9)]:
        other, computed = _inputs(shape, torch.float32, True, seed=divisor)
        low, high = fk.ops.cfg_residual_split(other, computed, divisor)
        ref_low, ref_high, scale = _spec(other, computed, divisor)
        assert_spec_close(low, ref_low, what=f"{shape} // {divisor} low", scale=scale)
        assert_spec_close(high, ref_high, what=f"{shape} // {divisor} high", scale=scale)
        h, w = shape[-2:]
        kind = split_mod.lowpass_plan(h, w, min(h, w) // divisor, torch.device("cpu"))[0]
        assert kind == ("dc" if min(h, w) // divisor == 0 else "real")


def test_mask_orientation_matters():
    # the reference mask indexes H with Y and W with X; with them swapped a non-square split is far off, so the
    # comparison above would catch an orientation mistake
    other, computed = _inputs((2, 60, 90), torch.float32, True)
    low, _ = fk.ops.cfg_residual_split(other, computed)
    ref_low, _, scale = _spec(other, computed)
    assert_spec_close(low, ref_low, scale=scale)
    h, w, r = 60, 90, 12
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    swapped = ((x - h // 2) ** 2 + (y - w // 2) ** 2 <= r * r).float()
    assert not torch.equal(swapped, spec_mask(h, w, r))
    res = (other - computed).float()
    wrong = spec_to_space(torch.fft.fftshift(torch.fft.fft2(res), dim=(-2, -1)) * swapped)
    assert (wrong - ref_low).abs().max() > 1e-2


def test_complex_fallback_matches(monkeypatch):
    # a mask that failed the symmetry check would take fft2 / ifft2; that path is exercised here by forcing it
    other, computed = _inputs((2, 3, 60, 90), torch.float32, True)
    ref_low, ref_high, scale = _spec(other, computed)
    real_plan = split_mod.lowpass_plan

    def forced(h, w, r, device):
        kind, _ = real_plan(h, w, r, device)
        if kind == "dc":
            return kind, None
        return "complex", torch.fft.ifftshift(shifted_mask(h, w, r, device)).float()

    monkeypatch.setattr(split_mod, "lowpass_plan", forced)
    with fk.use_backend("cpu"):
        low, high = fk.ops.cfg_residual_split(other, computed)
    assert_spec_close(low, ref_low, scale=scale)
    assert_spec_close(high, ref_high, scale=scale)


def test_mask_is_built_once_per_size_and_radius():
    split_mod.lowpass_plan.cache_clear()
    other, computed = _inputs((2, 30, 45), torch.float32, True)
    with fk.use_backend("cpu"):
        for _ in range(3):
            fk.ops.cfg_residual_split(other, computed)
        info = split_mod.lowpass_plan.cache_info()
        assert (info.misses, info.hits) == (1, 2)
        fk.ops.cfg_residual_split(other, computed, 3)  # another radius: another mask
        assert split_mod.lowpass_plan.cache_info().misses == 2


@pytest.mark.parametrize("storage", DTYPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_storage_dtype(backend, dtype, storage):
    other, computed = _inputs((2, 3, 20, 30), dtype, True, seed=7)
    low, high = fk.ops.cfg_residual_split(other, computed, storage_dtype=storage)
    assert low.dtype == high.dtype == storage
    ref_low, ref_high, scale = _spec(other, computed)
    assert_spec_close(low, ref_low, what="low", ulps=quirk_ulps(backend, storage), scale=scale)
    assert_spec_close(high, ref_high, what="high", ulps=quirk_ulps(backend, storage), scale=scale)


def test_out_variants(backend):
    other, computed = _inputs((2, 3, 20, 30), torch.float32, True)
    ref_low, ref_high, scale = _spec(other, computed)
    for dtype in (torch.float32, torch.bfloat16):
        low, high = (torch.empty(other.shape, dtype=dtype, device=device()) for _ in range(2))
        res = fk.ops.cfg_residual_split(other, computed, out=(low, high))
        assert res[0] is low and res[1] is high
        assert_spec_close(low, ref_low, ulps=quirk_ulps(backend, dtype), scale=scale)
        assert_spec_close(high, ref_high, ulps=quirk_ulps(backend, dtype), scale=scale)
    # strided buffers
    low, high = noncontiguous(torch.zeros_like(other)), noncontiguous(torch.zeros_like(other))
    fk.ops.cfg_residual_split(other, computed, out=(low, high))
    assert_spec_close(low, ref_low, scale=scale)
    assert_spec_close(high, ref_high, scale=scale)
    # the outputs may be the inputs' own buffers: R is formed before anything is written
    o, c = other.clone(), computed.clone()
    fk.ops.cfg_residual_split(o, c, out=(o, c))
    assert_spec_close(o, ref_low, scale=scale)
    assert_spec_close(c, ref_high, scale=scale)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf in the interpreter
def test_nan_and_inf_propagate(backend):
    # a non-finite value spreads through its own (H, W) slice's spectrum and nowhere else
    for divisor in (5, 200):
        for bad in (float("nan"), float("inf")):
            other, computed = _inputs((3, 10, 12), torch.float32, True)
            other[1, 4, 5] = bad
            low, high = fk.ops.cfg_residual_split(other, computed, divisor)
            assert torch.isfinite(low[0]).all() and torch.isfinite(low[2]).all() and torch.isfinite(high[2]).all()
            assert not torch.isfinite(low[1]).any()
            assert not torch.isfinite(high[1, 4, 5])


def test_errors_name_the_argument():
    a = torch.randn(3, 4, 5)
    with pytest.raises(ValueError, match="`other` must have at least two dims"):
        fk.ops.cfg_residual_split(torch.randn(5), torch.randn(5))
    with pytest.raises(ValueError, match="`computed` has shape"):
        fk.ops.cfg_residual_split(a, torch.randn(3, 5, 4))
    with pytest.raises(TypeError, match="`computed` is torch.float16"):
        fk.ops.cfg_residual_split(a, a.half())
    with pytest.raises(TypeError, match="`other` must be float32"):
        fk.ops.cfg_residual_split(a.long(), a.long())
    with pytest.raises(ValueError, match="`radius_divisor` must be a positive int"):
        fk.ops.cfg_residual_split(a, a, 0)
    with pytest.raises(TypeError, match="`storage_dtype` must be float32"):
        fk.ops.cfg_residual_split(a, a, 5, torch.int32)
    with pytest.raises(TypeError, match="`out` must be a \\(low, high\\) pair"):
        fk.ops.cfg_residual_split(a, a, out=torch.empty_like(a))
    with pytest.raises(ValueError, match="`low` has shape"):
        fk.ops.cfg_residual_split(a, a, out=(torch.empty(3), torch.empty(3)))
    with pytest.raises(TypeError, match="`high` is torch.bfloat16 but `low` is torch.float32"):
        fk.ops.cfg_residual_split(a, a, out=(torch.empty_like(a), torch.empty_like(a).bfloat16()))
    with pytest.raises(TypeError, match="`out` low is torch.float32 but `storage_dtype` is torch.bfloat16"):
        fk.ops.cfg_residual_split(a, a, 5, torch.bfloat16, out=(torch.empty_like(a), torch.empty_like(a)))
    buf = torch.empty(2, *a.shape)
    with pytest.raises(ValueError, match="low and high share memory"):
        fk.ops.cfg_residual_split(a, a, out=(buf[0], buf[0]))


def test_opcheck():
    ops = torch.ops.fastercache
    for dtype, storage in [(torch.float32, None), (torch.bfloat16, None), (torch.float16, torch.float32)]:
        other, computed = _inputs((2, 12, 10), dtype, True)
        torch.library.opcheck(ops.cfg_residual_split.default, (other, computed, 5, storage))
        torch.library.opcheck(ops.cfg_residual_split.default, (noncontiguous(other), computed, 200, storage))
        st_dtype = storage or dtype
        low, high = torch.empty(other.shape, dtype=st_dtype), torch.empty(other.shape, dtype=st_dtype)
        torch.library.opcheck(ops.cfg_residual_split_out.default, (other, computed, 5, low, high))


def test_cpu_is_deterministic():
    other, computed = _inputs((4, 16, 60, 90), torch.bfloat16, True)
    first = fk.ops.cfg_residual_split(other, computed)
    for _ in range(2):
        low, high = fk.ops.cfg_residual_split(other, computed)
        assert torch.equal(low, first[0]) and torch.equal(high, first[1])


@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    hw = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    divisor = draw(st.integers(1, 7))
    transpose = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return dtype, lead + hw, divisor, transpose, seed


@settings(max_examples=30, deadline=None)
@given(case=_cases())
def test_property_random_shapes(case):
    dtype, shape, divisor, transpose, seed = case
    g = torch.Generator().manual_seed(seed)
    other = torch.randn(shape, generator=g).to(dtype)
    computed = torch.randn(shape, generator=g).to(dtype)
    if transpose:  # a strided layout with the same logical (H, W)
        other = other.transpose(-1, -2).contiguous().transpose(-1, -2)
    ref_low, ref_high, scale = _spec(other, computed, divisor)
    for backend in FAST_CPU_BACKENDS:
        with backend_context(backend):
            low, high = fk.ops.cfg_residual_split(other, computed, divisor)
        assert_spec_close(low, ref_low, what=f"{backend} low", ulps=quirk_ulps(backend, dtype), scale=scale)
        assert_spec_close(high, ref_high, what=f"{backend} high", ulps=quirk_ulps(backend, dtype), scale=scale)
