"""diffusers LatteTransformer3DModel: spatial self-attention `transformer_blocks.i.attn1` (batch B*F) and temporal
self-attention `temporal_transformer_blocks.i.attn1` (batch B*H*W/p^2), both batch-major so the CFG halves are the
two halves of their batch; cross-attention `attn2` is always recomputed. Output [B, C, F, H, W], batch
[uncond, cond]."""

from __future__ import annotations

from .base import Adapter, OutputLayout


class LatteAdapter(Adapter):
    def matches(self, model) -> bool:
        return type(model).__name__ == "LatteTransformer3DModel"


ADAPTER = LatteAdapter(
    name="latte",
    spatial=(r"^transformer_blocks\.\d+\.attn1$",),
    temporal=(r"^temporal_transformer_blocks\.\d+\.attn1$",),
    layout=OutputLayout("BCFHW", ("uncond", "cond")),
    batched_args=("hidden_states", "timestep", "encoder_hidden_states", "encoder_attention_mask"),
    default_preset="latte",
)
