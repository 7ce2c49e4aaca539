"""diffusers HunyuanVideoTransformer3DModel and HunyuanVideo15Transformer3DModel. Dual-stream blocks
`transformer_blocks.i` (video, text) then, in HunyuanVideo 1.0, single-stream blocks `single_transformer_blocks.i`
that also return (video, text); joint attention `*.attn` is cached (pair output). Output [B, C, F, H, W].
HunyuanVideo 1.0 is guidance-distilled (guidance is an input; diffusers' pipeline adds true CFG per branch inside
`cache_context` only with a negative prompt and true_cfg_scale > 1): its default FasterCache preset has no
CFG-Cache. The CFG batch, when a caller batches it, also carries pooled_projections, guidance and the text mask.
Adaptive policies reuse the whole stack of blocks; AdaCache's p is read at `norm2` of dual-stream blocks (video
stream: x + gate * attn); the text stream and single-stream blocks (no point where x + p exists) keep their whole
residual. TeaCache's indicator is the first block's modulated input, as TeaCache4HunyuanVideo's.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules, the layout, the presets
(HunyuanVideo 1.0 is guidance-distilled), AdaCache's capture point and TeaCache's modulated input; the text
refiner's blocks are observed as a stack off the image stream and left alone."""

from __future__ import annotations

import dataclasses

from ._structure import has_module
from .base import Adapter, OutputLayout


def _modulated_input(block, get):
    """HunyuanVideo(15)TransformerBlock: norm1's modulated video input, the input of the joint attention."""
    return block.norm1(get("hidden_states"), emb=get("temb"))[0]


@dataclasses.dataclass(frozen=True)
class HunyuanVideoAdapter(Adapter):
    classes: tuple = ()

    def matches(self, model) -> bool:
        return type(model).__name__ in self.classes and has_module(model, r"transformer_blocks\.0\.attn")


ADAPTER = HunyuanVideoAdapter(
    classes=("HunyuanVideoTransformer3DModel",),
    name="hunyuanvideo",
    spatial=(r"^transformer_blocks\.\d+\.attn$", r"^single_transformer_blocks\.\d+\.attn$"),
    layout=OutputLayout("BCFHW", ("uncond", "cond")),
    default_preset="attention-only",
    attn_capture=("norm2",),
    capture_io=("hidden_states",),
    teacache_indicator="modulated_input",
    modulated_input=_modulated_input,
    guidance_distilled=True,
    teacache_preset="hunyuanvideo",
    fbcache_preset="hunyuanvideo",
)

# HunyuanVideo 1.5: dual-stream blocks only, trained with CFG (its pipeline calls cond and uncond per branch).
ADAPTER_15 = dataclasses.replace(ADAPTER, classes=("HunyuanVideo15Transformer3DModel",), name="hunyuanvideo-1.5",
                                 default_preset="latte", guidance_distilled=False)
