"""Adaptive policies end to end on the small CogVideoX of bench/e2e.py (4 layers, 4 heads x 32, 7 latent frames of
30x44, 50 calls of a CFG loop): each policy's wall time against no cache, the calls it computed, and the cost of its
decision metric per compute call, fused ops against the eager formula on the same tensors.

Every model gets the same inputs call by call (the latents follow the uncached model), one after the other, so
load from other jobs falls on all alike.
"""

from __future__ import annotations

import copy

import torch

from .. import api, ops
from ..policies.adacache.config import AdaCacheConfig
from ..policies.fbcache.config import FirstBlockCacheConfig
from ..policies.teacache.config import TeaCacheConfig
from .core import median_seconds, timed
from .e2e import small_cogvideox


def policies(calls: int) -> dict:
    """The settings benchmarked (the demo uses the same): published presets where docs/algorithms.md gives them."""
    return {
        "teacache (cogvideox-2b preset)": TeaCacheConfig.preset("cogvideox-2b", num_calls=calls),
        "fbcache (0.2)": FirstBlockCacheConfig(threshold=0.2, num_calls=calls),
        "adacache (30-call fast codebook)": AdaCacheConfig.preset("opensora-30-fast", num_calls=calls,
                                                                  moreg_window=(calls // 10, calls * 9 // 10)),
    }


def _median_time(fn, repeat: int = 50, device="cpu") -> float:
    return median_seconds(fn, device, warmup=1, repeat=repeat)


def metric_overhead(p: torch.Tensor, frames: int, repeat: int = 50) -> dict:
    """Seconds per compute call of each policy's metric work on a metric-layer tensor ([B, T*S, C]), fused ops
    against the eager formula, both doing the same work:
    - adacache: p = mid - x, rel-L1 distance to the cached p, cache <- p, and the MoReg motion sums
      (residual_diff_update + motion_score against five eager expressions);
    - fbcache / teacache: the rel-L1 distance of two tensors (feature_diff_partials against the eager mean ratio).
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(p.shape, generator=g).to(p.dtype)
    mid = x + p
    cache = p.roll(1, dims=1).contiguous()
    prev = cache.clone()
    s = p.shape[1] // frames

    def fused_ada():
        d = ops.residual_diff_update(mid, x, cache, partials=True)
        m = ops.motion_score(cache, frames, [1], partials=True)
        return ops.feature_diff_from_partials(d), m

    def eager_ada():
        q = mid - x
        d = (cache - q).abs().sum() / cache.abs().sum()
        cache.copy_(q)
        a, b = q[:, s:], q[:, :-s]
        return d, (a - b).abs().sum() / (a.abs().sum() + b.abs().sum())

    def fused_fb():
        return ops.feature_diff_from_partials(ops.feature_diff_partials(p, prev))

    def eager_fb():
        return (prev - p).abs().mean() / prev.abs().mean()

    r = {"shape": list(p.shape)}
    for name, f, e in (("adacache", fused_ada, eager_ada), ("fbcache", fused_fb, eager_fb)):
        tf, te = _median_time(f, repeat, p.device), _median_time(e, repeat, p.device)
        r[name] = {"fused_s": tf, "eager_s": te, "ratio": te / tf}
    return r


def bench_adaptive(calls: int = 50, *, threads: int | None = 1, full_size: bool = True, compile: bool = False,
                   log=None) -> dict:
    """`compile=True`: torch.compile(fullgraph=True) of the uncached model and of each policy with decide="device"
    (one graph each, no host read); a first, untimed video compiles them."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model, latents, text = small_cogvideox()
        timesteps = torch.linspace(999, 0, calls).round().long()
        models = {"no cache": torch.compile(model, fullgraph=True) if compile else model}
        handles = {}
        for name, cfg in policies(calls).items():
            m = copy.deepcopy(model)
            handles[name] = api.apply(m, cfg, decide="device" if compile else "host")
            models[name] = torch.compile(m, fullgraph=True) if compile else m

        def video(total):
            x = latents.clone()
            for i, t in enumerate(timesteps):
                inp, tt = torch.cat([x, x]), t.expand(2)
                for name, m in models.items():
                    with torch.no_grad():
                        y, dt = timed(lambda: m(hidden_states=inp, encoder_hidden_states=text, timestep=tt,
                                                return_dict=False)[0], inp.device)
                    total[name] += dt
                    if name == "no cache":
                        uncond, cond = y.chunk(2)
                        nxt = x - 0.02 * (uncond + 6.0 * (cond - uncond))
                x = nxt
                if log and (i + 1) % 10 == 0:
                    log(f"call {i + 1}/{calls}")

        total = dict.fromkeys(models, 0.0)
        if compile:
            video(dict.fromkeys(models, 0.0))
            for h in handles.values():  # count the timed video only
                h.adaptive.zero_counts()
        video(total)
        rows = {}
        for name, m in models.items():
            st = handles[name].stats() if name in handles else {"computed": calls, "host_reads": 0}
            rows[name] = {"seconds": total[name], "speedup": total["no cache"] / total[name],
                          "computed": st["computed"], "host_reads": st["host_reads"],
                          "cache_bytes": st.get("cache_bytes", 0)}
        p = torch.randn(2, latents.shape[1] * (latents.shape[3] // 2) * (latents.shape[4] // 2),
                        model.config.num_attention_heads * model.config.attention_head_dim)
        return {"calls": calls, "threads": torch.get_num_threads(), "compiled": compile, "policies": rows,
                "metric": {**{str(dt).replace("torch.", ""): metric_overhead(p.to(dt), latents.shape[1])
                              for dt in (torch.float32, torch.bfloat16)},
                           # the metric layer of the real CogVideoX-2B (13 latent frames of 30x45 tokens, 1920 ch)
                           **{f"{str(dt).replace('torch.', '')}, CogVideoX-2B size": metric_overhead(
                               torch.randn(2, 13 * 1350, 1920).to(dt), 13, repeat=10) if full_size else None
                              for dt in (torch.float32, torch.bfloat16)}}}
    finally:
        torch.set_num_threads(old)


def format_adaptive(r: dict) -> str:
    mode = "torch.compile, decide='device'" if r.get("compiled") else "eager, decide='host'"
    lines = [f"small CogVideoX, {r['calls']} calls, {r['threads']} thread(s), {mode}",
             f"{'policy':<34} {'seconds':>8} {'speedup':>8} {'computed':>9} {'host reads':>11} {'cache MB':>9}"]
    for name, row in r["policies"].items():
        lines.append(f"{name:<34} {row['seconds']:8.2f} {row['speedup']:7.2f}x {row['computed']:>5}/{r['calls']:<3} "
                     f"{row['host_reads']:>11} {row['cache_bytes'] / 2**20:9.1f}")
    for dt, m in r["metric"].items():
        if m is None:
            continue
        lines.append(f"metric per compute call on p {m['shape']} {dt}:")
        for name in ("adacache", "fbcache"):
            x = m[name]
            lines.append(f"  {name:<9} fused {x['fused_s'] * 1e6:8.1f} us  eager formula {x['eager_s'] * 1e6:8.1f} us"
                         f"  -> {x['ratio']:.1f}x")
    return "\n".join(lines)
