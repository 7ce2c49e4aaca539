"""TeaCache's hooks on the engine (docs/algorithms.md section 5): the indicator's rescaled change, accumulated, decides
in the first block; reuse of the stack residual (or its forecast, section 11)."""

from __future__ import annotations

import torch

from ...runtime.adaptive import _F32, _F64, AdaptiveHooks, _poly, metric_value
from ...runtime.blocks import BlockInfo
from ...runtime.forecasting import ForecastReuse


class TeaCacheHooks(ForecastReuse, AdaptiveHooks):
    policy = "teacache"
    reads_in_forward = True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.u_prev: torch.Tensor | None = None
        ind = self.config.indicator
        self.indicator = self.adapter.teacache_indicator if ind == "auto" else ind

    def scalars(self) -> dict:
        return {**super().scalars(), "acc": (0.0, _F32, True), "acc_seen": (0.0, _F32, True)}

    def local_names(self) -> tuple:
        return (*super().local_names(), "u_prev")

    def _fresh_policy(self) -> None:
        self.u_prev = None

    def recorded(self) -> tuple:
        return (*super().recorded(), "acc_seen")

    def _indicator(self, b: BlockInfo, args, kwargs) -> torch.Tensor:
        kind = self.indicator
        if kind == "timestep_embedding":
            u = b.get(args, kwargs, "temb")
            if not isinstance(u, torch.Tensor):
                raise ValueError(f"TeaCache: indicator 'timestep_embedding' needs a `temb` input of block {b.name!r}")
            return u
        if kind == "modulated_input":
            fn = self.adapter.modulated_input
            if fn is None:
                raise ValueError(f"TeaCache: the {self.adapter.name} adapter cannot form the modulated input; use "
                                 "indicator='block_input' or 'timestep_embedding'")
            return fn(b.module, lambda name: b.get(args, kwargs, name))
        return b.inputs(args, kwargs)[b.primary]

    def observe_policy(self, b, r) -> None:
        if b.order == 0:
            args, kwargs, _ = self._first_call(b, r)
            with torch.no_grad():
                u = self._indicator(b, args, kwargs).detach()
            self._u_shape = (tuple(u.shape), u.dtype)
            self._seen["u"] = u

    def adopt_policy(self, seen: dict) -> None:
        self.rows(self.u_prev).copy_(seen["u"])

    def allocate_policy(self) -> None:
        s, d = self._u_shape
        self.u_prev = self._buffer(self.u_prev, s, d)

    def buffers(self) -> list:
        return super().buffers() + ([self.u_prev] if self.u_prev is not None else [])

    def run(self, b, args, kwargs):
        if b.order == 0:
            u = self._indicator(b, args, kwargs)
            rel = metric_value(u, self.rows(self.u_prev), "rel_l1", self.group)
            # a rescaled distance below 0 counts as 0 (the reference lets it go negative: threshold 0 could reuse)
            acc = self.acc + _poly(self.config.coefficients, rel.to(_F64)).clamp(min=0).to(_F32)
            pred = self.decide(~(self.across(acc, "acc") < self.config.threshold))  # NaN computes
            self.acc.copy_(torch.where(pred, torch.zeros_like(acc), acc))
            self.acc_seen.copy_(acc)
            self.metric.copy_(rel)
            self.pred.copy_(pred)
            self.rows(self.u_prev).copy_(u)
            self._read()
        return self.step(b, args, kwargs)
