"""MagCache's runtime (docs/algorithms.md section 12): reuse of the whole stack's residual, decided before the call
from the calibrated magnitude ratios alone, so the decision is known in the pre-hook (one host read there with
decide="host", as AdaCache; none with decide="device"). The accumulators are 0-d device tensors, per CFG branch."""

from __future__ import annotations

import torch

from ...runtime.adaptive import _F32, _I64, AdaptiveHooks, _f32
from ...runtime.forecasting import ForecastReuse


class MagCacheHooks(ForecastReuse, AdaptiveHooks):
    policy = "magcache"
    forced_tail = -1  # no forced last call: diffusers' hook may skip the last step

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.mag = torch.tensor(self.config.ratios, dtype=_F32)
        self._hratios = None  # the ratios as fp32 values on the host (read once)

    def scalars(self) -> dict:
        return {**super().scalars(), "acc_ratio": (1.0, _F32, True), "acc_err": (0.0, _F32, True),
                "acc_steps": (0, _I64, True)}

    def recorded(self) -> tuple:
        return (*super().recorded(), "acc_err")

    def allocate_policy(self) -> None:
        self.mag = self.mag.to(self.device)

    _hacc = None  # (acc_ratio, acc_steps, acc_err) on the host, where the last call took the host path

    def local_names(self) -> tuple:
        return (*super().local_names(), "_hacc")

    def begin_policy(self) -> None:
        super().begin_policy()
        if self._hforce is not None and (self.lead is None or self._hlead is not None) and (
                self._hacc is not None or self._hc == 1):
            return self._decide_on_host()
        self._hacc = None
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

    def _decide_on_host(self) -> None:
        """The same rule with the step, the forced flag and the accumulators known on the host (decide="host" and
        eager device calls; a later CFG branch with the first one's decision known on the host): Python floats
        rounded to fp32 after each operation, which is the tensor path's fp32 arithmetic exactly (a double holds the
        exact result of an fp32 +, - or * of fp32 values), and five fills instead of about fifteen tensor ops."""
        cfg, c = self.config, self._hc
        if c == 1:  # a new video: the accumulators were just reset
            self._hacc = (1.0, 0, 0.0)
        if self._hratios is None:
            self._hratios = self.mag.tolist()
        acc, steps, err = self._hacc
        s = c - 1
        if s >= cfg.retention_steps:
            acc = _f32(acc * (self._hratios[s] if s < len(self._hratios) else 1.0))
            steps += 1
            err = _f32(err + abs(_f32(1.0 - acc)))
        skip = s >= cfg.retention_steps and c > 1 and err <= _f32(cfg.threshold) and steps <= cfg.max_skip_steps
        # (a later CFG branch follows the first one's decision, as `decide` does: `_hlead`)
        go = self._hforce or (not skip if self.lead is None else self._hlead)
        self.metric.fill_(err)
        self.host_indicator = err
        self._hacc = (1.0, 0, 0.0) if go else (acc, steps, err)
        self.acc_ratio.fill_(self._hacc[0])
        self.acc_steps.fill_(self._hacc[1])
        self.acc_err.fill_(self._hacc[2])
        self.pred.fill_(go)
        if not self.device_mode:  # (device decisions: the blocks read `pred`, once in an eager call)
            self._decided(go)  # (counted in host_reads as `_read` counts it)
