"""`compare --compile`: the trained demo CogVideoX and Latte under torch.compile, fk's demo settings (adaptive ones
with decide="device", `fullgraph=True`) next to diffusers' best cache hooks (`fullgraph=False`: their hooks read
their decisions on the host behind `torch.compiler.disable`, so dynamo breaks the graph there), from the same
noise: fk's rows in one process, diffusers' in another (GROUPS), each with its own uncached references.

Each method compiles its own patched copy of the model and samples one untimed video (compiling; its wall and CPU
time are reported as the compile cost; fk's first call of a model is its probe, run eagerly by design); then
interleaved rounds reset the method's state and time one video each (CPU time, one thread). Speed is against the
compiled uncached model, PSNR against both the compiled and the eager uncached videos. The backend wrapper counts
how many compiled graphs run per model call in the timed rounds: fk's rows must run exactly one and compile none
(`graph_check`; the command exits with status 1 when it fails).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from . import compare

MODELS = ("cogvideox", "latte")
# Each owner's methods run in a process of their own, each with its own compiled and eager uncached references:
# compiling a model with diffusers' hooks (graph breaks inside the model's forward) made dynamo stop compiling that
# forward as a whole for every model of the class in the process (measured on the demo CogVideoX: the compiled
# uncached model went from 1 to 8 graphs per call and ran 4x slower than eager, with dynamo's eager backend), which
# must not reach fk's rows.
GROUPS = ("fk", "diffusers")


@dataclass
class CompiledMethod:
    """`apply(target, obj)` patches obj and returns a handle with reset() and remove() (None: no cache);
    `compile`: wrap obj in torch.compile; `fullgraph`: what torch.compile is asked for; `context`: diffusers'
    cache_context around each call."""

    name: str
    owner: str
    apply: object = None
    compile: bool = True
    fullgraph: bool = True
    context: bool = False
    own_frame: bool = False  # compile a function of its own that calls the model (see _OwnFrame)


@dataclass
class CompiledPoint:
    model: str
    method: str
    owner: str
    compiled: bool
    fullgraph: bool
    cpu_s: float | None = None  # median CPU seconds per video over the rounds
    speedup: float | None = None  # median over rounds of compiled-uncached CPU s / this method's
    speedup_vs_eager: float | None = None  # the same against the eager uncached model
    psnr: float | None = None  # against the compiled uncached video
    psnr_vs_eager: float | None = None  # against the eager uncached video
    exact: bool = False  # the video equals the compiled uncached one bit for bit
    exact_vs_eager: bool = False  # and the eager uncached one
    repeatable: bool | None = None  # the first timed video equals the compiling (first) one
    first_wall_s: float | None = None  # the untimed first video: compiling every graph it needs
    first_cpu_s: float | None = None
    graphs: int | None = None  # graphs compiled (dynamo's unique_graphs) by the first video
    graph_breaks: int | None = None  # dynamo's graph breaks in the first video
    graphs_per_call: float | None = None  # compiled graphs run per model call in the timed rounds
    recompiled_in_rounds: int = 0  # graphs compiled during the timed rounds (should be 0)
    group: str = ""  # the process it ran in (GROUPS)
    video_sha1: str | None = None  # of the first timed video: the groups' uncached videos must agree
    error: str | None = None
    rounds_cpu_s: list = field(default_factory=list)


class GraphCounter:
    """A torch.compile backend around a real one that counts the compiled graphs each call runs."""

    def __init__(self, backend: str = "inductor"):
        self.inner = torch._dynamo.lookup_backend(backend)
        self.runs = 0

    def __call__(self, gm, example_inputs):
        compiled = self.inner(gm, example_inputs)

        def run(*args):
            self.runs += 1
            return compiled(*args)

        return run


class _OwnFrame:
    """The model called from a compiled function whose code object is this wrapper's alone. dynamo keeps its graphs
    and its skip marks per code object: once a model with diffusers' hooks broke the graph inside the shared
    `forward` of the class, the uncached model compiled with torch.compile(model) ran that forward eagerly, compiling
    its blocks one by one (8 graphs per call, measured); from a frame of its own it keeps its one graph. Not for fk's
    models, whose pre-call hooks run outside the graph (compiler-disabled) and so need torch.compile(model)."""

    _count = 0

    def __init__(self, model, **compile_kw):
        def forward(*args, **kwargs):
            return model(*args, **kwargs)

        _OwnFrame._count += 1
        forward.__code__ = forward.__code__.replace(co_name=f"own_frame_{_OwnFrame._count}")
        self._orig_mod, self._fn = model, torch.compile(forward, **compile_kw)  # _orig_mod: demo.models.call reads it

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._orig_mod, name)


def _compiled(m, obj, backend):
    if not m.compile:
        return obj
    if m.own_frame:
        return _OwnFrame(obj, backend=backend, fullgraph=m.fullgraph)
    return torch.compile(obj, backend=backend, fullgraph=m.fullgraph)


def _graph_stats() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


class _DiffusersReset:
    """diffusers' hook on a compiled model: a new video resets the hooks' state in place (what its pipelines do
    after each video) instead of re-enabling them, which would give dynamo new hook objects to recompile for."""

    def __init__(self, inner: compare._DiffusersHandle):
        self.inner = inner

    def reset(self) -> None:
        self.inner.transformer._reset_stateful_cache()

    def remove(self) -> None:
        self.inner.remove()


def fk_methods(target) -> list[CompiledMethod]:
    """The demo's fk settings that compile to one graph: the FasterCache ones (host schedule, decided before the
    call) and the adaptive ones with decide="device". The demo's compositions of FasterCache with an adaptive policy
    need decide="host" (fk.apply refuses "device" for them), so they are not here."""
    import fastercache_kernels as fk

    from ..demo import settings

    fam, n = target.family, target.steps
    preset, tea = settings.PRESET[fam], settings.TEACACHE[fam]

    def m(name, make, decide=None):
        kw = {} if decide is None else {"decide": decide}
        return CompiledMethod(name, "fk", lambda t, obj: compare._FkHandle(fk.apply(obj, make(), **kw)))

    return [
        m(f"fk FasterCache preset {preset}", lambda: preset),
        m("fk with diffusers' config", lambda: settings.diffusers_config(fam)),
        m(f"fk TeaCache preset {tea}", lambda: fk.TeaCacheConfig.preset(tea, num_calls=n), "device"),
        m("fk First-Block-Cache 0.1", lambda: fk.FirstBlockCacheConfig(threshold=0.1, num_calls=n), "device"),
        m("fk AdaCache (30-call fast codebook)", lambda: settings._adacache(n), "device"),
    ]


def diffusers_methods(target) -> list[CompiledMethod]:
    """diffusers' hooks at the settings that did best against fk in the eager `compare`
    (docs/results.md): FirstBlockCache 0.1, MagCache 0.12 (ratios from diffusers' own calibration, eager), TaylorSeer
    lite interval 3; built and applied as `compare` does."""
    wanted = ("diffusers FirstBlockCache 0.1", "diffusers MagCache 0.12", "diffusers TaylorSeer lite interval 3")
    out = []
    for m in compare.diffusers_methods(target):
        if m.name in wanted:
            # compare's apply enables the hook and checks that it hooked a module
            apply = lambda t, obj, make=m.apply: _DiffusersReset(make(t, obj))  # noqa: E731
            out.append(CompiledMethod(m.name, "diffusers", apply, fullgraph=False, context=True))
    return out


def all_methods(target) -> list[CompiledMethod]:
    return [CompiledMethod("no cache (compiled)", "none", own_frame=True),
            CompiledMethod("no cache (eager)", "none", compile=False),
            *fk_methods(target), *diffusers_methods(target)]


def graph_check(points: list[CompiledPoint]) -> list[str]:
    """What breaks "one graph per call" for fk: a compiled fk row that failed (fullgraph=True refuses a graph
    break), broke the graph, ran other than one graph per call, or compiled again while timed. [] when all hold."""
    bad = []
    for p in points:
        if p.owner != "fk" or not p.compiled:
            continue
        if p.error is not None:
            bad.append(f"{p.model} {p.method}: {p.error}")
        elif p.graph_breaks or p.graphs_per_call != 1.0 or p.recompiled_in_rounds:
            bad.append(f"{p.model} {p.method}: {p.graph_breaks} graph break(s), {p.graphs_per_call:.2f} graphs per "
                       f"call, {p.recompiled_in_rounds} graph(s) compiled while timed")
    return bad


def run_model(target, methods: list[CompiledMethod], rounds: int, backend: str = "inductor",
              log=None) -> list[CompiledPoint]:
    """methods[0] must be the compiled uncached model (speed and PSNR reference), methods[1] the eager uncached one.
    A method that raises is recorded with its error and not run again."""
    from ..demo import metrics

    if [m.owner for m in methods[:2]] != ["none", "none"] or not methods[0].compile or methods[1].compile:
        raise ValueError("run_model: methods[0] must be the compiled uncached model, methods[1] the eager one")
    points = [CompiledPoint(target.family, m.name, m.owner, m.compile, m.compile and m.fullgraph) for m in methods]
    first: list = [None] * len(methods)
    runs = [0] * len(methods)  # compiled graphs run in the timed rounds
    counter = GraphCounter(backend)

    def apply(i, m, obj):
        handle = m.apply(target, obj) if m.apply is not None else None
        try:
            return _compiled(m, obj, counter), handle
        except Exception:
            if handle is not None:
                handle.remove()
            raise

    def first_video(i, m, run):  # compiles every graph it needs
        g0, b0 = _graph_stats()
        w0, c0 = time.perf_counter(), time.process_time()
        first[i] = target.sample(run, context=m.context)
        p = points[i]
        p.first_wall_s, p.first_cpu_s = time.perf_counter() - w0, time.process_time() - c0
        if m.compile:
            g1, b1 = _graph_stats()
            p.graphs, p.graph_breaks = g1 - g0, b1 - b0
        if log:
            log(f"  {target.family}: {m.name}: first video {p.first_wall_s:.1f} s wall"
                + (f", {p.graphs} graph(s) compiled, {p.graph_breaks} graph break(s)" if m.compile else ""))

    @contextlib.contextmanager
    def timed(i):  # graphs compiled while timed (should be none) and compiled graphs run
        g0, r0 = _graph_stats()[0], counter.runs
        yield
        points[i].recompiled_in_rounds += _graph_stats()[0] - g0
        runs[i] += counter.runs - r0

    videos = compare.interleaved_rounds(target, methods, points, rounds, apply, first_video, required=2, log=log,
                                        timed=timed)
    base, eager = points[0].rounds_cpu_s, points[1].rounds_cpu_s
    for i, p in enumerate(points):
        if p.error is not None:
            continue
        p.cpu_s = statistics.median(p.rounds_cpu_s)
        p.speedup = statistics.median(b / t for b, t in zip(base, p.rounds_cpu_s))
        p.speedup_vs_eager = statistics.median(b / t for b, t in zip(eager, p.rounds_cpu_s))
        p.psnr = metrics.psnr(videos[i], videos[0])
        p.psnr_vs_eager = metrics.psnr(videos[i], videos[1])
        p.exact, p.exact_vs_eager = bool(torch.equal(videos[i], videos[0])), bool(torch.equal(videos[i], videos[1]))
        p.repeatable = bool(torch.equal(videos[i], first[i]))
        p.video_sha1 = hashlib.sha1(videos[i].contiguous().numpy().tobytes()).hexdigest()
        if p.compiled:
            p.graphs_per_call = runs[i] / (target.steps * len(p.rounds_cpu_s))
    return points


def configure() -> None:
    """Compile in this process (its CPU time is then counted) and keep every method's graphs: each compiles its own
    copy of the same forward, more entries than dynamo's default limit of 8 per code object."""
    torch._inductor.config.compile_threads = 1
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 1024)


def run_group(model: str, group: str, clips: int, steps: int, rounds: int, backend: str, wanted: str | None,
              threads: int, verbose: bool) -> tuple[str, list[dict]]:
    """One process's share: the two uncached references and `group`'s methods (selected by `wanted` as compare's
    --methods) on `model`. Returns the target's description and the points as dicts."""
    torch.set_num_threads(threads)
    configure()
    target = compare.DemoTarget(model, clips=clips, steps=steps)
    maker = {"fk": fk_methods, "diffusers": diffusers_methods}[group]
    methods = all_methods(target)[:2] + compare.select(maker(target), wanted)
    log = (lambda m: print(f"[{group}] {m}", flush=True)) if verbose else None
    points = run_model(target, methods, rounds, backend, log=log)
    for p in points:
        p.group = group
    return target.description, [asdict(p) for p in points]


def _run_groups(model: str, args) -> list[tuple[str, list[dict]]]:
    """run_group for each group, each in a fresh (spawned) process, one after the other."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    out = []
    for group in GROUPS:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            out.append(pool.submit(run_group, model, group, args.clips, args.steps, args.rounds, args.backend,
                                   args.methods, args.threads or 1, args.verbose).result())
    return out


def _n(v, fmt):
    return "" if v is None else format(v, fmt)


def rows(points: list[CompiledPoint]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "process", "method", "compiled", "CPU s", "speedup", "vs eager no cache", "PSNR dB",
            "PSNR vs eager", "graphs compiled", "breaks", "graphs/call", "1st video wall s", "repeatable"]
    out = []
    for p in points:
        how = ("fullgraph" if p.fullgraph else "yes") if p.compiled else "eager"
        if p.error is not None:
            out.append([p.model, p.group, p.method, how, "", "", "", f"failed: {p.error}", "", "", "", "", "", ""])
            continue
        out.append([p.model, p.group, p.method, how, f"{p.cpu_s:.2f}", f"{p.speedup:.2f}x",
                    f"{p.speedup_vs_eager:.2f}x",
                    compare._db(p.psnr, p.exact), compare._db(p.psnr_vs_eager, p.exact_vs_eager),
                    _n(p.graphs, "d"), _n(p.graph_breaks, "d"),
                    _n(p.graphs_per_call, ".2f"), f"{p.first_wall_s:.1f}", "yes" if p.repeatable else "no"])
    return head, out


def format_points(points: list[CompiledPoint]) -> str:
    head, body = rows(points)
    return compare._table(head, body, right=tuple(range(4, 13)))


def markdown(points: list[CompiledPoint]) -> str:
    head, body = rows(points)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]
    return "\n".join(lines)


def main(args) -> dict:
    """`compare --compile`: returns the record also written as JSON under --out; exits with status 1 when
    `graph_check` fails."""
    import json
    import shlex
    from pathlib import Path

    import diffusers

    from . import report

    torch.set_num_threads(args.threads or 1)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise SystemExit(f"compare --compile: unknown or unsupported model(s) {', '.join(unknown) or repr(args.models)}"
                         f"; choose from {', '.join(MODELS)} (the trained demo models)")
    record = {"date": report.utc_now(), "command": "python -m fastercache_kernels compare " + shlex.join(args.argv),
              "commit": report.git_commit(), "machine": report.machine(),
              "versions": {**report.versions(), "diffusers": diffusers.__version__}, "backend": args.backend,
              "threads": torch.get_num_threads(), "rounds": args.rounds, "steps": args.steps, "clips": args.clips,
              "load": {"before": os.getloadavg()}, "targets": {}, "points": []}
    print(f"compare --compile: {', '.join(models)}; backend {args.backend}; {args.rounds} interleaved rounds after a "
          f"compiling video, CPU time, {torch.get_num_threads()} thread(s); diffusers {diffusers.__version__}; load "
          f"average {os.getloadavg()[0]:.2f}", flush=True)
    t_all = time.perf_counter()
    for model in models:
        t0 = time.perf_counter()
        print(f"{model}: {', '.join(GROUPS)}, one process each ...", flush=True)
        for description, points in _run_groups(model, args):
            record["targets"][model] = description
            record["points"] += points
        refs = {p["video_sha1"] for p in record["points"] if p["model"] == model and p["owner"] == "none"
                and p["compiled"]}
        record.setdefault("references_agree", {})[model] = len(refs) == 1
        print(f"  {time.perf_counter() - t0:.0f} s wall, load average {os.getloadavg()[0]:.2f}; compiled uncached "
              f"videos of the processes {'identical' if len(refs) == 1 else 'DIFFER'}", flush=True)
    record["wall_s"] = time.perf_counter() - t_all
    record["load"]["after"] = os.getloadavg()
    points = [CompiledPoint(**p) for p in record["points"]]
    bad = graph_check(points)
    record["graph_check"] = bad
    print("\n" + format_points(points))
    lb, la = record["load"]["before"], record["load"]["after"]
    print(f"\nload average (1 min) before {lb[0]:.2f}, after {la[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{record['wall_s']:.0f} s wall in all. speedup: median over rounds of the compiled uncached CPU time / the "
          "method's; graphs/call: compiled graphs run per model call in the timed rounds")
    print("graph check (fk: one graph per call): " + ("passed" if not bad else "FAILED\n  " + "\n  ".join(bad)))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare-compiled.json").write_text(json.dumps(record, indent=2, default=str))
        (out / "compare-compiled.md").write_text(markdown(points) + "\n")
        print(f"wrote {out / 'compare-compiled.json'}, {out / 'compare-compiled.md'}")
    if bad:
        raise SystemExit(1)
    return record
