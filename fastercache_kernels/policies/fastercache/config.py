"""FasterCache (docs/algorithms.md §1-2): the configuration, the reference presets and the static call-kind schedule.

`c` is the 1-based count of transformer calls in the current video. Everything the patched forwards need to know
about call `c` is decided here, on the host, before the call: whether both CFG branches run (a *full* call) or
only the computed one (a *skip* call), and for each kind of attention module whether it computes or reuses. The
schedule depends on `c` alone, so it is a table computed once from the config (`FasterCacheSchedule.table`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

KINDS = ("spatial", "temporal")
BRANCHES = ("cond", "uncond")
FULL_CALL_RULES = ("recompute", "broadcast")
SKIP_CALL_ROWS = ("computed", "other")
_STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

Window = tuple  # (first, last): inclusive call counts, None = unbounded


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_finite(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _in_window(c: int, window: Window) -> bool:
    first, last = window
    return (first is None or c >= first) and (last is None or c <= last)


@dataclass(frozen=True)
class FasterCacheConfig:
    """What FasterCache reuses and when, keyed on the call count `c` (1-based, per video).

    Attention reuse (docs/algorithms.md §1): on call `c` a cached attention module reuses
    `F = newer + w * (newer - older)` (its last two computed outputs) when `c >= attention_reuse_start` and
    `c % attention_period != attention_compute_phase`; otherwise it computes. Its cache is filled first on call
    `attention_fill` (an int, or a dict per module kind "spatial"/"temporal"). On a full call whose newest cached
    output holds only the computed branch, `full_call_attention="recompute"` computes instead (Latte, Open-Sora-Plan,
    CogVideoX) and `"broadcast"` applies the computed branch's extrapolation to both halves (Open-Sora). On a skip
    call that reuses an entry written by a full call, `skip_call_rows="computed"` reads the computed branch's rows
    and `"other"` the other branch's, as the Latte and Open-Sora-Plan reference code does: it reads `cache[:n]`
    (n = the skip call's batch) of an [uncond, cond] entry, the uncond rows, for the cond computation.

    CFG-Cache (docs/algorithms.md §2): call `c` is a skip call (only `computed_branch` runs; the other is rebuilt from
    the
    residual split `R = other - computed` of the last full call) when `c >= cfg_skip_start` and
    `c % cfg_period != cfg_compute_phase`. Full calls with `c >= cfg_refresh_start` refresh the residual. On every
    skip call the low-frequency part is multiplied by `low_freq_weight` when `c` is in `low_freq_calls` (inclusive
    `(first, last)`, None = open) and the high-frequency part likewise; the factors compound until the next refresh.
    `radius_divisor` sets the low-pass radius `min(H, W) // radius_divisor`.

    `storage_dtype` (None: the model's dtype) is the dtype of every cache buffer. The defaults are the CogVideoX-2B
    reference schedule; `FasterCacheConfig.preset(name)` gives the others.
    """

    attention: bool = True
    attention_fill: int | Mapping[str, int] = 15
    attention_reuse_start: int = 18
    attention_period: int = 3
    attention_compute_phase: int = 0
    attention_weight: float | Callable[[int], float] = 0.3
    full_call_attention: str = "recompute"
    skip_call_rows: str = "computed"
    cfg: bool = True
    computed_branch: str = "uncond"
    cfg_skip_start: int = 18
    cfg_period: int = 5
    cfg_compute_phase: int = 0
    cfg_refresh_start: int = 16
    low_freq_weight: float = 1.1
    low_freq_calls: Window = (None, 40)
    high_freq_weight: float = 1.1
    high_freq_calls: Window = (30, None)
    radius_divisor: int = 5
    storage_dtype: torch.dtype | None = None
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        def need(cond: bool, what: str):
            if not cond:
                raise ValueError(f"FasterCacheConfig: {what}")

        for f in ("attention_reuse_start", "attention_period", "cfg_skip_start", "cfg_period", "cfg_refresh_start",
                  "radius_divisor"):
            v = getattr(self, f)
            need(_is_int(v) and v >= 1, f"`{f}` must be an int >= 1, got {v!r}")
        for f in ("attention_compute_phase", "cfg_compute_phase"):
            need(_is_int(getattr(self, f)), f"`{f}` must be an int, got {getattr(self, f)!r}")
        for f in ("attention", "cfg"):
            need(isinstance(getattr(self, f), bool), f"`{f}` must be True or False, got {getattr(self, f)!r}")
        # a NaN weight would pass every comparison below and turn the cached outputs into NaN at the first reuse
        for f in ("low_freq_weight", "high_freq_weight"):
            need(_is_finite(getattr(self, f)), f"`{f}` must be a finite number, got {getattr(self, f)!r}")
        need(callable(self.attention_weight) or _is_finite(self.attention_weight),
             f"`attention_weight` must be a finite number or a function of the call count, got "
             f"{self.attention_weight!r}")
        need(0 <= self.attention_compute_phase < self.attention_period,
             f"`attention_compute_phase` must be in [0, attention_period), got {self.attention_compute_phase}")
        need(0 <= self.cfg_compute_phase < self.cfg_period,
             f"`cfg_compute_phase` must be in [0, cfg_period), got {self.cfg_compute_phase}")
        fills = self.fill_calls()
        need(all(isinstance(v, int) and v >= 1 for v in fills.values()),
             f"`attention_fill` must be an int >= 1 or a dict {{kind: int >= 1}} over {KINDS}, got "
             f"{self.attention_fill!r}")
        need(self.computed_branch in BRANCHES,
             f"`computed_branch` must be one of {BRANCHES}, got {self.computed_branch!r}")
        need(self.full_call_attention in FULL_CALL_RULES,
             f"`full_call_attention` must be one of {FULL_CALL_RULES}, got {self.full_call_attention!r}")
        need(self.skip_call_rows in SKIP_CALL_ROWS,
             f"`skip_call_rows` must be one of {SKIP_CALL_ROWS}, got {self.skip_call_rows!r}")
        need(self.storage_dtype is None or self.storage_dtype in _STORAGE_DTYPES,
             f"`storage_dtype` must be None or one of {_STORAGE_DTYPES}, got {self.storage_dtype!r}")
        for f in ("low_freq_calls", "high_freq_calls"):
            w = getattr(self, f)
            need(isinstance(w, tuple) and len(w) == 2 and all(m is None or _is_int(m) for m in w),
                 f"`{f}` must be a (first, last) tuple of call counts (ints, or None for open), got {w!r}")
        # Refreshing the residual on more full calls than the reference changes nothing as long as the last full
        # call before every skip call refreshes; the runtime relies on it (one graph for every full call).
        need(not self.cfg or (self.cfg_skip_start >= 2 and self.cfg_refresh_start <= self.cfg_skip_start - 1),
             f"`cfg_refresh_start` ({self.cfg_refresh_start}) must be <= cfg_skip_start - 1 "
             f"({self.cfg_skip_start - 1}) and cfg_skip_start >= 2: a skip call needs a residual from a full call")

    def fill_calls(self) -> dict[str, int]:
        if isinstance(self.attention_fill, Mapping):
            unknown = set(self.attention_fill) - set(KINDS)
            if unknown:
                raise ValueError(f"FasterCacheConfig: `attention_fill` has unknown kinds {sorted(unknown)}; "
                                 f"use {KINDS}")
            return {k: self.attention_fill.get(k, 1) for k in KINDS}
        return {k: self.attention_fill for k in KINDS}

    def weight_at(self, c: int) -> float:
        w = self.attention_weight
        return float(w(c) if callable(w) else w)

    @classmethod
    def preset(cls, name: str, **overrides) -> FasterCacheConfig:
        """The reference schedule of one published model (docs/algorithms.md §1-2), with optional field overrides."""
        key = name.lower()
        if key not in PRESETS:
            raise ValueError(f"unknown FasterCache preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[key], "name": key, **overrides})

    def replace(self, **changes) -> FasterCacheConfig:
        return dataclasses.replace(self, **changes)


def _opensora_weight(c: int) -> float:
    return (c - 7) / 20 * 0.9  # the reference's own expression and order of operations


# docs/algorithms.md §1-2, one row each. Call windows are inclusive; "c > 7 and c even" is start 8, period 2, compute
# phase 1 (odd calls compute).
PRESETS: dict[str, dict] = {
    "cogvideox-2b": dict(
        attention_fill=15, attention_reuse_start=18, attention_period=3, attention_compute_phase=0,
        attention_weight=0.3, full_call_attention="recompute",
        computed_branch="uncond", cfg_skip_start=18, cfg_period=5, cfg_compute_phase=0, cfg_refresh_start=16,
        low_freq_weight=1.1, low_freq_calls=(None, 40), high_freq_weight=1.1, high_freq_calls=(30, None)),
    "latte": dict(
        attention_fill=13, attention_reuse_start=16, attention_period=2, attention_compute_phase=1,
        attention_weight=0.5, full_call_attention="recompute", skip_call_rows="other",
        computed_branch="cond", cfg_skip_start=18, cfg_period=5, cfg_compute_phase=0, cfg_refresh_start=16,
        low_freq_weight=1.1, low_freq_calls=(None, 44), high_freq_weight=1.1, high_freq_calls=(45, None)),
    "opensora-1.2": dict(
        attention_fill=5, attention_reuse_start=8, attention_period=2, attention_compute_phase=1,
        attention_weight=_opensora_weight, full_call_attention="broadcast",
        computed_branch="cond", cfg_skip_start=12, cfg_period=5, cfg_compute_phase=0, cfg_refresh_start=10,
        low_freq_weight=1.15, low_freq_calls=(None, 25), high_freq_weight=1.15, high_freq_calls=(20, None)),
    "opensora-plan-1.1": dict(
        attention_fill={"temporal": 40, "spatial": 42}, attention_reuse_start=45, attention_period=3,
        attention_compute_phase=0, attention_weight=0.3, full_call_attention="recompute", skip_call_rows="other",
        computed_branch="cond", cfg_skip_start=40, cfg_period=6, cfg_compute_phase=0, cfg_refresh_start=39,
        low_freq_weight=1.1, low_freq_calls=(None, 130), high_freq_weight=1.2, high_freq_calls=(131, None)),
    "vchitect-2.0": dict(
        attention_fill=1, attention_reuse_start=31, attention_period=2, attention_compute_phase=1,
        attention_weight=0.0, full_call_attention="recompute",
        computed_branch="cond", cfg_skip_start=31, cfg_period=5, cfg_compute_phase=0, cfg_refresh_start=1,
        low_freq_weight=1.05, low_freq_calls=(None, 79), high_freq_weight=1.1, high_freq_calls=(61, None),
        radius_divisor=200),
}


@dataclass(frozen=True)
class CallPlan:
    """What call `c` does. `reuse[kind]`: that kind of attention reuses its cache; `fill`: kinds whose cache is
    filled on this call (both slots take this call's output); `low_mult`/`high_mult`: the factors this skip call
    multiplies into the CFG residual weights (1.0 on full calls, which reset them)."""

    c: int
    full: bool
    reuse: Mapping[str, bool]
    fill: frozenset = frozenset()
    attn_weight: float = 0.0
    low_mult: float = 1.0
    high_mult: float = 1.0

    @property
    def kind(self) -> str:
        """The call kind: one compiled graph each ("full/compute", "full/reuse", "skip/compute", "skip/reuse";
        "reuse:spatial" when only one kind of attention reuses)."""
        reused = [k for k, r in self.reuse.items() if r]
        att = "compute" if not reused else ("reuse" if len(reused) == len(self.reuse) else "reuse:" + ",".join(reused))
        return f"{'full' if self.full else 'skip'}/{att}"


class FasterCacheSchedule:
    """The static call-kind table of a FasterCacheConfig (computed once, extended on demand)."""

    push_on_reuse = False  # the reference caches only outputs it really computed

    def __init__(self, config: FasterCacheConfig, kinds=KINDS):
        self.config = config
        self.kinds = tuple(kinds)
        self.cfg = config.cfg
        self.computed_branch = config.computed_branch
        self.skip_call_rows = config.skip_call_rows
        self.radius_divisor = config.radius_divisor
        self.storage_dtype = config.storage_dtype
        self._fills = config.fill_calls()
        self._table: list[CallPlan] = []
        self._kind_state = {k: {"filled": False, "newer_full": False} for k in self.kinds}
        self.needs_other_branch = self._scan_full_call_reuse()

    def _horizon(self) -> int:
        """A call count after which the table is periodic: past every threshold, the period is the lcm."""
        cfg = self.config
        marks = [cfg.attention_reuse_start, cfg.cfg_skip_start, cfg.cfg_refresh_start, *self._fills.values()]
        marks += [m for w in (cfg.low_freq_calls, cfg.high_freq_calls) for m in w if m is not None]
        return max(marks) + 3 * math.lcm(cfg.attention_period, cfg.cfg_period)

    def _scan_full_call_reuse(self) -> bool:
        """Whether some full call reuses attention: then the other CFG branch is cached too, on full calls."""
        return self.cfg and any(p.full and any(p.reuse.values()) for p in self.table(self._horizon()))

    def _next(self) -> CallPlan:
        cfg = self.config
        c = len(self._table) + 1
        full = not (cfg.cfg and c >= cfg.cfg_skip_start and c % cfg.cfg_period != cfg.cfg_compute_phase)
        want = (cfg.attention and c >= cfg.attention_reuse_start
                and c % cfg.attention_period != cfg.attention_compute_phase)
        reuse, fill = {}, set()
        for k in self.kinds:
            st = self._kind_state[k]
            r = want and st["filled"]
            if r and full and cfg.cfg and cfg.full_call_attention == "recompute" and not st["newer_full"]:
                r = False  # the reference recomputes when its newest cache holds fewer samples than the call
            reuse[k] = r
            if not r and cfg.attention:
                if not st["filled"] and c >= self._fills[k]:
                    st["filled"] = True
                    fill.add(k)
                st["newer_full"] = full
        low = cfg.low_freq_weight if (not full and _in_window(c, cfg.low_freq_calls)) else 1.0
        high = cfg.high_freq_weight if (not full and _in_window(c, cfg.high_freq_calls)) else 1.0
        return CallPlan(c, full, reuse, frozenset(fill), cfg.weight_at(c) if any(reuse.values()) else 0.0, low, high)

    def table(self, n: int) -> list[CallPlan]:
        """Plans for calls 1..n."""
        while len(self._table) < n:
            self._table.append(self._next())
        return self._table[:n]

    def plan(self, c: int, timestep: float | None = None) -> CallPlan:
        return self.table(c)[c - 1]

    def attention_weight(self, plan: CallPlan, module, kind: str) -> float:
        return plan.attn_weight

    def format_table(self, n: int) -> str:
        """One line per call: the call kind, the attention weight and the CFG multipliers."""
        rows = []
        for p in self.table(n):
            extra = []
            if any(p.reuse.values()):
                extra.append(f"w={p.attn_weight:g}")
            if p.fill:
                extra.append("fill " + ",".join(sorted(p.fill)))
            if not p.full and (p.low_mult != 1.0 or p.high_mult != 1.0):
                extra.append(f"LF x{p.low_mult:g} HF x{p.high_mult:g}")
            rows.append(f"{p.c:4d}  {p.kind:<16} {' '.join(extra)}")
        return "\n".join(rows)

# Guidance-distilled models (Flux, HunyuanVideo 1.0) make one call per step: no CFG-Cache, Latte's attention
# schedule (FasterCache published no setting for these models).
PRESETS["attention-only"] = {**PRESETS["latte"], "cfg": False}
