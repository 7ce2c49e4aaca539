"""CogVideoX with FasterCache through fastercache_kernels: sample a video and write its frames.

    python python/cogvideox_example.py --model /path/to/CogVideoX-2b --policy preset     # real weights, GPU
    python python/cogvideox_example.py                                                   # tiny random pipeline

Without --model the pipeline is diffusers' CogVideoXPipeline built from tiny configs with random weights (T5
tokenizer and encoder, AutoencoderKLCogVideoX, CogVideoXTransformer3DModel, CogVideoXDDIMScheduler): nothing is
downloaded, the frames are noise-like, and the point is the call pattern and the cache statistics.
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
    """diffusers' documented CogVideoX FasterCache settings (diffusers/hooks/faster_cache.py)."""
    from diffusers import FasterCacheConfig

    return FasterCacheConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 681),
        current_timestep_callback=lambda: pipe.current_timestep, attention_weight_callback=lambda _: 0.3,
        low_frequency_weight_update_timestep_range=(99, 641), high_frequency_weight_update_timestep_range=(-1, 301),
        spatial_attention_block_identifiers=["transformer_blocks"], tensor_format="BFCHW")


def main(argv=None) -> None:
    args = ex.parser(__doc__.splitlines()[0], "cogvideox-2b", "results/cogvideox_example").parse_args(argv)
    ex.require_extras("cogvideox_example.py")
    ex.set_threads(args)
    device, dtype = ex.device_and_dtype(args)
    if args.model:
        from diffusers import CogVideoXPipeline

        pipe = CogVideoXPipeline.from_pretrained(args.model, torch_dtype=dtype)
        pipe.vae.enable_tiling()  # decoding 49 frames at 480x720 in one piece needs more memory than sampling
        call_kw, scale = {"num_frames": 49, "guidance_scale": 6.0}, 1
    else:
        pipe, call_kw = tiny.pipeline("cogvideox", args.seed)
        call_kw["guidance_scale"], scale = 6.0, 4
    pipe.to(device)
    handle = ex.apply_policy(pipe, args, diffusers_config(pipe))
    t0 = time.perf_counter()
    frames = pipe(prompt=args.prompt, negative_prompt="", num_inference_steps=args.steps,
                  generator=torch.Generator(device="cpu").manual_seed(args.seed), **call_kw).frames[0]
    seconds = time.perf_counter() - t0
    gif = ex.write_frames(frames, args.out, scale)
    ex.report(handle, seconds, gif, len(frames))


if __name__ == "__main__":
    main()
