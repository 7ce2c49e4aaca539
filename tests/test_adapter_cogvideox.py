"""fk.apply on diffusers' CogVideoXTransformer3DModel (tiny random config of the real class, fp32, 50-call CFG loop,
batch [uncond, cond], decreasing timesteps): the presets against the plain reference of docs/algorithms.md §1-2,
diffusers'
FasterCacheConfig against diffusers' own hook, and the handle's lifecycle."""

import warnings

import pytest
import torch
from dit_models import (  # noqa: F401
    COG_FRAMES,
    COG_H,
    COG_W,
    assert_parity,
    clone,
    cog_inputs,
    one_thread,
    rel_err,
    sample_loop,
    tiny_cogvideox,
)
from fastercache_reference import ReferenceFasterCache

import fastercache_kernels as fk

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_cogvideox()


def _diffusers_config(clock, **kw):
    return diffusers.FasterCacheConfig(current_timestep_callback=lambda: clock["t"], tensor_format="BFCHW", **kw)


@pytest.mark.parametrize("preset", ["cogvideox-2b", "opensora-1.2"])
def test_preset_matches_reference_schedule(model, preset):
    # opensora-1.2 on this class exercises full-call reuse and the broadcast rule on a two-output attention.
    ours, ref_model = clone(model), clone(model)
    handle = fk.apply(ours, preset)
    ref = ReferenceFasterCache(ref_model, preset, handle.modules)
    outs = sample_loop([ref, ours], *cog_inputs())
    assert_parity(outs, 1e-5, preset)
    kinds = handle.stats()["calls_per_kind"]
    assert kinds.get("skip/reuse", 0) > 0 and kinds.get("skip/compute", 0) > 0  # the loop reached both kinds


def test_reference_comparison_can_fail(model):
    """The oracle tells schedules apart: our cogvideox-2b differs from the reference's opensora-1.2."""
    ours, ref_model = clone(model), clone(model)
    handle = fk.apply(ours, "cogvideox-2b")
    ref = ReferenceFasterCache(ref_model, "opensora-1.2", handle.modules)
    outs = sample_loop([ref, ours], *cog_inputs())
    assert max(rel_err(b, a) for a, b in outs) > 1e-3


@pytest.mark.parametrize("kw", [{}, dict(spatial_attention_block_skip_range=3, attention_weight_callback=lambda m: 0.3,
                                         low_frequency_weight_update_timestep_range=(99, 641),
                                         unconditional_batch_skip_range=4)], ids=["defaults", "custom"])
def test_diffusers_config_matches_diffusers_hook(model, kw):
    clock = {"t": None}
    theirs, ours = clone(model), clone(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.enable_cache(_diffusers_config(clock, **kw))
    handle = fk.apply(ours, _diffusers_config(clock, **kw))
    outs = sample_loop([theirs, ours], *cog_inputs(), on_call=lambda i, t: clock.__setitem__("t", t))
    assert_parity(outs, 1e-4, f"diffusers config {kw}")
    assert handle.stats()["cfg"]["skip"] > 0 and handle.stats()["attention"]["spatial"]["reused"] > 0


def test_diffusers_config_guidance_distilled_and_positional(model):
    """is_guidance_distilled: no CFG split, attention reused on whole batches; our inputs come positionally."""
    clock = {"t": None}
    kw = dict(is_guidance_distilled=True, spatial_attention_timestep_skip_range=(-1, 900))
    theirs, ours = clone(model), clone(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.enable_cache(_diffusers_config(clock, **kw))
    handle = fk.apply(ours, _diffusers_config(clock, **kw))
    on_call = lambda i, t: clock.__setitem__("t", t)  # noqa: E731
    lat, extra = cog_inputs()
    outs = sample_loop([theirs], lat, extra, on_call=on_call)
    pos = sample_loop([ours], lat, extra, on_call=on_call, positional=True)
    assert_parity([[a[0], b[0]] for a, b in zip(outs, pos)], 1e-4, "distilled")
    st = handle.stats()
    assert st["cfg"]["skip"] == 0 and st["attention"]["spatial"]["reused"] > 0 and st["cfg_residual_bytes"] == 0


def test_diffusers_config_without_timestep_callback(model):
    """No callback needed: the timestep comes from the call's own `timestep` argument."""
    clock = {"t": None}
    theirs, ours = clone(model), clone(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.enable_cache(_diffusers_config(clock))
    fk.apply(ours, diffusers.FasterCacheConfig(tensor_format="BFCHW"))
    outs = sample_loop([theirs, ours], *cog_inputs(), on_call=lambda i, t: clock.__setitem__("t", t))
    assert_parity(outs, 1e-4)


def test_remove_restores_bit_identical_outputs(model):
    plain, patched = clone(model), clone(model)
    handle = fk.apply(patched, "cogvideox-2b")
    sample_loop([patched], *cog_inputs(), first=30)  # leave it mid-video, with full caches
    handle.remove()
    assert "forward" not in patched.__dict__ and not hasattr(patched, "_fk_handle")
    assert all("forward" not in m.__dict__ for m in patched.modules())
    for a, b in sample_loop([plain, patched], *cog_inputs(seed=1), calls=3):
        assert torch.equal(a, b)
    handle.remove()  # idempotent
    fk.apply(patched, "cogvideox-2b").remove()  # and applicable again


def test_positional_inputs_and_return_dict(model):
    kw_model, pos_model, dict_model = clone(model), clone(model), clone(model)
    for m in (kw_model, pos_model, dict_model):
        fk.apply(m, "cogvideox-2b")
    lat, extra = cog_inputs()
    kw_outs = sample_loop([kw_model], lat, extra, first=25)
    pos_outs = sample_loop([pos_model], lat, extra, first=25, positional=True)
    dict_outs = sample_loop([dict_model], lat, extra, first=25, return_dict=True)
    for a, b, c in zip(kw_outs, pos_outs, dict_outs):
        assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])
    assert pos_model._fk_handle.stats()["calls_per_kind"].get("skip/reuse", 0) > 0


def test_stats_and_cache_bytes(model):
    m = clone(model)
    handle = fk.apply(m, "cogvideox-2b")
    sample_loop([m], *cog_inputs(), calls=50)
    st = handle.stats()
    table = handle.schedule.table(50)
    expected = {}
    for p in table:
        expected[p.kind] = expected.get(p.kind, 0) + 1
    assert st["calls_per_kind"] == expected and st["calls"] == 50
    assert st["cfg"] == {"full": sum(p.full for p in table), "skip": sum(not p.full for p in table)}
    reuses = sum(p.reuse["spatial"] for p in table)
    assert st["attention"]["spatial"] == {"modules": 2, "computed": 2 * (50 - reuses), "reused": 2 * reuses,
                                          "cache_bytes": st["attention"]["spatial"]["cache_bytes"]}
    # Only the computed branch is cached: per module 2 slots x (video tokens + text tokens) x dim, batch 1.
    tokens = COG_FRAMES * (COG_H // 2) * (COG_W // 2) + 4
    per_module = 2 * tokens * 16 * 4
    residual = 2 * COG_FRAMES * 4 * COG_H * COG_W * 4  # low and high parts of one branch's output, fp32
    assert st["attention"]["spatial"]["cache_bytes"] == 2 * per_module
    assert st["cfg_residual_bytes"] == residual and st["cache_bytes"] == 2 * per_module + residual

    half = clone(model)
    h2 = fk.apply(half, fk.FasterCacheConfig.preset("cogvideox-2b", storage_dtype=torch.bfloat16))
    outs = sample_loop([m, half], *cog_inputs(), first=30)
    assert h2.stats()["cache_bytes"] * 2 == st["cache_bytes"]  # bf16 storage for an fp32 model halves it
    assert max(rel_err(b, a) for a, b in outs) < 2e-2  # and stays close


def test_buffers_allocated_once_and_reused_in_place(model):
    m = clone(model)
    handle = fk.apply(m, "cogvideox-2b")
    lat, extra = cog_inputs()
    sample_loop([m], lat, extra, first=30)
    state = handle.fastercache
    ptrs = sorted(t.data_ptr() for c in state.caches for s in c.comp for t in s) + [state.cfg.low.data_ptr()]
    sample_loop([m], lat, extra, calls=50)  # a second video with the same shapes
    assert sorted(t.data_ptr() for c in state.caches for s in c.comp for t in s) + [state.cfg.low.data_ptr()] == ptrs
    assert handle.stats()["videos"] == 2


def test_new_video_by_timestep_jump_and_reset(model):
    m = clone(model)
    handle = fk.apply(m, "cogvideox-2b")
    lat, extra = cog_inputs()
    first = sample_loop([m], lat, extra, calls=50)
    second = sample_loop([m], lat, extra, calls=50)  # timestep jumps from 0 back to 999: a new video
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))
    sample_loop([m], lat, extra, first=20)
    handle.reset()  # explicit: the next call is call 1 even with a timestep that did not jump up
    assert handle.stats()["call_in_video"] == 0
    third = sample_loop([m], lat, extra, calls=50)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, third))


def test_batch_or_resolution_change_mid_video_resets_with_warning(model):
    m = clone(model)
    handle = fk.apply(m, "cogvideox-2b")
    lat, extra = cog_inputs()
    sample_loop([m], lat, extra, first=20)  # last timestep ~611
    lat2, extra2 = cog_inputs(batch=2)
    x = torch.cat([lat2, lat2])
    with pytest.warns(UserWarning, match="changed mid-video"):
        y = m(hidden_states=x, timestep=torch.full((4,), 300), return_dict=False, **extra2)[0]
    assert y.shape == x.shape and handle.stats()["call_in_video"] == 1
    small = torch.randn(2, COG_FRAMES, 4, COG_H - 2, COG_W)
    with pytest.warns(UserWarning, match="changed mid-video"):
        m(hidden_states=small, timestep=torch.full((2,), 250), return_dict=False, **extra)


def test_apply_twice_and_on_a_diffusers_cached_model_raise(model):
    m = clone(model)
    handle = fk.apply(m, "cogvideox-2b")
    with pytest.raises(RuntimeError, match="already applied"):
        fk.apply(m, "latte")
    handle.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.enable_cache(diffusers.FasterCacheConfig(current_timestep_callback=lambda: 500, tensor_format="BFCHW"))
    with pytest.raises(RuntimeError, match="disable_cache"):
        fk.apply(m, "cogvideox-2b")


def test_diffusers_pipeline_reset_hook_starts_a_new_video(model):
    m = clone(model)
    handle = fk.apply(m, "cogvideox-2b")
    sample_loop([m], *cog_inputs(), first=10)
    m._reset_stateful_cache()  # what diffusers pipelines call when a video is done
    assert handle.stats()["call_in_video"] == 0
    handle.remove()
    assert "_reset_stateful_cache" not in m.__dict__
