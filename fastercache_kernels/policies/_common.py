"""What every adaptive policy's config checks the same way, and the per-model preset lookup."""

from __future__ import annotations

import math

METRICS = ("l1", "rel_l1", "rel_l2", "cosine")


def check_num_calls(owner: str, n, minimum: int = 1) -> None:
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < minimum):
        raise ValueError(f"{owner}: `num_calls` must be None or an int >= {minimum}, got {n!r}")


def check_guards(owner: str, warmup, max_consecutive_reuse) -> None:
    """The safety guards every adaptive policy takes (diffusers' First-Block-Cache and cache-dit have them)."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"{owner}: `warmup` (calls that always compute) must be an int >= 0, got {warmup!r}")
    m = max_consecutive_reuse
    if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
        raise ValueError(f"{owner}: `max_consecutive_reuse` must be None (no cap) or an int >= 0, got {m!r}")


def check_forecast_order(owner: str, n) -> None:
    """Forecasting reuse (docs/algorithms.md section 11): 0 plain reuse, 1 linear, 2 quadratic over the step index."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 2:
        raise ValueError(f"{owner}: `forecast_order` must be 0 (plain reuse), 1 or 2 (forecast the reused residual "
                         f"from its last 2 or 3 computed values), got {n!r}")


def check_forecast_metric(owner: str, forecast_metric, forecast_order) -> None:
    """A decision rule that measures the forecast's error (docs/algorithms.md section 11): needs a forecast."""
    if not isinstance(forecast_metric, bool) or (forecast_metric and not forecast_order):
        raise ValueError(f"{owner}: `forecast_metric` must be a bool, and True only with forecast_order 1 or 2 "
                         f"(it measures the forecast's error), got {forecast_metric!r} with forecast_order "
                         f"{forecast_order!r}")


def check_threshold(owner: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{owner}: `threshold` must be a finite number >= 0, got {v!r}")


def _for_model(cls, model, field_name: str, overrides: dict):
    from ..adapters import for_model

    adapter = for_model(model)
    name = getattr(adapter, field_name, None) if adapter is not None else None
    return cls.preset(name, **overrides) if name else cls(**overrides)
