import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastercache_kernels as fk
from fastercache_kernels import reference as R
from fastercache_kernels.testing import assert_reduction_close, noncontiguous, quirk_ulps, strided_randn
from conftest import FAST_CPU_BACKENDS, backend_context, device, strided_layouts

# x / 0 in the Triton interpreter (numpy) warns; inf and NaN are the intended results there.
pytestmark = [pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
METRICS = ["l1", "rel_l1", "rel_l2", "cosine"]
SHAPES = [(0,), (1,), (7,), (111,), (123, 77), (2, 262147)]
CPU_IDS = [b for b in FAST_CPU_BACKENDS if b.startswith("cpu")]
# A storage dtype of the cache other than the input's, for each input dtype.
OTHER = {torch.float32: torch.bfloat16, torch.float16: torch.float32, torch.bfloat16: torch.float16}


def _inputs(shape, dtype, cache_dtype, contiguous, seed=0):
    """A block's input x, its output x + r_new, and the cached residual r_old close to r_new."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device())
    r_old = torch.randn(shape, generator=g).to(device())
    r_new = r_old + 0.05 * torch.randn(shape, generator=g).to(device())
    output, input, cache = (x + r_new).to(dtype), x.to(dtype), r_old.to(cache_dtype)
    if not contiguous:
        output, input, cache = noncontiguous(output), noncontiguous(input), noncontiguous(cache)
    return output, input, cache


def _truth(output, input, cache, metric, partials=False):
    # The op forms r = output - input in fp32 by definition (r is what it caches); the truth takes that r and sums
    # in fp64. Forming r in fp64 instead would fold r's own rounding into the reduction error, unbounded relative
    # to |r - cache| when r and cache nearly cancel (hypothesis found one at n = 1: 9.7e-7 vs a bound of 7.2e-7).
    r = output.float() - input.float()
    return R.residual_diff_update(r, torch.zeros_like(r), cache.clone(), metric, partials, acc_dtype=torch.float64)


def _expected_cache(output, input, cache_dtype):
    return (output.float() - input.float()).to(cache_dtype)


def _assert_cache(cache, expected, backend, what):
    # fp32 math rounded once to the cache's dtype: exact, except the interpreter's fp32 -> bf16 truncation
    if quirk_ulps(backend, cache.dtype):
        torch.testing.assert_close(cache, expected, rtol=2 * torch.finfo(cache.dtype).eps, atol=0, msg=what)
    else:
        assert torch.equal(cache, expected), what


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, dtype, shape, contiguous):
    # every metric with the input's dtype as the cache's; a storage dtype of its own with two of them
    for cache_dtype, metrics in ((dtype, METRICS), (OTHER[dtype], ("rel_l1", "cosine"))):
        for metric in metrics:
            output, input, cache = _inputs(shape, dtype, cache_dtype, contiguous)
            truth = _truth(output, input, cache, metric)
            expected = _expected_cache(output, input, cache_dtype)
            d = fk.ops.residual_diff_update(output, input, cache, metric)
            what = f"{backend} {dtype} cache {cache_dtype} {shape} {metric}"
            assert d.shape == () and d.dtype == torch.float32
            assert_reduction_close(d, truth, output.numel(), absolute=metric == "cosine", what=what)
            _assert_cache(cache, expected, backend, what)


def test_partials_and_from_partials(backend):
    for metric in METRICS:
        output, input, cache = _inputs((9, 1001), torch.bfloat16, torch.float32, True, seed=3)
        truth = _truth(output, input, cache, metric, partials=True)
        sums = fk.ops.residual_diff_update(output, input, cache.clone(), metric, partials=True)
        assert sums.shape == (3,)
        assert_reduction_close(sums, truth, output.numel(), absolute=metric == "cosine", what=f"{backend} {metric}")
        assert torch.equal(fk.ops.feature_diff_from_partials(sums, metric),
                           fk.ops.residual_diff_update(output, input, cache.clone(), metric)), (backend, metric)


def test_matches_feature_diff_of_the_residual(backend):
    # Same sums as feature_diff(r, cache) when r is exact in the input dtype.
    output, input, cache = _inputs((3, 4001), torch.float32, torch.float32, True, seed=4)
    r = output - input
    for metric in METRICS:
        expected = fk.ops.feature_diff(r, cache, metric)
        got = fk.ops.residual_diff_update(output, input, cache.clone(), metric)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_first_block_cache_loop(backend):
    # The compute-call sequence of First-Block-Cache: each call compares against the previous call's residual.
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 64, generator=g).to(device())
    cache = torch.zeros(4, 64, dtype=torch.bfloat16, device=device())
    prev = None
    for _ in range(4):
        r = torch.randn(4, 64, generator=g).to(device())
        d = fk.ops.residual_diff_update(x + r, x, cache, "rel_l1")
        if prev is not None:
            truth = R.feature_diff((x + r) - x, prev.float(), "rel_l1", acc_dtype=torch.float64)
            assert_reduction_close(d, truth, x.numel(), what=backend)
        prev = cache.clone()


def test_cache_aliasing_and_layouts(backend):
    output, input, cache = _inputs((6, 50), torch.float32, torch.float32, True, seed=5)
    # cache is the output tensor itself: the metric sees the old values, then output holds r
    out_alias = output.clone()
    truth = _truth(output, input, output, "rel_l1")
    d = fk.ops.residual_diff_update(out_alias, input, out_alias, "rel_l1")
    assert_reduction_close(d, truth, output.numel(), what=f"{backend} alias")
    assert torch.equal(out_alias, output - input)
    # cache partially overlapping the input's storage
    buf = torch.randn(400, device=device())
    inp, c = buf[:300].view(6, 50), buf[100:400].view(6, 50)
    o = torch.randn(6, 50, device=device())
    truth = _truth(o, inp.clone(), c.clone(), "l1")
    expected = o - inp.clone()
    d = fk.ops.residual_diff_update(o, inp, c, "l1")
    assert_reduction_close(d, truth, o.numel(), what=f"{backend} overlap")
    assert torch.equal(c, expected)
    # a transposed cache
    ct = cache.t().contiguous().t()
    truth = _truth(output, input, ct, "rel_l2")
    d = fk.ops.residual_diff_update(output, input, ct, "rel_l2")
    assert_reduction_close(d, truth, output.numel(), what=f"{backend} transposed")
    assert torch.equal(ct, output - input)


def test_nan_and_inf_propagate(backend):
    for dtype in DTYPES:
        output = torch.ones(40, dtype=dtype, device=device())
        input = torch.zeros(40, dtype=dtype, device=device())
        output[3] = float("nan")
        cache = torch.ones(40, dtype=dtype, device=device())
        for metric in METRICS:
            c = cache.clone()
            assert fk.ops.residual_diff_update(output, input, c, metric).isnan(), (backend, dtype, metric)
            assert c[3].isnan() and c[4] == 1
        c = cache.clone()
        c[5] = float("inf")
        assert fk.ops.residual_diff_update(torch.ones(40, dtype=dtype, device=device()), input, c, "rel_l1").isnan()
        assert c[5] == 1  # the cache was refreshed anyway


def test_empty(backend):
    e = torch.empty(0, 3, device=device())
    for metric in METRICS:
        cache = torch.empty(0, 3, dtype=torch.bfloat16, device=device())
        assert fk.ops.residual_diff_update(e, e, cache, metric).isnan()


def test_errors_name_the_argument():
    a = torch.randn(4, 5)
    with pytest.raises(ValueError, match="`input` has shape"):
        fk.ops.residual_diff_update(a, torch.randn(5, 4), a.clone())
    with pytest.raises(TypeError, match="`input` is torch.float16"):
        fk.ops.residual_diff_update(a, a.half(), a.clone())
    with pytest.raises(ValueError, match="`cache` has shape"):
        fk.ops.residual_diff_update(a, a, torch.zeros(20))
    with pytest.raises(TypeError, match="`cache` must be float32, float16 or bfloat16"):
        fk.ops.residual_diff_update(a, a, torch.zeros(4, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="`cache` is on meta"):
        fk.ops.residual_diff_update(a, a, torch.empty(4, 5, device="meta"))
    with pytest.raises(TypeError, match="`output` must be float32"):
        fk.ops.residual_diff_update(a.long(), a.long(), a)
    with pytest.raises(ValueError, match="residual_diff_update: `metric` must be one of"):
        fk.ops.residual_diff_update(a, a, a.clone(), "abs")
    with pytest.raises(TypeError, match="`partials` must be a bool"):
        fk.ops.residual_diff_update(a, a, a.clone(), partials=None)


def test_opcheck():
    for dtype in DTYPES:
        output, input, cache = _inputs((5, 7), dtype, OTHER[dtype], True)
        for metric in ("rel_l1", "cosine"):
            torch.library.opcheck(torch.ops.fastercache.residual_diff_update.default,
                                  (output, input, cache.clone(), metric, False))
        torch.library.opcheck(torch.ops.fastercache.residual_diff_update.default,
                              (output, input, noncontiguous(cache), "l1", True))


def test_deterministic_across_calls_and_thread_counts():
    output, input, cache = _inputs((2, 524291), torch.bfloat16, torch.bfloat16, True, seed=8)
    for backend_id in CPU_IDS:
        with backend_context(backend_id):
            first = {m: fk.ops.residual_diff_update(output, input, cache.clone(), m) for m in METRICS}
            old = torch.get_num_threads()
            try:
                for threads in (1, 2, 3):
                    torch.set_num_threads(threads)
                    for m in METRICS:
                        c = cache.clone()
                        assert torch.equal(fk.ops.residual_diff_update(output, input, c, m), first[m]), (m, threads)
                        assert torch.equal(c, _expected_cache(output, input, torch.bfloat16))
            finally:
                torch.set_num_threads(old)


@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    cache_dtype = draw(st.sampled_from(DTYPES))
    shape, perm, step = draw(strided_layouts())
    metric = draw(st.sampled_from(METRICS))
    seed = draw(st.integers(0, 2**16))
    return dtype, cache_dtype, shape, perm, step, metric, seed


@settings(max_examples=30, deadline=None)
@given(case=_cases())
def test_property_random_layouts(case):
    dtype, cache_dtype, shape, perm, step, metric, seed = case
    g = torch.Generator().manual_seed(seed)
    o, i, c = (strided_randn(shape, step, perm, t, g) for t in (dtype, dtype, cache_dtype))
    truth = _truth(o, i, c, metric)
    expected = _expected_cache(o, i, cache_dtype)
    for backend_id in FAST_CPU_BACKENDS:
        with backend_context(backend_id):
            cc = c.clone()  # keeps the strides of the permuted view
            d = fk.ops.residual_diff_update(o, i, cc, metric)
            assert_reduction_close(d, truth, o.numel(), absolute=metric == "cosine", what=backend_id)
            _assert_cache(cc, expected, backend_id, backend_id)
