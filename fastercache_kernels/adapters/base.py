"""What an adapter knows about a model family, and the patching every adapter shares.

An adapter names the attention modules to cache (regular expressions over module names, one list per kind), the
layout of the model output, the call argument holding the timestep and the arguments batched over the CFG halves.
`Patch` installs, on the top-level model, a forward pre-hook and a forward hook (plain Python, run outside any
compiled graph: they do all bookkeeping through FasterCacheState) and replaces the `forward` of the model and of
each cached attention module with a function that reads only the state's flags and tensors. Under
`torch.compile(model)` the replaced forwards are traced, the hooks are not: one graph per call kind.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

import torch
from torch.utils._pytree import tree_map_only

from .. import ops
from ..policies.fastercache import AttentionCache, FasterCacheSchedule, FasterCacheState

BRANCH_ORDERS = (("uncond", "cond"), ("cond", "uncond"))
_FORMAT = re.compile(r"^B[A-Z]*HW$")


@dataclass(frozen=True)
class OutputLayout:
    """The model output: a tensor, a tuple whose first item is the sample, or an object with `.sample`.

    `tensor_format` names the sample's dims (batch first, the spatial H, W last: the frequency split works over the
    last two dims), e.g. "BCFHW" (Latte, Open-Sora), "BFCHW" (CogVideoX), "BCHW". `batch_order` is the order of
    the CFG halves along the batch.
    """

    tensor_format: str = "BCFHW"
    batch_order: tuple = ("uncond", "cond")

    def __post_init__(self):
        fmt = self.tensor_format
        if not isinstance(fmt, str) or not _FORMAT.match(fmt) or len(set(fmt)) != len(fmt):
            raise ValueError(f"unsupported output layout {fmt!r}: the batch must come first and the spatial dims H, W "
                             "last, each named once (e.g. 'BCFHW', 'BFCHW', 'BCHW')")
        if tuple(self.batch_order) not in BRANCH_ORDERS:
            raise ValueError(f"unsupported batch order {self.batch_order!r}: use ('uncond', 'cond') or "
                             "('cond', 'uncond')")


@dataclass(frozen=True)
class Adapter:
    """How to patch one model family. `spatial`/`temporal`: regular expressions (re.search) over the names of
    `model.named_modules()`; a module matching one is cached as that kind (its submodules are not searched)."""

    name: str
    spatial: tuple = ()
    temporal: tuple = ()
    layout: OutputLayout = field(default_factory=OutputLayout)
    timestep_arg: str = "timestep"
    batched_args: tuple = ("hidden_states", "encoder_hidden_states", "timestep", "timestep_cond", "attention_mask",
                           "encoder_attention_mask")
    skip_cross_attention: bool = True
    default_preset: str | None = None
    # Adaptive policies (block-level reuse; see adapters/blocks.py). `blocks`/`temporal_blocks`: regular
    # expressions over module names of the transformer blocks; `block_io`: the block inputs its outputs mirror, in
    # output order; `attn_capture`: submodules whose first inputs are x + p (p = gated self-attention residual), the
    # first one present is used; `teacache_indicator`: what TeaCache's indicator "auto" means;
    # `modulated_input(block, get)`: the first block's modulated norm output from its inputs (`get(name)`).
    blocks: tuple = ()
    temporal_blocks: tuple = ()
    block_io: tuple = ("hidden_states", "encoder_hidden_states")
    attn_capture: tuple = ()
    teacache_indicator: str = "block_input"
    modulated_input: object = None

    def matches(self, model: torch.nn.Module) -> bool:
        return False

    def starts_video(self, t: float | None) -> bool:
        """Whether a call at timestep `t` starts a new video by the family's own rule (beyond the timestep jumping
        up, which every adapter detects); Open-Sora restarts at t = 1000."""
        return False

    def make_schedule(self, config, kinds) -> FasterCacheSchedule:
        """The call-kind schedule of a fk.FasterCacheConfig (Vchitect counts pipeline steps instead of calls)."""
        return FasterCacheSchedule(config, kinds=kinds)

    def patterns(self) -> str:
        return f"spatial {list(self.spatial)}, temporal {list(self.temporal)}"

    def attention_modules(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, str]]:
        found, taken = [], []
        for name, mod in model.named_modules():
            if not name or any(name.startswith(t + ".") for t in taken):
                continue
            kind = ("spatial" if any(re.search(p, name) for p in self.spatial) else
                    "temporal" if any(re.search(p, name) for p in self.temporal) else None)
            if kind is None:
                continue
            taken.append(name)
            if self.skip_cross_attention and getattr(mod, "is_cross_attention", False):
                continue
            found.append((name, mod, kind))
        return found


def get_sample(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple):
        return out[0]
    if hasattr(out, "sample"):
        return out.sample
    raise TypeError(f"fastercache: cannot find the sample in a model output of type {type(out).__name__}")


def put_sample(out, sample):
    if isinstance(out, torch.Tensor):
        return sample
    if isinstance(out, tuple):
        return (sample, *out[1:])
    return type(out)(sample=sample)


class ModelPatch:
    """What every patch shares: replaced attributes restored exactly by `remove()`, the model's bookkeeping
    pre-hook and hook (run outside compiled graphs), diffusers' `_reset_stateful_cache` starting a new video, and
    positional inputs bound to their names."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._saved: list[tuple[object, str, bool, object]] = []
        self._hooks = []
        self._orig_forward = model.forward
        self._sig = inspect.signature(self._orig_forward)

    def _install_hooks(self, reset) -> None:
        """The pre-hook `self._pre` and hook `self._post`; `reset()` also runs when a diffusers pipeline ends."""
        model = self.model
        self._hooks.append(model.register_forward_pre_hook(torch.compiler.disable(self._pre), with_kwargs=True))
        self._hooks.append(model.register_forward_hook(torch.compiler.disable(self._post)))
        if hasattr(model, "_reset_stateful_cache"):  # diffusers pipelines call it when a video is done
            orig_reset = model._reset_stateful_cache

            def reset_stateful_cache(*args, **kwargs):
                reset()
                return orig_reset(*args, **kwargs)

            self._replace(model, "_reset_stateful_cache", reset_stateful_cache)

    def _replace(self, obj, attr: str, value) -> None:
        had = attr in obj.__dict__
        self._saved.append((obj, attr, had, obj.__dict__.get(attr)))
        setattr(obj, attr, value)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for obj, attr, had, old in reversed(self._saved):
            if had:
                setattr(obj, attr, old)
            else:
                delattr(obj, attr)
        self._saved.clear()

    def _bind(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Positional arguments become keyword arguments wherever the signature allows."""
        if not args:
            return args, kwargs
        kwargs = dict(kwargs)
        params = list(self._sig.parameters.values())
        for i, a in enumerate(args):
            p = params[i] if i < len(params) else None
            if p is None or p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD or p.name in kwargs:
                return tuple(args[i:]), kwargs
            kwargs[p.name] = a
        return (), kwargs

    def _pre(self, module, args, kwargs):
        raise NotImplementedError

    def _post(self, module, args, output):
        raise NotImplementedError


class Patch(ModelPatch):
    """Installs the hooks and forwards for one FasterCacheState; `remove()` restores the model exactly."""

    def __init__(self, model: torch.nn.Module, state: FasterCacheState, adapter: Adapter, timestep_fn=None):
        super().__init__(model)
        self.state, self.adapter = state, adapter
        self.timestep_fn = timestep_fn  # optional callback (diffusers' current_timestep_callback)
        self._records: dict | None = None
        self._batched = frozenset(adapter.batched_args)
        for cache in state.caches:
            self._replace(cache.module, "forward", self._attention_forward(cache.module.forward, cache))
        self._replace(model, "forward", self._model_forward(self._orig_forward))
        self._install_hooks(state.reset)

    # -- eager bookkeeping (outside compiled graphs) -----------------------------------------------------------
    def _timestep(self, kwargs: dict) -> float | None:
        t = self.timestep_fn() if self.timestep_fn is not None else kwargs.get(self.adapter.timestep_arg)
        if t is None:
            return None
        if isinstance(t, torch.Tensor):
            return float(t.reshape(-1)[0]) if t.numel() else None  # the one host read per call
        return float(t)

    def _signature(self, args: tuple, kwargs: dict):
        sig = []
        device = None
        for name, v in [*((f"arg{i}", a) for i, a in enumerate(args)), *kwargs.items()]:
            if isinstance(v, torch.Tensor) and (name in self._batched or name.startswith("arg")):
                sig.append((name, tuple(v.shape), v.dtype))
                device = device or v.device
        return (device, *sig)

    def _batch_of(self, args: tuple, kwargs: dict) -> int:
        for name in self.adapter.batched_args:
            v = kwargs.get(name)
            if isinstance(v, torch.Tensor) and v.dim() > 0 and name != self.adapter.timestep_arg:
                return v.shape[0]
        for v in (*args, *kwargs.values()):
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return v.shape[0]
        raise ValueError("fastercache: the model was called without a batched tensor argument")

    def _pre(self, module, args, kwargs):
        args, kwargs = self._bind(args, kwargs)
        t = self._timestep(kwargs)
        if self.state.c > 0 and self.adapter.starts_video(t):
            self.state.reset()
        self.state.begin_call(t, self._signature(args, kwargs), lambda: self._allocate(args, kwargs))
        return args, kwargs

    def _post(self, module, args, output):
        self.state.end_call()
        return None

    def _allocate(self, args: tuple, kwargs: dict) -> None:
        """Runs the original forward once on fake tensors (no compute, no memory) to learn the output shapes of
        every cached module and of the model, then allocates the buffers."""
        from torch._subclasses.fake_tensor import FakeTensorMode

        state = self.state
        device = next((v.device for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)), None)
        self._records = {}
        state.probing = True
        try:
            with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True) as mode:
                fargs, fkwargs = tree_map_only(torch.Tensor, mode.from_tensor, (args, kwargs))
                out = self._orig_forward(*fargs, **fkwargs)
                sample = get_sample(out)
        finally:
            state.probing = False
        fmt = self.adapter.layout.tensor_format
        if sample.dim() != len(fmt):
            raise ValueError(f"fastercache: the model output has shape {list(sample.shape)} but the layout "
                             f"{fmt!r} has {len(fmt)} dims")
        state.allocate(self._batch_of(args, kwargs), self._records, (tuple(sample.shape), sample.dtype),
                       device or sample.device)
        self._records = None

    def _record(self, cache: AttentionCache, out) -> None:
        if cache in self._records:
            raise RuntimeError(f"fastercache: module {cache.name!r} ran twice in one model call; a cached attention "
                               "module must run once per call")
        outs = out if isinstance(out, tuple) else (out,)
        if not all(isinstance(o, torch.Tensor) for o in outs):
            raise TypeError(f"fastercache: module {cache.name!r} returned {type(out).__name__}; expected a tensor "
                            "or a tuple of tensors")
        self._records[cache] = ([(tuple(o.shape), o.dtype) for o in outs], isinstance(out, tuple))

    # -- the forwards torch.compile traces ---------------------------------------------------------------------
    def _attention_forward(self, orig, cache: AttentionCache):
        state = self.state
        record = self._record

        def forward(*args, **kwargs):
            if state.probing:
                out = orig(*args, **kwargs)
                record(cache, out)
                return out
            if not cache.active:
                return orig(*args, **kwargs)
            if cache.reuse:
                return _reuse(state, cache)
            out = orig(*args, **kwargs)
            _store(state, cache, out)
            return out

        return forward

    def _model_forward(self, orig):
        state = self.state
        batched = self._batched

        def forward(*args, **kwargs):
            if not state.split:
                return orig(*args, **kwargs)
            ci = state.computed_index
            if state.full:
                out = orig(*args, **kwargs)
                halves = get_sample(out).chunk(2)
                ops.cfg_residual_split(halves[1 - ci], halves[ci], state.schedule.radius_divisor,
                                       out=(state.low, state.high))
                return out
            b = state.batch
            kwargs = {k: (v.chunk(2)[ci] if k in batched and _batched(v, b) else v) for k, v in kwargs.items()}
            args = tuple(v.chunk(2)[ci] if _batched(v, b) else v for v in args)
            out = orig(*args, **kwargs)
            computed = get_sample(out)
            other = ops.cfg_recombine(computed, state.low, state.high, state.a, state.b)
            both = torch.cat([computed, other] if ci == 0 else [other, computed])
            return put_sample(out, both)

        return forward


def _batched(v, batch: int) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch


def _reuse(state: FasterCacheState, cache: AttentionCache):
    outs = []
    two = state.full and state.split
    for i in range(len(cache.src_newer)):
        if state.push_on_reuse:  # diffusers: the approximation becomes the newest cache entry
            r = ops.extrapolate(cache.src_newer[i], cache.src_older[i], cache.weight, out=cache.dst[i])
        else:
            r = ops.extrapolate(cache.src_newer[i], cache.src_older[i], cache.weight)
        if two:
            o = ops.extrapolate(cache.o_newer[i], cache.o_older[i], cache.weight)
            r = torch.cat([r, o] if state.computed_index == 0 else [o, r])
        outs.append(r.to(cache.out_dtypes[i]))
    return tuple(outs) if cache.tuple_out else outs[0]


def _store(state: FasterCacheState, cache: AttentionCache, out) -> None:
    outs = out if isinstance(out, tuple) else (out,)
    two = state.full and state.split
    ci = state.computed_index
    for i, t in enumerate(outs):
        t = t.detach()
        if two:
            halves = t.chunk(2)
            cache.dst[i].copy_(halves[ci])
            if cache.other is not None:
                cache.o_dst[i].copy_(halves[1 - ci])
        else:
            cache.dst[i].copy_(t)
