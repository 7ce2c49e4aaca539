"""diffusers WanTransformer3DModel (Wan 2.1 / 2.2) and SkyReelsV2Transformer3DModel: self-attention
`blocks.i.attn1` (joint over all frames' tokens, batch B), cross-attention `attn2` left alone; output
[B, C, F, H, W]; batch [uncond, cond] when a caller batches CFG (diffusers' own pipelines call it once per branch
inside `cache_context`). Adaptive policies reuse `blocks.i` (hidden_states in and out); AdaCache's p is the input
of `norm2` minus the block input: norm2 normalises x + gate * attn1 before the cross-attention.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules, the layout, the presets,
AdaCache's capture point `norm2` and TeaCache's indicator (the blocks' `temb`)."""

from __future__ import annotations

from .base import Adapter, OutputLayout


class WanAdapter(Adapter):
    def matches(self, model) -> bool:
        return type(model).__name__ in ("WanTransformer3DModel", "SkyReelsV2Transformer3DModel")


ADAPTER = WanAdapter(
    name="wan",
    spatial=(r"^blocks\.\d+\.attn1$",),
    layout=OutputLayout("BCFHW", ("uncond", "cond")),
    default_preset="latte",
    attn_capture=("norm2",),
    teacache_indicator="timestep_embedding",  # e0, the blocks' `temb`: TeaCache4Wan2.1's indicator
    teacache_preset="wan2.1-t2v-1.3b",
)
