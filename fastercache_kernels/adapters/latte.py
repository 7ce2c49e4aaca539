"""diffusers LatteTransformer3DModel: spatial self-attention `transformer_blocks.i.attn1` (batch B*F) and temporal
self-attention `temporal_transformer_blocks.i.attn1` (batch B*H*W/p^2), both batch-major so the CFG halves are the
two halves of their batch; cross-attention `attn2` is always recomputed. Output [B, C, F, H, W], batch
[uncond, cond].
Adaptive policies reuse `transformer_blocks.i` and `temporal_transformer_blocks.i` (the reshapes between them are
permutations, so per-block reuse equals reusing the whole stack's residual). AdaCache's p (= gate_msa * attn1):
spatial blocks, the input of attn2 (hidden_states after self-attention; ada_norm_single feeds it unnormalised)
minus the block input; temporal blocks (no attn2), the input of norm2 minus the block input.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules per kind, the layout, the preset,
AdaCache's capture points and TeaCache's modulated input."""

from __future__ import annotations

from .base import Adapter, OutputLayout


def _modulated_input(block, get):
    """BasicTransformerBlock with norm_type "ada_norm_single": norm1(x) * (1 + scale_msa) + shift_msa, the input of
    attn1 (TeaCache's indicator), formed without running the block."""
    if getattr(block, "norm_type", None) != "ada_norm_single":
        raise ValueError(f"TeaCache: the modulated input needs norm_type 'ada_norm_single', got "
                         f"{getattr(block, 'norm_type', None)!r}")
    x, t = get("hidden_states"), get("timestep")
    shift, scale = (block.scale_shift_table[None] + t.reshape(x.shape[0], 6, -1)).chunk(6, dim=1)[:2]
    return block.norm1(x) * (1 + scale) + shift


class LatteAdapter(Adapter):
    def matches(self, model) -> bool:
        return type(model).__name__ == "LatteTransformer3DModel"


ADAPTER = LatteAdapter(
    name="latte",
    spatial=(r"^transformer_blocks\.\d+\.attn1$",),
    temporal=(r"^temporal_transformer_blocks\.\d+\.attn1$",),
    layout=OutputLayout("BCFHW", ("uncond", "cond")),
    default_preset="latte",
    attn_capture=("attn2", "norm2"),  # spatial: attn2's query input; temporal (no attn2): norm2's input
    teacache_indicator="modulated_input",
    modulated_input=_modulated_input,
)
