"""FasterCache on the hook engine: attention reuse (docs/algorithms.md §1) and CFG-Cache (docs/algorithms.md §2).

Hooks: every cached attention module's forward (compute and store, or extrapolate from its cache) and the model's
forward (the CFG batch split). Everything they read is set before the call by `begin` (on the host, outside
compiled graphs): Python flags that select the call kind, and references to the cache slots of this call. Slots
are allocated once and rotated by swapping references, so `torch.compile` builds one graph per call kind.

Calls come in two shapes:
- batched (no `cache_context`, or a context naming both branches): the batch holds the two CFG halves; a full call
  runs both and refreshes the CFG residual, a skip call runs the computed half and rebuilds the other.
- per branch (`cache_context("cond")` / `("uncond")`, diffusers' Wan, HunyuanVideo, Flux, Qwen-Image pipelines, or
  two calls at one timestep without a context): each branch keeps its own attention caches and call count; on a
  full step both calls run and the second one refreshes the residual `R = second - first`; on a skip step the
  branch the loop calls first runs (observed, whatever its name) and the other one's call returns
  `first + a*R_low + b*R_high` without running the model. A step whose call order does not fit the residual (the
  order flipped, or no full step refreshed it yet) runs both branches instead.
"""

from __future__ import annotations

import torch

from ... import ops
from ...adapters.base import get_sample, put_sample
from .config import CallPlan
from .cfg import CFGResidual
from ...runtime.engine import Call, Hooks, Observation, fitting_buffer


class AttentionCache:
    """The cache of one attention module: two slots `[older, newer]` of its outputs (one tensor per output of the
    module), holding only the computed CFG branch, plus the other branch's slots when the schedule needs them.
    Per output, the slots are the rows of one static [2 or 4, ...] tensor (`store`: comp[0], comp[1], other[0],
    other[1]), so a reuse is one fk.ops.forecast over it (docs/algorithms.md section 9), the weights naming the slots
    read. The slot lists and their bookkeeping are per state key (`save`/`load`)."""

    LOCAL = ("store", "comp", "other", "newer", "has_other", "reuse", "src_newer", "src_older", "dst", "o_newer",
             "o_older", "o_dst", "pending", "src_slots", "o_slots")

    def __init__(self, name: str, module, kind: str, weight: torch.Tensor):
        self.name, self.module, self.kind = name, module, kind
        self.weight = weight  # 0-d: where the forecast weights live, and which modules share them (one per config)
        self.active = False  # False until the module has run in an observed call (allocated)
        self.tuple_out = False
        self.shapes: list = []  # [(shape, dtype)] of the stored slots
        self.out_dtypes: list[torch.dtype] = []
        self.block = None  # the adaptive block holding this module, when composed
        self.computed = 0
        self.reused = 0
        self._init_local()

    def _init_local(self) -> None:
        self.store: list[torch.Tensor] = []  # per output: [2 or 4, ...], the slots below are its rows
        self.comp: list[list[torch.Tensor]] = [[], []]
        self.other: list[list[torch.Tensor]] | None = None
        self.newer = 0
        self.has_other = [False, False]
        self.reuse = False
        self.src_newer: list[torch.Tensor] = []
        self.src_older: list[torch.Tensor] = []
        self.dst: list[torch.Tensor] = []
        self.o_newer: list[torch.Tensor] = []
        self.o_older: list[torch.Tensor] = []
        self.o_dst: list[torch.Tensor] = []
        self.src_slots = (0, 1)  # the rows of `store` that src_newer and src_older are
        self.o_slots = (2, 3)  # those of o_newer and o_older
        self.fw = self.o_fw = None  # the forecast weights of a reuse call (FasterCacheHooks._weights)
        self.pending = None  # (slot, has_other) that this call's store makes the newest, applied in `end`

    def reset(self) -> None:
        """A new video: no entry counts as filled (the slots keep their memory)."""
        self.newer = 0
        self.has_other = [False, False]
        self.reuse = False
        self.pending = None

    def save(self) -> dict:
        return {k: getattr(self, k) for k in self.LOCAL}

    def load(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)

    def tensors(self) -> list:
        slots = [t for s in self.comp for t in s]
        if self.other is not None:
            slots += [t for s in self.other for t in s]
        return slots

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


class FasterCacheHooks(Hooks):
    """Attention reuse and CFG-Cache of one schedule (`FasterCacheSchedule`, `DiffusersSchedule` or Vchitect's
    `StepSchedule`) over the attention modules `caches`; `computed_index` is the computed branch's half."""

    name = "fastercache"
    host_time = True
    wraps_forward = True
    LOCAL = ("plan", "full", "split", "batch", "cfg")

    def __init__(self, schedule, caches: list[AttentionCache], adapter, computed_index: int):
        self.schedule, self.caches, self.adapter = schedule, caches, adapter
        self.cfg_enabled = bool(schedule.cfg)
        self.computed_index = computed_index
        self.push_on_reuse = schedule.push_on_reuse
        self.needs_other = bool(schedule.needs_other_branch)
        self.first_rows = getattr(schedule, "skip_call_rows", "computed") == "other"
        # the arguments sliced on a batched skip call: the adapter's, or (None) every tensor argument whose leading
        # dim is the call's batch, as observed (a class without an adapter)
        self.batched = None if adapter.batched_args is None else frozenset(adapter.batched_args)
        self.engine = None
        self._records: dict | None = None  # what the observed call in progress records: module -> (shapes, tuple)
        self._kept: dict = {}  # module -> its outputs in the observed call (what the cache stores: adopted after)
        self._shapes: dict | None = None  # what the last observed call recorded
        self.kinds: dict[str, int] = {}
        self.total_calls = 0
        # per-branch CFG (cross-branch: not per key): the computed branch's sample of the current step
        self.branch_cfg = CFGResidual(schedule.radius_divisor, schedule.storage_dtype)
        self.step_sample: dict[str, torch.Tensor | None] = {}  # branch -> its sample of the current step
        self.step_of: dict[str, int] = {}  # branch -> the call count of its last computed call
        self.step_first: str | None = None  # the branch called first in the current step
        self.res_order: tuple | None = None  # (first, second) of the step whose samples made the residual
        self.reconstruct = False  # this call rebuilds the other branch without running the model
        self.refresh_now = False  # this per-branch call is a full step's second one: it refreshes the residual
        self._template = None  # the computed branch's output of the step: the structure a rebuilt output copies
        self.grid = None  # (F, H, W) of a packed [B, N, C] output (tensor_format "BNC")
        self._forecast_weights: dict = {}  # (weight tensor id, store size, rows) -> [fp32 weights, w] (`_weights`)
        self._init_local()

    def _init_local(self) -> None:
        self.plan: CallPlan | None = None
        self.full = True
        self.split = self.cfg_enabled  # the batch holds the two CFG halves (batched calls)
        self.batch = 0
        self.cfg = CFGResidual(self.schedule.radius_divisor, self.schedule.storage_dtype)

    # -- engine protocol -----------------------------------------------------------------------------------------
    def install(self, engine) -> None:
        self.engine = engine
        for cache in self.caches:
            engine.replace_forward(cache.module, self._attention_forward(engine.inner_forward(cache.module), cache))

    def save(self):
        return ({k: getattr(self, k) for k in self.LOCAL}, [c.save() for c in self.caches])

    def load(self, state) -> None:
        mine, caches = state
        for k, v in mine.items():
            setattr(self, k, v)
        for c, d in zip(self.caches, caches):
            c.load(d)

    def fresh(self) -> None:
        self._init_local()
        for c in self.caches:
            c._init_local()
        engine = self.engine
        if engine is not None and engine.observation is not None and engine.call is not None \
                and self._records is None:
            self._allocate_buffers(engine.call, engine.observation)

    def reset(self) -> None:
        """Start a new video (buffers are kept and reused)."""
        self.plan = None
        self.cfg.reset()
        self.branch_cfg.reset()
        self.step_of = {}
        self.res_order = None
        for cache in self.caches:
            cache.reset()

    def structure_known(self, structure) -> None:
        """Composed with an adaptive policy whose blocks were observed: each attention module's block, as
        fk.apply links them for an adapter's blocks (policies are told in order: the adaptive one already knows)."""
        for p in self.engine.policies:
            blocks = getattr(p, "blocks", None)
            if p is not self and blocks:
                for cache in self.caches:
                    cache.block = next((b.module for b in blocks if cache.name.startswith(b.name + ".")), None)
                self.engine_block_ran = p.block_ran

    def start_observing(self) -> None:
        self._records = {}
        self._kept = {}

    def allocate(self, call: Call, probe: Observation) -> None:
        if self._records is not None:  # a call was just observed
            self._shapes, self._records = self._records, None
        self._allocate_buffers(call, probe)

    def adopt(self, call: Call, output) -> None:
        """The observed call was a full call: store what its modules returned, and its output's CFG residual, as
        the hooked forwards store them on any full call."""
        kept, self._kept = self._kept, {}
        for cache in self.caches:
            if cache.active and cache in kept and not cache.reuse:
                _store(self, cache, kept[cache])
        if not self.cfg_enabled:
            return
        if call.branch is not None:
            self._after_branch(output, call.branch)
        elif self.split:
            self._after_full(output)

    def _allocate_buffers(self, call: Call, probe: Observation) -> None:
        records = self._shapes or {}
        split = self._splits(call)
        self.split = split
        fmt = self.adapter.layout.tensor_format
        if len(probe.sample_shape) != len(fmt):
            raise ValueError(f"fastercache: the model output has shape {list(probe.sample_shape)} but the layout "
                             f"{fmt!r} has {len(fmt)} dims: describe the output with the adapter's `tensor_format` "
                             "('BNC' with a `token_grid` for packed tokens)")
        self.grid = self._token_grid(call, probe) if fmt == "BNC" and self.cfg_enabled else None
        batch = probe.batch
        if split and batch % 2:
            raise ValueError(f"fastercache: the model was called with batch {batch}, which cannot hold the "
                             "[uncond, cond] halves of classifier-free guidance; call it once per branch inside "
                             "`model.cache_context('cond' | 'uncond')`, or use a config with cfg=False (or "
                             "is_guidance_distilled=True) for unguided sampling")
        self.batch = batch
        sd = self.schedule.storage_dtype
        device = probe.device

        def rows(shape) -> int:  # a module's batch holds the two CFG halves one after the other
            return shape[0] // 2 if split else shape[0]

        def store(shape, dtype, slots: int):
            return torch.zeros((slots, rows(shape), *shape[1:]), dtype=sd or dtype, device=device)

        def same(bufs, shapes):
            return len(bufs) == len(shapes) and all(
                b.shape == (rows(s), *s[1:]) and b.dtype == (sd or d) and b.device == device
                for b, (s, d) in zip(bufs, shapes))

        moved: dict[int, torch.Tensor] = {}
        for cache in self.caches:
            outs = records.get(cache)
            cache.active = outs is not None
            if outs is None:
                continue
            shapes, cache.tuple_out = outs
            odd = [s for s, _ in shapes if split and s[0] % 2]
            if odd:
                raise ValueError(f"fastercache: module {cache.name!r} returned an output of shape {list(odd[0])} on a "
                                 f"batch-{batch} call; its batch must hold the two CFG halves one after the other")
            cache.out_dtypes = [d for _, d in shapes]
            if not same(cache.comp[0], shapes):
                want_other = split and (self.needs_other or self.first_rows)
                cache.store = [store(s, d, 4 if want_other else 2) for s, d in shapes]
                cache.comp = [[t[i] for t in cache.store] for i in range(2)]
                cache.other = [[t[2 + i] for t in cache.store] for i in range(2)] if want_other else None
            if id(cache.weight) not in moved:  # modules sharing one weight tensor keep sharing it
                moved[id(cache.weight)] = cache.weight.to(device)
            cache.weight = moved[id(cache.weight)]
        self._forecast_weights = {}  # the weight tensors may have moved
        if self.cfg_enabled:
            shape = probe.sample_shape
            if self.grid is not None:  # the residual is kept on the token grid, [B, C, F, H, W]
                shape = (shape[0], shape[2], *self.grid)
            half = (shape[0] // 2, *shape[1:]) if split else shape
            (self.cfg if split else self.branch_cfg).allocate(half, probe.sample_dtype, device)
            if not split:  # per-branch calls: each branch's sample of the current step (as the model returns it)
                for b in list(self.step_sample):
                    self._sample_buffer(b)

    def _token_grid(self, call: Call, probe: Observation) -> tuple:
        fn = self.adapter.token_grid
        n = probe.sample_shape[1]
        grid = tuple(int(v) for v in fn(self.engine.model, call.kwargs)) if fn is not None else None
        if grid is None or len(grid) != 3 or grid[0] * grid[1] * grid[2] != n:
            raise ValueError(f"fastercache: the model output is packed tokens {list(probe.sample_shape)} ('BNC'); "
                             f"CFG-Cache's frequency split needs their (F, H, W) grid, got {grid}: set the adapter's "
                             "`token_grid` to a function of the call's arguments giving it")
        return grid

    def to_grid(self, t: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, C, F, H, W] for the frequency split (identity for unpacked outputs)."""
        if self.grid is None:
            return t
        return t.unflatten(1, self.grid).permute(0, 4, 1, 2, 3).contiguous()

    def from_grid(self, t: torch.Tensor) -> torch.Tensor:
        if self.grid is None:
            return t
        return t.permute(0, 2, 3, 4, 1).flatten(1, 3)

    def _splits(self, call: Call) -> bool:
        """Whether a call holds the two CFG halves: a batched call, when the pipeline fk.apply was given says it
        guides (its `do_classifier_free_guidance`, else `guidance_scale > 1`), or, for a bare transformer, when the
        config asks for CFG-Cache. A batch of several prompts without guidance is never split."""
        if not self.cfg_enabled or call.branch is not None:
            return False
        guided = self.engine.pipeline_guides() if self.engine is not None else None
        return True if guided is None else guided

    def begin(self, call: Call) -> None:
        if call.c == 1 and call.branch is None and self._splits(call) != self.split:
            # the pipeline's guidance changed between videos (same input shapes): buffers for the other layout
            self._allocate_buffers(call, self.engine.observation)
        self.total_calls += 1
        plan = self.schedule.plan(call.c, call.t)
        self.plan = plan
        self.reconstruct = False
        self.refresh_now = False
        if call.branch is None:
            self.full = plan.full or not self.split
            if self.split:
                if plan.full:
                    self.cfg.full()
                else:
                    self.cfg.skip(plan.low_mult, plan.high_mult)
                    call.half = self.computed_index
        else:
            self.full = True  # a per-branch call holds one branch: attention caches hold all of it
            self._begin_branch(call, plan)
        if not self.reconstruct:
            for cache in self.caches:
                if cache.active:
                    self._point(cache, plan)
        kind = "skip/reconstruct" if self.reconstruct else plan.kind
        if call.branch is None and not self.split and not plan.full:  # no CFG halves: the whole batch runs
            kind = "full" + kind[kind.index("/"):]
        kind += "" if call.branch is None else f" [{call.branch}]"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def _sample_buffer(self, branch: str) -> torch.Tensor:
        p = self.engine.observation
        buf = fitting_buffer(self.step_sample.get(branch), p.sample_shape, p.sample_dtype, p.device)
        self.step_sample[branch] = buf
        return buf

    def _begin_branch(self, call: Call, plan: CallPlan) -> None:
        if not self.cfg_enabled:
            return
        b, c = call.branch, call.c
        self._sample_buffer(b)  # (on the host: never inside a graph)
        first = not any(n == c for k, n in self.step_of.items() if k != b)
        if first:
            self.step_first = b
        if plan.full:
            self.branch_cfg.full()
            self.refresh_now = not first  # the step's second call refreshes R = second - first
            return
        if first or self.res_order != (self.step_first, b) or not self.branch_cfg.refreshed:
            return  # the first call of a skip step runs; so does any call the residual does not describe
        self.branch_cfg.skip(plan.low_mult, plan.high_mult)
        self.reconstruct = True
        call.skips_model = True

    def _point(self, cache: AttentionCache, plan: CallPlan) -> None:
        reuse = bool(plan.reuse.get(cache.kind, False))
        cache.reuse = reuse
        n, o = cache.newer, 1 - cache.newer
        cache.src_newer, cache.src_older = cache.comp[n], cache.comp[o]
        cache.src_slots = (n, o)
        cache.dst = cache.comp[o]
        if cache.other is not None:
            cache.o_newer, cache.o_older = cache.other[n], cache.other[o]
            cache.o_slots = (2 + n, 2 + o)
            cache.o_dst = cache.other[o]
        two = self.full and self.split
        if reuse:
            w = self.schedule.attention_weight(plan, cache.module, cache.kind)
            if two:
                # A full call reusing a slot written by a skip call: the reference broadcasts the computed
                # branch's cache to both halves (Open-Sora); give that slot's other half the same values.
                for s in (n, o):
                    if not cache.has_other[s]:
                        for dst, src in zip(cache.other[s], cache.comp[s]):
                            dst.copy_(src)
            elif self.first_rows and self.split:
                # A skip call reading an entry written by a full call: the Latte and Open-Sora-Plan references read
                # `cache[:1]` of the [uncond, cond] entry, the other branch's rows (skip_call_rows="other").
                cache.src_newer = cache.other[n] if cache.has_other[n] else cache.comp[n]
                cache.src_older = cache.other[o] if cache.has_other[o] else cache.comp[o]
                cache.src_slots = (2 * cache.has_other[n] + n, 2 * cache.has_other[o] + o)
            cache.fw = self._weights(cache, w, cache.src_slots)
            if two:
                cache.o_fw = self._weights(cache, w, cache.o_slots)
        keep_other = self.needs_other or self.first_rows
        cache.pending = (o, (not reuse) and two and keep_other) if (not reuse or self.push_on_reuse) else None

    def end(self, call: Call) -> None:
        if call.branch is not None and self.cfg_enabled:  # host-side bookkeeping of the per-branch CFG step
            if not self.reconstruct:
                self.step_of[call.branch] = call.c
                if call.branch == self.step_first:
                    self._template = self.engine.output
            if self.refresh_now:
                self.branch_cfg.refreshed = True
                self.res_order = (self.step_first, call.branch)
        if self.reconstruct:
            return
        plan = self.plan
        for cache in self.caches:
            if not cache.active:
                continue
            ran = cache.block is None or self.engine_block_ran(cache.block)
            if not ran:
                continue  # its block was reused by the adaptive schedule: the cache is untouched
            if cache.reuse:
                cache.reused += 1
            else:
                cache.computed += 1
            if cache.pending is not None:
                o, has_other = cache.pending
                cache.has_other[o] = has_other
                cache.newer = o
                cache.pending = None
            if plan is not None and cache.kind in plan.fill and not cache.reuse:
                n, o = cache.newer, 1 - cache.newer
                for dst, src in zip(cache.comp[o], cache.comp[n]):
                    dst.copy_(src)
                if cache.other is not None:
                    for dst, src in zip(cache.other[o], cache.other[n]):
                        dst.copy_(src)
                cache.has_other[o] = cache.has_other[n]

    engine_block_ran = staticmethod(lambda block: True)  # replaced when composed with an adaptive policy

    def _weights(self, cache: AttentionCache, w: float, slots: tuple) -> torch.Tensor:
        """The forecast weights under which fk.ops.forecast over `cache.store` is section 1's extrapolation
        newer + w * (newer - older), newer and older the store rows `slots`: 1 + w and -w there, 0 elsewhere
        (rows left out of the sum). One persistent tensor per weight tensor, store size and pair of rows, shared
        by the modules and refilled (two fills, no host-to-device copy) only when w changes."""
        size = cache.store[0].shape[0]
        key = (id(cache.weight), size, slots)
        entry = self._forecast_weights.get(key)
        if entry is None:
            entry = self._forecast_weights[key] = [torch.zeros(size, device=cache.weight.device), None]
        if entry[1] != w:
            entry[0][slots[0]].fill_(1.0 + w)
            entry[0][slots[1]].fill_(-w)
            entry[1] = w
        return entry[0]

    def drop_buffers(self) -> None:
        for cache in self.caches:
            cache._init_local()
        self._init_local()
        self.branch_cfg = CFGResidual(self.schedule.radius_divisor, self.schedule.storage_dtype)
        self.step_sample = {}

    def buffers(self) -> list:
        out = [t for c in self.caches for t in c.tensors()]
        out += [t for r in (self.cfg, self.branch_cfg) for t in (r.low, r.high) if t is not None]
        return out + [s for s in self.step_sample.values() if s is not None]

    def stats(self) -> dict:
        per_kind: dict[str, dict] = {}
        for c in self.caches:
            d = per_kind.setdefault(c.kind, {"modules": 0, "computed": 0, "reused": 0, "cache_bytes": 0})
            d["modules"] += 1
            d["computed"] += c.computed
            d["reused"] += c.reused
            d["cache_bytes"] += c.nbytes()
        full = sum(n for k, n in self.kinds.items() if k.startswith("full"))
        out = {}
        if not self.cfg_enabled and self.adapter.guidance_distilled:
            out["cfg_cache"] = "off: guidance-distilled model (one call per step); attention reuse only"
        return {
            **out,
            "calls_per_kind": dict(sorted(self.kinds.items())),
            "cfg": {"full": full, "skip": self.total_calls - full},
            "attention": per_kind,
            "cfg_residual_bytes": self.cfg.nbytes() + self.branch_cfg.nbytes(),
        }

    # -- observing (eager, the first call of new shapes) ---------------------------------------------------------------
    def _record(self, cache: AttentionCache, out) -> None:
        if self._records is None:
            self._records = {}
        if cache in self._records:
            raise RuntimeError(f"fastercache: module {cache.name!r} ran twice in one model call; a cached attention "
                               "module must run once per call")
        outs = out if isinstance(out, tuple) else (out,)
        if not all(isinstance(o, torch.Tensor) for o in outs):
            raise TypeError(f"fastercache: module {cache.name!r} returned {type(out).__name__}; expected a tensor "
                            "or a tuple of tensors")
        self._records[cache] = ([(tuple(o.shape), o.dtype) for o in outs], isinstance(out, tuple))
        self._kept[cache] = tuple(o.detach() for o in outs) if isinstance(out, tuple) else out.detach()

    # -- the forwards torch.compile traces -------------------------------------------------------------------------
    def _attention_forward(self, orig, cache: AttentionCache):
        policy = self

        def forward(*args, **kwargs):
            if policy.engine.observing:
                out = orig(*args, **kwargs)
                policy._record(cache, out)
                return out
            if not cache.active:
                return orig(*args, **kwargs)
            if cache.reuse:
                return _reuse(policy, cache)
            out = orig(*args, **kwargs)
            _store(policy, cache, out)
            return out

        return forward

    def model_forward(self, orig):
        policy = self
        batched = self.batched

        def forward(*args, **kwargs):
            if policy.engine.observing or not policy.cfg_enabled:
                return orig(*args, **kwargs)
            call = policy.engine.call
            if call is None:  # called outside the engine's bookkeeping (no pre-hook ran)
                return orig(*args, **kwargs)
            if call.branch is not None:
                return policy._branch_forward(orig, args, kwargs)
            if not policy.split:
                return orig(*args, **kwargs)
            ci = policy.computed_index
            cfg = policy.cfg
            if policy.full:
                out = orig(*args, **kwargs)
                policy._after_full(out)
                return out
            b = policy.batch
            cut = [k for k, v in kwargs.items() if _batched(v, b) and (batched is None or k in batched)]
            kept = [k for k, v in kwargs.items() if _batched(v, b) and k not in cut]
            kwargs = {k: (v.chunk(2)[ci] if k in cut else v) for k, v in kwargs.items()}
            args = tuple(v.chunk(2)[ci] if _batched(v, b) else v for v in args)
            if torch.compiler.is_compiling():  # (a try block would move the model's own graph breaks here)
                out = orig(*args, **kwargs)
            else:
                try:
                    out = orig(*args, **kwargs)
                except RuntimeError as e:  # e.g. a size mismatch: a conditioning input still holds both halves
                    if not kept:
                        raise
                    raise RuntimeError(f"fastercache: {_unsliced(kept, b, batched)}") from e
            computed = get_sample(out)
            want = (policy.engine.observation.sample_shape[0] // 2, *policy.engine.observation.sample_shape[1:])
            if tuple(computed.shape) != want:  # the model broadcast an unsliced input into the output
                why = _unsliced(kept, b, batched) if kept else "check the adapter's `batched_args`"
                raise RuntimeError(f"fastercache: the skip call's output has shape {list(computed.shape)}, not "
                                   f"{list(want)}: {why}")
            other = policy.from_grid(cfg.reconstruct(policy.to_grid(computed.detach())))
            both = torch.cat([computed, other] if ci == 0 else [other, computed])
            return put_sample(out, both)

        return forward

    def _branch_forward(self, orig, args, kwargs):
        branch = self.engine.call.branch
        cfg = self.branch_cfg
        if self.reconstruct:
            computed = self.step_sample[self.step_first]
            return put_sample(self._template, self.from_grid(cfg.reconstruct(self.to_grid(computed))))
        out = orig(*args, **kwargs)
        self._after_branch(out, branch)
        return out

    def _after_full(self, out) -> None:
        """A full batched call: refresh the CFG residual from its two halves."""
        ci = self.computed_index
        halves = [self.to_grid(h) for h in get_sample(out).detach().chunk(2)]  # no backward
        self.cfg.refresh(halves[1 - ci], halves[ci])

    def _after_branch(self, out, branch: str) -> None:
        """A computed per-branch call: keep its sample; the step's second call refreshes the residual."""
        self.step_sample[branch].copy_(get_sample(out).detach())
        if self.refresh_now:
            self.branch_cfg.refresh(self.to_grid(self.step_sample[branch]),
                                    self.to_grid(self.step_sample[self.step_first]))


def _unsliced(kept: list, batch: int, batched) -> str:
    return (f"a CFG-Cache skip call runs one half of the batch, but the inputs {kept} (batch {batch}) were not "
            f"sliced, as they are not in the adapter's `batched_args` {sorted(batched or ())}; add the ones that "
            "carry the CFG halves to `batched_args` (fk.adapters.generic_adapter(..., batched_args=...))")


def _batched(v, batch: int) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch


def _reuse(policy: FasterCacheHooks, cache: AttentionCache):
    """Section 1's extrapolation newer + w * (newer - older) as the forecast op over the module's store (section 9);
    the same up to fp32 rounding (a few ulps) as the formula in that order."""
    outs = []
    two = policy.full and policy.split
    for i in range(len(cache.store)):
        r = ops.forecast(cache.store[i], cache.fw)
        if policy.push_on_reuse:  # diffusers: the approximation becomes the newest cache entry
            # (a copy: out= a row of the store it reads would make the op copy the whole store first)
            cache.dst[i].copy_(r)
        if two:
            o = ops.forecast(cache.store[i], cache.o_fw)
            r = torch.cat([r, o] if policy.computed_index == 0 else [o, r])
        outs.append(r.to(cache.out_dtypes[i]))
    return tuple(outs) if cache.tuple_out else outs[0]


def _store(policy: FasterCacheHooks, cache: AttentionCache, out) -> None:
    outs = out if isinstance(out, tuple) else (out,)
    two = policy.full and policy.split
    ci = policy.computed_index
    keep_other = policy.needs_other or policy.first_rows
    for i, t in enumerate(outs):
        t = t.detach()
        if two:
            halves = t.chunk(2)
            cache.dst[i].copy_(halves[ci])
            if cache.other is not None and keep_other:
                cache.o_dst[i].copy_(halves[1 - ci])
        else:
            cache.dst[i].copy_(t)
