"""TeaCache's hooks on the engine (docs/algorithms.md section 5): the indicator's rescaled change, accumulated, decides
in the first block; reuse of the stack residual (or its forecast, section 11); with `forecast_metric`, the rescaled
distance of the indicator from its own forecast decides instead (section 11)."""

from __future__ import annotations

import torch

from ...runtime.adaptive import _F32, _F64, AdaptiveHooks, _poly, metric_value
from ...runtime.blocks import BlockInfo
from ...runtime.forecasting import ForecastReuse


class TeaCacheHooks(ForecastReuse, AdaptiveHooks):
    policy = "teacache"
    reads_c = False  # the rule reads the call count on the host only (see AdaptiveHooks._keeps_c)
    reads_in_forward = True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.u_prev: torch.Tensor | None = None  # the indicator of the last call (the plain rule)
        self.u_ring: torch.Tensor | None = None  # forecast_metric: the indicator of the last n + 1 computed calls
        ind = self.config.indicator
        self.indicator = self.adapter.teacache_indicator if ind == "auto" else ind

    def scalars(self) -> dict:
        return {**super().scalars(), "acc": (0.0, _F32, True), "acc_seen": (0.0, _F32, True)}

    def local_names(self) -> tuple:
        return (*super().local_names(), "u_prev", "u_ring")

    def _fresh_policy(self) -> None:
        self.u_prev = self.u_ring = None

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
        # with a ring: every slot (only the one at the clock's index counts: the clock has one value after this call)
        self.rows(self.u_ring if self.fc_metric else self.u_prev).copy_(seen["u"])

    def allocate_policy(self) -> None:
        s, d = self._u_shape
        if self.fc_metric:  # the ring replaces u_prev
            self.u_ring = self.ring(self.u_ring, s, d)
        else:
            self.u_prev = self._buffer(self.u_prev, s, d)

    def buffers(self) -> list:
        return super().buffers() + [t for t in (self.u_prev, self.u_ring) if t is not None]

    def _indicator_value(self, u: torch.Tensor) -> torch.Tensor:
        """`acc` before the threshold test: the plain rule adds the rescaled change since the last call to the
        accumulator; with forecast_metric it is the rescaled distance of u from its forecast at this call from the
        indicator of the last n + 1 computed calls, not accumulated (docs/algorithms.md section 11)."""
        ref = self.forecast_now(self.u_ring) if self.fc_metric else self.rows(self.u_prev)
        rel = metric_value(u, ref, "rel_l1", self.group, self.reduces)
        self.metric.copy_(rel)
        # a rescaled distance below 0 counts as 0 (the reference lets it go negative: threshold 0 could reuse)
        d = _poly(self.config.coefficients, rel.to(_F64)).clamp(min=0).to(_F32)
        return d if self.fc_metric else self.acc + d

    def _refresh_u(self, u: torch.Tensor) -> None:
        """After the decision: u_prev is this call's u (every call), or with forecast_metric u goes into the ring where
        the call computes."""
        if not self.fc_metric:
            self.rows(self.u_prev).copy_(u)
        elif self.device_mode:
            self.keep(self.u_ring, u, self.pred)
        elif self.go:
            self.keep(self.u_ring, u)

    def run(self, b, args, kwargs):
        if b.order == 0:
            u = self._indicator(b, args, kwargs)
            acc = self._indicator_value(u)
            pred = self.decide(~(self.across(acc, "acc") < self.config.threshold))  # NaN computes
            self.acc.copy_(torch.where(pred, torch.zeros_like(acc), acc))
            self.acc_seen.copy_(acc)
            self.pred.copy_(pred)
            self._read()
            self._refresh_u(u)
        return self.step(b, args, kwargs)
