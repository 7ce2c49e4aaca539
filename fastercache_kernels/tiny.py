"""Tiny diffusers pipelines with random weights, built without any download: the real pipeline classes
(CogVideoXPipeline, LattePipeline, WanPipeline) with a T5 tokenizer whose vocabulary is made in memory, a one-layer T5
encoder,
a small VAE and a 2-layer transformer. For the examples, the docs' runnable snippets and tests: the frames are
noise-like, the call pattern is the real one. Needs the [examples] extra (diffusers, transformers).
"""

from __future__ import annotations

import string

import torch

WORDS = ("a", "an", "the", "on", "in", "of", "and", "with", "moving", "left", "right", "up", "down", "red", "green",
         "blue", "yellow", "white", "black", "grey", "square", "circle", "triangle", "cat", "dog", "background")


def tiny_t5(d_model: int = 32, seed: int = 0):
    """A T5 tokenizer over single characters (the real T5Tokenizer class, vocabulary built in memory) and a
    one-layer T5 encoder with random weights: text goes through the pipeline's own encode_prompt."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(f"\u2581{w}", -5.0) for w in WORDS]  # whole words: one token each (cheaper than their letters)
    vocab += [(f"\u2581{c}", -3.0) for c in chars] + [(c, -4.0) for c in chars]  # anything else, letter by letter
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(vocab), d_model=d_model, d_kv=16, d_ff=2 * d_model, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8)
    return tokenizer, T5EncoderModel(config).eval()


def cogvideox_pipeline(seed: int = 0):
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    tokenizer, text_encoder = tiny_t5(d_model=32, seed=seed)
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


def latte_pipeline(seed: int = 0):
    from diffusers import AutoencoderKL, DDIMScheduler, LattePipeline, LatteTransformer3DModel

    tokenizer, text_encoder = tiny_t5(d_model=32, seed=seed)
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


def wan_pipeline(seed: int = 0, two: bool = False):
    """WanPipeline (its loop calls the transformer once per CFG branch inside `cache_context`) with a 2-layer
    WanTransformer3DModel, and with `two` a second one for Wan 2.2's low-noise stage (boundary_ratio 0.5);
    AutoencoderKLWan with 8x spatial and 4x temporal compression: 64x64 frames -> 8x8 latents, 9 frames -> 3."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    tokenizer, text_encoder = tiny_t5(d_model=32, seed=seed)
    torch.manual_seed(seed)
    # latents_mean / latents_std sized to z_dim (the defaults have 16 entries): the pipeline decodes with them
    vae = AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)

    def transformer():
        return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                     out_channels=4, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2,
                                     cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()

    extra = {"transformer_2": transformer(), "boundary_ratio": 0.5} if two else {}
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer(),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), **extra)
    return pipe, {"height": 64, "width": 64, "num_frames": 9, "max_sequence_length": 16}


PIPELINES = {"cogvideox": cogvideox_pipeline, "latte": latte_pipeline, "wan": wan_pipeline}


def pipeline(family: str, seed: int = 0):
    """(pipe, call kwargs giving the frame size and count) for "cogvideox", "latte" or "wan"."""
    return PIPELINES[family](seed)
