"""fk.ops.forecast, x + sum_k weights[k] * history[k], on every (device, backend) pair against the fp32 reference;
and FasterCache's attention extrapolation as the forecast with weights (1 + w, -w)."""

import pytest
import torch
from conftest import FAST_CPU_BACKENDS, backend_context, device, strided_layouts
from hypothesis import given, settings
from hypothesis import strategies as st

import fastercache_kernels as fk
from fastercache_kernels import reference as R
from fastercache_kernels.testing import assert_matches_reference, noncontiguous, quirk_ulps, strided_randn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# slot shapes: empty, one element, odd sizes not a multiple of any vector width, a 3-d one
SHAPES = [(0, 3), (1,), (7,), (123, 77), (2, 5, 33)]
# weights of both signs and unequal sizes (order-2/3 Taylor weights are of this size: 3, -3, 1)
WEIGHTS = [1.5, -0.75, 0.25, -0.125]


def _inputs(k, shape, dtype, with_x, seed=0):
    g = torch.Generator().manual_seed(seed)
    history = torch.randn((k, *shape), generator=g).to(device(), dtype)
    x = torch.randn(shape, generator=g).to(device(), dtype) if with_x else None
    return history, torch.tensor(WEIGHTS[:k], device=device()), x


def _eager(history, weights, x):
    # the formula in plain PyTorch in the input dtype
    w = weights.to(history.dtype)
    y = w[0] * history[0] if x is None else x + w[0] * history[0]
    for k in range(1, history.shape[0]):
        y = y + w[k] * history[k]
    return y


@pytest.mark.parametrize("with_x", [False, True], ids=["no_x", "x"])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, dtype, shape, k, with_x):
    history, w, x = _inputs(k, shape, dtype, with_x)
    out = fk.ops.forecast(history, w, x)
    assert out.dtype == dtype and out.shape == history.shape[1:] and out.device == history.device
    assert_matches_reference(out, R.forecast(history, w, x), _eager(history, w, x),
                             what=f"{backend} {dtype} {shape} K={k}", ulps=quirk_ulps(backend, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_noncontiguous_inputs(backend, dtype):
    g = torch.Generator().manual_seed(1)
    buf = torch.randn(6, 9, 26, generator=g).to(device(), dtype)
    x = noncontiguous(torch.randn(9, 13, generator=g).to(device(), dtype))
    w = torch.tensor(WEIGHTS[:3], device=device())
    ring = torch.randn(5, 9, 13, generator=g).to(device(), dtype)
    cases = {
        "every other slot": ring[::2],  # slots apart in memory, each contiguous (read in place)
        "every other strided slot": buf[::2, :, :13],
        "slots 1..3": buf[1:4].reshape(3, 9, 2, 13)[:, :, 1],
        "strided slots": buf[:3, :, ::2],
        "transposed slots": buf[:3].reshape(3, 13, 18)[:, :, :9].transpose(1, 2),
    }
    for name, history in cases.items():
        assert history.shape[1:] == x.shape, name
        assert_matches_reference(fk.ops.forecast(history, w, x), R.forecast(history, w, x),
                                 what=f"{backend} {dtype} {name}", ulps=quirk_ulps(backend, dtype))


def test_out_and_aliasing(backend):
    history, w, x = _inputs(3, (7, 13), torch.float32, True)
    expected = R.forecast(history, w, x)
    out = torch.empty_like(x)
    assert fk.ops.forecast(history, w, x, out=out) is out
    assert_matches_reference(out, expected)
    strided = noncontiguous(torch.zeros_like(x))
    fk.ops.forecast(history, w, x, out=strided)
    assert_matches_reference(strided, expected)
    y = x.clone()
    fk.ops.forecast(history, w, y, out=y)  # x += forecast, in place
    assert_matches_reference(y, expected)
    # the forecast written over the oldest slot it reads (a ring buffer pushing its own forecast)
    h = history.clone()
    fk.ops.forecast(h, w, x, out=h[2])
    assert_matches_reference(h[2], expected)
    assert torch.equal(h[:2], history[:2])


def test_zero_weight_slots_are_left_out(backend):
    nan, inf = float("nan"), float("inf")
    for dtype in DTYPES:
        history, _, x = _inputs(3, (2, 40), dtype, True, seed=2)
        history[1, 0, :3] = torch.tensor([nan, inf, -inf], dtype=dtype)  # an unused slot: stale or never written
        w = torch.tensor([0.5, 0.0, 2.0], device=device())
        out = fk.ops.forecast(history, w, x)
        assert bool(out.isfinite().all()), f"{backend} {dtype}: a weight-0 slot leaked into the sum"
        assert_matches_reference(out, R.forecast(history, w, x), ulps=quirk_ulps(backend, dtype))
        # plain reuse: one-hot weights give the slot itself, bit for bit
        for j in range(3):
            if j != 1:
                assert torch.equal(fk.ops.forecast(history, torch.eye(3, device=device())[j]), history[j])
        # non-finite values in a used slot still propagate
        w = torch.tensor([0.5, 1.0, 2.0], device=device())
        out = fk.ops.forecast(history, w, x).float()
        assert out[0, 0].isnan() and out[0, 1] == inf and out[0, 2] == -inf


@pytest.mark.parametrize("weights", [
    torch.tensor([2.0, -1.0], dtype=torch.float64), torch.tensor([2.0, -1.0]).half(), torch.tensor([0.3, 0.7]),
])
def test_weight_forms(backend, weights):
    history, _, x = _inputs(2, (33,), torch.float32, True)
    w = weights.to(device())
    assert_matches_reference(fk.ops.forecast(history, w, x), R.forecast(history, w.float(), x))
    # CPU weights with device tensors: copied to the device (the policies compute them there)
    assert_matches_reference(fk.ops.forecast(history, weights, x), R.forecast(history, w.float(), x))


# FasterCache's attention reuse (docs/algorithms.md sections 1 and 9): F = newer + w * (newer - older) is the
# forecast over (newer, older) with weights (1 + w, -w), the same up to fp32 rounding (a few ulps).
EXTRAPOLATION_SHAPES = [(0,), (1,), (7,), (111,), (123, 77), (2, 5, 33)]


def _w32(w) -> float:
    """w as the fp32 value extrapolation_weights computes with."""
    return float(torch.as_tensor(w).to(torch.float32))


def _extrapolated(newer, older, w, x=None):
    """Section 1's formula in fp32 in its own order, rounded once to newer's dtype (plus x when given)."""
    n, o = newer.float(), older.float()
    f = n + _w32(w) * (n - o)
    return (f if x is None else x.float() + f).to(newer.dtype)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape", EXTRAPOLATION_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fastercache_extrapolation(backend, dtype, shape, contiguous):
    g = torch.Generator().manual_seed(3)
    store = torch.randn((2, *shape), generator=g).to(device(), dtype)
    if not contiguous:
        store = noncontiguous(store)  # strided slots: copied to dense ones first
    newer, older = store[0], store[1]
    for w in (0.3, torch.tensor(-0.2, device=device())):
        y = fk.ops.forecast(store, fk.ops.extrapolation_weights(w))
        assert y.dtype == dtype and y.shape == newer.shape and y.device == newer.device
        eager = newer + _w32(w) * (newer - older)  # the reference code's three ops in the model's dtype
        assert_matches_reference(y, _extrapolated(newer, older, w), eager, what=f"{backend} {dtype} {shape} {w}",
                                 ulps=1 + quirk_ulps(backend, dtype))


@pytest.mark.parametrize(
    "weight", [0.0, 1, -0.25, 0.9 * 13 / 20, torch.tensor(0.3), torch.tensor(0.3, dtype=torch.float64),
               torch.tensor(0.5).half()]
)
def test_fastercache_extrapolation_weight_forms(backend, weight):
    weights = fk.ops.extrapolation_weights(weight)
    w = _w32(weight)
    assert weights.dtype == torch.float32 and weights.shape == (2,)
    assert weights.tolist() == [_w32(1 + w), -w]
    g = torch.Generator().manual_seed(5)
    store = torch.randn(2, 33, generator=g).to(device())
    y = fk.ops.forecast(store, weights.to(device()))
    assert_matches_reference(y, _extrapolated(store[0], store[1], weight), ulps=1)
    if w == 0:  # Vchitect's w = 0: a plain copy of the newer slot, bit for bit (the older one is left out)
        store[1, 0] = float("nan")
        assert torch.equal(fk.ops.forecast(store, weights.to(device())), store[0])


def test_fastercache_store_rows_and_aliasing(backend):
    # The policy's store: comp rows 0 and 1 and the other branch's rows 2 and 3; the rotation decides which row is
    # newer, so the weights name the rows (1 + w on the newer, -w on the older, 0 elsewhere).
    w = 0.45
    g = torch.Generator().manual_seed(6)
    store = torch.randn(4, 3, 29, generator=g).to(device())
    store[2:] = float("nan")  # rows the weights leave out: never written, or stale
    weights = torch.zeros(4, device=device())
    weights[1], weights[0] = 1 + w, -w  # newer row 1, older row 0
    expected = _extrapolated(store[1], store[0], w)
    y = fk.ops.forecast(store, weights)
    assert bool(y.isfinite().all())
    assert_matches_reference(y, expected, ulps=1)
    # x + F in place (the reuse path's residual add, out=x)
    x = torch.randn(3, 29, generator=g).to(device())
    xs = x.clone()
    fk.ops.forecast(store, weights, xs, out=xs)
    assert_matches_reference(xs, _extrapolated(store[1], store[0], w, x), ulps=1)
    # the extrapolation pushed over the newer row it reads (diffusers pushes it as the newest entry)
    s = store.clone()
    fk.ops.forecast(s, weights, out=s[1])
    assert_matches_reference(s[1], expected, ulps=1)
    assert torch.equal(s[0], store[0])
    # out partly overlapping both rows read: must not read what it already wrote
    buf = torch.randn(2 * 40 + 7, generator=g).to(device())
    two, out = buf[:80].view(2, 40), buf[7:47]
    expected = _extrapolated(two[0].clone(), two[1].clone(), w)
    fk.ops.forecast(two, fk.ops.extrapolation_weights(w).to(device()), out=out)
    assert_matches_reference(out, expected, ulps=1)


def test_fastercache_extrapolation_nan_and_inf(backend):
    nan, inf = float("nan"), float("inf")
    newer = torch.tensor([nan, 1.0, inf, 2.0, 3.0], device=device())
    older = torch.tensor([0.0, nan, 0.0, -inf, 1.0], device=device())
    for dtype in DTYPES:
        out = fk.ops.forecast(torch.stack([newer, older]).to(dtype), fk.ops.extrapolation_weights(0.5)).float()
        assert out[0].isnan() and out[1].isnan(), (backend, dtype)
        assert out[2] == inf and out[3] == inf, (backend, dtype)
        assert out[4] == 4.0, (backend, dtype)


@st.composite
def _extrapolation_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape, perm, step = draw(strided_layouts())
    weight = draw(st.floats(-2, 2, allow_nan=False, width=32))
    return dtype, shape, perm, step, weight, draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(case=_extrapolation_cases())
def test_property_fastercache_extrapolation_layouts(case):
    # any dim order and gaps in the slots (the slot dim stays first), every fast CPU backend
    dtype, shape, perm, step, weight, seed = case
    g = torch.Generator().manual_seed(seed)
    store = strided_randn((2, *shape), step, (0, *(p + 1 for p in perm)), dtype, g)
    ref = _extrapolated(store[0], store[1], weight)
    for b in FAST_CPU_BACKENDS:
        with backend_context(b):
            y = fk.ops.forecast(store, fk.ops.extrapolation_weights(weight))
            assert_matches_reference(y, ref, what=b, ulps=1 + quirk_ulps(b, dtype))


def test_cpu_rounds_exactly_like_the_reference():
    # the compiled CPU loops add in slot order, one rounding per operation, as the reference does
    for dtype in DTYPES:
        for k in (1, 2, 3, 4):
            for with_x in (False, True):
                history, w, x = _inputs(k, (4099,), dtype, with_x, seed=4)
                history[0, :4] = torch.tensor([6e4, -6e4, 1e-7, 3e-8]).to(dtype)  # fp16 overflow and subnormals
                ref = R.forecast(history, w, x)
                for b in FAST_CPU_BACKENDS:
                    if b.startswith("cpu"):
                        with backend_context(b):
                            assert torch.equal(fk.ops.forecast(history, w, x), ref), (dtype, k, with_x, b)


def test_errors_name_the_argument():
    h = torch.randn(3, 4, 5)
    w = torch.ones(3)
    with pytest.raises(ValueError, match="`history` must be \\[K, ...\\] with 1 <= K <= 4"):
        fk.ops.forecast(torch.randn(5, 4), torch.ones(5))
    with pytest.raises(ValueError, match="`history` must be"):
        fk.ops.forecast(torch.randn(0, 4), torch.ones(0))
    with pytest.raises(TypeError, match="`history` must be float32"):
        fk.ops.forecast(h.long(), w)
    with pytest.raises(TypeError, match="`weights` must be a \\[3\\] float tensor"):
        fk.ops.forecast(h, [1.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="`weights` must be a float tensor"):
        fk.ops.forecast(h, torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="`weights` has shape \\(2,\\) but `history` holds 3 values"):
        fk.ops.forecast(h, torch.ones(2))
    with pytest.raises(ValueError, match="`weights` is on meta"):
        fk.ops.forecast(h, torch.ones(3, device="meta"))
    with pytest.raises(ValueError, match="`x` has shape \\(5, 4\\) but one slot of `history`"):
        fk.ops.forecast(h, w, torch.randn(5, 4))
    with pytest.raises(TypeError, match="`x` is torch.float16 but `history` is torch.float32"):
        fk.ops.forecast(h, w, torch.randn(4, 5).half())
    with pytest.raises(ValueError, match="`out` has shape"):
        fk.ops.forecast(h, w, out=torch.empty(3, 4, 5))
    with pytest.raises(ValueError, match="must be a Python float or a 0-d tensor"):
        fk.ops.extrapolation_weights(torch.ones(2))


def test_opcheck():
    history, w, x = _inputs(3, (2, 5, 8), torch.float32, True)
    for args in ((history, w, x), (history[::2], w[:2], None), (history.bfloat16(), w, x.bfloat16())):
        torch.library.opcheck(torch.ops.fastercache.forecast.default, args)
    torch.library.opcheck(torch.ops.fastercache.forecast_out.default, (history, w, x, torch.empty_like(x)))


@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    k = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    weights = draw(st.lists(st.floats(-4, 4, allow_nan=False, width=32), min_size=k, max_size=k))
    return dtype, shape, weights, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 2**16))


@settings(max_examples=30, deadline=None)
@given(case=_cases())
def test_property_random_cases(case):
    dtype, shape, weights, with_x, strided, seed = case
    history, _, x = _inputs(len(weights), shape, dtype, with_x, seed)
    if strided:
        history = noncontiguous(history)
        x = None if x is None else noncontiguous(x)
    w = torch.tensor(weights)
    ref = R.forecast(history, w, x)
    for b in FAST_CPU_BACKENDS:
        with backend_context(b):
            assert_matches_reference(fk.ops.forecast(history, w, x), ref, what=b, ulps=quirk_ulps(b, dtype))
