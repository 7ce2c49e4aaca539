"""diffusers LTXVideoTransformer3DModel: packed tokens in and out, [B, N, C] with N = F * H * W of the latent grid
the call names (`num_frames`, `height`, `width`, divided by the patch sizes), so the output layout is "BNC" with
that token grid for CFG-Cache's frequency split. Self-attention `transformer_blocks.i.attn1` is cached; the
pipeline batches CFG as [uncond, cond] (text mask included). Blocks return hidden_states only; AdaCache's p is the
input of `attn2` minus the block input (attn2 takes x + gate * attn1 directly); TeaCache's indicator is the first
block's modulated input, as TeaCache4LTX-Video's.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules, the packed output's token grid
(from the call's num_frames, height, width), the presets, AdaCache's capture point and TeaCache's modulated input."""

from __future__ import annotations

from ._structure import named
from .base import Adapter, OutputLayout


def _token_grid(model, kwargs):
    cfg = model.config
    return (kwargs["num_frames"] // cfg.patch_size_t, kwargs["height"] // cfg.patch_size,
            kwargs["width"] // cfg.patch_size)


def _modulated_input(block, get):
    """LTXVideoTransformerBlock: norm1(x) * (1 + scale_msa) + shift_msa, the input of attn1."""
    h, temb = get("hidden_states"), get("temb")
    table = block.scale_shift_table
    ada = table[None, None].to(temb.device) + temb.reshape(h.shape[0], temb.size(1), table.shape[0], -1)
    return block.norm1(h) * (1 + ada[:, :, 1]) + ada[:, :, 0]


class LTXAdapter(Adapter):
    def matches(self, model) -> bool:
        return named(model, "LTXVideoTransformer3DModel", r"transformer_blocks\.0\.attn1")


ADAPTER = LTXAdapter(
    name="ltx-video",
    spatial=(r"^transformer_blocks\.\d+\.attn1$",),
    layout=OutputLayout("BNC", ("uncond", "cond")),
    default_preset="latte",
    attn_capture=("attn2",),
    teacache_indicator="modulated_input",
    modulated_input=_modulated_input,
    token_grid=_token_grid,
    teacache_preset="ltx-video",
)
