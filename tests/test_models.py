"""Every policy on tiny random instances of diffusers' current model classes (tests/model_zoo.py), in both call
patterns where the class has `cache_context`: batched ([uncond, cond] in one call) and per branch. What must hold:
each class is recognised by its own adapter; with every cache disabled the output equals the unpatched model's
exactly; the class's default config reuses some calls and the last output stays within BOUND of the unpatched
one; `handle.remove()` gives the unpatched output bit for bit. The tiny random models move much more per call than
real ones, so the adaptive thresholds here are larger than the published presets' (stated in CONFIGS)."""

from __future__ import annotations

import warnings

import pytest
import torch
from dit_models import one_thread  # noqa: F401
from model_zoo import SPECS, Case

import fastercache_kernels as fk

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

CALLS = 20
BOUND = 0.15  # max |cached - plain| / max |plain| of the last latents (measured: at most 0.06, Mochi)
ADAPTERS = {"wan": "wan", "skyreels-v2": "wan", "cogvideox-5b": "cogvideox-5b", "hunyuanvideo": "hunyuanvideo",
            "hunyuanvideo-1.5": "hunyuanvideo-1.5", "ltx-video": "ltx-video", "mochi": "mochi", "allegro": "allegro",
            "flux": "flux", "qwen-image": "qwen-image", "sd3": "sd3"}
IMAGE = ("flux", "qwen-image", "sd3")  # one frame: AdaCache without MoReg


def configs(case: Case, per_branch: bool) -> dict:
    """policy -> (config used, the same policy with every cache disabled)."""
    name, model = case.spec.name, case.model
    default = fk.adapters.for_model(model).default_preset
    # a skip step rebuilds the branch the pipeline calls second: per branch, compute cond (called first)
    fc = fk.FasterCacheConfig.preset(default, **({"computed_branch": "cond"} if per_branch else {}))
    moreg = name not in IMAGE
    return {
        "fastercache": (fc if per_branch else None, fc.replace(attention_reuse_start=10**6, cfg_skip_start=10**6)),
        # the class's TeaCache preset (its published coefficients and indicator), threshold raised for tiny models
        "teacache": (fk.TeaCacheConfig.for_model(model, threshold=0.2, warmup=0),
                     fk.TeaCacheConfig.for_model(model, threshold=0.0)),
        "fbcache": (fk.FirstBlockCacheConfig.for_model(model, threshold=0.5),
                    fk.FirstBlockCacheConfig(threshold=0.0)),
        "adacache": (fk.AdaCacheConfig(num_calls=CALLS, codebook={0.03: 4, 0.06: 3, 1.0: 2}, moreg=moreg),
                     fk.AdaCacheConfig(num_calls=CALLS, codebook={1.0: 1}, moreg=moreg)),
    }


@pytest.fixture(scope="module", params=list(SPECS))
def case(request, one_thread):  # noqa: F811
    c = Case(SPECS[request.param], CALLS)
    modes = (False, True) if hasattr(c.model, "cache_context") else (False,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c.plain = {m: c.run(c.model, m) for m in modes}
    return c


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _reused(st: dict) -> int:
    if "reused" in st:
        return st["reused"]
    return st["cfg"]["skip"] + sum(k["reused"] for k in st["attention"].values())


def test_recognised_by_class(case):
    assert fk.adapters.for_model(case.model).name == ADAPTERS[case.spec.name]


@pytest.mark.parametrize("policy", ["fastercache", "teacache", "fbcache", "adacache"])
def test_every_policy(case, policy):
    for per_branch, plain in case.plain.items():
        used, off = configs(case, per_branch)[policy]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not per_branch:  # (per-branch exactness: tests/test_pipelines.py)
                with fk.apply(case.model, off):
                    assert torch.equal(case.run(case.model, per_branch), plain), (policy, per_branch)
            handle = fk.apply(case.model, used)  # None: the class's default FasterCache preset
            out = case.run(case.model, per_branch)
            st = handle.stats()
            handle.remove()
            if not per_branch:
                assert torch.equal(case.run(case.model, per_branch), plain), "remove() must restore the model exactly"
        err = _rel(out, plain)
        print(f"\n{case.spec.name} {policy} {'per-branch' if per_branch else 'batched'}: last-call error {err:.2e}, "
              f"reused {_reused(st)}")
        assert _reused(st) > 0, st
        assert err < BOUND, err
        if per_branch:
            assert set(st["keys"]) == {"cond", "uncond"}


def test_guidance_distilled_says_so(case):
    adapter = fk.adapters.for_model(case.model)
    if not adapter.guidance_distilled:
        pytest.skip("trained with CFG")
    with fk.apply(case.model) as handle:
        case.run(case.model, False, calls=2)
        assert "guidance-distilled" in handle.stats()["cfg_cache"]


def test_device_decisions(case):
    """decide="device": every block is torch.cond (dense outputs that alias no input, also for single-stream
    blocks' slices, Mochi's passed-through text stream and SD3's dropped one), no host read, the host's result.
    Eager calls take the chosen branch after one host read per call (cond_in_eager=False, the default): the same
    result."""
    outs, stats = {}, {}
    for run in ("host", "device", "device-eager"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fk.apply(case.model, fk.FirstBlockCacheConfig(threshold=0.3), decide=run.split("-")[0]) as h:
                h.adaptive.cond_in_eager = run == "device"  # torch.cond as under torch.compile or graph capture
                outs[run] = case.run(case.model, False, calls=6)
                stats[run] = h.stats()
    assert stats["device"]["host_reads"] == 0 and stats["device"]["reused"] == stats["host"]["reused"]
    assert torch.allclose(outs["device"], outs["host"], rtol=1e-4, atol=1e-5)
    eager = stats["device-eager"]
    assert eager["host_reads"] == eager["calls"] - 1 and eager["reused"] == stats["host"]["reused"]
    assert torch.allclose(outs["device-eager"], outs["host"], rtol=1e-4, atol=1e-5)
