import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastercache_kernels as fk
from fastercache_kernels import reference as R
from fastercache_kernels.testing import assert_reduction_close, noncontiguous
from conftest import FAST_CPU_BACKENDS, backend_context, device

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CPU_IDS = [b for b in FAST_CPU_BACKENDS if b.startswith("cpu")]
# (layout, shape, num_frames, strides): the smallest video (2 frames of 1 element), odd sizes, an empty batch, and
# three large ones (~340K to ~490K elements; the first has frames of 67900 elements, more than one CPU work item of
# fp32 and one Triton program under the interpreter).
CASES = [
    ("BNC", (1, 2, 1), 2, (1,)),
    ("BNC", (2, 7 * 3, 5), 7, (1, 2, 6)),
    ("BNC", (3, 13 * 11, 7), 13, (1, 3)),
    ("BNC", (0, 4 * 3, 5), 4, (1,)),
    ("BNC", (2, 13 * 150, 111), 13, (1, 2)),
    ("BNC", (1, 5 * 700, 97), 5, (1, 3)),
    ("BCTHW", (1, 1, 2, 1, 1), 2, (1,)),
    ("BCTHW", (2, 3, 7, 5, 11), 7, (1, 2, 4)),
    ("BCTHW", (1, 4, 13, 123, 77), 13, (2, 1)),
]


def _residual(shape, dtype, contiguous, seed=0):
    """Frames that drift: p_t = base + 0.2 * t * noise, so m_k grows with k."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(shape, generator=g).to(device())
    if p.numel():
        drift = 0.2 * torch.randn(shape, generator=g).to(device())
        p = p + drift * torch.rand(shape, generator=g).to(device())
    p = p.to(dtype)
    return p if contiguous else noncontiguous(p)


def _truth(p, num_frames, strides, layout, partials=False):
    return R.motion_score(p, num_frames, strides, layout, partials, acc_dtype=torch.float64)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1]))}-k{'.'.join(map(str, c[3]))}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, dtype, case, contiguous):
    layout, shape, t, strides = case
    p = _residual(shape, dtype, contiguous)
    what = f"{backend} {dtype} {case}"
    m = fk.ops.motion_score(p, t, strides, layout)
    assert m.shape == (len(strides),) and m.dtype == torch.float32
    assert_reduction_close(m, _truth(p, t, strides, layout), max(1, p.numel()), what=what)
    sums = fk.ops.motion_score(p, t, strides, layout, partials=True)
    assert sums.shape == (len(strides), 2)
    assert_reduction_close(sums, _truth(p, t, strides, layout, True), max(1, p.numel()), what=what + " partials")
    # the score is exactly num / den of the partials (one fp32 division)
    torch.testing.assert_close((sums[:, 0].double() / sums[:, 1].double()).float(), m, rtol=0, atol=0,
                               equal_nan=True)


def test_spec_formula_bnc_stride_1():
    # docs/algorithms.md section 4, on [B, T*S, C]: sum|p[:, S:] - p[:, :-S]| / (sum|p[:, S:]| + sum|p[:, :-S]|)
    b, t, s, c = 2, 9, 15, 8
    p = _residual((b, t * s, c), torch.bfloat16, True, seed=1)
    q = p.double()
    expected = (q[:, s:] - q[:, :-s]).abs().sum() / (q[:, s:].abs().sum() + q[:, :-s].abs().sum())
    for backend_id in ["reference", *FAST_CPU_BACKENDS]:
        with backend_context(backend_id):
            assert_reduction_close(fk.ops.motion_score(p, t), expected.reshape(1), p.numel(), what=backend_id)


def test_bcthw_equals_bnc_of_the_same_video(backend):
    b, c, t, h, w = 2, 6, 5, 7, 9
    p = _residual((b, c, t, h, w), torch.float32, True, seed=2)
    tokens = p.permute(0, 2, 3, 4, 1).reshape(b, t * h * w, c)  # frame-major tokens, channels last
    torch.testing.assert_close(fk.ops.motion_score(p, t, (1, 3), "BCTHW"), fk.ops.motion_score(tokens, t, (1, 3)),
                               rtol=1e-5, atol=0)


def test_static_video_scores_zero_and_motion_grows(backend):
    frame = torch.randn(1, 1, 4, 6, device=device())
    static = frame.expand(1, 8, 4, 6).reshape(1, 8 * 4, 6).contiguous()
    assert fk.ops.motion_score(static, 8, (1, 2, 7)).eq(0).all()
    # frames drifting linearly: larger strides see larger differences
    drift = torch.randn(1, 1, 4, 6, device=device())
    moving = (frame + 0.1 * torch.arange(8.0, device=device()).view(1, 8, 1, 1) * drift).reshape(1, 32, 6)
    m = fk.ops.motion_score(moving, 8, (1, 2, 4))
    assert m[0] < m[1] < m[2]


def test_nan_propagates(backend):
    for dtype in DTYPES:
        p = torch.ones(1, 4 * 3, 2, dtype=dtype, device=device())
        p[0, 0, 0] = float("nan")  # frame 0
        m = fk.ops.motion_score(p, 4, (1, 3))
        assert m.isnan().all(), (backend, dtype)


def test_int_stride_and_defaults():
    p = _residual((1, 6 * 4, 3), torch.float32, True)
    assert torch.equal(fk.ops.motion_score(p, 6, 2), fk.ops.motion_score(p, 6, [2]))
    assert torch.equal(fk.ops.motion_score(p, 6), fk.ops.motion_score(p, 6, (1,), "BNC"))


def test_errors_name_the_argument():
    p = torch.randn(2, 12, 5)
    with pytest.raises(ValueError, match="`layout` must be 'BNC'"):
        fk.ops.motion_score(p, 4, layout="BTNC")
    with pytest.raises(ValueError, match="`num_frames` = 5 does not divide the token count 12"):
        fk.ops.motion_score(p, 5)
    with pytest.raises(ValueError, match="`num_frames` must be a positive int"):
        fk.ops.motion_score(p, 0)
    with pytest.raises(ValueError, match="`num_frames` must be a positive int"):
        fk.ops.motion_score(p, 4.0)
    with pytest.raises(ValueError, match=r"every entry of `strides` must be an int in 1..num_frames-1 = 1..3"):
        fk.ops.motion_score(p, 4, (1, 4))
    with pytest.raises(ValueError, match="every entry of `strides`"):
        fk.ops.motion_score(p, 4, (0,))
    with pytest.raises(ValueError, match="every entry of `strides`"):
        fk.ops.motion_score(p, 1)  # one frame: no stride is valid
    with pytest.raises(ValueError, match="`strides` must be a non-empty list"):
        fk.ops.motion_score(p, 4, ())
    with pytest.raises(ValueError, match="at most 64 `strides`"):
        fk.ops.motion_score(torch.randn(1, 100, 2), 100, list(range(1, 70)))
    with pytest.raises(ValueError, match=r"layout 'BNC' needs `residual` of shape \[B, T\*S, C\]"):
        fk.ops.motion_score(torch.randn(2, 3, 4, 5), 3)
    with pytest.raises(ValueError, match=r"layout 'BCTHW' needs `residual` of shape \[B, C, T, H, W\]"):
        fk.ops.motion_score(p, 4, layout="BCTHW")
    with pytest.raises(ValueError, match="`num_frames` = 4 but `residual`"):
        fk.ops.motion_score(torch.randn(1, 2, 5, 3, 3), 4, layout="BCTHW")
    with pytest.raises(TypeError, match="`residual` must be float32"):
        fk.ops.motion_score(p.long(), 4)
    with pytest.raises(TypeError, match="`partials` must be a bool"):
        fk.ops.motion_score(p, 4, partials="yes")


def test_opcheck():
    for dtype in DTYPES:
        p = _residual((2, 5 * 3, 4), dtype, True)
        torch.library.opcheck(torch.ops.fastercache.motion_score.default, (p, 5, [1, 2], "BNC", False))
        torch.library.opcheck(torch.ops.fastercache.motion_score.default, (p, 5, [4], "BNC", True))
        v = _residual((1, 2, 4, 3, 5), dtype, False)
        torch.library.opcheck(torch.ops.fastercache.motion_score.default, (v, 4, [1, 3], "BCTHW", False))


def test_deterministic_across_calls_and_thread_counts():
    # frames of 133200 bf16 elements: two CPU work items per frame, eight in all
    p = _residual((4, 13 * 1200, 111), torch.bfloat16, True, seed=9)
    truth = _truth(p, 13, (1, 2, 5), "BNC", partials=True)
    for backend_id in CPU_IDS:
        with backend_context(backend_id):
            first = fk.ops.motion_score(p, 13, (1, 2, 5), partials=True)
            assert_reduction_close(first, truth, p.numel(), what=backend_id)
            old = torch.get_num_threads()
            try:
                for threads in (1, 2, 3):
                    torch.set_num_threads(threads)
                    for _ in range(2):
                        assert torch.equal(fk.ops.motion_score(p, 13, (1, 2, 5), partials=True), first), threads
            finally:
                torch.set_num_threads(old)


@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(["BNC", "BCTHW"]))
    t = draw(st.integers(2, 9))
    b = draw(st.integers(1, 3))
    dims = draw(st.lists(st.integers(1, 7), min_size=3, max_size=3))
    shape = (b, t * dims[0], dims[1]) if layout == "BNC" else (b, dims[0], t, dims[1], dims[2])
    strides = draw(st.lists(st.integers(1, t - 1), min_size=1, max_size=4))
    transpose = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return dtype, layout, t, shape, strides, transpose, seed


@settings(max_examples=30, deadline=None)
@given(case=_cases())
def test_property_random_videos(case):
    dtype, layout, t, shape, strides, transpose, seed = case
    p = _residual(shape, dtype, True, seed)
    if transpose:  # same values, strided memory
        p = p.transpose(0, -1).contiguous().transpose(0, -1)
    truth = _truth(p, t, strides, layout)
    for backend_id in FAST_CPU_BACKENDS:
        with backend_context(backend_id):
            assert_reduction_close(fk.ops.motion_score(p, t, strides, layout), truth, p.numel(), what=backend_id)


def test_many_strides(backend):
    # 40 strides of a 50-frame video (the kernels take up to 64), in an order of their own, with repeats
    p = _residual((2, 50 * 3, 5), torch.float16, True, seed=11)
    strides = [49, 1, 2, 2, *range(3, 39)]
    m = fk.ops.motion_score(p, 50, strides)
    assert_reduction_close(m, _truth(p, 50, strides, "BNC"), p.numel(), what=backend)
