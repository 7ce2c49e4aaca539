"""AdaCache + MoReg: schedule and metric parity with the plain docs/algorithms.md rule on the same attention residuals,
the
captured p equals the gated attention output, reuse through both cached residuals, codebook validation, presets,
the generic adapter, one host read per call."""

import pytest
import torch
from adaptive_reference import Recorder, assert_reuse_adds_last_residual, close, decisions, forecast_residuals
from adaptive_reference import run_patched
from adaptive_reference import adacache as reference
from dit_models import COG_FRAMES, LATTE_FRAMES, clone, cog_inputs, latte_inputs, one_thread, sample_loop  # noqa: F401
from dit_models import PolyDiT, tiny_cogvideox, tiny_latte

import fastercache_kernels as fk

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

CODEBOOK = {0.05: 4, 0.1: 3, 0.2: 2, 1.0: 1}


def _cfg(**kw):
    return fk.AdaCacheConfig(**{"codebook": CODEBOOK, "num_calls": 50, "moreg_window": (5, 45), **kw})


# name: model, inputs, metric block, its capture submodule, frames, how p is laid out as [B, T*S, C]
CASES = {
    "cogvideox": (tiny_cogvideox, cog_inputs, "transformer_blocks.0", "norm2", COG_FRAMES, lambda p: p),
    "latte-temporal": (tiny_latte, latte_inputs, "temporal_transformer_blocks.0", "norm2", LATTE_FRAMES,
                       lambda p: p),  # [B*S, T, C]: the same sums as [B, T*S, C]
    "latte-spatial": (tiny_latte, latte_inputs, "transformer_blocks.0", "attn2", LATTE_FRAMES,
                      lambda p: p.reshape(2, -1, p.shape[-1])),  # [B*T, S, C] -> [B, T*S, C]
}


@pytest.fixture(scope="module", params=list(CASES))
def ada_run(request):
    make, inputs, block, capture, frames, layout = CASES[request.param]
    kind = "temporal" if block.startswith("temporal") else "spatial"
    cfg = _cfg(metric_kind=kind, metric_layers=(0,))
    model = make()

    def hooks(m, rec):
        blk = m.get_submodule(block)
        rec.block(blk, "blk")
        rec.sub_input(getattr(blk, capture), "mid")

    handle, rec, outs = run_patched(model, cfg, inputs, hooks=hooks)
    ps = {i + 1: layout(c["mid"] - c["blk.in"]) for i, c in enumerate(rec.calls) if "mid" in c}
    return dict(name=request.param, handle=handle, cfg=cfg, ps=ps, frames=frames, model=model, rec=rec)


def test_schedule_and_metric_match_reference(ada_run):
    cfg = ada_run["cfg"]
    ps = ada_run["ps"]

    def p_at(c):
        assert c in ps, f"the reference computes on call {c}, the policy did not"
        return ps[c]

    want = reference(p_at, 50, CODEBOOK, cfg.window(), ada_run["frames"])
    got = decisions(ada_run["handle"])
    assert [g["pred"] for g in got] == [w["compute"] for w in want]
    assert 10 < sum(w["compute"] for w in want) < 40
    assert {w.get("rate") for w in want if w["compute"]} >= {1, 2}, "the test needs more than one rate"
    for g, w in zip(got, want):
        if w["compute"] and w["d"] is not None:
            assert close(g["metric"], w["d"]), (g, w)
            assert g["rate_in"] == w["rate"]
    st = ada_run["handle"].stats()
    assert st["host_reads"] == st["calls"] - 1 and st["calls"] == 50 and st["observed_calls"] == 1
    assert st["computed"] == sum(w["compute"] for w in want)


def test_captured_p_is_the_gated_attention_output():
    """CogVideoX: p = norm2's input - block input = gate_msa * attn1(...) exactly (same ops as the block)."""
    model = tiny_cogvideox(layers=1)
    blk = model.transformer_blocks[0]
    got = {}
    blk.attn1.register_forward_hook(lambda m, a, o: got.__setitem__("attn", o[0]))
    blk.norm1.register_forward_hook(lambda m, a, o: got.__setitem__("gate", o[2]))
    fk.apply(model, _cfg(moreg=False))
    seen = []
    blk.norm2.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    blk.register_forward_pre_hook(lambda m, a, k: seen.append(k["hidden_states"]), with_kwargs=True)
    lat, extra = cog_inputs()
    sample_loop([model], lat, extra, calls=1)
    x, mid = seen[-2], seen[-1]  # the block pre-hook fires before its norm2
    assert torch.equal(mid - x, (x + got["gate"] * got["attn"]) - x)


def test_reuse_adds_both_residuals():
    model = tiny_cogvideox(layers=2)

    def hooks(m, rec):
        rec.block(m.transformer_blocks[0], "b0")
        rec.block(m.transformer_blocks[1], "b1")

    handle, rec, _ = run_patched(model, _cfg(), cog_inputs, hooks=hooks)
    assert_reuse_adds_last_residual(handle, rec)


def test_generic_adapter_matches_cogvideox_adapter():
    model = tiny_cogvideox()
    generic = fk.adapters.generic_adapter(tensor_format="BFCHW", attn_capture="norm2")
    h1, _, o1 = run_patched(model, _cfg(), cog_inputs, calls=20)
    h1.remove()
    h2, _, o2 = run_patched(model, _cfg(), cog_inputs, calls=20, adapter=generic)
    assert [g["pred"] for g in decisions(h1)] == [g["pred"] for g in decisions(h2)]
    assert all(torch.equal(a, b) for a, b in zip(o1, o2))
    h2.remove()


def test_remove_restores_exactly(ada_run):
    model = ada_run["model"]
    ada_run["handle"].remove()
    ref_model = CASES[ada_run["name"]][0]()  # the same seed: the same weights
    lat, extra = CASES[ada_run["name"]][1]()
    outs = sample_loop([ref_model, model], lat, extra, calls=3)
    assert all(torch.equal(r[0], r[1]) for r in outs)


def test_second_video_repeats_the_schedule():
    model = tiny_latte()
    handle, _, _ = run_patched(model, _cfg(), latte_inputs, videos=2)
    got = decisions(handle)
    assert [g["pred"] for g in got[:50]] == [g["pred"] for g in got[50:]]
    assert got[50]["c"] == 1 and handle.stats()["videos"] == 2
    assert got[48]["pred"] and got[49]["pred"]  # calls N-1 and N


def test_presets():
    p = fk.AdaCacheConfig.preset("opensora-100-fast")
    assert p == fk.AdaCacheConfig.preset("opensora-100")
    assert p.codebook == ((0.03, 12), (0.05, 10), (0.07, 8), (0.09, 6), (0.11, 4), (1.0, 3))
    assert p.num_calls == 100 and p.window() == (10, 90) and p.decision_dtype == torch.bfloat16
    fast, slow = fk.AdaCacheConfig.preset("opensora-30-fast"), fk.AdaCacheConfig.preset("opensora-30-slow")
    assert [r for _, r in fast.codebook] == [6, 5, 4, 3, 2, 1] and [r for _, r in slow.codebook] == [3, 2, 1, 1, 1, 1]
    assert fast.window() == (4, 26)
    assert fk.AdaCacheConfig(num_calls=100).window() == (10, 90)


@pytest.mark.parametrize("codebook, match", [
    ({0.1: 2, 0.05: 3, 1.0: 1}, "strictly ascending"),
    ({0.1: 2, 0.5: 1}, "covers every distance"),
    ({0.1: 0, 1.0: 1}, "int >= 1"),
    ({0.1: 2.5, 1.0: 1}, "int >= 1"),
    ({-0.1: 2, 1.0: 1}, "> 0"),
    ({}, "empty"),
    ([(0.1, 2, 3)], "pairs"),
    (5, "dict"),
])
def test_codebook_errors(codebook, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fk.AdaCacheConfig(codebook=codebook)


def test_config_errors():
    for kw, match in [({"num_calls": 2}, "num_calls"), ({"residual": "mlp"}, "residual"),
                      ({"metric_kind": "x"}, "metric_kind"), ({"moreg_window": (5, 2)}, "moreg_window"),
                      ({"moreg_scale": 0.0}, "moreg_scale"), ({"decision_dtype": torch.int8}, "decision_dtype"),
                      ({"metric_layers": ()}, "metric_layers")]:
        with pytest.raises(ValueError, match=match):
            fk.AdaCacheConfig(**kw)
    with pytest.raises(ValueError, match="unknown AdaCache preset"):
        fk.AdaCacheConfig.preset("opensora-50")
    # the blocks are observed in the first call: what is wrong with them is said there
    for cfg, adapter, match in [(_cfg(metric_layers=(7,)), None, "out of range"),
                                (_cfg(), fk.adapters.generic_adapter(attn_capture="nothing"), "capture")]:
        model = tiny_cogvideox()
        fk.apply(model, cfg, adapter=adapter)
        with pytest.raises(ValueError, match=match):
            sample_loop([model], *cog_inputs(), calls=1)


def test_block_residual_metric_runs():
    model = tiny_cogvideox()
    handle, _, _ = run_patched(model, _cfg(residual="block", moreg=False), cog_inputs, calls=12)
    got = decisions(handle)
    assert got[0]["pred"] and all(g["metric"] == g["metric"] for g in got[1:])  # no NaN after the first call


def test_bf16_decisions_match_reference():
    """decision_dtype=bf16 (the presets): d and the thresholds are rounded to bf16 before the lookup."""
    cfg = _cfg(decision_dtype=torch.bfloat16, metric_kind="temporal", metric_layers=(0,))
    model = tiny_latte()

    def hooks(m, rec):
        blk = m.temporal_transformer_blocks[0]
        rec.block(blk, "blk")
        rec.sub_input(blk.norm2, "mid")

    handle, rec, _ = run_patched(model, cfg, latte_inputs, hooks=hooks)
    ps = {i + 1: c["mid"] - c["blk.in"] for i, c in enumerate(rec.calls) if "mid" in c}
    want = reference(lambda c: ps[c], 50, CODEBOOK, cfg.window(), LATTE_FRAMES, compare_dtype=torch.bfloat16)
    got = decisions(handle)
    assert [g["pred"] for g in got] == [w["compute"] for w in want]
    for g, w in zip(got, want):
        if w["compute"] and w["d"] is not None:
            assert g["metric"] == w["d"]  # both rounded to bf16


def test_stdit3_schedule_and_metric_match_reference():
    """AdaCache's own reference model: the Open-Sora 1.2 STDiT3 stand-in (tests/seed_models.py) called as its
    rectified-flow sampler calls it (positional x and timestep, batch [cond, uncond]), the 30-call fast preset
    with its bf16 comparisons, the metric on temporal block 0; p = the input of cross_attn - the block input."""
    from seed_models import STDiT3
    from test_adapter_seed_models import opensora_call, opensora_timesteps

    model = STDiT3()
    cfg = fk.AdaCacheConfig.preset("opensora-30-fast").replace(metric_layers=(0,), metric_kind="temporal")
    handle = fk.apply(model, cfg, record=True)
    rec = Recorder()
    blk = model.temporal_blocks[0]
    rec.block(blk, "blk")
    rec.sub_input(blk.cross_attn, "mid")
    g = torch.Generator().manual_seed(0)
    call = opensora_call(g)
    z = torch.randn(1, 4, 3, 8, 10, generator=g)
    for t in opensora_timesteps(30):
        rec.new_call()
        args, kwargs, _ = call(z, t)
        with torch.no_grad():
            out = model(*args, **kwargs)
        z = z - 0.02 * out.chunk(2)[0][:, :4]
    rec.remove()
    ps = {i + 1: c["mid"] - c["blk.in"] for i, c in enumerate(rec.calls) if "mid" in c}
    want = reference(lambda c: ps[c], 30, dict(cfg.codebook), cfg.window(), 3, compare_dtype=torch.bfloat16)
    got = decisions(handle)
    assert [g["pred"] for g in got] == [w["compute"] for w in want]
    assert 4 < sum(w["compute"] for w in want) < 26
    for g_, w in zip(got, want):
        if w["compute"] and w["d"] is not None:
            assert close(g_["metric"], w["d"]), (g_, w)
    assert handle.stats()["blocks"] == 4


@pytest.mark.parametrize("order, decide, forecast_metric", [(1, "host", False), (2, "device", False),
                                                            (2, "host", True)])
def test_forecast_matches_reference(order, decide, forecast_metric):
    """docs/algorithms.md section 11: with forecast_order n, each block of a reused call adds the polynomial through
    its residuals (output - input) on the last n + 1 computed calls, over the call index (the rates space those calls
    unevenly); the schedule is the reference rule's on the same residuals, whose metric with forecast_metric is the
    distance of p to its own forecast. Plain reuse (the last residual) is far from what the policy adds."""
    cfg = _cfg(metric_layers=(0,), forecast_order=order, forecast_metric=forecast_metric)
    model = tiny_cogvideox(layers=2)

    def hooks(m, rec):
        for i, blk in enumerate(m.transformer_blocks):
            rec.block(blk, f"b{i}")
        rec.sub_input(m.transformer_blocks[0].norm2, "mid")

    handle, rec, _ = run_patched(model, cfg, cog_inputs, hooks=hooks, decide=decide)
    calls = {i + 1: c for i, c in enumerate(rec.calls)}
    ps = {c: v["mid"] - v["b0.in"] for c, v in calls.items() if "mid" in v}
    want = reference(lambda c: ps[c], 50, CODEBOOK, cfg.window(), COG_FRAMES,
                     forecast_metric=order if forecast_metric else 0)
    got = decisions(handle)
    assert [g["pred"] for g in got] == [w["compute"] for w in want]
    rates = [w["rate"] for w in want if w["compute"]]
    assert len(set(rates[1:-2])) > 1, "the test needs uneven spacing of the computed calls"
    for g, w in zip(got, want):
        if w["compute"] and w["d"] is not None:
            assert close(g["metric"], w["d"], 1e-4), (g, w)
    far = 0.0
    for i in range(2):
        key = f"b{i}"
        res = forecast_residuals(want, lambda c: calls[c][key + ".out"] - calls[c][key + ".in"], order)
        assert len(res) > 10
        last = None
        for c, v in calls.items():
            if c not in res:
                last = v[key + ".out"] - v[key + ".in"]
                continue
            expect = (v[key + ".in"].double() + res[c]).float()
            torch.testing.assert_close(v[key + ".out"], expect, rtol=1e-4, atol=1e-4 * float(expect.abs().max()))
            far = max(far, float((v[key + ".in"] + last - expect).abs().max() / expect.abs().max()))
    assert far > 1e-2, far
    st = handle.stats()
    assert st["forecast_order"] == order and st["computed"] == len(rates)


def test_forecast_config_errors():
    for kw in [{"forecast_order": 3}, {"forecast_order": True}, {"forecast_metric": True},
               {"forecast_order": 1, "forecast_metric": 1}]:
        with pytest.raises(ValueError, match="forecast_"):
            fk.AdaCacheConfig(**kw)


class _PolyBlock(torch.nn.Module):
    """p = temb * v1 (the input of norm2, the capture point, minus x) and qr = temb * v2: the residuals depend only
    on the timestep, through temb."""

    def __init__(self, dim: int):
        super().__init__()
        self.v1, self.v2 = torch.nn.Parameter(torch.randn(dim)), torch.nn.Parameter(torch.randn(dim))
        self.norm2 = torch.nn.Identity()

    def forward(self, hidden_states, temb):
        h = self.norm2(hidden_states + temb.unsqueeze(1) * self.v1)
        return h + temb.unsqueeze(1) * self.v2


def _poly_errors(order: int, decide: str = "host"):
    torch.manual_seed(2)
    model = PolyDiT(_PolyBlock, 2).eval()  # every block residual a parabola in the call index
    ref = clone(model)
    adapter = fk.adapters.generic_adapter(spatial=(), temporal=(), blocks=r"^transformer_blocks\.\d+$",
                                          block_io=("hidden_states",), timestep_arg="timestep",
                                          batched_args=("x", "timestep"), attn_capture="norm2")
    # warmup 3: three points before the first reuse; the codebook spaces the computed calls unevenly here
    cfg = fk.AdaCacheConfig(codebook={0.045: 5, 0.055: 4, 0.065: 3, 0.075: 2, 1.0: 1}, num_calls=20, warmup=3,
                            moreg=False, forecast_order=order)
    handle = fk.apply(model, cfg, adapter=adapter, decide=decide, record=True)
    x = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    errs, outs = [], []
    for i in range(20):
        t = torch.tensor([999 - 40 * i])
        with torch.no_grad():
            a, b = ref(x, t), model(x, t)
        errs.append(float((b - a).abs().max() / a.abs().max()))
        outs.append(b)
        x = x - 0.01 * a
    computed = [i + 1 for i, g in enumerate(decisions(handle)) if g["pred"]]
    return computed, errs, outs


def test_forecast_is_exact_for_a_parabola_at_uneven_spacing():
    """Order 2 through the last three computed calls, however far apart (the Lagrange weights take the spacing):
    exact for residuals quadratic in the call index; order 1 and plain reuse miss; device decisions agree."""
    computed, errs, host = _poly_errors(2)
    gaps = {b - a for a, b in zip(computed, computed[1:])}
    assert len(gaps - {1}) >= 2, computed  # at least two different distances between computed calls
    assert max(errs) < 1e-4, errs
    assert max(_poly_errors(1)[1]) > 1e-2 and max(_poly_errors(0)[1]) > 1e-1
    dev_computed, dev_errs, dev = _poly_errors(2, decide="device")
    assert dev_computed == computed and max(dev_errs) < 1e-4
    for a, b in zip(host, dev):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
