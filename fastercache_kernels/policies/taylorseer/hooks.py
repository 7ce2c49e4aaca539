"""TaylorSeer's runtime (docs/algorithms.md section 13): a fixed schedule decided in the pre-hook (in Python from
the host's call count with decide="host", by device ops with decide="device"), and on forecast calls the outputs of
the forecast modules (the output projection in mode "lite", the attention modules in mode "attention") from their
last computed values; mode "residual" is `TaylorSeerResidualHooks` (section 11's stack-residual forecast).

Each forecast module keeps, per output, a ring [K, *shape] of its last K = max_order + 1 computed outputs; the
positions, write index and fill count are one `History` per CFG branch (the clock, as runtime/forecasting.py), so one
set of TaylorSeer weights per call (History.weights, rule "taylorseer", positions = the step index) serves every
ring, and a forecast is one fk.ops.forecast per output. With decide="host" the clock is mirrored in Python
(`hclock`) and the weights come from `taylor_weights`. In mode "lite" the blocks pass their inputs through on
forecast calls (their outputs only feed the forecast projection). decide="device" reads nothing on the host, so it
compiles to one graph (torch.cond in the blocks and the projection)."""

from __future__ import annotations

import re

import torch

from ... import ops
from ...ops.forecast import OP as _FORECAST
from ...runtime.adaptive import AdaptiveHooks, _dense, _operands
from ...runtime.forecast import History
from ...runtime.forecasting import ForecastReuse


def scheduled(rt) -> torch.Tensor:
    """This call's compute flag (0-d bool, on the device) from TaylorSeer's fixed schedule at the branch's step
    index s = c - 1, through `decide` (the forced first call, the step's first branch)."""
    cfg = rt.config
    s = rt.c - 1
    before = cfg.disable_cache_before_step
    own = (s < before) | (torch.remainder(s - before - 1, cfg.cache_interval) == 0)
    if cfg.disable_cache_after_step is not None:
        own = own | (s >= cfg.disable_cache_after_step)
    return rt.decide(own)


def taylor_weights(positions: list, index: int, filled: int, at: float, order: int) -> list:
    """History.weights(at, order, rule="taylorseer") in Python floats, for a ring whose state is known on the host
    (slot positions, write index, fill count): decide="host" computes the weights without a device op."""
    k = len(positions)
    out = [0.0] * k
    if filled <= 0:
        return out
    used = min(filled - 1, order)
    if used <= 1:  # orders 0 and 1 in closed form, the loop's float operations below unrolled (the same bits; 1.5 us
        # against the loop's 6.5 us, once per forecast call: benchmarks/bench_overhead_taylorseer.py)
        new = (index - 1) % k
        if used == 0:
            out[new] = 1.0
            return out
        old = (index - 2) % k
        gap, s = positions[new] - positions[old], at - positions[new]
        out[new], out[old] = 1.0 + s * (1.0 / gap), 0.0 + s * (-1.0 / gap)
        return out
    slots = [(index - 1 - j) % k for j in range(used + 1)]  # newest first
    xs = [positions[sl] for sl in slots]
    d = [[float(i == j) for i in range(used + 1)] for j in range(used + 1)]  # D_0 of value j, over the values
    w, term = list(d[0]), 1.0
    for i in range(1, used + 1):
        d = [[(a - b) / (xs[j] - xs[j + 1]) for a, b in zip(d[j], d[j + 1])] for j in range(len(d) - 1)]
        term *= (at - xs[0]) / i
        w = [x + term * y for x, y in zip(w, d[0])]
    for j, sl in enumerate(slots):
        out[sl] = w[j]
    return out


def _schedule_text(cfg, order: int) -> tuple:
    """handle.summary()'s line for the rule: no indicator, a fixed schedule (nothing to draw)."""
    after = "" if cfg.disable_cache_after_step is None else f", all from step {cfg.disable_cache_after_step}"
    b = cfg.disable_cache_before_step
    return (f"none: a fixed schedule, steps 0-{max(b - 1, 0)} compute, then one in {cfg.cache_interval} from "
            f"step {b + 1}{after}; order-{order} forecast otherwise"), None


class _Forecast:
    """A module whose outputs are forecast: its name, the forward it wraps and what its observed run returned."""

    def __init__(self, name: str, module):
        self.name, self.module = name, module
        self.orig = None
        self.tuple_out = False
        self.shapes: list = []

    def outs(self, out) -> list:
        return list(out) if self.tuple_out else [out]

    def pack(self, outs):
        return tuple(outs) if self.tuple_out else outs[0]


def _tensor_slots(args, kwargs) -> list:
    return [("a", i) for i, a in enumerate(args) if isinstance(a, torch.Tensor)] + \
        [("k", k) for k, v in kwargs.items() if isinstance(v, torch.Tensor)]


def _substitute(args, kwargs, slots, xs):
    args, kwargs = list(args), dict(kwargs)
    for (kind, at), x in zip(slots, xs):
        if kind == "a":
            args[at] = x
        else:
            kwargs[at] = x
    return args, kwargs


class TaylorSeerHooks(AdaptiveHooks):
    policy = "taylorseer"
    forced_tail = -1  # no forced last call: diffusers' hook follows its schedule to the end

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        cfg = self.config
        self.lite = cfg.mode == "lite"
        self.order_n = cfg.max_order
        if self.device_mode and not self.lite:
            raise ValueError("fk.apply: TaylorSeerConfig(mode='attention') runs with decide='host' only; use "
                             "mode='lite' for decide='device'")
        self.forecasts: list[_Forecast] = []
        self.clock = self._new_clock()
        self.fc_w = None
        self.rings: dict = {}
        self._seen_mod: dict = {}  # what the forecast modules returned in the observed call
        # decide="host" with the call count on the host: the clock mirrored in Python (per key), so a call makes
        # no device op for its decision and weights; `_slot` is this call's ring slot (None: the device clock's)
        self.hclock = self._new_hclock()
        self._slot: int | None = None
        # this call's forecast weights in eager calls: `fc_w`, or with the host clock a tensor per distinct weights
        # (`_wcache`: a fixed schedule repeats a few; torch.tensor and a copy_ per call cost ~6 us on the CPU, an
        # upload on a GPU)
        self._hw: torch.Tensor | None = None
        self._wcache: dict = {}

    # -- install ---------------------------------------------------------------------------------------------
    def install(self, engine) -> None:
        super().install(engine)
        cfg = self.config
        if not self.lite and any(p.name == "fastercache" for p in engine.policies):
            raise ValueError("fk.apply: TaylorSeerConfig(mode='attention') forecasts the attention modules that "
                             "FasterCache caches; compose FasterCache with TaylorSeerConfig(mode='lite')")
        pats = cfg.patterns
        found, taken = [], []
        for name, mod in engine.model.named_modules():
            if not name or any(name.startswith(t + ".") for t in taken):
                continue  # the outermost match only: a forecast module's inner modules do not run
            if any(re.fullmatch(p, name) for p in pats):
                taken.append(name)
                found.append(_Forecast(name, mod))
        if not found:
            raise ValueError(f"fk.apply: TaylorSeerConfig(mode={cfg.mode!r}): no module of "
                             f"{type(engine.model).__name__} matches {list(pats)} (re.fullmatch on the module names); "
                             "name the modules to forecast with TaylorSeerConfig(modules=[...])")
        self.forecasts = found
        for f in found:
            f.orig = engine.inner_forward(f.module)
            engine.replace_forward(f.module, self._module_forward(f))

    def structure_known(self, structure) -> None:
        super().structure_known(structure)  # the blocks, observed in the first call
        if self.lite:
            inside = [f.name for f in self.forecasts for b in self.blocks
                      if f.name == b.name or f.name.startswith(b.name + ".")]
            if inside:
                raise ValueError(f"fk.apply: TaylorSeerConfig(mode='lite') skips the blocks on forecast steps, so it "
                                 f"cannot forecast them or modules inside them ({inside[:3]}); use mode='attention'")

    # -- state ------------------------------------------------------------------------------------------------
    def _new_clock(self) -> History:
        return History(self.order_n + 1, (), device=self.device)

    def _new_hclock(self) -> dict:
        return {"pos": [0.0] * (self.order_n + 1), "index": 0, "filled": 0, "live": False}

    def local_names(self) -> tuple:
        return (*super().local_names(), "clock", "fc_w", "rings", "hclock")

    def fresh(self) -> None:
        self.clock, self.fc_w, self.hclock = self._new_clock(), None, self._new_hclock()
        super().fresh()

    def _fresh_policy(self) -> None:
        self.rings = {}

    def residual_names(self) -> tuple:
        return ()  # the blocks keep no residual: the forecast modules keep their outputs

    def reuses(self, b) -> bool:
        return self.lite

    def allocate_policy(self) -> None:
        if self.clock.buf.device != self.device:
            self.clock = self._new_clock()
        k = self.order_n + 1
        rings = {}
        for f in self.forecasts:
            if not f.shapes:
                raise ValueError(f"fastercache: TaylorSeer's forecast module {f.name!r} did not run in a model call")
            old = self.rings.get(f.name) or [None] * len(f.shapes)
            got = []
            for o, (s, d) in zip(old, f.shapes):
                if o is None or o.shape != (k, *s) or o.dtype != d or o.device != self.device:
                    o = torch.zeros((k, *s), dtype=d, device=self.device)
                    o._fk_ring = True  # `rows` splits the batch on dim 1
                got.append(o)
            rings[f.name] = got
        self.rings = rings

    def buffers(self) -> list:
        return super().buffers() + [t for ts in self.rings.values() for t in ts]

    def start_observing(self) -> None:
        super().start_observing()
        self._seen_mod = {}

    # -- per call ------------------------------------------------------------------------------------------------
    def begin_policy(self) -> None:
        if not self.device_mode and self._hc is not None:
            return self._begin_from_host()
        self._slot = None
        clock, hc = self.clock, self.hclock
        if hc["live"]:  # the host path ran earlier in this video: the device clock takes over its state
            clock.positions.copy_(torch.tensor(hc["pos"], dtype=torch.float32))
            clock.index.fill_(hc["index"])
            clock.filled.fill_(hc["filled"])
            hc["live"] = False
        new = self.c == 1  # the first call of a video: forget the last video's outputs
        clock.reset_where(new)
        self._set_weights(clock.weights(self.c, self.order_n, "taylorseer"))
        self._hw = self.fc_w
        self.pred.copy_(scheduled(self))
        self._read()

    def _begin_from_host(self) -> None:
        """The same decision and weights from the host mirrors (no device op but two fills)."""
        c, hc = self._hc, self.hclock
        if c == 1:
            hc.update(index=0, filled=0)
        hc["live"] = True
        self._slot = hc["index"]
        if self.engine.adopting or c == 1:
            go = True  # the first call of a video (decide's force)
        elif self.lead is not None:  # a later CFG branch: the step's first branch's decision
            go = self._hlead
            if go is None:
                go = bool(self.lead)
                self.host_reads += 1
        else:
            go = self.config.computes(c - 1)
            if not go and self._composed and self.half is None and bool(self.stale):
                go = True  # a CFG-skip call computed one half only: the other half's outputs are stale (adaptive.end)
        self.go, self._go_read = go, True  # (`end` counts from the host value)
        # mode "lite", a forecast call: the blocks return their inputs from their forward (`passes`; their outputs
        # only feed the forecast projection), before `run` (-2 us per block on the tiny Wan)
        self.passing = self.lite and not go
        self.pred.fill_(go)
        if not go or self.half is not None:  # the weights are read on forecast calls and CFG-skip calls only
            w = tuple(taylor_weights(hc["pos"], hc["index"], hc["filled"], float(c), self.order_n))
            t = self._wcache.get(w)
            if t is None or t.device != self.device:
                if len(self._wcache) >= 64:  # (a schedule with disable_cache_after_step: a few dozen at most)
                    self._wcache.clear()
                t = self._wcache[w] = torch.tensor(w, dtype=torch.float32, device=self.device)
            self._hw = t

    def _chains(self) -> None:
        super()._chains()
        for b in self.blocks:  # mode "lite": every block passes its inputs through on a forecast call (`passing`)
            b.passes = self.lite

    def _set_weights(self, w: torch.Tensor) -> None:
        if self.fc_w is None or self.fc_w.device != self.device:
            self.fc_w = w.to(self.device)
        else:  # one persistent tensor: compiled graphs see the same input every call
            self.fc_w.copy_(w)

    def _write(self, ring: torch.Tensor, value: torch.Tensor) -> None:
        """`value` into this call's slot of `ring` (the rows this call computes)."""
        if self._slot is not None:
            ring[self._slot].copy_(value)
        else:
            ring.index_copy_(0, self.clock.index.reshape(1), value.unsqueeze(0))

    def adopt_policy(self, seen: dict) -> None:
        seen, self._seen_mod = self._seen_mod, {}
        for f in self.forecasts:
            for ring, o in zip(self.rings[f.name], seen.get(f.name, ())):
                self._write(self.rows(ring), o)

    def end(self, call) -> None:
        if self.active and self._slot is not None:  # the host clock: pushed on computed calls
            hc = self.hclock
            if self.go:
                k = len(hc["pos"])
                hc["pos"][hc["index"]] = float(self._hc)
                hc.update(index=(hc["index"] + 1) % k, filled=min(hc["filled"] + 1, k))
        elif self.active:  # push the clock on computed calls (its rings were written at `index` in the call)
            self.clock.advance_where(self.pred, self.c)
        super().end(call)

    def block_ran(self, module) -> bool:
        return not self.lite or self.go or not any(b.module is module for b in self.blocks)

    # -- the blocks (mode "lite": skipped on forecast calls) -------------------------------------------------------
    def run(self, b, args, kwargs):
        if not self.lite:
            return b.orig(*args, **kwargs)
        go = self.eager_go() if self.device_mode else self.go
        if go is None:  # traced or captured: torch.cond
            ins = _operands(b.inputs(args, kwargs))

            def compute(*xs):
                return tuple(_dense(b.outs(b.call(args, kwargs, xs)), xs))

            def skip(*xs):
                return tuple(x.clone() for x in xs)

            return b.pack(list(torch.cond(self.pred, compute, skip, tuple(ins))))
        if go:
            return b.call(args, kwargs) if b.overrides else b.orig(*args, **kwargs)
        return b.passthrough(args, kwargs)  # its output only feeds the forecast projection

    # -- the forecast modules ------------------------------------------------------------------------------------
    def _module_forward(self, f: _Forecast):
        rt = self

        def forward(*args, **kwargs):
            if rt.engine.observing:
                out = f.orig(*args, **kwargs)
                rt._observe_module(f, out)
                return out
            rings = rt.rings.get(f.name) if rt.ready and rt.active else None
            if rings is None:
                return f.orig(*args, **kwargs)
            if not torch.is_grad_enabled():  # the usual case (pipelines sample under no_grad): no context to enter
                return rt._forecast_call(f, rings, args, kwargs)
            with torch.no_grad():
                return rt._forecast_call(f, rings, args, kwargs)

        return forward

    def _observe_module(self, f: _Forecast, out) -> None:
        f.tuple_out = isinstance(out, tuple)
        outs = f.outs(out)
        if not all(isinstance(o, torch.Tensor) for o in outs):
            raise TypeError(f"fastercache: TaylorSeer forecasts tensors, but module {f.name!r} returned "
                            f"{type(out).__name__}; name other modules with TaylorSeerConfig(modules=[...])")
        if f.name in self._seen_mod:
            raise RuntimeError(f"fastercache: TaylorSeer's forecast module {f.name!r} ran twice in one model call; "
                               "each forecast module must run once per call")
        f.shapes = [(tuple(o.shape), o.dtype) for o in outs]
        self._seen_mod[f.name] = [o.detach() for o in outs]

    def _forecast_call(self, f: _Forecast, rings: list, args, kwargs):
        go = self.eager_go() if self.device_mode else self.go
        if go is not None and not go:  # the rings and weights are this runtime's: the op's check is skipped (~1 us)
            w = self._hw
            if self.half is None:
                return f.pack([_FORECAST(r, w, None, checked=True) for r in rings])
            return f.pack([_FORECAST(self.rows(r), w, None, checked=True) for r in rings])
        if go is None:  # traced or captured: torch.cond, then the computed outputs (or the slot as it was) written
            slots = _tensor_slots(args, kwargs)
            ins = _operands([args[i] if k == "a" else kwargs[i] for k, i in slots])
            n = len(ins)

            def compute(*xs):
                a, kw = _substitute(args, kwargs, slots, xs[:n])
                return tuple(_dense(f.outs(f.orig(*a, **kw)), xs))

            def forecast(*xs):
                w = xs[-1]
                return tuple(ops.forecast(r, w) for r in xs[n:-1])

            got = torch.cond(self.pred, compute, forecast, (*ins, *rings, self.fc_w))
            at = self.clock.index.reshape(1)
            for r, o in zip(rings, got):
                r.index_copy_(0, at, torch.where(self.pred, o, r.index_select(0, at).squeeze(0)).unsqueeze(0))
            return f.pack(list(got))
        out = f.orig(*args, **kwargs)
        slot = self._slot
        if slot is not None and self.half is None:  # host clock, a full call: each output into its slot (under no_grad)
            if f.tuple_out:
                for r, o in zip(rings, out):
                    r[slot].copy_(o)
            else:
                rings[0][slot].copy_(out)
            return out
        for r, o in zip(rings, f.outs(out)):
            if self.half is not None:
                # a CFG-skip call computes one half: the other half's slot gets its own forecast at this step, so
                # the clock's stamp holds for both halves (as runtime/forecasting.py)
                other = r.chunk(2, dim=1)[1 - self.half]
                self._write(other, _FORECAST(other, self._hw, None, checked=True))
            self._write(self.rows(r), o.detach())
        return out

    def indicator_text(self) -> tuple:
        return _schedule_text(self.config, self.order_n)

    def stats(self) -> dict:
        return {**super().stats(), "mode": self.config.mode, "max_order": self.order_n,
                "forecast_modules": len(self.forecasts)}


class TaylorSeerResidualHooks(ForecastReuse, AdaptiveHooks):
    """mode "residual": TaylorSeer's schedule and weights on fk's stack residual (docs/algorithms.md section 11's
    forecasting reuse): a forecast call adds the forecast of the blocks' residual (one per chain of blocks with
    decide="host", one per block with decide="device") to the stack's input, so the blocks' input, the final norm
    and the output projection see the real call."""

    policy = "taylorseer"
    forced_tail = -1
    fc_rule = "taylorseer"

    # max_order 0: plain reuse of the last residual (ForecastReuse keeps no ring then)

    def begin_policy(self) -> None:
        super().begin_policy()  # the forecast weights at this call (ForecastReuse)
        self.pred.copy_(scheduled(self))
        self._read()

    def indicator_text(self) -> tuple:
        return _schedule_text(self.config, self.config.max_order)

    def stats(self) -> dict:
        return {**super().stats(), "mode": "residual", "max_order": self.config.max_order}
