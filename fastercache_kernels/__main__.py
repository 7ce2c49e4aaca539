"""python -m fastercache_kernels info | bench | demo | quality | compare | calibrate | gpu-check"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from . import _extras


def _info() -> None:
    import torch

    from . import __version__, _backend, _ext

    print(f"fastercache_kernels {__version__}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  platform {platform.platform()}")
    try:
        import triton

        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton: not installed")
    build = _ext.build_info()
    print("build: " + (", ".join(f"{k}={v}" for k, v in build.items()) if build else "no compiled build found"))
    print("backends:")
    for name, (ok, why) in _backend.report().items():
        print(f"  {name}: {'available' if ok else 'unavailable'}: {why}")
    print(f"selected for cpu tensors: {_backend.select(torch.device('cpu'))}")
    if torch.cuda.is_available():
        print(f"selected for cuda tensors: {_backend.select(torch.device('cuda'))}")


def _pick(given: str, known, what: str) -> list[str]:
    names = [n.strip() for n in given.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"unknown {what} {', '.join(unknown) or repr(given)}; choose from {', '.join(known)}")
    return names


def _bench(args) -> None:
    import shlex
    import time

    import torch

    from .bench import report
    from .bench.core import format_table
    from .bench.ops import (
        BENCHES,
        DEFAULT_SHAPES,
        DTYPE_NAMES,
        QUICK_SHAPES,
        SHAPE_KIND,
        SHAPES,
        TENSORS_HELD,
        custom_shapes,
        timed_backends,
    )

    if args.plot:
        _extras.require("plot", "python -m fastercache_kernels bench --plot")
    if args.merge:
        record = report.merge([json.loads(Path(f).read_text()) for f in args.merge])
        _print_record(record)
        _write(record, args)
        return
    names = _pick(args.ops, BENCHES, "op(s)") if args.ops else list(BENCHES)
    dtypes = _pick(args.dtypes, DTYPE_NAMES, "dtype(s)")
    if args.numel is not None:
        shapes = custom_shapes(args.numel)
    else:
        wanted = args.shapes or ",".join(QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
        shapes = [SHAPES[n] for n in (SHAPES if wanted == "all" else _pick(wanted, SHAPES, "shape(s)"))]
    repeat = args.repeat or (5 if args.quick else 9)
    if args.threads:
        torch.set_num_threads(args.threads)  # the CPU module follows torch's setting
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    timed, not_timed = timed_backends(device)
    record = {
        "date": report.utc_now(), "command": "python -m fastercache_kernels bench " + shlex.join(args.argv),
        "machine": report.machine(), "versions": report.versions(), "commit": report.git_commit(),
        "device": str(device), "repeat": repeat,
        "backends": {"timed": timed, "not_timed": not_timed},
        "shapes": {s.name: {"dims": list(s.dims), "kind": s.kind, "frames": s.frames, "note": s.note}
                   for s in shapes},
        "skipped": [], "rows": [], "load": {"before": os.getloadavg()},
    }
    v = record["versions"]
    print(f"machine: {report.machine_line(record['machine'])}")
    print(f"python {v['python']}  torch {v['torch']}  triton {v['triton']}  commit {record['commit'][:12]}  "
          f"{record['date']}  device {device}  median of {repeat}")
    print(f"backends timed: {', '.join(timed)}")
    for name, why in not_timed.items():
        print(f"  {name}: {why}")
    budget = args.max_gb * 2**30
    t_start = time.perf_counter()
    for name in names:
        rows = []
        for shape in (s for s in shapes if s.kind == SHAPE_KIND[name]):
            for dt in dtypes:
                dtype = DTYPE_NAMES[dt]
                need = TENSORS_HELD[name] * shape.numel * max(4, dtype.itemsize)
                if need > budget:
                    why = f"{name} at {shape.name} {dt} needs about {need / 2**30:.1f} GB > --max-gb {args.max_gb:g}"
                    record["skipped"].append(why)
                    print(f"skipped: {why}", flush=True)
                    continue
                print(f"  {name} at {shape.label()} {dt} ...", end=" ", flush=True, file=sys.stderr)
                t0 = time.perf_counter()
                rows += BENCHES[name](dtype=dtype, device=device, shape=shape, repeat=repeat)
                print(f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        if rows:
            print(f"\n{name}\n{format_table(rows)}", flush=True)
        record["rows"] += [r.as_dict() for r in rows]
    record["seconds"] = round(time.perf_counter() - t_start, 1)
    record["load"]["after"] = os.getloadavg()
    load = record["load"]
    print(f"\n{len(record['rows'])} rows in {record['seconds']:.0f} s; load average before {load['before'][0]:.2f}, "
          f"after {load['after'][0]:.2f}. {COLUMNS}")
    _write(record, args)


COLUMNS = ("Columns: median ms of the runs; GB/s from the bytes the op must move; x eager: the eager formula's time "
           "/ this one's (cfg_residual_split: the FFT reference's); of copy: GB/s / out.copy_(a)'s GB/s at the same "
           "size, measured in the same run.")


def _print_record(record: dict) -> None:
    from .bench import report
    from .bench.core import Row, format_table

    print(f"machine: {report.machine_line(record['machine'])}")
    print(f"medians of {len(record['merged_from'])} runs: " + ", ".join(
        f"{r['date']} (load {r['load']['before'][0]:.2f}->{r['load']['after'][0]:.2f})" if r.get("load") else r["date"]
        for r in record["merged_from"]))
    for op in dict.fromkeys(r["op"] for r in record["rows"]):
        rows = [Row(**r) for r in record["rows"] if r["op"] == op]
        print(f"\n{op}\n{format_table(rows)}")
    print(COLUMNS)


def _write(record: dict, args) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2))
        print(f"wrote {args.json}")
    if args.markdown:
        from .bench.report import markdown

        Path(args.markdown).write_text(markdown(record) + "\n")
        print(f"wrote {args.markdown}")
    if args.plot:
        from .bench.report import plot

        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(record, args.plot)
        print(f"wrote {args.plot}")


def _set_threads(args) -> None:
    import torch

    # One thread by default: on this shared 2-core machine two threads made the tiny models' wall times follow
    # the other jobs (50 calls took 4-30 s instead of 0.7 s); their matmuls are too small to share.
    torch.set_num_threads(args.threads or 1)


def _sample(family: str, sets, n: int, steps: int, rounds: int, gif_dir: Path | None):
    """One model's interleaved rounds under a progress bar; the libraries' warnings are held back while the bar
    runs and printed once after it closes."""
    from tqdm import tqdm

    from .demo import run

    with run.library_notes() as notes:
        with tqdm(total=len(sets) * steps * rounds, desc=f"sampling {family}", unit="call",
                  dynamic_ncols=True) as bar:
            results, weights = run.run(family, sets, n=n, steps=steps, progress=lambda: bar.update(1),
                                       gif_dir=gif_dir, rounds=rounds)
    for note in notes:
        print(f"  note from a library while sampling {family}: {note}")
    return results, weights


class _Clock:
    """The whole sampling's CPU and wall seconds and the load average before and after, for the closing lines."""

    def __init__(self):
        import time

        self._time = time
        self.load = [os.getloadavg()[0]]
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def line(self) -> str:
        self.load.append(os.getloadavg()[0])
        return (f"sampling took {self._time.process_time() - self.cpu:.0f} s of CPU time, "
                f"{self._time.perf_counter() - self.wall:.0f} s wall; 1-minute load average {self.load[0]:.2f} "
                f"before, {self.load[1]:.2f} after (speedups by CPU time: waiting for a core does not count)")


def _header(args) -> None:
    import torch

    print(f"fastercache_kernels {args.cmd} on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.clips} clips, {args.steps} CFG calls each, "
          f"{args.rounds} interleaved rounds\n")


def _demo(args) -> None:
    """The main job, short: per model, no cache against the recommended setting; one summary line each."""
    _extras.require("demo", "python -m fastercache_kernels demo")
    from .demo import run, settings

    _set_threads(args)
    _header(args)
    out = Path(args.out)
    clock, lines = _Clock(), []
    for family in args.models.split(","):
        results, weights = _sample(family, settings.recommended(family, args.steps), args.clips, args.steps,
                                   args.rounds, gif_dir=None)
        ref, cached = results
        png = out / f"{family}.png"
        run.write_png(ref.video, cached.video, png, ("no cache", f"{cached.setting}: {cached.speedup:.2f}x by CPU "
                                                                  f"time, PSNR {cached.psnr:.1f} dB"))
        run.write_gif(ref.video, cached.video, png.with_suffix(".gif"))
        lines.append(run.summary_line(cached, args.rounds, png, weights))
        if len(lines) == 1 and cached.extra.get("summary"):  # once: what the cache did, call by call
            print(f"\n{family}, {cached.setting}: handle.summary() of its first video\n{cached.extra['summary']}")
    print(clock.line())
    print("every setting, both models and the op table: make demo-full (python -m fastercache_kernels quality)")
    print("\n".join(lines))


def _quality(args) -> None:
    """The full table: fidelity against speed (CPU and wall time) for every setting, side-by-side GIFs, then the
    fused ops against their eager formulas."""
    _extras.require("demo", "python -m fastercache_kernels quality")
    import torch

    from .bench.core import format_table
    from .bench.ops import BENCHES
    from .demo import run, settings

    _set_threads(args)
    _header(args)
    gif_dir = Path(args.gifs)
    clock, all_results = _Clock(), []
    for family in args.models.split(","):
        results, weights = _sample(family, settings.settings(family, args.steps), args.clips, args.steps,
                                   args.rounds, gif_dir)
        print(f"{family}: {weights} weights")
        all_results += results
    print(run.format_results(all_results))
    print(f"CPU s, wall s and both speedups: medians of {args.rounds} interleaved rounds; speedup is by CPU time")
    print(clock.line())
    print(f"GIFs (uncached left, cached right) in {gif_dir}/")
    print("\nfused ops against the eager formula (median of a few runs; 4M elements; all ops: "
          "python -m fastercache_kernels bench):")
    rows = []
    for name in ("forecast", "feature_diff", "residual_diff_update", "motion_score"):
        rows += BENCHES[name](numel=1 << 22, dtype=torch.float32, device="cpu", repeat=7)
    print(format_table(rows))


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gpu-check"]:  # its own parser (python -m fastercache_kernels gpu-check --help)
        from .gpucheck import main as gpu_check

        return gpu_check(argv[1:])
    p = argparse.ArgumentParser(prog="python -m fastercache_kernels", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="versions, available backends and why the others are not")
    sub.add_parser("gpu-check", help="on a GPU machine: build for its architecture, run the GPU tests and the op "
                   "and end-to-end benchmarks within a time budget (docs/gpu.md)")
    b = sub.add_parser("bench", help="time every op against its eager formula and the copy bandwidth")
    b.add_argument("--ops", help="comma-separated op names (default: all)")
    b.add_argument("--shapes", help="comma-separated shape names, or all (default: the three latents, latte-hidden and "
                   "cogvideox-2b-hidden; all adds opensora-hidden)")
    b.add_argument("--quick", action="store_true", help="the latents and the smallest hidden shape, 5 rounds each")
    b.add_argument("--numel", type=int, help="instead of the named shapes: one latent and one hidden shape of "
                   "about this many elements")
    b.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32,fp16,bf16")
    b.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    b.add_argument("--repeat", type=int, help="interleaved rounds per median (default 9; 5 with --quick)")
    b.add_argument("--threads", type=int, help="CPU threads for torch and the CPU module (default: torch's)")
    b.add_argument("--max-gb", type=float, default=8.0, help="skip cases whose tensors need more memory (GB)")
    b.add_argument("--merge", nargs="+", metavar="JSON", help="instead of timing: the medians of several runs' JSON "
                   "files (then --json/--plot write the merged result)")
    b.add_argument("--json", help="write the results, machine, versions, commit and date here")
    b.add_argument("--markdown", help="write a compact Markdown table (eager, fused op, out=, ratios) here")
    b.add_argument("--plot", help="write a PNG chart here (GB/s per backend, copy bandwidth, ratio to eager)")
    for name, helptext, clips in (
            ("demo", "the main job: each demo DiT without a cache and with its recommended setting, one summary "
             "line each (about 80 s of CPU time)", 4),
            ("quality", "the full table: every cache setting, both models, GIFs, then the op table", 8)):
        d = sub.add_parser(name, help=helptext)
        d.add_argument("--models", default="cogvideox,latte", help="comma-separated: cogvideox,latte")
        d.add_argument("--clips", type=int, default=clips)
        d.add_argument("--steps", type=int, default=50, help="CFG calls per sample")
        d.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (medians; default 3)")
        d.add_argument("--threads", type=int, help="CPU threads (default 1: these models are tiny)")
        if name == "quality":
            d.add_argument("--gifs", default="results/quality", help="where the GIFs go")
        else:
            d.add_argument("--out", default="results/demo", help="where the side-by-side PNG and GIF per model go")
    c = sub.add_parser("calibrate", help="fit TeaCache's rescaling polynomial (or MagCache's magnitude ratios) to a "
                       "pipeline's transformer")
    c.add_argument("--policy", default="teacache", choices=("teacache", "magcache"),
                   help="teacache: the rescaling polynomial; magcache: the per-step magnitude ratios")
    c.add_argument("--model", help="a local diffusers pipeline directory (default: the tiny random --family one)")
    c.add_argument("--family", default="wan", choices=("wan", "cogvideox", "latte"), help="tiny pipeline")
    c.add_argument("--prompts", help="a text file, one prompt per line (each samples one video)")
    c.add_argument("--steps", type=int, default=30)
    c.add_argument("--indicator", default="auto", help="TeaCache indicator (auto: the adapter's)")
    c.add_argument("--degree", type=int, default=4)
    c.add_argument("--threads", type=int, help="CPU threads for the tiny pipeline (default 1)")
    c.add_argument("--json", help="write the coefficients and the fitted points here")
    f = sub.add_parser("compare", help="the speed/PSNR frontier: fk's settings next to diffusers' cache hooks (and "
                       "cache-dit's DBCache when installed), same models, noise and process")
    f.add_argument("--models", default="cogvideox,latte,wan", help="comma-separated: cogvideox,latte,wan")
    f.add_argument("--methods", help="comma-separated substrings of the method names to run (default: all; "
                   "'no cache' always runs)")
    f.add_argument("--clips", type=int, default=1, help="clips per demo-model sample (default 1)")
    f.add_argument("--steps", type=int, default=50, help="sampling steps")
    f.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (medians; default 3)")
    f.add_argument("--threads", type=int, help="CPU threads (default 1)")
    f.add_argument("--quick", action="store_true", help="1 clip, 10 steps, 1 round: checks that it runs")
    f.add_argument("--out", help="write compare.json, compare.md and compare.png (speedup vs PSNR) here")
    f.add_argument("--verbose", action="store_true", help="print each round and each failure as it happens")
    f.add_argument("--compile", action="store_true", help="the demo models under torch.compile: fk's demo settings "
                   "(fullgraph, decide='device') against diffusers' best hooks, with graph counts (exit 1 when an fk "
                   "row runs other than one graph per call); --models cogvideox,latte only")
    f.add_argument("--backend", default="inductor", help="torch.compile backend with --compile (default inductor; "
                   "eager / aot_eager skip code generation)")
    args = p.parse_args(argv)
    args.argv = argv[1:]
    if args.cmd == "calibrate":
        from . import calibrate

        return calibrate.main(args)
    if args.cmd == "compare":
        _extras.require("demo", "python -m fastercache_kernels compare")
        from .bench import compare

        if args.quick:
            args.clips, args.steps, args.rounds = 1, 10, 1
        if args.compile:
            from .bench import compiled

            if args.models == "cogvideox,latte,wan":  # compare's default: Wan's pipeline is not compiled here
                args.models = "cogvideox,latte"
            compiled.main(args)
            return None
        compare.main(args)
        return None
    try:
        {"info": lambda a: _info(), "bench": _bench, "demo": _demo, "quality": _quality}[args.cmd](args)
    except _extras.MissingExtraError as e:
        raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
    sys.exit(main())
