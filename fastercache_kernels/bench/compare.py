"""The speed/fidelity frontier: fk's cache settings next to diffusers' own cache hooks (and cache-dit's DBCache when
it is installed) on the same models, from the same noise, in one process (`python -m fastercache_kernels compare`).

Every method samples once per round, rounds interleaved (round r runs every method in turn), so load from other
jobs falls on all methods alike. Speed is CPU time (time.process_time, one torch thread): the median over rounds of
the uncached time over the method's time in the same round. PSNR is against the uncached sample of the same noise.
For every peer point, the table gives fk's best PSNR among its points at equal or higher speed and the gap in dB
(positive: fk is better at that speed or faster), the fk point that makes the peer's decisions (its sample matches the
peer's, mark_same_decisions: their speed difference is host overhead or noise, not the policy) and whether fk dominates the
point (another fk point at least as fast with a higher PSNR).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

MODELS = ("cogvideox", "latte", "wan")
OWNERS = ("none", "fk", "diffusers", "cache-dit")
PSNR_CAP = 100.0  # metrics.psnr's value for identical frames
SAME_DB = 60.0  # two samples this close (PSNR of one against the other) came from the same decisions, if also
SAME_MARGIN_DB = 20.0  # this much closer to each other than either is to the uncached sample (mark_same_decisions)
ATTENTION_NAMES = r"[^.]*blocks\.\d+\.attn\d*"  # the attention modules of the demo models' and Wan's blocks


@dataclass
class Method:
    """A way to sample. `apply(target)` patches the target's model and returns a handle with remove() (None: no
    cache); `context`: demo models only, wrap every call in diffusers' `cache_context` with the step's index and
    sigma (its hooks read them; diffusers' pipelines do the same)."""

    name: str
    owner: str
    apply: Callable | None = None
    context: bool = False


@dataclass
class Point:
    model: str
    method: str
    owner: str
    cpu_s: float | None = None  # median CPU seconds per sample
    speedup: float | None = None  # median over rounds of uncached / this (same round)
    psnr: float | None = None  # mean per-frame PSNR (metrics.psnr); above PSNR_CAP where frames differ by rounding
    exact: bool = False  # the sample equals the uncached one bit for bit
    error: str | None = None  # why the method could not run on this model
    first_cpu_s: float | None = None  # the untimed first video after applying (set-up, first-call costs)
    rounds_cpu_s: list = field(default_factory=list)
    same_as: list = field(default_factory=list)  # peers: the fk methods whose sample matches this one's (SAME_DB)


@dataclass
class Gap:
    model: str
    peer: str
    peer_owner: str
    peer_speedup: float
    peer_psnr: float
    fk_method: str | None  # fk's best point at >= the peer's speed (None: fk has no point that fast)
    fk_speedup: float | None
    fk_psnr: float | None
    gap_db: float | None  # fk_psnr - peer_psnr (None: see note)
    note: str = ""
    same: str | None = None  # the fk method that made the peer's decisions (same sample), if any
    same_speedup: float | None = None
    verdict: str = ""  # "dominated", "same decisions" or "not dominated"
    peer_exact: bool = False  # the peer's sample is the uncached one, bit for bit
    fk_exact: bool = False  # and fk's best point's


def frontier_gaps(points: list[Point]) -> list[Gap]:
    """For every peer point that ran: fk's point with the highest PSNR among those of the same model at equal or
    higher speedup, and the PSNR difference (fk minus peer). A sample identical to the uncached one (`exact`) has no
    finite PSNR and ranks above every other: then the gap is 0 when both are exact and otherwise left out, with a
    note saying which side is exact.

    The verdict: "dominated" when an fk point other than the peer's twin (the fk method with the same sample,
    `Point.same_as`) is at least as fast with a higher PSNR (or exact against an inexact peer); else "no
    reuse" when the peer's sample is the uncached one (it computed every call: the no-cache point, whose speed
    differs from 1.00x by overhead and noise); else "same decisions" when fk has the twin (whose speed may differ
    from the peer's by host overhead and noise alone); else "not dominated"."""
    gaps = []
    for p in points:
        if p.owner in ("none", "fk") or p.error is not None:
            continue
        mine = {q.method: q for q in points if q.owner == "fk" and q.error is None and q.model == p.model}
        faster = [q for q in mine.values() if q.speedup >= p.speedup]
        best = max(faster, key=lambda q: (_quality(q), q.speedup), default=None)
        twin = next((mine[m] for m in p.same_as if m in mine), None)
        if any(_quality(q) > _quality(p) and q.method not in p.same_as for q in faster):
            verdict = "dominated"
        elif p.exact:
            verdict = "no reuse"
        else:
            verdict = "same decisions" if twin is not None else "not dominated"
        gap, note = None, ""
        if best is None:
            note = "no fk point this fast"
        elif best.exact and p.exact:
            gap = 0.0
        elif p.exact:
            note = "peer exact, fk not"
        elif best.exact:
            note = "fk exact, peer not"
        else:
            gap = best.psnr - p.psnr
        gaps.append(Gap(p.model, p.method, p.owner, p.speedup, p.psnr, best and best.method, best and best.speedup,
                        best and best.psnr, gap, note, twin and twin.method, twin and twin.speedup, verdict,
                        p.exact, bool(best and best.exact)))
    return gaps


def _quality(p: Point) -> tuple:
    """How close a point's sample is to the uncached one, for ordering: exact first, then by PSNR."""
    return (p.exact, p.psnr)


def fk_frontier(points: list[Point]) -> set[tuple[str, str]]:
    """(model, method) of fk's frontier points: no other fk point of the model is at least as fast with at least
    the PSNR (ties: the faster one, then the first listed)."""
    out = set()
    models = dict.fromkeys(p.model for p in points)
    for model in models:
        best = (False, -math.inf)
        for p in sorted((p for p in points if p.model == model and p.owner == "fk" and p.error is None),
                        key=lambda p: -p.speedup):  # from the fastest down: each point above every faster one
            if _quality(p) > best:
                out.add((model, p.method))
                best = _quality(p)
    return out


def mark_same_decisions(points: list[Point], videos: list, min_db: float = SAME_DB,
                        margin_db: float = SAME_MARGIN_DB) -> None:
    """Fill each peer point's `same_as` with the fk methods that made its decisions: their samples are equal, or
    within `min_db` PSNR of each other and `margin_db` closer to each other than either is to the uncached sample
    (points[i] sampled videos[i]; None: it failed; `Point.psnr` set). The same decisions differ by rounding alone
    (~150 dB on these models); other decisions by 30-80 dB, the high end where both stay close to the uncached
    sample (the tiny Wan), hence the margin."""
    from ..demo import metrics

    for p, v in zip(points, videos):
        if p.owner in ("none", "fk") or v is None:
            continue
        p.same_as = []
        for q, w in zip(points, videos):
            if q.owner != "fk" or w is None or q.model != p.model:
                continue
            if torch.equal(w, v) or metrics.psnr(w, v) >= max(min_db, p.psnr + margin_db, q.psnr + margin_db):
                p.same_as.append(q.method)


# ---------------------------------------------------------------------------------------------------- targets


class DemoTarget:
    """A trained demo model (fastercache_kernels/demo) sampled by the demo's rectified-flow loop, CFG batched in one
    call per step. Every method patches its own copy of the model (`fresh()`)."""

    def __init__(self, family: str, clips: int, steps: int, seed: int = 0):
        from ..demo import run

        self.family, self.steps = family, steps
        self.base, self.weights = run.load(family)
        self.cond, self.null, self.noise, _ = run.inputs(clips, seed)
        self.description = (f"{family}: demo model ({self.weights} weights), {clips} clip(s), {steps} steps, CFG "
                            f"batched in one call per step")

    def fresh(self):
        return copy.deepcopy(self.base)

    @staticmethod
    def transformer(obj):
        return obj  # what diffusers' hooks and cache-dit patch; fk.apply patches `obj` itself

    def sample(self, obj, context: bool = False) -> torch.Tensor:
        from ..demo import sampling

        ctx = None
        if context:
            ctx = lambda i, t: obj.cache_context(  # noqa: E731
                "cfg", step_index=i, sigma=t, timestep=1000.0 * t, num_inference_steps=self.steps)
        return sampling.sample(obj, self.cond, self.null, self.noise, steps=self.steps, call_context=ctx)

    @staticmethod
    def timestep_callback(obj):
        from ..demo import sampling

        return sampling.current_timestep

    def raw_vision_callback(self, obj):
        """SeaCache's raw_vision_callback: the call's noisy latents as [C, T, H, W] per sample."""
        def raw_vision(module, args, kwargs):
            x = kwargs["hidden_states"]
            return list((x.transpose(1, 2) if self.family == "cogvideox" else x).unbind(0))  # CogVideoX: BFCHW
        return raw_vision


class WanTarget:
    """The tiny random WanPipeline of fastercache_kernels/tiny.py: its own loop (one call per CFG branch inside
    `cache_context`), decoded to a video. Every method runs its own copy of the pipeline."""

    PROMPT, NEGATIVE = "a red square moving left", "blurry"

    def __init__(self, steps: int, seed: int = 0):
        from .. import tiny

        self.family, self.steps, self.seed = "wan", steps, seed
        self.base, self.kwargs = tiny.wan_pipeline(seed)
        self.base.set_progress_bar_config(disable=True)
        self.description = (f"wan: tiny random WanPipeline ({len(self.base.transformer.blocks)} blocks), 1 video, "
                            f"{steps} steps, CFG as two calls per step, decoded by its VAE")

    def fresh(self):
        return copy.deepcopy(self.base)

    @staticmethod
    def transformer(obj):
        return obj.transformer

    def sample(self, obj, context: bool = False) -> torch.Tensor:
        out = obj(self.PROMPT, negative_prompt=self.NEGATIVE, num_inference_steps=self.steps, guidance_scale=5.0,
                  generator=torch.Generator().manual_seed(self.seed), output_type="pt",
                  **self.kwargs).frames  # [B, T, C, H, W] in [0, 1]
        return (out * 2 - 1).transpose(1, 2)

    @staticmethod
    def timestep_callback(obj):
        return lambda: obj.current_timestep

    def raw_vision_callback(self, obj):
        return None  # diffusers' SeaCache has its own adapter for Wan


def make_target(model: str, clips: int, steps: int):
    if model == "wan":
        return WanTarget(steps)
    return DemoTarget(model, clips, steps)


# ---------------------------------------------------------------------------------------------------- methods


class _FkHandle:
    def __init__(self, handle):
        self.handle = handle

    def reset(self) -> None:
        self.handle.reset()

    def remove(self) -> None:
        self.handle.remove()


class _DiffusersHandle:
    """diffusers' hook: `transformer.enable_cache(config)`; a new video re-enables it (fresh hook state)."""

    def __init__(self, transformer, config):
        self.transformer, self.config = transformer, config
        transformer.enable_cache(config)
        if not any(getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook.hooks
                   for m in transformer.modules()):
            transformer.disable_cache()
            raise RuntimeError(f"{type(config).__name__} hooked no module of {type(transformer).__name__} (its "
                               "identifiers match none of the module names)")

    def reset(self) -> None:
        self.remove()
        self.transformer.enable_cache(self.config)

    def remove(self) -> None:
        if getattr(self.transformer, "_cache_config", None) is not None:
            self.transformer.disable_cache()


class _CacheDitHandle:
    def __init__(self, subject, cache_config, calibrator_config):
        import cache_dit

        self.cache_dit, self.subject = cache_dit, subject
        self.configs = (cache_config, calibrator_config)
        cache_dit.enable_cache(subject, cache_config=cache_config, calibrator_config=calibrator_config)

    def reset(self) -> None:
        self.remove()
        self.cache_dit.enable_cache(self.subject, cache_config=copy.deepcopy(self.configs[0]),
                                    calibrator_config=copy.deepcopy(self.configs[1]))

    def remove(self) -> None:
        self.cache_dit.disable_cache(self.subject)


def fk_methods(target) -> list[Method]:
    """fk's settings: the demo's own list (FasterCache presets, diffusers' FasterCache config on fk's backend,
    TeaCache, First-Block-Cache, AdaCache, compositions; for Wan its adapter's presets and the same adaptive
    policies), the points that make diffusers' decisions (First-Block-Cache, MagCache, TaylorSeer, SeaCache at
    diffusers' settings) and fk's own points past them (forecasting reuse, TaylorSeer order 2, SeaCache caps)."""
    import fastercache_kernels as fk

    from ..demo import settings

    n = target.steps

    def fk_method(name, config):
        return Method(name, "fk", lambda t, obj: _FkHandle(fk.apply(obj, config() if callable(config) else config)))

    fbc = lambda thr: fk_method(f"fk First-Block-Cache {thr}",  # noqa: E731
                                fk.FirstBlockCacheConfig(threshold=thr, num_calls=n))
    if target.family == "wan":
        out = [fk_method("fk FasterCache preset latte (Wan's default)", "latte"),
               fk_method("fk TeaCache preset wan2.1-t2v-1.3b",
                         fk.TeaCacheConfig.preset("wan2.1-t2v-1.3b", num_calls=n)),
               fbc(0.1),
               fk_method("fk AdaCache (30-call fast codebook)", settings._adacache(n)),
               fk_method("fk FasterCache latte + First-Block-Cache 0.1",
                         ["latte", fk.FirstBlockCacheConfig(threshold=0.1, num_calls=n)])]
    else:
        out = [Method(s.name, "fk", lambda t, obj, s=s: _FkHandle(s.apply(obj)))
               for s in settings.settings(target.family, n)[1:] if s.name.startswith("fk ")]
    have = {m.name for m in out}
    # (fk points that another fk point beat on both demo models in docs/results.md's runs are left out: First-Block-
    # Cache 0.3, order-2 forecasts of First-Block-Cache and TeaCache, MagCache with forecasting, TaylorSeer at 3
    # warm-up steps with order 2, SeaCache 1.0 with caps 3 and 4, AdaCache's forecasting variants of results.md's
    # "AdaCache with forecasting": 10-12 computed calls at <= 38.3 dB on CogVideoX, <= 41.7 dB on Latte)
    out += [fbc(thr) for thr in (0.05, 0.2) if f"fk First-Block-Cache {thr}" not in have]
    if target.family == "wan":  # per-branch calls: each branch on its own indicator, as diffusers' hook decides
        from diffusers.hooks import FirstBlockCacheConfig as DiffusersFirstBlockCacheConfig

        out += [fk_method(f"fk First-Block-Cache {thr} per branch (diffusers' config)",
                          DiffusersFirstBlockCacheConfig(threshold=thr)) for thr in (0.05, 0.1)]
    # forecasting reuse (docs/algorithms.md section 11): the same decisions, the residual forecast on reused calls
    out += [fk_method(f"fk First-Block-Cache {thr} forecast 1",
                      fk.FirstBlockCacheConfig(threshold=thr, num_calls=n, forecast_order=1)) for thr in (0.1, 0.2)]
    if target.family != "wan":
        from ..demo import settings as demo_settings

        tea = demo_settings.TEACACHE[target.family]
        out.append(fk_method(f"fk TeaCache preset {tea} forecast 1",
                             fk.TeaCacheConfig.preset(tea, num_calls=n, forecast_order=1)))
    # MagCache (section 12) at diffusers' thresholds, with ratios from fk's calibration on this model and step count
    out += [fk_method(f"fk MagCache {thr}", lambda thr=thr: fk.MagCacheConfig(
        mag_ratios=_fk_magcache_ratios(target), num_inference_steps=n, threshold=thr)) for thr in (0.06, 0.12, 0.24)]
    # TaylorSeer (section 13) at diffusers' points (3 warm-up steps, intervals 3 and 5, order 1: its decisions)
    out += [fk_method(f"fk TaylorSeer lite interval {k}", fk.TaylorSeerConfig(cache_interval=k))
            for k in (3, 5)]
    out += [fk_method(f"fk TaylorSeer (attention) interval {k}",
                      fk.TaylorSeerConfig(cache_interval=k, mode="attention", modules=(ATTENTION_NAMES,)))
            for k in (3, 5)]
    # fk's TaylorSeer points: order 2 from one warm-up step (the quadratic needs three computed outputs, which
    # come sooner than diffusers' 3 warm-up steps allow), optionally with the last steps computed ("last 3"),
    # lite or on the blocks' residual ("residual": the final norm and proj_out run)
    out += [fk_method(f"fk TaylorSeer {mode} interval {k} order 2 warm-up 1" + (f" last {e}" if e else ""),
                      fk.TaylorSeerConfig(cache_interval=k, max_order=2, disable_cache_before_step=1,
                                          disable_cache_after_step=n - e if e else None, mode=mode))
            for mode, k, e in (("residual", 4, 0), ("lite", 5, 0), ("lite", 5, 3))]
    if target.family == "wan":  # the tiny random Wan's own: TaylorSeer's residual at interval 6, AdaCache forecast
        out += [fk_method("fk TaylorSeer residual interval 6 warm-up 1",
                          fk.TaylorSeerConfig(cache_interval=6, disable_cache_before_step=1, mode="residual")),
                fk_method("fk AdaCache (30-call fast codebook) forecast 1",
                          lambda: settings._adacache(n).replace(forecast_order=1))]
        # and points from a sweep on this same sample (docs/results.md "Wan, seventh pass": what fk's settings reach
        # here, not settings tuned elsewhere): the attention forecasts with the last steps computed, the output
        # forecast at a longer interval, MagCache with a longer reuse run and a smaller retained start
        out += [fk_method(f"fk TaylorSeer (attention) interval {k} warm-up {w} last {e}",
                          fk.TaylorSeerConfig(cache_interval=k, disable_cache_before_step=w,
                                              disable_cache_after_step=n - e, mode="attention",
                                              modules=(ATTENTION_NAMES,)))
                for k, w, e in ((4, 1, 3), (5, 2, 4))]
        out += [fk_method("fk TaylorSeer lite interval 7 order 2 warm-up 1",
                          fk.TaylorSeerConfig(cache_interval=7, max_order=2, disable_cache_before_step=1)),
                fk_method("fk MagCache 0.24 max skip 5 retention 0.1", lambda: fk.MagCacheConfig(
                    mag_ratios=_fk_magcache_ratios(target), num_inference_steps=n, threshold=0.24, max_skip_steps=5,
                    retention_ratio=0.1))]
    # SeaCache (docs/algorithms.md section 14): diffusers' rule and defaults (order-1 forecast), at its thresholds
    # "max m": at most m reused steps in a row (diffusers' default cap is 2; higher caps reach higher speeds); at
    # 2.0 with the cap of 2 the cap decides alone on the demo CogVideoX (one step in three computed), at 10.0 on
    # every model ("end 0": the last step may reuse too)
    out += [fk_method(f"fk SeaCache {thr}" + (f" max {m}" if m != 2 else "") + (f" end {e}" if e != 1 else ""),
                      fk.SeaCacheConfig(threshold=thr, max_consecutive_cached=m, cache_end_steps=e, num_calls=n))
            for thr, m, e in ((0.1, 2, 1), (0.25, 2, 1), (0.5, 2, 1), (2.0, 2, 1), (5.0, 5, 1), (10.0, 7, 0))]
    return out


def _fk_magcache_ratios(target) -> tuple:
    """MagCache's magnitude ratios from fk.calibrate.fit_magcache: one uncached sample (its first state key)."""
    if getattr(target, "_fk_mag_ratios", None) is None:
        from ..calibrate import fit_magcache

        obj = target.fresh()
        target._fk_mag_ratios, _ = fit_magcache(target.transformer(obj), lambda: target.sample(obj))
    return target._fk_mag_ratios


def _magcache_ratios(target) -> list[float]:
    """MagCache's magnitude ratios for this model and step count from diffusers' own calibration mode: one uncached
    sample, whose printed ratios we read back (the first context's, "cond" for Wan)."""
    from diffusers.hooks import MagCacheConfig

    if getattr(target, "_mag_ratios", None) is None:
        obj = target.fresh()
        handle = _DiffusersHandle(target.transformer(obj), MagCacheConfig(calibrate=True,
                                                                          num_inference_steps=target.steps))
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                target.sample(obj, context=True)
        finally:
            handle.remove()
        found = re.findall(r"\[[-0-9.eE, ]+\]", buf.getvalue())
        if not found:
            raise RuntimeError("MagCache calibration printed no ratios")
        target._mag_ratios = [float(v) for v in found[0].strip("[]").split(",")]
    return target._mag_ratios


def diffusers_methods(target) -> list[Method]:
    """diffusers' cache hooks, applied with `transformer.enable_cache(config)` as its docs show, at their documented
    defaults and a few more aggressive settings."""
    from diffusers.hooks import (FirstBlockCacheConfig, MagCacheConfig,
                                 PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig)

    from ..demo import settings

    def hook(name, make):
        return Method(f"diffusers {name}", "diffusers",
                      lambda t, obj: _DiffusersHandle(t.transformer(obj), make(t, obj)), context=True)

    n = target.steps
    out = [hook(f"FirstBlockCache {thr}", lambda t, obj, thr=thr: FirstBlockCacheConfig(threshold=thr))
           for thr in (0.05, 0.1, 0.2)]
    # TaylorSeer: factors in fp32 as in its docstring's example (bf16 is the default; on CPU it only costs time).
    # Its default identifiers ("^transformer_blocks.*attn", fullmatch) match no module of these models, whose
    # attention modules are named attn1 / attn2, so they are named explicitly; lite: the blocks are skipped on
    # predicted steps and only proj_out is predicted.
    for lite in (False, True):
        out += [hook(f"TaylorSeer{' lite' if lite else ' (attention)'} interval {k}", lambda t, obj, k=k, lite=lite:
                     TaylorSeerCacheConfig(cache_interval=k, max_order=1, disable_cache_before_step=3,
                                           taylor_factors_dtype=torch.float32, use_lite_mode=lite,
                                           cache_identifiers=None if lite else [ATTENTION_NAMES]))
                for k in (3, 5)]
    out += [hook(f"MagCache {thr}", lambda t, obj, thr=thr: MagCacheConfig(
        threshold=thr, num_inference_steps=n, mag_ratios=_magcache_ratios(t))) for thr in (0.06, 0.12, 0.24)]
    try:
        from diffusers.hooks import SeaCacheConfig
    except ImportError:  # diffusers before SeaCache
        SeaCacheConfig = None
    if SeaCacheConfig is not None:
        out += [hook(f"SeaCache {thr}", lambda t, obj, thr=thr: SeaCacheConfig(
            threshold=thr, raw_vision_callback=t.raw_vision_callback(obj))) for thr in (0.1, 0.25, 0.5)]
    out.append(hook("PAB (spatial, every 2nd)", lambda t, obj: PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(100, 800),
        current_timestep_callback=t.timestep_callback(obj))))
    if target.family == "wan":  # the demo's config (diffusers' documented values) with Wan's layout
        fc = lambda t, obj: dataclasses.replace(  # noqa: E731
            settings.diffusers_config("latte"), current_timestep_callback=t.timestep_callback(obj))
    else:
        fc = lambda t, obj: settings.diffusers_config(t.family)  # noqa: E731
    out.append(hook("FasterCache", fc))
    return out


def cache_dit_methods(target) -> list[Method]:
    """cache-dit's DBCache (F1B0: the first block decides, First-Block-Cache's rule; cache-dit's defaults otherwise:
    8 warm-up steps, no cap on consecutive reuse) with and without its TaylorSeer calibrator, when cache-dit is
    importable. Wan goes through cache-dit's pipeline adapter, the demo models through its transformer-only path."""
    try:
        from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig
    except ImportError:
        return []

    def make(thr, taylor):
        def apply(t, obj):
            cfg = DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=thr,
                                num_inference_steps=t.steps, enable_separate_cfg=t.family == "wan")
            cal = TaylorSeerCalibratorConfig(taylorseer_order=1) if taylor else None
            return _CacheDitHandle(obj, cfg, cal)
        return Method(f"cache-dit DBCache F1B0 {thr}{' + TaylorSeer' if taylor else ''}", "cache-dit", apply)

    return [make(0.08, False), make(0.08, True), make(0.16, False), make(0.16, True)]


def all_methods(target) -> list[Method]:
    return [Method("no cache", "none"), *fk_methods(target), *diffusers_methods(target), *cache_dit_methods(target)]


def select(methods: list[Method], wanted: str | None) -> list[Method]:
    """Keep "no cache" and the methods whose name contains one of the comma-separated substrings of `wanted`."""
    if not wanted:
        return methods
    keys = [w.strip().lower() for w in wanted.split(",") if w.strip()]
    return [m for m in methods if m.owner == "none" or any(k in m.name.lower() for k in keys)]


# ---------------------------------------------------------------------------------------------------- running


def _short_error(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:160]}"


def interleaved_rounds(target, methods, points, rounds: int, apply, first, required: int = 1, log=None,
                       timed=None) -> list:
    """The rounds of `compare` and `compare --compile`. Each method patches a fresh copy of the target
    (`apply(i, method, obj)` -> (what to sample, its handle or None)) and samples one untimed video (`first(i, method,
    runner)`); then `rounds` interleaved rounds reset each handle (a new video) and time one sample (CPU time, into
    `points[i].rounds_cpu_s`; `timed(i)`, a context manager around it, may measure more). A method that raises is
    recorded in `points[i].error` and not run again (the first `required` ones are the references: they raise).
    Returns the first round's sample of each method (None where it failed); every handle is removed."""
    subjects: list = [None] * len(methods)
    videos: list = [None] * len(methods)

    def failed(i, e):
        points[i].error = _short_error(e)
        if log:
            log(f"  {target.family}: {methods[i].name} failed: {points[i].error}")
        handle = subjects[i] and subjects[i][1]
        subjects[i] = None
        with contextlib.suppress(Exception):
            handle and handle.remove()

    for i, m in enumerate(methods):  # set-up and the untimed first video
        try:
            subjects[i] = apply(i, m, target.fresh())
            first(i, m, subjects[i][0])
        except Exception as e:  # a peer hook that does not fit this model: record why, keep going
            if i < required:
                raise
            failed(i, e)
    for r in range(rounds):
        for i, m in enumerate(methods):
            if subjects[i] is None:
                continue
            run, handle = subjects[i]
            try:
                if handle is not None:
                    handle.reset()
                with timed(i) if timed is not None else contextlib.nullcontext():
                    t0 = time.process_time()
                    video = target.sample(run, context=m.context)
                    points[i].rounds_cpu_s.append(time.process_time() - t0)
            except Exception as e:
                if i < required:
                    raise
                failed(i, e)
                continue
            if r == 0:
                videos[i] = video
        if log:
            log(f"  {target.family}: round {r + 1}/{rounds} done")
    for s in subjects:
        if s is not None and s[1] is not None:
            s[1].remove()
    return videos


def run_model(target, methods: list[Method], rounds: int, log=None) -> list[Point]:
    """Each method patches its own copy of the model once and samples one untimed video (first-call costs: lazy
    buffers, any probing); then `rounds` interleaved rounds each reset the method's state (a new video) and time one
    sample. Returns one Point per method (the first is the uncached reference). A method that raises is recorded
    with its error and not run again."""
    from ..demo import metrics

    points = [Point(target.family, m.name, m.owner) for m in methods]

    def first(i, m, run):
        t0 = time.process_time()
        target.sample(run, context=m.context)
        points[i].first_cpu_s = time.process_time() - t0

    videos = interleaved_rounds(target, methods, points, rounds, lambda i, m, obj: (
        obj, m.apply(target, obj) if m.apply is not None else None), first, required=1, log=log)
    base = points[0].rounds_cpu_s
    for i, p in enumerate(points):
        if p.error is not None:
            continue
        p.cpu_s = statistics.median(p.rounds_cpu_s)
        p.speedup = statistics.median(b / t for b, t in zip(base, p.rounds_cpu_s))
        p.psnr = metrics.psnr(videos[i], videos[0])
        p.exact = bool(torch.equal(videos[i], videos[0]))
    mark_same_decisions(points, [None if p.error is not None else v for p, v in zip(points, videos)])
    return points


def format_points(points: list[Point]) -> str:
    """Every point; "*" in the last column marks fk's frontier (fk_frontier)."""
    head = ["model", "owner", "method", "CPU s", "speedup", "PSNR dB", "1st video CPU s", "fk frontier"]
    front = fk_frontier(points)
    rows = []
    for p in points:
        if p.error is not None:
            rows.append([p.model, p.owner, p.method, "", "", f"failed: {p.error}", "", ""])
        else:
            rows.append([p.model, p.owner, p.method, f"{p.cpu_s:.2f}", f"{p.speedup:.2f}x", _db(p.psnr, p.exact),
                         f"{p.first_cpu_s:.2f}", "*" if (p.model, p.method) in front else ""])
    return _table(head, rows, right=(3, 4, 6))


GAP_HEAD = ["model", "peer point", "speedup", "PSNR dB", "fk's best at >= its speed", "speedup", "PSNR dB", "gap dB",
            "same decisions (fk)", "speedup", "verdict"]


def _gap_row(g: Gap) -> list[str]:
    return [g.model, g.peer, f"{g.peer_speedup:.2f}x", _db(g.peer_psnr, g.peer_exact), g.fk_method or "",
            "" if g.fk_speedup is None else f"{g.fk_speedup:.2f}x", _db(g.fk_psnr, g.fk_exact), _gap(g), g.same or "",
            "" if g.same_speedup is None else f"{g.same_speedup:.2f}x", g.verdict]


def format_gaps(gaps: list[Gap]) -> str:
    return _table(GAP_HEAD, [_gap_row(g) for g in gaps], right=(2, 3, 5, 6, 7, 9))


def format_frontier(points: list[Point]) -> str:
    """fk's frontier per model, fastest first: "method speedup/PSNR" joined by " > "."""
    front = fk_frontier(points)
    lines = []
    for model in dict.fromkeys(p.model for p in points):
        mine = sorted((p for p in points if (p.model, p.method) in front and p.model == model),
                      key=lambda p: -p.speedup)
        if mine:
            lines.append(f"fk's frontier on {model}: " + " > ".join(
                f"{p.method.removeprefix('fk ')} {p.speedup:.2f}x/{_db(p.psnr, p.exact)}" for p in mine))
    return "\n".join(lines)


def _gap(g: Gap) -> str:
    return g.note if g.gap_db is None else f"{g.gap_db:+.2f}"


def _db(v: float | None, exact: bool) -> str:
    """A PSNR as the tables print it: "identical" for a sample equal to the uncached one bit for bit (its PSNR is
    PSNR_CAP by convention), else the number, which may exceed the cap (frames that differ by rounding)."""
    return "" if v is None else ("identical" if exact else f"{v:.2f}")


def _table(head, rows, right=()) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def markdown(points: list[Point], gaps: list[Gap]) -> str:
    front = fk_frontier(points)
    lines = ["| model | owner | method | CPU s | speedup | PSNR dB | 1st video CPU s | fk frontier |",
             "|---|---|---|---|---|---|---|---|"]
    for p in points:
        if p.error is not None:
            lines.append(f"| {p.model} | {p.owner} | {p.method} |  |  | failed: {p.error.replace('|', '/')} |  |  |")
        else:
            front_mark = "*" if (p.model, p.method) in front else ""
            lines.append(f"| {p.model} | {p.owner} | {p.method} | {p.cpu_s:.2f} | {p.speedup:.2f}x | "
                         f"{_db(p.psnr, p.exact)} | {p.first_cpu_s:.2f} | {front_mark} |")
    lines += ["", "| " + " | ".join(GAP_HEAD) + " |", "|" + "---|" * len(GAP_HEAD)]
    lines += ["| " + " | ".join(_gap_row(g)) + " |" for g in gaps]
    return "\n".join(lines)


def plot(points: list[Point], path) -> None:
    """Speedup against PSNR, one panel per model, one marker per owner; fk's frontier ringed, joined and labelled
    (other fk points unlabelled: the table names them). A sample identical to the uncached one is drawn 5 dB above
    the panel's highest finite PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(p.model for p in points))
    front = fk_frontier(points)
    fig, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 6.5), squeeze=False)
    style = {"fk": ("o", "tab:blue"), "diffusers": ("s", "tab:orange"), "cache-dit": ("^", "tab:green")}
    for ax, model in zip(axes[0], models):
        ok = [p for p in points if p.model == model and p.error is None and p.owner != "none"]
        top = max((p.psnr for p in ok if not p.exact), default=PSNR_CAP - 5.0) + 5.0
        y = lambda p, top=top: top if p.exact else p.psnr  # noqa: E731
        for owner, (marker, color) in style.items():
            mine = [p for p in ok if p.owner == owner]
            if mine:
                ax.scatter([p.speedup for p in mine], [y(p) for p in mine], marker=marker, color=color, label=owner,
                           s=30 if owner == "fk" else 42, alpha=0.45 if owner == "fk" else 0.9, zorder=3)
        for p in ok:
            if p.owner == "fk" and (model, p.method) not in front:
                continue
            label = p.method.removeprefix("fk ").removeprefix("diffusers ").removeprefix("cache-dit ")
            ax.annotate(label, (p.speedup, y(p)), fontsize=6, xytext=(3, 2), textcoords="offset points",
                        color="tab:blue" if p.owner == "fk" else "black")
        frontier = sorted((p for p in ok if (model, p.method) in front), key=lambda p: -p.speedup)
        if frontier:
            ax.step([p.speedup for p in frontier], [y(p) for p in frontier], where="post", color="tab:blue",
                    alpha=0.7, linewidth=1.2, label="fk's frontier")
            ax.scatter([p.speedup for p in frontier], [y(p) for p in frontier], s=90, facecolors="none",
                       edgecolors="tab:blue", linewidths=1.2, zorder=4)
        ax.axhline(top, color="gray", linewidth=0.6, linestyle=":")
        ax.set_title(model)
        ax.set_xlabel("speedup over no cache (CPU time)")
        ax.set_ylabel(f"PSNR vs uncached (dB; identical drawn at {top:.0f})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args) -> dict:
    """The `compare` subcommand: returns the record also written as JSON under --out."""
    import json
    import shlex
    from pathlib import Path

    from . import report

    torch.set_num_threads(args.threads or 1)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise SystemExit(f"unknown model(s) {', '.join(unknown) or repr(args.models)}; choose from "
                         f"{', '.join(MODELS)}")
    try:
        import cache_dit
        cd_version = cache_dit.__version__
    except ImportError:
        cd_version = None
    import diffusers

    record = {"date": report.utc_now(), "command": "python -m fastercache_kernels compare " + shlex.join(args.argv),
              "commit": report.git_commit(), "machine": report.machine(),
              "versions": {**report.versions(), "diffusers": diffusers.__version__, "cache-dit": cd_version},
              "threads": torch.get_num_threads(), "rounds": args.rounds, "steps": args.steps,
              "load": {"before": os.getloadavg()}, "targets": {}, "points": [], "gaps": []}
    print(f"compare: {', '.join(models)}; {args.rounds} interleaved rounds, CPU time (process_time), "
          f"{torch.get_num_threads()} thread(s); diffusers {diffusers.__version__}, "
          f"cache-dit {cd_version or 'not installed (skipped)'}; load average {os.getloadavg()[0]:.2f}", flush=True)
    log = (lambda m: print(m, flush=True)) if args.verbose else None
    for model in models:
        t0 = time.perf_counter()
        target = make_target(model, clips=args.clips, steps=args.steps)
        methods = select(all_methods(target), args.methods)
        print(f"{target.description}: {len(methods)} methods ...", flush=True)
        record["targets"][model] = target.description
        record["points"] += [asdict(p) for p in run_model(target, methods, args.rounds, log=log)]
        print(f"  {time.perf_counter() - t0:.0f} s wall, load average {os.getloadavg()[0]:.2f}", flush=True)
    points = [Point(**p) for p in record["points"]]
    gaps = frontier_gaps(points)
    record["gaps"] = [asdict(g) for g in gaps]
    record["load"]["after"] = os.getloadavg()
    print("\n" + format_points(points))
    print("\n" + format_gaps(gaps))
    print("\n" + format_frontier(points))
    lb, la = record["load"]["before"], record["load"]["after"]
    print(f"\nload average (1 min) before {lb[0]:.2f}, after {la[0]:.2f} on {os.cpu_count()} CPUs; speedup: median "
          "over rounds of the uncached CPU time / the method's; gap: fk's best PSNR at >= the peer's speed minus "
          f"the peer's; same decisions: fk's sample equals the peer's up to rounding (>= {SAME_DB:.0f} dB against it and "
          f"{SAME_MARGIN_DB:.0f} dB closer to it than to the uncached one)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(record, indent=2, default=str))
        (out / "compare.md").write_text(markdown(points, gaps) + "\n")
        written = ["compare.json", "compare.md"]
        try:
            plot(points, out / "compare.png")
            written.append("compare.png")
        except ImportError:
            print("matplotlib not installed: no plot (pip install matplotlib)")
        print(f"wrote {', '.join(str(out / w) for w in written)}")
    return record
