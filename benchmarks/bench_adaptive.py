"""Adaptive policies (TeaCache, First-Block-Cache, AdaCache) on the small CogVideoX of bench_e2e.py: speedup over no
cache, calls computed, and the decision metric per compute call, fused against the eager formula.

Run: .venv/bin/python benchmarks/bench_adaptive.py [--calls 50] [--threads 1] [--no-full-size] [--compile] [--json FILE]
"""

import argparse
import json
import sys
from pathlib import Path

from fastercache_kernels.bench.adaptive import bench_adaptive, format_adaptive


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-full-size", action="store_true", help="skip the metric at CogVideoX-2B's size (~1 GB)")
    p.add_argument("--compile", action="store_true", help="torch.compile every model; policies decide on the device")
    p.add_argument("--json")
    args = p.parse_args(argv)
    result = bench_adaptive(args.calls, threads=args.threads, full_size=not args.no_full_size, compile=args.compile,
                            log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_adaptive(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
