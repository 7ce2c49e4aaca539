"""diffusers AllegroTransformer3DModel: self-attention `transformer_blocks.i.attn1` over all frames' tokens, output
[B, C, F, H, W], CFG batched as [uncond, cond] by its pipeline. Blocks return hidden_states; AdaCache's p is the
input of `attn2` minus the block input (attn2 takes x + gate * attn1 directly).
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules FasterCache caches, the output
layout, the default preset and AdaCache's capture point `attn2` (none of which the data flow shows)."""

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
    default_preset="latte",
    attn_capture=("attn2",),
)
