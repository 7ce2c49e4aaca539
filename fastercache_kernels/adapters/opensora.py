"""Open-Sora 1.2 `STDiT3` (opensora/models/stdit/stdit3.py): spatial self-attention `spatial_blocks.i.attn`
(batch B*T) and temporal `temporal_blocks.i.attn` (batch B*S), cross-attention `cross_attn` left alone. Called
by its sampler as `model(x, timestep, y=..., mask=..., x_mask=..., fps=..., height=..., width=...)`; output
[B, 8, T, H, W] (learned sigma: the 8 channels go through the frequency split whole); batch [cond, uncond]; skip
calls compute cond. `mask` ([1, L]) and fps/height/width are not batched: the model repeats the mask itself.
The reference restarts its counter when `timestep[0] == 1000` (the first step of rectified flow).
Adaptive policies (AdaCache's reference model) reuse `spatial_blocks.i` and `temporal_blocks.i`, which take and
return x [B, T*S, C] (frame-major); AdaCache's p (= gate_msa * attn) is the input of `cross_attn` minus the block
input.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules per kind, the layout and its
[cond, uncond] order, the preset, the video restart at t = 1000 and AdaCache's capture point `cross_attn`."""

from __future__ import annotations

from ._structure import named
from .base import Adapter, OutputLayout


class OpenSoraAdapter(Adapter):
    def matches(self, model) -> bool:
        return named(model, "STDiT3", r"spatial_blocks\.\d+\.attn", r"temporal_blocks\.\d+\.attn")

    def starts_video(self, t: float | None) -> bool:
        return t == 1000.0


ADAPTER = OpenSoraAdapter(
    name="opensora",
    spatial=(r"^spatial_blocks\.\d+\.attn$",),
    temporal=(r"^temporal_blocks\.\d+\.attn$",),
    layout=OutputLayout("BCFHW", ("cond", "uncond")),
    timestep_arg="timestep",
    default_preset="opensora-1.2",
    attn_capture=("cross_attn",),
)
