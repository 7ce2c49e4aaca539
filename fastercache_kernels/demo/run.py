"""Sampling the demo models with and without caches: timing, calls computed, cache memory and fidelity."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import data, metrics, models, sampling


@dataclass
class Setting:
    """A way to sample: `apply(model)` patches the model and returns a handle with remove() (None: no cache)."""

    name: str
    apply: Callable | None = None


@dataclass
class Result:
    family: str
    setting: str
    seconds: float
    speedup: float = 1.0
    computed: int | None = None
    reused: int | None = None
    cache_mb: float = 0.0
    psnr: float | None = None
    ssim: float | None = None
    temporal: float | None = None
    attn_reused: float | None = None  # share of cached attention calls served from the cache
    extra: dict = field(default_factory=dict)


def load(family: str):
    """The trained demo model when shipped, else the same architecture with random weights (fixed seed)."""
    if models.has_trained(family):
        return models.load_trained(family), "trained"
    return models.build(family, seed=0).eval(), "random (seed 0)"


def inputs(n: int, seed: int):
    """Condition, null condition, noise and labels for n clips; the labels cycle through the colours and
    directions so a handful of clips shows every class the models know."""
    tokens = data.ConditionTokens()
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(n)
    labels = torch.stack([(i // 4) % 2, i % 4, (i + i // 4) % 4], dim=1)
    noise = torch.randn(n, data.CHANNELS, data.FRAMES, data.SIZE, data.SIZE, generator=g)
    return tokens(labels), tokens.null_like(n), noise, labels


def _stat(stats: dict, *keys, default=None):
    for k in keys:
        if k in stats:
            return stats[k]
    return default


def _sample_once(model, s: Setting, cond, null, noise, steps: int, progress):
    handle = s.apply(model) if s.apply else None
    try:
        t0 = time.perf_counter()
        video = sampling.sample(model, cond, null, noise, steps=steps, progress=progress)
        seconds = time.perf_counter() - t0
        stats = handle.stats() if handle is not None else {}
    finally:
        if handle is not None:
            handle.remove()
    return video, seconds, stats


def run(family: str, settings: list[Setting], n: int = 4, steps: int = 50, seed: int = 0, progress=None,
        gif_dir: Path | None = None, rounds: int = 3) -> tuple[list[Result], str]:
    """Samples every setting `rounds` times, interleaved (round r runs each setting once, in turn), so load from
    other jobs falls on all settings alike. Wall time and speedup are medians over the rounds (the speedup of a
    round is that round's uncached time over the setting's); outputs and statistics come from the first round
    (every round gives the same samples)."""
    model, weights = load(family)
    cond, null, noise, _ = inputs(n, seed)
    sampling.sample(model, cond, null, noise, steps=2)  # warm-up: first-call costs must not count against "no cache"
    first: list[tuple[torch.Tensor, dict]] = []
    times = [[0.0] * rounds for _ in settings]
    for r in range(rounds):
        for i, s in enumerate(settings):
            video, times[i][r], stats = _sample_once(model, s, cond, null, noise, steps, progress)
            if r == 0:
                first.append((video, stats))
    results: list[Result] = []
    ref = first[0][0]
    for i, (s, (video, stats)) in enumerate(zip(settings, first)):
        r = Result(family, s.name, statistics.median(times[i]))
        if i == 0:
            r.computed, r.reused = steps, 0
        else:
            r.speedup = statistics.median(base / t for base, t in zip(times[0], times[i]))
            cfg = stats.get("cfg", {})
            r.computed, r.reused = cfg.get("full", stats.get("computed")), cfg.get("skip", stats.get("reused"))
            attn = stats.get("attention", {})
            done = sum(k["computed"] for k in attn.values())
            skipped = sum(k["reused"] for k in attn.values())
            if done + skipped:
                r.attn_reused = skipped / (done + skipped)
            r.cache_mb = (stats.get("cache_bytes", 0) + stats.get("cfg_residual_bytes", 0)) / 2**20
            r.extra = stats
            if gif_dir is not None:
                write_gif(ref, video, gif_dir / f"{family}_{_slug(s.name)}.gif")
        r.psnr = metrics.psnr(video, ref)
        r.ssim = metrics.ssim(video, ref)
        r.temporal = metrics.temporal_consistency(video, ref)
        results.append(r)
    return results, weights


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def write_gif(ref: torch.Tensor, test: torch.Tensor, path: Path, scale: int = 8) -> None:
    """Side-by-side animation: uncached (left) and cached (right) for each clip, stacked vertically."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    both = torch.cat([ref, test], dim=-1)  # [B, C, T, H, 2W]
    both = torch.cat(list(both), dim=-2)  # [C, T, B*H, 2W]
    frames = ((both.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
    images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=150, loop=0)


def format_results(results: list[Result]) -> str:
    head = ["model", "setting", "wall s", "speedup", "CFG full", "CFG skip", "attn reused", "cache MB", "PSNR dB",
            "SSIM", "temporal"]
    rows = []
    for r in results:
        rows.append([r.family, r.setting, f"{r.seconds:.2f}", f"{r.speedup:.2f}x",
                     "" if r.computed is None else str(r.computed), "" if r.reused is None else str(r.reused),
                     "" if r.attn_reused is None else f"{r.attn_reused:.0%}",
                     f"{r.cache_mb:.2f}", "inf" if r.psnr and r.psnr >= 100 else f"{r.psnr:.2f}",
                     f"{r.ssim:.4f}", f"{r.temporal:.4f}"])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])
