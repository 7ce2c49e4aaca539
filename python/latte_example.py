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
import _common as ex


def tiny_pipeline(seed: int = 0):
    from diffusers import AutoencoderKL, DDIMScheduler, LattePipeline, LatteTransformer3DModel

    tokenizer, text_encoder = ex.tiny_t5(d_model=32, seed=seed)
    torch.manual_seed(seed)
    # 2 VAE levels: 2x spatial compression; 32x32 frames -> 16x16 latents, 8x8 patches of 2x2.
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 8), latent_channels=4, norm_num_groups=2, sample_size=32)
    # Latte predicts noise and a variance (out_channels = 2 x in_channels), as the released model does.
    transformer = LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=32, sample_size=16, patch_size=2, norm_type="ada_norm_single", caption_channels=32,
        video_length=8)
    pipe = LattePipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                         scheduler=DDIMScheduler())
    return pipe, {"height": 32, "width": 32, "video_length": 8}


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
        pipe, call_kw = tiny_pipeline(args.seed)
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
