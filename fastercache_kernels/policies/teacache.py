"""TeaCache (docs/algorithms.md §5): configuration and the published presets. The runtime is in _adaptive.py."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

INDICATORS = ("auto", "timestep_embedding", "modulated_input", "block_input")
METRICS = ("l1", "rel_l1", "rel_l2", "cosine")

# docs/algorithms.md §5: rescaling polynomials, highest degree first.
OPENSORA_COEFFICIENTS = (2.17546007e02, -1.18329252e02, 2.68662585e01, -4.59364272e-02, 4.84426240e-02)
COGVIDEOX_2B_COEFFICIENTS = (-3.10658903e01, 2.54732368e01, -5.92380459e00, 1.75769064e00, -3.61568434e-03)


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


def check_threshold(owner: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{owner}: `threshold` must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class TeaCacheConfig:
    """TeaCache: every call measures `rel = mean|u - u_prev| / mean|u_prev|` on an indicator `u` (u_prev updated
    every call), accumulates `acc += max(poly(rel), 0)` (`coefficients`, highest degree first; clamping at 0 is this
project's deviation from the reference, whose polynomial can go negative, so that `threshold=0` computes every call)
and reuses the residual of
    the whole block stack while `acc < threshold`; otherwise it computes and sets `acc = 0`. The first call of a
    video, and the last one when `num_calls` is given, always compute.

    `indicator`: "timestep_embedding" (the first block's `temb` input: CogVideoX), "modulated_input" (the first
    block's modulated norm output, the input of its self-attention: Latte, Open-Sora), "block_input" (the first
    block's hidden-state input) or "auto" (the adapter's choice). `num_calls`: calls per video (optional; with it
    a video also ends after that many calls, without it a new video starts when the timestep jumps up).

    Guards (defaults leave the published rule unchanged): the first `warmup` calls of a video always compute, and
    after `max_consecutive_reuse` reused calls in a row the next one computes (None: no cap).
    """

    threshold: float = 0.1
    coefficients: tuple = COGVIDEOX_2B_COEFFICIENTS
    indicator: str = "auto"
    num_calls: int | None = None
    warmup: int = 0
    max_consecutive_reuse: int | None = None
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        owner = "TeaCacheConfig"
        check_threshold(owner, self.threshold)
        check_guards(owner, self.warmup, self.max_consecutive_reuse)
        co = tuple(self.coefficients)
        if not co or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
                             for c in co):
            raise ValueError(f"{owner}: `coefficients` must be a non-empty sequence of finite numbers (highest "
                             f"degree first), got {self.coefficients!r}")
        object.__setattr__(self, "coefficients", tuple(float(c) for c in co))
        if self.indicator not in INDICATORS:
            raise ValueError(f"{owner}: `indicator` must be one of {INDICATORS}, got {self.indicator!r}")
        check_num_calls(owner, self.num_calls, 2)

    @classmethod
    def preset(cls, name: str, **overrides) -> TeaCacheConfig:
        key = name.lower()
        if key not in TEACACHE_PRESETS:
            raise ValueError(f"unknown TeaCache preset {name!r}; choose one of {', '.join(TEACACHE_PRESETS)}")
        return cls(**{**TEACACHE_PRESETS[key], "name": key, **overrides})

    def replace(self, **changes) -> TeaCacheConfig:
        return dataclasses.replace(self, **changes)


# TeaCache's published operating points: threshold 0.1 (slow) and 0.2 (fast).
TEACACHE_PRESETS: dict[str, dict] = {
    "cogvideox-2b": dict(coefficients=COGVIDEOX_2B_COEFFICIENTS, indicator="timestep_embedding", threshold=0.1),
    "cogvideox-2b-fast": dict(coefficients=COGVIDEOX_2B_COEFFICIENTS, indicator="timestep_embedding", threshold=0.2),
    "opensora": dict(coefficients=OPENSORA_COEFFICIENTS, indicator="modulated_input", threshold=0.1),
    "opensora-fast": dict(coefficients=OPENSORA_COEFFICIENTS, indicator="modulated_input", threshold=0.2),
}
