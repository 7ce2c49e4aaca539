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
import _common as ex


def tiny_pipeline(seed: int = 0):
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    tokenizer, text_encoder = ex.tiny_t5(d_model=32, seed=seed)
    torch.manual_seed(seed)
    # 4 VAE levels: 8x spatial and 4x temporal compression, as in CogVideoX; 64x64 frames -> 8x8 latents.
    vae = AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1,
                                 norm_num_groups=2, temporal_compression_ratio=4, sample_height=64, sample_width=64)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=32,
        text_embed_dim=32, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=32)
    pipe = CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=CogVideoXDDIMScheduler())
    return pipe, {"height": 64, "width": 64, "num_frames": 9, "max_sequence_length": 32}


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
        pipe, call_kw = tiny_pipeline(args.seed)
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
