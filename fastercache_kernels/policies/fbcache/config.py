"""First-Block-Cache (docs/algorithms.md section 5): configuration. Its hooks on the engine: hooks.py."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .._common import (METRICS, _for_model, check_forecast_metric, check_forecast_order, check_guards,
                       check_num_calls, check_threshold)


@dataclass(frozen=True)
class FirstBlockCacheConfig:
    """First-Block-Cache: block 0 always runs; `diff = metric(r1, r1_ref)` on its residual `r1 = h1 - h0`
    (rel_l1: `mean|r1_ref - r1| / mean|r1_ref|`). Below `threshold` the other blocks reuse their residuals;
    otherwise they compute and `r1_ref` and the residuals are refreshed. The first call (and the last, with
    `num_calls`) always compute. Guards: the first `warmup` calls always compute, and after `max_consecutive_reuse`
    reused calls in a row the next one computes (None: no cap); the defaults keep the published rule.
    `forecast_order` 1 or 2: a reused call adds the residual forecast from the last 2 or 3 computed ones (over the
    step index, docs/algorithms.md section 11) instead of the last one; 0 (default) is plain reuse.
    `forecast_metric` (with forecast_order n > 0): `r1_ref` is the forecast of r1 at this call from r1 of the last
    n + 1 computed calls (the same polynomial over the step index), so the threshold bounds how far r1 strays from
    its forecast, not how far it moved since the last computed call; False (default) keeps the published rule."""

    threshold: float = 0.08
    metric: str = "rel_l1"
    num_calls: int | None = None
    warmup: int = 0
    max_consecutive_reuse: int | None = None
    forecast_order: int = 0
    forecast_metric: bool = False
    name: str = field(default="custom", compare=False)

    @staticmethod
    def hooks_class():
        from .hooks import FirstBlockCacheHooks

        return FirstBlockCacheHooks

    def __post_init__(self):
        owner = "FirstBlockCacheConfig"
        check_threshold(owner, self.threshold)
        check_guards(owner, self.warmup, self.max_consecutive_reuse)
        check_forecast_order(owner, self.forecast_order)
        check_forecast_metric(owner, self.forecast_metric, self.forecast_order)
        if self.metric not in METRICS:
            raise ValueError(f"{owner}: `metric` must be one of {METRICS}, got {self.metric!r}")
        check_num_calls(owner, self.num_calls, 2)

    @classmethod
    def preset(cls, name: str, **overrides) -> FirstBlockCacheConfig:
        key = name.lower()
        if key not in FBCACHE_PRESETS:
            raise ValueError(f"unknown First-Block-Cache preset {name!r}; choose one of {', '.join(FBCACHE_PRESETS)}")
        return cls(**{**FBCACHE_PRESETS[key], "name": key, **overrides})

    @classmethod
    def for_model(cls, model, **overrides) -> FirstBlockCacheConfig:
        """The preset of the model's class (its adapter's `fbcache_preset`), else the defaults."""
        return _for_model(cls, model, "fbcache_preset", overrides)

    def replace(self, **changes) -> FirstBlockCacheConfig:
        return dataclasses.replace(self, **changes)


# The thresholds the First-Block-Cache authors call the defaults for these models (ParaAttention at commit
# 4de137c5b96416489f06e43e19f2c14a772e28fd: doc/fastest_flux.md gives 0.08 for FLUX, doc/fastest_hunyuan_video.md
# 0.06 for HunyuanVideo; diffusers' ParaAttention guide repeats both), on the same rel_l1 first-block metric.
FBCACHE_PRESETS: dict[str, dict] = {
    "flux": dict(threshold=0.08),
    "hunyuanvideo": dict(threshold=0.06),
    # cache-dit's DBCacheConfig defaults (vipshop/cache-dit at f86744af, src/cache_dit/caching/cache_contexts/
    # cache_config.py): residual_diff_threshold 0.08, max_warmup_steps 8, no cap on continuous cached steps. Its
    # default decides on the first 8 blocks (Fn_compute_blocks); First-Block-Cache is its Fn = 1 case.
    "cache-dit": dict(threshold=0.08, warmup=8),
}
