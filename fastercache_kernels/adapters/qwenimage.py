"""diffusers QwenImageTransformer2DModel: dual-stream blocks `transformer_blocks.i` returning **(text, image)**
(paired by tensor identity), joint attention `*.attn` cached. Output [B, N, C] packed 2 x 2
patches on the grid the call's `img_shapes` names ((F, H, W) per sample). diffusers' pipeline calls it once per CFG
branch inside `cache_context`. AdaCache's p is the input of `img_norm2` minus the block input (image stream); the
text stream keeps its whole residual. TeaCache's indicator is the first block's modulated image input.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules, the packed output's token grid
(from `img_shapes`), the preset, AdaCache's capture point and TeaCache's modulated input; the observed pairing is
(encoder_hidden_states, hidden_states)."""

from __future__ import annotations

from ._structure import named
from .base import Adapter, OutputLayout


def _token_grid(model, kwargs):
    shapes = kwargs["img_shapes"]
    first = shapes[0]
    if isinstance(first, list):  # one list of (F, H, W) per sample: the first is the generated image
        first = first[0]
    return tuple(first)


def _modulated_input(block, get):
    """QwenImageTransformerBlock: img_norm1 modulated by the first half of img_mod(temb), the attention input."""
    mod1 = block.img_mod(get("temb")).chunk(2, dim=-1)[0]
    return block._modulate(block.img_norm1(get("hidden_states")), mod1)[0]


class QwenImageAdapter(Adapter):
    def matches(self, model) -> bool:
        return named(model, "QwenImageTransformer2DModel", r"transformer_blocks\.0\.attn")


ADAPTER = QwenImageAdapter(
    name="qwen-image",
    spatial=(r"^transformer_blocks\.\d+\.attn$",),
    layout=OutputLayout("BNC", ("uncond", "cond")),
    default_preset="latte",
    attn_capture=("img_norm2",),
    capture_io=("hidden_states",),
    teacache_indicator="modulated_input",
    modulated_input=_modulated_input,
    token_grid=_token_grid,
)
