"""FasterCacheConfig, the presets and their static call-kind table (docs/algorithms.md §1-2), the runtime scalars
(compounding CFG weights), diffusers' semantics (docs/algorithms.md §6), and the fast form of the CFG reconstruction."""

import math

import pytest
import torch
from dit_models import one_thread  # noqa: F401
from fastercache_reference import SPEC, fft_split

import fastercache_kernels as fk
from fastercache_kernels.policies.fastercache.config import PRESETS, FasterCacheSchedule
from fastercache_kernels.policies.diffusers_compat import DiffusersSchedule

N = 200
pytestmark = pytest.mark.usefixtures("one_thread")


def test_preset_names():
    assert set(PRESETS) == {"cogvideox-2b", "latte", "opensora-1.2", "opensora-plan-1.1", "vchitect-2.0",
                            "attention-only"}
    assert fk.FasterCacheConfig.preset("Latte").name == "latte"
    assert fk.FasterCacheConfig.preset("latte", storage_dtype=torch.bfloat16).storage_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="opensora-plan-1.1"):
        fk.FasterCacheConfig.preset("sora-2")


@pytest.mark.parametrize("preset", sorted(SPEC))
def test_table_follows_spec(preset):
    spec = SPEC[preset]
    sched = FasterCacheSchedule(fk.FasterCacheConfig.preset(preset))
    last_full = {k: None for k in ("spatial", "temporal")}  # was the newest cached output from a full call?
    filled = {k: False for k in last_full}
    lf = hf = 1.0
    for p in sched.table(N):
        c = p.c
        assert p.full == (not spec["skip"](c)), c
        for kind in last_full:
            wanted = spec["reuse"](c) and filled[kind]
            if wanted and p.full and spec["check_batch"]:
                wanted = last_full[kind]
            assert p.reuse[kind] == wanted, (c, kind)
            if not wanted:
                filled[kind] = filled[kind] or c >= spec["fill"][kind]
                last_full[kind] = p.full
            assert (kind in p.fill) == (c == spec["fill"][kind]), (c, kind)
        if any(p.reuse.values()):
            assert p.attn_weight == spec["weight"](c)
        if p.full:
            lf = hf = 1.0
        else:
            assert (p.low_mult, p.high_mult) == spec["mults"](c), c
            lf, hf = lf * p.low_mult, hf * p.high_mult


def test_known_calls():
    """The quirks docs/algorithms.md names, call by call."""
    cog = {p.c: p.kind for p in FasterCacheSchedule(fk.FasterCacheConfig.preset("cogvideox-2b")).table(50)}
    assert [cog[c] for c in (15, 17, 18, 19, 20, 25, 30, 35)] == [
        "full/compute", "full/compute", "skip/compute", "skip/reuse", "full/compute", "full/compute", "full/compute",
        "full/compute"]  # full calls recompute: the newest cache holds one branch
    latte = FasterCacheSchedule(fk.FasterCacheConfig.preset("latte"))
    assert latte.plan(16).kind == "full/reuse" and latte.plan(20).kind == "full/compute"
    assert latte.needs_other_branch
    osr = FasterCacheSchedule(fk.FasterCacheConfig.preset("opensora-1.2"))
    assert [osr.plan(c).kind for c in (8, 10, 20, 30)] == ["full/reuse"] * 4  # 20, 30: broadcast
    assert osr.plan(8).attn_weight == pytest.approx(0.045) and osr.plan(5).fill == {"spatial", "temporal"}
    osp = FasterCacheSchedule(fk.FasterCacheConfig.preset("opensora-plan-1.1"))
    assert osp.plan(40).fill == {"temporal"} and osp.plan(42).fill == {"spatial"}
    assert not osp.needs_other_branch and not FasterCacheSchedule(fk.FasterCacheConfig.preset("cogvideox-2b")
                                                                   ).needs_other_branch
    vch = FasterCacheSchedule(fk.FasterCacheConfig.preset("vchitect-2.0"))
    assert vch.plan(1).fill and vch.plan(32).kind == "skip/reuse" and vch.plan(32).attn_weight == 0.0
    assert vch.config.radius_divisor == 200
    text = latte.format_table(20)
    assert "16  full/reuse" in text and "fill spatial,temporal" in text


def test_cfg_weights_compound_and_reset():
    """a = k_L^j, b = k_H^j after j consecutive skip calls; a full call resets them (docs/algorithms.md §2): the
    weights a
    patched CogVideoX call uses, read by a forward hook after each call."""
    from dit_models import cog_inputs, sample_loop, tiny_cogvideox

    model = tiny_cogvideox(layers=1)
    handle = fk.apply(model, "cogvideox-2b")
    seen = []
    cfg = handle.fastercache.cfg
    model.register_forward_hook(lambda *_: seen.append((cfg.a.item(), cfg.b.item())))
    latents, extra = cog_inputs()
    sample_loop([model], latents, extra, calls=59)
    spec = SPEC["cogvideox-2b"]
    a = b = 1.0
    for c, got in enumerate(seen, 1):
        if spec["skip"](c):
            ka, kb = spec["mults"](c)
            a, b = a * ka, b * kb
        else:
            a = b = 1.0
        assert got == (pytest.approx(a, rel=1e-6), pytest.approx(b, rel=1e-6)), c
    # calls 56..59: four skip calls after the full call 55; LF stopped at c = 40, HF applies from c = 30
    assert len(seen) == 59 and a == 1.0 and b == pytest.approx(1.1**4)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("attention_period", 0, "attention_period"),
    ("attention_compute_phase", 3, "attention_compute_phase"),
    ("computed_branch", "both", "computed_branch"),
    ("full_call_attention", "sometimes", "full_call_attention"),
    ("storage_dtype", torch.int8, "storage_dtype"),
    ("attention_fill", {"spacial": 3}, "spacial"),
    ("cfg_refresh_start", 30, "cfg_refresh_start"),
    ("low_freq_calls", 5, "low_freq_calls"),
])
def test_config_errors_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        fk.FasterCacheConfig(**{field: value})


def test_attention_weight_may_be_a_function_of_the_call():
    config = fk.FasterCacheConfig(attention_weight=lambda c: c / 100)
    sched = FasterCacheSchedule(config)
    p = next(p for p in sched.table(60) if any(p.reuse.values()))
    assert p.attn_weight == p.c / 100


@pytest.mark.parametrize(("h", "w"), [(64, 64), (60, 90), (60, 106), (30, 44), (7, 9)])
def test_fast_cfg_reconstruction_equals_the_fft_path(h, w):
    """docs/algorithms.md §2 linearity: computed + a*R_L + b*R_H equals the reference's FFT-domain reconstruction."""
    g = torch.Generator().manual_seed(h * w)
    computed = torch.randn(3, 4, h, w, generator=g)
    other = torch.randn(3, 4, h, w, generator=g)
    low, high = fk.ops.cfg_residual_split(other, computed)
    a, b = 1.1**3, 1.15**2
    fast = fk.ops.cfg_recombine(computed, low, high, a, b)
    lf_c, hf_c = fft_split(computed)
    lf_o, hf_o = fft_split(other)
    ref = torch.fft.ifft2(torch.fft.ifftshift(lf_c + a * (lf_o - lf_c) + hf_c + b * (hf_o - hf_c))).real
    assert (fast - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (low + high - (other - computed)).abs().max() <= 1e-5
    guided = fk.ops.cfg_recombine_guided(computed, low, high, a, b, torch.tensor(6.0))
    torch.testing.assert_close(guided, fast + 6.0 * (computed - fast), rtol=1e-5, atol=1e-5)


class _DiffusersLike:
    """The fields of diffusers' FasterCacheConfig with its defaults (docs/algorithms.md §6), without importing
    diffusers."""

    spatial_attention_block_skip_range = 2
    temporal_attention_block_skip_range = None
    spatial_attention_timestep_skip_range = (-1, 681)
    temporal_attention_timestep_skip_range = (-1, 681)
    low_frequency_weight_update_timestep_range = (99, 901)
    high_frequency_weight_update_timestep_range = (-1, 301)
    alpha_low_frequency = alpha_high_frequency = 1.1
    unconditional_batch_skip_range = 5
    unconditional_batch_timestep_skip_range = (-1, 641)
    attention_weight_callback = low_frequency_weight_callback = high_frequency_weight_callback = None
    is_guidance_distilled = False


def test_diffusers_semantics():
    sched = DiffusersSchedule(_DiffusersLike())
    ts = torch.linspace(999, 0, 50).round().tolist()
    for i, t in enumerate(ts):
        p = sched.plan(i + 1, t)
        skip = i > 0 and -1 < t < 641 and i % 5 != 0
        assert p.full == (not skip), i
        assert p.reuse["spatial"] == (skip and -1 < t < 681 and i % 2 != 0), i
        assert not p.reuse["temporal"]  # no temporal skip range by default
        if skip:
            assert p.low_mult == (1.1 if 99 < t < 901 else 1.0) and p.high_mult == (1.1 if -1 < t < 301 else 1.0)
        assert p.fill == ({"spatial", "temporal"} if i == 0 else set())
    assert sched.plan(11, 641.0).full and not sched.plan(12, 640.0).full  # strict inequalities
    with pytest.raises(ValueError, match="timestep"):
        sched.plan(1, None)


def test_horizon_covers_the_periodic_part():
    for name in PRESETS:
        sched = FasterCacheSchedule(fk.FasterCacheConfig.preset(name))
        cfg = sched.config
        period = math.lcm(cfg.attention_period, cfg.cfg_period)
        tail = sched.table(sched._horizon() + 2 * period)[-2 * period:]
        assert [p.kind for p in tail[:period]] == [p.kind for p in tail[period:]], name
