"""diffusers CogVideoXTransformer3DModel: joint text+video attention `transformer_blocks.i.attn1` (its output is
the pair (video, text), both cached), output [B, F, C, H, W], batch [uncond, cond].
Adaptive policies reuse `transformer_blocks.i` (outputs (video, text) mirror its inputs); AdaCache's p is the
input of the block's norm2 minus the block input, per stream: exactly gate_msa * attn1(...) for video and text.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules, the output layout, the presets
per checkpoint (told apart by the config), AdaCache's capture point `norm2` and TeaCache's indicator (the timestep
embedding, or norm1's modulated video input)."""

from __future__ import annotations

import dataclasses

from .base import Adapter, OutputLayout


def _modulated_input(block, get):
    """CogVideoXBlock: the video part of norm1's output (the input of attn1)."""
    return block.norm1(get("hidden_states"), get("encoder_hidden_states"), get("temb"))[0]


def variant(model) -> str:
    """"2b" (learned positions), "5b" (rotary embeddings) or "1.5" (rotary and temporal patches): what the
    TeaCache coefficients were fitted to."""
    cfg = getattr(model, "config", None)
    if not getattr(cfg, "use_rotary_positional_embeddings", False):
        return "2b"
    return "1.5" if getattr(cfg, "patch_size_t", None) else "5b"


@dataclasses.dataclass(frozen=True)
class CogVideoXAdapter(Adapter):
    variant: str = "2b"

    def matches(self, model) -> bool:
        return type(model).__name__ == "CogVideoXTransformer3DModel" and variant(model) == self.variant


ADAPTER = CogVideoXAdapter(
    name="cogvideox",
    spatial=(r"^transformer_blocks\.\d+\.attn1$",),
    layout=OutputLayout("BFCHW", ("uncond", "cond")),
    default_preset="cogvideox-2b",
    attn_capture=("norm2",),  # norm2(x + gate_msa * attn, text + enc_gate_msa * attn_text, temb)
    teacache_indicator="timestep_embedding",
    modulated_input=_modulated_input,
    teacache_preset="cogvideox-2b",
)

# CogVideoX-5B and 1.5-5B (rotary embeddings): the same blocks, TeaCache's coefficients for those checkpoints.
ADAPTER_5B = dataclasses.replace(ADAPTER, variant="5b", name="cogvideox-5b", teacache_preset="cogvideox-5b")
ADAPTER_15 = dataclasses.replace(ADAPTER, variant="1.5", name="cogvideox-1.5", teacache_preset="cogvideox1.5-5b")
