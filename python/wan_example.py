"""Wan 2.1 with FasterCache through fastercache_kernels: sample a video and write its frames.

    python python/wan_example.py --model /path/to/Wan2.1-T2V-1.3B-Diffusers    # real weights, GPU
    python python/wan_example.py                                               # tiny random pipeline

Without --model the pipeline is diffusers' WanPipeline built from tiny configs with random weights
(fastercache_kernels.tiny.wan_pipeline: T5 tokenizer and encoder, AutoencoderKLWan, WanTransformer3DModel,
FlowMatchEulerDiscreteScheduler): nothing is downloaded, the frames are noise-like, and the point is the call
pattern (one transformer call per CFG branch inside `cache_context`) and the cache statistics. On skip steps the
branch the pipeline calls first (cond) runs and the other is rebuilt, whatever the preset's computed branch.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as ex  # noqa: E402

from fastercache_kernels import tiny  # noqa: E402


def diffusers_config(pipe):
    """diffusers' FasterCacheConfig for Wan: attention reuse only (its CFG skip needs the batched call pattern)."""
    from diffusers import FasterCacheConfig

    return FasterCacheConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 681),
        current_timestep_callback=lambda: pipe.current_timestep, is_guidance_distilled=True,
        spatial_attention_block_identifiers=["blocks"], tensor_format="BCFHW")


def main(argv=None) -> None:
    args = ex.parser(__doc__.splitlines()[0], "latte", "results/wan_example").parse_args(argv)
    ex.require_extras("wan_example.py")
    ex.set_threads(args)
    device, dtype = ex.device_and_dtype(args)
    if args.model:
        from diffusers import WanPipeline

        pipe = WanPipeline.from_pretrained(args.model, torch_dtype=dtype)
        call_kw, scale = {"num_frames": 33, "height": 480, "width": 832, "guidance_scale": 5.0}, 1
    else:
        pipe, call_kw = tiny.wan_pipeline(args.seed)
        call_kw["guidance_scale"], scale = 5.0, 4
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    handle = ex.apply_policy(pipe, args, diffusers_config(pipe))
    t0 = time.perf_counter()
    frames = pipe(prompt=args.prompt, negative_prompt="blue", num_inference_steps=args.steps, output_type="pil",
                  generator=torch.Generator(device="cpu").manual_seed(args.seed), **call_kw).frames[0]
    seconds = time.perf_counter() - t0
    gif = ex.write_frames(frames, args.out, scale)
    ex.report(handle, seconds, gif, len(frames))


if __name__ == "__main__":
    main()
