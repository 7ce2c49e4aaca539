"""Forecasting reuse for the adaptive policies (TeaCache, First-Block-Cache, MagCache, AdaCache): docs/algorithms.md
section 11.

With `forecast_order` n > 0 in the config, every reused residual keeps its last n + 1 computed values in one static
[n + 1, *shape] tensor (a ring: the slot written on a computed call is `clock.index`), and a reused call adds the
degree-n Lagrange forecast at the current step index instead of the newest value: one fk.ops.forecast per reused
residual (one per call in host mode, where a run of blocks shares one stack residual). The positions, the write
index and the fill count of the ring are one `History` per CFG branch (the `clock`: its own value buffer is a
[n + 1] dummy); every residual of the branch is pushed on the same calls, so one set of weights per call serves
them all. Nothing here reads a tensor on the host: the weights are computed in the pre-hook, the conditional push
of the clock in the post-hook, the slot writes by index_copy_ at the device-side index, so decide="device" still
compiles to one graph.

With `forecast_metric` the decision's own input (First-Block-Cache's r1, TeaCache's indicator, AdaCache's metric
residual) keeps a ring on the same clock, and the rule compares this call's value with `forecast_now(ring)` instead of
the last computed value; `keep` writes the ring on computed calls.

forecast_order 0 (the default) takes none of these paths: the policy is bit-identical to plain reuse.
"""

from __future__ import annotations

import torch

from .. import ops
from .forecast import History


def _dense(outs: list, ins) -> list:
    # as adaptive._dense (not imported: adaptive imports this module)
    return [o.clone() if any(o is x for x in ins) else o.contiguous() for o in outs]


class ForecastReuse:
    """Mixin before AdaptiveHooks in a policy's bases. `step` forecasts the "res" residuals of the stack policies;
    AdaCache, whose residuals are p and qr, keeps its own rings (`rings`, `push`) and forecasts in its `run`."""

    fc_rule = "lagrange"  # History.weights' rule (TaylorSeer's runtime: "taylorseer")

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.fc_order = int(getattr(self.config, "forecast_order", 0) or 0)
        # the rule compares its input with that input's forecast, not its last computed value (section 11)
        self.fc_metric = bool(self.fc_order and getattr(self.config, "forecast_metric", False))
        self.clock = self._new_clock() if self.fc_order else None
        self.fc_w = None

    # -- state ------------------------------------------------------------------------------------------------
    def _new_clock(self) -> History:
        return History(self.fc_order + 1, (), device=self.device)

    def local_names(self) -> tuple:
        return (*super().local_names(), "clock", "fc_w") if self.fc_order else super().local_names()

    def fresh(self) -> None:
        if self.fc_order:
            self.clock, self.fc_w = self._new_clock(), None
        super().fresh()

    def _allocate(self, batch: int, frames: int, device) -> None:
        if not self.fc_order:
            return super()._allocate(batch, frames, device)
        old = {id(b): b.bufs.get("res") for b in self.blocks}
        super()._allocate(batch, frames, device)
        if self.clock.buf.device != self.device:
            self.clock = self._new_clock()
        for b in self.blocks:
            res = b.bufs.get("res")
            if res:
                b.bufs["res"] = self.rings(old[id(b)], res)

    def rings(self, old: list | None, like: list) -> list:
        """One [n + 1, *shape] ring per tensor of `like` (a block's residual buffers), the old ones kept where they
        fit (a reallocation for the same shapes keeps the stored values)."""
        old = old if old and len(old) == len(like) else [None] * len(like)
        return [self.ring(p, r.shape, r.dtype, r.device) for p, r in zip(old, like)]

    def ring(self, old: torch.Tensor | None, shape, dtype, device=None) -> torch.Tensor:
        """One [n + 1, *shape] ring: `old` where it fits, else a new one of zeros."""
        k = self.fc_order + 1
        device = torch.device(device if device is not None else self.device)
        if old is not None and old.shape == (k, *shape) and old.dtype == dtype and old.device == device:
            return old
        h = torch.zeros((k, *shape), dtype=dtype, device=device)
        h._fk_ring = True  # `rows` splits the batch on dim 1
        return h

    def push(self, rings: list, values: list) -> None:
        """Host decisions, a computed call: each value (this call's rows) into its ring at the clock's write index.
        A CFG-skip call computes one half: the other half's slot gets that half's own forecast at this step, so the
        clock's stamp holds for both halves and the other half keeps extrapolating the polynomial of its computed
        residuals."""
        at = self.clock.index.reshape(1)
        for h, v in zip(rings, values):
            if self.half is not None:
                other = h.chunk(2, dim=1)[1 - self.half]
                other.index_copy_(0, at, ops.forecast(other, self.fc_w).unsqueeze(0))
            self.rows(h).index_copy_(0, at, v.unsqueeze(0))

    def _runs(self) -> bool:
        return not self.fc_order  # each block forecasts its own ring (eager device calls too)

    # -- forecast_metric: the decision's own input forecast (docs/algorithms.md section 11) -------------------
    def forecast_now(self, ring: torch.Tensor) -> torch.Tensor:
        """The forecast at this call (this call's rows) from the values `ring` holds of the last n + 1 computed
        calls: what the rule compares this call's value with under `forecast_metric` (fewer points at the start of
        a video: the highest order they allow; one point: the last computed value, the plain rule's reference)."""
        return ops.forecast(self.rows(ring), self.fc_w)

    def keep(self, ring: torch.Tensor, value: torch.Tensor, pred: torch.Tensor | None = None) -> None:
        """A computed call's `value` into `ring` at the clock's write index (the clock advances in `end`). Host
        decisions: call it on computed calls only (`push`: a CFG-skip call's other half gets its own forecast);
        device decisions: `pred`, the slot keeps its value where it is False (no host read)."""
        if pred is None:
            self.push([ring], [value])
            return
        at = self.clock.index.reshape(1)
        ring.index_copy_(0, at, torch.where(pred, value, ring.index_select(0, at).squeeze(0)).unsqueeze(0))

    # -- per call ------------------------------------------------------------------------------------------------
    def begin_policy(self) -> None:
        super().begin_policy()
        if not self.fc_order:
            return
        clock = self.clock
        new = self.c == 1  # the first call of a video (c was reset, then advanced): forget the last video's values
        clock.reset_where(new)
        # positions: the call index in the video (per branch: the step index); see docs/algorithms.md section 11
        w = clock.weights(self.c, self.fc_order, self.fc_rule)
        if self.fc_w is None or self.fc_w.device != w.device:
            self.fc_w = w
        else:  # one persistent tensor: compiled graphs see the same input every call
            self.fc_w.copy_(w)

    def end(self, call) -> None:
        if self.fc_order and self.active:
            self.clock.advance_where(self.pred, self.c)
        super().end(call)

    def step(self, b, args, kwargs):
        if not self.fc_order:
            return super().step(b, args, kwargs)
        ins = b.inputs(args, kwargs)
        k = len(ins)
        at = self.clock.index.reshape(1)
        if self.device_mode:
            hist = b.bufs["res"]
            go = self.eager_go()
            if go is not None:  # an eager call: the branch itself (eager torch.cond costs ~0.5 ms per block)
                if not go:
                    return b.pack([ops.forecast(h, self.fc_w, x) for x, h in zip(ins, hist)])
                out = b.orig(*args, **kwargs)  # (eager: the attention overrides are for torch.cond)
                for h, o, x in zip(hist, b.outs(out), ins):
                    h.index_copy_(0, at, (o - x).unsqueeze(0))
                return out

            def compute(*xs):
                outs = _dense(b.outs(b.call(args, kwargs, xs[:k])), xs[:k])
                return (*outs, *(o - x for o, x in zip(outs, xs[:k])))

            def reuse(*xs):
                w, i = xs[-2], xs[-1]
                hs = xs[k:2 * k]
                # the slot the push would write, unchanged: the copy back below is then a no-op
                return (*(ops.forecast(h, w, x) for x, h in zip(xs[:k], hs)),
                        *(h.index_select(0, i).squeeze(0) for h in hs))

            ops_in = [x if x.is_contiguous() else x.contiguous() for x in ins]
            got = torch.cond(self.pred, compute, reuse, (*ops_in, *hist, self.fc_w, at))
            for h, r in zip(hist, got[k:]):
                h.index_copy_(0, at, r.unsqueeze(0))
            return b.pack(list(got[:k]))
        if self.go:
            if b.head is b:
                b.held = ins  # (under no_grad, as every block's `run`: nothing to detach)
            out = b.call(args, kwargs)
            if b.tail is b:
                self.push(b.bufs["res"], [o - x for o, x in zip(b.outs(out), b.head.held)])
                b.head.held = None
            return out
        if b.head is not b:
            return b.pack(ins)  # inside a reused chain: the head added the chain's forecast residual
        return b.pack([ops.forecast(self.rows(h), self.fc_w, x) for x, h in zip(ins, b.tail.bufs["res"])])

    def stats(self) -> dict:
        st = super().stats()
        if self.fc_order:
            st["forecast_order"] = self.fc_order
        return st
