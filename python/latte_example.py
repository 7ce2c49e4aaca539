"""Latte with FasterCache through fastercache_kernels: sample a video and write its frames.

    python python/latte_example.py --model /path/to/Latte-1 --policy preset     # real weights, GPU
    python python/latte_example.py                                              # tiny random pipeline

Without --model the pipeline is diffusers' LattePipeline built from tiny configs with random weights (T5
tokenizer and encoder, AutoencoderKL, LatteTransformer3DModel, DDIMScheduler): nothing is downloaded, the frames
are noise-like, and the point is the call pattern and the cache statistics.
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
    """diffusers' FasterCacheConfig for Latte (spatial and temporal attention, CFG-Cache on the uncond half)."""
    from diffusers import FasterCacheConfig

    return FasterCacheConfig(
        spatial_attention_block_skip_range=2, temporal_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(-1, 681), temporal_attention_timestep_skip_range=(-1, 681),
        current_timestep_callback=lambda: pipe.current_timestep, attention_weight_callback=lambda _: 0.5,
        low_frequency_weight_update_timestep_range=(99, 901), high_frequency_weight_update_timestep_range=(-1, 301),
        unconditional_batch_skip_range=5, unconditional_batch_timestep_skip_range=(-1, 641),
        alpha_low_frequency=1.1, alpha_high_frequency=1.1, tensor_format="BCFHW")


def main(argv=None) -> None:
    args = ex.parser(__doc__.splitlines()[0], "latte", "results/latte_example").parse_args(argv)
    ex.require_extras("latte_example.py")
    ex.set_threads(args)
    device, dtype = ex.device_and_dtype(args)
    if args.model:
        from diffusers import LattePipeline

        pipe = LattePipeline.from_pretrained(args.model, torch_dtype=dtype)
        call_kw, scale = {"video_length": 16, "guidance_scale": 7.5}, 1
    else:
        pipe, call_kw = tiny.pipeline("latte", args.seed)
        call_kw["guidance_scale"], scale = 7.5, 8
    pipe.to(device)
    handle = ex.apply_policy(pipe, args, diffusers_config(pipe))
    t0 = time.perf_counter()
    frames = pipe(prompt=args.prompt, negative_prompt="", num_inference_steps=args.steps, clean_caption=False,
                  generator=torch.Generator(device="cpu").manual_seed(args.seed), **call_kw).frames[0]
    seconds = time.perf_counter() - t0
    gif = ex.write_frames(frames, args.out, scale)
    ex.report(handle, seconds, gif, len(frames))


if __name__ == "__main__":
    main()
