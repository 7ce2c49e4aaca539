import pytest
import torch
from conftest import FAST_CPU_BACKENDS, backend_context, device
from hypothesis import given, settings
from hypothesis import strategies as st

import fastercache_kernels as fk
from fastercache_kernels import reference as R
from fastercache_kernels.testing import assert_matches_reference, noncontiguous, quirk_ulps

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# x as [B, N, C]: odd sizes, C = 1 and C not a multiple of any vector width, and one large case
SHAPES = [(0, 3, 4), (1, 1), (1, 7), (1, 111), (123, 77), (2, 5, 7), (3, 4, 3, 1), (2, 4099, 129)]
GATES = ["none", "B1C", "BC", "1C", "C"]
W = 0.3


def _gate(kind, b, c, dtype=torch.float32, g=None):
    shapes = {"none": None, "B1C": (b, 1, c), "BC": (b, c), "1C": (1, c), "C": (c,)}
    shape = shapes[kind]
    return None if shape is None else torch.randn(shape, generator=g).to(device()).to(dtype)


def _inputs(shape, dtype, contiguous, gate="B1C", cache_dtype=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device()).to(dtype)
    newer = torch.randn(shape, generator=g).to(device()).to(cache_dtype or dtype)
    older = torch.randn(shape, generator=g).to(device()).to(cache_dtype or dtype)
    gt = _gate(gate, shape[0], shape[-1], g=g)
    if not contiguous:
        x, newer, older = noncontiguous(x), noncontiguous(newer), noncontiguous(older)
    return x, gt, newer, older


def _eager(x, gate, newer, older, w=W):
    # the Open-Sora reuse path as plain PyTorch in x's dtype: F = newer + w * (newer - older); x + gate * F
    n, o = newer.to(x.dtype), older.to(x.dtype)
    f = n + w * (n - o)
    if gate is None:
        return x + f
    view = (x.shape[0], x.shape[1:-1].numel(), x.shape[-1])
    g = gate.to(x.dtype).reshape(-1, view[2])
    return (x.reshape(view) + g[:, None, :] * f.reshape(view)).reshape(x.shape)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, dtype, shape, contiguous):
    x, gate, newer, older = _inputs(shape, dtype, contiguous)
    ref = R.extrapolate_residual(x, gate, newer, older, W)
    eager = _eager(x, gate, newer, older)
    y = x
    out = fk.ops.extrapolate_residual(x, gate, newer, older, torch.tensor(W, device=device()))
    assert out is y  # in place, returns x
    assert_matches_reference(x, ref, eager, what=f"{backend} {dtype} {shape}", ulps=quirk_ulps(backend, dtype))


@pytest.mark.parametrize("gate_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gate", GATES)
def test_gate_forms(backend, gate, gate_dtype):
    x, _, newer, older = _inputs((3, 17, 24), torch.float32, True, seed=1)
    g = _gate(gate, 3, 24, gate_dtype, torch.Generator().manual_seed(9))
    ref = R.extrapolate_residual(x, g, newer, older, W)
    fk.ops.extrapolate_residual(x, g, newer, older, W)
    assert_matches_reference(x, ref, what=f"{backend} {gate} {gate_dtype}")


def test_gate_is_per_sample_and_channel():
    # [B, C] means one gate row per sample (adaLN's gate.unsqueeze(1)), not numpy's alignment with [N, C]
    x = torch.zeros(2, 3, 4)
    newer, older = torch.ones(2, 3, 4), torch.ones(2, 3, 4)
    gate = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    for backend in FAST_CPU_BACKENDS + ["reference"]:
        y = x.clone()
        with backend_context(backend):
            fk.ops.extrapolate_residual(y, gate, newer, older, 0.5)
        assert torch.equal(y, gate[:, None, :].expand(2, 3, 4)), backend


@pytest.mark.parametrize("cache_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mixed_cache_dtype(backend, dtype, cache_dtype):
    x, gate, newer, older = _inputs((2, 37, 40), dtype, True, "B1C", cache_dtype, seed=2)
    ref = R.extrapolate_residual(x, gate, newer, older, W)
    eager = _eager(x, gate, newer, older)
    fk.ops.extrapolate_residual(x, gate, newer, older, W)
    assert x.dtype == dtype
    assert_matches_reference(x, ref, eager, what=f"{backend} {dtype}/{cache_dtype}", ulps=quirk_ulps(backend, dtype))


def test_cpu_rounds_exactly_like_the_reference():
    for dtype in DTYPES:
        for cache_dtype in DTYPES:
            for gate in ("none", "BC", "C"):
                x, g, newer, older = _inputs((3, 33, 41), dtype, True, gate, cache_dtype, seed=3)
                x.view(-1)[:3] = torch.tensor([6e4, -6e4, 1e-7]).to(dtype)
                ref = R.extrapolate_residual(x, g, newer, older, 0.7)
                for b in FAST_CPU_BACKENDS:
                    if b.startswith("cpu"):
                        y = x.clone()
                        with backend_context(b):
                            fk.ops.extrapolate_residual(y, g, newer, older, 0.7)
                        assert torch.equal(y, ref), (dtype, cache_dtype, gate, b)


def test_layouts_and_aliasing(backend):
    x, gate, newer, older = _inputs((2, 9, 12), torch.float32, True)
    # x strided: the result is written back into the view
    base = torch.randn(2, 9, 24, device=device())
    xs = base[..., ::2]
    xs.copy_(x)
    fk.ops.extrapolate_residual(xs, gate, newer, older, W)
    assert_matches_reference(xs, R.extrapolate_residual(x, gate, newer, older, W))
    assert torch.equal(base[..., 1::2], base[..., 1::2].clone())  # the other half of the buffer is untouched
    # x being `newer` itself
    y = newer.clone()
    expected = R.extrapolate_residual(y, gate, y, older, W)
    fk.ops.extrapolate_residual(y, gate, y, older, W)
    assert_matches_reference(y, expected)
    # x partly overlapping `older`: must not read what it already wrote
    buf = torch.randn(2 * 9 * 12 + 12, device=device())
    xo, od = buf[12:].view(2, 9, 12), buf[:-12].view(2, 9, 12)
    expected = R.extrapolate_residual(xo.clone(), gate, newer, od.clone(), W)
    fk.ops.extrapolate_residual(xo, gate, newer, od, W)
    assert_matches_reference(xo, expected)


@pytest.mark.parametrize(
    "weight", [0.0, 1, -0.25, torch.tensor(0.3), torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.5).half()]
)
def test_weight_forms(backend, weight):
    x, gate, newer, older = _inputs((2, 5, 8), torch.float32, True)
    ref = R.extrapolate_residual(x, gate, newer, older, float(weight))
    fk.ops.extrapolate_residual(x, gate, newer, older, weight)
    assert_matches_reference(x, ref)


def test_nan_and_inf_propagate(backend):
    nan, inf = float("nan"), float("inf")
    for dtype in DTYPES:
        x = torch.tensor([[nan, 1.0, inf, 1.0, 1.0, 1.0]], device=device()).to(dtype)
        newer = torch.tensor([[0.0, nan, 0.0, inf, 1.0, 1.0]], device=device()).to(dtype)
        older = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 1.0]], device=device()).to(dtype)
        gate = torch.tensor([1.0, 1.0, 1.0, 1.0, nan, 2.0], device=device())
        fk.ops.extrapolate_residual(x, gate, newer, older, 0.5)
        y = x.float()[0]
        assert y[0].isnan() and y[1].isnan() and y[4].isnan()
        assert y[2] == inf and y[3] == inf
        assert y[5] == 3.0


def test_errors_name_the_argument():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="`x` must be \\[B, ..., C\\]"):
        fk.ops.extrapolate_residual(torch.randn(4), None, torch.randn(4), torch.randn(4), 0.1)
    with pytest.raises(ValueError, match="`newer` has shape"):
        fk.ops.extrapolate_residual(x, None, torch.randn(2, 4, 3), torch.randn(2, 4, 3), 0.1)
    with pytest.raises(TypeError, match="`older` is torch.float16 but `newer` is torch.float32"):
        fk.ops.extrapolate_residual(x, None, x, x.half(), 0.1)
    with pytest.raises(TypeError, match="`x` must be float32"):
        fk.ops.extrapolate_residual(x.long(), None, x, x, 0.1)
    with pytest.raises(ValueError, match="`newer` is on meta"):
        fk.ops.extrapolate_residual(x, None, torch.empty(2, 3, 4, device="meta"), x, 0.1)
    for bad in [(4, 4), (2, 3, 4), (2, 5), (3,), (2, 2, 4)]:
        with pytest.raises(ValueError, match="`gate` has shape"):
            fk.ops.extrapolate_residual(x, torch.randn(bad), x, x, 0.1)
    with pytest.raises(TypeError, match="`gate` must be float32"):
        fk.ops.extrapolate_residual(x, torch.ones(4, dtype=torch.int64), x, x, 0.1)
    with pytest.raises(ValueError, match="`weight` must be a 0-d tensor"):
        fk.ops.extrapolate_residual(x, None, x, x, torch.tensor([0.1]))


def test_opcheck():
    for dtype, cache_dtype in [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                               (torch.float32, torch.float16)]:
        for gate in ("none", "B1C", "C"):
            x, g, newer, older = _inputs((2, 5, 8), dtype, True, gate, cache_dtype)
            torch.library.opcheck(torch.ops.fastercache.extrapolate_residual.default,
                                  (x, g, newer, older, torch.tensor(W)))
        x, g, newer, older = _inputs((2, 5, 8), dtype, False, "BC", cache_dtype)
        torch.library.opcheck(torch.ops.fastercache.extrapolate_residual.default, (x, g, newer, older, torch.tensor(W)))


def test_cpu_is_deterministic():
    x, gate, newer, older = _inputs((2, 4096, 65), torch.bfloat16, True)
    first = x.clone()
    fk.ops.extrapolate_residual(first, gate, newer, older, 0.37)
    for _ in range(3):
        y = x.clone()
        fk.ops.extrapolate_residual(y, gate, newer, older, 0.37)
        assert torch.equal(y, first)


@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    cache_dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=2, max_size=4)))
    gate = draw(st.sampled_from(GATES))
    strided = draw(st.booleans())
    weight = draw(st.floats(-2, 2, allow_nan=False, width=32))
    seed = draw(st.integers(0, 2**16))
    return dtype, cache_dtype, shape, gate, strided, weight, seed


@settings(max_examples=40, deadline=None)
@given(case=_cases())
def test_property_random_layouts(case):
    dtype, cache_dtype, shape, gate, strided, weight, seed = case
    x, g, newer, older = _inputs(shape, dtype, not strided, gate, cache_dtype, seed)
    if strided and x.dim() > 3:
        x = x.transpose(1, 2)  # a permuted layout too (B first and C last stay in place)
        newer, older = newer.transpose(1, 2), older.transpose(1, 2)
    ref = R.extrapolate_residual(x, g, newer, older, weight)
    for backend in FAST_CPU_BACKENDS:
        y = x.clone()
        with backend_context(backend):
            fk.ops.extrapolate_residual(y, g, newer, older, weight)
        assert_matches_reference(y, ref, what=backend, ulps=quirk_ulps(backend, dtype))
