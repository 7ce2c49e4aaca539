"""Calibrating the adaptive policies to a model.

TeaCache's rescaling polynomial (docs/algorithms.md section 5), as TeaCache fits its coefficients: sample with every
call computed, record per call the indicator's relative L1 change x and the model output's relative L1 change y (per
state key: a per-branch pipeline's cond and uncond calls are two series), and fit y ~ poly(x) by least squares. The
result plugs into `fk.TeaCacheConfig(coefficients=...)`.

MagCache's magnitude ratios (section 12), as MagCache and diffusers' hook calibrate them: sample with every call
computed and record per step the mean over tokens of ||r_s|| / ||r_(s-1)|| of the stack residual (1.0 at the first
step). The result plugs into `fk.MagCacheConfig(mag_ratios=..., num_inference_steps=<the steps sampled>)`.

    python -m fastercache_kernels calibrate --family wan --steps 30          # a tiny random pipeline
    python -m fastercache_kernels calibrate --model /path/to/pipeline --prompts prompts.txt
    python -m fastercache_kernels calibrate --policy magcache --family cogvideox --steps 50
"""

from __future__ import annotations

import torch


def _rel_l1(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new.float() - old.float()).abs().mean() / old.float().abs().mean())


def _sample_observed(model, handle, on_output, run) -> None:
    """`run()` with `on_output(module, args, out)` after every model call, then the hook and the patch removed."""
    hook = model.register_forward_hook(on_output)
    try:
        with torch.no_grad():
            run()
    finally:
        hook.remove()
        handle.remove()


def fit_teacache(model, run, *, indicator: str = "auto", degree: int = 4) -> tuple[tuple, list]:
    """Runs `run()` (which samples one or more videos through `model`) with TeaCache at threshold 0, so every call
    computes, and returns (coefficients highest degree first, [(x, y), ...] the points fitted). The first call of
    each video and key has no previous call and gives no point."""
    import numpy as np

    from . import api
    from .policies.teacache.config import TeaCacheConfig

    handle = api.apply(model, TeaCacheConfig(threshold=0.0, indicator=indicator), record=True)
    prev: dict = {}
    points: list = []
    metrics: list = []

    def on_output(module, args, out):
        rt = handle.adaptive
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

    _sample_observed(model, handle, on_output, run)
    if len(points) <= degree:
        raise ValueError(f"calibrate: {len(points)} points are too few for a degree-{degree} fit; sample more steps")
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return tuple(float(c) for c in np.polyfit(xs, ys, degree)), points


def fit_magcache(model, run) -> tuple[tuple, dict]:
    """Runs `run()` (which samples one or more videos through `model`) with every call computed and returns (the
    magnitude ratios of the first state key's first video, {key: [ratios per video]}). The residual is the one fk's
    stack-residual policies reuse: the image stream of each reused run of blocks (one run from the first block's
    input to the last block's output for CogVideoX, Wan, Flux; a model whose blocks change the token layout, such
    as Latte's spatial/temporal pairs, has several runs, and their per-token norms are pooled)."""
    from . import api
    from .policies.magcache.config import MagCacheConfig

    # max_skip_steps 0: no step can skip; the runtime's residual buffers then hold each call's stack residual
    handle = api.apply(model, MagCacheConfig(mag_ratios=(1.0,), max_skip_steps=0), record=True)
    prev: dict = {}
    series: dict = {}

    def on_output(module, args, out):
        rt = handle.adaptive
        if not rt.history:
            return
        row = rt.history[-1]  # this call's (the engine's hook, registered first, has just recorded it)
        key = row["key"]
        res = [b.bufs["res"][b.primary] for b in rt.blocks if b.order >= 0 and b.tail is b and b.bufs.get("res")]
        norms = torch.cat([r.float().norm(dim=-1).reshape(-1) for r in res])
        last = prev.get(key)
        if int(row["c"]) == 1 or last is None or last.shape != norms.shape:
            series.setdefault(key, []).append([1.0])
        else:
            series[key][-1].append(float((norms / (last + 1e-8)).mean()))  # diffusers' epsilon
        prev[key] = norms

    _sample_observed(model, handle, on_output, run)
    if not series:
        raise ValueError("calibrate: the model ran no call")
    return tuple(next(iter(series.values()))[0]), series


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

    if getattr(args, "policy", "teacache") == "magcache":
        ratios, series = fit_magcache(pipe.transformer, run)
        print(f"{sum(len(v) for v in series.values())} videos over {len(series)} state keys")
        print(f"fk.MagCacheConfig(mag_ratios={tuple(round(r, 5) for r in ratios)}, num_inference_steps={args.steps})")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"mag_ratios": ratios, "num_inference_steps": args.steps,
                           "series": {str(k): v for k, v in series.items()}}, f)
        return
    coefficients, points = fit_teacache(pipe.transformer, run, indicator=args.indicator, degree=args.degree)
    print(f"{len(points)} points; x (indicator change) in [{min(p[0] for p in points):.4g}, "
          f"{max(p[0] for p in points):.4g}]")
    print(f"fk.TeaCacheConfig(coefficients={tuple(round(c, 8) for c in coefficients)}, indicator={args.indicator!r})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"coefficients": coefficients, "indicator": args.indicator, "points": points}, f)
