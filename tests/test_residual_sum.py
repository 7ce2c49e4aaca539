import pytest
import torch
from conftest import FAST_CPU_BACKENDS, backend_context, device, strided_layouts
from hypothesis import given, settings
from hypothesis import strategies as st

import fastercache_kernels as fk
from fastercache_kernels import reference as R
from fastercache_kernels.testing import (
    assert_matches_reference, noncontiguous, quirk_ulps, skip_unless_memory, strided_randn,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(0,), (1,), (7,), (111,), (123, 77), ((1 << 20) + 3,)]


def _inputs(shape, dtype, contiguous, count=5, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device()).to(dtype)
    res = [(scale * torch.randn(shape, generator=g).to(device())).to(dtype) for _ in range(count)]
    if not contiguous:
        x, res = noncontiguous(x), [noncontiguous(r) for r in res]
    return x, res


def _eager(x, residuals):
    # what a reuse call does today: one add per cached residual, each rounded to the dtype
    y = x
    for r in residuals:
        y = y + r
    return y


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, dtype, shape, contiguous):
    x, res = _inputs(shape, dtype, contiguous)
    out = fk.ops.residual_sum(x, res)
    assert out.dtype == dtype and out.shape == x.shape
    assert_matches_reference(out, R.residual_sum(x, res), _eager(x, res), what=f"{backend} {dtype} {shape}",
                             ulps=quirk_ulps(backend, dtype))


@pytest.mark.parametrize("count", [0, 1, 4, 7, 56, 64, 65, 130])
def test_residual_counts(backend, count):
    # 56 = AdaCache's 28 blocks x 2 residuals; 65 and 130 cross one and two launch capacities (64) of the
    # Triton and CUDA kernels, which then sum in chunks through an fp32 workspace
    for dtype in (torch.float32, torch.bfloat16):
        x, res = _inputs((3, 333), dtype, True, count, seed=count, scale=0.1)
        out = fk.ops.residual_sum(x, res)
        assert_matches_reference(out, R.residual_sum(x, res), _eager(x, res), what=f"{backend} {count} {dtype}",
                                 ulps=quirk_ulps(backend, dtype))


def test_cpu_sums_exactly_like_the_reference():
    # fp32 accumulation in list order, rounded once: bit-identical to the reference in every dtype
    for dtype in DTYPES:
        for count in (0, 3, 56, 130):
            x, res = _inputs((5000,), dtype, True, count, seed=count)
            x[:2] = torch.tensor([6e4, -6e4]).to(dtype)
            for b in FAST_CPU_BACKENDS:
                if b.startswith("cpu"):
                    with backend_context(b):
                        assert torch.equal(fk.ops.residual_sum(x, res), R.residual_sum(x, res)), (dtype, count, b)


def test_fp32_accumulation_beats_eager_adds():
    # 56 small bf16 residuals: rounding after every add (eager) loses what the fp32 sum keeps
    x, res = _inputs((4096,), torch.bfloat16, True, 56, seed=1, scale=0.05)
    exact = R.residual_sum(x.float(), [r.float() for r in res])
    err = (fk.ops.residual_sum(x, res).float() - exact).abs().max()
    eager_err = (_eager(x, res).float() - exact).abs().max()
    assert err < eager_err / 2, (err, eager_err)


def test_out_variants(backend):
    x, res = _inputs((7, 13), torch.float32, True, 4)
    expected = R.residual_sum(x, res)
    out = torch.empty_like(x)
    assert fk.ops.residual_sum(x, res, out=out) is out
    assert_matches_reference(out, expected)
    strided = noncontiguous(torch.zeros_like(x))
    fk.ops.residual_sum(x, res, out=strided)
    assert_matches_reference(strided, expected)
    y = x.clone()
    fk.ops.residual_sum(y, res, out=y)  # x += sum
    assert_matches_reference(y, expected)
    r2 = [r.clone() for r in res]
    fk.ops.residual_sum(x, r2, out=r2[2])  # out aliasing one residual exactly
    assert_matches_reference(r2[2], expected)
    fk.ops.residual_sum(x, (res[0], res[1]), out=out)  # a tuple is accepted
    assert_matches_reference(out, R.residual_sum(x, res[:2]))
    # out partly overlapping an input
    buf = torch.randn(20, device=device())
    a, o = buf[1:11], buf[0:10]
    rs = [torch.randn(10, device=device()) for _ in range(3)]
    expected = R.residual_sum(a.clone(), rs)
    fk.ops.residual_sum(a, rs, out=o)
    assert_matches_reference(o, expected)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf in the interpreter
def test_nan_and_inf_propagate(backend):
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([nan, 1.0, inf, 1.0, 1.0], device=device())
    r1 = torch.tensor([0.0, nan, 0.0, inf, 1.0], device=device())
    r2 = torch.tensor([0.0, 0.0, 1.0, -inf, 1.0], device=device())
    for dtype in DTYPES:
        out = fk.ops.residual_sum(x.to(dtype), [r1.to(dtype), r2.to(dtype)]).float()
        assert out[0].isnan() and out[1].isnan() and out[3].isnan()  # inf - inf
        assert out[2] == inf and out[4] == 3.0


def test_errors_name_the_argument():
    a = torch.randn(4, 5)
    with pytest.raises(ValueError, match="`residuals\\[1\\]` has shape"):
        fk.ops.residual_sum(a, [a, torch.randn(5, 4)])
    with pytest.raises(TypeError, match="`residuals\\[0\\]` is torch.float16 but `x` is torch.float32"):
        fk.ops.residual_sum(a, [a.half()])
    with pytest.raises(ValueError, match="`residuals\\[2\\]` is on meta"):
        fk.ops.residual_sum(a, [a, a, torch.empty(4, 5, device="meta")])
    with pytest.raises(TypeError, match="`x` must be float32"):
        fk.ops.residual_sum(a.long(), [])
    with pytest.raises(TypeError, match="`residuals` must be a list of tensors"):
        fk.ops.residual_sum(a, a)
    with pytest.raises(ValueError, match="`out` has shape"):
        fk.ops.residual_sum(a, [a], out=torch.empty(3))


def test_opcheck():
    for dtype in DTYPES:
        x, res = _inputs((5, 7), dtype, True, 3)
        torch.library.opcheck(torch.ops.fastercache.residual_sum.default, (x, res))
        torch.library.opcheck(torch.ops.fastercache.residual_sum.default, (x, []))
        torch.library.opcheck(torch.ops.fastercache.residual_sum_out.default, (x, res, torch.empty_like(x)))
        torch.library.opcheck(torch.ops.fastercache.residual_sum.default, (noncontiguous(x), res))


def test_cpu_is_deterministic():
    x, res = _inputs((1 << 16,), torch.bfloat16, True, 56)
    first = fk.ops.residual_sum(x, res)
    for _ in range(3):
        assert torch.equal(fk.ops.residual_sum(x, res), first)


@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape, perm, step = draw(strided_layouts())
    count = draw(st.integers(0, 70))
    seed = draw(st.integers(0, 2**16))
    return dtype, shape, perm, step, count, seed


@settings(max_examples=30, deadline=None)
@given(case=_cases())
def test_property_random_layouts(case):
    dtype, shape, perm, step, count, seed = case
    g = torch.Generator().manual_seed(seed)
    x = strided_randn(shape, step, perm, dtype, g)
    res = [strided_randn(shape, step, perm, dtype, g) for _ in range(count)]
    ref = R.residual_sum(x, res)
    for backend in FAST_CPU_BACKENDS:
        with backend_context(backend):
            assert_matches_reference(fk.ops.residual_sum(x, res), ref, what=backend, ulps=quirk_ulps(backend, dtype))


def test_int64_indexing_past_2_pow_31():
    # One large buffer pair serves this op set's CPU loops past 2^31 elements: residual_sum's blocked sum,
    # the mixed-dtype map (cfg_recombine_guided) and forecast's map over history slots and x.
    n = (1 << 31) + 77
    need = 2 * n * 2 + (2 << 30)  # two bf16 tensors and some headroom
    skip_unless_memory(need)
    x = torch.full((n,), 1.0, dtype=torch.bfloat16)
    mid = slice((1 << 31) - 1, (1 << 31) + 2)
    x[mid] = torch.tensor([3.0, 5.0, 7.0], dtype=torch.bfloat16)
    x[-3:] = torch.tensor([2.0, -4.0, 8.0], dtype=torch.bfloat16)
    out = fk.ops.residual_sum(x, [x, x])  # 3x
    assert out[:16].eq(3.0).all() and out[(1 << 31) + 2 : -3].eq(3.0).all()
    assert out[mid].float().tolist() == [9.0, 15.0, 21.0] and out[-3:].float().tolist() == [6.0, -12.0, 24.0]
    # guided recombination: out = x + (1 - 3) * (0.5 * x + 0.5 * x) = -x
    fk.ops.cfg_recombine_guided(x, x, x, 0.5, 0.5, 3.0, out=out)
    assert out[mid].float().tolist() == [-3.0, -5.0, -7.0] and out[-3:].float().tolist() == [-2.0, 4.0, -8.0]
    assert out[(1 << 31) + 2 : -3].eq(-1.0).all()
    # forecast with x as its one history slot, in place: out += 2 * x, so -x + 2x = x
    fk.ops.forecast(x[None], torch.tensor([2.0]), out, out=out)
    assert out[mid].float().tolist() == [3.0, 5.0, 7.0] and out[-3:].float().tolist() == [2.0, -4.0, 8.0]
    assert out[(1 << 31) + 2 : -3].eq(1.0).all()
    del x, out
