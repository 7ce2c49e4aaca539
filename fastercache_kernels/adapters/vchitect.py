"""Vchitect-2.0 `VchitectXLTransformerModel` (models/VchitectXL.py): `transformer_blocks.i.attn` computes spatial,
temporal and text attention in one module and returns a tuple (video, text): both parts are cached. Called as
`model(hidden_states=[1, F, C, H, W], encoder_hidden_states=[1, L, C], pooled_projections=[1, P], timestep=[1],
return_dict=False)`, once per CFG branch (batch 1), or, by the reference pipeline's accelerated loop, as
`model.my_forward(..., counter=k)` (the engine wraps that entry point too); output a tuple whose first item is
[F, C, H, W].

The model never sees both branches in one call, so at model level only attention is reused (CFG-Cache works in
the pipeline: `fk.pipeline.CFGCache`). The reference counts pipeline steps, and a step's two calls share one
count; `StepSchedule` counts a step each time the timestep changes (both calls of a step pass the same one), so
the same rule holds whether the pipeline makes two calls per step or, on CFG-Cache skip steps, one. Because the
cache belongs to the module, not to a branch, a call reuses whatever was computed last: on a full step after a
skip step the uncond call reuses the previous cond call's attention, as in the reference.
The block stack, each block's output/input pairing and the CFG-carrying arguments are observed from the first call
(docs/models.md, "How fk observes a model"). Declared here: the attention modules, the step-keyed schedule, the
`my_forward` entry point and the one state across a step's branch calls (none of which the data flow shows).
"""

from __future__ import annotations

from ..policies.fastercache.config import KINDS, CallPlan, FasterCacheConfig, FasterCacheSchedule
from ._structure import named
from .base import Adapter, OutputLayout


class StepSchedule(FasterCacheSchedule):
    """The attention part of a FasterCacheConfig, keyed on the step count: a new step starts when the timestep
    differs from the previous call's (or on every call when the model gets no timestep)."""

    def __init__(self, config: FasterCacheConfig, kinds=KINDS):
        super().__init__(config.replace(cfg=False), kinds)
        self.step = 0
        self._t = None

    def plan(self, c: int, timestep: float | None = None) -> CallPlan:
        if c == 1:
            self.step = 0
        if c == 1 or timestep is None or timestep != self._t:
            self.step += 1
        self._t = timestep
        return self.table(self.step)[self.step - 1]


class VchitectAdapter(Adapter):
    def matches(self, model) -> bool:
        return named(model, "VchitectXLTransformerModel", r"transformer_blocks\.\d+\.attn")

    def make_schedule(self, config: FasterCacheConfig, kinds=KINDS) -> StepSchedule:
        return StepSchedule(config, kinds)


ADAPTER = VchitectAdapter(
    name="vchitect",
    spatial=(r"^transformer_blocks\.\d+\.attn$",),
    # The sample has no batch dim: its frames [F, C, H, W] take the batch's place (calls are never split here).
    layout=OutputLayout("BCHW", ("uncond", "cond")),
    timestep_arg="timestep",
    default_preset="vchitect-2.0",
    entry_points=("my_forward",),  # the reference pipeline's accelerated loop calls my_forward(..., counter=k)
    # its reference keeps one attention cache across the uncond and cond calls of a step (docs/seed-models.md)
    branches_by_timestep=False,
)
