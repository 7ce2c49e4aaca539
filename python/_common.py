"""Shared pieces of the python/ examples: a T5 tokenizer and text encoder that need no download, the --policy
choices applied through fastercache_kernels, and writing the frames."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

POLICIES = ("none", "preset", "diffusers")



def require_extras(script: str) -> None:
    """Exit with the pip command for the [examples] extra when diffusers, transformers or pillow is missing."""
    from fastercache_kernels import _extras

    try:
        _extras.require("examples", f"python/{script}")
    except _extras.MissingExtraError as e:
        raise SystemExit(f"error: {e}") from e


def parser(description: str, preset: str, out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", help="a local diffusers pipeline directory (real weights); default: a tiny random "
                   "pipeline of the same classes, built here without downloads")
    p.add_argument("--policy", choices=POLICIES, default="preset",
                   help=f"none; preset: fk's FasterCache preset (--preset, default {preset}); diffusers: "
                   "diffusers' FasterCacheConfig run by fk's backend")
    p.add_argument("--preset", default=preset, help="fk FasterCache preset name for --policy preset")
    p.add_argument("--prompt", default="a red square moving right on a grey background")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (one CFG call each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out, help="directory for the frames (PNGs and an animated GIF)")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's; 1 for the tiny pipeline)")
    return p


def set_threads(args) -> None:
    # The tiny pipeline's matmuls are too small to share: on this 2-core machine with another job running, its
    # 50 calls took 4-30 s on 2 threads and 0.7 s on one (latte_example.py, 2026-11-22).
    threads = args.threads or (None if args.model else 1)
    if threads:
        torch.set_num_threads(threads)


def apply_policy(pipe, args, diffusers_config):
    """Patches pipe.transformer per --policy; returns the fk handle (None for --policy none)."""
    import fastercache_kernels as fk

    if args.policy == "none":
        return None
    if args.policy == "preset":
        return fk.apply(pipe.transformer, args.preset)
    return fk.apply(pipe.transformer, diffusers_config)


def device_and_dtype(args) -> tuple[torch.device, torch.dtype]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return device, (torch.bfloat16 if device.type == "cuda" else torch.float32)


def write_frames(frames, out: str | Path, scale: int = 1) -> Path:
    """PNG per frame and an animated GIF of a list of PIL images; returns the GIF's path."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if scale > 1:
        frames = [f.resize((f.width * scale, f.height * scale), Image.NEAREST) for f in frames]
    for i, f in enumerate(frames):
        f.save(out / f"frame_{i:03d}.png")
    gif = out / "video.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=125, loop=0)
    return gif


def report(handle, seconds: float, gif: Path, n_frames: int) -> None:
    print(f"sampled {n_frames} frames in {seconds:.2f} s -> {gif}")
    if handle is None:
        print("policy: none (no cache)")
        return
    s = handle.stats()
    attn = s["attention"]
    print(f"policy: {handle!r}")
    print(f"{s['calls']} calls: {s['cfg']['full']} full CFG calls, {s['cfg']['skip']} with one branch skipped; "
          f"attention {sum(k['computed'] for k in attn.values())} computed, "
          f"{sum(k['reused'] for k in attn.values())} reused from the cache; "
          f"cache {(s['cache_bytes'] + s['cfg_residual_bytes']) / 2**20:.2f} MB")
    print("stats: " + json.dumps(s))
