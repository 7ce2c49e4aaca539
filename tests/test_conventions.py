"""diffusers' conventions (issue 22 item 3, issue 20): diffusers' FirstBlockCacheConfig as a drop-in with diffusers'
decisions and outputs, fk.remove / fk.is_applied without the handle, `is_cache_enabled` while patched and
`enable_cache` refused, UNets / autoencoders / text encoders refused at fk.apply, remove() twice, and
FasterCacheConfig's checks of its numbers."""

import copy
import inspect
import math
import pkgutil
import warnings

import pytest
import torch
from dit_models import clone, cog_inputs, one_thread, timesteps, tiny_cogvideox  # noqa: F401
from model_zoo import SPECS, Case

import fastercache_kernels as fk
from fastercache_kernels import conventions

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cog():
    return tiny_cogvideox(layers=4)


def _their_decisions(model, head):
    """diffusers' compute decision of each call, read from its First-Block-Cache state inside the call."""
    state = head._diffusers_hook.get_hook("fbc_leader_block_hook").state_manager
    seen = []
    model.register_forward_hook(lambda m, a, o: seen.append(bool(state.get_state().should_compute)))
    return seen


def _sample_cog(models, calls=20):
    """A batched CFG loop inside cache_context("cond_uncond") (CogVideoX's pipeline; diffusers' hook needs a
    context); the latents follow models[0]. Returns each model's output per call."""
    lat, extra = cog_inputs()
    x, outs = lat.clone(), []
    for t in timesteps(calls):
        row = []
        for m in models:
            with torch.no_grad(), m.cache_context("cond_uncond"):
                row.append(m(hidden_states=torch.cat([x, x]), timestep=t.expand(2), return_dict=False, **extra)[0])
        outs.append(row)
        u, c = row[0].chunk(2)
        x = x - 0.02 * (u + 6.0 * (c - u))
    return outs


@pytest.mark.parametrize("decide", ["host", "device"])
def test_diffusers_fbcache_config_batched_matches_diffusers_hook(cog, decide):
    # the tiny model's first-block change is 0.17-0.35 per call: 0.27 mixes computed and reused calls
    cfg = diffusers.FirstBlockCacheConfig(threshold=0.27)
    theirs, ours = clone(cog), clone(cog)
    theirs.enable_cache(cfg)
    seen = _their_decisions(theirs, theirs.transformer_blocks[0])
    handle = fk.apply(ours, cfg, decide=decide, record=True)
    outs = _sample_cog([theirs, ours])
    mine = [bool(h["pred"]) for h in handle.history]
    assert mine == seen and 0 < sum(seen) < len(seen), (mine, seen)
    errs = [float((b - a).abs().max() / a.abs().max()) for a, b in outs]
    assert max(errs) <= 1e-6, errs  # measured: 0 (host), within float32 rounding (device: torch.cond)


def test_diffusers_fbcache_config_per_branch_matches_diffusers_hook():
    """Wan's call pattern: cond and uncond calls inside cache_context with step_index and num_inference_steps.
    diffusers forces only the first call of each branch; fk's own First-Block-Cache also forces the last step."""
    case = Case(SPECS["wan"], calls=20)
    cfg = diffusers.FirstBlockCacheConfig(threshold=0.1)
    theirs, ours, native = (copy.deepcopy(case.model) for _ in range(3))
    theirs.enable_cache(cfg)
    seen = _their_decisions(theirs, theirs.blocks[0])
    handle = fk.apply(ours, cfg, record=True)
    own = fk.apply(native, fk.FirstBlockCacheConfig(threshold=0.1), record=True)
    ref, got, nat = case.run(theirs, True), case.run(ours, True), case.run(native, True)
    mine = [bool(h["pred"]) for h in handle.history]
    assert mine == seen and not seen[-1] and not seen[-2], seen  # the last step reused by both branches
    assert [bool(h["pred"]) for h in own.history][-2:] == [True, True]  # the oracle tells the two rules apart
    assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-6
    assert float((nat - ref).abs().max() / ref.abs().max()) > 1e-4


def test_diffusers_threshold_is_strict():
    """diffusers computes when the metric is above its threshold: fk's threshold is the next float32 up."""
    from fastercache_kernels.policies.diffusers_compat import translate

    for thr in (0.05, 0.1, 0.25, 0.0):
        ours = translate(diffusers.FirstBlockCacheConfig(threshold=thr)).threshold
        below = torch.nextafter(torch.tensor(ours, dtype=torch.float32), torch.tensor(-math.inf))
        assert ours > thr and float(below) <= thr and torch.tensor(ours, dtype=torch.float32).item() == ours


@pytest.mark.parametrize("name", ["PyramidAttentionBroadcastConfig"])
def test_diffusers_configs_without_an_fk_policy_are_refused_with_the_way_out(cog, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = getattr(diffusers, name)()
    with pytest.raises(TypeError, match="enable_cache"):
        fk.apply(clone(cog), config)


def test_diffusers_taylorseer_config_is_a_drop_in(cog):
    """diffusers' TaylorSeerCacheConfig runs as fk's TaylorSeer (parity with diffusers' hook:
    tests/test_policy_taylorseer.py); its default identifiers match no module of CogVideoX (whose attention modules
    are attn1, attn2), which diffusers ignores silently and fk refuses, naming the fix."""
    cfg = diffusers.TaylorSeerCacheConfig(cache_interval=3, max_order=2, use_lite_mode=True)
    with fk.apply(clone(cog), cfg) as handle:
        assert handle.stats()["policies"] == ["taylorseer"]
        assert handle.config.mode == "lite" and handle.config.max_order == 2 and handle.config.cache_interval == 3
    with pytest.raises(ValueError, match="modules="):
        fk.apply(clone(cog), diffusers.TaylorSeerCacheConfig())
    with pytest.raises(ValueError, match="skip_predict_identifiers"):
        fk.apply(clone(cog), diffusers.TaylorSeerCacheConfig(skip_predict_identifiers=["proj_out"]))


def test_diffusers_magcache_config_is_a_drop_in(cog):
    """diffusers' MagCacheConfig runs as fk's MagCache (parity with diffusers' hook: tests/test_policy_magcache.py);
    without ratios, or in calibration mode, it is refused with the way out."""
    with fk.apply(clone(cog), diffusers.MagCacheConfig(mag_ratios=[1.0] * 4, num_inference_steps=4)) as handle:
        assert handle.stats()["policies"] == ["magcache"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kw, why in (({}, "mag_ratios"), ({"calibrate": True}, "calibrate")):
            with pytest.raises(ValueError, match=why):
                fk.apply(clone(cog), diffusers.MagCacheConfig(num_inference_steps=4, **kw))


def test_diffusers_seacache_config_is_a_drop_in(cog):
    """diffusers' SeaCacheConfig runs as fk's SeaCache (no longer refused; parity with diffusers' hook:
    tests/test_policy_seacache.py)."""
    with fk.apply(clone(cog), diffusers.SeaCacheConfig(threshold=0.1)) as handle:
        assert handle.stats()["policies"] == ["seacache"]


# -- diffusers' CacheMixin while patched ---------------------------------------------------------------------------
def test_is_cache_enabled_while_patched_and_enable_cache_refused(cog):
    m = clone(cog)
    assert not m.is_cache_enabled
    handle = fk.apply(m, "cogvideox-2b")
    assert m.is_cache_enabled and fk.is_applied(m)
    with pytest.raises(ValueError, match=r"fastercache_kernels is applied.*fk\.remove\(model\)"):
        m.enable_cache(diffusers.FirstBlockCacheConfig(threshold=0.1))
    with m.cache_context("cond_uncond"):  # diffusers' own context manager still works
        pass
    handle.remove()
    assert not m.is_cache_enabled and not fk.is_applied(m)
    assert not {"_cache_config", "enable_cache", "disable_cache"} & set(m.__dict__)
    m.enable_cache(diffusers.FirstBlockCacheConfig(threshold=0.1))  # diffusers' own again
    with pytest.raises(RuntimeError, match="disable_cache"):
        fk.apply(m, "cogvideox-2b")
    m.disable_cache()


def test_disable_cache_removes_fks_patch(cog):
    m = clone(cog)
    handle = fk.apply(m, diffusers.FirstBlockCacheConfig(threshold=0.2))
    assert type(m._cache_config).__name__ == "FirstBlockCacheConfig"  # the config fk.apply was given
    m.disable_cache()
    assert not handle.active and not m.is_cache_enabled and "forward" not in m.transformer_blocks[1].__dict__


# -- fk.remove / fk.is_applied -------------------------------------------------------------------------------------
def test_remove_and_is_applied_without_the_handle(cog):
    m = clone(cog)
    assert fk.remove(m) is False and not fk.is_applied(m)
    handle = fk.apply(m, fk.FirstBlockCacheConfig(threshold=0.1))
    compiled = torch.compile(m)  # not compiled until called: the wrapper leads to the model
    assert fk.is_applied(compiled)
    assert fk.remove(compiled) is True and not handle.active and not fk.is_applied(m)
    assert fk.remove(m) is False
    with pytest.raises(TypeError, match="pipeline"):
        fk.is_applied("transformer")


class _Pipe:
    """A pipeline-like object (diffusers' pipelines expose `components`)."""

    def __init__(self, **mods):
        self.__dict__.update(mods)
        self.components = dict(mods)


def test_remove_and_is_applied_on_a_pipeline(cog):
    pipe = _Pipe(transformer=clone(cog), transformer_2=clone(cog))
    handle = fk.apply(pipe, fk.FirstBlockCacheConfig(threshold=0.1))
    assert fk.is_applied(pipe) and fk.is_applied(pipe.transformer_2)
    handle.handles["transformer"].remove()
    assert fk.is_applied(pipe)  # one transformer still patched
    assert fk.remove(pipe) is True and not fk.is_applied(pipe) and not handle.active


def test_remove_twice_is_a_no_op_and_stats_keep_the_final_figures(cog):
    m = clone(cog)
    handle = fk.apply(m, fk.FirstBlockCacheConfig(threshold=0.27))
    _sample_cog([m], calls=10)
    before = handle.stats()
    assert before["active"] and before["calls"] == 10 and before["cache_bytes"] > 0
    handle.remove()
    handle.remove()
    after = handle.stats()
    assert not after["active"] and {k: v for k, v in after.items() if k != "active"} == \
        {k: v for k, v in before.items() if k != "active"}


# -- models fk does not handle -------------------------------------------------------------------------------------
def _unet2d():
    return diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)


def _unet3d():
    return diffusers.UNet3DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)


def _unet_svd():
    return diffusers.UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 32), layers_per_block=1, sample_size=8, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=16,
        num_attention_heads=(2, 2), addition_time_embed_dim=4, projection_class_embeddings_input_dim=12)


def _vae():
    return diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4)


def _clip():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=8, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1))


def _t5():
    from fastercache_kernels.tiny import tiny_t5

    return tiny_t5(d_model=16)[1]


class LdmUNet(torch.nn.Module):
    """The original latent-diffusion UNet's structure (no diffusers class)."""

    def __init__(self):
        super().__init__()
        self.input_blocks = torch.nn.ModuleList([torch.nn.Conv2d(4, 4, 1)])
        self.middle_block = torch.nn.Conv2d(4, 4, 1)
        self.output_blocks = torch.nn.ModuleList([torch.nn.Conv2d(4, 4, 1)])


REFUSED = {"UNet2DConditionModel": (_unet2d, "a UNet"), "UNet3DConditionModel": (_unet3d, "a UNet"),
           "UNetSpatioTemporalConditionModel": (_unet_svd, "a UNet"), "LdmUNet": (LdmUNet, "a UNet"),
           "AutoencoderKL": (_vae, "an autoencoder"), "CLIPTextModel": (_clip, "a text or image encoder"),
           "T5EncoderModel": (_t5, "a text or image encoder")}


@pytest.mark.parametrize("name", list(REFUSED))
@pytest.mark.parametrize("config", ["latte", "fbcache"])
def test_non_transformers_are_refused_in_one_sentence(name, config):
    make, what = REFUSED[name]
    model = make()
    cfg = fk.FirstBlockCacheConfig() if config == "fbcache" else config
    with pytest.raises(TypeError) as err:
        fk.apply(model, cfg)
    msg = str(err.value)
    assert msg.startswith(f"fk.apply: {name} is {what}") and "not a diffusion transformer;" in msg
    assert "`transformer_blocks`" in msg
    assert msg.count(". ") == 0 and "\n" not in msg  # one sentence
    assert not fk.is_applied(model) and "forward" not in model.__dict__


def test_a_unet_pipeline_is_refused():
    pipe = _Pipe(unet=LdmUNet(), vae=torch.nn.Linear(1, 1))
    with pytest.raises(TypeError, match=r"holds a `unet` and no `transformer`.*diffusion transformers"):
        fk.apply(pipe, "latte")


def _diffusers_transformer_classes():
    import diffusers.models.transformers as pkg

    out = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        try:
            mod = __import__(f"{pkg.__name__}.{info.name}", fromlist=["_"])
        except Exception:  # noqa: BLE001, S112 - a module needing an optional dependency
            continue
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, torch.nn.Module) and cls.__module__ == mod.__name__ and hasattr(cls, "config_name"):
                out[cls.__name__] = cls
    return out


def test_no_diffusers_transformer_class_is_refused():
    classes = _diffusers_transformer_classes()
    assert len(classes) > 40  # diffusers 0.42 has ~90
    # the rule decides on the class first; an instance without __init__ run is enough to reach it
    refused = [n for n, cls in classes.items() if conventions.not_a_dit(cls.__new__(cls)) is not None]
    assert not refused


def test_the_supported_dits_are_not_refused():
    import seed_models

    from fastercache_kernels.demo import models as demo

    models = [spec.make() for spec in SPECS.values()] + [demo.build(f) for f in ("latte", "cogvideox")]
    models += [seed_models.STDiT3(), seed_models.VchitectXLTransformerModel()]
    assert all(conventions.not_a_dit(m) is None for m in models), [type(m).__name__ for m in models
                                                                  if conventions.not_a_dit(m)]


def test_an_explicit_adapter_is_not_second_guessed():
    model = LdmUNet()
    with pytest.raises(ValueError, match="no transformer block"):  # past the refusal, to the adapter's own check
        fk.apply(model, fk.FirstBlockCacheConfig(), adapter=fk.adapters.generic_adapter(blocks=(r"^nothing$",)))


# -- FasterCacheConfig's numbers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [
    ("attention_weight", math.nan), ("attention_weight", "0.3"), ("attention_weight", True),
    ("low_freq_weight", math.nan), ("high_freq_weight", math.inf), ("low_freq_weight", None),
    ("attention_compute_phase", 0.5), ("cfg_compute_phase", "0"), ("cfg", 1), ("low_freq_calls", (None, 4.5)),
    ("high_freq_calls", ("30", None)),
])
def test_fastercache_config_rejects_nan_and_non_numbers(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        fk.FasterCacheConfig(**{field: value})
