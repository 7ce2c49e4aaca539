"""First-Block-Cache: schedule and metric parity with the plain docs/algorithms.md rule on the same inputs, exact
compute path,
reuse = input + cached residuals, one host read per call, lifecycle."""

import warnings

import pytest
import torch
from adaptive_reference import close, decisions, fbcache, run_patched
from dit_models import (clone, cog_inputs, latte_inputs, one_thread,  # noqa: F401
                        sample_loop, timesteps, tiny_cogvideox,
                        tiny_latte)

import fastercache_kernels as fk

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

# Thresholds that give both decisions on these random models (their first-block residuals move 5-30% per call).
MODELS = {"cogvideox": (tiny_cogvideox, cog_inputs, "transformer_blocks.0", 0.15),
          "latte": (tiny_latte, latte_inputs, "transformer_blocks.0", 0.06)}


def _first_block_hook(name):
    def hooks(model, rec):
        rec.block(model.get_submodule(name), "b0")
    return hooks


@pytest.fixture(scope="module", params=list(MODELS))
def fb_run(request):
    make, inputs, first, thr = MODELS[request.param]
    model = make()
    ref = clone(model)
    handle, rec, outs = run_patched(model, fk.FirstBlockCacheConfig(threshold=thr), inputs,
                                    hooks=_first_block_hook(first))
    return dict(name=request.param, thr=thr, model=model, ref=ref, handle=handle, rec=rec, outs=outs, inputs=inputs)


def test_schedule_and_metric_match_reference(fb_run):
    got = decisions(fb_run["handle"])
    r1s = [c["b0.out"] - c["b0.in"] for c in fb_run["rec"].calls]
    want = fbcache(r1s, fb_run["thr"])
    assert [g["pred"] for g in got] == [w["compute"] for w in want]
    assert 0 < sum(w["compute"] for w in want) < len(want), "the test needs both decisions"
    for g, w in zip(got[1:], want[1:]):
        assert close(g["metric"], w["diff"]), (g, w)


def test_one_host_read_per_call(fb_run):
    st = fb_run["handle"].stats()
    assert st["host_reads"] == st["calls"] - 1 and st["calls"] == 50 and st["observed_calls"] == 1
    assert st["computed"] == sum(g["pred"] for g in decisions(fb_run["handle"]))


def test_reuse_is_input_plus_cached_residuals():
    """On a reuse call, every block after the first returns its input plus the residual of the last compute call:
    for CogVideoX the whole stack after block 0 adds the stack residual of that call."""
    model = tiny_cogvideox(layers=3)
    rec_hooks = lambda m, rec: (rec.block(m.transformer_blocks[1], "b1"), rec.block(m.transformer_blocks[2], "b2"))  # noqa: E731
    handle, rec, _ = run_patched(model, fk.FirstBlockCacheConfig(threshold=0.15), cog_inputs, hooks=rec_hooks)
    got = decisions(handle)
    last = None
    checked = 0
    for g, c in zip(got, rec.calls):
        if g["pred"]:
            last = c["b2.out"] - c["b1.in"]
        else:
            want = c["b1.in"] + last
            assert torch.allclose(c["b2.out"], want, rtol=1e-5, atol=1e-5)
            checked += 1
    assert checked > 0


def test_threshold_zero_is_exact():
    model = tiny_cogvideox()
    ref = clone(model)
    fk.apply(model, fk.FirstBlockCacheConfig(threshold=0.0))
    lat, extra = cog_inputs()
    outs = sample_loop([ref, model], lat, extra, calls=10)
    assert all(torch.equal(a, b) for a, b in outs)


def test_remove_restores_exactly(fb_run):
    model, ref = fb_run["model"], fb_run["ref"]
    fb_run["handle"].remove()
    assert not fb_run["handle"].active and not hasattr(model, "_fk_handle")
    lat, extra = fb_run["inputs"]()
    outs = sample_loop([ref, model], lat, extra, calls=3)
    assert all(torch.equal(a, b) for a, b in outs)
    fb_run["handle"].remove()  # idempotent


def test_new_video_and_reset():
    model = tiny_latte()
    handle, rec, _ = run_patched(model, fk.FirstBlockCacheConfig(threshold=0.06), latte_inputs, videos=2)
    got = decisions(handle)
    assert [g["c"] for g in got] == list(range(1, 51)) * 2  # the timestep jumped up: call count restarts
    assert [g["pred"] for g in got[:50]] == [g["pred"] for g in got[50:]]
    assert handle.stats()["videos"] == 2
    handle.reset()
    lat, extra = latte_inputs()
    sample_loop([model], lat, extra, calls=50, first=1)
    assert int(handle.adaptive.c) == 1 and bool(handle.adaptive.pred)
    assert handle.stats()["videos"] == 3


def test_num_calls_forces_the_last_call():
    model = tiny_latte()
    handle, _, _ = run_patched(model, fk.FirstBlockCacheConfig(threshold=10.0, num_calls=50), latte_inputs)
    got = decisions(handle)
    assert [g["pred"] for g in got] == [True] + [False] * 48 + [True]


def test_errors():
    with pytest.raises(ValueError, match="threshold"):
        fk.FirstBlockCacheConfig(threshold=-1)
    with pytest.raises(ValueError, match="metric"):
        fk.FirstBlockCacheConfig(metric="l3")
    with pytest.raises(ValueError, match="num_calls"):
        fk.FirstBlockCacheConfig(num_calls=1)
    model = tiny_cogvideox()
    with pytest.raises(ValueError, match="decide"):
        fk.apply(model, fk.FirstBlockCacheConfig(), decide="gpu")
    with pytest.raises(ValueError, match="no transformer block"):
        fk.apply(model, fk.FirstBlockCacheConfig(), adapter=fk.adapters.generic_adapter(blocks=r"^nothing$"))
    h = fk.apply(model, fk.FirstBlockCacheConfig())
    with pytest.raises(RuntimeError, match="already applied"):
        fk.apply(model, fk.FirstBlockCacheConfig())
    h.remove()
    with pytest.raises(TypeError, match="adaptive"):
        fk.apply(model, "cogvideox-2b", decide="device")


def test_new_input_shapes_start_a_new_video():
    model = tiny_cogvideox()
    h = fk.apply(model, fk.FirstBlockCacheConfig(threshold=10.0), record=True)
    lat, extra = cog_inputs()
    sample_loop([model], lat, extra, calls=50, first=3)
    lat2, extra2 = cog_inputs(batch=2)
    with warnings.catch_warnings():  # the timestep jumped up as well: a new video, nothing to warn about
        warnings.simplefilter("error")
        sample_loop([model], lat2, extra2, calls=50, first=2)
    assert [bool(r["pred"]) for r in h.history] == [True, False, False, True, False]
    assert h.stats()["videos"] == 2
    # new shapes while the timestep still falls: warned, and a new video all the same
    x = torch.cat([lat, lat])
    with pytest.warns(UserWarning, match="inputs changed"), torch.no_grad():
        model(hidden_states=x, timestep=timesteps(50)[2].expand(2), return_dict=False, **extra)
    assert bool(h.history[-1]["pred"]) and h.stats()["videos"] == 3
