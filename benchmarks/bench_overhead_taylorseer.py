"""Host time per call of fk's TaylorSeer hooks against diffusers' TaylorSeerCacheConfig hooks, same decisions (issue
21 item 3/4; bench_overhead.py does this for First-Block-Cache).

A tiny WanTransformer3DModel (fastercache_kernels/tiny.py's Wan transformer: random weights, 2 heads of 8, a
[1, 4, 3, 8, 8] latent, 16 text tokens of 32, so its blocks do almost no work and a call's time is host time) at 4 and
16 blocks runs videos of `--steps` steps with classifier-free guidance as WanPipeline runs it: two calls per step,
inside diffusers' `cache_context("cond")` and `cache_context("uncond")` (timesteps 999 -> 0). Methods, at
`compare --models wan`'s TaylorSeer points (order 1, 3 warm-up steps, intervals 3 and 5; fp32 factors for diffusers):

- no cache: the unpatched model;
- diffusers TaylorSeer lite / (attention): `model.enable_cache(TaylorSeerCacheConfig(..., use_lite_mode=lite,
  cache_identifiers=None if lite else [the blocks' attention modules]))`;
- fk TaylorSeer lite / (attention), `decide="host"` and the default `decide="auto"`.

Every method runs its own copy of the model, patched once; a first video per method is not timed; then `--rounds`
interleaved rounds time one video per method, call by call (thread CPU time, one thread). Calls are split by what
the schedule did (C: computed, f: forecast) and the table gives the median per kind (`--stat p10`: the 10th
percentile, which other jobs on a shared machine can only raise). The script prints the decision strips and says
whether diffusers' and fk's match. It also writes a cProfile of fk's per-call path (decide="host", one video at the
largest block count, each mode at interval 5) to --out.

Run (from the checkout's root; the timings in docs/results.md were pinned to one CPU):
    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/bench_overhead_taylorseer.py [--blocks 4,16]
        [--rounds 5] [--steps 30] [--intervals 3,5] [--out results/overhead_taylorseer] [--stat median|p10]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_overhead import Runner, interleaved  # noqa: E402  (one timing loop for both benchmarks)
from bench_overhead import tiny_wan as tiny_model  # noqa: E402
from bench_overhead import wan_inputs as make_inputs  # noqa: E402

import fastercache_kernels as fk  # noqa: E402

ATTENTION_NAMES = r"[^.]*blocks\.\d+\.attn\d*"  # compare.py's: the attention modules of Wan's blocks


class DiffusersTS:
    """diffusers' TaylorSeer hooks; a new video re-enables them (fresh state, as compare.py's handle does)."""

    def __init__(self, model, k: int, lite: bool):
        from diffusers.hooks import TaylorSeerCacheConfig

        self.model = model
        self.config = TaylorSeerCacheConfig(cache_interval=k, max_order=1, disable_cache_before_step=3,
                                            taylor_factors_dtype=torch.float32, use_lite_mode=lite,
                                            cache_identifiers=None if lite else [ATTENTION_NAMES])
        model.enable_cache(self.config)
        self._hook()

    def _hook(self):  # the hook of the forecast module (lite: proj_out; else the first attention module)
        mod = self.model.proj_out if self.config.use_lite_mode else self.model.blocks[0].attn1
        self.hook = mod._diffusers_hook.get_hook("taylorseer_cache")

    def computed(self) -> bool:  # the call just made (inside its cache context) updated the factors
        st = self.hook.state_manager.get_state()
        return st.last_update_step == st.current_step

    def reset(self) -> None:
        self.model.disable_cache()
        self.model.enable_cache(self.config)
        self._hook()


def fk_config(k: int, lite: bool):
    if lite:
        return fk.TaylorSeerConfig(cache_interval=k)
    return fk.TaylorSeerConfig(cache_interval=k, mode="attention", modules=(ATTENTION_NAMES,))


def methods(intervals):
    out = [("no cache", None)]
    for lite in (True, False):
        mode = "lite" if lite else "(attention)"
        for k in intervals:
            out += [(f"diffusers TaylorSeer {mode} {k}", lambda m, k=k, lite=lite: DiffusersTS(m, k, lite)),
                    (f"fk TaylorSeer {mode} {k} host", lambda m, k=k, lite=lite: fk.apply(m, fk_config(k, lite),
                                                                                        decide="host")),
                    (f"fk TaylorSeer {mode} {k} auto", lambda m, k=k, lite=lite: fk.apply(m, fk_config(k, lite)))]
    return out


def bench(blocks: int, rounds: int, steps: int, intervals, log) -> list[Runner]:
    base = tiny_model(blocks)
    runners = [Runner(name, copy.deepcopy(base), apply, reused="f") for name, apply in methods(intervals)]
    return interleaved(runners, make_inputs(steps), rounds, log, f"{blocks} blocks")


def profile_fk(blocks: int, steps: int) -> str:
    out = io.StringIO()
    for lite in (True, False):
        model = tiny_model(blocks)
        inputs = make_inputs(steps)
        handle = fk.apply(model, fk_config(5, lite), decide="host")
        r = Runner("fk", model, None)
        r.handle = handle
        r.video(inputs, timed=False)
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        r.video(inputs, timed=False)
        prof.disable()
        handle.remove()
        stats = pstats.Stats(prof, stream=out)
        out.write(f"\n==== fk TaylorSeer {'lite' if lite else '(attention)'} interval 5, decide='host', one video of "
                  f"{steps} steps x 2 branches, {blocks} blocks, tiny Wan; timer: thread CPU time\n\n")
        stats.sort_stats("cumulative").print_stats(25)
        stats.sort_stats("tottime").print_stats(20)
    return out.getvalue()


def table(results: dict[int, list[Runner]]) -> str:
    head = ["blocks", "method", "C calls", "C us/call", "C over no cache", "f calls", "f us/call"]
    rows = []
    for n in sorted(results):
        base = results[n][0].median("C")
        for r in results[n]:
            c, f = r.median("C"), r.median("f")
            fmt = lambda v, s="{:.0f}": "" if v is None else s.format(v)  # noqa: E731
            rows.append([str(n), r.name, str(r.kinds.count("C")), fmt(c),
                         fmt(None if c is None or r.handle is None else c - base, "{:+.0f}"),
                         str(r.kinds.count("f")), fmt(f)])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 1 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", default="4,16", help="comma-separated block counts")
    p.add_argument("--rounds", type=int, default=5, help="timed videos per method, interleaved")
    p.add_argument("--steps", type=int, default=30, help="sampler steps per video (two calls each: CFG)")
    p.add_argument("--intervals", default="3,5", help="comma-separated cache intervals")
    p.add_argument("--out", default="results/overhead_taylorseer", help="where the JSON and the profile go")
    p.add_argument("--stat", default="median", choices=["median", "p10"])
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile of fk's path")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    Runner.stat = args.stat
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    intervals = [int(k) for k in args.intervals.split(",")]
    load_before = os.getloadavg()
    results = {n: bench(n, args.rounds, args.steps, intervals, log) for n in (int(b) for b in args.blocks.split(","))}
    print(f"host time per call ({args.stat} thread CPU us; {args.rounds} interleaved videos of {args.steps} steps x 2 "
          f"CFG calls per method; tiny Wan; C computed, f forecast; fk from {Path(fk.__file__).parent}; torch "
          f"{torch.__version__}, 1 thread)")
    print(table(results))
    match = True
    for n, runners in results.items():
        print(f"\n{n} blocks, decisions of the first timed video (C computed, f forecast; cond, uncond per step):")
        for r in runners[1:]:
            print(f"  {r.name:<36} {r.strip}")
        for i in range(1, len(runners), 3):
            same = runners[i].kinds == runners[i + 1].kinds == runners[i + 2].kinds
            match &= same
        print(f"  every timed call, diffusers against fk: {'the same decisions' if match else 'DECISIONS DIFFER'}")
    load_after = os.getloadavg()
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_profile:
        (out / "profile_fk_taylorseer.txt").write_text(profile_fk(max(results), args.steps))
    recs = [{"blocks": n, "method": r.name, "computed_us": r.median("C"), "forecast_us": r.median("f"),
             "computed_calls": r.kinds.count("C"), "forecast_calls": r.kinds.count("f"), "strip": r.strip}
            for n, rs in results.items() for r in rs]
    (out / "overhead.json").write_text(json.dumps({"rows": recs, "decisions_match": match, "args": vars(args),
                                                   "load": [load_before, load_after]}, indent=2))
    print(f"wrote {out}/overhead.json" + ("" if args.no_profile else f" and {out}/profile_fk_taylorseer.txt"))
    return 0 if match else 1


if __name__ == "__main__":
    raise SystemExit(main())
