"""diffusers AllegroTransformer3DModel: self-attention `transformer_blocks.i.attn1` over all frames' tokens, output
[B, C, F, H, W], CFG batched as [uncond, cond] by its pipeline. Blocks return hidden_states; AdaCache's p is the
input of `attn2` minus the block input (attn2 takes x + gate * attn1 directly)."""

from __future__ import annotations

from ._structure import named
from .base import Adapter, OutputLayout


class AllegroAdapter(Adapter):
    def matches(self, model) -> bool:
        return named(model, "AllegroTransformer3DModel", r"transformer_blocks\.0\.attn1")


ADAPTER = AllegroAdapter(
    name="allegro",
    spatial=(r"^transformer_blocks\.\d+\.attn1$",),
    layout=OutputLayout("BCFHW", ("uncond", "cond")),
    batched_args=("hidden_states", "encoder_hidden_states", "timestep", "attention_mask", "encoder_attention_mask"),
    default_preset="latte",
    blocks=(r"^transformer_blocks\.\d+$",),
    block_io=("hidden_states",),
    attn_capture=("attn2",),
)
