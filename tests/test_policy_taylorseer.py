"""TaylorSeer (docs/algorithms.md section 13): the schedule against a plain statement of diffusers' rule, parity with
diffusers' TaylorSeerCache hook (same computed steps, outputs within 1e-5) on tiny CogVideoX, Latte and the tiny
Wan pipeline (per CFG branch), composition with FasterCache, decide="device" under torch.compile(fullgraph=True),
errors."""

import copy

import pytest
import torch
import torch._dynamo.testing
from adaptive_reference import decisions
from dit_models import one_thread  # noqa: F401
from dit_models import clone, cog_inputs, latte_inputs, rel_err, sample_loop, tiny_cogvideox, tiny_latte
from torch._dynamo.utils import counters

import fastercache_kernels as fk

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 20
ATTENTION = r"[^.]*blocks\.\d+\.attn\d*"  # the blocks' attention modules (attn1, attn2), as bench/compare.py names them


def schedule(steps, interval, before, after=None) -> list[bool]:
    """diffusers 0.42.1's TaylorSeerCacheHook rule, written out: True where step s (from 0) computes."""
    out = []
    for s in range(steps):
        out.append(s < before or (s - before - 1) % interval == 0 or (after is not None and s >= after))
    return out


def _diffusers(interval, order, mode, before=3, after=None):
    from diffusers import TaylorSeerCacheConfig

    return TaylorSeerCacheConfig(cache_interval=interval, max_order=order, disable_cache_before_step=before,
                                 disable_cache_after_step=after, taylor_factors_dtype=torch.float32,
                                 use_lite_mode=mode == "lite",
                                 cache_identifiers=None if mode == "lite" else [ATTENTION])


def test_schedule_is_diffusers():
    for interval, before, after in [(3, 3, None), (5, 3, None), (1, 0, None), (4, 0, 12), (2, 6, 15)]:
        cfg = fk.TaylorSeerConfig(cache_interval=interval, disable_cache_before_step=before,
                                  disable_cache_after_step=after)
        want = schedule(STEPS, interval, before, after)
        want[0] = True  # fk computes the first step of a video (diffusers raises there when before is 0)
        assert [cfg.computes(s) for s in range(STEPS)] == want
    assert schedule(10, 3, 3) == [True] * 3 + [False, True, False, False, True, False, False]


def test_host_weights_are_the_history_weights():
    """decide="host" computes the weights in Python (policies/taylorseer/hooks.py, taylor_weights): the same as the
    device-side History.weights(rule="taylorseer") for every fill, write index and order."""
    from fastercache_kernels.runtime.forecast import History
    from fastercache_kernels.policies.taylorseer.hooks import taylor_weights

    g = torch.Generator().manual_seed(0)
    for order in (0, 1, 2):
        h = History(order + 1, ())
        pos = 1.0
        for push in range(5):
            at = pos + float(torch.randint(1, 6, (), generator=g))
            want = h.weights(torch.tensor(at), order, "taylorseer")
            got = taylor_weights(h.positions.tolist(), int(h.index), int(h.filled), at, order)
            assert torch.allclose(torch.tensor(got, dtype=torch.float32), want, rtol=1e-6, atol=1e-6), (order, push)
            h.push(torch.zeros(()), at)
            pos = at
        assert any(abs(v) > 1.5 for v in got) or order == 0  # extrapolation weights, not an average


def test_host_calls_take_the_short_paths():
    """decide="host"'s per-call shortcuts (benchmarks/bench_overhead_taylorseer.py): mode "lite"'s forecast calls pass
    the blocks through from their forward (the runtime's `run` is called on computed calls only); the forecast
    weights are one tensor per distinct weights of the schedule, kept across videos, and a second video gives
    the first one's outputs bit for bit."""
    model = tiny_cogvideox()
    cfg = fk.TaylorSeerConfig(cache_interval=5)
    handle = fk.apply(model, cfg, decide="host")
    rt = handle.adaptive
    runs = []
    run = rt.run
    rt.run = lambda b, args, kwargs: runs.append(b) or run(b, args, kwargs)
    lat, extra = cog_inputs()
    n = 2 * STEPS  # (the schedule repeats its weights)
    first = [o for (o,) in sample_loop([model], lat, extra, calls=n)]
    computed = [cfg.computes(s) for s in range(n)]
    # (the first call is observed: its blocks run in `observe`)
    assert len(runs) == (sum(computed) - 1) * len(rt.blocks) and sum(computed) < n
    # order 1: the weights depend on the offset from the last computed step, the gap between the last two and the
    # ring slot (of 2) holding the last one
    last, pushed, pairs = None, 0, set()
    for s, c in enumerate(computed):
        if c:
            last, gap, pushed = s, (s - last if last is not None else None), pushed + 1
        else:
            pairs.add((s - last, gap, pushed % 2))
    assert len(rt._wcache) == len(pairs) < n - sum(computed)
    handle.reset()
    second = [o for (o,) in sample_loop([model], lat, extra, calls=n)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert len(rt._wcache) == len(pairs)


class _Counter:
    """Counts the runs of a submodule: on diffusers' model (torch.cond forbids Python side effects on ours)."""

    def __init__(self, module):
        self.n = 0
        module.register_forward_hook(lambda *a: setattr(self, "n", self.n + 1))


@pytest.mark.parametrize("family", ["cogvideox", "latte"])
@pytest.mark.parametrize("mode,interval,order", [("lite", 3, 1), ("lite", 5, 2), ("attention", 3, 1),
                                                 ("attention", 5, 2)])
def test_parity_with_diffusers_hook(family, mode, interval, order):
    make, inputs = (tiny_cogvideox, cog_inputs) if family == "cogvideox" else (tiny_latte, latte_inputs)
    ours = make()
    theirs = clone(ours)
    theirs.enable_cache(_diffusers(interval, order, mode))
    handle = fk.apply(ours, fk.TaylorSeerConfig(cache_interval=interval, max_order=order, mode=mode), record=True)
    ran = _Counter(theirs.get_submodule("transformer_blocks.0.attn1.to_q"))
    lat, extra = inputs()
    with theirs.cache_context("video"):  # diffusers' hook keeps its state per context
        outs = sample_loop([theirs, ours], lat, extra, calls=STEPS)
    computed = [g["pred"] for g in decisions(handle)]
    assert computed == schedule(STEPS, interval, 3)
    assert ran.n == sum(computed)  # diffusers ran the attention on the same steps
    for i, (t, o) in enumerate(outs):
        assert rel_err(o, t) < 1e-5, (i, rel_err(o, t))  # every output, forecast or not, is diffusers'
    assert not computed[3] and rel_err(outs[3][1], outs[2][1]) > 1e-3  # a forecast, not the last output again


@pytest.mark.parametrize("mode", ["lite", "attention"])
def test_parity_on_the_wan_pipeline_per_branch(mode):
    """The tiny Wan pipeline's loop with cond and uncond calls in diffusers' cache_context: both count steps per
    branch; the diffusers config is given to fk.apply as a drop-in."""
    from pipelines import Loop, rel, tiny_wan

    pipe, kw = tiny_wan()
    loop = Loop(pipe, kw, 8, "wan")
    theirs = copy.deepcopy(pipe.transformer)
    theirs.enable_cache(_diffusers(3, 2, mode, before=2))
    ours = copy.deepcopy(pipe.transformer)
    handle = fk.apply(ours, _diffusers(3, 2, mode, before=2), record=True)
    want = loop.run(theirs, per_branch=True)
    got = loop.run(ours, per_branch=True)
    keys = [h["key"] for h in handle.history]
    for key in ("cond", "uncond"):
        assert [g["pred"] for g, k in zip(decisions(handle), keys) if k == key] == schedule(8, 3, 2)
    assert rel(got, want) < 1e-5
    assert rel(got, loop.run(copy.deepcopy(pipe.transformer), per_branch=True)) > 1e-4  # it did forecast


def test_composed_with_fastercache():
    """FasterCache's CFG-Cache with TaylorSeer lite: the skip calls compute one half of the batch, the forecast
    fills the other half's slot, and the video stays close to the uncached one."""
    model = tiny_cogvideox()
    ref, alone = clone(model), clone(model)
    cfg = fk.TaylorSeerConfig(cache_interval=3, max_order=1)
    handle = fk.apply(model, [fk.FasterCacheConfig.preset("cogvideox-2b"), cfg], record=True)
    fk.apply(alone, cfg)
    lat, extra = cog_inputs()
    outs = sample_loop([ref, model, alone], lat, extra, calls=STEPS)
    st = handle.stats()
    assert sorted(st["policies"]) == ["fastercache", "taylorseer"]
    assert [g["pred"] for g in decisions(handle)] == schedule(STEPS, 3, 3)
    errs = [rel_err(row[1], row[0]) for row in outs]
    assert max(errs) < 0.5 and any(e > 1e-4 for e in errs)
    assert any(rel_err(row[1], row[2]) > 1e-5 for row in outs)  # the CFG-Cache ran too
    text = __import__("io").StringIO()
    handle.summary(file=text)
    assert "fixed schedule" in text.getvalue() and "C C C r C r r C" in text.getvalue()


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="cache_interval"):
        fk.TaylorSeerConfig(cache_interval=0)
    with pytest.raises(ValueError, match="max_order"):
        fk.TaylorSeerConfig(max_order=3)
    with pytest.raises(ValueError, match="mode"):
        fk.TaylorSeerConfig(mode="blocks")
    with pytest.raises(ValueError, match="no `modules`"):
        fk.TaylorSeerConfig(mode="residual", modules=["proj_out"])
    with pytest.raises(ValueError, match="regular expressions"):
        fk.TaylorSeerConfig(modules=["("])
    with pytest.raises(ValueError, match="modules="):
        fk.apply(tiny_cogvideox(layers=1), fk.TaylorSeerConfig(modules=["nothing_here"]))
    model = tiny_cogvideox(layers=1)
    fk.apply(model, fk.TaylorSeerConfig(modules=[ATTENTION]))  # inside the skipped blocks: refused at the first
    with pytest.raises(ValueError, match="mode='attention'"):  # call, whose data flow shows the blocks
        sample_loop([model], *cog_inputs(), calls=4, first=1)
    with pytest.raises(ValueError, match="mode='lite'"):
        fk.apply(tiny_cogvideox(layers=1), fk.TaylorSeerConfig(mode="attention"), decide="device")
    with pytest.raises(ValueError, match="mode='lite'"):
        fk.apply(tiny_cogvideox(layers=1), ["cogvideox-2b", fk.TaylorSeerConfig(mode="attention")])


def test_residual_mode_forecasts_the_stack_residual():
    """mode "residual": the same schedule; computed calls are the uncached model's, forecast calls differ from
    plain reuse of the last residual (order 0) and from diffusers' lite forecast."""
    model = tiny_latte()
    lite, plain, ref = clone(model), clone(model), clone(model)
    handle = fk.apply(model, fk.TaylorSeerConfig(cache_interval=3, mode="residual"), record=True)
    fk.apply(plain, fk.TaylorSeerConfig(cache_interval=3, max_order=0, mode="residual"))
    fk.apply(lite, fk.TaylorSeerConfig(cache_interval=3))
    lat, extra = latte_inputs()
    outs = sample_loop([ref, model, plain, lite], lat, extra, calls=STEPS)
    computed = [g["pred"] for g in decisions(handle)]
    assert computed == schedule(STEPS, 3, 3) and handle.stats()["mode"] == "residual"
    for done, (r, m, p, li) in zip(computed, outs):
        if done:
            assert torch.equal(m, r)
        else:
            assert rel_err(m, p) > 1e-4 and rel_err(m, li) > 1e-4


@pytest.fixture(scope="module", params=["lite", "residual"])
def compiled_lite(request):
    """decide="device" compiled fullgraph (aot_eager) beside the eager host-decided run: two 20-call videos."""
    torch._dynamo.reset()
    counters.clear()
    model = tiny_cogvideox(layers=1)
    eager = clone(model)
    cfg = fk.TaylorSeerConfig(cache_interval=3, max_order=2, mode=request.param)
    handle = fk.apply(model, cfg, decide="device", record=True)
    eager_handle = fk.apply(eager, cfg, record=True)
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=cnt, fullgraph=True)
    lat, extra = cog_inputs()
    runs = [sample_loop([compiled, eager], lat, extra, calls=STEPS) for _ in range(2)]
    yield dict(cnt=cnt, runs=runs, handle=handle, eager_handle=eager_handle, breaks=dict(counters["graph_break"]))
    handle.remove()
    torch._dynamo.reset()


def test_device_mode_one_graph_and_eager_parity(compiled_lite):
    r = compiled_lite
    assert r["breaks"] == {} and r["cnt"].frame_count == 1  # one graph for both videos
    assert r["handle"].stats()["host_reads"] == 0
    got, want = decisions(r["handle"]), decisions(r["eager_handle"])
    assert [g["pred"] for g in got] == [w["pred"] for w in want] == schedule(STEPS, 3, 3) * 2
    for run in r["runs"]:
        for i, (c, e) in enumerate(run):
            assert rel_err(c, e) <= 1e-5, i
