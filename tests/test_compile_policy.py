"""Reuse graphs: torch.compile(model, fullgraph=True) on a patched model over 50-call CFG loops builds no more than
one graph per call kind (at most 4), breaks no graph, and recompiles nothing during a second video. The bookkeeping
runs in the model's hooks, outside the graphs; the graphs read only flags and tensors."""

import warnings

import pytest
import torch
import torch._dynamo.testing
from dit_models import clone, cog_inputs, latte_inputs, one_thread, rel_err, sample_loop, tiny_cogvideox, tiny_latte  # noqa: F401
from torch._dynamo.utils import counters

import fastercache_kernels as fk

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")


def _diffusers_cfg(fmt):
    return diffusers.FasterCacheConfig(tensor_format=fmt)


CASES = {
    "cogvideox-preset": (tiny_cogvideox, cog_inputs, lambda: "cogvideox-2b"),
    "latte-preset": (tiny_latte, latte_inputs, lambda: "latte"),  # all four kinds, full-call reuse included
    "cogvideox-diffusers-config": (tiny_cogvideox, cog_inputs, lambda: _diffusers_cfg("BFCHW")),
    "latte-diffusers-config": (tiny_latte, latte_inputs, lambda: _diffusers_cfg("BCFHW")),
}


@pytest.fixture(scope="module", params=list(CASES))
def compiled_run(request):
    """Two 50-call videos through torch.compile(patched, fullgraph=True, backend=aot_eager), next to an eager
    patched copy; shared by the tests below (one compile per case)."""
    make, inputs, config = CASES[request.param]
    torch._dynamo.reset()
    counters.clear()
    model = make()
    eager = clone(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = fk.apply(model, config())
        fk.apply(eager, config())
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=cnt, fullgraph=True)
    lat, extra = inputs()
    first = sample_loop([compiled, eager], lat, extra)
    frames_after_first = cnt.frame_count
    kinds_first = dict(handle.stats()["calls_per_kind"])
    second = sample_loop([compiled, eager], lat, extra)
    result = dict(name=request.param, cnt=cnt, frames_first=frames_after_first, kinds=kinds_first, first=first,
                  second=second, handle=handle, breaks=dict(counters["graph_break"]),
                  unique=counters["stats"]["unique_graphs"])
    yield result
    handle.remove()
    torch._dynamo.reset()


def test_one_graph_per_call_kind_no_break(compiled_run):
    r = compiled_run
    assert r["breaks"] == {}, r["breaks"]
    assert r["frames_first"] == len(r["kinds"]) <= 4, (r["frames_first"], r["kinds"])
    assert r["unique"] == r["frames_first"]


def test_no_recompile_in_a_second_video(compiled_run):
    r = compiled_run
    assert r["cnt"].frame_count == r["frames_first"]
    assert r["handle"].stats()["videos"] == 2


def test_compiled_outputs_match_eager(compiled_run):
    for video in ("first", "second"):
        for i, (c, e) in enumerate(compiled_run[video]):
            assert rel_err(c, e) <= 1e-6, (video, i + 1)


def test_inductor_cogvideox():
    """The one inductor test: same guarantees with the real backend (one graph per kind, no recompile)."""
    torch._dynamo.reset()
    counters.clear()
    model = tiny_cogvideox(layers=1)
    eager = clone(model)
    handle = fk.apply(model, "cogvideox-2b")
    fk.apply(eager, "cogvideox-2b")
    cnt = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=cnt, fullgraph=True)
    lat, extra = cog_inputs()
    outs = sample_loop([compiled, eager], lat, extra)
    kinds = handle.stats()["calls_per_kind"]
    assert cnt.frame_count == len(kinds) == 3 and dict(counters["graph_break"]) == {}
    sample_loop([compiled], lat, extra, first=25)  # the second video starts: every kind again, no recompile
    assert cnt.frame_count == 3
    assert max(rel_err(c, e) for c, e in outs) < 1e-4
    handle.remove()
    torch._dynamo.reset()
