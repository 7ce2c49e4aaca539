"""`LatteT2V`, the class of two seed models: Latte (models/latte_t2v.py, preset "latte") and Open-Sora-Plan 1.1
(opensora/models/diffusion/latte/modeling_latte.py, preset "opensora-plan-1.1"). Both: spatial self-attention
`transformer_blocks.i.attn1` (batch B*F), temporal `temporal_transformer_blocks.i.attn1` (batch B*S), cross-attention
`attn2` left alone; called as `model(hidden_states, timestep=..., encoder_hidden_states=..., added_cond_kwargs=...,
enable_temporal_attentions=..., return_dict=False)`; output a tuple (or `.sample`) whose first item is
[B, 8, F, H, W]; batch [uncond, cond]; skip calls compute cond. Open-Sora-Plan passes encoder_hidden_states as
[B, 1, L, C]; it is sliced on its batch dim like Latte's [B, L, C].

Telling them apart (only the default preset differs): Open-Sora-Plan 1.1 added rotary position embeddings, so a
LatteT2V is taken for Open-Sora-Plan when the model or one of its modules has a true `use_rope` attribute or a
submodule whose class name starts with "RoPE" or "PositionGetter"; otherwise it is Latte. Pass the preset name to
`fk.apply` to choose explicitly.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules per kind, the layout, the preset
per variant (told apart by RoPE) and the timestep argument.
"""

from __future__ import annotations

from ._structure import named
from .base import Adapter, OutputLayout

_SPATIAL = r"transformer_blocks\.\d+\.attn1"
_TEMPORAL = r"temporal_transformer_blocks\.\d+\.attn1"


def has_rope(model) -> bool:
    for mod in model.modules():
        if getattr(mod, "use_rope", False) is True:
            return True
        if type(mod).__name__.startswith(("RoPE", "PositionGetter")):
            return True
    return False


class LatteT2VAdapter(Adapter):
    rope: bool = False

    def matches(self, model) -> bool:
        return named(model, "LatteT2V", _SPATIAL, _TEMPORAL) and has_rope(model) == self.rope


class OpenSoraPlanAdapter(LatteT2VAdapter):
    rope = True


_COMMON = dict(
    spatial=(rf"^{_SPATIAL}$",),
    temporal=(rf"^{_TEMPORAL}$",),
    layout=OutputLayout("BCFHW", ("uncond", "cond")),
    timestep_arg="timestep",
)
LATTE = LatteT2VAdapter(name="latte-t2v", default_preset="latte", **_COMMON)
OPENSORA_PLAN = OpenSoraPlanAdapter(name="opensora-plan", default_preset="opensora-plan-1.1", **_COMMON)
ADAPTERS = (LATTE, OPENSORA_PLAN)
