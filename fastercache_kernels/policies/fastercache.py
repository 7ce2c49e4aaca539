"""FasterCache (SPEC sections 1-2): the configuration, the reference presets and the static call-kind schedule.

`c` is the 1-based count of transformer calls in the current video. Everything the patched forwards need to know
about call `c` is decided here, on the host, before the call: whether both CFG branches run (a *full* call) or
only the computed one (a *skip* call), and for each kind of attention module whether it computes or reuses. The
schedule depends on `c` alone, so it is a table computed once from the config (`FasterCacheSchedule.table`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

KINDS = ("spatial", "temporal")
BRANCHES = ("cond", "uncond")
FULL_CALL_RULES = ("recompute", "broadcast")
_STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

Window = tuple  # (first, last): inclusive call counts, None = unbounded


def _in_window(c: int, window: Window) -> bool:
    first, last = window
    return (first is None or c >= first) and (last is None or c <= last)


@dataclass(frozen=True)
class FasterCacheConfig:
    """What FasterCache reuses and when, keyed on the call count `c` (1-based, per video).

    Attention reuse (SPEC section 1): on call `c` a cached attention module reuses
    `F = newer + w * (newer - older)` (its last two computed outputs) when `c >= attention_reuse_start` and
    `c % attention_period != attention_compute_phase`; otherwise it computes. Its cache is filled first on call
    `attention_fill` (an int, or a dict per module kind "spatial"/"temporal"). On a full call whose newest cached
    output holds only the computed branch, `full_call_attention="recompute"` computes instead (Latte, Open-Sora-Plan,
    CogVideoX) and `"broadcast"` applies the computed branch's extrapolation to both halves (Open-Sora).

    CFG-Cache (SPEC section 2): call `c` is a skip call (only `computed_branch` runs; the other is rebuilt from the
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
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"`{f}` must be an int >= 1, got {v!r}")
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
        need(self.storage_dtype is None or self.storage_dtype in _STORAGE_DTYPES,
             f"`storage_dtype` must be None or one of {_STORAGE_DTYPES}, got {self.storage_dtype!r}")
        for f in ("low_freq_calls", "high_freq_calls"):
            w = getattr(self, f)
            need(isinstance(w, tuple) and len(w) == 2, f"`{f}` must be a (first, last) tuple, got {w!r}")
        need(callable(self.attention_weight) or isinstance(self.attention_weight, (int, float)),
             f"`attention_weight` must be a float or a function of the call count, got {self.attention_weight!r}")
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
        """The reference schedule of one published model (SPEC sections 1-2), with optional field overrides."""
        key = name.lower()
        if key not in PRESETS:
            raise ValueError(f"unknown FasterCache preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[key], "name": key, **overrides})

    def replace(self, **changes) -> FasterCacheConfig:
        return dataclasses.replace(self, **changes)


def _opensora_weight(c: int) -> float:
    return (c - 7) / 20 * 0.9  # the reference's own expression and order of operations


# SPEC sections 1-2, one row each. Call windows are inclusive; "c > 7 and c even" is start 8, period 2, compute
# phase 1 (odd calls compute).
PRESETS: dict[str, dict] = {
    "cogvideox-2b": dict(
        attention_fill=15, attention_reuse_start=18, attention_period=3, attention_compute_phase=0,
        attention_weight=0.3, full_call_attention="recompute",
        computed_branch="uncond", cfg_skip_start=18, cfg_period=5, cfg_compute_phase=0, cfg_refresh_start=16,
        low_freq_weight=1.1, low_freq_calls=(None, 40), high_freq_weight=1.1, high_freq_calls=(30, None)),
    "latte": dict(
        attention_fill=13, attention_reuse_start=16, attention_period=2, attention_compute_phase=1,
        attention_weight=0.5, full_call_attention="recompute",
        computed_branch="cond", cfg_skip_start=18, cfg_period=5, cfg_compute_phase=0, cfg_refresh_start=16,
        low_freq_weight=1.1, low_freq_calls=(None, 44), high_freq_weight=1.1, high_freq_calls=(45, None)),
    "opensora-1.2": dict(
        attention_fill=5, attention_reuse_start=8, attention_period=2, attention_compute_phase=1,
        attention_weight=_opensora_weight, full_call_attention="broadcast",
        computed_branch="cond", cfg_skip_start=12, cfg_period=5, cfg_compute_phase=0, cfg_refresh_start=10,
        low_freq_weight=1.15, low_freq_calls=(None, 25), high_freq_weight=1.15, high_freq_calls=(20, None)),
    "opensora-plan-1.1": dict(
        attention_fill={"temporal": 40, "spatial": 42}, attention_reuse_start=45, attention_period=3,
        attention_compute_phase=0, attention_weight=0.3, full_call_attention="recompute",
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


# ----------------------------------------------------------------------------------------------------------------
# Runtime state. Everything below runs on the host, outside compiled graphs (in the model's forward pre- and post-
# hooks); the patched forwards only read the flags and tensors it sets.


class AttentionCache:
    """The cache of one attention module: two slots `[older, newer]` of its outputs (one tensor per output of the
    module), holding only the computed CFG branch, plus the other branch's slots when the schedule reuses attention
    on full calls. Slots are allocated once and rotated by swapping references."""

    def __init__(self, name: str, module, kind: str, weight: torch.Tensor):
        self.name, self.module, self.kind = name, module, kind
        self.weight = weight  # 0-d fp32, updated in place
        self._weight_value = None
        self.active = False  # False until the module has been seen in a probe (allocated)
        self.tuple_out = False
        self.out_dtypes: list[torch.dtype] = []
        self.comp: list[list[torch.Tensor]] = [[], []]
        self.other: list[list[torch.Tensor]] | None = None
        self.newer = 0
        self.has_other = [False, False]
        # Read inside the patched forward on each call (set by FasterCacheState.begin_call).
        self.reuse = False
        self.src_newer: list[torch.Tensor] = []
        self.src_older: list[torch.Tensor] = []
        self.dst: list[torch.Tensor] = []
        self.o_newer: list[torch.Tensor] = []
        self.o_older: list[torch.Tensor] = []
        self.o_dst: list[torch.Tensor] = []
        self.computed = 0
        self.reused = 0

    def set_weight(self, value: float) -> None:
        if value != self._weight_value:
            self.weight.fill_(value)
            self._weight_value = value

    def nbytes(self) -> int:
        slots = [t for s in self.comp for t in s]
        if self.other is not None:
            slots += [t for s in self.other for t in s]
        return sum(t.numel() * t.element_size() for t in slots)


class FasterCacheState:
    """Call counter, new-video detection, the current call's plan, the cache buffers and the 0-d per-step scalars.

    `begin_call` (before each model call) decides the call and points every patched module at the slots it reads
    and writes; `end_call` (after it) completes fills. Patched forwards read `full`, `split`, `probing`, the CFG
    buffers `low`/`high`, the scalars `a`/`b`, and each AttentionCache's flags and slot references.
    """

    def __init__(self, schedule, caches: list[AttentionCache], computed_index: int):
        self.schedule = schedule
        self.caches = caches
        self.split = bool(schedule.cfg)  # the batch holds [branch 0, branch 1] halves
        self.computed_index = computed_index
        self.push_on_reuse = schedule.push_on_reuse
        self.needs_other = bool(schedule.needs_other_branch)
        self.full = True
        self.probing = False
        self.batch = 0
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None
        self.a = torch.ones(())
        self.b = torch.ones(())
        self._ab = (1.0, 1.0)
        self.signature = None
        self.plan: CallPlan | None = None
        self.c = 0
        self.prev_t: float | None = None
        self.in_call = False
        self.total_calls = 0
        self.videos = 0
        self.kinds: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new video (buffers are kept and reused)."""
        self.c = 0
        self.prev_t = None
        self.in_call = False
        self.plan = None
        self._set_ab(1.0, 1.0)
        for cache in self.caches:
            cache.newer = 0
            cache.has_other = [False, False]
            cache.reuse = False

    def begin_call(self, t: float | None, signature, allocate) -> CallPlan:
        """Decides call c+1. `allocate()` probes the model's shapes and calls `self.allocate` (first call of a
        new input signature)."""
        if self.in_call:
            warnings.warn("fastercache: the previous model call did not finish; starting a new video", stacklevel=3)
            self.reset()
        if self.c > 0:
            if t is not None and self.prev_t is not None and t > self.prev_t:
                self.reset()  # the timestep jumped up: a new video
            elif signature != self.signature:
                warnings.warn(f"fastercache: the model inputs changed mid-video (call {self.c + 1}: "
                              f"{_sig_str(signature)} after {_sig_str(self.signature)}); starting a new video",
                              stacklevel=3)
                self.reset()
        if signature != self.signature:
            allocate()
            self.signature = signature
        if self.c == 0:
            self.videos += 1
        self.c += 1
        self.total_calls += 1
        plan = self.schedule.plan(self.c, t)
        self.plan = plan
        self.full = plan.full or not self.split
        if self.split:
            a, b = self._ab
            self._set_ab(1.0, 1.0) if plan.full else self._set_ab(a * plan.low_mult, b * plan.high_mult)
        for cache in self.caches:
            if cache.active:
                self._point(cache, plan)
        self.kinds[plan.kind] = self.kinds.get(plan.kind, 0) + 1
        self.prev_t = t
        self.in_call = True
        return plan

    def _point(self, cache: AttentionCache, plan: CallPlan) -> None:
        reuse = bool(plan.reuse.get(cache.kind, False))
        cache.reuse = reuse
        n, o = cache.newer, 1 - cache.newer
        cache.src_newer, cache.src_older = cache.comp[n], cache.comp[o]
        cache.dst = cache.comp[o]
        if cache.other is not None:
            cache.o_newer, cache.o_older = cache.other[n], cache.other[o]
            cache.o_dst = cache.other[o]
        if reuse:
            cache.reused += 1
            cache.set_weight(self.schedule.attention_weight(plan, cache.module, cache.kind))
            if self.full and self.split:
                # A full call reusing a slot written by a skip call: the reference broadcasts the computed
                # branch's cache to both halves (Open-Sora); give that slot's other half the same values.
                for s in (n, o):
                    if not cache.has_other[s]:
                        for dst, src in zip(cache.other[s], cache.comp[s]):
                            dst.copy_(src)
        else:
            cache.computed += 1
        if not reuse or self.push_on_reuse:
            cache.has_other[o] = (not reuse) and self.full and self.split and self.needs_other
            cache.newer = o

    def end_call(self) -> None:
        plan = self.plan
        if plan is not None and plan.fill:
            for cache in self.caches:
                if cache.active and cache.kind in plan.fill:
                    n, o = cache.newer, 1 - cache.newer
                    for dst, src in zip(cache.comp[o], cache.comp[n]):
                        dst.copy_(src)
                    if cache.other is not None:
                        for dst, src in zip(cache.other[o], cache.other[n]):
                            dst.copy_(src)
                    cache.has_other[o] = cache.has_other[n]
        self.in_call = False

    def _set_ab(self, a: float, b: float) -> None:
        if (a, b) != self._ab:
            self.a.fill_(a)
            self.b.fill_(b)
            self._ab = (a, b)

    # -- buffers ---------------------------------------------------------------------------------------------
    def allocate(self, batch: int, records: dict, sample, device: torch.device) -> None:
        """Allocates (or keeps, when shapes match) every buffer. `records[cache] = [(shape, dtype), ...]` are the
        module outputs of a full-batch call, `sample = (shape, dtype)` the model output."""
        if self.split and batch % 2:
            raise ValueError(f"fastercache: the model was called with batch {batch}, which cannot hold the "
                             "[uncond, cond] halves of classifier-free guidance; use a config with cfg=False (or "
                             "is_guidance_distilled=True) for unguided sampling")
        self.batch = batch
        sd = self.schedule.storage_dtype

        def rows(shape) -> int:  # a module's batch holds the two CFG halves one after the other
            return shape[0] // 2 if self.split else shape[0]

        def slot(shape, dtype):
            return torch.zeros((rows(shape), *shape[1:]), dtype=sd or dtype, device=device)

        def same(bufs, shapes):
            return len(bufs) == len(shapes) and all(
                b.shape == (rows(s), *s[1:]) and b.dtype == (sd or d) and b.device == device
                for b, (s, d) in zip(bufs, shapes))

        moved: dict[int, torch.Tensor] = {}
        for cache in self.caches:
            outs = records.get(cache)
            cache.active = outs is not None
            if outs is None:
                continue
            shapes, cache.tuple_out = outs
            odd = [s for s, _ in shapes if self.split and s[0] % 2]
            if odd:
                raise ValueError(f"fastercache: module {cache.name!r} returned an output of shape {list(odd[0])} on a "
                                 f"batch-{batch} call; its batch must hold the two CFG halves one after the other")
            cache.out_dtypes = [d for _, d in shapes]
            if not same(cache.comp[0], shapes):
                cache.comp = [[slot(s, d) for s, d in shapes] for _ in range(2)]
                cache.other = ([[slot(s, d) for s, d in shapes] for _ in range(2)]
                               if self.needs_other and self.split else None)
            if id(cache.weight) not in moved:  # modules sharing one weight tensor keep sharing it
                moved[id(cache.weight)] = cache.weight.to(device)
            cache.weight = moved[id(cache.weight)]
            cache._weight_value = None
        if self.split:
            shape, dtype = sample
            if not (self.low is not None and same([self.low], [(shape, dtype)])):
                self.low = slot(shape, dtype)
                self.high = slot(shape, dtype)
        self.a = self.a.to(device)
        self.b = self.b.to(device)
        self._ab = (None, None)
        self._set_ab(1.0, 1.0)

    def cache_bytes(self) -> int:
        total = sum(c.nbytes() for c in self.caches)
        if self.low is not None:
            total += 2 * self.low.numel() * self.low.element_size()
        return total

    def stats(self) -> dict:
        per_kind: dict[str, dict] = {}
        for c in self.caches:
            d = per_kind.setdefault(c.kind, {"modules": 0, "computed": 0, "reused": 0, "cache_bytes": 0})
            d["modules"] += 1
            d["computed"] += c.computed
            d["reused"] += c.reused
            d["cache_bytes"] += c.nbytes()
        full = sum(n for k, n in self.kinds.items() if k.startswith("full"))
        return {
            "calls": self.total_calls,
            "videos": self.videos,
            "call_in_video": self.c,
            "calls_per_kind": dict(sorted(self.kinds.items())),
            "cfg": {"full": full, "skip": self.total_calls - full},
            "attention": per_kind,
            "cache_bytes": self.cache_bytes(),
            "cfg_residual_bytes": 0 if self.low is None else 2 * self.low.numel() * self.low.element_size(),
        }


def _sig_str(sig) -> str:
    if not sig:
        return "nothing"
    return ", ".join(f"{name}{list(shape)}" for name, shape, *_ in sig[1:])
