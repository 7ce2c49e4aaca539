"""Tiny random versions of diffusers' real pipelines (no weights downloaded), and a CFG denoising loop that calls
their transformer batched ([uncond, cond] in one call) or once per branch inside `cache_context`, so that both
call patterns run on the same model with the same inputs."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import _common as ex  # noqa: E402

PROMPT, NEGATIVE = "a red square moving right", "blue"


def tiny_wan(seed: int = 0, two: bool = False):
    """diffusers' WanPipeline with a 2-layer WanTransformer3DModel (a second one for Wan 2.2's low-noise stage when
    `two`), AutoencoderKLWan, a character-level T5, FlowMatchEulerDiscreteScheduler; 64x64 frames -> 8x8 latents."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    tokenizer, text_encoder = ex.tiny_t5(d_model=32, seed=seed)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])

    def transformer():
        return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                     out_channels=4, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2,
                                     cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()

    extra = {"transformer_2": transformer(), "boundary_ratio": 0.5} if two else {}
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer(),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe, {"height": 64, "width": 64, "num_frames": 9, "max_sequence_length": 16, "guidance_scale": 5.0}


def tiny_cogvideox(seed: int = 0):
    """diffusers' CogVideoXPipeline of python/cogvideox_example.py (its loop calls the transformer batched)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from cogvideox_example import tiny_pipeline

    pipe, kw = tiny_pipeline(seed)
    pipe.set_progress_bar_config(disable=True)
    return pipe, {**kw, "guidance_scale": 6.0}


def run_pipeline(pipe, kw, steps: int, seed: int = 0) -> torch.Tensor:
    """The pipeline's own loop end to end; returns the final latents."""
    with torch.no_grad():
        return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, output_type="latent",
                    generator=torch.Generator().manual_seed(seed), **kw).frames


class Loop:
    """The inputs of one pipeline (text embeddings, initial latents, scheduler) and a CFG loop over its transformer:
    `run(per_branch)` calls it batched (no context) or as cond then uncond inside cache_context, with step_index
    and num_inference_steps as diffusers' Wan pipeline passes them."""

    def __init__(self, pipe, kw, steps: int, kind: str, seed: int = 0):
        self.pipe, self.steps, self.kind = pipe, steps, kind
        self.scale = kw["guidance_scale"]
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            if kind == "wan":
                pos, neg = pipe.encode_prompt(PROMPT, NEGATIVE, max_sequence_length=kw["max_sequence_length"])
                self.latents = torch.randn(1, 4, 3, 8, 8, generator=g)  # 9 frames -> 3 latent frames
            else:
                pos, neg = pipe.encode_prompt(PROMPT, NEGATIVE, max_sequence_length=kw["max_sequence_length"])
                self.latents = torch.randn(1, 3, 4, 8, 8, generator=g)  # [B, F, C, H, W]
        self.pos, self.neg = pos, neg

    def run(self, transformer, per_branch: bool) -> torch.Tensor:
        sched = copy.deepcopy(self.pipe.scheduler)
        sched.set_timesteps(self.steps)
        x = self.latents.clone()
        for i, t in enumerate(sched.timesteps):
            ctx = {"step_index": i, "num_inference_steps": self.steps}
            with torch.no_grad():
                if per_branch:
                    with transformer.cache_context("cond", **ctx):
                        cond = self._call(transformer, x, t, self.pos)
                    with transformer.cache_context("uncond", **ctx):
                        uncond = self._call(transformer, x, t, self.neg)
                else:
                    both = self._call(transformer, torch.cat([x, x]), t, torch.cat([self.neg, self.pos]))
                    uncond, cond = both.chunk(2)
            noise = uncond + self.scale * (cond - uncond)
            x = sched.step(noise, t, x, return_dict=False)[0]
        return x

    @staticmethod
    def _call(transformer, x, t, text):
        return transformer(hidden_states=x, timestep=t.expand(x.shape[0]), encoder_hidden_states=text,
                           return_dict=False)[0]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())
