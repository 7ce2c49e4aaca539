"""diffusers' FasterCacheConfig semantics (docs/algorithms.md section 6), run with the fused ops: a drop-in for
`model.enable_cache(config)`.

What diffusers does, reproduced here: a 0-based iteration counter `i`; the uncond branch is skipped when `i > 0`,
the timestep is inside `unconditional_batch_timestep_skip_range` (strict inequalities) and
`i % unconditional_batch_skip_range != 0`; attention of a kind is reused on skip calls (every call when the model
is guidance-distilled) when the timestep is inside that kind's range and not (`i > 0` and `i % skip_range == 0`);
caches hold only the cond half, every call pushes its attention output (computed or approximated) and the first
call fills both slots; on skip calls the residual weights are multiplied (compounding) by the low/high frequency
callbacks (default: alpha inside the update windows, else 1). Module selection follows diffusers' identifiers.
What differs: the residual is split once per full call (not an FFT pair per branch per call), the uncond output is
`cond + a*R_low + b*R_high` in one pass, buffers are allocated once, and no host decision happens in the forward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .fastercache import CallPlan
from .fbcache import FirstBlockCacheConfig

# diffusers' own defaults (hooks/faster_cache.py), used if its private names move.
_SPATIAL_IDS = ("^blocks.*attn", "^transformer_blocks.*attn", "^single_transformer_blocks.*attn")
_TEMPORAL_IDS = ("^temporal_transformer_blocks.*attn",)
_FORMATS = ("BCFHW", "BFCHW", "BCHW")


def is_diffusers_config(obj) -> bool:
    """True for diffusers' FasterCacheConfig (checked without importing diffusers)."""
    t = type(obj)
    return t.__name__ == "FasterCacheConfig" and t.__module__.split(".")[0] == "diffusers"


def _attention_classes() -> tuple:
    try:
        from diffusers.hooks._common import _ATTENTION_CLASSES

        return tuple(_ATTENTION_CLASSES)
    except ImportError:  # pragma: no cover - older or newer diffusers layouts
        from diffusers.models.attention import AttentionModuleMixin
        from diffusers.models.attention_processor import Attention

        return (Attention, AttentionModuleMixin)


def _block_identifiers() -> tuple:
    try:
        from diffusers.hooks.faster_cache import _TRANSFORMER_BLOCK_IDENTIFIERS

        return tuple(_TRANSFORMER_BLOCK_IDENTIFIERS)
    except ImportError:  # pragma: no cover
        return _SPATIAL_IDS + _TEMPORAL_IDS


def select_modules(model, config) -> list[tuple[str, object, str]]:
    """The attention modules diffusers' apply_faster_cache would hook, with their kind."""
    classes = _attention_classes()
    blocks = _block_identifiers()
    found = []
    for name, mod in model.named_modules():
        if not isinstance(mod, classes) or not any(re.search(p, name) for p in blocks):
            continue
        cross = getattr(mod, "is_cross_attention", False)
        if (any(re.search(p, name) for p in config.spatial_attention_block_identifiers)
                and config.spatial_attention_block_skip_range is not None and not cross):
            found.append((name, mod, "spatial"))
        elif (any(re.search(p, name) for p in config.temporal_attention_block_identifiers)
              and config.temporal_attention_block_skip_range is not None and not cross):
            found.append((name, mod, "temporal"))
    return found


def patterns(config) -> str:
    return (f"spatial {list(config.spatial_attention_block_identifiers)}, temporal "
            f"{list(config.temporal_attention_block_identifiers)} (among diffusers attention modules under "
            f"{list(_block_identifiers())})")


def check_format(config) -> str:
    if config.tensor_format not in _FORMATS:
        raise ValueError(f"`tensor_format` must be one of {list(_FORMATS)}, but got {config.tensor_format!r}")
    return config.tensor_format


class DiffusersSchedule:
    """Per-call plans with diffusers' semantics. Unlike the reference presets they depend on the timestep, so they
    are decided call by call (on the host, before the call)."""

    push_on_reuse = True
    needs_other_branch = False
    computed_branch = "cond"
    radius_divisor = 5

    def __init__(self, config, storage_dtype=None, kinds=("spatial", "temporal")):
        self.config = config
        self.cfg = not config.is_guidance_distilled
        self.storage_dtype = storage_dtype
        self.kinds = tuple(kinds)
        ranges = {
            "spatial": (config.spatial_attention_block_skip_range, config.spatial_attention_timestep_skip_range),
            "temporal": (config.temporal_attention_block_skip_range, config.temporal_attention_timestep_skip_range),
        }
        self._ranges = {k: ranges[k] for k in self.kinds}

    def plan(self, c: int, t: float | None) -> CallPlan:
        cfg = self.config
        if t is None:
            raise ValueError("fastercache: diffusers' FasterCacheConfig needs the current timestep: pass `timestep` "
                             "to the model or set `current_timestep_callback`")
        i = c - 1
        lo, hi = cfg.unconditional_batch_timestep_skip_range
        full = not (self.cfg and i > 0 and lo < t < hi and i % cfg.unconditional_batch_skip_range != 0)
        reuse = {}
        for kind, (skip_range, (klo, khi)) in self._ranges.items():
            compute = skip_range is None or i == 0 or not (klo < t < khi) or i % skip_range == 0
            reuse[kind] = not compute and (not full or not self.cfg)
        low = high = 1.0
        if not full:
            low = float(self._freq_weight(cfg.low_frequency_weight_callback,
                                          cfg.low_frequency_weight_update_timestep_range, cfg.alpha_low_frequency, t))
            high = float(self._freq_weight(cfg.high_frequency_weight_callback,
                                           cfg.high_frequency_weight_update_timestep_range, cfg.alpha_high_frequency,
                                           t))
        fill = frozenset(self.kinds) if i == 0 else frozenset()
        return CallPlan(c, full, reuse, fill, 0.0, low, high)

    def _freq_weight(self, callback, window, alpha, t):
        if callback is not None:
            return callback(self._model)
        return alpha if window[0] < t < window[1] else 1.0

    def attention_weight(self, plan: CallPlan, module, kind: str) -> float:
        cb = self.config.attention_weight_callback
        return 0.5 if cb is None else float(cb(module))

    _model = None  # set by fk.apply: diffusers passes the denoiser to the frequency weight callbacks


# diffusers' cache configs fk has no policy for (diffusers 0.42 hooks/): refused with the way out.
_NO_POLICY = {"PyramidAttentionBroadcastConfig": "Pyramid Attention Broadcast",
              "TextKVCacheConfig": "the text KV cache"}


def is_diffusers_cache_config(obj) -> bool:
    t = type(obj)
    return t.__module__.split(".")[0] == "diffusers" and t.__name__.endswith("Config")


@dataclass(frozen=True)
class DiffusersFirstBlockCacheConfig(FirstBlockCacheConfig):
    """diffusers' `FirstBlockCacheConfig(threshold)` as fk runs it: the rel_l1 metric of the first block's
    hidden-states residual (diffusers' absmean ratio), compute when it is *above* diffusers' threshold (`threshold`
    here is the smallest float32 above it, so that fk's `metric >= threshold` is diffusers' `metric > threshold`
    for every float32 metric), only the first call of a video forced, no warm-up and no cap. `source` is the
    diffusers config."""

    source: object = field(default=None, compare=False, repr=False)

    @staticmethod
    def hooks_class():
        from .fbcache.diffusers import DiffusersFirstBlockCacheHooks

        return DiffusersFirstBlockCacheHooks


def _float32_above(x: float) -> float:
    """The smallest float32 strictly above `x`."""
    t = np.float32(x)
    if float(t) <= x:
        t = np.nextafter(t, np.float32(np.inf))
    return float(t)


def translate(config):
    """diffusers' FirstBlockCacheConfig, MagCacheConfig and SeaCacheConfig -> their fk equivalents (diffusers'
    semantics); diffusers configs fk has no policy for raise; anything
    else (diffusers' FasterCacheConfig included, which fk.apply runs through DiffusersSchedule) is returned as is."""
    if not is_diffusers_cache_config(config):
        return config
    name = type(config).__name__
    if name == "FirstBlockCacheConfig":
        thr = config.threshold
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not np.isfinite(thr) or thr < 0:
            raise ValueError(f"fk.apply: diffusers' FirstBlockCacheConfig has threshold {thr!r}; fk runs finite "
                             "thresholds >= 0")
        return DiffusersFirstBlockCacheConfig(threshold=_float32_above(float(thr)), name="diffusers", source=config)
    if name == "MagCacheConfig":
        from .magcache import MagCacheConfig

        if getattr(config, "calibrate", False):
            raise ValueError("fk.apply: diffusers' MagCacheConfig(calibrate=True) measures magnitude ratios instead "
                             "of caching; fit them with fk.calibrate.fit_magcache (python -m fastercache_kernels "
                             "calibrate --policy magcache), or run the calibration with diffusers' own hook")
        ratios = config.mag_ratios
        if ratios is None:
            raise ValueError("fk.apply: diffusers' MagCacheConfig has no mag_ratios; give the model's ratios (e.g. "
                             "diffusers.hooks.mag_cache's FLUX_MAG_RATIOS) or fit them with "
                             "fk.calibrate.fit_magcache")
        return MagCacheConfig(mag_ratios=ratios, threshold=float(config.threshold),
                              max_skip_steps=int(config.max_skip_steps), retention_ratio=float(config.retention_ratio),
                              num_inference_steps=int(config.num_inference_steps), name="diffusers")
    if name == "TaylorSeerCacheConfig":
        return _taylorseer(config)
    if name == "SeaCacheConfig":
        from .seacache import SeaCacheConfig

        # the same fields under fk's names; diffusers' residual_order is fk's forecast_order (0 or 1)
        return SeaCacheConfig(threshold=float(config.threshold), forecast_order=int(config.residual_order),
                              retention_steps=int(config.retention_steps), cache_end_steps=int(config.cache_end_steps),
                              max_consecutive_cached=int(config.max_consecutive_cached),
                              power_exp=float(config.power_exp), raw_vision_callback=config.raw_vision_callback,
                              name="diffusers")
    if name in _NO_POLICY:
        raise TypeError(f"fk.apply: fastercache_kernels has no {_NO_POLICY[name]} policy, so diffusers' {name} is not "
                        "accepted here; run it with diffusers' own model.enable_cache(config), or give fk.apply "
                        "diffusers' FasterCacheConfig, FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig "
                        "or SeaCacheConfig, or an fk config")
    return config


def _taylorseer(config):
    """diffusers' TaylorSeerCacheConfig -> fk.TaylorSeerConfig: the same schedule and order; lite mode is fk's
    mode "lite", cache_identifiers become the forecast modules of mode "attention" (diffusers' default identifiers
    are kept: they match modules named "...attn" inside the blocks). Factors are fk's fp32 weights over the last
    outputs whatever taylor_factors_dtype says (diffusers' bf16 default rounds its factors: fk's forecast is then
    diffusers' fp32 one). skip_predict_identifiers (modules returning zeros) have no fk equivalent outside lite."""
    from .taylorseer import TaylorSeerConfig

    if config.skip_predict_identifiers and not config.use_lite_mode:
        raise ValueError("fk.apply: diffusers' TaylorSeerCacheConfig with skip_predict_identifiers (modules that "
                         "return zeros on predicted steps) has no fk equivalent; use use_lite_mode=True (fk skips the "
                         "blocks and forecasts proj_out) or name only cache_identifiers")
    common = dict(cache_interval=int(config.cache_interval),
                  disable_cache_before_step=int(config.disable_cache_before_step),
                  disable_cache_after_step=config.disable_cache_after_step, max_order=int(config.max_order),
                  name="diffusers")
    if config.use_lite_mode:
        return TaylorSeerConfig(mode="lite", **common)
    from diffusers.hooks.taylorseer_cache import _TRANSFORMER_BLOCK_IDENTIFIERS

    mods = tuple(config.cache_identifiers or _TRANSFORMER_BLOCK_IDENTIFIERS)
    return TaylorSeerConfig(mode="attention", modules=mods, **common)
