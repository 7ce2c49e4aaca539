import pytest
import torch
from conftest import FAST_CPU_BACKENDS, backend_context, device, strided_layouts
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_fft import rel_err, spec_deltas, spec_reconstruct

import fastercache_kernels as fk
from fastercache_kernels import reference as R
from fastercache_kernels.testing import assert_matches_reference, noncontiguous, quirk_ulps, strided_randn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(0,), (1,), (7,), (111,), (123, 77), ((1 << 20) + 3,)]
OPS = ["plain", "guided"]
A, B, S = 1.1, 0.87, 6.0


def _inputs(shape, dtype, contiguous, delta_dtype=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    computed = torch.randn(shape, generator=g).to(device()).to(dtype)
    low = torch.randn(shape, generator=g).to(device()).to(delta_dtype or dtype)
    high = torch.randn(shape, generator=g).to(device()).to(delta_dtype or dtype)
    if not contiguous:
        computed, low, high = noncontiguous(computed), noncontiguous(low), noncontiguous(high)
    return computed, low, high


def _call(op, computed, low, high, a=A, b=B, s=S, **kw):
    if op == "plain":
        return fk.ops.cfg_recombine(computed, low, high, a, b, **kw)
    return fk.ops.cfg_recombine_guided(computed, low, high, a, b, s, **kw)


def _ref(op, computed, low, high, a=A, b=B, s=S):
    if op == "plain":
        return R.cfg_recombine(computed, low, high, a, b)
    return R.cfg_recombine_guided(computed, low, high, a, b, s)


def _eager(op, computed, low, high, a=A, b=B, s=S):
    # the formula as plain PyTorch in computed's dtype
    lo, hi = low.to(computed.dtype), high.to(computed.dtype)
    if op == "plain":
        return computed + a * lo + b * hi
    return computed + (1 - s) * (a * lo + b * hi)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_matches_reference(backend, op, dtype, shape, contiguous):
    computed, low, high = _inputs(shape, dtype, contiguous)
    out = _call(op, computed, low, high, *(torch.tensor(v, device=device()) for v in (A, B, S)))
    assert out.dtype == dtype and out.shape == computed.shape
    assert_matches_reference(out, _ref(op, computed, low, high), _eager(op, computed, low, high),
                             what=f"{backend} {op} {dtype} {shape}", ulps=quirk_ulps(backend, dtype))


@pytest.mark.parametrize("delta_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_mixed_storage_dtypes(backend, op, dtype, delta_dtype):
    # low/high in a cache storage dtype that differs from computed's: the result is in computed's dtype
    computed, low, high = _inputs((3, 37, 41), dtype, True, delta_dtype, seed=5)
    out = _call(op, computed, low, high)
    assert out.dtype == dtype
    assert_matches_reference(out, _ref(op, computed, low, high), _eager(op, computed, low, high),
                             what=f"{backend} {op} {dtype}/{delta_dtype}", ulps=quirk_ulps(backend, dtype))


def test_cpu_rounds_exactly_like_the_reference():
    # fp32 math in torch's order with one rounding (no FMA contraction): bit-identical to the reference
    for op in OPS:
        for dtype in DTYPES:
            for delta_dtype in DTYPES:
                computed, low, high = _inputs((4099,), dtype, True, delta_dtype, seed=3)
                computed[:3] = torch.tensor([6e4, -6e4, 1e-7]).to(dtype)  # fp16 overflow and subnormal results
                for b in FAST_CPU_BACKENDS:
                    if not b.startswith("cpu"):
                        continue
                    with backend_context(b):
                        out = _call(op, computed, low, high)
                    assert torch.equal(out, _ref(op, computed, low, high)), (op, dtype, delta_dtype, b)


@pytest.mark.parametrize("op", OPS)
def test_out_variants(backend, op):
    computed, low, high = _inputs((7, 13), torch.float32, True, torch.bfloat16)
    expected = _ref(op, computed, low, high)
    out = torch.empty_like(computed)
    assert _call(op, computed, low, high, out=out) is out
    assert_matches_reference(out, expected)
    strided = noncontiguous(torch.zeros_like(computed))
    _call(op, computed, low, high, out=strided)
    assert_matches_reference(strided, expected)
    inplace = computed.clone()
    _call(op, inplace, low, high, out=inplace)  # out aliasing computed exactly
    assert_matches_reference(inplace, expected)
    # out partly overlapping an input: must not read what it already wrote
    buf = torch.randn(20, device=device())
    c, o = buf[1:11], buf[0:10]
    lo, hi = torch.randn(10, device=device()), torch.randn(10, device=device())
    expected = _ref(op, c.clone(), lo, hi)
    _call(op, c, lo, hi, out=o)
    assert_matches_reference(o, expected)


@pytest.mark.parametrize(
    "weight", [0.0, 1, -0.25, torch.tensor(0.3), torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.5).half()]
)
def test_scalar_forms(backend, weight):
    computed, low, high = _inputs((33,), torch.float32, True)
    w = float(weight)
    assert_matches_reference(fk.ops.cfg_recombine(computed, low, high, weight, weight),
                             R.cfg_recombine(computed, low, high, w, w))
    assert_matches_reference(fk.ops.cfg_recombine_guided(computed, low, high, 1.0, weight, weight),
                             R.cfg_recombine_guided(computed, low, high, 1.0, w, w))


@pytest.mark.parametrize("op", OPS)
def test_nan_and_inf_propagate(backend, op):
    nan, inf = float("nan"), float("inf")
    computed = torch.tensor([nan, 1.0, inf, 1.0, 1.0, 2.0], device=device())
    low = torch.tensor([0.0, nan, 0.0, inf, 0.0, 1.0], device=device())
    high = torch.tensor([0.0, 0.0, 0.0, 0.0, -inf, 1.0], device=device())
    for dtype in DTYPES:
        out = _call(op, computed.to(dtype), low.to(dtype), high.to(dtype), 1.0, 1.0, 0.0).float()
        assert out[0].isnan() and out[1].isnan()
        assert out[2] == inf and out[3] == inf and out[4] == -inf
        assert out[5] == 4.0


def test_errors_name_the_argument():
    a = torch.randn(4, 5)
    with pytest.raises(ValueError, match="`low` has shape"):
        fk.ops.cfg_recombine(a, torch.randn(5, 4), torch.randn(5, 4), 1.0, 1.0)
    with pytest.raises(TypeError, match="`high` is torch.float16 but `low` is torch.float32"):
        fk.ops.cfg_recombine(a, a, a.half(), 1.0, 1.0)
    with pytest.raises(ValueError, match="`high` has shape"):
        fk.ops.cfg_recombine(a, a, torch.randn(4, 6), 1.0, 1.0)
    with pytest.raises(ValueError, match="`low` is on meta"):
        fk.ops.cfg_recombine(a, torch.empty(4, 5, device="meta"), a, 1.0, 1.0)
    with pytest.raises(TypeError, match="`computed` must be float32"):
        fk.ops.cfg_recombine(a.long(), a, a, 1.0, 1.0)
    with pytest.raises(TypeError, match="`low` must be float32"):
        fk.ops.cfg_recombine(a, a.int(), a.int(), 1.0, 1.0)
    with pytest.raises(ValueError, match="`high_weight` must be a 0-d tensor"):
        fk.ops.cfg_recombine(a, a, a, 1.0, torch.tensor([0.1]))
    with pytest.raises(TypeError, match="`guidance_scale` must be a Python float or a 0-d tensor"):
        fk.ops.cfg_recombine_guided(a, a, a, 1.0, 1.0, "6")
    with pytest.raises(ValueError, match="`out` has shape"):
        fk.ops.cfg_recombine_guided(a, a, a, 1.0, 1.0, 6.0, out=torch.empty(3))
    with pytest.raises(TypeError, match="`out` is torch.bfloat16 but `computed` is torch.float32"):
        fk.ops.cfg_recombine(a, a.bfloat16(), a.bfloat16(), 1.0, 1.0, out=a.bfloat16())


def test_opcheck():
    for dtype, delta_dtype in [(torch.float32, torch.float32), (torch.float16, torch.float16),
                               (torch.float32, torch.bfloat16)]:
        c, lo, hi = _inputs((5, 7), dtype, True, delta_dtype)
        a, b, s = torch.tensor(A), torch.tensor(B), torch.tensor(S)
        ops = torch.ops.fastercache
        torch.library.opcheck(ops.cfg_recombine.default, (c, lo, hi, a, b))
        torch.library.opcheck(ops.cfg_recombine_out.default, (c, lo, hi, a, b, torch.empty_like(c)))
        torch.library.opcheck(ops.cfg_recombine_guided.default, (c, lo, hi, a, b, s))
        torch.library.opcheck(ops.cfg_recombine_guided_out.default, (c, lo, hi, a, b, s, torch.empty_like(c)))
        torch.library.opcheck(ops.cfg_recombine_guided.default, (noncontiguous(c), lo, hi, a, b, s))


def test_cpu_is_deterministic():
    computed, low, high = _inputs((1 << 18,), torch.bfloat16, True, torch.float32)
    first = fk.ops.cfg_recombine_guided(computed, low, high, A, B, S)
    for _ in range(3):
        assert torch.equal(fk.ops.cfg_recombine_guided(computed, low, high, A, B, S), first)


@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    delta_dtype = draw(st.sampled_from(DTYPES))
    shape, perm, step = draw(strided_layouts())
    scalars = draw(st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=3, max_size=3))
    seed = draw(st.integers(0, 2**16))
    op = draw(st.sampled_from(OPS))
    return op, dtype, delta_dtype, shape, perm, step, scalars, seed


@settings(max_examples=40, deadline=None)
@given(case=_cases())
def test_property_random_layouts(case):
    op, dtype, delta_dtype, shape, perm, step, (a, b, s), seed = case
    g = torch.Generator().manual_seed(seed)
    computed = strided_randn(shape, step, perm, dtype, g)
    low = strided_randn(shape, step, perm, delta_dtype, g)
    high = strided_randn(shape, step, perm, delta_dtype, g)
    ref = _ref(op, computed, low, high, a, b, s)
    for backend in FAST_CPU_BACKENDS:
        with backend_context(backend):
            out = _call(op, computed, low, high, a, b, s)
        assert_matches_reference(out, ref, _eager(op, computed, low, high, a, b, s), what=backend,
                                 ulps=quirk_ulps(backend, dtype))


# ---- against the reference FFT path of docs/algorithms.md section 2 -------------------------------------------------


@pytest.mark.parametrize("hw", [(64, 64), (60, 90), (60, 106), (17, 23)], ids=lambda s: "x".join(map(str, s)))
def test_skip_call_equals_the_spec_fft_reconstruction(fast_backend, hw):
    g = torch.Generator().manual_seed(11)
    shape = (2, 3, *hw)
    # full call: both branches ran; the deltas are taken from them
    other0, computed0 = torch.randn(shape, generator=g).to(device()), torch.randn(shape, generator=g).to(device())
    d_lf, d_hf = spec_deltas(other0, computed0)
    low, high = fk.ops.cfg_residual_split(other0, computed0)
    # skip calls: a new computed branch, the compounding multipliers of docs/algorithms.md section 2
    for j, (a, b) in enumerate([(1.1, 1.0), (1.1**2, 1.15), (1.0, 1.15**3)]):
        computed = torch.randn(shape, generator=g).to(device())
        other_ref = spec_reconstruct(computed, d_lf, d_hf, a, b)
        other = fk.ops.cfg_recombine(computed, low, high, a, b)
        assert rel_err(other, other_ref) <= 1e-5, (j, rel_err(other, other_ref))
        # guided: computed = cond, other = uncond; uncond + s * (cond - uncond)
        for s in (1.0, 6.0, 7.5):
            guided_ref = other_ref + s * (computed - other_ref)
            guided = fk.ops.cfg_recombine_guided(computed, low, high, a, b, s)
            assert rel_err(guided, guided_ref) <= 1e-5, (j, s, rel_err(guided, guided_ref))


def test_spec_check_can_fail():
    # the same comparison with the low and high parts swapped is far off: the check above has teeth
    g = torch.Generator().manual_seed(2)
    other0, computed0 = torch.randn(2, 60, 90, generator=g), torch.randn(2, 60, 90, generator=g)
    d_lf, d_hf = spec_deltas(other0, computed0)
    low, high = fk.ops.cfg_residual_split(other0, computed0)
    computed = torch.randn(2, 60, 90, generator=g)
    ref = spec_reconstruct(computed, d_lf, d_hf, 1.3, 1.0)
    assert rel_err(fk.ops.cfg_recombine(computed, low, high, 1.3, 1.0), ref) <= 1e-5
    assert rel_err(fk.ops.cfg_recombine(computed, high, low, 1.3, 1.0), ref) > 1e-3


def test_bf16_storage_of_the_split_stays_within_bf16_error():
    # deltas kept in bf16 next to an fp32 model: the reconstruction error is that of rounding low and high once
    g = torch.Generator().manual_seed(4)
    other0, computed0 = torch.randn(2, 4, 60, 90, generator=g), torch.randn(2, 4, 60, 90, generator=g)
    d_lf, d_hf = spec_deltas(other0, computed0)
    low, high = fk.ops.cfg_residual_split(other0, computed0, storage_dtype=torch.bfloat16)
    computed = torch.randn(2, 4, 60, 90, generator=g)
    out = fk.ops.cfg_recombine_guided(computed, low, high, 1.1, 1.0, 6.0)
    assert out.dtype == torch.float32
    ref_other = spec_reconstruct(computed, d_lf, d_hf, 1.1, 1.0)
    ref = ref_other + 6.0 * (computed - ref_other)
    err = rel_err(out, ref)
    assert 1e-5 < err <= 5 * 2.0**-8, err  # bf16 rounding shows, and stays at its size
