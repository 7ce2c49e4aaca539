"""First-Block-Cache's hooks on the engine (docs/algorithms.md sections 5, 10): the first block's residual change
decides; reuse of the stack residual (or its forecast, section 11), and with `forecast_metric` the change is measured
from r1's own forecast (section 11)."""

from __future__ import annotations

import functools

import torch

from ...runtime.adaptive import AdaptiveHooks, _f32, metric_value
from ...runtime.forecasting import ForecastReuse


class FirstBlockCacheHooks(ForecastReuse, AdaptiveHooks):
    policy = "fbcache"
    reads_c = False  # the rule reads the call count on the host only (see AdaptiveHooks._keeps_c)
    reads_in_forward = True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.r1_ref: torch.Tensor | None = None  # r1 of the last computed call (the plain rule)
        self.r1_ring: torch.Tensor | None = None  # forecast_metric: r1 of the last n + 1 computed calls

    def reuses(self, b) -> bool:
        return b.order > 0

    @functools.cached_property
    def _threshold32(self) -> float:
        """The threshold as the tensor comparison rounds it (the config is frozen: computed once)."""
        return _f32(self.config.threshold)

    def local_names(self) -> tuple:
        return (*super().local_names(), "r1_ref", "r1_ring")

    def _fresh_policy(self) -> None:
        self.r1_ref = self.r1_ring = None

    def allocate_policy(self) -> None:
        first = self.order[0]
        s, d = first.shapes[first.primary]
        if self.fc_metric:  # the ring replaces r1_ref
            self.r1_ring = self.ring(self.r1_ring, s, d)
        else:
            self.r1_ref = self._buffer(self.r1_ref, s, d)

    def buffers(self) -> list:
        return super().buffers() + [t for t in (self.r1_ref, self.r1_ring) if t is not None]

    def observe_policy(self, b, r) -> None:
        if b.order == 0:
            args, kwargs, out = self._first_call(b, r)
            self._seen["r1"] = b.outs(out)[b.primary].detach() - b.inputs(args, kwargs)[b.primary].detach()

    def adopt_policy(self, seen: dict) -> None:
        # with a ring: every slot (only the one at the clock's index counts: the clock has one value after this call)
        self.rows(self.r1_ring if self.fc_metric else self.r1_ref).copy_(seen["r1"])

    def _r1_reference(self) -> torch.Tensor:
        """What this call's r1 is compared with: r1 of the last computed call, or with forecast_metric its forecast
        at this call from r1 of the last n + 1 computed calls (docs/algorithms.md section 11)."""
        return self.forecast_now(self.r1_ring) if self.fc_metric else self.rows(self.r1_ref)

    def _refresh_r1(self, r1: torch.Tensor, pred: torch.Tensor | None = None) -> None:
        """r1 of a computed call becomes the reference: on the host, called on computed calls only; on the device
        (`pred`), written where pred holds."""
        if self.fc_metric:
            self.keep(self.r1_ring, r1, pred)
        elif pred is None:
            self.rows(self.r1_ref).copy_(r1)
        else:
            self.r1_ref.copy_(torch.where(pred, r1, self.r1_ref))

    def run(self, b, args, kwargs):
        if b.order > 0:
            return self.step(b, args, kwargs)
        x0 = b.inputs(args, kwargs)[b.primary]  # the image / video stream, not a text stream
        traced = self.device_mode and self._traced()
        # (the attention overrides are for traced calls; an eager one runs the block as it is)
        out = b.call(args, kwargs) if traced and b.overrides else b.orig(*args, **kwargs)
        r1 = b.outs(out)[b.primary] - x0
        diff = metric_value(r1, self._r1_reference(), self.config.metric, self.group, self.reduces)
        if not traced and self._hforce is not None and self.lead is None and not self.others:
            self._decide_on_host(diff)  # (device decisions: an eager call, decided as the host's; never in a graph)
        else:
            self._flush()
            ahead = self.across(diff, "metric", reused_only=True, since=self.metric)  # self.metric: the last call's
            pred = self.decide(~(ahead < self.config.threshold))  # NaN computes
            self.metric.copy_(diff)
            self.pred.copy_(pred)
            if self.device_mode:
                self._refresh_r1(r1, pred)
                return out
            self._read()
        if self.go:
            self._refresh_r1(r1)
        return out

    def _decide_on_host(self, diff: torch.Tensor) -> None:
        """decide="host" (or an eager decide="device" call) with this call's forced flag known on the host and no
        other branch to combine (a single call per step, or a later branch would follow the first): the metric is
        the call's one host read and the rule runs in Python, the tensor path's decision exactly (the threshold
        rounded to fp32 as the tensor comparison rounds it; NaN computes), without its five tensor ops (about 20 us
        of a reused call on the tiny CogVideoX, benchmarks/bench_overhead.py)."""
        if self.engine.adopting or torch.compiler.is_compiling():
            return self._read()  # (says why compiling is refused)
        d = self.host_indicator = float(diff)
        go = self._hforce or not d < self._threshold32
        self._defer(diff, go)
        self._decided(go)
        if self.device_mode:
            self._eager_go = go  # the blocks' eager branch (`eager_go`): read here already
