"""First-Block-Cache's hooks on the engine (docs/algorithms.md sections 5, 10): the first block's residual change
decides; reuse of the stack residual (or its forecast, section 11)."""

from __future__ import annotations

import torch

from ...runtime.adaptive import AdaptiveHooks, metric_value
from ...runtime.forecasting import ForecastReuse


class FirstBlockCacheHooks(ForecastReuse, AdaptiveHooks):
    policy = "fbcache"
    reads_in_forward = True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.r1_ref: torch.Tensor | None = None

    def reuses(self, b) -> bool:
        return b.order > 0

    def local_names(self) -> tuple:
        return (*super().local_names(), "r1_ref")

    def _fresh_policy(self) -> None:
        self.r1_ref = None

    def allocate_policy(self) -> None:
        first = self.order[0]
        s, d = first.shapes[first.primary]
        self.r1_ref = self._buffer(self.r1_ref, s, d)

    def buffers(self) -> list:
        return super().buffers() + ([self.r1_ref] if self.r1_ref is not None else [])

    def observe_policy(self, b, r) -> None:
        if b.order == 0:
            args, kwargs, out = self._first_call(b, r)
            self._seen["r1"] = b.outs(out)[b.primary].detach() - b.inputs(args, kwargs)[b.primary].detach()

    def adopt_policy(self, seen: dict) -> None:
        self.rows(self.r1_ref).copy_(seen["r1"])

    def run(self, b, args, kwargs):
        if b.order > 0:
            return self.step(b, args, kwargs)
        x0 = b.inputs(args, kwargs)[b.primary]  # the image / video stream, not a text stream
        out = b.call(args, kwargs)
        r1 = b.outs(out)[b.primary] - x0
        metric = self.config.metric
        diff = metric_value(r1, self.rows(self.r1_ref), metric, self.group)
        ahead = self.across(diff, "metric", reused_only=True, since=self.metric)  # self.metric: still the last call's
        pred = self.decide(~(ahead < self.config.threshold))  # NaN computes
        self.metric.copy_(diff)
        self.pred.copy_(pred)
        if self.device_mode:
            self.r1_ref.copy_(torch.where(pred, r1, self.r1_ref))
        else:
            self._read()
            if self.go:
                self.rows(self.r1_ref).copy_(r1)
        return out
