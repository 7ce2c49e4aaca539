"""Timing and reporting: medians, GB/s from the bytes an op must move, ratios measured side by side."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch


def sync(device) -> None:
    """Waits for the device's queued work (CUDA): every timing here brackets a call with this, or with events."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_sync = sync


class _Timer:
    """Times one call: CUDA events recorded around it on the current stream (then synchronised) on a CUDA device,
    perf_counter with a synchronise either side elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            self.start.record()
            fn()
            self.end.record()
            self.end.synchronize()
            return self.start.elapsed_time(self.end) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def timed(fn: Callable[[], object], device="cpu") -> tuple[object, float]:
    """(fn(), its wall seconds), the device synchronised before and after (end-to-end calls with host work)."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def median_seconds(fn: Callable[[], object], device: torch.device | str = "cpu", *, warmup: int = 2,
                   repeat: int = 15, min_seconds: float = 0.0) -> float:
    """Median time of fn() over `repeat` runs (more if they take less than min_seconds in total); CUDA work is
    timed with events."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    sync(device)
    timer = _Timer(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_seconds:
        times.append(timer(fn))
    return statistics.median(times)


def median_seconds_interleaved(fns: dict[str, Callable[[], object]], device: torch.device | str = "cpu", *,
                               warmup: int = 2, repeat: int = 15, min_seconds: float = 0.0) -> dict[str, float]:
    """Median time of each fn, run in turn (one call of each per round), so load from other processes that
    comes and goes falls on all of them alike; CUDA work is timed with events."""
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    timer = _Timer(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeat or time.perf_counter() - start < min_seconds:
        for name, fn in fns.items():
            times[name].append(timer(fn))
        rounds += 1
    return {name: statistics.median(ts) for name, ts in times.items()}


@dataclass
class Copy:
    """out.copy_(a) at one size and dtype: timed in the same rounds as the op, its GB/s is the roof of the row."""

    fn: Callable[[], object]
    nbytes: int


def copy_case(numel: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> Copy:
    a = torch.randn(numel, device=device).to(dtype)
    out = torch.empty_like(a)
    return Copy(lambda: out.copy_(a), 2 * numel * a.element_size())


def copy_gbps(numel: int, dtype: torch.dtype, device: torch.device | str = "cpu", **kw) -> float:
    """Bandwidth of out.copy_(a) (read + write) measured now: the roof the memory-bound ops are held to."""
    a = torch.randn(numel, device=device).to(dtype)
    out = torch.empty_like(a)
    t = median_seconds(lambda: out.copy_(a), device, **kw)
    return 2 * numel * a.element_size() / t / 1e9


@dataclass
class Row:
    op: str
    case: str  # shape and dtype
    impl: str
    ms: float
    gbps: float | None = None
    vs_eager: float | None = None  # eager time / this time (>1: faster than eager)
    of_copy: float | None = None  # gbps / copy gbps
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def measure(op: str, case: str, impls: dict[str, Callable[[], object]], nbytes: int, device,
            copy: float | Copy | None, eager: str = "eager", **kw) -> list[Row]:
    """Times every implementation of one case side by side, interleaved; ratios are against impls[eager]. `copy`:
    the copy bandwidth in GB/s, or a Copy timed in the same rounds."""
    rows = []
    fns = dict(impls)
    if isinstance(copy, Copy):
        fns[" copy"] = copy.fn
    times = median_seconds_interleaved(fns, device, **kw)
    if isinstance(copy, Copy):
        copy = copy.nbytes / times.pop(" copy") / 1e9
    base = times.get(eager)
    for name, t in times.items():
        gbps = nbytes / t / 1e9 if nbytes else None
        rows.append(Row(op, case, name, t * 1e3, gbps, base / t if base else None,
                        gbps / copy if (gbps and copy) else None))
    return rows


def format_table(rows: list[Row]) -> str:
    head = ["op", "case", "impl", "median ms", "GB/s", "x eager", "of copy"]
    body = [[r.op, r.case, r.impl, f"{r.ms:.3f}", "" if r.gbps is None else f"{r.gbps:.1f}",
             "" if r.vs_eager is None else f"{r.vs_eager:.2f}x", "" if r.of_copy is None else f"{r.of_copy:.0%}"]
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i >= 3 else str(c).ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)])
