"""Open-Sora 1.2 `STDiT3` (opensora/models/stdit/stdit3.py): spatial self-attention `spatial_blocks.i.attn`
(batch B*T) and temporal `temporal_blocks.i.attn` (batch B*S), cross-attention `cross_attn` left alone. Called
by its sampler as `model(x, timestep, y=..., mask=..., x_mask=..., fps=..., height=..., width=...)`; output
[B, 8, T, H, W] (learned sigma: the 8 channels go through the frequency split whole); batch [cond, uncond]; skip
calls compute cond. `mask` ([1, L]) and fps/height/width are not batched: the model repeats the mask itself.
The reference restarts its counter when `timestep[0] == 1000` (the first step of rectified flow).
Adaptive policies (AdaCache's reference model) reuse `spatial_blocks.i` and `temporal_blocks.i`, which take and
return x [B, T*S, C] (frame-major); AdaCache's p (= gate_msa * attn) is the input of `cross_attn` minus the block
input."""

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
    batched_args=("x", "timestep", "y", "x_mask"),
    default_preset="opensora-1.2",
    blocks=(r"^spatial_blocks\.\d+$",),
    temporal_blocks=(r"^temporal_blocks\.\d+$",),
    block_io=("x",),
    attn_capture=("cross_attn",),
)
