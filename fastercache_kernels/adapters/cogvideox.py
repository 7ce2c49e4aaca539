"""diffusers CogVideoXTransformer3DModel: joint text+video attention `transformer_blocks.i.attn1` (its output is
the pair (video, text), both cached), output [B, F, C, H, W], batch [uncond, cond].
Adaptive policies reuse `transformer_blocks.i` (outputs (video, text) mirror its inputs); AdaCache's p is the
input of the block's norm2 minus the block input, per stream: exactly gate_msa * attn1(...) for video and text."""

from __future__ import annotations

from .base import Adapter, OutputLayout


def _modulated_input(block, get):
    """CogVideoXBlock: the video part of norm1's output (the input of attn1)."""
    return block.norm1(get("hidden_states"), get("encoder_hidden_states"), get("temb"))[0]


class CogVideoXAdapter(Adapter):
    def matches(self, model) -> bool:
        return type(model).__name__ == "CogVideoXTransformer3DModel"


ADAPTER = CogVideoXAdapter(
    name="cogvideox",
    spatial=(r"^transformer_blocks\.\d+\.attn1$",),
    layout=OutputLayout("BFCHW", ("uncond", "cond")),
    batched_args=("hidden_states", "encoder_hidden_states", "timestep", "timestep_cond"),
    default_preset="cogvideox-2b",
    blocks=(r"^transformer_blocks\.\d+$",),
    attn_capture=("norm2",),  # norm2(x + gate_msa * attn, text + enc_gate_msa * attn_text, temb)
    teacache_indicator="timestep_embedding",
    modulated_input=_modulated_input,
)
