"""Host time per call of fk's hooks against diffusers' for the same policy and the same decisions (issue 21 item 4).

A tiny CogVideoXTransformer3DModel (random weights, 2 heads of 8, two 2x2 latent frames and one text token, so its
blocks do almost no work and a call's time is host time) at 4 and 16 blocks runs videos of `--calls` calls (timesteps
999 -> 0, no CFG, each call inside diffusers' `cache_context("cond")` as its pipelines do). Methods:

- no cache: the unpatched model;
- diffusers FirstBlockCache (`model.enable_cache(FirstBlockCacheConfig(threshold))`);
- fk First-Block-Cache, same threshold and rule, `decide="host"` and `decide="device"` (eager: one host read per call,
  then the chosen branch; torch.cond only when traced or captured), and the default `decide="auto"` (host decisions
  in eager calls, after a look at the stack for torch.compile);
- fk AdaCache (30-call fast codebook, calls = --calls): its per-block cost.

Every method runs its own copy of the model, patched once; a first video per method is not timed (first-call set-up,
lazy buffers); then `--rounds` interleaved rounds time one video per method, call by call (thread CPU time, one
thread). Calls are split by what the policy did (computed: every block ran; reused: only the first block, or for
AdaCache the blocks it reused), and the table gives the median per kind (`--stat p10`: the 10th percentile, which
other jobs on a shared machine can only raise). The two First-Block-Cache implementations
must make the same decision on every call: the script prints both decision strips and says whether they match.

`--model wan` runs the tiny Wan transformer of fastercache_kernels/tiny.py instead (random weights, 2 heads of 8, a
[1, 4, 3, 8, 8] latent, 16 text tokens) called as WanPipeline calls it: two calls per step, cond then uncond, each in
its `cache_context` (`--calls` calls: `--calls // 2` steps). Both libraries then run diffusers'
`FirstBlockCacheConfig` (each branch on its own indicator; fk's own config would have the later branch follow the
first one's decision, which diffusers' hook does not), so the branch switch's cost is in fk's rows.

Also writes a cProfile of fk's First-Block-Cache per-call path (one video at the largest block count; top 15 by
cumulative time, by own time, and fk's own functions by both) to --out (default results/overhead/), for whoever
optimises it next.

Run (from the checkout's root):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_overhead.py [--blocks 4,16] [--rounds 5] [--calls 50]
        [--threshold 0.2] [--out results/overhead] [--stat median|p10] [--model cogvideox|wan]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

import fastercache_kernels as fk


def tiny_model(blocks: int, seed: int = 0):
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=16,
        text_embed_dim=8, num_layers=blocks, sample_width=2, sample_height=2, sample_frames=5, patch_size=1,
        max_text_seq_length=1, temporal_compression_ratio=4).eval()


def tiny_wan(blocks: int, seed: int = 0):
    """fastercache_kernels/tiny.py's Wan transformer (random weights, 2 heads of 8) with `blocks` blocks."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=4, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=blocks,
                                 cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()


def wan_inputs(steps: int):
    """Runner's inputs for the tiny Wan: a [1, 4, 3, 8, 8] latent, 16 text tokens of 32, two calls per step (cond then
    uncond, each in its `cache_context`, as WanPipeline calls)."""
    torch.manual_seed(1)
    x, ctx, neg = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 16, 32), torch.randn(1, 16, 32)
    return x, [t.view(1) for t in torch.linspace(999, 0, steps)], [("cond", ctx), ("uncond", neg)]


class Runner:
    """One method on its own copy of the model: `video()` times each call and records what the policy did ("C"
    computed, else `reused`: "r" here, "f" for TaylorSeer's forecasts). A peer's handle says it with `computed()`,
    fk's with its computed count. The inputs are (latents, timesteps, [(cache_context name, text), ...]): one call
    per branch and step, each in its context, as diffusers' pipelines make them."""

    def __init__(self, name: str, model, apply, reused: str = "r"):
        self.name, self.model, self.reused = name, model, reused
        self.handle = apply(model) if apply is not None else None
        self.times: list[float] = []  # microseconds, every timed call
        self.kinds: list[str] = []  # "C" computed, `reused` otherwise, per timed call
        self.strip = ""  # the decisions of the first timed video

    def decision(self) -> str:
        h = self.handle
        if h is None:
            return "C"
        if not hasattr(h, "stats"):  # a peer's hook
            return "C" if h.computed() else self.reused
        computed = int(h.stats()["computed"])
        kind = "C" if computed > self._computed else self.reused
        self._computed = computed
        return kind

    @torch.no_grad()
    def video(self, inputs, timed: bool) -> None:
        h = self.handle
        if h is not None:
            h.reset()
        self._computed = int(h.stats()["computed"]) if hasattr(h, "stats") else 0
        x, ts, branches = inputs
        strip = ""
        for t in ts:
            for branch, text in branches:
                with self.model.cache_context(branch):
                    t0 = time.thread_time_ns()
                    self.model(hidden_states=x, encoder_hidden_states=text, timestep=t, return_dict=False)
                    dt = (time.thread_time_ns() - t0) / 1e3
                    kind = self.decision()
                strip += kind
                if timed:
                    self.times.append(dt)
                    self.kinds.append(kind)
        if timed and not self.strip:
            self.strip = strip

    stat = "median"

    def median(self, kind: str) -> float | None:
        """The statistic (`--stat`) of this kind's call times: the median, or the 10th percentile, which other
        jobs on a shared machine can only raise (their cache and core contention adds time, never removes it)."""
        sel = sorted(t for t, k in zip(self.times, self.kinds) if k == kind)
        if not sel:
            return None
        return statistics.median(sel) if self.stat == "median" else sel[len(sel) // 10]

    def count(self, kind: str) -> int:
        return self.kinds.count(kind)


def interleaved(runners: list[Runner], inputs, rounds: int, log, label: str) -> list[Runner]:
    """One untimed video per method (first-call set-up, lazy buffers), then `rounds` rounds of one timed video per
    method, in turn."""
    for r in runners:
        r.video(inputs, timed=False)
    for i in range(rounds):
        for r in runners:
            r.video(inputs, timed=True)
        log(f"  {label}: round {i + 1}/{rounds}")
    return runners


class DiffusersFBC:
    """diffusers' FirstBlockCache hook; a new video re-enables it (fresh state, as its pipelines' reset does)."""

    def __init__(self, model, threshold: float):
        from diffusers.hooks import FirstBlockCacheConfig

        self.model, self.config = model, FirstBlockCacheConfig(threshold=threshold)
        model.enable_cache(self.config)
        self._hook()

    def _hook(self):
        blocks = getattr(self.model, "transformer_blocks", None) or self.model.blocks  # (Wan: `blocks`)
        self.leader = blocks[0]._diffusers_hook.get_hook("fbc_leader_block_hook")

    def computed(self) -> bool:  # the call just made ran every block
        return self.leader.state_manager.get_state().should_compute

    def reset(self) -> None:
        self.model.disable_cache()
        self.model.enable_cache(self.config)
        self._hook()

    def remove(self) -> None:
        self.model.disable_cache()


def methods(threshold: float, calls: int, model: str = "cogvideox"):
    from fastercache_kernels.demo import settings

    if model == "wan":  # per-branch calls: diffusers' config on fk, each branch on its own indicator as diffusers'
        from diffusers.hooks import FirstBlockCacheConfig

        fbc = FirstBlockCacheConfig(threshold=threshold)
    else:
        fbc = fk.FirstBlockCacheConfig(threshold=threshold)  # no num_calls: diffusers' rule has no forced last call
    return [
        ("no cache", None),
        ("diffusers FirstBlockCache", lambda m: DiffusersFBC(m, threshold)),
        ("fk First-Block-Cache host", lambda m: fk.apply(m, fbc, decide="host")),
        ("fk First-Block-Cache device", lambda m: fk.apply(m, fbc, decide="device")),
        ("fk AdaCache host", lambda m: fk.apply(m, settings._adacache(calls), decide="host")),
        ("fk First-Block-Cache auto", lambda m: fk.apply(m, fbc)),  # the default: host decisions in eager calls
    ]


def make(model: str, blocks: int, calls: int):
    """(the tiny model, Runner's inputs): `calls` calls per video (Wan: two per step)."""
    if model == "wan":
        return tiny_wan(blocks), wan_inputs(calls // 2)
    torch.manual_seed(1)
    x, ctx = torch.randn(1, 2, 4, 2, 2), torch.randn(1, 1, 8)
    return tiny_model(blocks), (x, [t.view(1) for t in torch.linspace(999, 0, calls)], [("cond", ctx)])


def bench(blocks: int, rounds: int, calls: int, threshold: float, log, model: str = "cogvideox") -> list[Runner]:
    base, inputs = make(model, blocks, calls)
    runners = [Runner(name, copy.deepcopy(base), apply) for name, apply in methods(threshold, calls, model)]
    return interleaved(runners, inputs, rounds, log, f"{blocks} blocks")


def profile_fk(blocks: int, calls: int, threshold: float, model_name: str = "cogvideox") -> str:
    model, inputs = make(model_name, blocks, calls)
    handle = dict(methods(threshold, calls, model_name))["fk First-Block-Cache host"](model)

    @torch.no_grad()
    def video():
        handle.reset()
        x, ts, branches = inputs
        for t in ts:
            for branch, text in branches:
                with model.cache_context(branch):
                    model(hidden_states=x, encoder_hidden_states=text, timestep=t, return_dict=False)

    video()  # first-call costs stay out of the profile
    prof = cProfile.Profile(time.thread_time)  # CPU time of this thread: the shared machine's load stays out
    prof.enable()
    video()
    prof.disable()
    handle.remove()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    out.write(f"fk First-Block-Cache (threshold {threshold}, decide='host'), one video of {calls} calls, {blocks} "
              f"blocks, tiny {model_name}, after one untimed video; timer: thread CPU time (cProfile's own cost "
              "included)\n\n")
    stats.sort_stats("cumulative").print_stats(15)
    stats.sort_stats("tottime").print_stats(15)
    out.write("fk's own functions only (the host work the hooks add), by cumulative time, then by own time:\n")
    stats.sort_stats("cumulative").print_stats("fastercache_kernels", 15)
    stats.sort_stats("tottime").print_stats("fastercache_kernels", 15)
    return out.getvalue()


def table(results: dict[int, list[Runner]]) -> tuple[str, list[dict]]:
    rows, recs = [], []
    sizes = sorted(results)
    for n in sizes:
        base = results[n][0].median("C")
        for r in results[n]:
            c, u = r.median("C"), r.median("r")
            rec = {"blocks": n, "method": r.name, "computed_calls": r.count("C"), "computed_us": c,
                   "computed_overhead_us": None if c is None or r.handle is None else c - base,
                   "reused_calls": r.count("r"), "reused_us": u}
            recs.append(rec)
    if len(sizes) >= 2:  # per-block cost: slope of the per-call time between the smallest and largest block count
        lo, hi = sizes[0], sizes[-1]
        for rec in recs:
            other = next(o for o in recs if o["blocks"] == (hi if rec["blocks"] == lo else lo)
                         and o["method"] == rec["method"])
            a, b = (rec, other) if rec["blocks"] == lo else (other, rec)
            for kind in ("computed", "reused"):
                ta, tb = a[f"{kind}_us"], b[f"{kind}_us"]
                rec[f"{kind}_us_per_block"] = None if ta is None or tb is None else (tb - ta) / (hi - lo)
    f = lambda v, fmt="{:.0f}": "" if v is None else fmt.format(v)  # noqa: E731
    head = ["blocks", "method", "computed calls", "us/call", "over no cache", "us/block", "reused calls", "us/call",
            "us/block"]
    for rec in recs:
        rows.append([str(rec["blocks"]), rec["method"], str(rec["computed_calls"]), f(rec["computed_us"]),
                     f(rec["computed_overhead_us"], "{:+.0f}"), f(rec.get("computed_us_per_block")),
                     str(rec["reused_calls"]), f(rec["reused_us"]), f(rec.get("reused_us_per_block"))])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 1 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)]), recs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", default="4,16", help="comma-separated block counts")
    p.add_argument("--rounds", type=int, default=5, help="timed videos per method, interleaved")
    p.add_argument("--calls", type=int, default=50, help="calls per video")
    p.add_argument("--threshold", type=float, default=0.2, help="First-Block-Cache threshold (both libraries)")
    p.add_argument("--out", default="results/overhead", help="where the JSON and the profile go")
    p.add_argument("--stat", default="median", choices=["median", "p10"],
                   help="per-kind statistic of the call times (p10: the 10th percentile, for a loaded machine)")
    p.add_argument("--model", default="cogvideox", choices=["cogvideox", "wan"],
                   help="wan: the tiny Wan transformer called per CFG branch (cond, uncond: --calls // 2 steps), "
                        "First-Block-Cache with diffusers' config on both libraries")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    Runner.stat = args.stat
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    load_before = os.getloadavg()
    results = {}
    for n in (int(b) for b in args.blocks.split(",")):
        results[n] = bench(n, args.rounds, args.calls, args.threshold, log, args.model)
    text, recs = table(results)
    what = ("tiny Wan, two calls per step (cond, uncond)" if args.model == "wan" else "tiny CogVideoX")
    print(f"host time per call ({args.stat} thread CPU us; {args.rounds} interleaved videos of {args.calls} calls per "
          f"method; {what}; First-Block-Cache threshold {args.threshold}; torch {torch.__version__}, 1 thread)")
    print(text)
    match = True
    for n, runners in results.items():
        d, f = runners[1], runners[2]
        same = d.kinds == f.kinds and d.kinds == runners[3].kinds and d.kinds == runners[5].kinds
        match &= same
        print(f"\n{n} blocks, decisions of the first timed video (C computed, r reused):\n"
              f"  diffusers FirstBlockCache   {d.strip}\n  fk First-Block-Cache host   {f.strip}\n"
              f"  fk First-Block-Cache device {runners[3].strip}\n  fk First-Block-Cache auto   {runners[5].strip}\n"
              f"  fk AdaCache host            {runners[4].strip}\n"
              f"  every timed call: {'the same decisions' if same else 'DECISIONS DIFFER'}")
    load_after = os.getloadavg()
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} CPUs. "
          "us/block: slope of us/call between the block counts; over no cache: computed us/call minus the "
          "unpatched model's.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prof = profile_fk(max(results), args.calls, args.threshold, args.model)
    (out / "profile_fk_fbc.txt").write_text(prof)
    (out / "overhead.json").write_text(json.dumps(
        {"rows": recs, "decisions_match": match, "args": vars(args), "load": [load_before, load_after],
         "strips": {n: {r.name: r.strip for r in rs} for n, rs in results.items()}}, indent=2))
    print(f"wrote {out / 'overhead.json'} and the profile of fk's per-call path, {out / 'profile_fk_fbc.txt'}")
    return 0 if match else 1


if __name__ == "__main__":
    raise SystemExit(main())
