"""fk.apply on diffusers' LatteTransformer3DModel (tiny random config of the real class: spatial and temporal
self-attention, cross-attention left alone, learned-sigma output): presets against the docs/algorithms.md reference,
diffusers'
FasterCacheConfig against diffusers' own hook, and what is cached."""

import warnings

import pytest
import torch
from dit_models import (  # noqa: F401
    LATTE_FRAMES,
    LATTE_HW,
    assert_parity,
    clone,
    latte_inputs,
    one_thread,
    rel_err,
    sample_loop,
    tiny_latte,
)
from fastercache_reference import ReferenceFasterCache

import fastercache_kernels as fk

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

DIM = 16  # 2 heads x 8
TOKENS = (LATTE_HW // 2) ** 2


@pytest.fixture(scope="module")
def model():
    return tiny_latte()


def test_adapter_finds_spatial_and_temporal_self_attention(model):
    handle = fk.apply(clone(model), "latte")
    assert handle.modules == [("transformer_blocks.0.attn1", "spatial"), ("transformer_blocks.1.attn1", "spatial"),
                              ("temporal_transformer_blocks.0.attn1", "temporal"),
                              ("temporal_transformer_blocks.1.attn1", "temporal")]


@pytest.mark.parametrize("preset", ["latte", "opensora-1.2", "opensora-plan-1.1"])
def test_preset_matches_reference_schedule(model, preset):
    # latte: full-call reuse at c = 16 (both branches cached); opensora-1.2: broadcast of a one-branch cache to
    # both halves at c = 20, 30; opensora-plan-1.1: temporal and spatial caches filled on different calls.
    ours, ref_model = clone(model), clone(model)
    handle = fk.apply(ours, preset)
    ref = ReferenceFasterCache(ref_model, preset, handle.modules)
    outs = sample_loop([ref, ours], *latte_inputs())
    assert_parity(outs, 1e-5, preset)
    kinds = handle.stats()["calls_per_kind"]
    assert kinds.get("skip/reuse", 0) > 0
    if preset != "opensora-plan-1.1":
        assert kinds.get("full/reuse", 0) > 0


def test_reference_comparison_can_fail(model):
    ours, ref_model = clone(model), clone(model)
    handle = fk.apply(ours, fk.FasterCacheConfig.preset("latte", attention_weight=0.4))
    ref = ReferenceFasterCache(ref_model, "latte", handle.modules)
    outs = sample_loop([ref, ours], *latte_inputs())
    assert max(rel_err(b, a) for a, b in outs) > 1e-5


TEMPORAL = dict(temporal_attention_block_skip_range=2, attention_weight_callback=lambda m: 0.3, alpha_low_frequency=1.2,
                high_frequency_weight_update_timestep_range=(-1, 500))


@pytest.mark.parametrize("kw", [{}, TEMPORAL], ids=["defaults", "temporal"])
def test_diffusers_config_matches_diffusers_hook(model, kw):
    clock = {"t": None}

    def config():
        return diffusers.FasterCacheConfig(current_timestep_callback=lambda: clock["t"], tensor_format="BCFHW", **kw)

    theirs, ours = clone(model), clone(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.enable_cache(config())
    handle = fk.apply(ours, config())
    outs = sample_loop([theirs, ours], *latte_inputs(), on_call=lambda i, t: clock.__setitem__("t", t))
    assert_parity(outs, 1e-4, f"diffusers config {kw}")
    kinds = {k for _, k in handle.modules}
    assert kinds == ({"spatial", "temporal"} if kw else {"spatial"})  # temporal needs a skip range in diffusers
    assert all(handle.stats()["attention"][k]["reused"] > 0 for k in kinds)


def _bytes(t_rows, tokens, dtype_size=4):
    return 2 * t_rows * tokens * DIM * dtype_size  # two slots


def test_only_the_computed_branch_is_cached(model):
    spatial = _bytes(LATTE_FRAMES, TOKENS)  # batch B*F = 1 * frames per branch
    temporal = _bytes(TOKENS, LATTE_FRAMES)  # batch B*H*W/p^2
    residual = 2 * 8 * LATTE_FRAMES * LATTE_HW * LATTE_HW * 4
    one_branch = fk.FasterCacheConfig.preset("opensora-plan-1.1", skip_call_rows="computed")
    m = clone(model)
    handle = fk.apply(m, one_branch)  # never reuses on full calls and reads the computed rows: one branch only
    sample_loop([m], *latte_inputs(), first=3)
    st = handle.stats()
    assert st["attention"]["spatial"]["cache_bytes"] == 2 * spatial
    assert st["attention"]["temporal"]["cache_bytes"] == 2 * temporal
    assert st["cache_bytes"] == 2 * (spatial + temporal) + residual
    # the latte reference reuses attention on a full call (c = 16), and both references read a full call's uncond
    # rows on skip calls (`cache[:1]`): the other branch is cached too
    for preset in ("latte", "opensora-plan-1.1"):
        m2 = clone(model)
        h2 = fk.apply(m2, preset)
        sample_loop([m2], *latte_inputs(), first=3)
        assert h2.stats()["cache_bytes"] == 4 * (spatial + temporal) + residual, preset
    m3 = clone(model)
    h3 = fk.apply(m3, one_branch.replace(storage_dtype=torch.bfloat16))
    sample_loop([m3], *latte_inputs(), first=3)
    assert 2 * h3.stats()["cache_bytes"] == st["cache_bytes"]


def test_enable_temporal_attentions_false(model):
    """Modules a call never runs get no buffers and are left alone."""
    m, plain = clone(model), clone(model)
    handle = fk.apply(m, "latte")
    lat, extra = latte_inputs()
    x = torch.cat([lat, lat])
    for i, t in enumerate(torch.linspace(999, 0, 50).round().long()):
        with torch.no_grad():
            y = m(hidden_states=x, timestep=t.expand(2), enable_temporal_attentions=False, return_dict=False,
                  **extra)[0]
            if i == 0:
                ref = plain(hidden_states=x, timestep=t.expand(2), enable_temporal_attentions=False,
                            return_dict=False, **extra)[0]
                assert torch.equal(y, ref)
    st = handle.stats()["attention"]
    assert st["temporal"]["cache_bytes"] == 0 and st["spatial"]["reused"] > 0
