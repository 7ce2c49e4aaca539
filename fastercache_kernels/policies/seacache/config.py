"""SeaCache (docs/algorithms.md section 14): configuration. Its hooks on the engine: hooks.py."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .._common import check_forecast_order, check_num_calls, check_threshold


def _nonneg_int(owner: str, name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{owner}: `{name}` must be an int >= 0, got {v!r}")


@dataclass(frozen=True)
class SeaCacheConfig:
    """SeaCache (Spectral-Evolution-Aware cache, arXiv 2602.18993; the rule as diffusers 0.42.1's hook runs it):
    before each call the noisy latents x_t (the model's sample input) pass a spectral filter, the per-frequency
    Wiener-like gain g(f) = s P(f) / (s^2 P(f) + sigma^2) with s = 1 - sigma and the clean-signal
    power prior P(f) = 1 / |f|^power_exp, taken per axis over frames, height and width and normalised to unit mean
    (the paper's Eq. 7); the relative L1 change of this SEA indicator since the previous call (per sample, averaged
    over the batch) is accumulated, and while the sum stays below `threshold` the call reuses the whole block
    stack's residual; a computed call restarts the sum. sigma is the flow-matching noise level of the call: the
    `cache_context`'s `sigma` (diffusers' Wan pipelines pass it), else the scheduler's `sigmas[step_index]` of the
    pipeline fk.apply was given, else timestep / 1000 (exact for the rectified-flow demo models, an approximation
    for DDPM/DDIM samplers such as CogVideoX's).

    Forced computes (defaults are diffusers' SeaCacheConfig's, 0.42.1): the first `retention_steps` steps of a
    video, the last `cache_end_steps` (known from the cache_context, the pipeline's scheduler or `num_calls`), and
    the step after `max_consecutive_cached` reused ones in a row (0: no cap); the first call always computes.
    `forecast_order` 1 (diffusers' `residual_order=1`, its default) extrapolates the reused residual linearly over
    the step index from the last two computed ones (docs/algorithms.md section 11), 0 reuses the last one, 2 is
    fk's quadratic. `power_exp`: the prior's exponent (3.0 for video, the paper's). `raw_vision_callback(module,
    args, kwargs) -> [C, ...] tensors` (optional, diffusers' signature): the latents to filter for a model whose
    sample input is not its first tensor argument; by default the first tensor argument is filtered with its
    channel dim found from the adapter's layout ("C"; the last dim otherwise). `num_calls`: calls per video
    (needed for `cache_end_steps` when no scheduler step count is known).
    """

    threshold: float = 0.25
    forecast_order: int = 1
    retention_steps: int = 1
    cache_end_steps: int = 1
    max_consecutive_cached: int = 2
    power_exp: float = 3.0
    raw_vision_callback: object = field(default=None, compare=False)
    num_calls: int | None = None
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        owner = "SeaCacheConfig"
        check_threshold(owner, self.threshold)
        check_forecast_order(owner, self.forecast_order)
        check_num_calls(owner, self.num_calls, 2)
        for name in ("retention_steps", "cache_end_steps", "max_consecutive_cached"):
            _nonneg_int(owner, name, getattr(self, name))
        p = self.power_exp
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
            raise ValueError(f"{owner}: `power_exp` (the clean-power prior's exponent, 3.0 for video) must be a "
                             f"finite number > 0, got {p!r}")
        if self.raw_vision_callback is not None and not callable(self.raw_vision_callback):
            raise TypeError(f"{owner}: `raw_vision_callback` must be None or callable(module, args, kwargs) -> list "
                            f"of [C, ...] latents, got {type(self.raw_vision_callback).__name__}")

    # the guards of the adaptive runtime (runtime/adaptive.py `_guards`) under diffusers' names
    @property
    def warmup(self) -> int:
        return self.retention_steps

    @property
    def max_consecutive_reuse(self) -> int | None:
        return self.max_consecutive_cached or None

    @staticmethod
    def hooks_class():
        from .hooks import SeaCacheHooks

        return SeaCacheHooks

    def replace(self, **changes) -> SeaCacheConfig:
        return dataclasses.replace(self, **changes)
