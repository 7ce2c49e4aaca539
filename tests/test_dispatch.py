"""The eager fast paths: plain eager calls skip torch's dispatcher (`ops._common.call`), and the per-call ops of the
cache runtimes run their CPU launcher straight away (`OpDef.cpu_direct`); everything else keeps the dispatcher. And
the choice of backend (use_backend, FASTERCACHE_BACKEND) with errors that say why one cannot run."""

import importlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

import fastercache_kernels as fk

forecast_mod = importlib.import_module("fastercache_kernels.ops.forecast")
residual_sum_mod = importlib.import_module("fastercache_kernels.ops.residual_sum")
diff_mod = importlib.import_module("fastercache_kernels.ops.residual_diff_update")
feature_diff_mod = importlib.import_module("fastercache_kernels.ops.feature_diff")


@pytest.fixture
def direct_calls(monkeypatch):
    """Counts the calls that took the direct path (torch.ops calls the registered function, not `fk_impl`)."""
    seen = []
    for op in (forecast_mod.OP.op, forecast_mod.OP.op_out, residual_sum_mod.OP.op):
        impl = op.fk_impl

        def counting(*args, _impl=impl, _name=op._name):
            seen.append(_name)
            return _impl(*args)

        monkeypatch.setattr(op, "fk_impl", counting)
    for d in (forecast_mod.OP, residual_sum_mod.OP, feature_diff_mod.OP_PARTIALS):
        if d.cpu_direct is not None:
            def direct(*args, _run=d.cpu_direct, _name=d.name):
                seen.append(_name)
                return _run(*args)

            monkeypatch.setattr(d, "cpu_direct", direct)
    return seen


def _pair(requires_grad=False):
    a = torch.randn(7, 5, requires_grad=requires_grad)
    b = torch.randn(7, 5)
    return a, b


def _extrapolate(a, b, w, **kw):
    """FasterCache's a + w * (a - b) as the forecast over the two slots (a, b)."""
    return fk.ops.forecast(torch.stack([a, b]), fk.ops.extrapolation_weights(w), **kw)


def test_plain_eager_call_is_direct_and_correct(direct_calls):
    a, b = _pair()
    out = _extrapolate(a, b, 0.3)
    assert direct_calls == ["forecast"]
    torch.testing.assert_close(out, a + 0.3 * (a - b))
    s = fk.ops.residual_sum(a, [b, b])
    assert direct_calls[-1] == "residual_sum"
    torch.testing.assert_close(s, a + 2 * b)


def test_direct_out_call_bumps_the_version_counter(direct_calls):
    # Autograd relies on it to reject a tensor modified after being saved for backward.
    a, b = _pair()
    out = torch.empty_like(a)
    before = out._version
    _extrapolate(a, b, 0.3, out=out)
    assert direct_calls == ["forecast_out"]
    assert out._version > before


def test_in_place_op_bumps_the_version_counter():
    cache = torch.zeros(2, 6)
    before = cache._version
    fk.ops.residual_diff_update(torch.randn(2, 6), torch.randn(2, 6), cache)
    assert cache._version > before


def test_saved_tensor_modified_by_out_variant_is_caught():
    w = torch.randn(3, 4, requires_grad=True)
    x = torch.randn(3, 4)
    y = w * x  # saves x for backward
    _extrapolate(torch.randn(3, 4), torch.randn(3, 4), 0.5, out=x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_autograd_tracked_input_raises_naming_it(direct_calls):
    a, b = _pair(requires_grad=True)
    history = torch.stack([a, b])
    w = fk.ops.extrapolation_weights(0.3)
    with pytest.raises(RuntimeError, match="`history` requires grad"):  # no backward: never a dropped gradient
        fk.ops.forecast(history, w)
    assert direct_calls == []
    with torch.no_grad():
        fk.ops.forecast(history, w)
    assert direct_calls == ["forecast"]


def test_fake_tensor_mode_uses_the_fake_implementation(direct_calls):
    with FakeTensorMode():
        a, b = torch.empty(7, 5), torch.empty(7, 5)
        out = _extrapolate(a, b, torch.tensor(0.3))
    assert isinstance(out, FakeTensor) and out.shape == (7, 5)
    assert direct_calls == []


def test_meta_tensors_use_the_fake_implementation(direct_calls):
    a = torch.empty(7, 5, device="meta")
    out = _extrapolate(a, a, torch.tensor(0.3, device="meta"))
    assert out.device.type == "meta" and out.shape == (7, 5)
    assert direct_calls == []


def test_profiler_sees_the_op(direct_calls):
    a, b = _pair()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _extrapolate(a, b, 0.3)
    assert direct_calls == []
    assert any("fastercache::forecast" in e.name for e in prof.events())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_vmap_goes_through_the_dispatcher(direct_calls):
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    w = torch.tensor(0.3)
    # No batching rule is registered: the dispatcher's per-sample fallback must see the call (a direct call
    # would hand the kernel batched wrappers).
    out = torch.vmap(lambda x, y: _extrapolate(x, y, w))(a, b)
    torch.testing.assert_close(out, a + 0.3 * (a - b))
    assert direct_calls == []


def test_bad_input_errors_are_the_same_on_both_paths():
    with pytest.raises(ValueError, match="`x` has shape"):
        fk.ops.forecast(torch.randn(2, 4), torch.ones(2), torch.randn(5))
    with pytest.raises(ValueError, match="`x` has shape"), FakeTensorMode():
        fk.ops.forecast(torch.empty(2, 4), torch.ones(2), torch.empty(5))


def test_cpu_direct_path_only_for_plain_cpu_calls(direct_calls):
    """The launcher-direct path of the runtime's per-call ops: taken by a plain eager CPU call (same result as the
    dispatcher's), not under a forced backend, a fake-tensor mode or the profiler; its argument check still runs."""
    from fastercache_kernels import _ext

    a, b = _pair()
    direct = fk.ops.feature_diff_partials(a, b, "rel_l2")
    expected = [] if _ext.why_not("_cpu") is not None else ["feature_diff_partials"]
    assert direct_calls == expected
    with fk.use_backend("reference"):
        ref = fk.ops.feature_diff_partials(a, b, "rel_l2")
    assert direct_calls == expected  # the reference backend went through the op layers
    torch.testing.assert_close(direct, ref)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        fk.ops.residual_sum(a, [b])
    with FakeTensorMode():
        fk.ops.residual_sum(torch.empty(7, 5), [torch.empty(7, 5)])
    assert direct_calls == expected
    with pytest.raises(ValueError, match="`residuals\\[0\\]` has shape"):
        fk.ops.residual_sum(a, [torch.randn(5, 7)])


def test_forecast_direct_path_matches_the_op_layers(monkeypatch):
    """fk.ops.forecast's launcher-direct path (TaylorSeer's per-module forecast) gives the bits of the op layers'
    path, for a contiguous ring (slot addresses from its strides), a strided one (a CFG half: slots copied), an `x`
    and fp16; the op's argument check still runs."""
    from fastercache_kernels import _ext

    if _ext.why_not("_cpu") is not None:
        pytest.skip("the CPU module is not built: no direct path")
    direct_calls = []
    run = forecast_mod.OP.cpu_direct
    monkeypatch.setattr(forecast_mod.OP, "cpu_direct", lambda *a: direct_calls.append(1) or run(*a))
    torch.manual_seed(0)
    ring = torch.randn(3, 2, 5, 7)
    w = torch.tensor([1.75, -1.0, 0.25])
    cases = [(ring, None), (ring.chunk(2, dim=1)[1], None), (ring, torch.randn(2, 5, 7)),
             (ring.half(), torch.randn(2, 5, 7).half()), (ring[:2], None)]
    for history, x in cases:
        k = history.shape[0]
        direct = fk.ops.forecast(history, w[:k], x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):  # the op layers' path
            layered = fk.ops.forecast(history, w[:k], x)
        assert torch.equal(direct, layered)
        ref = sum(float(w[i]) * history[i].float() for i in range(k)) + (0 if x is None else x.float())
        torch.testing.assert_close(direct.float(), ref, rtol=1e-3, atol=1e-3)
    assert len(direct_calls) == len(cases)  # the profiled calls took the op layers
    with pytest.raises(ValueError, match="`weights` has shape"):
        fk.ops.forecast(ring, w[:2])


def test_unavailable_backend_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    history, w = torch.ones(2, 3), fk.ops.extrapolation_weights(0.1)
    with fk.use_backend("cuda"), pytest.raises(fk.BackendUnavailableError, match="runs CUDA tensors only"):
        fk.ops.forecast(history, w)
    with pytest.raises(ValueError, match="unknown backend"):
        with fk.use_backend("tpu"):
            pass
    monkeypatch.setenv("FASTERCACHE_BACKEND", "triton")
    with pytest.raises(fk.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        fk.ops.forecast(history, w)


def test_env_var_forces_backend(monkeypatch):
    from fastercache_kernels import _backend

    monkeypatch.setenv("FASTERCACHE_BACKEND", "reference")
    assert _backend.select(torch.device("cpu")) == "reference"
    with fk.use_backend("cpu"):  # the context manager wins over the environment
        assert _backend.select(torch.device("cpu")) == "cpu"
    monkeypatch.setenv("FASTERCACHE_BACKEND", "bogus")
    with pytest.raises(ValueError, match="FASTERCACHE_BACKEND"):
        _backend.select(torch.device("cpu"))
