"""diffusers MochiTransformer3DModel: joint attention `transformer_blocks.i.attn1` (video, text pair), output
[B, C, F, H, W], CFG batched as [uncond, cond] by its pipeline (text mask included). Blocks return (video, text)
(the last one passes text through unchanged); AdaCache's p is the input of `norm3` minus the block input (the video
stream after the gated attention); the text stream keeps its whole residual. TeaCache's indicator is the first
block's modulated input, as TeaCache4Mochi's.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules, the layout, the presets,
AdaCache's capture point and TeaCache's modulated input."""

from __future__ import annotations

from ._structure import named
from .base import Adapter, OutputLayout


def _modulated_input(block, get):
    """MochiTransformerBlock: norm1's modulated video input, the input of attn1."""
    return block.norm1(get("hidden_states"), get("temb"))[0]


class MochiAdapter(Adapter):
    def matches(self, model) -> bool:
        return named(model, "MochiTransformer3DModel", r"transformer_blocks\.0\.attn1")


ADAPTER = MochiAdapter(
    name="mochi",
    spatial=(r"^transformer_blocks\.\d+\.attn1$",),
    layout=OutputLayout("BCFHW", ("uncond", "cond")),
    default_preset="latte",
    attn_capture=("norm3",),
    capture_io=("hidden_states",),
    teacache_indicator="modulated_input",
    modulated_input=_modulated_input,
    teacache_preset="mochi",
)
