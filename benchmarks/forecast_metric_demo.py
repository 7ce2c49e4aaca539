"""First-Block-Cache and TeaCache with `forecast_metric` (docs/algorithms.md section 11) on the trained demo CogVideoX:
computed calls and PSNR against the uncached video, forecast_order 2, forecast_metric False vs True, a few
thresholds each (docs/results.md, "First-Block-Cache and TeaCache with forecast_metric"). One video of 50 steps,
the same noise for every setting; the computed calls are the load-free measure of the work (speed ~ 50 / computed).

Run (from the checkout's root):
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/forecast_metric_demo.py [--orders 1,2]
"""

from __future__ import annotations

import argparse
import time

import torch

import fastercache_kernels as fk
from fastercache_kernels.bench.compare import DemoTarget
from fastercache_kernels.demo import metrics


FBC_THRESHOLDS = (0.08, 0.1, 0.15, 0.2, 0.25, 0.3)
TEA_THRESHOLDS = (0.2, 0.3, 0.4, 0.6)
TEA_MODULATED_THRESHOLDS = (0.1, 0.2, 0.3)


def settings(n: int, orders) -> list:
    """(name, forecast_metric, config) per setting."""
    out = []
    for order in orders:
        for thr in FBC_THRESHOLDS:
            for fm in (False, True):
                out.append((f"First-Block-Cache {thr} forecast {order}", fm, fk.FirstBlockCacheConfig(
                    threshold=thr, num_calls=n, forecast_order=order, forecast_metric=fm)))
        for thr in TEA_THRESHOLDS:
            for fm in (False, True):
                out.append((f"TeaCache cogvideox-2b {thr} forecast {order}", fm, fk.TeaCacheConfig.preset(
                    "cogvideox-2b", threshold=thr, num_calls=n, forecast_order=order, forecast_metric=fm)))
        # an indicator that carries the sample (no published coefficients for it here: rel itself)
        for thr in TEA_MODULATED_THRESHOLDS:
            for fm in (False, True):
                out.append((f"TeaCache modulated_input rel {thr} forecast {order}", fm, fk.TeaCacheConfig(
                    threshold=thr, coefficients=(1.0, 0.0), indicator="modulated_input", num_calls=n,
                    forecast_order=order, forecast_metric=fm)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--orders", default="2", help="forecast orders, comma-separated (1, 2)")
    ap.add_argument("--only", default=None, help="run the settings whose name contains this")
    args = ap.parse_args()
    torch.set_num_threads(1)
    target = DemoTarget("cogvideox", 1, args.steps)
    t0 = time.process_time()
    ref = target.sample(target.fresh())
    print(f"uncached: {time.process_time() - t0:.1f} s CPU", flush=True)
    print("| method | forecast_metric | computed calls | PSNR dB | CPU s |")
    print("|---|---|---|---|---|")
    for name, fm, config in settings(args.steps, [int(o) for o in args.orders.split(",")]):
        if args.only and args.only not in name:
            continue
        model = target.fresh()
        handle = fk.apply(model, config)
        t0 = time.process_time()
        video = target.sample(model)
        cpu = time.process_time() - t0
        print(f"| {name} | {fm} | {handle.stats()['computed']} | {metrics.psnr(video, ref):.2f} | "
              f"{cpu:.1f} |", flush=True)
        handle.remove()


if __name__ == "__main__":
    main()
