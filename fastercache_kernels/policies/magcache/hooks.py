"""MagCache's runtime (docs/algorithms.md section 12): reuse of the whole stack's residual, decided before the call
from the calibrated magnitude ratios alone, so the decision is known in the pre-hook (one host read there with
decide="host", as AdaCache; none with decide="device"). The accumulators are 0-d device tensors, per CFG branch."""

from __future__ import annotations

import torch

from ...runtime.adaptive import _F32, _I64, AdaptiveHooks
from ...runtime.forecasting import ForecastReuse


class MagCacheHooks(ForecastReuse, AdaptiveHooks):
    policy = "magcache"
    forced_tail = -1  # no forced last call: diffusers' hook may skip the last step

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.mag = torch.tensor(self.config.ratios, dtype=_F32)

    def scalars(self) -> dict:
        return {**super().scalars(), "acc_ratio": (1.0, _F32, True), "acc_err": (0.0, _F32, True),
                "acc_steps": (0, _I64, True)}

    def recorded(self) -> tuple:
        return (*super().recorded(), "acc_err")

    def allocate_policy(self) -> None:
        self.mag = self.mag.to(self.device)

    def begin_policy(self) -> None:
        super().begin_policy()
        cfg = self.config
        s = self.c - 1  # this branch's step index in the video
        n = self.mag.shape[0]
        ratio = torch.where(s < n, self.mag.index_select(0, s.clamp(max=n - 1).reshape(1)).reshape(()),
                            torch.ones((), dtype=_F32, device=self.mag.device))
        counted = s >= cfg.retention_steps
        acc_ratio = torch.where(counted, self.acc_ratio * ratio, self.acc_ratio)
        steps = torch.where(counted, self.acc_steps + 1, self.acc_steps)
        err = torch.where(counted, self.acc_err + (1.0 - acc_ratio).abs(), self.acc_err)
        # c > 1: a residual was computed in this video (the first call always computes)
        skip = counted & (self.c > 1) & (err <= cfg.threshold) & (steps <= cfg.max_skip_steps)
        pred = self.decide(~skip)
        # a computed step restarts the accumulation (before the retention steps they hold their start values)
        self.acc_ratio.copy_(torch.where(pred, torch.ones_like(acc_ratio), acc_ratio))
        self.acc_steps.copy_(torch.where(pred, torch.zeros_like(steps), steps))
        self.acc_err.copy_(torch.where(pred, torch.zeros_like(err), err))
        self.metric.copy_(err)
        self.pred.copy_(pred)
        self._read()
