"""Fitting TeaCache's rescaling polynomial to a model (docs/algorithms.md section 5), as TeaCache fits its
coefficients: sample with every call computed, record per call the indicator's relative L1 change x and the model
output's relative L1 change y (per state key: a per-branch pipeline's cond and uncond calls are two series), and fit
y ~ poly(x) by least squares. The result plugs into `fk.TeaCacheConfig(coefficients=...)`.

    python -m fastercache_kernels calibrate --family wan --steps 30          # a tiny random pipeline
    python -m fastercache_kernels calibrate --model /path/to/pipeline --prompts prompts.txt
"""

from __future__ import annotations

import torch


def _rel_l1(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new.float() - old.float()).abs().mean() / old.float().abs().mean())


def fit_teacache(model, run, *, indicator: str = "auto", degree: int = 4) -> tuple[tuple, list]:
    """Runs `run()` (which samples one or more videos through `model`) with TeaCache at threshold 0, so every call
    computes, and returns (coefficients highest degree first, [(x, y), ...] the points fitted). The first call of
    each video and key has no previous call and gives no point."""
    import numpy as np

    from . import api
    from .policies.teacache import TeaCacheConfig

    handle = api.apply(model, TeaCacheConfig(threshold=0.0, indicator=indicator), record=True)
    prev: dict = {}
    points: list = []
    metrics: list = []

    def on_output(module, args, out):
        rt = handle.runtime
        if not rt.history:
            return
        sample = out if isinstance(out, torch.Tensor) else (out[0] if isinstance(out, tuple) else out.sample)
        row = rt.history[-1]  # this call's: the engine's hook (registered first) has just recorded it
        key, x = row["key"], float(row["metric"])
        last = prev.get(key)
        if last is not None and int(row["c"]) > 1 and x == x and x != float("inf"):
            points.append((x, _rel_l1(sample, last)))
            metrics.append(x)
        prev[key] = sample.detach().clone()

    hook = model.register_forward_hook(on_output)
    try:
        with torch.no_grad():
            run()
    finally:
        hook.remove()
        handle.remove()
    if len(points) <= degree:
        raise ValueError(f"calibrate: {len(points)} points are too few for a degree-{degree} fit; sample more steps")
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return tuple(float(c) for c in np.polyfit(xs, ys, degree)), points


def main(args) -> None:
    import json

    from . import tiny

    if args.model:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(args.model)
        call_kw = {}
    else:
        torch.set_num_threads(args.threads or 1)
        pipe, call_kw = tiny.pipeline(args.family)
    pipe.set_progress_bar_config(disable=True)
    prompts = (open(args.prompts).read().split("\n") if args.prompts else ["a red square moving right"])
    prompts = [p for p in prompts if p.strip()]

    def run():
        for i, prompt in enumerate(prompts):
            pipe(prompt, num_inference_steps=args.steps, output_type="latent",
                 generator=torch.Generator().manual_seed(i), **call_kw)

    coefficients, points = fit_teacache(pipe.transformer, run, indicator=args.indicator, degree=args.degree)
    print(f"{len(points)} points; x (indicator change) in [{min(p[0] for p in points):.4g}, "
          f"{max(p[0] for p in points):.4g}]")
    print(f"fk.TeaCacheConfig(coefficients={tuple(round(c, 8) for c in coefficients)}, indicator={args.indicator!r})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"coefficients": coefficients, "indicator": args.indicator, "points": points}, f)
