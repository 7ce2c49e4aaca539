"""End-to-end: a small CogVideoX (4 layers, 4 heads x 32, 7 latent frames of 30x44, 50 calls of a CFG loop) with
diffusers' FasterCacheConfig, patched by fk.apply, against diffusers' own hook with the same config, no cache, and
the ideal the skipped calls imply; eager and torch.compile(fullgraph=True), side by side in one run.

Run: .venv/bin/python benchmarks/bench_e2e.py [--calls 50] [--repeat 1] [--no-compile] [--threads 1] [--json FILE]
"""

import argparse
import json
import sys
from pathlib import Path

from fastercache_kernels.bench.e2e import bench_e2e, format_e2e


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json")
    args = p.parse_args(argv)
    result = bench_e2e(args.calls, compile=not args.no_compile, repeat=args.repeat, threads=args.threads,
                       device=args.device, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_e2e(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
