import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastercache_kernels as fk
from fastercache_kernels import _ext
from fastercache_kernels import reference as R
from fastercache_kernels.testing import assert_reduction_close, noncontiguous, skip_unless_memory, strided_randn
from conftest import FAST_CPU_BACKENDS, backend_context, device, strided_layouts

# 0 / 0 in the Triton interpreter (numpy) warns; NaN is the intended result there.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
METRICS = ["l1", "rel_l1", "rel_l2", "cosine"]
# The first dim is the sample dim of per_sample=True. The large case has 1M+ elements in 3 odd-length rows.
SHAPES = [(0,), (1,), (7,), (111,), (123, 77), (3, 349527)]
CPU_IDS = [b for b in FAST_CPU_BACKENDS if b.startswith("cpu")]


def _inputs(shape, dtype, contiguous, seed=0):
    """b and a = b + noise: the relative metrics see a realistic 'feature moved a little' case."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(shape, generator=g)
    a = (b + 0.1 * torch.randn(shape, generator=g)).to(device(), dtype)
    b = b.to(device(), dtype)
    if not contiguous:
        a, b = noncontiguous(a), noncontiguous(b)
    return a, b


def _truth(a, b, metric, per_sample):
    return R.feature_diff(a, b, metric, per_sample, acc_dtype=torch.float64)


def _n(a, per_sample):
    return math.prod(a.shape[1:]) if per_sample else a.numel()


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, dtype, shape, contiguous):
    a, b = _inputs(shape, dtype, contiguous)
    for per_sample in (False, True):
        for metric in METRICS:
            out = fk.ops.feature_diff(a, b, metric, per_sample)
            what = f"{backend} {dtype} {shape} {metric} per_sample={per_sample}"
            assert out.shape == ((shape[0],) if per_sample else ()), what
            assert_reduction_close(out, _truth(a, b, metric, per_sample), _n(a, per_sample),
                                   absolute=metric == "cosine", what=what)


def test_empty_inputs_give_nan(backend):
    a = torch.empty(0, 5, device=device())
    for metric in METRICS:
        assert fk.ops.feature_diff(a, a, metric).isnan()
        assert fk.ops.feature_diff(a, a, metric, per_sample=True).shape == (0,)
        assert fk.ops.feature_diff_partials(a, a, metric, per_sample=True).shape == (0, 3)
        # rows with no elements: every sum is 0
        sums = fk.ops.feature_diff_partials(*[torch.empty(2, 0, device=device())] * 2, metric, per_sample=True)
        assert sums[:, 0].eq(0).all() and sums[:, 2].eq(0).all()


def test_partials_and_from_partials(backend):
    a, b = _inputs((5, 2001), torch.bfloat16, True, seed=1)
    for per_sample in (False, True):
        for metric in METRICS:
            sums = fk.ops.feature_diff_partials(a, b, metric, per_sample)
            assert sums.dtype == torch.float32 and sums.shape == ((5, 3) if per_sample else (3,))
            truth = R.feature_diff_partials(a, b, metric, per_sample, acc_dtype=torch.float64)
            # sum a*b mixes signs: its error is bounded by sum |a*b|, not by the sum itself
            assert_reduction_close(sums, truth, _n(a, per_sample), absolute=metric == "cosine",
                                   what=f"{backend} {metric} {per_sample}")
            # the fused metric is exactly the metric of its partials
            direct = fk.ops.feature_diff(a, b, metric, per_sample)
            assert torch.equal(fk.ops.feature_diff_from_partials(sums, metric), direct), (backend, metric)


def test_from_partials_sums_across_ranks():
    # What a distributed caller does: all-reduce the sums of each shard, then divide.
    a, b = _inputs((4, 999), torch.float32, True, seed=2)
    for metric in METRICS:
        shards = sum(fk.ops.feature_diff_partials(a[i], b[i], metric) for i in range(4))
        whole = fk.ops.feature_diff(a, b, metric)
        torch.testing.assert_close(fk.ops.feature_diff_from_partials(shards, metric), whole, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"`partials` must have shape \[..., 3\]"):
        fk.ops.feature_diff_from_partials(torch.zeros(2), "l1")
    with pytest.raises(ValueError, match="`metric` must be one of"):
        fk.ops.feature_diff_from_partials(torch.zeros(3), "l2")


def test_every_element_counts(fast_backend):
    # One element differs, at block and row boundaries of every backend: the sums must see exactly that element.
    backend_id = fast_backend
    n = 5 * 39323
    b = torch.ones(n, device=device())
    positions = [0, 1, 8191, 8192, 16383, 16384, 65535, 65536, 2 * 65536, n - 1]
    for pos in positions:
        a = b.clone()
        a[pos] = 9.0
        assert fk.ops.feature_diff_partials(a, b, "rel_l1")[0].item() == 8.0, (backend_id, pos)
        rows = fk.ops.feature_diff_partials(a.view(5, -1), b.view(5, -1), "l1", per_sample=True)
        expected = torch.zeros(5, device=device())
        expected[pos // (n // 5)] = 8.0
        assert torch.equal(rows[:, 0], expected), (backend_id, pos)
        assert rows[:, 1].eq(n // 5).all()


def test_nan_and_inf_propagate(backend):
    for dtype in DTYPES:
        b = torch.ones(2, 50, dtype=dtype, device=device())
        a = b.clone()
        a[0, 7] = float("nan")
        a[1, 3] = float("inf")
        for metric in METRICS:
            out = fk.ops.feature_diff(a, b, metric, per_sample=True)
            assert out[0].isnan(), (backend, dtype, metric)
            assert not out[1].isfinite(), (backend, dtype, metric)  # inf, or NaN for cosine (inf / inf)
            assert fk.ops.feature_diff(a, b, metric).isnan(), (backend, dtype, metric)
        assert fk.ops.feature_diff(a[1], b[1], "rel_l1").item() == float("inf")


def test_zero_difference_is_exactly_zero(backend):
    a, _ = _inputs((33, 17), torch.bfloat16, True)
    for metric in ("l1", "rel_l1", "rel_l2"):
        assert fk.ops.feature_diff(a, a, metric).item() == 0.0
    assert abs(fk.ops.feature_diff(a, a, "cosine").item()) < 1e-6


def test_errors_name_the_argument():
    a = torch.randn(4, 5)
    with pytest.raises(ValueError, match="`b` has shape"):
        fk.ops.feature_diff(a, torch.randn(5, 4))
    with pytest.raises(TypeError, match="`b` is torch.float16"):
        fk.ops.feature_diff(a, a.half())
    with pytest.raises(ValueError, match="`b` is on meta"):
        fk.ops.feature_diff(a, torch.empty(4, 5, device="meta"))
    with pytest.raises(TypeError, match="`a` must be float32"):
        fk.ops.feature_diff(a.long(), a.long())
    with pytest.raises(TypeError, match="`a` must be a tensor"):
        fk.ops.feature_diff([1.0], a)
    with pytest.raises(ValueError, match="feature_diff: `metric` must be one of"):
        fk.ops.feature_diff(a, a, "mse")
    with pytest.raises(ValueError, match="feature_diff_partials: `metric` must be one of"):
        fk.ops.feature_diff_partials(a, a, "L1")
    with pytest.raises(ValueError, match="per_sample=True needs `a` with a batch dim"):
        fk.ops.feature_diff(torch.tensor(1.0), torch.tensor(2.0), per_sample=True)
    with pytest.raises(TypeError, match="`per_sample` must be a bool"):
        fk.ops.feature_diff(a, a, "l1", 1)


def test_opcheck():
    for dtype in DTYPES:
        a, b = _inputs((5, 7), dtype, True)
        for metric in METRICS:
            torch.library.opcheck(torch.ops.fastercache.feature_diff.default, (a, b, metric, False))
        torch.library.opcheck(torch.ops.fastercache.feature_diff.default, (a, b, "rel_l1", True))
        torch.library.opcheck(torch.ops.fastercache.feature_diff_partials.default, (a, b, "cosine", True))
        torch.library.opcheck(torch.ops.fastercache.feature_diff.default,
                              (noncontiguous(a), noncontiguous(b), "rel_l2", False))


def test_deterministic_across_calls_and_thread_counts():
    # 1M+ elements: hundreds of blocks, split differently between 1, 2 and 3 threads
    a, b = _inputs((3, 349527), torch.bfloat16, True, seed=5)
    for backend_id in CPU_IDS:
        with backend_context(backend_id):
            first = {m: (fk.ops.feature_diff(a, b, m), fk.ops.feature_diff_partials(a, b, m, True)) for m in METRICS}
            old = torch.get_num_threads()
            try:
                for threads in (1, 2, 3):
                    torch.set_num_threads(threads)
                    for _ in range(2):
                        for m in METRICS:
                            assert torch.equal(fk.ops.feature_diff(a, b, m), first[m][0]), (backend_id, m, threads)
                            assert torch.equal(fk.ops.feature_diff_partials(a, b, m, True), first[m][1])
            finally:
                torch.set_num_threads(old)


def test_deterministic_run_to_run(fast_backend):
    a, b = _inputs((200003,), torch.float16, True, seed=6)
    first = fk.ops.feature_diff(a, b, "rel_l2")
    assert torch.equal(fk.ops.feature_diff(a, b, "rel_l2"), first)


@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape, perm, step = draw(strided_layouts())
    metric = draw(st.sampled_from(METRICS))
    per_sample = draw(st.booleans())
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    seed = draw(st.integers(0, 2**16))
    return dtype, shape, perm, step, metric, per_sample, scale, seed


@settings(max_examples=30, deadline=None)
@given(case=_cases())
def test_property_random_layouts(case):
    dtype, shape, perm, step, metric, per_sample, scale, seed = case
    g = torch.Generator().manual_seed(seed)
    a = strided_randn(shape, step, perm, dtype, g, scale)
    b = strided_randn(shape, step, perm, dtype, g, scale)
    truth = _truth(a, b, metric, per_sample)
    for backend_id in FAST_CPU_BACKENDS:
        with backend_context(backend_id):
            out = fk.ops.feature_diff(a, b, metric, per_sample)
            assert_reduction_close(out, truth, _n(a, per_sample), absolute=metric == "cosine", what=backend_id)


@pytest.mark.skipif(_ext.why_not("_cpu") is not None, reason="_cpu is not built")
def test_int64_indexing_past_2_pow_31():
    # Two bf16 rows of 2^30 + 39 elements: 2^31 + 78 in all, so row 1 ends past 2^31. Only elements at the ends of
    # the rows differ, so a wrapped index would lose them.
    cols = (1 << 30) + 39
    need = 2 * 2 * cols * 2 + (2 << 30)
    skip_unless_memory(need)
    a = torch.ones(2, cols, dtype=torch.bfloat16)
    b = torch.ones(2, cols, dtype=torch.bfloat16)
    a[0, -5:] = 9.0  # |a - b| = 8 on five elements of row 0
    a[1, -78:] = 1024.0  # 1023 on the last 78 elements, all past index 2^31
    sums = fk.ops.feature_diff_partials(a, b, "rel_l1", per_sample=True)  # auto: the _cpu module
    assert sums[:, 0].tolist() == [40.0, 78 * 1023.0]
    torch.testing.assert_close(sums[:, 1], torch.full((2,), float(cols)), rtol=1e-6, atol=0)
    total = fk.ops.feature_diff_partials(a, b, "l1")
    assert total[0].item() == 40.0 + 78 * 1023.0
    assert total[1].item() == torch.tensor(2.0 * cols, dtype=torch.float32).item()  # the count, rounded to fp32
    del a, b


@pytest.mark.skipif(_ext.why_not("_cuda") is not None or torch.cuda.is_available(),
                    reason="needs _cuda built and no GPU")
def test_cuda_reduction_launchers_without_driver_raise_clearly():
    mod = _ext.cuda()
    # workspace sizes are host arithmetic: no driver needed
    assert mod.feature_diff_workspace(2, 40000) == 2 * 3 * 3
    assert mod.residual_diff_update_workspace(0) >= 1
    assert mod.motion_score_workspace(2, 13, 4096, 1) == (2 * 2 + 1) * 14
    strides = torch.tensor([1], dtype=torch.int64)
    with pytest.raises(RuntimeError, match="no usable CUDA driver or device"):
        mod.feature_diff(0, 0, 0, 0, 1, False, 1, 16, 0, 0)
    with pytest.raises(RuntimeError, match="no usable CUDA driver or device"):
        mod.residual_diff_update(0, 2, 0, 0, 0, 0, 1, False, 16, 0, 0)
    with pytest.raises(RuntimeError, match="no usable CUDA driver or device"):
        mod.motion_score(0, 0, 0, 1, 2, 16, strides.data_ptr(), 1, False, 0, 0)
    with pytest.raises(ValueError, match="unknown metric code 7"):
        mod.feature_diff(0, 0, 0, 0, 7, False, 1, 16, 0, 0)
