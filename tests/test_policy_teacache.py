"""TeaCache: schedule and metric parity with the plain docs/algorithms.md rule on the same indicator, the indicators
(timestep
embedding, modulated input, block input), presets, one host read per call, reuse through the cached residuals."""

import pytest
import torch
from adaptive_reference import assert_reuse_adds_last_residual, close, decisions, run_patched, teacache
from dit_models import clone, cog_inputs, latte_inputs, one_thread, sample_loop, tiny_cogvideox, tiny_latte  # noqa: F401

import fastercache_kernels as fk
from fastercache_kernels.policies.teacache.config import COGVIDEOX_2B_COEFFICIENTS, OPENSORA_COEFFICIENTS

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")


def _latte_modulated(rec_call):
    """docs/algorithms.md §5 for Latte (ada_norm_single), from block 0's recorded inputs: norm1(x) * (1 + scale_msa) +
    shift_msa."""
    blk, x = rec_call["blk"], rec_call["b0.in"]
    args = rec_call["b0.args"]
    t = args[4] if len(args) > 4 else rec_call["b0.kwargs"]["timestep"]
    chunks = (blk.scale_shift_table[None] + t.reshape(x.shape[0], 6, -1)).chunk(6, dim=1)
    return blk.norm1(x) * (1 + chunks[1]) + chunks[0]


CASES = {
    # name: model, inputs, config, indicator from the recorded call
    "cogvideox-temb": (tiny_cogvideox, cog_inputs, fk.TeaCacheConfig.preset("cogvideox-2b", threshold=0.3),
                       lambda c: c["b0.kwargs"]["temb"]),
    "latte-modulated": (tiny_latte, latte_inputs, fk.TeaCacheConfig.preset("opensora", threshold=0.3),
                        _latte_modulated),
    "latte-block-input": (tiny_latte, latte_inputs,
                          fk.TeaCacheConfig(coefficients=OPENSORA_COEFFICIENTS, indicator="block_input",
                                            threshold=0.3, num_calls=50),
                          lambda c: c["b0.in"]),
}


@pytest.fixture(scope="module", params=list(CASES))
def tea_run(request):
    make, inputs, config, indicator = CASES[request.param]
    model = make()
    blk = model.transformer_blocks[0]

    def hooks(m, rec):
        rec.block(blk, "b0")

    handle, rec, outs = run_patched(model, config, inputs, hooks=hooks)
    with torch.no_grad():
        us = [indicator({**c, "blk": blk}) for c in rec.calls]
    return dict(name=request.param, handle=handle, config=config, us=us, model=model)


def test_schedule_and_metric_match_reference(tea_run):
    cfg = tea_run["config"]
    want = teacache(tea_run["us"], cfg.coefficients, cfg.threshold, cfg.num_calls)
    got = decisions(tea_run["handle"])
    assert [g["pred"] for g in got] == [w["compute"] for w in want]
    assert 0 < sum(w["compute"] for w in want) < len(want), "the test needs both decisions"
    for g, w in zip(got[1:], want[1:]):
        assert close(g["metric"], w["rel"]), (g, w)
        if w["acc"] is not None:
            assert close(g["acc_seen"], w["acc"]), (g, w)
    st = tea_run["handle"].stats()
    assert st["host_reads"] == st["calls"] - 1 and st["calls"] == 50 and st["observed_calls"] == 1


def test_modulated_input_is_the_attention_input():
    """The Latte adapter forms the indicator without running the block; it equals what attn1 receives."""
    model = tiny_latte()
    from torch._subclasses.fake_tensor import FakeTensor

    seen = []  # the real calls (the first call also probes shapes on fake tensors)
    model.transformer_blocks[0].attn1.register_forward_pre_hook(
        lambda m, a: None if isinstance(a[0], FakeTensor) else seen.append(a[0].clone()))
    handle, rec, _ = run_patched(model, fk.TeaCacheConfig.preset("opensora", threshold=0.0), latte_inputs, calls=3,
                                 hooks=lambda m, r: r.block(m.transformer_blocks[0], "b0"))
    adapter = handle.adapter
    assert len(seen) == 3
    for c, s in zip(rec.calls, seen):
        with torch.no_grad():
            u = adapter.modulated_input(model.transformer_blocks[0], lambda n: {"hidden_states": c["b0.in"],
                                                                                 "timestep": c["b0.args"][4]}[n])
        assert torch.equal(u, s)


def test_reuse_adds_the_stack_residual():
    model = tiny_cogvideox(layers=2)

    def hooks(m, rec):
        rec.block(m.transformer_blocks[0], "b0")
        rec.block(m.transformer_blocks[1], "b1")

    handle, rec, _ = run_patched(model, fk.TeaCacheConfig.preset("cogvideox-2b", threshold=0.3), cog_inputs,
                                 hooks=hooks)
    assert_reuse_adds_last_residual(handle, rec)


def test_threshold_zero_is_exact_and_remove_restores():
    model = tiny_latte()
    ref = clone(model)
    h = fk.apply(model, fk.TeaCacheConfig.preset("opensora", threshold=0.0))
    lat, extra = latte_inputs()
    assert all(torch.equal(a, b) for a, b in sample_loop([ref, model], lat, extra, calls=6))
    h.remove()
    assert all(torch.equal(a, b) for a, b in sample_loop([ref, model], lat, extra, calls=3))


def test_presets_and_errors():
    assert fk.TeaCacheConfig.preset("cogvideox-2b").coefficients == COGVIDEOX_2B_COEFFICIENTS
    assert fk.TeaCacheConfig.preset("opensora").indicator == "modulated_input"
    with pytest.raises(ValueError, match="unknown TeaCache preset"):
        fk.TeaCacheConfig.preset("sora")
    with pytest.raises(ValueError, match="indicator"):
        fk.TeaCacheConfig(indicator="noise")
    with pytest.raises(ValueError, match="coefficients"):
        fk.TeaCacheConfig(coefficients=())
    with pytest.raises(ValueError, match="threshold"):
        fk.TeaCacheConfig(threshold=float("nan"))
    model = tiny_cogvideox()
    generic = fk.adapters.generic_adapter(tensor_format="BFCHW")
    fk.apply(model, fk.TeaCacheConfig(indicator="modulated_input"), adapter=generic)
    lat, extra = cog_inputs()
    with pytest.raises(ValueError, match="modulated input"):
        sample_loop([model], lat, extra, calls=2)


def test_chained_blocks_share_one_residual():
    """CogVideoX's blocks pass their outputs on unchanged: with host decisions they form one chain holding one
    residual per output (the references' whole-stack residual); with torch.cond every block keeps its own (a block
    passing its input through would alias it), and the run of blocks keeps one more for eager calls (host mode's).
    Latte's reshapes between blocks keep one residual per block."""
    sizes = {}
    for decide in ("host", "device"):
        model = tiny_cogvideox(layers=3)
        h = fk.apply(model, fk.TeaCacheConfig.preset("cogvideox-2b", threshold=0.3), decide=decide)
        lat, extra = cog_inputs()
        sample_loop([model], lat, extra, calls=50, first=1)
        rt = h.adaptive
        sizes[decide] = rt.cache_bytes() - rt.u_prev.numel() * rt.u_prev.element_size()
        heads = {b.head.name for b in rt.order}
        assert heads == ({"transformer_blocks.0"} if decide == "host" else {b.name for b in rt.order})
    assert sizes["device"] == (3 + 1) * sizes["host"]
    model = tiny_latte()
    h = fk.apply(model, fk.TeaCacheConfig.preset("opensora", threshold=0.3))
    lat, extra = latte_inputs()
    sample_loop([model], lat, extra, calls=50, first=1)
    assert all(b.head is b and b.tail is b for b in h.adaptive.order)
