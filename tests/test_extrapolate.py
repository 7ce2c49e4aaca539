import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastercache_kernels as fk
from fastercache_kernels import reference as R
from fastercache_kernels.testing import (
    assert_matches_reference, noncontiguous, quirk_ulps, skip_unless_memory, strided_randn,
)
from conftest import FAST_CPU_BACKENDS, backend_context, device, strided_layouts

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(0,), (1,), (7,), (111,), (123, 77), ((1 << 20) + 3,)]


def _inputs(shape, dtype, contiguous, seed=0):
    g = torch.Generator().manual_seed(seed)
    newer = torch.randn(shape, generator=g).to(device(), dtype)
    older = torch.randn(shape, generator=g).to(device(), dtype)
    if not contiguous:
        newer, older = noncontiguous(newer), noncontiguous(older)
    return newer, older


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, dtype, shape, contiguous):
    newer, older = _inputs(shape, dtype, contiguous)
    w = torch.tensor(0.3)
    out = fk.ops.extrapolate(newer, older, w)
    assert out.dtype == dtype and out.shape == newer.shape
    ref = R.extrapolate(newer, older, 0.3)
    eager = newer + 0.3 * (newer - older)  # plain PyTorch in the input dtype
    assert_matches_reference(out, ref, eager, what=f"{backend} {dtype} {shape}", ulps=quirk_ulps(backend, dtype))


def test_cpu_rounds_exactly_like_the_reference():
    # _cpu computes newer + w*(newer - older) in fp32 in torch's order and rounds once (nearest even):
    # bit-identical to the reference in every dtype.
    for dtype in DTYPES:
        newer, older = _inputs((4099,), dtype, True, seed=3)
        newer[:4] = torch.tensor([6e4, -6e4, 1e-7, 3e-8]).to(dtype)  # overflow and subnormal results in fp16
        for isa in FAST_CPU_BACKENDS:
            if not isa.startswith("cpu"):
                continue
            with backend_context(isa):
                assert torch.equal(fk.ops.extrapolate(newer, older, 0.7), R.extrapolate(newer, older, 0.7)), isa


def test_out_variants(backend):
    newer, older = _inputs((7, 13), torch.float32, True)
    expected = R.extrapolate(newer, older, 0.5)
    out = torch.empty_like(newer)
    assert fk.ops.extrapolate(newer, older, 0.5, out=out) is out
    assert_matches_reference(out, expected)
    strided = noncontiguous(torch.zeros_like(newer))
    fk.ops.extrapolate(newer, older, 0.5, out=strided)
    assert_matches_reference(strided, expected)
    inplace = newer.clone()
    fk.ops.extrapolate(inplace, older, 0.5, out=inplace)  # out aliasing an input exactly
    assert_matches_reference(inplace, expected)
    # a partial overlap with an input must not read what it already wrote
    buf = torch.randn(20, device=device())
    a, o, b = buf[1:11], buf[0:10], torch.randn(10, device=device())
    expected = R.extrapolate(a.clone(), b, 0.5)
    fk.ops.extrapolate(a, b, 0.5, out=o)
    assert_matches_reference(o, expected)


@pytest.mark.parametrize(
    "weight", [0.0, 1, -0.25, torch.tensor(0.3), torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.5).half()]
)
def test_weight_forms(backend, weight):
    newer, older = _inputs((33,), torch.float32, True)
    w = float(weight)
    assert_matches_reference(fk.ops.extrapolate(newer, older, weight), R.extrapolate(newer, older, w))


def test_nan_and_inf_propagate(backend):
    newer = torch.tensor([float("nan"), 1.0, float("inf"), 2.0, 3.0], device=device())
    older = torch.tensor([0.0, float("nan"), 0.0, float("-inf"), 1.0], device=device())
    for dtype in DTYPES:
        out = fk.ops.extrapolate(newer.to(dtype), older.to(dtype), 0.5).float()
        assert out[0].isnan() and out[1].isnan()
        assert out[2] == float("inf") and out[3] == float("inf")
        assert out[4] == 4.0


def test_errors_name_the_argument():
    a = torch.randn(4, 5)
    with pytest.raises(ValueError, match="`older` has shape"):
        fk.ops.extrapolate(a, torch.randn(5, 4), 0.1)
    with pytest.raises(TypeError, match="`older` is torch.float16"):
        fk.ops.extrapolate(a, a.half(), 0.1)
    with pytest.raises(ValueError, match="`older` is on meta"):
        fk.ops.extrapolate(a, torch.empty(4, 5, device="meta"), 0.1)
    with pytest.raises(TypeError, match="`newer` must be float32"):
        fk.ops.extrapolate(a.long(), a.long(), 0.1)
    with pytest.raises(ValueError, match="`weight` must be a 0-d tensor"):
        fk.ops.extrapolate(a, a, torch.tensor([0.1]))
    with pytest.raises(TypeError, match="`weight` must be a Python float or a 0-d tensor"):
        fk.ops.extrapolate(a, a, "0.1")
    with pytest.raises(ValueError, match="`out` has shape"):
        fk.ops.extrapolate(a, a, 0.1, out=torch.empty(3))


def test_unavailable_backend_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with fk.use_backend("cuda"), pytest.raises(fk.BackendUnavailableError, match="runs CUDA tensors only"):
        fk.ops.extrapolate(torch.ones(3), torch.ones(3), 0.1)
    with pytest.raises(ValueError, match="unknown backend"):
        with fk.use_backend("tpu"):
            pass
    monkeypatch.setenv("FASTERCACHE_BACKEND", "triton")
    with pytest.raises(fk.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        fk.ops.extrapolate(torch.ones(3), torch.ones(3), 0.1)


def test_env_var_forces_backend(monkeypatch):
    monkeypatch.setenv("FASTERCACHE_BACKEND", "reference")
    from fastercache_kernels import _backend

    assert _backend.select(torch.device("cpu")) == "reference"
    with fk.use_backend("cpu"):  # the context manager wins over the environment
        assert _backend.select(torch.device("cpu")) == "cpu"
    monkeypatch.setenv("FASTERCACHE_BACKEND", "bogus")
    with pytest.raises(ValueError, match="FASTERCACHE_BACKEND"):
        _backend.select(torch.device("cpu"))


def test_opcheck():
    for dtype in DTYPES:
        newer, older = _inputs((5, 7), dtype, True)
        w = torch.tensor(0.3)
        torch.library.opcheck(torch.ops.fastercache.extrapolate.default, (newer, older, w))
        torch.library.opcheck(
            torch.ops.fastercache.extrapolate_out.default, (newer, older, w, torch.empty_like(newer))
        )
        torch.library.opcheck(torch.ops.fastercache.extrapolate.default, (noncontiguous(newer), older, w))


def test_deterministic_run_to_run(backend):
    newer, older = _inputs((1 << 18,), torch.bfloat16, True)
    first = fk.ops.extrapolate(newer, older, 0.37)
    for _ in range(3):
        assert torch.equal(fk.ops.extrapolate(newer, older, 0.37), first)


@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape, perm, step = draw(strided_layouts())
    weight = draw(st.floats(-2, 2, allow_nan=False, width=32))
    seed = draw(st.integers(0, 2**16))
    return dtype, shape, perm, step, weight, seed


@settings(max_examples=40, deadline=None)
@given(case=_cases())
def test_property_random_layouts(case):
    dtype, shape, perm, step, weight, seed = case
    g = torch.Generator().manual_seed(seed)
    newer = strided_randn(shape, step, perm, dtype, g)
    older = strided_randn(shape, step, perm, dtype, g)
    ref = R.extrapolate(newer, older, weight)
    for b in FAST_CPU_BACKENDS:
        with backend_context(b):
            assert_matches_reference(fk.ops.extrapolate(newer, older, weight), ref, what=b)


def test_int64_indexing_past_2_pow_31():
    n = (1 << 31) + 77
    need = 3 * n * 2 + (2 << 30)  # three bf16 tensors and some headroom
    skip_unless_memory(need)
    newer = torch.full((n,), 1.0, dtype=torch.bfloat16)
    older = torch.zeros(n, dtype=torch.bfloat16)
    tail = torch.tensor([2.0, -4.0, 8.0], dtype=torch.bfloat16)
    newer[-3:] = tail
    newer[(1 << 31) - 1 : (1 << 31) + 2] = torch.tensor([3.0, 5.0, 7.0], dtype=torch.bfloat16)
    out = fk.ops.extrapolate(newer, older, 0.5)  # auto: the _cpu module
    del older
    assert out[:16].eq(1.5).all()
    assert out[-3:].float().tolist() == [3.0, -6.0, 12.0]
    assert out[(1 << 31) - 1 : (1 << 31) + 2].float().tolist() == [4.5, 7.5, 10.5]
    assert out[(1 << 31) + 2 : -3].eq(1.5).all()
    del newer, out
