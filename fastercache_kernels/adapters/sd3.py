"""diffusers SD3Transformer2DModel: joint (MMDiT) blocks `transformer_blocks.i` returning **(text, image)**
(paired by tensor identity); the last block drops the text stream and returns (None, image).
Joint attention `*.attn` cached; output [B, C, H, W]; the pipeline batches CFG as [uncond, cond], pooled
projections included. AdaCache's p is the input of `norm2` minus the block input (image stream); the text stream
keeps its whole residual. TeaCache's indicator is the first block's modulated image input.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules, the layout, the preset,
AdaCache's capture point and TeaCache's modulated input; the observed pairing is (encoder_hidden_states,
hidden_states), and (None, hidden_states) for the last block."""

from __future__ import annotations

from ._structure import named
from .base import Adapter, OutputLayout


def _modulated_input(block, get):
    return block.norm1(get("hidden_states"), emb=get("temb"))[0]


class SD3Adapter(Adapter):
    def matches(self, model) -> bool:
        return named(model, "SD3Transformer2DModel", r"transformer_blocks\.0\.attn")


ADAPTER = SD3Adapter(
    name="sd3",
    spatial=(r"^transformer_blocks\.\d+\.attn$",),
    layout=OutputLayout("BCHW", ("uncond", "cond")),
    default_preset="latte",
    attn_capture=("norm2",),
    capture_io=("hidden_states",),
    teacache_indicator="modulated_input",
    modulated_input=_modulated_input,
)
