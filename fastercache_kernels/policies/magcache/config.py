"""MagCache (docs/algorithms.md section 12): configuration. Its hooks on the engine: hooks.py."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .._common import check_forecast_order, check_guards, check_num_calls, check_threshold


def nearest(ratios: tuple, steps: int) -> tuple:
    """`ratios` resampled to `steps` values by the nearest calibrated step (index round(i * (n - 1) / (steps - 1))),
    as diffusers' MagCache hook does when the step count differs from the calibration's (0.42: `nearest_interp`;
    Python's round, like torch.round, rounds halves to even)."""
    n = len(ratios)
    if steps == n:
        return tuple(ratios)
    if steps == 1:
        return (ratios[-1],)
    scale = (n - 1) / (steps - 1)
    return tuple(ratios[round(i * scale)] for i in range(steps))


@dataclass(frozen=True)
class MagCacheConfig:
    """MagCache (Ma et al., 2025, "MagCache: Fast Video Generation with Magnitude-Aware Cache", arXiv 2506.09045):
    the ratio of the stack residual's magnitude between consecutive steps, gamma_s = mean over tokens of
    ||r_s|| / ||r_(s-1)||, is nearly the same for every prompt of a model, so it is calibrated once (`mag_ratios`,
    one per step; fk.calibrate.fit_magcache) and the rule needs no metric from the call: from step
    `round(retention_ratio * num_inference_steps)` on, each step multiplies `acc_ratio` by gamma_s, counts a skipped
    step and adds |1 - acc_ratio| to `acc_err`; while `acc_err <= threshold` and at most `max_skip_steps` steps
    were counted the step reuses the last computed stack residual, else it computes and the three accumulators
    restart. Steps are counted per CFG branch (the calls of one state key), as diffusers' hook counts them.

    Defaults are diffusers' MagCacheConfig's (0.42.1): threshold 0.06, max_skip_steps 3 (K in the paper),
    retention_ratio 0.2, num_inference_steps 28. `mag_ratios` of another length are resampled to
    `num_inference_steps` by the nearest step (`nearest`). Unlike diffusers, no call is forced but the first (the
    last step may reuse, as in diffusers). `num_calls`, `warmup`, `max_consecutive_reuse`: fk's lifecycle and guards
    (docs/algorithms.md section 5). `forecast_order`: forecasting reuse (section 11); 0 is MagCache's own reuse.
    """

    mag_ratios: tuple = ()
    threshold: float = 0.06
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    num_inference_steps: int = 28
    num_calls: int | None = None
    warmup: int = 0
    max_consecutive_reuse: int | None = None
    forecast_order: int = 0
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        owner = "MagCacheConfig"
        check_threshold(owner, self.threshold)
        check_guards(owner, self.warmup, self.max_consecutive_reuse)
        check_forecast_order(owner, self.forecast_order)
        check_num_calls(owner, self.num_calls, 2)
        ratios = self.mag_ratios
        if hasattr(ratios, "tolist"):  # a tensor or array (diffusers' FLUX_MAG_RATIOS)
            ratios = ratios.tolist()
        ratios = tuple(ratios)
        if not ratios or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r)
                                 and r > 0 for r in ratios):
            raise ValueError(f"{owner}: `mag_ratios` must be a non-empty sequence of positive numbers, one per step "
                             "(the model's magnitude ratios: run fk.calibrate.fit_magcache or `python -m "
                             f"fastercache_kernels calibrate --policy magcache`), got {self.mag_ratios!r}")
        n = self.num_inference_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{owner}: `num_inference_steps` must be an int >= 1, got {n!r}")
        m = self.max_skip_steps
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ValueError(f"{owner}: `max_skip_steps` must be an int >= 0, got {m!r}")
        r = self.retention_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1:
            raise ValueError(f"{owner}: `retention_ratio` must be in [0, 1], got {r!r}")
        object.__setattr__(self, "mag_ratios", tuple(float(v) for v in ratios))

    @property
    def ratios(self) -> tuple:
        """`mag_ratios` at `num_inference_steps` values."""
        return nearest(self.mag_ratios, self.num_inference_steps)

    @property
    def retention_steps(self) -> int:
        """The first steps that always compute: int(retention_ratio * num_inference_steps + 0.5) (diffusers')."""
        return int(self.retention_ratio * self.num_inference_steps + 0.5)

    @staticmethod
    def hooks_class():
        from .hooks import MagCacheHooks

        return MagCacheHooks

    def replace(self, **changes) -> MagCacheConfig:
        return dataclasses.replace(self, **changes)
