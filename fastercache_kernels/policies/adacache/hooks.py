"""AdaCache's hooks on the engine (docs/algorithms.md section 4): per-block residuals p and qr, the codebook rate from
the metric blocks, MoReg, and forecast_order (section 11)."""

from __future__ import annotations

import math

import torch

from ... import ops
from ...runtime import parallel
from ...runtime.adaptive import _F32, _I64, AdaptiveHooks, _dense, _operands, all_reduce_sum
from ...runtime.blocks import BlockInfo, View
from ...runtime.forecasting import ForecastReuse


class AdaCacheHooks(ForecastReuse, AdaptiveHooks):
    policy = "adacache"
    forced_tail = 1  # calls N-1 and N

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.metric_blocks: list[BlockInfo] = []  # chosen once the blocks are observed (`_setup_blocks`)
        self.table = torch.zeros(0, 5, dtype=_F32)

    def _setup_blocks(self) -> None:
        cfg = self.config
        for b in self.blocks:
            b.capture = next((n for n in self.adapter.attn_capture
                              if isinstance(getattr(b.module, n, None), torch.nn.Module)), None)
            b.capture_io = tuple(self.adapter.capture_io)
        if all(b.capture is None for b in self.blocks):
            raise ValueError(f"AdaCache: block {self.blocks[0].name!r} has none of the capture submodules "
                             f"{list(self.adapter.attn_capture)} whose input is x + p (the adapter's "
                             "`attn_capture`)")
        kinds = {b.kind for b in self.blocks}
        kind = cfg.metric_kind if cfg.metric_kind != "auto" else ("temporal" if "temporal" in kinds else "spatial")
        # the metric reads p: only blocks with a capture point (single-stream blocks reuse their whole residual)
        pool = [b for b in self.blocks if b.kind == kind and b.capture is not None]
        if not pool:
            raise ValueError(f"AdaCache: the model has no {kind} blocks with a capture point for the metric")
        layers = cfg.metric_layers if cfg.metric_layers is not None else ((len(pool) - 1) // 2,)
        for i in layers:
            if not -len(pool) <= i < len(pool):
                raise ValueError(f"AdaCache: metric layer {i} is out of range for {len(pool)} {kind} blocks")
        self.metric_blocks = [pool[i] for i in layers]
        for slot, b in enumerate(self.metric_blocks):
            b.metric_slot = slot
        thr = torch.tensor([t for t, _ in cfg.codebook], dtype=_F32)
        if cfg.decision_dtype is not None:
            thr = thr.to(cfg.decision_dtype).float()
        self.thresholds = thr
        self.rates = torch.tensor([r for _, r in cfg.codebook], dtype=_I64)
        self.table = torch.zeros(len(self.metric_blocks), 5, dtype=_F32)  # per metric block: 3 metric + 2 motion

    def scalars(self) -> dict:
        return {**super().scalars(), "next_call": (0, _I64, True), "rate_in": (1.0, _F32, True),
                "m_prev": (1.0, _F32, True), "motion": (math.nan, _F32, True)}

    def recorded(self) -> tuple:
        return (*super().recorded(), "rate_in", "next_call", "motion")

    def local_names(self) -> tuple:
        return (*super().local_names(), "table")

    def _fresh_policy(self) -> None:
        self.table = torch.zeros_like(self.table)

    def residual_names(self) -> tuple:
        return ("p", "qr")

    def begin_policy(self) -> None:
        self.pred.copy_(self.decide(self.c >= self.across(self.next_call, "next_call", torch.minimum)))
        self._read()
        super().begin_policy()  # forecast_order > 0: this call's forecast weights (ForecastReuse)

    def _candidate(self, b) -> None:
        b.capture = next((n for n in self.adapter.attn_capture
                          if isinstance(getattr(b.module, n, None), torch.nn.Module)), None)

    def observe_run(self, b, args, kwargs):
        """The block runs with its capture submodule recording its positional inputs (x + p per stream): which
        streams they are is known after the call."""
        self._mids = None
        if b.capture is None:
            return b.orig(*args, **kwargs)
        seen, sub = [], getattr(b.module, b.capture)

        def capture(*a, **kw):
            seen.append(a)
            return sub(*a, **kw)

        out = b.orig.__func__(View(b.module, {b.capture: capture}), *args, **kwargs)
        self._mids = seen
        return out

    def _take_mids(self):
        mids, self._mids = self._mids, None
        return mids

    def observe_policy(self, b, r) -> None:
        """p = mid - x and qr = out - mid of every stream: what the block's buffers hold after a compute call."""
        ins = [r["ins"][n] for n in b.io_names]
        outs = [r["outs"][i] for i in b.slots]
        mids = ins
        if b.capture is not None:
            got = r["mids"] or []
            cap = b.capture_io or b.io_names
            k = sum(n in cap for n in b.io_names)
            if len(got) != 1 or len(got[0]) < k:
                raise RuntimeError(f"fastercache: block {b.name!r}: its {b.capture!r} ran {len(got)} times with "
                                   f"{[len(s) for s in got]} positional inputs; AdaCache needs it once with {k} (set "
                                   "the adapter's `attn_capture` / `capture_io`)")
            got = got[0]
            # a stream the capture does not see keeps p = 0 (its mid is its input)
            mids = [got[cap.index(n)] if n in cap and cap.index(n) < len(got) else x for n, x in zip(b.io_names, ins)]
        for x, m in zip(ins, mids):
            if not isinstance(m, torch.Tensor) or x.shape != m.shape:
                raise ValueError(f"AdaCache: block {b.name!r}: the input of {b.capture!r} has shape "
                                 f"{list(getattr(m, 'shape', ()))}, the block input {list(x.shape)} (set the "
                                 "adapter's `attn_capture` to a submodule whose first input is x + p, and `capture_io` "
                                 "to the streams its inputs carry)")
        ms = [m.detach() for m in mids]
        self._seen[b] = {"p": [m - x for m, x in zip(ms, ins)], "qr": [o - m for o, m in zip(outs, ms)]}

    def adopt_policy(self, seen: dict) -> None:
        for b in self.order:
            if b not in seen or "p" not in b.bufs:
                continue
            for key in ("p", "qr"):
                for buf, t in zip(map(self.rows, b.bufs[key]), seen[b][key]):
                    buf.copy_(t)
            if self.fc_order:  # every slot (only the first counts: the clock has one value after this call)
                for ring, p, q in zip(map(self.rows, b.bufs["ring"]), seen[b]["p"], seen[b]["qr"]):
                    ring.copy_(p + q)
                if "mring" in b.bufs:
                    self.rows(b.bufs["mring"][0]).copy_(self._metric_residual(seen[b]["p"][b.primary],
                                                                               seen[b]["qr"][b.primary]))
        zero = torch.zeros(3, dtype=_F32, device=self.device)  # no earlier p: the first call's metric is not valid
        for b in self.metric_blocks:
            self.table[b.metric_slot].copy_(torch.cat([zero, self._motion(b, self.rows(b.bufs["p"][b.primary]))]))
        self._update()

    def allocate_policy(self) -> None:
        cfg = self.config
        self.thresholds = self.thresholds.to(self.device)
        self.rates = self.rates.to(self.device)
        self.table = self.table.to(self.device)
        self._slots = torch.arange(len(cfg.codebook), device=self.device)
        for b in self.metric_blocks:
            if b.order < 0:
                raise ValueError(f"AdaCache: metric block {b.name!r} did not run in a model call")
            s = b.shapes[b.primary][0]
            B, T = self.batch, self.frames
            # sharded tokens (context parallelism): frames are found in the whole sequence, not in the shard
            shard = parallel.sequence_shard(self.cp, s[1], self.device) if self.cp is not None and len(s) == 3 \
                and s[0] == B else None
            if len(s) != 3:
                b.motion = None
            elif shard is not None and shard.total % T == 0:
                b.motion = ("shard", T, shard)
            elif s[0] == B and s[1] % T == 0:
                b.motion = ("bnc", T)
            elif s[0] == B * T:
                b.motion = ("fold", B, T)
            elif s[1] == T:
                b.motion = ("bnc", T)
            else:
                b.motion = None
            if cfg.moreg and (b.motion is None or T <= cfg.moreg_stride):
                raise ValueError(f"AdaCache: MoReg cannot find {T} frames (stride {cfg.moreg_stride}) in the residual "
                                 f"of {b.name!r} (shape {list(s)}, batch {B}); use moreg=False")
        self._last_metric = max(self.metric_blocks, key=lambda b: b.order)
        if self.fc_order:  # section 11: the rings of the block residuals (and of the metric's residual)
            for b in self.blocks:
                if "p" in b.bufs:
                    b.bufs["ring"] = self.rings(b.bufs.get("ring"), b.bufs["p"])
                    if self.config.forecast_metric and b.metric_slot >= 0:
                        b.bufs["mring"] = self.rings(b.bufs.get("mring"), b.bufs["p"][b.primary:b.primary + 1])

    def _motion(self, b: BlockInfo, p: torch.Tensor) -> torch.Tensor:
        if not self.config.moreg:
            return torch.zeros(2, dtype=_F32, device=p.device)
        if b.motion[0] == "shard":  # frame pairs across the shard boundary: a halo from the next ranks
            return parallel.motion_partials(p, b.motion[1], self.config.moreg_stride, b.motion[2])
        if b.motion[0] == "fold":  # [B*T, S, C], batch-major (a composed skip call has half the batch)
            T = b.motion[2]
            p = p.reshape(p.shape[0] // T, -1, p.shape[-1])
        else:
            T = b.motion[1]
        return ops.motion_score(p, T, [self.config.moreg_stride], "BNC", partials=True).reshape(2)

    def _partials(self, p, qr, p_old, qr_old, ref=None) -> torch.Tensor:
        """The metric's partial sums: this call's residual against the last computed one, or against `ref` (its
        forecast, with forecast_metric)."""
        metric = self.config.metric
        if ref is not None:
            return ops.feature_diff_partials(self._metric_residual(p, qr), ref, metric)
        if self.config.residual == "attention":
            return ops.feature_diff_partials(p, p_old, metric)
        return ops.feature_diff_partials(p + qr, p_old + qr_old, metric)

    def _metric_residual(self, p, qr):
        return p if self.config.residual == "attention" else p + qr

    def run(self, b, args, kwargs):
        ins = b.inputs(args, kwargs)
        ps, qrs = b.bufs["p"], b.bufs["qr"]
        fc = self.fc_order > 0
        rings = b.bufs["ring"] if fc else []
        mring = b.bufs.get("mring", [])  # forecast_metric, on a metric block: the ring of the metric's residual
        if self.half is not None:  # a composed CFG-skip call: its half of the batch
            ps, qrs = [self.rows(t) for t in ps], [self.rows(t) for t in qrs]
        if not self.go and not self.device_mode:  # a reused block (host decision): first, it is the most common
            if fc:  # section 11: x + the forecast residual, one fused op per stream
                return b.pack([ops.forecast(self.rows(h), self.fc_w, x) for x, h in zip(ins, rings)])
            return b.pack([ops.residual_sum(x, [p, q]) for x, p, q in zip(ins, ps, qrs)])
        k = len(ins)
        j = b.primary  # the image / video stream: the metric's
        metric = b.metric_slot >= 0
        if self.device_mode:
            if fc:
                at = self.clock.index.reshape(1)
                hs = [self.rows(h) for h in (*rings, *mring)]
                fc_in = (*hs, self.fc_w, at)
            else:
                fc_in = ()
            nr = len(rings)

            def compute(*xs):
                out, mids = b.call_capture(args, kwargs, xs[:k])
                outs = _dense(b.outs(out), xs[:k])
                p = [m - x for m, x in zip(mids, xs[:k])]
                qr = [o - m for o, m in zip(outs, mids)]
                ref = ops.forecast(xs[3 * k + nr], xs[-2]) if mring else None  # what a reuse would have added
                extra = (self._partials(p[j], qr[j], xs[k + j], xs[2 * k + j], ref),) if metric else ()
                if fc:  # the values pushed into the rings
                    extra += (*(o - x for o, x in zip(outs, xs[:k])),
                              *((self._metric_residual(p[j], qr[j]).clone(),) if mring else ()))  # no output aliasing p
                return (*outs, *p, *qr, *extra)

            def reuse(*xs):
                if fc:  # section 11: x + the forecast residual; the rings' slots at `at` returned unchanged
                    w, i = xs[-2], xs[-1]
                    hs = xs[3 * k:-2]
                    outs = [ops.forecast(h, w, x) for x, h in zip(xs[:k], hs)]
                    kept = tuple(h.index_select(0, i).squeeze(0) for h in hs)
                else:
                    outs = [ops.residual_sum(x, [p, q]) for x, p, q in zip(xs[:k], xs[k:2 * k], xs[2 * k:3 * k])]
                    kept = ()
                extra = (torch.zeros(3, dtype=_F32, device=xs[0].device),) if metric else ()
                return (*outs, *(t.clone() for t in xs[k:3 * k]), *extra, *kept)

            go = self.eager_go()
            operands = (*_operands(ins), *ps, *qrs, *fc_in)
            if go is None:
                got = torch.cond(self.pred, compute, reuse, operands)
            else:  # an eager call: the chosen branch itself
                got = (compute if go else reuse)(*operands)
            for buf, t in zip((*ps, *qrs), got[k:3 * k]):
                buf.copy_(t)
            if fc:
                for h, t in zip(hs, got[3 * k + metric:]):
                    h.index_copy_(0, at, t.unsqueeze(0))
            if metric:  # the motion sums outside the cond: p is now in the buffer (stale on reuse calls, unused)
                self.table[b.metric_slot].copy_(torch.cat([got[3 * k], self._motion(b, ps[j])]))
                if b is self._last_metric:
                    self._update()
            return b.pack(list(got[:k]))
        out, mids = b.call_capture(args, kwargs)
        outs = b.outs(out)
        done = None
        if metric and mring:
            p0, qr0 = mids[j] - ins[j], outs[j] - mids[j]
            ref = self.forecast_now(mring[0])  # what a reuse would have used at this call
            self.table[b.metric_slot].copy_(torch.cat([self._partials(p0, qr0, None, None, ref),
                                                       self._motion(b, p0)]))
            self.push(mring, [self._metric_residual(p0, qr0)])
        elif metric and self.config.residual == "attention":
            # one pass: p = mid - x, its distance to the cached p, and the cache refreshed (residual_diff_update)
            d = ops.residual_diff_update(mids[j].detach(), ins[j].detach(), ps[j], self.config.metric, partials=True)
            self.table[b.metric_slot].copy_(torch.cat([d, self._motion(b, ps[j])]))
            torch.sub(outs[j].detach(), mids[j].detach(), out=qrs[j])
            done = j
        elif metric:
            p0, qr0 = mids[j] - ins[j], outs[j] - mids[j]
            self.table[b.metric_slot].copy_(torch.cat([self._partials(p0, qr0, ps[j], qrs[j]), self._motion(b, p0)]))
        for i in range(k):  # under no_grad (the block forward's): no detach needed
            if i != done:
                torch.sub(mids[i], ins[i], out=ps[i])
                torch.sub(outs[i], mids[i], out=qrs[i])
        if fc:
            self.push(rings, [o - x for o, x in zip(outs, ins)])
        if metric and b is self._last_metric:
            self._update()
        return out

    def _update(self) -> None:
        """The rate decided on this compute call (device ops; applied where pred is set)."""
        cfg = self.config
        table = all_reduce_sum(self.table, self.group, self.reduces)
        d = (ops.feature_diff_from_partials(table[:, :3].contiguous(), cfg.metric) / self.rate_in).mean()
        c = self.c
        valid = c > 1  # the first compute call of a video has no previous residual
        m = torch.ones((), dtype=_F32, device=d.device)
        motion = torch.full((), math.nan, dtype=_F32, device=d.device)
        if cfg.moreg:
            sums = table[:, 3:].sum(0)
            motion = sums[0] / sums[1]
            first, last = cfg.window()
            inside = (c >= first) & (c <= last)
            m = torch.where(inside, (motion / cfg.moreg_scale) ** cfg.moreg_power, m)
            g = cfg.moreg_gain * (m - self.m_prev) / self.rate_in
            d = d * (m + g.abs())
        if cfg.decision_dtype is not None:
            d = d.to(cfg.decision_dtype).float()
        idx = (self.thresholds <= d).sum().clamp(max=len(cfg.codebook) - 1)
        # a one-hot sum, not rates[idx]: indexing with a device tensor is data-dependent for torch.compile
        rate = (self.rates * (self._slots == idx)).sum()
        rate = torch.where(valid & ~d.isnan(), rate, torch.ones_like(rate))
        pred = self.pred
        self.metric.copy_(torch.where(pred, torch.where(valid, d, torch.full_like(d, math.nan)), self.metric))
        self.motion.copy_(torch.where(pred, motion, self.motion))
        self.m_prev.copy_(torch.where(pred, torch.where(valid, m, torch.ones_like(m)), self.m_prev))
        self.next_call.copy_(torch.where(pred, c + rate, self.next_call))
        self.rate_in.copy_(torch.where(pred, rate.to(_F32), self.rate_in))

    def stats(self) -> dict:
        return {**super().stats(), "rate": float(self.rate_in), "next_call": int(self.next_call),
                "metric_blocks": [b.name for b in self.metric_blocks]}

