"""CogVideoX's SAT `DiffusionTransformer` (sat/dit_video_concat.py): joint text+video self-attention
`transformer.layers.i.attention`; called as `model(x, timesteps=..., context=..., y=...)` with x [B, T, C, H, W];
output [B, T, C, H, W]; batch [uncond, cond]; skip calls compute `[:1]`, the **uncond** half (cond is
reconstructed), as the reference does. The class name is generic, so the module structure must match too.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules, the layout, the timestep argument
`timesteps` and the preset."""

from __future__ import annotations

from ._structure import named
from .base import Adapter, OutputLayout


class SatCogVideoXAdapter(Adapter):
    def matches(self, model) -> bool:
        return named(model, "DiffusionTransformer", r"transformer\.layers\.\d+\.attention")


ADAPTER = SatCogVideoXAdapter(
    name="sat-cogvideox",
    spatial=(r"^transformer\.layers\.\d+\.attention$",),
    layout=OutputLayout("BFCHW", ("uncond", "cond")),
    timestep_arg="timesteps",
    default_preset="cogvideox-2b",
)
