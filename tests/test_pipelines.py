"""Every policy on tiny random versions of diffusers' real WanPipeline and CogVideoXPipeline, end to end, in both
call patterns: batched ([uncond, cond] in one call; CogVideoXPipeline's own loop) and per branch (one call per
branch inside `cache_context("cond" | "uncond")`; WanPipeline's own loop). What must hold: per-branch calls keep
their state per branch, so a per-branch run stays as close to the uncached video as a batched run does (within
1.5x its error); with every cache disabled the output equals the unpatched pipeline's exactly; FasterCache composed
with an adaptive policy runs in both patterns; Wan 2.2's two transformers are both patched."""

from __future__ import annotations

import pytest
import torch
from dit_models import one_thread  # noqa: F401
from pipelines import Loop, rel, run_pipeline, tiny_cogvideox, tiny_wan

import fastercache_kernels as fk

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 30


def policies():
    """name -> (config, the same policy with every cache disabled). The FasterCache preset is Latte's (it computes
    cond on skip steps, which diffusers' pipelines call first)."""
    return {
        "fastercache": (fk.FasterCacheConfig.preset("latte"),
                        fk.FasterCacheConfig.preset("latte", attention_reuse_start=10**6, cfg_skip_start=10**6)),
        "adacache": (fk.AdaCacheConfig(num_calls=STEPS, codebook={0.03: 4, 0.06: 3, 1.0: 2}),
                     fk.AdaCacheConfig(num_calls=STEPS, codebook={1.0: 1})),
        "teacache": (fk.TeaCacheConfig(threshold=0.2, indicator="block_input"),
                     fk.TeaCacheConfig(threshold=0.0, indicator="block_input")),
        "fbcache": (fk.FirstBlockCacheConfig(threshold=0.35), fk.FirstBlockCacheConfig(threshold=0.0)),
    }


MODELS = {"wan": tiny_wan, "cogvideox": tiny_cogvideox}


@pytest.fixture(scope="module", params=list(MODELS))
def setup(request, one_thread):  # noqa: F811
    pipe, kw = MODELS[request.param]()
    loop = Loop(pipe, kw, STEPS, request.param)
    plain = {"batched": loop.run(pipe.transformer, False), "per_branch": loop.run(pipe.transformer, True),
             "pipeline": run_pipeline(pipe, kw, STEPS)}
    return request.param, pipe, kw, loop, plain


def _errors(setup, config):
    """(batched error, per-branch error, stats of the per-branch run) of one config against the uncached runs."""
    name, pipe, kw, loop, plain = setup
    errs, stats = {}, {}
    for mode in ("batched", "per_branch"):
        with fk.apply(pipe.transformer, config) as handle:
            out = loop.run(pipe.transformer, mode == "per_branch")
            stats[mode] = handle.stats()
        errs[mode] = rel(out, plain[mode])
    return errs, stats


@pytest.mark.parametrize("policy", list(policies()))
def test_per_branch_as_close_as_batched(setup, policy):
    config, _ = policies()[policy]
    errs, stats = _errors(setup, config)
    print(f"\n{setup[0]} {policy}: last-step error batched {errs['batched']:.2e}, per-branch {errs['per_branch']:.2e}")
    per = stats["per_branch"]
    assert set(per["keys"]) == {"cond", "uncond"}  # one state per branch
    reused = per.get("reused", per.get("cfg", {}).get("skip", 0))
    assert reused > 0, per  # something was reused
    assert errs["per_branch"] <= 1.5 * errs["batched"] + 1e-6, errs
    assert 0 < errs["batched"] < 0.5


@pytest.mark.parametrize("policy", list(policies()))
def test_disabled_caches_equal_the_unpatched_pipeline(setup, policy):
    name, pipe, kw, loop, plain = setup
    _, off = policies()[policy]
    with fk.apply(pipe, off) as handle:
        out = run_pipeline(pipe, kw, STEPS)
        st = handle.stats()  # the pipeline ends with _reset_stateful_cache: a new video starts next
        assert st["calls"] == (2 if name == "wan" else 1) * STEPS and st["call_in_video"] == 0
        other = loop.run(pipe.transformer, name == "cogvideox")  # the other call pattern, through our loop
    assert torch.equal(out, plain["pipeline"]), policy
    assert torch.equal(other, plain["per_branch" if name == "cogvideox" else "batched"]), policy


@pytest.mark.parametrize("policy", list(policies()))
def test_pipeline_end_to_end_with_every_policy(setup, policy):
    """The pipeline's own loop (Wan: per branch, CogVideoX: batched): some calls reuse, the result stays close."""
    name, pipe, kw, loop, plain = setup
    config, _ = policies()[policy]
    handle = fk.apply(pipe, config)
    calls = []
    hook = pipe.transformer.register_forward_hook(lambda *_: calls.append(dict(handle.stats())))
    try:
        out = run_pipeline(pipe, kw, STEPS)
    finally:
        hook.remove()
        handle.remove()
    last = calls[-1]
    assert last["keys"] == ({"cond": STEPS, "uncond": STEPS} if name == "wan" else {"cond_uncond": STEPS})
    assert rel(out, plain["pipeline"]) < 0.5
    assert torch.equal(run_pipeline(pipe, kw, STEPS), plain["pipeline"])  # removed: bit-identical again


def test_cfg_cache_rebuilds_the_skipped_branch_without_running_the_model(setup):
    """Per branch, on a skip step the uncond call returns cond + a*R_low + b*R_high and runs no block."""
    name, pipe, kw, loop, plain = setup
    ran = []
    blocks = pipe.transformer.blocks if name == "wan" else pipe.transformer.transformer_blocks
    hook = blocks[0].register_forward_pre_hook(lambda *_: ran.append(1))
    try:
        with fk.apply(pipe.transformer, "latte") as handle:
            loop.run(pipe.transformer, True)
            kinds = handle.stats()["calls_per_kind"]
    finally:
        hook.remove()
    skips = kinds["skip/reconstruct [uncond]"]
    assert skips > 0 and len(ran) == 2 * STEPS - skips  # no extra run: the first call itself is observed


def test_cfg_cache_computes_the_branch_the_loop_calls_first(setup):
    """Per branch, the computed branch is observed (the first one called in a step), not configured: the config's
    `computed_branch` does not change a per-branch run, and no call order raises."""
    name, pipe, kw, loop, plain = setup
    outs = []
    for branch in ("cond", "uncond"):
        with fk.apply(pipe.transformer, fk.FasterCacheConfig.preset("latte", computed_branch=branch)) as handle:
            outs.append(loop.run(pipe.transformer, True))
            kinds = handle.stats()["calls_per_kind"]
        assert kinds.get("skip/reconstruct [uncond]", 0) > 0, kinds  # the loop calls cond first: uncond is rebuilt
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("adaptive", ["adacache", "fbcache"])
def test_composition_runs_both_and_keeps_caches_consistent(setup, adaptive):
    """FasterCache's attention reuse and CFG-Cache with an adaptive block schedule: the savings multiply, and a
    block the adaptive schedule reuses never touches its attention cache (the attention cache counts only calls
    where the attention module ran)."""
    name, pipe, kw, loop, plain = setup
    fc = fk.FasterCacheConfig.preset("latte")
    ad = policies()[adaptive][0]
    blocks = pipe.transformer.blocks if name == "wan" else pipe.transformer.transformer_blocks
    runs = []
    hooks = [b.attn1.register_forward_pre_hook(lambda *_: runs.append(1)) for b in blocks]
    try:
        for mode in (False, True):
            runs.clear()
            with fk.apply(pipe.transformer, [fc, ad]) as handle:
                out = loop.run(pipe.transformer, mode)
                st = handle.stats()
            err = rel(out, plain["per_branch" if mode else "batched"])
            att = st["attention"]["spatial"]
            assert st["policies"] == ["fastercache", ad.__class__.__name__.replace("Config", "").lower()
                                      .replace("firstblockcache", "fbcache")]
            # the modules' calls (computed or served from their cache) are exactly the counted ones: calls where the
            # adaptive schedule reused a block never reached it and left its cache
            assert att["computed"] + att["reused"] == len(runs) < 2 * STEPS * len(blocks)
            assert st["reused"] > 0 and st["cfg"]["skip"] > 0
            assert err < 0.5, (mode, err)
    finally:
        for h in hooks:
            h.remove()


def test_two_engines_refused_unless_composed(setup):
    name, pipe, kw, loop, plain = setup
    with fk.apply(pipe.transformer, "latte"):
        with pytest.raises(RuntimeError, match=r"apply the policies together: fk.apply\(model, \["):
            fk.apply(pipe.transformer, fk.FirstBlockCacheConfig())
    with pytest.raises(ValueError, match="decide='host'"):
        fk.apply(pipe.transformer, ["latte", fk.FirstBlockCacheConfig()], decide="device")
    with pytest.raises(ValueError, match="at most one FasterCache config and one adaptive"):
        fk.apply(pipe.transformer, [fk.TeaCacheConfig(), fk.FirstBlockCacheConfig()])


def test_wan22_patches_both_transformers(one_thread):  # noqa: F811
    pipe, kw = tiny_wan(two=True)
    plain = run_pipeline(pipe, kw, STEPS)
    handle = fk.apply(pipe, fk.FirstBlockCacheConfig(threshold=0.15))
    seen = {}
    hooks = [getattr(pipe, n).register_forward_hook(lambda *_, n=n: seen.__setitem__(n, handle.handles[n].stats()))
             for n in ("transformer", "transformer_2")]
    out = run_pipeline(pipe, kw, STEPS)
    for h in hooks:
        h.remove()
    assert handle.stats()["patched"] == ["transformer", "transformer_2"]
    for name in ("transformer", "transformer_2"):
        st = seen[name]
        assert st["reused"] > 0 and sum(st["keys"].values()) > 0, (name, st)
    assert sum(st["keys"]["cond"] for st in seen.values()) == STEPS  # the boundary splits the steps between them
    handle.remove()
    assert not handle.active and torch.equal(run_pipeline(pipe, kw, STEPS), plain)
    assert rel(out, plain) < 0.5


@pytest.mark.parametrize("policy", ["fastercache", "adacache-device"])
def test_per_branch_calls_compile_fullgraph(one_thread, policy):  # noqa: F811
    """Per-branch calls under torch.compile(fullgraph=True) on Wan: no graph break, every call equal to eager, and
    no graph added in a second video (FasterCache: one graph per call kind and branch; AdaCache deciding on the
    device: one graph in all)."""
    import copy

    import torch._dynamo.testing
    from torch._dynamo.utils import counters

    pipe, kw = tiny_wan()
    loop = Loop(pipe, kw, STEPS, "wan")
    config, extra = ("latte", {}) if policy == "fastercache" else (policies()["adacache"][0], {"decide": "device"})
    torch._dynamo.reset()
    counters.clear()
    model, eager = copy.deepcopy(pipe.transformer), copy.deepcopy(pipe.transformer)
    handle = fk.apply(model, config, **extra)
    fk.apply(eager, config, **extra)
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=cnt, fullgraph=True)
    frames = []
    for _ in range(2):
        assert torch.equal(loop.run(compiled, True), loop.run(eager, True))
        frames.append(cnt.frame_count)
    assert frames[0] == frames[1] == (5 if policy == "fastercache" else 1), frames
    assert dict(counters["graph_break"]) == {}
    if policy != "fastercache":
        assert handle.stats()["host_reads"] == 0
    torch._dynamo.reset()


def test_cache_bytes_count_every_branch_and_remove_drops_them(setup):
    """Per branch, each branch keeps its own buffers: stats()["cache_bytes"] is their sum (before: the active
    branch's alone), and remove() drops every branch's."""
    name, pipe, kw, loop, plain = setup
    handle = fk.apply(pipe.transformer, fk.FirstBlockCacheConfig(threshold=0.35))
    loop.run(pipe.transformer, True)
    st = handle.stats()
    per_key = st["cache_bytes_per_key"]
    assert set(per_key) == {"cond", "uncond"} and all(v > 0 for v in per_key.values())
    assert st["cache_bytes"] == sum(per_key.values())
    engine = handle.engine
    handle.remove()
    assert not engine._states and not any(p.buffers() for p in engine.policies)
