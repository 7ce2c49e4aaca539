"""Forecasting reuse (docs/algorithms.md section 11): First-Block-Cache and TeaCache with `forecast_order` n add, on
a reused call, the degree-n polynomial through the last n + 1 computed stack residuals over the step index. On a
model whose block residuals are polynomials of that degree in the step index the forecast is exact (plain reuse is
not); order 0 is the plain policy; decide="device" gives the host-decided outputs and compiles to one graph.
With `forecast_metric` the decision compares the first block's residual (TeaCache: the indicator) with its own
forecast: decisions, metrics and outputs against the plain rule of tests/adaptive_reference.py."""

import pytest
import torch
import torch._dynamo.testing
from adaptive_reference import Recorder, close, decisions, fbcache, forecast_residuals, teacache
from dit_models import PolyDiT, clone, cog_inputs, one_thread, sample_loop, tiny_cogvideox  # noqa: F401
from torch import nn
from torch._dynamo.utils import counters

import fastercache_kernels as fk
from fastercache_kernels.adapters import generic_adapter

pytestmark = pytest.mark.usefixtures("one_thread")

CH, DIM, CALLS = 4, 8, 12


class PolyBlock(nn.Module):
    """x + temb * v: the residual does not depend on x, only on the timestep (through temb)."""

    def __init__(self, dim: int):
        super().__init__()
        self.v = nn.Parameter(torch.randn(dim))

    def forward(self, hidden_states, temb):
        return hidden_states + temb.unsqueeze(1) * self.v


ADAPTER = generic_adapter(spatial=(), temporal=(), blocks=r"^transformer_blocks\.\d+$", block_io=("hidden_states",),
                          timestep_arg="timestep", batched_args=("x", "timestep"))
# every call reuses but the guards' ones: calls 1-3 (warmup) and every third call after them (the cap), so the
# ring wraps and the points are unevenly spaced (1, 2, 3, 6, 9, ...)
SCHEDULE = dict(threshold=1e9, warmup=3, max_consecutive_reuse=2)


def _poly_model(degree: int):
    torch.manual_seed(degree)
    return PolyDiT(PolyBlock, 3, degree, CH, DIM).eval()


def _loop(models, calls=CALLS, compiled=None):
    x = torch.randn(1, CH, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    rows = []
    for i in range(calls):
        t = torch.tensor([999 - 40 * i])  # linear in the step index: temb is a polynomial in it
        with torch.no_grad():
            rows.append([m(x, t) for m in models])
        x = x - 0.01 * rows[-1][0]
    return rows


def _errors(config_kw, degree, decide="host", policy=fk.FirstBlockCacheConfig):
    model = _poly_model(degree)
    ref = clone(model)
    handle = fk.apply(model, policy(**SCHEDULE, **config_kw), adapter=ADAPTER, decide=decide, record=True)
    rows = _loop([ref, model])
    preds = [g["pred"] for g in decisions(handle)]
    errs = [float((b - a).abs().max() / a.abs().max()) for a, b in (r for r in rows)]
    return preds, errs, [r[1] for r in rows]


@pytest.mark.parametrize("policy", [fk.FirstBlockCacheConfig, fk.TeaCacheConfig])
@pytest.mark.parametrize("degree", [1, 2])
def test_forecast_of_order_degree_is_exact(degree, policy):
    """First-Block-Cache forecasts the residual of blocks 1-2, TeaCache that of the whole stack."""
    preds, errs, _ = _errors({"forecast_order": degree}, degree, policy=policy)
    assert preds == [True] * 3 + [False, False, True] * 3, preds
    assert max(errs) < 1e-4, errs  # fp32 rounding, amplified by the extrapolation weights
    _, plain, _ = _errors({}, degree, policy=policy)  # plain reuse misses the change of the residual
    assert max(plain[i] for i, p in enumerate(preds) if not p) > 1e-2, plain


def test_order_one_misses_a_parabola():
    preds, errs, _ = _errors({"forecast_order": 1}, 2)
    assert max(e for e, p in zip(errs, preds) if not p) > 1e-3, errs


def test_device_decisions_give_the_host_outputs():
    _, _, host = _errors({"forecast_order": 2}, 2)
    _, errs, dev = _errors({"forecast_order": 2}, 2, decide="device")
    assert max(errs) < 1e-4
    for a, b in zip(host, dev):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", [lambda **kw: fk.FirstBlockCacheConfig(threshold=0.3, **kw),
                                    lambda **kw: fk.TeaCacheConfig.preset("cogvideox-2b", threshold=0.3, **kw)])
def test_order_zero_is_the_plain_policy(config):
    """forecast_order=0 takes none of the forecasting paths: bit-identical outputs, same decisions and memory."""
    model = tiny_cogvideox()
    twin = clone(model)
    a = fk.apply(model, config(), record=True)
    b = fk.apply(twin, config(forecast_order=0), record=True)
    lat, extra = cog_inputs()
    outs = sample_loop([model, twin], lat, extra, calls=20)
    assert all(torch.equal(x, y) for x, y in outs)
    assert str(decisions(a)) == str(decisions(b)) and 0 < a.stats()["computed"] < 20  # str: NaN metrics
    assert a.stats()["cache_bytes"] == b.stats()["cache_bytes"]


def test_compile_fullgraph_one_graph():
    torch._dynamo.reset()
    counters.clear()
    model = _poly_model(2)
    ref = clone(model)
    handle = fk.apply(model, fk.FirstBlockCacheConfig(**SCHEDULE, forecast_order=2), adapter=ADAPTER,
                      decide="device", record=True)
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=cnt, fullgraph=True)
    rows = _loop([ref, compiled]) + _loop([ref, compiled])  # two videos
    try:
        assert dict(counters["graph_break"]) == {}
        assert cnt.frame_count == 1
        assert handle.stats()["host_reads"] == 0 and handle.stats()["videos"] == 2
        assert max(float((b - a).abs().max() / a.abs().max()) for a, b in rows) < 1e-4
    finally:
        handle.remove()
        torch._dynamo.reset()


def test_composes_with_cfg_cache():
    """With FasterCache's CFG-Cache a skip call runs the cond half of the batch: the forecast reads and the push
    writes that half of the ring (split on its batch dim; composing needs decide="host"). The decisions and CFG
    schedule are those of plain reuse; the outputs differ from plain reuse on reused calls only, by a forecast of the
    residual's drift."""
    model = tiny_cogvideox(layers=1)
    twin = clone(model)
    tea = fk.TeaCacheConfig.preset("cogvideox-2b", threshold=0.3)
    plain = fk.apply(twin, [fk.FasterCacheConfig.preset("cogvideox-2b"), tea], record=True)
    fc = fk.apply(model, [fk.FasterCacheConfig.preset("cogvideox-2b"), tea.replace(forecast_order=1)], record=True)
    lat, extra = cog_inputs()
    outs = sample_loop([twin, model], lat, extra, calls=50)
    st, sp = fc.stats(), plain.stats()
    assert st["cfg"]["skip"] == sp["cfg"]["skip"] > 0 and st["reused"] == sp["reused"] > 0
    preds = [g["pred"] for g in decisions(fc)]
    assert preds == [g["pred"] for g in decisions(plain)]
    first = next(i for i, p in enumerate(preds) if not p)
    assert all(torch.isfinite(b).all() for _, b in outs)
    assert torch.equal(outs[first - 1][0], outs[first - 1][1])  # same until the first reuse
    moved = [i for i, (a, b) in enumerate(outs) if not torch.equal(a, b)]
    assert moved and not preds[moved[0]], moved  # the first difference is on a reused call


SKIP_RINGS = {  # policy, the ring checked: the stack residual's, or with forecast_metric the rule input's
    "residual": (lambda: fk.TeaCacheConfig.preset("cogvideox-2b", threshold=0.3, forecast_order=1),
                 lambda rt: next(b.bufs["res"][0] for b in rt.blocks if b.bufs.get("res"))),
    # (the block input: the tiny model's timestep embedding extrapolates so well that no skip call would compute)
    "teacache-metric": (lambda: fk.TeaCacheConfig(threshold=0.003, coefficients=(1.0, 0.0), indicator="block_input",
                                                  forecast_order=1, forecast_metric=True), lambda rt: rt.u_ring),
    "fbcache-metric": (lambda: fk.FirstBlockCacheConfig(threshold=0.3, forecast_order=1, forecast_metric=True),
                       lambda rt: rt.r1_ring),
}


@pytest.mark.parametrize("name", list(SKIP_RINGS))
def test_cfg_skip_call_extends_the_other_half_by_its_forecast(name):
    """On a CFG-skip call (one half of the batch computed) the computed half's ring slot gets its residual and the
    other half's the forecast of its own ring at that step: its next line then goes through the same points. The
    same for the ring of the rule's input with forecast_metric (its forecast reads the computed half)."""
    config, get_ring = SKIP_RINGS[name]
    model = tiny_cogvideox(layers=1)
    handle = fk.apply(model, [fk.FasterCacheConfig.preset("cogvideox-2b"), config()])
    rt = handle.adaptive
    seen = []
    end = rt.end

    def recording_end(call):
        half, pred = rt.half, bool(rt.pred)
        ring = get_ring(rt)
        before = (ring.clone(), rt.clock.index.clone(), rt.fc_w.clone())
        end(call)
        seen.append((half, pred, before))

    rt.end = recording_end
    lat, extra = cog_inputs()
    sample_loop([model], lat, extra, calls=50)
    checked = 0
    for i in range(1, len(seen)):
        half, pred, (ring, at, w) = seen[i]
        if half is None or not pred:
            continue
        prev_ring = seen[i - 1][2][0]
        other = 1 - half
        want = (w.reshape(-1, *[1] * (ring.dim() - 1)) * prev_ring.chunk(2, dim=1)[other]).sum(0)
        got = ring.chunk(2, dim=1)[other][int(at)]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert not torch.equal(got, prev_ring.chunk(2, dim=1)[other][int(at)])  # the slot was written
        checked += 1
    assert checked > 0, "no computed CFG-skip call"


# -- forecast_metric ------------------------------------------------------------------------------------------------
# The policies on the polynomial model: First-Block-Cache's r1 = temb * v0 and TeaCache's indicator temb are
# quadratic in the step index, so order 2 forecasts them exactly (every call after the third point reuses) and
# order 1 misses by a growing amount (a mix of decisions); the plain rule computes every call at this threshold.
METRIC_RULES = {
    "fbcache": lambda **kw: fk.FirstBlockCacheConfig(threshold=0.02, **kw),
    "teacache": lambda **kw: fk.TeaCacheConfig(threshold=0.02, coefficients=(1.0, 0.0), indicator="timestep_embedding",
                                               **kw),
}
METRIC_CALLS = 20


def _metric_run(name, order, decide="host", forecast_metric=True, compiled=False):
    """The policy on the degree-2 model (host or device decisions, optionally under torch.compile(aot_eager,
    fullgraph)); returns (handle, recorded calls, outputs, dynamo frame count)."""
    model = _poly_model(2)
    handle = fk.apply(model, METRIC_RULES[name](forecast_order=order, forecast_metric=forecast_metric),
                      adapter=ADAPTER, decide=decide, record=True)
    rec = Recorder()
    for i, blk in enumerate(model.transformer_blocks if not compiled else ()):  # (hooks would be traced)
        rec.block(blk, f"b{i}")
    run, cnt = model, None
    if compiled:
        cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
        run = torch.compile(model, backend=cnt, fullgraph=True)
    x = torch.randn(1, CH, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    outs = []
    for i in range(METRIC_CALLS):
        rec.new_call()
        with torch.no_grad():
            outs.append(run(x, torch.tensor([999 - 40 * i])))
        x = x - 0.01 * outs[-1]
    rec.remove()
    return handle, rec.calls, outs, cnt.frame_count if cnt is not None else 0


def _metric_reference(name, calls, order, forecast_metric=True):
    if name == "fbcache":
        return fbcache([c["b0.out"] - c["b0.in"] for c in calls], 0.02, forecast_metric=order * forecast_metric)
    return teacache([c["b0.args"][1] for c in calls], (1.0, 0.0), 0.02, forecast_metric=order * forecast_metric)


@pytest.mark.parametrize("name", list(METRIC_RULES))
@pytest.mark.parametrize("order", [1, 2])
def test_forecast_metric_matches_reference(name, order):
    """The decisions and metrics are the reference rule's on the recorded inputs, the plain rule's differ; every
    reused call adds the forecast of the stack residual through the computed calls the rule chose."""
    handle, calls, _, _ = _metric_run(name, order)
    want = _metric_reference(name, calls, order)
    got = decisions(handle)
    assert [g["pred"] for g in got] == [w["compute"] for w in want]
    computed = sum(w["compute"] for w in want)
    # order 2: exact after three points, so nothing computes after the third; order 1: a mix all along
    assert computed == 3 if order == 2 else 3 < computed < METRIC_CALLS - 5, [w["compute"] for w in want]
    assert all(w["compute"] for w in _metric_reference(name, calls, order, forecast_metric=False)[1:])
    key = "diff" if name == "fbcache" else "rel"
    for g, w in zip(got[1:], want[1:]):
        assert close(g["metric"], w[key], 1e-4), (g, w)
        if name == "teacache":
            assert close(g["acc_seen"], w["acc"], 1e-4), (g, w)
    first = "b1" if name == "fbcache" else "b0"  # First-Block-Cache runs block 0 every call
    res = forecast_residuals(want, lambda c: calls[c - 1]["b2.out"] - calls[c - 1][first + ".in"], order)
    assert len(res) == METRIC_CALLS - computed
    for c, r in res.items():
        x = calls[c - 1][first + ".in"]
        expect = (x.double() + r).float()  # fp32 rounding, amplified by the weights 14 calls past the points
        torch.testing.assert_close(calls[c - 1]["b2.out"], expect, rtol=1e-4, atol=1e-4 * float(expect.abs().max()))


@pytest.mark.parametrize("name", list(METRIC_RULES))
def test_forecast_metric_device_decisions_are_the_host_ones(name):
    host, _, h_out, _ = _metric_run(name, 1)
    dev, _, d_out, _ = _metric_run(name, 1, decide="device")
    assert [g["pred"] for g in decisions(dev)] == [g["pred"] for g in decisions(host)]
    assert 0 < dev.stats()["computed"] < METRIC_CALLS
    for a, b in zip(h_out, d_out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(METRIC_RULES))
def test_forecast_metric_off_keeps_the_plain_rule(name):
    """forecast_metric=False with forecast_order 2: the decisions and metrics of forecast_order 0, bit for bit, and
    no ring of the rule's input (one reference, as before); True changes the metric and holds n + 1 of them."""
    make = (lambda **kw: fk.FirstBlockCacheConfig(threshold=0.3, **kw)) if name == "fbcache" else (
        lambda **kw: fk.TeaCacheConfig.preset("cogvideox-2b", threshold=0.3, **kw))
    models = [tiny_cogvideox() for _ in range(3)]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    handles = [fk.apply(m, make(**kw), record=True) for m, kw in zip(models, [
        {}, {"forecast_order": 2}, {"forecast_order": 2, "forecast_metric": True}])]
    lat, extra = cog_inputs()
    sample_loop(models, lat, extra, calls=20)
    plain, off, on = (decisions(h) for h in handles)
    assert str(off) == str(plain) and 0 < handles[0].stats()["computed"] < 20  # str: NaN metrics
    assert [g["metric"] for g in on[2:]] != [g["metric"] for g in off[2:]]
    rt = handles[1].adaptive
    one = rt.r1_ref if name == "fbcache" else rt.u_prev
    assert (rt.r1_ring if name == "fbcache" else rt.u_ring) is None
    grown = handles[2].stats()["cache_bytes"] - handles[1].stats()["cache_bytes"]
    assert grown == 2 * one.numel() * one.element_size()


@pytest.mark.parametrize("name", list(METRIC_RULES))
@pytest.mark.parametrize("decide", ["host", "device"])
def test_forecast_metric_per_branch(name, decide):
    """Two CFG branch calls per step (the same sample and timestep: section 10's per-branch pattern): each branch
    keeps its own ring of the rule's input, and as both see the same input here, the step's decisions are the
    one-branch run's."""
    single, _, _, _ = _metric_run(name, 1, decide=decide)
    model = _poly_model(2)
    handle = fk.apply(model, METRIC_RULES[name](forecast_order=1, forecast_metric=True), adapter=ADAPTER,
                      decide=decide, record=True)
    x = torch.randn(1, CH, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    for i in range(METRIC_CALLS):
        t = torch.tensor([999 - 40 * i])
        with torch.no_grad():
            y = model(x, t)
            model(x, t)
        x = x - 0.01 * y
    preds = [g["pred"] for g in decisions(handle)]
    want = [g["pred"] for g in decisions(single)]
    assert len(preds) == 2 * METRIC_CALLS and preds[0::2] == want and preds[1::2] == want
    assert 0 < sum(want) < METRIC_CALLS
    rt = handle.adaptive
    ring = "r1_ring" if name == "fbcache" else "u_ring"
    other = [rt.engine.peek(k, rt) for k in ("#0", "#1")]
    theirs = next(rt.state_value(st[0], ring) for st in other if st is not None)
    assert theirs is not getattr(rt, ring) and torch.equal(theirs, getattr(rt, ring))


def test_forecast_metric_compiles_to_one_graph():
    """decide="device" with forecast_metric under torch.compile(fullgraph=True): one graph, no host read, the eager
    device run's decisions and outputs."""
    torch._dynamo.reset()
    counters.clear()
    try:
        handle, _, outs, frames = _metric_run("fbcache", 1, decide="device", compiled=True)
        assert dict(counters["graph_break"]) == {} and frames == 1
        assert handle.stats()["host_reads"] == 0
        eager, _, e_outs, _ = _metric_run("fbcache", 1, decide="device")
        assert [g["pred"] for g in decisions(handle)] == [g["pred"] for g in decisions(eager)]
        assert 0 < handle.stats()["computed"] < METRIC_CALLS
        for a, b in zip(outs, e_outs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    finally:
        torch._dynamo.reset()


def test_forecast_metric_config_errors():
    for cls in (fk.FirstBlockCacheConfig, fk.TeaCacheConfig):
        for kw in [{"forecast_metric": True}, {"forecast_order": 1, "forecast_metric": 1}]:
            with pytest.raises(ValueError, match="forecast_metric.*forecast_order 1 or 2"):
                cls(**kw)
        assert cls(forecast_order=2, forecast_metric=True).forecast_metric
