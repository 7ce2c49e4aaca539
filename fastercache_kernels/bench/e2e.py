"""End-to-end FasterCache on a small CogVideoX: our patched model with diffusers' FasterCacheConfig against
diffusers' own hook with the same config, against no cache, and against the ideal the schedule implies.

The ideal is what the skipped work alone would save: each call costs what a plain model costs for the work that
call really does (a full call: the batch-2 model; a skip call: the batch-1 model; a skip call reusing attention:
the batch-1 model whose cached attention modules return a stored tensor for free), summed over the call kinds
the schedule produced. `ideal / ours` close to 1 means the caching machinery itself costs nothing.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings

import torch

from .. import api
from . import report
from .core import timed


def small_cogvideox(layers: int = 4, heads: int = 4, head_dim: int = 32, frames: int = 7, height: int = 30,
                    width: int = 44, text_len: int = 226, text_dim: int = 4096, seed: int = 0, device="cpu"):
    """A randomly initialised diffusers CogVideoXTransformer3DModel (the real class) and its CFG inputs."""
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16, out_channels=16,
        time_embed_dim=512, text_embed_dim=text_dim, num_layers=layers, sample_width=width, sample_height=height,
        sample_frames=(frames - 1) * 4 + 1, patch_size=2, max_text_seq_length=text_len).eval().to(device)
    g = torch.Generator().manual_seed(seed + 1)
    latents = torch.randn(1, frames, 16, height, width, generator=g).to(device)
    text = torch.randn(2, text_len, text_dim, generator=g).to(device)
    return model, latents, text


def diffusers_config(clock: dict):
    """diffusers' documented CogVideoX FasterCache settings (hooks/faster_cache.py example)."""
    from diffusers import FasterCacheConfig

    return FasterCacheConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 681),
        low_frequency_weight_update_timestep_range=(99, 641), high_frequency_weight_update_timestep_range=(-1, 301),
        spatial_attention_block_identifiers=["transformer_blocks"], attention_weight_callback=lambda _: 0.3,
        tensor_format="BFCHW", current_timestep_callback=lambda: clock["t"])


def _attention_stub(model, latents, text):
    """A copy whose cached attention modules return stored batch-1 outputs without computing anything."""
    stub = copy.deepcopy(model)
    shapes = {}
    hooks = [blk.attn1.register_forward_hook(lambda m, a, o, i=i: shapes.__setitem__(i, [t.shape for t in o]))
             for i, blk in enumerate(stub.transformer_blocks)]
    with torch.no_grad():
        stub(hidden_states=latents, encoder_hidden_states=text[:1], timestep=torch.tensor([500]), return_dict=False)
    for h in hooks:
        h.remove()
    for i, blk in enumerate(stub.transformer_blocks):
        outs = tuple(torch.zeros(s, device=latents.device) for s in shapes[i])
        blk.attn1.forward = lambda *a, _o=outs, **k: _o
    return stub


def bench_e2e(calls: int = 50, *, compile: bool = True, cudagraphs: bool = True, repeat: int = 1,
              threads: int | None = 1, device="cpu", model_kw: dict | None = None, log=print) -> dict:
    """Times 50-call videos of: no cache, diffusers' hook, fk.apply with the same diffusers config (eager, and
    compiled with torch.compile(fullgraph=True) next to a compiled no-cache model; on CUDA with `cudagraphs` also
    torch.compile(mode="reduce-overhead"), i.e. CUDA graphs), and the ideal of each mode. Every call is timed with
    the device synchronised before and after it.

    threads: torch intra-op threads (1 by default: on a 2-core machine shared with other jobs, 2 threads made a
    small CogVideoX call 1.2-4x slower, measured). Returns {"rows": [...], "summary": {...}, "machine": {...}}.
    """
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bench(calls, compile, cudagraphs, repeat, device, model_kw or {}, log)
    finally:
        torch.set_num_threads(old_threads)


def _bench(calls, compile, cudagraphs, repeat, device, model_kw, log):
    """Every variant runs the same call, one after the other, call by call: load from other jobs on the machine
    falls on all of them alike. The latents follow the uncached model."""
    model, latents, text = small_cogvideox(device=device, **model_kw)
    timesteps = torch.linspace(999, 0, calls, device=device).round().long()
    clock: dict = {"t": None}

    plain = model
    theirs = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.enable_cache(diffusers_config(clock))
    ours = copy.deepcopy(model)
    handle = api.apply(ours, diffusers_config(clock))
    stub = _attention_stub(plain, latents, text)
    models = {"no cache": plain, "diffusers hook": theirs, "fk": ours}
    ideal_models = {"ideal": (plain, stub)}
    if compile:
        ours_c = copy.deepcopy(model)
        handle_c = api.apply(ours_c, diffusers_config(clock))
        plain_c = torch.compile(plain, fullgraph=True)
        models["no cache (compiled)"] = plain_c
        models["fk (compiled)"] = torch.compile(ours_c, fullgraph=True)
        ideal_models["ideal (compiled)"] = (plain_c, torch.compile(stub, fullgraph=True))
    if cudagraphs and torch.device(device).type == "cuda":
        # torch.compile's CUDA graphs (one graph per call kind, replayed; inputs copied into static buffers)
        ours_g = copy.deepcopy(model)
        api.apply(ours_g, diffusers_config(clock))
        models["no cache (CUDA graphs)"] = torch.compile(copy.deepcopy(model), mode="reduce-overhead")
        models["fk (CUDA graphs)"] = torch.compile(ours_g, mode="reduce-overhead")
    t1 = torch.tensor([500], device=device)

    def video(acc: dict | None):
        x = latents.clone()
        kinds: dict[str, int] = {}
        for t in timesteps:
            clock["t"] = t
            inp, tt = torch.cat([x, x]), t.expand(2)
            dts = {}
            for name, m in models.items():
                y, dts[name] = timed(lambda: m(hidden_states=inp, encoder_hidden_states=text, timestep=tt,
                                               return_dict=False)[0], device)
                if name == "no cache":
                    y_plain = y
            kind = handle.fastercache.plan.kind
            kinds[kind] = kinds.get(kind, 0) + 1
            for name, (full_m, stub_m) in ideal_models.items():
                if kind.startswith("full"):  # the ideal full call is the uncached call itself
                    dts[name] = dts["no cache (compiled)" if "compiled" in name else "no cache"]
                else:
                    one = stub_m if "reuse" in kind else full_m
                    _, dts[name] = timed(lambda: one(hidden_states=x, encoder_hidden_states=text[:1], timestep=t1,
                                                     return_dict=False), device)
            if acc is not None:
                for k, v in dts.items():
                    acc[k] = acc.get(k, 0.0) + v
            uncond, cond = y_plain.chunk(2)
            x = x - 0.02 * (uncond + 6.0 * (cond - uncond))
        theirs._reset_stateful_cache()  # what diffusers pipelines do after each video
        return kinds

    with torch.no_grad():
        t0 = time.perf_counter()
        video(None)  # warm-up: allocations, our shape probe, every compiled graph
        log(f"warm-up video: {time.perf_counter() - t0:.1f} s")
        runs: list[dict] = []
        for r in range(repeat):
            acc: dict = {}
            kinds = video(acc)
            runs.append(acc)
            log(f"video {r + 1}/{repeat}: " + ", ".join(f"{k} {v:.2f} s" for k, v in acc.items()))

    med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
    rows = []
    for name, t in med.items():
        mode = next((m for m in ("(compiled)", "(CUDA graphs)") if m in name), None)
        base = med[f"no cache {mode}" if mode else "no cache"]
        rows.append({"variant": name, "seconds": t, "ms_per_call": 1e3 * t / calls, "speedup_vs_no_cache": base / t})
    summary = {
        "calls_per_kind": kinds,
        "fk_eager_vs_diffusers": med["diffusers hook"] / med["fk"],
        "fk_eager_of_ideal": med["ideal"] / med["fk"],
        "cache_bytes_fk": handle.stats()["cache_bytes"],
    }
    if "fk (CUDA graphs)" in med:
        summary["fk_cudagraphs_vs_diffusers"] = med["diffusers hook"] / med["fk (CUDA graphs)"]
    if compile:
        summary["fk_compiled_vs_diffusers"] = med["diffusers hook"] / med["fk (compiled)"]
        summary["fk_compiled_of_ideal"] = med["ideal (compiled)"] / med["fk (compiled)"]
        summary["compiled_kinds"] = handle_c.stats()["calls_per_kind"]
    machine = {**report.machine(), **report.versions(), "device": str(device)}  # the bench CLI's record
    return {"rows": rows, "summary": summary, "machine": machine, "calls": calls, "repeat": repeat}


def format_e2e(result: dict) -> str:
    lines = [f"{'variant':<22} {'s / video':>10} {'ms / call':>10} {'x no cache':>11}"]
    for r in result["rows"]:
        lines.append(f"{r['variant']:<22} {r['seconds']:>10.2f} {r['ms_per_call']:>10.1f} "
                     f"{r['speedup_vs_no_cache']:>10.2f}x")
    s = result["summary"]
    lines.append(f"call kinds per video: {s['calls_per_kind']}")
    lines.append(f"fk eager vs diffusers hook: {s['fk_eager_vs_diffusers']:.2f}x; fk eager speedup / ideal speedup: "
                 f"{s['fk_eager_of_ideal']:.1%}")
    if "fk_compiled_vs_diffusers" in s:
        lines.append(f"fk compiled vs diffusers hook: {s['fk_compiled_vs_diffusers']:.2f}x; fk compiled speedup / "
                     f"ideal compiled speedup: {s['fk_compiled_of_ideal']:.1%}")
    if "fk_cudagraphs_vs_diffusers" in s:
        lines.append(f"fk under CUDA graphs vs diffusers hook: {s['fk_cudagraphs_vs_diffusers']:.2f}x")
    lines.append(f"fk cache memory: {s['cache_bytes_fk'] / 2**20:.2f} MiB")
    return "\n".join(lines)
