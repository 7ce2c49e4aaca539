"""Every declared op against hostile inputs, on every (device, backend) pair: autograd-tracked inputs raise naming
the argument; a read-only input that overlaps what an op writes (forecast's x or history as a shifted view of
out, an out= tensor that is one of the inputs) gives the result of unaliased inputs; and a bounded hypothesis fuzz over
dtype, layout, out= aliasing and special values compares each backend with the reference backend."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import device
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastercache_kernels as fk
from fastercache_kernels._backend import backend_context
from fastercache_kernels.ops._define import OPS

NAMES = list(OPS)
FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _tensors(args):
    return [(i, a) for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.dim() > 0]


def _clone(args):
    def one(a):
        return a.clone() if isinstance(a, torch.Tensor) else a

    return [[one(t) for t in a] if isinstance(a, list) else one(a) for a in args]


def _results(res, args):
    out = [t for t in (res if isinstance(res, (tuple, list)) else (res,)) if isinstance(t, torch.Tensor)]
    return out + [a for a in args if isinstance(a, torch.Tensor)]


@pytest.mark.parametrize("name", NAMES)
def test_inputs_that_require_grad_raise_naming_the_argument(name):
    d = OPS[name]
    args = d.example(torch.device("cpu"))
    i, t = _tensors(args)[0]
    args = list(args)
    args[i] = t.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match=r"`\w+` requires grad.*torch.no_grad"):
        d(*args)
    with torch.no_grad():
        d(*args)  # fine without grad mode


def test_inputs_that_partly_overlap_out(backend):
    """forecast's x and history as views of the buffer out is in, shifted by a few elements (a kernel writing out
    in order would read values it already overwrote): the result of unaliased inputs."""
    g = torch.Generator().manual_seed(0)
    weights = torch.tensor([0.5, -1.5], device=device())
    for shift in (-3, 5):
        buf = torch.randn(400, generator=g).to(device())
        out = buf[100:164].view(8, 8)
        x = buf[100 + shift : 164 + shift].view(8, 8)
        history = buf[68 - shift : 196 - shift].view(2, 8, 8)  # slot 0 over out's first half, slot 1 its second
        with backend_context("reference"):
            want = fk.ops.forecast(history.clone(), weights, x.clone())
        fk.ops.forecast(history, weights, x, out=out)
        torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)


def _special(t: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "none" or t.numel() == 0:
        return t
    t = t.clone()
    t.view(-1)[0] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "huge": 6e4}[kind]
    return t


def _layout(t: torch.Tensor, strided: bool) -> torch.Tensor:
    """The same values, non-contiguous when `strided` (a transposed copy, transposed back)."""
    if not strided or t.dim() < 2:
        return t
    return t.transpose(0, -1).contiguous().transpose(0, -1)


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    a, b = a.float(), b.float()
    assert torch.equal(a.isnan(), b.isnan()), f"{what}: NaN positions differ"
    fin = a.isfinite() & b.isfinite()
    assert torch.equal(a.isinf() & ~fin, b.isinf() & ~fin), f"{what}: Inf positions differ"
    tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
    scale = max(1.0, float(b[fin].abs().max()) if fin.any() else 1.0)
    assert float((a[fin] - b[fin]).abs().max() if fin.any() else 0.0) <= tol * scale, what


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.parametrize("name", NAMES)
def test_fuzz_against_the_reference(fast_backend, name, data):
    d = OPS[name]
    args = list(d.example(device()))
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    strided = data.draw(st.booleans(), label="strided")
    special = data.draw(st.sampled_from(["none", "nan", "inf", "-inf", "huge"]), label="special")
    big = [i for i, _ in _tensors(args)]
    which = data.draw(st.sampled_from(big), label="special input")
    for i in big:
        t = args[i].to(dtype) if args[i].dtype in FLOATS else args[i]
        t = _special(t, special) if i == which else t
        args[i] = _layout(t, strided)
    alias = None
    if d.out is not None and data.draw(st.booleans(), label="alias out"):
        res_shapes = d.fake(*args)
        outs = res_shapes if isinstance(res_shapes, tuple) else (res_shapes,)
        same = [i for i in big if any(o.shape == args[i].shape and o.dtype == args[i].dtype for o in outs)]
        alias = data.draw(st.sampled_from(same), label="out is input") if same else None
    want_args = _clone(args)
    try:
        with backend_context("reference"):
            want = _results(d(*want_args), [])
    except (ValueError, TypeError) as e:  # a layout or dtype the op rejects: every backend must reject it alike
        with pytest.raises(type(e)):
            d(*_clone(args))
        return
    if alias is not None:  # out= is one of the inputs: the result of unaliased inputs
        ins = _clone(args)
        outs = tuple(ins[alias] if o.shape == ins[alias].shape and o.dtype == ins[alias].dtype and k == 0 else
                     torch.empty_like(o) for k, o in enumerate(
                         d.fake(*ins) if isinstance(d.fake(*ins), tuple) else (d.fake(*ins),)))
        d(*ins, out=outs if len(outs) > 1 else outs[0])
        for k, (got, w) in enumerate(zip(outs, want)):
            _close(got, w, dtype, f"{name} out[{k}] aliasing input {alias}")
        return
    mine = _clone(args)
    got = _results(d(*mine), [])
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        _close(a, b, dtype, f"{name} result {k}")
    for i in big:  # the arguments an op writes (in place), and the others untouched
        _close(mine[i], want_args[i], dtype, f"{name} argument {i}")


def test_use_backend_names_both_cpu_builds():
    from fastercache_kernels import _ext

    if _ext.why_not("_cpu") is None:
        with fk.use_backend("cpu-baseline"):
            assert _ext.cpu_variant() == "baseline"
    if _ext._has_avx2() and _ext.why_not("_cpu_avx2") is None:
        with fk.use_backend("cpu-avx2"):
            assert _ext.cpu_variant() == "avx2"
    with pytest.raises(ValueError, match="cpu-baseline, cpu-avx2"):
        with fk.use_backend("cpu-sse"):
            pass
