"""torch.compile sees the custom ops as single nodes: fullgraph, no graph break, no recompile when a 0-d
scalar tensor changes value."""

import torch
import torch._dynamo.testing

import fastercache_kernels as fk
from fastercache_kernels import reference as R


def test_forecast_extrapolation_fullgraph_no_recompile():
    # FasterCache's reuse: newer + w * (newer - older) as the forecast with weights (1 + w, -w), built in the graph
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")

    @torch.compile(backend=counter, fullgraph=True)
    def step(store, w):
        return fk.ops.forecast(store, fk.ops.extrapolation_weights(w)) * 2.0

    store = torch.randn(2, 64, 33)
    w = torch.tensor(0.0)
    for i in range(10):
        w.fill_(0.1 * i)  # the weight changes every call; the graph must not care
        expected = 2 * R.forecast(store, fk.ops.extrapolation_weights(0.1 * i))
        torch.testing.assert_close(step(store, w), expected)
    assert counter.frame_count == 1, f"{counter.frame_count} graphs"
    # a fresh 0-d tensor each call (as a policy computing weights would pass) must not recompile either
    for i in range(3):
        step(store, torch.tensor(0.05 * i))
    assert counter.frame_count == 1


def test_forecast_out_compiles():
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")

    @torch.compile(backend=counter, fullgraph=True)
    def step(store, weights, buf):
        fk.ops.forecast(store, weights, out=buf)
        return buf + 1

    store, buf = torch.randn(2, 10), torch.empty(10)
    for i in range(4):
        weights = fk.ops.extrapolation_weights(float(i))
        res = step(store, weights, buf)
        torch.testing.assert_close(buf, R.forecast(store, weights))
        torch.testing.assert_close(res, buf + 1)
    assert counter.frame_count == 1


def test_feature_diff_fullgraph_no_recompile():
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")

    @torch.compile(backend=counter, fullgraph=True)
    def decide(a, b, threshold):
        d = fk.ops.feature_diff(a, b, "rel_l1")
        rows = fk.ops.feature_diff(a, b, "cosine", per_sample=True)
        sums = fk.ops.feature_diff_partials(a, b, "rel_l2")
        return d < threshold, rows, fk.ops.feature_diff_from_partials(sums, "rel_l2")

    a, b = torch.randn(2, 40, 33), torch.randn(2, 40, 33)
    threshold = torch.tensor(0.0)
    for i in range(5):
        threshold.fill_(0.5 * i)  # the decision input changes; the graph must not care
        a.add_(0.1)
        below, rows, l2 = decide(a, b, threshold)
        assert bool(below) == bool(R.feature_diff(a, b, "rel_l1") < 0.5 * i)
        torch.testing.assert_close(rows, R.feature_diff(a, b, "cosine", per_sample=True), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(l2, R.feature_diff(a, b, "rel_l2"), rtol=1e-5, atol=1e-6)
    assert counter.frame_count == 1, f"{counter.frame_count} graphs"


def test_residual_diff_update_mutates_cache_under_compile():
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")

    @torch.compile(backend=counter, fullgraph=True)
    def first_block_step(h0, h1, cache):
        d = fk.ops.residual_diff_update(h1, h0, cache, "rel_l1")
        return d * 2

    h0 = torch.randn(2, 16, 8)
    cache = torch.zeros(2, 16, 8, dtype=torch.bfloat16)
    for i in range(4):
        h1 = h0 + torch.randn(2, 16, 8)
        expected_cache = cache.clone()
        expected = 2 * R.residual_diff_update(h1, h0, expected_cache, "rel_l1")
        torch.testing.assert_close(first_block_step(h0, h1, cache), expected, rtol=1e-5, atol=1e-6, equal_nan=True)
        assert torch.equal(cache, expected_cache), f"call {i}: cache not updated in place"
    assert counter.frame_count == 1, f"{counter.frame_count} graphs"


def test_motion_score_fullgraph_no_recompile():
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")

    @torch.compile(backend=counter, fullgraph=True)
    def moreg(p, m_prev, rate):
        m = (fk.ops.motion_score(p, 5, (1,))[0] / 0.385) ** 8
        return m + (10 * (m - m_prev) / rate).abs()

    p = torch.randn(2, 5 * 12, 16)
    m_prev, rate = torch.tensor(1.0), torch.tensor(3.0)
    for i in range(4):
        rate.fill_(float(i + 1))
        p.mul_(1.1)
        m = (R.motion_score(p, 5, (1,))[0] / 0.385) ** 8
        torch.testing.assert_close(moreg(p, m_prev, rate), m + (10 * (m - m_prev) / (i + 1)).abs(), rtol=1e-4, atol=0)
    assert counter.frame_count == 1, f"{counter.frame_count} graphs"


def test_cfg_recombine_guided_fullgraph_no_recompile():
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")

    @torch.compile(backend=counter, fullgraph=True)
    def skip_call(cond, low, high, a, b, s):
        other = fk.ops.cfg_recombine(cond, low, high, a, b)
        return fk.ops.cfg_recombine_guided(cond, low, high, a, b, s), other

    cond = torch.randn(2, 4, 12, 18)
    low, high = torch.randn(2, 4, 12, 18).bfloat16(), torch.randn(2, 4, 12, 18).bfloat16()
    a, b, s = torch.tensor(1.0), torch.tensor(1.0), torch.tensor(6.0)
    for i in range(6):
        # the compounding multipliers and a dynamic guidance scale change every call
        a.fill_(1.1**i)
        b.fill_(1.15 ** (i // 2))
        s.fill_(6.0 - 0.5 * i)
        guided, other = skip_call(cond, low, high, a, b, s)
        torch.testing.assert_close(guided, R.cfg_recombine_guided(cond, low, high, a, b, s))
        torch.testing.assert_close(other, R.cfg_recombine(cond, low, high, a, b))
    assert counter.frame_count == 1, f"{counter.frame_count} graphs"
    for i in range(3):
        skip_call(cond, low, high, torch.tensor(1.0 + i), torch.tensor(0.5), torch.tensor(7.5))
    assert counter.frame_count == 1


def test_cfg_residual_split_and_recombine_compile():
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")

    @torch.compile(backend=counter, fullgraph=True)
    def full_then_skip(uncond, cond, new_cond, low, high, a, b, s):
        fk.ops.cfg_residual_split(uncond, cond, out=(low, high))  # refresh the deltas in place
        fresh = fk.ops.cfg_residual_split(uncond, cond, 5, torch.bfloat16)
        return fk.ops.cfg_recombine_guided(new_cond, low, high, a, b, s), fresh

    shape = (2, 4, 20, 30)
    low, high = torch.empty(shape), torch.empty(shape)
    for i in range(4):
        uncond, cond, new_cond = torch.randn(shape), torch.randn(shape), torch.randn(shape)
        out, fresh = full_then_skip(uncond, cond, new_cond, low, high, torch.tensor(1.1**i), torch.tensor(1.0),
                                    torch.tensor(6.0))
        ref_low, ref_high = R.cfg_residual_split(uncond, cond)
        torch.testing.assert_close(low, ref_low, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(high, ref_high, rtol=1e-5, atol=1e-5)
        assert fresh[0].dtype == torch.bfloat16
        torch.testing.assert_close(out, R.cfg_recombine_guided(new_cond, ref_low, ref_high, 1.1**i, 1.0, 6.0),
                                   rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1, f"{counter.frame_count} graphs"


def test_forecast_in_place_compiles():
    # x += the forecast, written into x itself (out=x): a graph-internal tensor, then a graph input, mutated
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")

    @torch.compile(backend=counter, fullgraph=True)
    def reuse_block(x, store, w):
        x = x * 1.0  # a graph-internal tensor mutated in place, then used
        fk.ops.forecast(store, fk.ops.extrapolation_weights(w), x, out=x)
        return x + 1

    x, store = torch.randn(2, 33, 16), torch.randn(2, 2, 33, 16)
    for i in range(4):
        w = torch.tensor((i - 7) / 20 * 0.9)
        expected = R.forecast(store, fk.ops.extrapolation_weights(w), x) + 1
        torch.testing.assert_close(reuse_block(x, store, w), expected)
    assert counter.frame_count == 1

    counter2 = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")

    @torch.compile(backend=counter2, fullgraph=True)
    def on_input(x, store, weights):
        fk.ops.forecast(store, weights, x, out=x)  # mutates a graph input

    y = x.clone()
    weights = fk.ops.extrapolation_weights(0.3)
    on_input(y, store, weights)
    torch.testing.assert_close(y, R.forecast(store, weights, x))
    assert counter2.frame_count == 1


def test_residual_sum_fullgraph_no_recompile():
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")

    @torch.compile(backend=counter, fullgraph=True)
    def reuse(x, residuals, out):
        y = fk.ops.residual_sum(x, residuals)
        fk.ops.residual_sum(x, residuals, out=out)
        return y * 2

    residuals = [torch.randn(4, 64) for _ in range(56)]
    out = torch.empty(4, 64)
    for _ in range(3):
        x = torch.randn(4, 64)
        for r in residuals:
            r.normal_()  # new cached residuals each call: the graph must not care
        expected = R.residual_sum(x, residuals)
        torch.testing.assert_close(reuse(x, residuals, out), 2 * expected)
        torch.testing.assert_close(out, expected)
    assert counter.frame_count == 1
