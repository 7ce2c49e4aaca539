"""Sampling the demo models with and without caches: timing, calls computed, cache memory and fidelity."""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import time
import warnings
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
    cpu_seconds: float  # process CPU time of one sampling, median over the rounds
    wall_seconds: float
    speedup: float = 1.0  # by CPU time: the median over rounds of (no cache's CPU s / this setting's)
    wall_speedup: float = 1.0
    computed: int | None = None
    reused: int | None = None
    cache_mb: float = 0.0
    psnr: float | None = None  # mean per-frame PSNR (metrics.psnr: may exceed 100 where frames differ by rounding)
    identical: bool = False  # the samples equal no cache's bit for bit
    ssim: float | None = None
    temporal: float | None = None
    attn_reused: float | None = None  # share of cached attention calls served from the cache
    extra: dict = field(default_factory=dict)
    video: torch.Tensor | None = field(default=None, repr=False)  # the first round's samples [B, C, T, H, W]


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
    """(video, (wall s, CPU s), stats). CPU time is the process's (every thread's), so time spent waiting while other
    jobs hold the cores does not count: under load, wall-time speedups of these tiny models flipped below 1x."""
    handle = s.apply(model) if s.apply else None
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        video = sampling.sample(model, cond, null, noise, steps=steps, progress=progress)
        seconds = time.perf_counter() - w0, time.process_time() - c0
        stats = handle.stats() if handle is not None else {}
        if hasattr(handle, "summary"):  # what ran, call by call (fk's handle.summary(), shown once by the demo)
            text = io.StringIO()
            handle.summary(file=text)
            stats["summary"] = text.getvalue()
    finally:
        if handle is not None:
            handle.remove()
    return video, seconds, stats


def run(family: str, settings: list[Setting], n: int = 4, steps: int = 50, seed: int = 0, progress=None,
        gif_dir: Path | None = None, rounds: int = 3) -> tuple[list[Result], str]:
    """Samples every setting `rounds` times, interleaved (round r runs each setting once, in turn), so load from
    other jobs falls on all settings alike. CPU and wall times and their speedups are medians over the rounds (the
    speedup of a round is that round's uncached time over the setting's); outputs and statistics come from the
    first round (every round gives the same samples)."""
    model, weights = load(family)
    cond, null, noise, _ = inputs(n, seed)
    sampling.sample(model, cond, null, noise, steps=2)  # warm-up: first-call costs must not count against "no cache"
    first: list[tuple[torch.Tensor, dict]] = []
    times = [[(0.0, 0.0)] * rounds for _ in settings]
    for r in range(rounds):
        for i, s in enumerate(settings):
            video, times[i][r], stats = _sample_once(model, s, cond, null, noise, steps, progress)
            if r == 0:
                first.append((video, stats))
    results: list[Result] = []
    ref = first[0][0]
    for i, (s, (video, stats)) in enumerate(zip(settings, first)):
        wall, cpu = ([t[k] for t in times[i]] for k in (0, 1))
        r = Result(family, s.name, statistics.median(cpu), statistics.median(wall), video=video)
        if i == 0:
            r.computed, r.reused = steps, 0
        else:
            r.speedup = statistics.median(base[1] / t[1] for base, t in zip(times[0], times[i]))
            r.wall_speedup = statistics.median(base[0] / t[0] for base, t in zip(times[0], times[i]))
            cfg = stats.get("cfg", {})
            r.computed, r.reused = cfg.get("full", stats.get("computed")), cfg.get("skip", stats.get("reused"))
            attn = stats.get("attention", {})
            done = sum(k["computed"] for k in attn.values())
            skipped = sum(k["reused"] for k in attn.values())
            if done + skipped:
                r.attn_reused = skipped / (done + skipped)
            r.cache_mb = stats.get("cache_bytes", 0) / 2**20  # every buffer, the CFG residual's included
            r.extra = stats
            if gif_dir is not None:
                write_gif(ref, video, gif_dir / f"{family}_{_slug(s.name)}.gif")
        r.psnr = metrics.psnr(video, ref)
        r.identical = bool(torch.equal(video, ref))
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


def _frames_rgb(video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] in [-1, 1] -> uint8 [B, T, H, W, C]."""
    return ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 4, 1)


def write_png(ref: torch.Tensor, test: torch.Tensor, path: Path, labels: tuple[str, str], scale: int = 4,
              gap: int = 12) -> None:
    """Every frame at once: one row per clip, the uncached frames left of the gap, the cached ones right of it,
    the two labels above."""
    from PIL import Image, ImageDraw

    a, b = _frames_rgb(ref), _frames_rgb(test)
    n, t, h, w, _ = a.shape
    fw, fh = w * scale, h * scale
    head = 16
    side = t * fw
    canvas = Image.new("RGB", (2 * side + gap, head + n * fh), (255, 255, 255))
    for i in range(n):
        for j in range(t):
            for k, frames in enumerate((a, b)):
                tile = Image.fromarray(frames[i, j].numpy()).resize((fw, fh), Image.NEAREST)
                canvas.paste(tile, (k * (side + gap) + j * fw, head + i * fh))
    draw = ImageDraw.Draw(canvas)
    for k, label in enumerate(labels):
        draw.text((k * (side + gap) + 2, 2), label, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def summary_line(r: Result, rounds: int, frames: Path, weights: str = "trained") -> str:
    """One line for a model: the cached setting's CPU-time speedup and PSNR against no cache, and where its frames
    are."""
    pace = f"{r.speedup:.2f}x faster" if r.speedup >= 1 else f"{1 / r.speedup:.2f}x slower"
    psnr = "identical to" if r.identical else f"at {r.psnr:.1f} dB PSNR vs"
    model = r.family if weights == "trained" else f"{r.family} ({weights} weights)"
    return (f"{model}: {r.setting} {pace} (CPU time, median of {rounds} interleaved rounds) {psnr} no cache; "
            f"frames: {frames}")


class _Collect(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def library_notes():
    """Holds back Python warnings and diffusers' logged warnings raised inside the block, so none breaks into a
    progress bar (diffusers' own FasterCache hook logs that it is experimental, and its frequency split calls
    torch.meshgrid without `indexing`); yields a list that holds each distinct message once when the block ends,
    for the caller to print after its bar has closed."""
    from diffusers.utils import logging as diffusers_logging

    notes: list[str] = []
    root = diffusers_logging.get_logger("diffusers")
    saved = root.handlers[:], root.propagate
    root.handlers, root.propagate = [_Collect(notes)], False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield notes
    finally:
        root.handlers, root.propagate = saved
        notes += [f"{w.category.__name__} ({Path(w.filename).name}:{w.lineno}): {w.message}" for w in caught]
        notes[:] = dict.fromkeys(notes)


def format_results(results: list[Result]) -> str:
    head = ["model", "setting", "CPU s", "speedup", "wall s", "wall x", "CFG full", "CFG skip", "attn reused",
            "cache MB", "PSNR dB", "SSIM", "temporal"]
    rows = []
    for r in results:
        rows.append([r.family, r.setting, f"{r.cpu_seconds:.2f}", f"{r.speedup:.2f}x", f"{r.wall_seconds:.2f}",
                     f"{r.wall_speedup:.2f}x",
                     "" if r.computed is None else str(r.computed), "" if r.reused is None else str(r.reused),
                     "" if r.attn_reused is None else f"{r.attn_reused:.0%}",
                     f"{r.cache_mb:.2f}", "inf" if r.identical else f"{r.psnr:.2f}",
                     f"{r.ssim:.4f}", f"{r.temporal:.4f}"])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])
