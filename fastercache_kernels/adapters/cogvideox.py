"""diffusers CogVideoXTransformer3DModel: joint text+video attention `transformer_blocks.i.attn1` (its output is
the pair (video, text), both cached), output [B, F, C, H, W], batch [uncond, cond]."""

from __future__ import annotations

from .base import Adapter, OutputLayout


class CogVideoXAdapter(Adapter):
    def matches(self, model) -> bool:
        return type(model).__name__ == "CogVideoXTransformer3DModel"


ADAPTER = CogVideoXAdapter(
    name="cogvideox",
    spatial=(r"^transformer_blocks\.\d+\.attn1$",),
    layout=OutputLayout("BFCHW", ("uncond", "cond")),
    batched_args=("hidden_states", "encoder_hidden_states", "timestep", "timestep_cond"),
    default_preset="cogvideox-2b",
)
