"""SeaCache (docs/algorithms.md section 14): the SEA filter against diffusers', parity with diffusers'
SeaCache hook call by call on a tiny CogVideoX (fk without a cache_context, diffusers with one) and on the tiny
WanPipeline (diffusers' built-in Wan adapter), diffusers' config as a drop-in, composition with FasterCache, one
compiled graph with decide="device", and the config's errors."""

import contextlib
import copy
import io

import pytest
import torch
import torch._dynamo.testing
from adaptive_reference import decisions
from dit_models import one_thread  # noqa: F401
from dit_models import clone, cog_inputs, latte_inputs, sample_loop, timesteps, tiny_cogvideox, tiny_latte
from torch._dynamo.utils import counters

import fastercache_kernels as fk
from fastercache_kernels.policies.seacache.hooks import sea_filter

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 20


def _cog_raw_vision(module, args, kwargs):
    return list(kwargs["hidden_states"].transpose(1, 2).unbind(0))  # [B, F, C, H, W] -> [C, F, H, W] per sample


def _their_config(**kw):
    return diffusers.SeaCacheConfig(raw_vision_callback=_cog_raw_vision, **kw)


def _ran_per_call(model, block_part):
    """Per model call: whether `block_part` (a submodule of the first block) ran, i.e. the call computed."""
    ran = []
    model.register_forward_pre_hook(lambda *a: ran.append(False))
    block_part.register_forward_hook(lambda *a: ran.__setitem__(-1, True))
    return ran


def _cog_loop(models, with_context):
    """The batched CFG loop of tests/dit_models.sample_loop; `with_context(model)`: whether that model's calls run
    inside diffusers' cache_context with the step index, sigma = t / 1000 and the step count."""
    lat, extra = cog_inputs()
    x, outs = lat.clone(), []
    for i, t in enumerate(timesteps(STEPS)):
        inp, row = torch.cat([x, x]), []
        for m in models:
            ctx = (m.cache_context("cond_uncond", step_index=i, sigma=float(t) / 1000, num_inference_steps=STEPS)
                   if with_context(m) else contextlib.nullcontext())
            with torch.no_grad(), ctx:
                row.append(m(hidden_states=inp, timestep=t.expand(2), return_dict=False, **extra)[0])
        outs.append(row)
        uncond, cond = row[0].chunk(2)
        x = x - 0.02 * (uncond + 6.0 * (cond - uncond))
    return outs


def _max_rel(outs) -> float:
    return max(float((o - t).abs().max() / t.abs().max()) for t, o in outs)


@pytest.mark.parametrize("shape,sigma", [((2, 3, 4, 6, 5), 0.7), ((1, 5, 3, 8, 4), torch.tensor(0.05)),
                                         ((2, 1, 4, 4, 2), 1.0)])
def test_filter_is_diffusers(shape, sigma):
    """fk's real-FFT filter with separable gains equals diffusers' complex-FFT filter over the full gain grid."""
    from diffusers.hooks.sea_cache import _apply_sea_filter

    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ours = sea_filter(x.movedim(-1, 1), sigma, 3.0).movedim(1, -1)  # fk's channels come first
    for b in range(shape[0]):
        want = _apply_sea_filter(x[b], float(sigma), 3.0)
        assert torch.allclose(ours[b], want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    if float(sigma) > 0.5:  # noisy latents: the filter damps their high frequencies (near-clean ones pass)
        assert not torch.allclose(ours, x, atol=1e-2)


@pytest.mark.parametrize("decide", ["host", "device"])
@pytest.mark.parametrize("given", ["fk", "diffusers"])
def test_cogvideox_parity_with_diffusers_hook(decide, given):
    """Same compute/reuse decision on every call and outputs within 1e-5: fk's own config gets no cache_context
    (sigma = timestep / 1000, the step count from num_calls), diffusers' config runs inside one like its hook."""
    ours = tiny_cogvideox()
    theirs = clone(ours)
    theirs.enable_cache(_their_config(threshold=0.25))
    seen = _ran_per_call(theirs, theirs.transformer_blocks[0].norm1)
    config = fk.SeaCacheConfig(threshold=0.25, num_calls=STEPS) if given == "fk" else _their_config(threshold=0.25)
    handle = fk.apply(ours, config, record=True, decide=decide)
    outs = _cog_loop([theirs, ours], lambda m: m is theirs or given == "diffusers")
    mine = [g["pred"] for g in decisions(handle)]
    assert mine == seen and 0 < STEPS - sum(seen) < STEPS - 4, (mine, seen)
    assert seen[0] and seen[-1]  # the first and last steps are forced
    assert _max_rel(outs) < 1e-5


def test_residual_order_0_and_forecast_differ_on_reused_calls():
    """forecast_order 0 (diffusers' residual_order=0) keeps the decisions and matches diffusers' order-0 hook; the
    default order 1 changes only the reused calls' outputs."""
    ours, lin = tiny_cogvideox(), tiny_cogvideox()
    theirs = clone(ours)
    theirs.enable_cache(_their_config(threshold=0.25, residual_order=0))
    h0 = fk.apply(ours, fk.SeaCacheConfig(threshold=0.25, forecast_order=0, num_calls=STEPS), record=True)
    h1 = fk.apply(lin, fk.SeaCacheConfig(threshold=0.25, num_calls=STEPS), record=True)
    outs = _cog_loop([theirs, ours, lin], lambda m: m is theirs)
    p0, p1 = [g["pred"] for g in decisions(h0)], [g["pred"] for g in decisions(h1)]
    assert p0 == p1 and not all(p0)
    assert _max_rel([(a, b) for a, b, _ in outs]) < 1e-5
    moved = [i for i, (_, b, c) in enumerate(outs) if not torch.equal(b, c)]
    assert moved and all(not p0[i] for i in moved)


def _wan_run(pipe, kw, steps):
    return pipe("a red square", negative_prompt="blurry", num_inference_steps=steps, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(0), output_type="latent", **kw).frames


@pytest.fixture(scope="module")
def wan():
    from fastercache_kernels import tiny

    pipe, kw = tiny.wan_pipeline(0)
    pipe.set_progress_bar_config(disable=True)
    return pipe, kw


@pytest.mark.parametrize("order", [0, 1])
def test_wan_pipeline_parity_with_diffusers_hook(wan, order):
    """The tiny WanPipeline (cond and uncond calls inside cache_context with sigma = scheduler.sigmas[i]):
    diffusers' built-in Wan adapter and fk's own latents-from-the-call give the same decisions per call, and the
    same outputs of every transformer call."""
    pipe, kw = wan
    a, b = copy.deepcopy(pipe), copy.deepcopy(pipe)
    a.transformer.enable_cache(diffusers.SeaCacheConfig(threshold=0.1, residual_order=order))
    seen = _ran_per_call(a.transformer, a.transformer.blocks[0].norm1)
    handle = fk.apply(b.transformer, fk.SeaCacheConfig(threshold=0.1, forecast_order=order), record=True)
    got_a, got_b = [], []
    a.transformer.register_forward_hook(lambda m, i, o: got_a.append(o[0].clone()))
    b.transformer.register_forward_hook(lambda m, i, o: got_b.append(o[0].clone()))
    _wan_run(a, kw, 12), _wan_run(b, kw, 12)
    mine = [g["pred"] for g in decisions(handle)]
    assert mine == seen and 0 < len(seen) - sum(seen), (mine, seen)
    assert _max_rel(list(zip(got_a, got_b))) < 1e-5


def test_latte_runs_and_threshold_zero_is_exact():
    """Latte (spatial and temporal block lists): every call computes at threshold 0 (outputs equal to the uncached
    model's), and some reuse at 0.25. diffusers 0.42.1's generic path takes the leader block of one list and the
    tail of the other there, whose shapes differ, so it records no residual and never reuses."""
    base = tiny_latte()
    zero, some = clone(base), clone(base)
    h0 = fk.apply(zero, fk.SeaCacheConfig(threshold=0.0, num_calls=STEPS))
    h1 = fk.apply(some, fk.SeaCacheConfig(threshold=0.25, num_calls=STEPS))
    lat, extra = latte_inputs()
    outs = sample_loop([base, zero, some], lat, extra, calls=STEPS)
    assert h0.stats()["reused"] == 0 and all(torch.equal(a, b) for a, b, _ in outs)
    assert h1.stats()["reused"] > 0 and all(torch.isfinite(c).all() for *_, c in outs)


def test_composes_with_fastercache():
    """FasterCache's CFG-Cache + SeaCache: the CFG-skip calls happen and SeaCache decides as it does alone on the
    same inputs (its indicator reads the latents, which both models get) until a full call follows a CFG-skip call
    that computed: that one computes to refresh the other half (tests/test_composed_cfg.py)."""
    model = tiny_cogvideox(layers=1)
    twin = clone(model)
    sea = fk.SeaCacheConfig(threshold=0.25, num_calls=50)
    alone = fk.apply(twin, sea, record=True)
    both = fk.apply(model, [fk.FasterCacheConfig.preset("cogvideox-2b"), sea], record=True)
    lat, extra = cog_inputs()
    outs = sample_loop([twin, model], lat, extra, calls=50)
    pa, pb = [g["pred"] for g in decisions(alone)], [g["pred"] for g in decisions(both)]
    full = [both.schedule.plan(c).full for c in range(1, 51)]
    first = next(i for i in range(1, 50) if full[i] and any(pb[j] and not full[j] for j in range(i)))
    assert pa[:first] == pb[:first] and pb[first] and 0 < pa.count(False) and 0 < pb.count(False)
    assert both.stats()["cfg"]["skip"] > 0
    assert all(torch.isfinite(b).all() for _, b in outs)


def test_device_decisions_compile_to_one_graph():
    """decide="device" under torch.compile(fullgraph=True): one graph for every call of two videos (the filter runs
    in the pre-hook, outside it), the eager host-decided run's decisions, outputs within 1e-5."""
    torch._dynamo.reset()
    counters.clear()
    model = tiny_cogvideox(layers=1)
    eager = clone(model)
    cfg = fk.SeaCacheConfig(threshold=0.25, num_calls=STEPS)
    handle = fk.apply(model, cfg, decide="device", record=True)
    eager_handle = fk.apply(eager, cfg, record=True)
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=cnt, fullgraph=True)
    lat, extra = cog_inputs()
    try:
        first = sample_loop([eager, compiled], lat, extra, calls=STEPS)
        second = sample_loop([eager, compiled], lat, extra, calls=STEPS)
        assert cnt.frame_count == 1 and dict(counters["graph_break"]) == {}
        assert handle.stats()["host_reads"] == 0
        mine = [g["pred"] for g in decisions(handle)]
        assert mine == [g["pred"] for g in decisions(eager_handle)] and not all(mine)
        assert _max_rel(first + second) < 1e-5
    finally:
        handle.remove()
        torch._dynamo.reset()


def test_diffusers_config_translates():
    from fastercache_kernels.policies.diffusers_compat import translate

    cfg = translate(diffusers.SeaCacheConfig(threshold=0.3, residual_order=0, retention_steps=2, cache_end_steps=3,
                                             max_consecutive_cached=0, power_exp=2.0, raw_vision_callback=len))
    assert isinstance(cfg, fk.SeaCacheConfig)
    assert (cfg.threshold, cfg.forecast_order, cfg.warmup, cfg.cache_end_steps, cfg.max_consecutive_reuse,
            cfg.power_exp, cfg.raw_vision_callback) == (0.3, 0, 2, 3, None, 2.0, len)


def test_errors_name_the_fix():
    for kw, what in (({"threshold": -1}, "threshold"), ({"forecast_order": 3}, "forecast_order"),
                     ({"retention_steps": -1}, "retention_steps"), ({"cache_end_steps": 1.5}, "cache_end_steps"),
                     ({"max_consecutive_cached": True}, "max_consecutive_cached"), ({"power_exp": 0}, "power_exp"),
                     ({"num_calls": 1}, "num_calls")):
        with pytest.raises(ValueError, match=what):
            fk.SeaCacheConfig(**kw)
    with pytest.raises(TypeError, match="raw_vision_callback"):
        fk.SeaCacheConfig(raw_vision_callback=3)
    model = tiny_cogvideox(layers=1)
    fk.apply(model, fk.SeaCacheConfig(raw_vision_callback=lambda m, a, k: []))
    lat, extra = cog_inputs()
    with pytest.raises(ValueError, match="raw_vision_callback"):
        sample_loop([model], lat, extra, calls=3)


def test_summary_shows_the_accumulated_indicator():
    """handle.summary() / decisions(): the strip is the recorded decisions, the indicator the accumulated distance
    each call compared with the threshold."""
    model = tiny_cogvideox(layers=1)
    handle = fk.apply(model, fk.SeaCacheConfig(threshold=0.25, num_calls=STEPS), record=True)
    sample_loop([model], *cog_inputs(), calls=STEPS)
    (k,) = handle.decisions()["keys"].values()
    assert k["strip"].split() == ["C" if g["pred"] else "r" for g in decisions(handle)]
    assert k["indicator"] == pytest.approx([g["acc_seen"] for g in decisions(handle)])
    buf = io.StringIO()
    handle.summary(file=buf)
    assert "SEA-filtered latents, computes when >= 0.25" in buf.getvalue()
