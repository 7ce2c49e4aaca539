"""The safety guards every adaptive policy takes: `warmup` (the first calls of a video always compute) and
`max_consecutive_reuse` (a cap on reused calls in a row), on the host and on the device (no host read), and
defaults that keep the published schedule."""

import pytest
import torch
from adaptive_reference import decisions, run_patched
from dit_models import cog_inputs, one_thread, tiny_cogvideox  # noqa: F401

import fastercache_kernels as fk

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

CALLS = 20
# thresholds that reuse most calls on the tiny CogVideoX, so that the guards have something to stop
CONFIGS = {
    "teacache": lambda **kw: fk.TeaCacheConfig(threshold=5.0, num_calls=CALLS, **kw),
    "fbcache": lambda **kw: fk.FirstBlockCacheConfig(threshold=5.0, num_calls=CALLS, **kw),
    "adacache": lambda **kw: fk.AdaCacheConfig(codebook={1.0: 8}, num_calls=CALLS, moreg=False, **kw),
}


@pytest.fixture(scope="module")
def model():
    return tiny_cogvideox()


def _preds(model, config, decide="host"):
    handle, _, _ = run_patched(model, config, cog_inputs, calls=CALLS, decide=decide)
    st = handle.stats()
    handle.remove()
    return [d["pred"] for d in decisions(handle)], st


def _longest_reuse_run(preds) -> int:
    run = best = 0
    for p in preds:
        run = 0 if p else run + 1
        best = max(best, run)
    return best


@pytest.mark.parametrize("policy", list(CONFIGS))
@pytest.mark.parametrize("decide", ["host", "device"])
def test_guards(model, policy, decide):
    make = CONFIGS[policy]
    plain, _ = _preds(model, make(), decide)
    assert _longest_reuse_run(plain) > 2, plain  # the unguarded schedule reuses several calls in a row
    capped, st = _preds(model, make(max_consecutive_reuse=2), decide)
    assert _longest_reuse_run(capped) <= 2 and not all(capped), capped
    warm, _ = _preds(model, make(warmup=5), decide)
    assert all(warm[:5]) and not all(warm), warm
    # decide="device" run eagerly reads the decision once per call, as host decisions do (not the observed call)
    assert st["host_reads"] == st["calls"] - 1
    off, _ = _preds(model, make(max_consecutive_reuse=0), decide)
    assert all(off)  # a cap of 0 computes every call


def test_defaults_keep_the_schedule_and_bad_values_are_refused():
    for make in CONFIGS.values():
        cfg = make()
        assert cfg.warmup == 0 and cfg.max_consecutive_reuse is None
        with pytest.raises(ValueError, match="warmup"):
            make(warmup=-1)
        with pytest.raises(ValueError, match="max_consecutive_reuse"):
            make(max_consecutive_reuse=1.5)


@pytest.mark.parametrize("policy", list(CONFIGS))
def test_host_mirrors_decide_as_the_tensor_path(model, policy, monkeypatch):
    """decide="host" keeps the call count and previous timestep on the host (`_hc`, `_hprev_t`) to skip tensor ops
    in `begin`; with the mirrors disabled (the tensor path, as when the timestep is not on the host) every recorded
    decision, call count and metric is the same, two videos in a row, with the guards on."""
    from fastercache_kernels.runtime.adaptive import AdaptiveHooks

    config = CONFIGS[policy](max_consecutive_reuse=2, warmup=2)
    runs = []
    for mirrors in (True, False):
        if not mirrors:  # reads None, ignores writes: begin always takes the tensor path
            monkeypatch.setattr(AdaptiveHooks, "_hc", property(lambda self: None, lambda self, v: None),
                                raising=False)
        handle, _, outs = run_patched(model, config, cog_inputs, calls=CALLS, videos=2)
        runs.append((decisions(handle), outs, handle.stats()))
        handle.remove()
    (rows, outs, st), (rows_t, outs_t, st_t) = runs
    assert len(rows) == 2 * CALLS and repr(rows) == repr(rows_t)  # repr: NaN (no metric yet) equals NaN
    assert st["computed"] == st_t["computed"] and st["videos"] == st_t["videos"] == 2 and 0 < st["computed"] < 40
    assert all(torch.equal(a, b) for a, b in zip(outs, outs_t))
