"""MagCache (docs/algorithms.md section 12): the magnitude-ratio rule against a plain reference of it, parity with
diffusers' MagCache hook on tiny CogVideoX and Latte (same skipped steps, outputs close), calibration, errors."""

import math

import pytest
import torch
from adaptive_reference import decisions
from dit_models import one_thread  # noqa: F401
from dit_models import clone, cog_inputs, latte_inputs, sample_loop, tiny_cogvideox, tiny_latte

import fastercache_kernels as fk
from fastercache_kernels.policies.magcache.config import nearest

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 20
# ratios of a residual whose magnitude first grows, then shrinks (the paper's shape, Fig. 2), calibrated on 10 steps
# and resampled to STEPS: both decisions occur at threshold 0.06
RATIOS = (1.0, 1.08, 1.03, 1.01, 1.0, 0.995, 0.99, 0.98, 0.95, 0.9)


def magcache_reference(ratios, steps, threshold, max_skip, retention) -> list[bool]:
    """The rule as docs/algorithms.md section 12 states it (Python floats): True where the step computes."""
    keep = int(retention * steps + 0.5)
    acc_ratio, acc_err, acc_steps, out = 1.0, 0.0, 0, []
    for s in range(steps):
        compute = True
        if s >= keep:
            acc_ratio *= ratios[s] if s < len(ratios) else 1.0
            acc_steps += 1
            acc_err += abs(1.0 - acc_ratio)
            if s > 0 and acc_err <= threshold and acc_steps <= max_skip:
                compute = False
            else:
                acc_ratio, acc_err, acc_steps = 1.0, 0.0, 0
        out.append(compute)
    return out


def test_nearest_resampling_is_diffusers():
    from diffusers.hooks.mag_cache import nearest_interp

    assert nearest((1.0, 2.0, 3.0), 5) == (1.0, 1.0, 2.0, 3.0, 3.0)  # 0.5 and 1.5 round to even
    src = tuple(float(v) for v in torch.rand(13, generator=torch.Generator().manual_seed(0)))
    for n in (1, 5, 13, 20, 28, 50):
        assert nearest(src, n) == tuple(nearest_interp(torch.tensor(src, dtype=torch.float64), n).tolist())


@pytest.mark.parametrize("threshold,max_skip,retention", [(0.06, 3, 0.2), (0.2, 2, 0.0), (0.03, 5, 0.5)])
def test_decisions_follow_the_rule(threshold, max_skip, retention):
    model = tiny_cogvideox(layers=1)
    cfg = fk.MagCacheConfig(mag_ratios=RATIOS, threshold=threshold, max_skip_steps=max_skip,
                            retention_ratio=retention, num_inference_steps=STEPS)
    handle = fk.apply(model, cfg, record=True)
    lat, extra = cog_inputs()
    sample_loop([model], lat, extra, calls=STEPS)
    got = [g["pred"] for g in decisions(handle)]
    want = magcache_reference(cfg.ratios, STEPS, threshold, max_skip, retention)
    assert got == want
    assert 0 < sum(want) < STEPS


def _diffusers_config(**kw):
    from diffusers import MagCacheConfig

    return MagCacheConfig(mag_ratios=torch.tensor(RATIOS), num_inference_steps=STEPS, **kw)


class _Counter:
    """Counts the runs of a submodule of the first block: it runs only on computed steps."""

    def __init__(self, module):
        self.n = 0
        self.h = module.register_forward_hook(lambda *a: setattr(self, "n", self.n + 1))


@pytest.mark.parametrize("decide", ["host", "device"])
@pytest.mark.parametrize("given", ["fk", "diffusers"])
def test_parity_with_diffusers_hook(decide, given):
    """CogVideoX only: on Latte (spatial and temporal block lists) diffusers 0.42.1's hook takes the head of one list
    and the tail of the other and fails on their shapes (RuntimeError in MagCacheBlockHook), while fk runs it
    (test_latte_runs)."""
    make, inputs = tiny_cogvideox, cog_inputs
    ours = make()
    theirs = clone(ours)
    theirs.enable_cache(_diffusers_config(threshold=0.06))
    config = (fk.MagCacheConfig(mag_ratios=RATIOS, num_inference_steps=STEPS) if given == "fk" else
              _diffusers_config(threshold=0.06))  # diffusers' own config, a drop-in (issue 22)
    handle = fk.apply(ours, config, record=True, decide=decide)
    block = "transformer_blocks.0.norm1"
    a = _Counter(theirs.get_submodule(block))  # (not on ours: torch.cond's branches forbid Python side effects)
    lat, extra = inputs()
    outs = sample_loop([theirs, ours], lat, extra, calls=STEPS)
    computed = [g["pred"] for g in decisions(handle)]
    assert a.n == sum(computed) and 0 < sum(computed) < STEPS  # diffusers computed the same number of steps
    assert computed == magcache_reference(nearest(RATIOS, STEPS), STEPS, 0.06, 3, 0.2)
    for i, (t, o) in enumerate(outs):
        err = float((o - t).abs().max() / t.abs().max())
        assert err < 1e-5, (i, err)  # fp32 rounding only: every output, reused or not, is diffusers'


def test_latte_runs():
    model = tiny_latte()
    handle = fk.apply(model, fk.MagCacheConfig(mag_ratios=RATIOS, num_inference_steps=STEPS), record=True)
    lat, extra = latte_inputs()
    sample_loop([model], lat, extra, calls=STEPS)
    assert [g["pred"] for g in decisions(handle)] == magcache_reference(nearest(RATIOS, STEPS), STEPS, 0.06, 3, 0.2)


def test_forecast_order_on_magcache_keeps_the_decisions():
    model = tiny_cogvideox(layers=1)
    twin = clone(model)
    cfg = fk.MagCacheConfig(mag_ratios=RATIOS, num_inference_steps=STEPS)
    a, b = fk.apply(model, cfg, record=True), fk.apply(twin, cfg.replace(forecast_order=1), record=True)
    lat, extra = cog_inputs()
    outs = sample_loop([model, twin], lat, extra, calls=STEPS)
    pa = [g["pred"] for g in decisions(a)]
    assert pa == [g["pred"] for g in decisions(b)]
    assert any(not torch.equal(x, y) for (x, y), p in zip(outs, pa) if not p)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="calibrate"):
        fk.MagCacheConfig()
    with pytest.raises(ValueError, match="retention_ratio"):
        fk.MagCacheConfig(mag_ratios=RATIOS, retention_ratio=1.5)
    with pytest.raises(ValueError, match="max_skip_steps"):
        fk.MagCacheConfig(mag_ratios=RATIOS, max_skip_steps=-1)
    assert fk.MagCacheConfig(mag_ratios=torch.tensor(RATIOS)).mag_ratios[1] == pytest.approx(1.08)
    assert not math.isnan(fk.MagCacheConfig(mag_ratios=RATIOS).retention_steps)


def test_calibration_matches_diffusers(capsys):
    """fit_magcache on the tiny CogVideoX gives the ratios diffusers' calibration mode prints for the same run."""
    import re

    from fastercache_kernels.calibrate import fit_magcache

    model = tiny_cogvideox()
    theirs = clone(model)
    from diffusers import MagCacheConfig

    theirs.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=STEPS))
    lat, extra = cog_inputs()
    capsys.readouterr()
    sample_loop([theirs], lat, extra, calls=STEPS)
    printed = re.findall(r"\[[-0-9.eE, ]+\]", capsys.readouterr().out)
    want = [float(v) for v in printed[0].strip("[]").split(",")]
    ratios, series = fit_magcache(model, lambda: sample_loop([model], lat, extra, calls=STEPS))
    assert len(ratios) == len(want) == STEPS and len(series) == 1
    assert ratios == pytest.approx(want, rel=1e-4)
    assert max(abs(r - 1) for r in ratios) > 1e-3  # the residual's magnitude does change
    fk.MagCacheConfig(mag_ratios=ratios, num_inference_steps=STEPS)  # plugs in


def test_calibrate_command_prints_a_config():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "fastercache_kernels", "calibrate", "--policy", "magcache", "--family",
                          "cogvideox", "--steps", "6"], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("fk.MagCacheConfig(mag_ratios=(1.0, ") and line.endswith("num_inference_steps=6)")
    cfg = eval(line, {"fk": fk})  # the printed line is a working config
    assert len(cfg.ratios) == 6
