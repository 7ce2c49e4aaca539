"""The ways the demo samples each model: no cache, diffusers' own FasterCache hook, and our policies."""

from __future__ import annotations

from .run import Setting
from .sampling import current_timestep

TENSOR_FORMAT = {"latte": "BCFHW", "cogvideox": "BFCHW"}  # the layout of each model's output


def diffusers_config(family: str):
    """diffusers' FasterCacheConfig with its documented defaults for these models' call pattern."""
    from diffusers import FasterCacheConfig

    return FasterCacheConfig(
        spatial_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(-1, 681),
        current_timestep_callback=current_timestep,
        attention_weight_callback=lambda _: 0.5,
        low_frequency_weight_update_timestep_range=(99, 901),
        high_frequency_weight_update_timestep_range=(-1, 301),
        unconditional_batch_skip_range=5,
        unconditional_batch_timestep_skip_range=(-1, 641),
        alpha_low_frequency=1.1,
        alpha_high_frequency=1.1,
        tensor_format=TENSOR_FORMAT[family],
    )


class _DiffusersHook:
    def __init__(self, model, config):
        self.model = model
        model.enable_cache(config)

    def stats(self) -> dict:
        return {}

    def remove(self) -> None:
        self.model.disable_cache()


PRESET = {"latte": "latte", "cogvideox": "cogvideox-2b"}  # the published schedule for each family


def settings(family: str, steps: int = 50) -> list[Setting]:
    """Every setting (`quality`, `make demo-full`): no cache first, then the FasterCache variants and the adaptive
    policies. `steps`: the calls per sample, which the adaptive policies' schedules are laid out on."""
    import fastercache_kernels as fk

    return [
        Setting("no cache"),
        Setting(f"fk FasterCache preset {PRESET[family]}", lambda m: fk.apply(m, PRESET[family])),
        Setting("fk with diffusers' config", lambda m: fk.apply(m, diffusers_config(family))),
        Setting("diffusers' own FasterCache hook", lambda m: _DiffusersHook(m, diffusers_config(family))),
        *adaptive_settings(family, steps),
    ]


def adaptive_settings(family: str, steps: int = 50) -> list[Setting]:
    """The adaptive policies (block-level reuse, decisions on the device). Published TeaCache coefficients exist for
    CogVideoX-2B's timestep embedding and Open-Sora's modulated input (Latte's blocks are Open-Sora's kind)."""
    import fastercache_kernels as fk

    tea = TEACACHE[family]
    return [
        Setting(f"fk TeaCache preset {tea}", lambda m: fk.apply(m, fk.TeaCacheConfig.preset(tea, num_calls=steps))),
        Setting("fk First-Block-Cache 0.1", lambda m: fk.apply(m, fk.FirstBlockCacheConfig(threshold=0.1,
                                                                                            num_calls=steps))),
        Setting("fk AdaCache (30-call fast codebook)", lambda m: fk.apply(m, _adacache(steps))),
        *composed_settings(family, steps),
    ]


TEACACHE = {"cogvideox": "cogvideox-2b", "latte": "opensora"}


def _adacache(steps: int = 50):
    import fastercache_kernels as fk

    # motion regularisation from the 10% to the 90% point of the schedule: calls 5-45 of 50
    edge = steps // 10
    return fk.AdaCacheConfig.preset("opensora-30-fast", num_calls=steps, moreg_window=(edge, steps - edge))


def composed_settings(family: str, steps: int = 50) -> list[Setting]:
    """FasterCache's attention reuse and CFG-Cache composed with an adaptive block schedule (one fk.apply call):
    the adaptive policy runs on the computed half of CFG-skip calls, so the savings multiply."""
    import fastercache_kernels as fk

    return [
        Setting(f"fk FasterCache {PRESET[family]} + First-Block-Cache 0.1", lambda m: fk.apply(
            m, [PRESET[family], fk.FirstBlockCacheConfig(threshold=0.1, num_calls=steps)])),
        Setting(f"fk FasterCache {PRESET[family]} + AdaCache", lambda m: fk.apply(
            m, [PRESET[family], _adacache(steps)])),
    ]


# The demo's one cached setting per model: the best PSNR among the settings with a real speedup in the full
# table (docs/results.md, docs/demo.md says which figures).
RECOMMENDED = {"cogvideox": "fk with diffusers' config", "latte": "fk TeaCache preset opensora"}


def recommended(family: str, steps: int = 50) -> list[Setting]:
    """No cache and the family's recommended setting: what `python -m fastercache_kernels demo` samples."""
    if family not in RECOMMENDED:
        raise ValueError(f"unknown model family {family!r}; choose from {', '.join(RECOMMENDED)}")
    every = settings(family, steps)
    return [every[0], next(s for s in every if s.name == RECOMMENDED[family])]
