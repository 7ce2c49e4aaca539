"""Where fk's host time per call goes: per-function thread-CPU timers on the per-call path (issue 21 item 4).

cProfile inflates small functions; these timers wrap the engine's hooks (as registered, `torch.compiler.disable`
wrappers included), the policy runtime's per-call methods and the ops it calls, and report microseconds per model
call (one untimed video, then 3 videos of --calls calls; tiny CogVideoX of bench_overhead.py, one thread).
Times of nested functions overlap (a hook includes what it calls). A timer costs about 1 us itself.

`--phases` instead splits each call of fk's First-Block-Cache (decide="host" and "device") and diffusers'
FirstBlockCacheConfig hook, side by side, into phases by wall-clock marks (perf_counter, about 0.1 us each) at the
model call, the model class's forward, the first block's own forward, the final norm: the hooks' pre-call work, the
embedding (and the path into the first block), the first block, the rest of the stack (the decision, the skipped
or computed blocks), the output head, the hooks' post-call work. Medians over the timed calls, split by what the
call did (computed / reused), all methods' videos interleaved. Pin it to one core (`taskset -c 1`) on a shared
machine.

Run (from the checkout's root):
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_overhead.py [fbc|fbc-device|ada|none]
        [--blocks 16] [--calls 50] [--phases [--threshold 0.2] [--rounds 8] [--model cogvideox|wan]]

`--phases --model wan`: the same on bench_overhead.py's tiny Wan called per CFG branch (`bench_overhead.py --model
wan`), both libraries with diffusers' `FirstBlockCacheConfig`.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_overhead import tiny_model  # noqa: E402

import fastercache_kernels as fk  # noqa: E402
from fastercache_kernels import ops  # noqa: E402
from fastercache_kernels.runtime import adaptive  # noqa: E402
from fastercache_kernels.runtime import engine as eng  # noqa: E402

ACC: dict = collections.defaultdict(int)
CNT: dict = collections.defaultdict(int)


def _timed(f, label):
    @functools.wraps(f)
    def w(*a, **k):
        t0 = time.thread_time_ns()
        try:
            return f(*a, **k)
        finally:
            ACC[label] += time.thread_time_ns() - t0
            CNT[label] += 1
    return w


def wrap(obj, name, label):
    if hasattr(obj, name):
        setattr(obj, name, _timed(getattr(obj, name), label))


PHASES = [("pre-call", "call", "forward"), ("embedding", "forward", "block0"), ("first block", "block0", "block0 end"),
          ("rest of the stack", "block0 end", "norm"), ("head", "norm", "forward end"),
          ("post-call", "forward end", "call end"), ("call", "call", "call end")]


def phases(blocks: int, calls: int, threshold: float, rounds: int, model_name: str = "cogvideox") -> None:
    """See the module docstring (`--phases`)."""
    import copy
    import statistics

    from bench_overhead import DiffusersFBC, make, methods

    marks: dict = {}
    clock = time.perf_counter_ns
    model, inputs = make(model_name, blocks, calls)
    stack = getattr(model, "transformer_blocks", None) or model.blocks  # (Wan: `blocks`, `norm_out`)
    norm = getattr(model, "norm_final", None) or model.norm_out
    cls, block_cls, norm_cls = type(model), type(stack[0]), type(norm)
    first = stack[0]
    saved = [(c, "forward", c.forward) for c in (cls, block_cls, norm_cls)]

    def marked(f, start, end=None, only=None):
        @functools.wraps(f)  # (diffusers' hooks read the block's signature)
        def w(self, *a, **k):
            if only is not None and getattr(self, "_fk_phase_first", False) != only:
                return f(self, *a, **k)
            marks[start] = clock()
            try:
                return f(self, *a, **k)
            finally:
                if end is not None:
                    marks[end] = clock()
        return w

    cls.forward = marked(cls.forward, "forward", "forward end")
    block_cls.forward = marked(block_cls.forward, "block0", "block0 end", only=True)
    norm_cls.forward = marked(norm_cls.forward, "norm")
    first._fk_phase_first = True
    try:
        apply = dict(methods(threshold, calls, model_name))
        runs = {}
        for name in ("diffusers FirstBlockCache", "fk First-Block-Cache host", "fk First-Block-Cache device"):
            m = copy.deepcopy(model)
            runs[name] = (m, apply[name](m), {"C": [], "r": []})

        @torch.no_grad()
        def video(m, h, rec):
            h.reset()
            x, ts, branches = inputs
            for i, t in enumerate(ts):
                for branch, text in branches:
                    with m.cache_context(branch):
                        marks.clear()
                        marks["call"] = clock()
                        m(hidden_states=x, encoder_hidden_states=text, timestep=t, return_dict=False)
                        marks["call end"] = clock()
                        kind = "C" if (h.computed() if isinstance(h, DiffusersFBC) else h.adaptive.go) else "r"
                    if rec is not None and i:
                        rec[kind].append(dict(marks))

        for m, h, _ in runs.values():
            video(m, h, None)
        for _ in range(rounds):
            for m, h, rec in runs.values():
                video(m, h, rec)
        print(f"First-Block-Cache threshold {threshold}, tiny {model_name}, {blocks} blocks: median wall-clock us per "
              f"phase, {rounds} interleaved videos of {calls} calls; load average {os.getloadavg()[0]:.1f}")
        for kind, what in (("C", "computed"), ("r", "reused")):
            print(f"{what} calls:")
            print(f"  {'method':30s}" + "".join(f"{p:>19s}" for p, _, _ in PHASES))
            for name, (_, _, rec) in runs.items():
                cells = [statistics.median((d[b] - d[a]) / 1e3 for d in rec[kind]) if rec[kind] else float("nan")
                         for _, a, b in PHASES]
                print(f"  {name:30s}" + "".join(f"{c:19.1f}" for c in cells) + f"   ({len(rec[kind])} calls)")
    finally:
        for c, n, f in saved:
            setattr(c, n, f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("method", nargs="?", default="fbc", choices=["fbc", "fbc-device", "fbc-auto", "ada", "none"])
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--phases", action="store_true", help="phases of a call, fk and diffusers side by side")
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--model", default="cogvideox", choices=["cogvideox", "wan"],
                   help="--phases on bench_overhead.py's tiny Wan, per CFG branch, diffusers' config on both")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.phases:
        phases(args.blocks, args.calls, args.threshold, args.rounds, args.model)
        return 0
    from fastercache_kernels.demo import settings

    for n in ("feature_diff", "feature_diff_partials", "feature_diff_from_partials", "residual_sum",
              "residual_diff_update", "motion_score"):
        wrap(ops, n, "ops." + n)
    wrap(adaptive, "under_torch_compile", "adaptive.under_torch_compile")
    wrap(eng, "timestep_value", "engine.timestep_value")
    model = tiny_model(args.blocks)
    torch.manual_seed(1)
    x, ctx = torch.randn(1, 2, 4, 2, 2), torch.randn(1, 1, 8)
    ts = [t.view(1) for t in torch.linspace(999, 0, args.calls)]
    fbc = fk.FirstBlockCacheConfig(threshold=0.2)
    config = {"fbc": fbc, "fbc-device": fbc, "fbc-auto": fbc, "ada": settings._adacache(args.calls)}.get(args.method)
    kw = ({} if config is None or args.method == "fbc-auto" else
          {"decide": "device"} if args.method == "fbc-device" else {"decide": "host"})
    handle = fk.apply(model, config, **kw) if config is not None else None
    if handle is not None:
        e = handle.engine
        rt = handle.adaptive
        for n in ("_begin", "_same_step", "signature", "_pipeline_step", "_switch"):
            wrap(e, n, "engine." + n)
        for n in ("begin", "end", "_begin_host", "_branch_links", "swap", "_read", "run", "step", "_update",
                  "begin_policy"):
            wrap(rt, n, "runtime." + n)
        if e.log is not None:
            wrap(e.log, "record", "summary.record")
        for hooks, label in ((model._forward_pre_hooks, "pre-hook (as registered)"),
                             (model._forward_hooks, "post-hook (as registered)")):
            for k, h in list(hooks.items()):
                hooks[k] = _timed(h, label)

    @torch.no_grad()
    def video():
        if handle is not None:
            handle.reset()
        for t in ts:
            with model.cache_context("cond"):
                t0 = time.thread_time_ns()
                model(hidden_states=x, encoder_hidden_states=ctx, timestep=t, return_dict=False)
                ACC["model call"] += time.thread_time_ns() - t0
                CNT["model call"] += 1

    video()
    ACC.clear()
    CNT.clear()
    for _ in range(3):
        video()
    calls = CNT["model call"]
    what = kw or ("default decide" if config is not None else "no cache")
    print(f"{args.method} ({what}), {args.blocks} blocks: thread CPU us per model call (mean of {calls} "
          f"calls), calls per model call; load average {os.getloadavg()[0]:.1f}")
    for k in sorted(ACC, key=lambda k: -ACC[k]):
        print(f"  {k:34s} {ACC[k] / 1e3 / calls:9.1f} us  x{CNT[k] / calls:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
