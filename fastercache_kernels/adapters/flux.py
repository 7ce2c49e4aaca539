"""diffusers FluxTransformer2DModel: dual-stream blocks `transformer_blocks.i` then single-stream blocks
`single_transformer_blocks.i`, all called with keywords and all returning **(text, image)**: the two streams pair by
tensor identity, even when their shapes are equal. Attention
`*.attn` is cached. FLUX.1 is guidance-distilled (guidance is an input, one call per step): its default FasterCache
preset has no CFG-Cache; with true CFG (diffusers' `true_cfg_scale`, one call per branch inside `cache_context`)
the split runs over the packed tokens' grid, read from `img_ids`. Output [B, N, C] packed 2 x 2 patches.
AdaCache's p is read at `norm2` of dual-stream blocks (image stream); single-stream blocks keep their whole
residual. TeaCache's indicator is the first block's modulated input, as TeaCache4FLUX's.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules, the packed output's token grid
(from `img_ids`), the presets, AdaCache's capture point and TeaCache's modulated input; the observed pairing is
(encoder_hidden_states, hidden_states) for both stacks."""

from __future__ import annotations

from ._structure import named
from .base import Adapter, OutputLayout


def _token_grid(model, kwargs):
    """(1, H, W) of the image tokens from their ids (row, column in columns 1, 2): one host read per new shape."""
    ids = kwargs["img_ids"]
    ids = ids[0] if ids.dim() == 3 else ids
    return (1, int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1)


def _modulated_input(block, get):
    """FluxTransformerBlock: norm1's modulated image input, the input of the joint attention."""
    return block.norm1(get("hidden_states"), emb=get("temb"))[0]


class FluxAdapter(Adapter):
    def matches(self, model) -> bool:
        return named(model, "FluxTransformer2DModel", r"transformer_blocks\.0\.attn")


ADAPTER = FluxAdapter(
    name="flux",
    spatial=(r"^transformer_blocks\.\d+\.attn$", r"^single_transformer_blocks\.\d+\.attn$"),
    layout=OutputLayout("BNC", ("uncond", "cond")),
    default_preset="attention-only",
    attn_capture=("norm2",),
    capture_io=("hidden_states",),
    teacache_indicator="modulated_input",
    modulated_input=_modulated_input,
    token_grid=_token_grid,
    guidance_distilled=True,
    teacache_preset="flux",
    fbcache_preset="flux",
)
