"""fk.apply on the seed models' own classes (stand-ins from docs/algorithms.md §7, tests/seed_models.py), each called as
its own sampler calls it, over the preset's full call count (Open-Sora 30, Latte 50, Open-Sora-Plan 159 with PNDM's
timesteps, CogVideoX SAT 50, Vchitect 100 steps; diffusers' Latte and CogVideoX ports 50 each). Per call: the
compute/reuse pattern equals the docs/algorithms.md schedule (and the reference's own decisions), the output equals the
plain
reference implementation (tests/fastercache_reference.py) within 1e-4 relative in fp32, and every reconstructed CFG
branch equals the reference FFT path of tests/spec_fft.py. The reference repositories' code is not available: the
stand-ins encode what docs/algorithms.md §7 states about it."""

from __future__ import annotations

import copy

import pytest
import torch
from dit_models import (  # noqa: F401
    COG_FRAMES,
    COG_H,
    COG_W,
    LATTE_FRAMES,
    LATTE_HW,
    one_thread,
    rel_err,
    tiny_cogvideox,
    tiny_latte,
)
from fastercache_reference import SPEC, VCHITECT, ReferenceFasterCache, ReferenceVchitect
from seed_models import (
    TEXT_DIM,
    TEXT_LEN,
    DiffusionTransformer,
    LatteT2V,
    OpenSoraPlanLatteT2V,
    STDiT3,
    VchitectXLTransformerModel,
)
from spec_fft import spec_deltas, spec_reconstruct

import fastercache_kernels as fk
from fastercache_kernels.adapters import for_model

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-4
FRAMES, H, W = 3, 8, 10  # latent frames, height, width (radius min(H, W) // 5 = 1)


# ---- the samplers, as each repository calls its model ------------------------------------------------------------


class Seed:
    """One model class: how its sampler calls it and what the reference needs to know."""

    def __init__(self, name, preset, make_model, calls, timesteps, make_call, batch_order, batched, *,
                 latent_shape=(1, 4, FRAMES, H, W), layout="BCFHW", kinds=("spatial", "temporal"), restart=None):
        self.name, self.preset, self.make_model, self.calls = name, preset, make_model, calls
        self.timesteps, self.make_call = timesteps, make_call
        self.batch_order, self.batched, self.restart = batch_order, batched, restart
        self.latent_shape, self.layout, self.kinds = latent_shape, layout, set(kinds)


def _text(g, *shape):
    return torch.randn(*shape, generator=g)


def opensora_call(g):
    """Open-Sora 1.2 rectified flow: model(z_in, t, **model_args), batch [cond, uncond], output channels 8
    (`.chunk(2, dim=1)[0]` is the prediction)."""
    y = torch.cat([_text(g, 1, 1, TEXT_LEN, TEXT_DIM), _text(g, 1, 1, TEXT_LEN, TEXT_DIM)])  # [cond, null]
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    x_mask = torch.tensor([[False, True, True]])  # the first frame is a conditioning frame

    def call(z, t):
        args = (torch.cat([z, z]), t.float().expand(2))
        kwargs = dict(y=y, mask=mask, x_mask=torch.cat([x_mask, x_mask]), fps=torch.tensor([24.0]),
                      height=torch.tensor([float(H)]), width=torch.tensor([float(W)]))
        return args, kwargs, dict(x=args[0], timestep=args[1], **kwargs)

    return call


def opensora_timesteps(n=30, shift=3.0):
    t = torch.tensor([(1.0 - i / n) for i in range(n)])
    return (shift * t / (1 + (shift - 1) * t)) * 1000  # the first is exactly 1000


def latte_call(g, four_dims=False):
    """Latte / Open-Sora-Plan: transformer(latent_model_input, encoder_hidden_states=..., timestep=...,
    added_cond_kwargs=..., enable_temporal_attentions=True, return_dict=False)[0], batch [uncond, cond]."""
    shape = (1, 1, TEXT_LEN, TEXT_DIM) if four_dims else (1, TEXT_LEN, TEXT_DIM)
    ehs = torch.cat([_text(g, *shape), _text(g, *shape)])

    def call(z, t):
        args = (torch.cat([z, z]),)
        kwargs = dict(encoder_hidden_states=ehs, timestep=t.long().expand(2),
                      added_cond_kwargs={"resolution": None, "aspect_ratio": None}, enable_temporal_attentions=True,
                      return_dict=False)
        return args, kwargs, dict(hidden_states=args[0], **kwargs)

    return call


def sat_call(g):
    """SAT CogVideoX: diffusion_model(x, timesteps=t, context=c, y=None) with x [B, T, C, H, W], batch
    [uncond, cond]."""
    context = torch.cat([_text(g, 1, TEXT_LEN, TEXT_DIM), _text(g, 1, TEXT_LEN, TEXT_DIM)])

    def call(z, t):
        args = (torch.cat([z, z]),)
        kwargs = dict(timesteps=t.long().expand(2), context=context, y=None)
        return args, kwargs, dict(x=args[0], **kwargs)

    return call


def pndm_timesteps():
    from diffusers import PNDMScheduler

    s = PNDMScheduler()
    s.set_timesteps(150)
    return s.timesteps.clone()  # 159 calls for 150 steps


def linear_timesteps(n):
    return torch.linspace(999, 0, n).round()


def diffusers_latte_call(g):
    """diffusers LattePipeline: transformer(latent_model_input, encoder_hidden_states=..., timestep=...,
    enable_temporal_attentions=..., return_dict=False)[0]."""
    ehs = _text(g, 2, 5, 16)

    def call(z, t):
        args = (torch.cat([z, z]),)
        kwargs = dict(encoder_hidden_states=ehs, timestep=t.long().expand(2), enable_temporal_attentions=True,
                      return_dict=False)
        return args, kwargs, dict(hidden_states=args[0], **kwargs)

    return call


def diffusers_cogvideox_call(g):
    """diffusers CogVideoXPipeline: transformer(hidden_states=..., encoder_hidden_states=..., timestep=...,
    return_dict=False)[0]."""
    ehs = _text(g, 2, 4, 16)

    def call(z, t):
        kwargs = dict(hidden_states=torch.cat([z, z]), encoder_hidden_states=ehs, timestep=t.long().expand(2),
                      return_dict=False)
        return (), kwargs, kwargs

    return call


SEEDS = {
    "opensora": Seed("opensora", "opensora-1.2", STDiT3, 30, opensora_timesteps, opensora_call,
                     ("cond", "uncond"), ("x", "timestep", "y", "x_mask"),
                     restart=lambda inp: float(inp["timestep"][0]) == 1000),
    "latte": Seed("latte", "latte", LatteT2V, 50, lambda: linear_timesteps(50), latte_call,
                  ("uncond", "cond"), ("hidden_states", "timestep", "encoder_hidden_states")),
    "opensora-plan": Seed("opensora-plan", "opensora-plan-1.1", OpenSoraPlanLatteT2V, 159, pndm_timesteps,
                          lambda g: latte_call(g, four_dims=True), ("uncond", "cond"),
                          ("hidden_states", "timestep", "encoder_hidden_states")),
    "sat-cogvideox": Seed("sat-cogvideox", "cogvideox-2b", DiffusionTransformer, 50, lambda: linear_timesteps(50),
                          sat_call, ("uncond", "cond"), ("x", "timesteps", "context"),
                          latent_shape=(1, FRAMES, 4, H, W), layout="BFCHW", kinds=("spatial",)),
    # issue item 2: the diffusers ports keep their presets' schedules
    "diffusers-latte": Seed("diffusers-latte", "latte", tiny_latte, 50, lambda: linear_timesteps(50),
                            diffusers_latte_call, ("uncond", "cond"),
                            ("hidden_states", "timestep", "encoder_hidden_states"),
                            latent_shape=(1, 4, LATTE_FRAMES, LATTE_HW, LATTE_HW)),
    "diffusers-cogvideox": Seed("diffusers-cogvideox", "cogvideox-2b", tiny_cogvideox, 50,
                                lambda: linear_timesteps(50), diffusers_cogvideox_call, ("uncond", "cond"),
                                ("hidden_states", "timestep", "encoder_hidden_states"),
                                latent_shape=(1, COG_FRAMES, 4, COG_H, COG_W), layout="BFCHW", kinds=("spatial",)),
}


def _sample(out):
    return out if torch.is_tensor(out) else out[0]


def record_computes(model, names):
    """Wraps the named modules' forwards (before fk.apply patches them): log[-1][name] = "compute" whenever the
    module really runs, so a name missing from a call's entry was served from the cache."""
    log: list[dict] = []
    mods = dict(model.named_modules())
    for n in names:
        orig = mods[n].forward

        def forward(*a, _orig=orig, _n=n, **k):
            log[-1][_n] = "compute"
            return _orig(*a, **k)

        mods[n].forward = forward
    return log


def run(seed: Seed, model, videos=(None,)):
    """Samples with the patched model and the reference side by side (latents follow the reference), one video
    per item of `videos` (its number of calls, None: all). Returns per call: (reference output, our output, our log
    entry, reference log entry, our plan, the call count c)."""
    ours, ref_model = copy.deepcopy(model), copy.deepcopy(model)
    names = [n for n, _, _ in for_model(ours).attention_modules(ours)]
    log = record_computes(ours, names)
    handle = fk.apply(ours, seed.preset)
    ref = ReferenceFasterCache(ref_model, seed.preset, handle.modules, batch_order=seed.batch_order,
                               batched=seed.batched, restart=seed.restart)
    g = torch.Generator().manual_seed(0)
    call = seed.make_call(g)
    rows = []
    for length in videos:
        z = torch.randn(*seed.latent_shape, generator=g)
        for i, t in enumerate(seed.timesteps()[:length]):
            args, kwargs, ref_kwargs = call(z, t)
            log.append({})
            with torch.no_grad():
                a = _sample(ref(**ref_kwargs))
                b = _sample(ours(*args, **kwargs))
            entry = {n: log[-1].get(n, "reuse") for n in names}
            rows.append((a, b, entry, {n: ref.log[-1][n] for n in names}, handle.fastercache.plan, i + 1))
            guided = _guide(seed, a)
            z = z - 0.02 * guided
    return handle, rows


def _guide(seed, out):
    ci = seed.batch_order.index("cond")
    halves = out.chunk(2)
    cond, uncond = halves[ci], halves[1 - ci]
    eps = uncond + 6.0 * (cond - uncond)
    return eps[:, :4] if seed.layout == "BCFHW" else eps  # learned sigma: the first 4 channels are the noise


def expected_pattern(preset, c, kinds_state, kind):
    """docs/algorithms.md §1-2 for call c: (full, reuse of `kind`). kinds_state tracks, per kind, whether the cache is
    filled and whether its newest entry came from a full call (the reference recomputes attention on a full call
    when its cache holds fewer samples than the call)."""
    spec = SPEC[preset]
    full = not spec["skip"](c)
    st = kinds_state.setdefault(kind, {"filled": False, "newest_full": False})
    reuse = spec["reuse"](c) and st["filled"] and not (spec["check_batch"] and full and not st["newest_full"])
    if not reuse:
        if c >= spec["fill"][kind]:
            st["filled"] = True
        st["newest_full"] = full
    return full, reuse


@pytest.fixture(scope="module", params=list(SEEDS))
def seed_run(request, one_thread):  # noqa: F811
    seed = SEEDS[request.param]
    model = seed.make_model()
    # Open-Sora: a cut-short video, one lone call at t = 1000 (the counter restarts there even without a jump up),
    # then a whole video
    handle, rows = run(seed, model, videos=(12, 1, None) if seed.name == "opensora" else (None,))
    return seed, handle, rows


def test_adapter_recognises_the_class(seed_run):
    seed, handle, _ = seed_run
    assert handle.config.name == seed.preset
    assert fk.apply(seed.make_model(), None).config.name == seed.preset  # the default preset follows the class
    kinds = {k for _, k in handle.modules}
    assert kinds == seed.kinds
    assert not any("cross" in n or "attn2" in n for n, _ in handle.modules)


def test_outputs_match_reference_every_call(seed_run):
    seed, _, rows = seed_run
    errs = [rel_err(b, a) for a, b, *_ in rows]
    bad = [(i + 1, e) for i, e in enumerate(errs) if not e <= TOL]
    assert not bad, f"{seed.name}: calls (number, relative error) above {TOL:g}: {bad[:5]}"
    assert sum(c == 1 for *_, c in rows) * seed.calls >= len(rows) >= seed.calls


def test_compute_reuse_pattern_is_the_spec_schedule(seed_run):
    seed, handle, rows = seed_run
    kinds = dict(handle.modules)
    states = {}
    for _, _, ours, ref, plan, c in rows:
        if c == 1:
            states = {}
        assert plan.c == c
        for kind in sorted(set(kinds.values())):
            full, reuse = expected_pattern(seed.preset, c, states, kind)
            assert plan.full == full, f"{seed.name} call {c}: full {plan.full}, SPEC {full}"
            for name in (n for n, k in kinds.items() if k == kind):
                assert (ours[name] == "reuse") == reuse, f"{seed.name} call {c} {name}: {ours[name]}, SPEC {reuse}"
        assert ours == ref, f"{seed.name} call {c}: ours {ours} reference {ref}"
    st = handle.stats()["calls_per_kind"]
    assert st.get("skip/reuse", 0) > 0 and st.get("full/compute", 0) > 0  # both kinds of call happened


def test_cfg_reconstruction_matches_reference_fft(seed_run):
    seed, _, rows = seed_run
    ci = seed.batch_order.index(SPEC[seed.preset]["computed"])
    last_full, a, b, checked = None, 1.0, 1.0, 0
    for _, out, _, _, plan, _ in rows:
        halves = out.chunk(2)
        if plan.full:
            last_full, a, b = (halves[1 - ci], halves[ci]), 1.0, 1.0
            continue
        lf, hf = SPEC[seed.preset]["mults"](plan.c)
        a, b = a * lf, b * hf
        d_lf, d_hf = spec_deltas(*last_full)
        want = spec_reconstruct(halves[ci], d_lf, d_hf, a, b)
        assert rel_err(halves[1 - ci], want) <= TOL, f"{seed.name} call {plan.c}"
        checked += 1
    assert checked > 0


# ---- Vchitect-2.0: attention at model level, CFG-Cache in the pipeline --------------------------------------------


def vchitect_inputs(g):
    return {branch: dict(encoder_hidden_states=_text(g, 1, TEXT_LEN, TEXT_DIM),
                         pooled_projections=_text(g, 1, TEXT_DIM)) for branch in ("uncond", "cond")}


@pytest.fixture(scope="module")
def vchitect_run(one_thread):  # noqa: F811
    model = VchitectXLTransformerModel()
    ours, ref_model = copy.deepcopy(model), copy.deepcopy(model)
    names = [n for n, _, _ in for_model(ours).attention_modules(ours)]
    log = record_computes(ours, names)
    handle = fk.apply(ours, "vchitect-2.0")
    cfg = fk.pipeline.CFGCache("vchitect-2.0")
    ref = ReferenceVchitect(ref_model, names)
    g = torch.Generator().manual_seed(0)
    emb = vchitect_inputs(g)
    z = torch.randn(1, FRAMES, 4, H, W, generator=g)
    rows, branches = [], []
    for t in torch.linspace(1000, 10, 100):
        kw = {b: dict(hidden_states=z, timestep=t.expand(1), **emb[b]) for b in emb}

        def call(branch, kw=kw):
            log.append({})
            branches.append(branch)
            return ours(**kw[branch], return_dict=False)[0]

        with torch.no_grad():
            ref_u, ref_c = ref.step(kw["uncond"], kw["cond"])
            u, c = cfg.step(call, timestep=t)
        rows.append((ref_u, ref_c, u, c))
        z = z - 0.01 * (ref_u + 7.5 * (ref_c - ref_u))[None]
    ours_log = [{n: e.get(n, "reuse") for n in names} for e in log]
    return handle, cfg, ref, rows, ours_log, branches, names


def test_vchitect_outputs_match_reference_every_step(vchitect_run):
    _, cfg, _, rows, *_ = vchitect_run
    for step, (ru, rc, u, c) in enumerate(rows, 1):
        assert rel_err(c, rc) <= TOL and rel_err(u, ru) <= TOL, f"step {step}"
    assert cfg.stats() == {"step_in_video": 100, "full": 100 - 56, "skip": 56}  # c > 30 and c % 5 != 0: 56 steps


def test_vchitect_pattern_per_call(vchitect_run):
    handle, _, ref, _, ours_log, branches, names = vchitect_run
    assert branches == [r["branch"] for r in ref.log]  # uncond then cond on full steps, cond alone on skip steps
    assert len(branches) == 100 + 44
    for entry, r in zip(ours_log, ref.log):
        c = r["step"]
        assert all(entry[n] == r[n] for n in names), f"step {c} {r['branch']}"
        assert all((entry[n] == "reuse") == (c > 30 and c % 2 == 0) for n in names), f"step {c}"
    # the quirk: a full step after a skip step reuses, in its uncond call, what the previous cond call computed
    i = next(i for i, r in enumerate(ref.log) if r["step"] == 40)
    assert [(r["step"], r["branch"]) for r in ref.log[i - 1:i + 2]] == [(39, "cond"), (40, "uncond"), (40, "cond")]
    assert ours_log[i - 1][names[0]] == "compute" and ours_log[i][names[0]] == "reuse"
    assert handle.stats()["attention"]["spatial"]["reused"] > 0


def test_vchitect_cfg_reconstruction_matches_reference_fft(vchitect_run):
    _, _, _, rows, *_ = vchitect_run
    last, a, b = None, 1.0, 1.0
    for step, (_, _, u, c) in enumerate(rows, 1):
        if not VCHITECT["skip"](step):
            last, a, b = (u, c), 1.0, 1.0
            continue
        lf, hf = VCHITECT["mults"](step)
        a, b = a * lf, b * hf
        want = spec_reconstruct(c, *spec_deltas(*last, divisor=200), a, b, divisor=200)
        assert rel_err(u, want) <= TOL, f"step {step}"


@pytest.mark.parametrize("computed", ["cond", "uncond"])
def test_cfg_cache_guided_equals_step_and_restarts_per_video(computed):
    """CFGCache.guided (one fused pass on skip steps that compute cond) gives uncond + s * (cond - uncond) of
    `step`; a timestep that jumps up starts a new video, which then repeats the first one exactly."""
    model = VchitectXLTransformerModel()
    g = torch.Generator().manual_seed(1)
    emb = vchitect_inputs(g)
    z = torch.randn(1, FRAMES, 4, H, W, generator=g)
    config = fk.FasterCacheConfig.preset("vchitect-2.0", computed_branch=computed)
    one, two = fk.pipeline.CFGCache(config), fk.pipeline.CFGCache(config)
    videos = [[], []]
    for video in videos:
        for t in torch.linspace(1000, 10, 40):
            call = lambda b, t=t: model(hidden_states=z, timestep=t.expand(1), return_dict=False, **emb[b])[0]
            with torch.no_grad():
                u, c = one.step(call, timestep=t)
                guided = two.guided(call, 7.5, timestep=t)
            assert rel_err(guided, u + 7.5 * (c - u)) <= TOL
            video.append(guided)
    assert two.stats() == one.stats() == {"step_in_video": 40, "full": 2 * 32, "skip": 2 * 8}
    assert all(torch.equal(a, b) for a, b in zip(*videos))


def test_cfg_cache_errors():
    with pytest.raises(ValueError, match="cfg=False"):
        fk.pipeline.CFGCache(fk.FasterCacheConfig(cfg=False))
    with pytest.raises(ValueError, match="order"):
        fk.pipeline.CFGCache(order=("cond", "cond"))
    with pytest.raises(TypeError, match="config"):
        fk.pipeline.CFGCache(3)
    cache = fk.pipeline.CFGCache(fk.FasterCacheConfig.preset("vchitect-2.0", cfg_skip_start=2))
    cache.c = 5  # as if resumed mid-video without any full step
    with pytest.raises(RuntimeError, match="no full step"):
        cache.step(lambda b: torch.zeros(2, 4, 4))


def test_vchitect_model_level_counts_steps_and_new_videos(vchitect_run):
    """Two calls with one timestep are one step; a timestep that jumps up starts a new video."""
    handle = fk.apply(VchitectXLTransformerModel(), "vchitect-2.0")
    model = handle.model
    g = torch.Generator().manual_seed(2)
    emb = vchitect_inputs(g)
    z = torch.randn(1, FRAMES, 4, H, W, generator=g)
    with torch.no_grad():
        for t in (1000.0, 1000.0, 990.0, 1000.0):
            model(hidden_states=z, timestep=torch.tensor([t]), return_dict=False, **emb["cond"])
            if t == 990.0:
                assert handle.schedule.step == 2
    assert handle.schedule.step == 1 and handle.stats()["videos"] == 2


def test_apply_on_a_pipeline_object():
    class Pipe:  # what a Vchitect pipeline holds: a `transformer` attribute
        transformer = VchitectXLTransformerModel()

    pipe = Pipe()
    handle = fk.apply(pipe)
    assert handle.model is pipe.transformer and handle.config.name == "vchitect-2.0"
    handle.remove()


# ---- which adapter, and the error for an unknown class -----------------------------------------------------------


def test_adapter_choice_by_class_and_structure():
    assert for_model(LatteT2V()).default_preset == "latte"
    assert for_model(OpenSoraPlanLatteT2V()).default_preset == "opensora-plan-1.1"
    assert for_model(STDiT3()).default_preset == "opensora-1.2"
    assert for_model(DiffusionTransformer()).default_preset == "cogvideox-2b"
    assert for_model(VchitectXLTransformerModel()).default_preset == "vchitect-2.0"
    assert for_model(tiny_latte(layers=1)).name == "latte"  # diffusers' classes keep their adapters
    assert for_model(tiny_cogvideox(layers=1)).name == "cogvideox"
    other = DiffusionTransformer()
    other.transformer.layers = torch.nn.ModuleList()  # the name alone is not enough
    assert for_model(other) is None


def test_unknown_class_error_lists_supported_classes_and_how_to_describe_it():
    class MyVideoDiT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.MultiheadAttention(8, 2)])

        def forward(self, x):
            return x

    with pytest.raises(ValueError) as err:
        fk.apply(MyVideoDiT(), "latte")
    msg = str(err.value)
    for needle in ("MyVideoDiT", "STDiT3", "LatteT2V", "VchitectXLTransformerModel", "DiffusionTransformer",
                   "CogVideoXTransformer3DModel", "LatteTransformer3DModel", "generic_adapter", "tensor_format",
                   "batch_order", "timestep_arg", "computed_branch", "layers.0"):
        assert needle in msg, needle
    # models whose module names match the generic default patterns keep working without an adapter
    class Renamed(STDiT3):
        pass

    m = Renamed()
    assert for_model(m) is None
    assert len(fk.apply(m, "opensora-1.2").modules) == 4


# ---- torch.compile: one graph per call kind on the seed classes too -----------------------------------------------


def _compiled_pair(model, preset):
    import torch._dynamo.testing

    torch._dynamo.reset()
    eager = copy.deepcopy(model)
    handle = fk.apply(model, preset)
    fk.apply(eager, preset)
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    return handle, cnt, torch.compile(model, backend=cnt, fullgraph=True), eager


def test_opensora_compiles_one_graph_per_call_kind():
    """STDiT3 called positionally, all four call kinds (with the broadcast quirk on full/reuse calls): fullgraph,
    one graph per kind, none new in a second video, same outputs as eager."""
    from torch._dynamo.utils import counters

    counters.clear()
    seed = SEEDS["opensora"]
    handle, cnt, compiled, eager = _compiled_pair(STDiT3(), "opensora-1.2")
    call = seed.make_call(torch.Generator().manual_seed(0))
    z = torch.randn(*seed.latent_shape)
    frames = None
    for video in range(2):
        for t in seed.timesteps():
            args, kwargs, _ = call(z, t)
            with torch.no_grad():
                a, b = compiled(*args, **kwargs), eager(*args, **kwargs)
            assert rel_err(a, b) <= 1e-6
            z = z - 0.02 * _guide(seed, b)
        frames = frames or cnt.frame_count
    kinds = handle.stats()["calls_per_kind"]
    assert frames == cnt.frame_count == len(kinds) == 4 and dict(counters["graph_break"]) == {}
    assert handle.stats()["videos"] == 2
    torch._dynamo.reset()


def test_vchitect_compiles_one_graph_per_call_kind():
    handle, cnt, compiled, eager = _compiled_pair(VchitectXLTransformerModel(), "vchitect-2.0")
    caches = fk.pipeline.CFGCache(), fk.pipeline.CFGCache()
    g = torch.Generator().manual_seed(3)
    emb = vchitect_inputs(g)
    z = torch.randn(1, FRAMES, 4, H, W, generator=g)
    for t in torch.linspace(1000, 10, 100):
        outs = []
        for m, cache in zip((compiled, eager), caches):
            def call(b, m=m, t=t, z=z):
                return m(hidden_states=z, timestep=t.expand(1), return_dict=False, **emb[b])[0]

            with torch.no_grad():
                outs.append(cache.guided(call, 7.5, timestep=t))
        assert rel_err(outs[0], outs[1]) <= 1e-6
        z = z - 0.01 * outs[1][None]
    assert cnt.frame_count == len(handle.stats()["calls_per_kind"]) == 2  # compute and reuse
    torch._dynamo.reset()


@pytest.mark.parametrize("name", [n for n in SEEDS if not n.startswith("diffusers")])
def test_compiled_seed_class_matches_eager_and_breaks_only_in_the_model(name):
    """torch.compile (no fullgraph: the seed forwards' own host reads break their graphs) on each seed class over
    two whole videos: every call equals the eager patched model (which equals the docs/algorithms.md reference above),
    no
    graph is added in the second video, and no graph break happens in this package's code."""
    import torch._dynamo.testing
    from torch._dynamo.utils import graph_break_reasons

    seed = SEEDS[name]
    torch._dynamo.reset()
    graph_break_reasons.clear()
    model = seed.make_model()
    eager = copy.deepcopy(model)
    handle = fk.apply(model, seed.preset)
    fk.apply(eager, seed.preset)
    cnt = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=cnt)
    call = seed.make_call(torch.Generator().manual_seed(0))
    frames = []
    for _ in range(2):
        z = torch.randn(*seed.latent_shape)
        for t in seed.timesteps():
            args, kwargs, _ = call(z, t)
            with torch.no_grad():
                a, b = _sample(compiled(*args, **kwargs)), _sample(eager(*args, **kwargs))
            assert rel_err(a, b) <= 1e-6
            z = z - 0.02 * _guide(seed, b)
        frames.append(cnt.frame_count)
    assert frames[0] == frames[1] and handle.stats()["videos"] == 2
    # where each break happened: the innermost frame of its user stack (outer frames include our forwards)
    where = [r.user_stack[-1].filename for r in graph_break_reasons if getattr(r, "user_stack", None)]
    assert where and all("seed_models.py" in w for w in where), where
    torch._dynamo.reset()


@pytest.mark.parametrize("name", list(SEEDS))
def test_buffers_come_from_the_first_real_call(name):
    """No fake run of user code: the first call of new shapes is the real call itself, observed (every module runs
    once, never on a FakeTensor, no extra model call), and a model's own memo caches keep real tensors (the
    Open-Sora-Plan stand-in memoises its RoPE positions, as the real class's PositionGetter3D does)."""
    from torch._subclasses.fake_tensor import FakeTensor

    seed = SEEDS[name]
    model = seed.make_model()
    seen = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_pre_hook(lambda m, a, kw: seen.append(
        any(isinstance(v, FakeTensor) for v in (*a, *kw.values()))), with_kwargs=True) for m in leaves]
    plain = []
    args, kwargs, _ = seed.make_call(torch.Generator().manual_seed(0))(torch.randn(*seed.latent_shape),
                                                                       seed.timesteps()[0])
    with torch.no_grad():
        model(*args, **kwargs)
        plain = len(seen)
        handle = fk.apply(model, seed.preset)
        model(*args, **kwargs)
        model(*args, **kwargs)
    for h in hooks:
        h.remove()
    assert plain > 0 and len(seen) == 3 * plain and not any(seen)  # no extra call, nothing fake
    assert handle.stats()["observed_calls"] == 1
    for m in model.modules():
        getter = getattr(m, "position_getter", None)
        if getter is not None:
            assert getter.cache_positions and not any(isinstance(v, FakeTensor)
                                                      for v in getter.cache_positions.values())
    handle.remove()


def test_vchitect_my_forward_entry_point_is_bookkept():
    """Vchitect's reference pipeline calls `transformer.my_forward(..., counter=k)` directly: the engine wraps that
    entry point too, so attention reuse follows the same step schedule as calls through `__call__`."""
    a, b = VchitectXLTransformerModel(), VchitectXLTransformerModel()
    ha, hb = fk.apply(a, "vchitect-2.0"), fk.apply(b, "vchitect-2.0")
    g = torch.Generator().manual_seed(4)
    emb = vchitect_inputs(g)
    z = torch.randn(1, FRAMES, 4, H, W, generator=g)
    for k, t in enumerate(torch.linspace(1000, 10, 40)):
        for branch in ("uncond", "cond"):
            kw = dict(hidden_states=z, timestep=t.expand(1), return_dict=False, **emb[branch])
            with torch.no_grad():
                ya = a.my_forward(**kw, counter=k)[0]
                yb = b(**kw)[0]
            assert torch.equal(ya, yb), (k, branch)
    sa, sb = ha.stats(), hb.stats()
    assert sa["calls"] == sb["calls"] == 80 and sa["attention"] == sb["attention"]
    assert sa["attention"]["spatial"]["reused"] > 0
    ha.remove()
    assert "my_forward" not in a.__dict__  # restored
