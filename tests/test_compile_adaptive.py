"""decide="device": torch.compile(patched, fullgraph=True) builds ONE graph (torch.cond per block) that serves every
call of every video: no graph break, no recompile across calls or videos, no host read; decisions and outputs
match the eager host-decided run."""

import pytest
import torch
import torch._dynamo.testing
from adaptive_reference import decisions
from dit_models import clone, cog_inputs, latte_inputs, one_thread, rel_err, sample_loop, tiny_cogvideox, tiny_latte  # noqa: F401
from torch._dynamo.utils import counters

import fastercache_kernels as fk

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {
    "cogvideox-fbcache": (tiny_cogvideox, cog_inputs, lambda: fk.FirstBlockCacheConfig(threshold=0.15)),
    "cogvideox-teacache": (tiny_cogvideox, cog_inputs, lambda: fk.TeaCacheConfig.preset("cogvideox-2b",
                                                                                        threshold=0.3)),
    "cogvideox-adacache": (tiny_cogvideox, cog_inputs, lambda: fk.AdaCacheConfig(
        codebook={0.05: 4, 0.1: 3, 0.2: 2, 1.0: 1}, num_calls=30, moreg_window=(3, 27))),
    # forecasting reuse (docs/algorithms.md section 11): the rings, the clock and the forecast metric in the graph
    "cogvideox-adacache-forecast": (tiny_cogvideox, cog_inputs, lambda: fk.AdaCacheConfig(
        codebook={0.05: 4, 0.1: 3, 0.2: 2, 1.0: 1}, num_calls=30, moreg_window=(3, 27), forecast_order=2,
        forecast_metric=True)),
    # Latte's Attention modules are called through their processors inside torch.cond (blocks.traceable_attention)
    "latte-adacache": (tiny_latte, latte_inputs, lambda: fk.AdaCacheConfig(
        codebook={0.05: 4, 0.1: 3, 0.2: 2, 1.0: 1}, num_calls=30, moreg_window=(3, 27))),
    "latte-teacache": (tiny_latte, latte_inputs, lambda: fk.TeaCacheConfig.preset("opensora", threshold=0.3)),
}


def _compiled_and_eager(make, inputs, config, backend: str, decide: str = "device") -> dict:
    """Two copies of one model: one patched with `decide` and compiled fullgraph with `backend`, one eager with
    the default decide="auto" (host decisions in eager calls); two 30-call videos through both."""
    torch._dynamo.reset()
    counters.clear()
    model = make(layers=1)
    eager = clone(model)
    handle = fk.apply(model, config(), decide=decide, record=True)
    eager_handle = fk.apply(eager, config(), record=True)
    cnt = torch._dynamo.testing.CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=cnt, fullgraph=True)
    lat, extra = inputs()
    first = sample_loop([compiled, eager], lat, extra, calls=30)
    frames_first = cnt.frame_count
    second = sample_loop([compiled, eager], lat, extra, calls=30)
    return dict(cnt=cnt, frames_first=frames_first, first=first, second=second, handle=handle, model=model,
                eager_handle=eager_handle, breaks=dict(counters["graph_break"]))


@pytest.fixture(scope="module", params=list(CASES))
def compiled_run(request):
    run = _compiled_and_eager(*CASES[request.param], backend="aot_eager")
    yield run
    run["handle"].remove()
    torch._dynamo.reset()


def test_one_graph_no_break_no_recompile(compiled_run):
    r = compiled_run
    assert r["breaks"] == {}, r["breaks"]
    assert r["frames_first"] == 1
    assert r["cnt"].frame_count == 1  # the second video reuses the graph
    st = r["handle"].stats()
    assert st["videos"] == 2 and st["calls"] == 60


def test_no_host_read(compiled_run):
    assert compiled_run["handle"].stats()["host_reads"] == 0
    assert compiled_run["eager_handle"].stats()["host_reads"] == 59  # every call but the observed first one


def test_decisions_and_outputs_match_eager(compiled_run):
    got, want = decisions(compiled_run["handle"]), decisions(compiled_run["eager_handle"])
    assert [g["pred"] for g in got] == [w["pred"] for w in want]
    assert 0 < sum(g["pred"] for g in got) < 60
    for video in ("first", "second"):
        for i, (c, e) in enumerate(compiled_run[video]):
            assert rel_err(c, e) <= 1e-5, (video, i + 1)


def test_inductor_adacache_cogvideox():
    """The one inductor run (~6 s here): the same single graph and decisions with the real backend."""
    r = _compiled_and_eager(*CASES["cogvideox-adacache"], backend="inductor")
    handle, eager_handle = r["handle"], r["eager_handle"]
    assert r["cnt"].frame_count == 1 and r["breaks"] == {}
    assert [g["pred"] for g in decisions(handle)] == [g["pred"] for g in decisions(eager_handle)]
    assert 0 < handle.stats()["computed"] < 60 and handle.stats()["host_reads"] == 0
    assert max(rel_err(c, e) for c, e in r["first"] + r["second"]) < 1e-4
    handle.remove()
    torch._dynamo.reset()


def test_adacache_host_decisions_compile_to_two_graphs():
    """AdaCache decides before the call (the pre-hook's one host read, outside the graph): with decide="host" the
    compiled model has one graph for compute calls and one for reuse calls, and no recompile in a second video."""
    torch._dynamo.reset()
    counters.clear()
    model = tiny_cogvideox(layers=1)
    handle = fk.apply(model, fk.AdaCacheConfig(codebook={0.05: 4, 0.1: 3, 0.2: 2, 1.0: 1}, num_calls=30,
                                               moreg_window=(3, 27)), decide="host")
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=cnt, fullgraph=True)
    lat, extra = cog_inputs()
    sample_loop([compiled], lat, extra, calls=30)
    assert cnt.frame_count == 2 and dict(counters["graph_break"]) == {}
    sample_loop([compiled], lat, extra, calls=30)
    st = handle.stats()
    assert cnt.frame_count == 2 and st["videos"] == 2 and st["host_reads"] == 59 and 0 < st["computed"] < 60
    handle.remove()
    torch._dynamo.reset()


@pytest.mark.parametrize("policy", ["fbcache", "teacache"])
def test_host_decisions_in_the_forward_refuse_compile(policy):
    """TeaCache and First-Block-Cache with decide="host" read their decision inside the first block's forward:
    torch.compile is refused, with and without fullgraph, by an error naming decide='device' (without fullgraph
    the graph breaks around the read had given wrong videos on the trained demo CogVideoX); eager still runs."""
    make = CASES[f"cogvideox-{policy}"][2]
    for fullgraph in (True, False):
        torch._dynamo.reset()
        model = tiny_cogvideox(layers=2)
        handle = fk.apply(model, make(), decide="host")
        compiled = torch.compile(model, backend="aot_eager", fullgraph=fullgraph)
        lat, extra = cog_inputs()
        with pytest.raises(Exception, match="decide='device'"):
            sample_loop([compiled], lat, extra, calls=30, first=2)
        with pytest.warns(UserWarning, match="did not finish"):  # the refused call left its video unfinished
            outs = sample_loop([model], lat, extra, calls=30)  # the same patched model, eagerly
        assert len(outs) == 30 and handle.stats()["calls"] >= 30
    torch._dynamo.reset()


def test_auto_decides_on_the_device_when_compiled():
    """decide="auto" (the default): compiled, the model lays out its buffers for device decisions at its observed
    first call and builds one graph with no host read (as decide="device"); its eager twin, patched the same way,
    decides on the host (one read per call, chained residuals); both make the same decisions."""
    r = _compiled_and_eager(*CASES["cogvideox-fbcache"], backend="aot_eager", decide="auto")
    handle, eager_handle = r["handle"], r["eager_handle"]
    assert r["breaks"] == {} and r["cnt"].frame_count == 1
    assert handle.adaptive.device_mode and not eager_handle.adaptive.device_mode
    assert handle.stats()["host_reads"] == 0 and eager_handle.stats()["host_reads"] == 59
    assert [g["pred"] for g in decisions(handle)] == [g["pred"] for g in decisions(eager_handle)]
    assert 0 < handle.stats()["computed"] < 60
    assert max(rel_err(c, e) for c, e in r["first"] + r["second"]) <= 1e-5
    # the same patched model run eagerly afterwards: observed again, host decisions from then on
    lat, extra = cog_inputs()
    sample_loop([r["model"]], lat, extra, calls=30)
    assert not handle.adaptive.device_mode and handle.stats()["host_reads"] > 0
    handle.remove()
    torch._dynamo.reset()


def test_composed_fastercache_and_adacache_compile_fullgraph():
    """FasterCache + AdaCache (host decisions, read in the pre-hook): fullgraph, equal to eager on every call, no
    graph break and no graph added in a second video."""
    torch._dynamo.reset()
    counters.clear()
    config = [fk.FasterCacheConfig.preset("cogvideox-2b"), fk.AdaCacheConfig(num_calls=50,
                                                                           codebook={0.05: 4, 0.1: 3, 1.0: 2})]
    model = tiny_cogvideox(layers=1)
    eager = clone(model)
    handle = fk.apply(model, config)
    fk.apply(eager, config)
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=cnt, fullgraph=True)
    lat, extra = cog_inputs()
    frames = []
    for _ in range(2):
        outs = sample_loop([eager, compiled], lat, extra, calls=50)
        assert all(torch.equal(a, b) for a, b in outs)
        frames.append(cnt.frame_count)
    assert frames[0] == frames[1] and dict(counters["graph_break"]) == {}
    st = handle.stats()
    assert st["reused"] > 0 and st["cfg"]["skip"] > 0
    torch._dynamo.reset()
