"""Tiny random versions of diffusers' real pipelines (no weights downloaded), and a CFG denoising loop that calls
their transformer batched ([uncond, cond] in one call) or once per branch inside `cache_context`, so that both
call patterns run on the same model with the same inputs."""

from __future__ import annotations

import copy

import torch

from fastercache_kernels import tiny

PROMPT, NEGATIVE = "a red square moving right", "blue"


def tiny_wan(seed: int = 0, two: bool = False):
    pipe, kw = tiny.wan_pipeline(seed, two)
    pipe.set_progress_bar_config(disable=True)
    return pipe, {**kw, "guidance_scale": 5.0}


def tiny_cogvideox(seed: int = 0):
    pipe, kw = tiny.cogvideox_pipeline(seed)
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
