"""AdaCache + MoReg (docs/algorithms.md §4): configuration, codebook validation and the published Open-Sora presets.
Its hooks on the engine: hooks.py."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .._common import METRICS, check_forecast_metric, check_forecast_order, check_guards

RESIDUALS = ("attention", "block")
METRIC_KINDS = ("auto", "spatial", "temporal")


def normalize_codebook(codebook) -> tuple:
    """((threshold, rate), ...) from a dict {threshold: rate} or pairs; validated: thresholds strictly ascending
    and finite, the last >= 1.0 (it covers every distance; larger ones use the last rate), rates positive ints."""
    owner = "AdaCacheConfig"
    if isinstance(codebook, Mapping):
        pairs = list(codebook.items())
    else:
        try:
            pairs = [tuple(p) for p in codebook]
        except TypeError:
            raise TypeError(f"{owner}: `codebook` must be a dict {{threshold: rate}} or (threshold, rate) pairs, "
                            f"got {type(codebook).__name__}") from None
    if not pairs:
        raise ValueError(f"{owner}: `codebook` is empty")
    out = []
    for p in pairs:
        if len(p) != 2:
            raise ValueError(f"{owner}: `codebook` entries must be (threshold, rate) pairs, got {p!r}")
        thr, rate = p
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr) or thr <= 0:
            raise ValueError(f"{owner}: codebook threshold {thr!r} must be a finite number > 0")
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ValueError(f"{owner}: codebook rate {rate!r} (threshold {thr}) must be an int >= 1")
        out.append((float(thr), int(rate)))
    thr = [t for t, _ in out]
    if any(b <= a for a, b in zip(thr, thr[1:])):
        raise ValueError(f"{owner}: codebook thresholds must be strictly ascending, got {thr}")
    if thr[-1] < 1.0:
        raise ValueError(f"{owner}: the last codebook threshold must be >= 1.0 so that it covers every distance, "
                         f"got {thr[-1]}")
    return tuple(out)


@dataclass(frozen=True)
class AdaCacheConfig:
    """AdaCache: all blocks compute or all reuse together; block i reuses `x + cache_p[i] + cache_qr[i]` (its
    attention residual and rest-of-block residual, one residual_sum pass). Compute calls come at
    `prev + rate`, and always at calls 1, N-1 and N (`num_calls` = N, calls per video: set it to the sampler's
    call count; a new video also starts after N calls, or when the timestep jumps up). On a compute call the
    metric `d = metric(p, p_prev) / rate_in` is taken on the `residual` ("attention": the gated self-attention
    residual p; "block": the whole block residual) of the blocks `metric_layers` (indices into the blocks of
    `metric_kind`; None: the middle one, index (L-1)//2, as layer 13 of Open-Sora's 28), averaged over them,
    times the MoReg factor; the codebook gives the next rate: the first whose threshold is strictly greater
    than d (the last rate beyond the last threshold). The first compute call of a video has no previous p: its
    rate is 1.

    MoReg (`moreg`): inside calls `moreg_window` (inclusive; None: 10..90 % of N), `m = (motion / moreg_scale) **
    moreg_power` with motion the normalised frame difference of p (frame stride `moreg_stride`), else m = 1;
    `g = moreg_gain * (m - m_prev) / rate_in`, factor `m + |g|`. `decision_dtype`: round d and the thresholds to
    this dtype before comparing (the reference runs compare in bf16); None compares in fp32.

    Guards (defaults keep the published schedule): the first `warmup` calls always compute, and after
    `max_consecutive_reuse` reused calls in a row the next one computes (None: no cap).

    `forecast_order` n (docs/algorithms.md section 11): 0 reuses `x + p + qr` of the last computed call (the
    published rule); 1 or 2 add instead the forecast at the current call of each block's residual (output minus
    input) from its last n + 1 computed values, the polynomial through them over the call index (the computed calls
    are spaced by the rates, so unevenly), one fused op per block and stream. Costs n + 1 more residuals per block.
    `forecast_metric` (with n > 0): the metric compares the computed call's residual with its forecast from the
    earlier computed calls (how far a reuse would have been off), not with the last computed residual; the
    codebook's thresholds then bound the forecast's error per call instead of the residual's change.
    """

    codebook: object = ((0.08, 6), (0.16, 5), (0.24, 4), (0.32, 3), (0.40, 2), (1.00, 1))
    num_calls: int = 30
    metric_layers: tuple | None = None
    metric_kind: str = "auto"
    residual: str = "attention"
    metric: str = "rel_l1"
    moreg: bool = True
    moreg_window: tuple | None = None
    moreg_scale: float = 0.385
    moreg_power: float = 8.0
    moreg_gain: float = 10.0
    moreg_stride: int = 1
    decision_dtype: torch.dtype | None = None
    warmup: int = 0
    max_consecutive_reuse: int | None = None
    forecast_order: int = 0
    forecast_metric: bool = False
    name: str = field(default="custom", compare=False)

    @staticmethod
    def hooks_class():
        from .hooks import AdaCacheHooks

        return AdaCacheHooks

    def __post_init__(self):
        owner = "AdaCacheConfig"
        check_guards(owner, self.warmup, self.max_consecutive_reuse)
        check_forecast_order(owner, self.forecast_order)
        check_forecast_metric(owner, self.forecast_metric, self.forecast_order)
        object.__setattr__(self, "codebook", normalize_codebook(self.codebook))
        n = self.num_calls
        if not isinstance(n, int) or isinstance(n, bool) or n < 3:
            raise ValueError(f"{owner}: `num_calls` (calls per video) must be an int >= 3, got {n!r}")
        if self.metric_layers is not None:
            layers = (self.metric_layers,) if isinstance(self.metric_layers, int) else tuple(self.metric_layers)
            if not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
                raise ValueError(f"{owner}: `metric_layers` must be None or a non-empty tuple of ints, got "
                                 f"{self.metric_layers!r}")
            object.__setattr__(self, "metric_layers", layers)
        if self.metric_kind not in METRIC_KINDS:
            raise ValueError(f"{owner}: `metric_kind` must be one of {METRIC_KINDS}, got {self.metric_kind!r}")
        if self.residual not in RESIDUALS:
            raise ValueError(f"{owner}: `residual` must be one of {RESIDUALS}, got {self.residual!r}")
        if self.metric not in METRICS:
            raise ValueError(f"{owner}: `metric` must be one of {METRICS}, got {self.metric!r}")
        w = self.moreg_window
        if w is not None and not (isinstance(w, tuple) and len(w) == 2 and all(isinstance(v, int) for v in w)
                                  and 1 <= w[0] <= w[1]):
            raise ValueError(f"{owner}: `moreg_window` must be None or (first, last) calls with 1 <= first <= last, "
                             f"got {w!r}")
        for f in ("moreg_scale", "moreg_power", "moreg_gain"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
                    f == "moreg_scale" and v <= 0):
                raise ValueError(f"{owner}: `{f}` must be a finite number{' > 0' if f == 'moreg_scale' else ''}, "
                                 f"got {v!r}")
        if not isinstance(self.moreg_stride, int) or self.moreg_stride < 1:
            raise ValueError(f"{owner}: `moreg_stride` must be an int >= 1, got {self.moreg_stride!r}")
        if self.decision_dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"{owner}: `decision_dtype` must be None, torch.float32, float16 or bfloat16, got "
                             f"{self.decision_dtype!r}")

    def window(self) -> tuple:
        if self.moreg_window is not None:
            return self.moreg_window
        n = self.num_calls
        return (max(1, math.ceil(0.1 * n)), max(1, math.floor(0.9 * n)))

    @classmethod
    def preset(cls, name: str, **overrides) -> AdaCacheConfig:
        key = name.lower()
        if key not in ADACACHE_PRESETS:
            raise ValueError(f"unknown AdaCache preset {name!r}; choose one of {', '.join(ADACACHE_PRESETS)}")
        return cls(**{**ADACACHE_PRESETS[key], "name": key, **overrides})

    def replace(self, **changes) -> AdaCacheConfig:
        return dataclasses.replace(self, **changes)


# docs/algorithms.md §4: the published Open-Sora codebooks; the reference compares in bf16.
ADACACHE_PRESETS: dict[str, dict] = {
    "opensora-100-fast": dict(codebook={0.03: 12, 0.05: 10, 0.07: 8, 0.09: 6, 0.11: 4, 1.00: 3}, num_calls=100,
                         moreg_window=(10, 90), decision_dtype=torch.bfloat16),
    "opensora-30-fast": dict(codebook={0.08: 6, 0.16: 5, 0.24: 4, 0.32: 3, 0.40: 2, 1.00: 1}, num_calls=30,
                             moreg_window=(4, 26), decision_dtype=torch.bfloat16),
    "opensora-30-slow": dict(codebook={0.08: 3, 0.16: 2, 0.24: 1, 0.32: 1, 0.40: 1, 1.00: 1}, num_calls=30,
                             moreg_window=(4, 26), decision_dtype=torch.bfloat16),
}
ADACACHE_PRESETS["opensora-100"] = ADACACHE_PRESETS["opensora-100-fast"]  # the only 100-call codebook published
