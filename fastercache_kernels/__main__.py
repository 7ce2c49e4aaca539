"""python -m fastercache_kernels info | bench | demo"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path


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
    print(f"cpu module variant in use: {_ext.cpu_variant()}")
    for device in ("cpu", "cuda"):
        print(f"backends for {device} tensors:")
        for name, why in _backend.available_backends(device).items():
            print(f"  {name}: " + ("available" if why is None else f"unavailable: {why}"))
    print(f"selected for cpu tensors: {_backend.select(torch.device('cpu'))}")
    if torch.cuda.is_available():
        print(f"selected for cuda tensors: {_backend.select(torch.device('cuda'))}")
    else:
        print("no CUDA device visible: CUDA and Triton paths are checked by compiling them (see README)")


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _bench(args) -> None:
    import torch

    from .bench.core import format_table
    from .bench.ops import BENCHES, DTYPE_NAMES

    names = args.ops.split(",") if args.ops else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name in names:
        for dt in args.dtypes.split(","):
            rows += BENCHES[name](numel=args.numel, dtype=DTYPE_NAMES[dt], device=device, repeat=args.repeat)
    print(format_table(rows))
    if args.json:
        record = {
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpu_count": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads()},
            "torch": torch.__version__, "triton": _triton_version(), "commit": _git_commit(), "device": device,
            "rows": [r.as_dict() for r in rows],
        }
        Path(args.json).write_text(json.dumps(record, indent=2))
        print(f"wrote {args.json}")


def _triton_version():
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


def _sample_table(families, n: int, steps: int, gif_dir: Path | None):
    from tqdm import tqdm

    from .demo import run, settings

    all_results = []
    for family in families:
        sets = settings.settings(family)
        with tqdm(total=len(sets) * steps, desc=f"sampling {family}", unit="call", dynamic_ncols=True) as bar:
            results, weights = run.run(family, sets, n=n, steps=steps, progress=lambda: bar.update(1),
                                       gif_dir=gif_dir)
        print(f"{family}: {weights} weights, {n} clips, {steps} CFG calls per clip batch")
        all_results += results
    print(run.format_results(all_results))
    return all_results


def _demo(args) -> None:
    """The main job: each demo model sampled with and without every cache setting, then the op table."""
    import torch

    from .bench.core import format_table
    from .bench.ops import BENCHES

    print(f"fastercache_kernels demo on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    _sample_table(args.models.split(","), n=args.clips, steps=args.steps, gif_dir=None)
    print("\nfused ops against the eager formula (median of a few runs; 4M elements; all ops: "
          "python -m fastercache_kernels bench):")
    rows = []
    for name in ("extrapolate", "feature_diff", "residual_diff_update", "motion_score"):
        rows += BENCHES[name](numel=1 << 22, dtype=torch.float32, device="cpu", repeat=7)
    print(format_table(rows))


def _quality(args) -> None:
    """Fidelity against speed for every setting, with side-by-side GIFs."""
    gif_dir = Path(args.gifs)
    _sample_table(args.models.split(","), n=args.clips, steps=args.steps, gif_dir=gif_dir)
    print(f"GIFs (uncached left, cached right) in {gif_dir}/")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m fastercache_kernels", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="versions, available backends and why the others are not")
    b = sub.add_parser("bench", help="time every op against its eager formula and the copy bandwidth")
    b.add_argument("--ops", help="comma-separated op names (default: all)")
    b.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32,fp16,bf16")
    b.add_argument("--numel", type=int, default=1 << 24, help="elements per tensor (default 16M)")
    b.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    b.add_argument("--repeat", type=int, default=15)
    b.add_argument("--json", help="write the results and the machine description here")
    b.add_argument("--plot", help="write a PNG chart here (not yet)")
    for name, helptext, clips in (("demo", "the main job: sample the demo DiTs with and without each cache", 4),
                                  ("quality", "fidelity against speed per cache setting, with GIFs", 8)):
        d = sub.add_parser(name, help=helptext)
        d.add_argument("--models", default="cogvideox,latte", help="comma-separated: cogvideox,latte")
        d.add_argument("--clips", type=int, default=clips)
        d.add_argument("--steps", type=int, default=50, help="CFG calls per sample")
        if name == "quality":
            d.add_argument("--gifs", default="results/quality", help="where the GIFs go")
    args = p.parse_args(argv)
    {"info": lambda a: _info(), "bench": _bench, "demo": _demo, "quality": _quality}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
