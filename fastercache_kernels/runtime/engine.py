"""The hook engine: one per patched model, whatever the policies.

It installs everything and removes it exactly: the model's forward pre-hook and hook (plain Python, run outside
compiled graphs), the wrappers of extra entry points an adapter names (Vchitect's `my_forward`), diffusers'
`cache_context` and `_reset_stateful_cache`, and, through `Engine.replace`, each policy's module forwards. It holds
the clock (per state key: calls in the video, the timestep, new-video detection, the step index and step count a
diffusers `cache_context` carries), decides which state a call uses, and learns buffer shapes by a probe.

Policies plug in with a small protocol (see `Policy`): `install`, `allocate` after a probe, `begin`/`end` around
each call, `reset` for a new video, `save`/`load`/`fresh` to keep their state per key, `stats`, `drop_buffers`.

State keys: a call made inside `cache_context("cond")` or `cache_context("uncond")` carries one CFG branch
(diffusers' Wan, HunyuanVideo, Flux, Qwen-Image pipelines call the transformer once per branch); every policy keeps
its state per branch there, so the uncond call never sees the cond call's block inputs. Any other context name
(CogVideoX's "cond_uncond") or no context at all is a call holding the whole CFG batch, keyed by that name.

Buffers: a probe runs the original forward once on fake tensors (no compute, no memory) for each new input
signature; a forward that reads tensor values on the host (`height[0].item()`, `int(timestep[0])`, an `if` on a
mask) cannot run on fake tensors, and is then probed once for real (one extra model call per new input shape).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_map_only

from . import parallel

BRANCH_NAMES = ("cond", "uncond")


@dataclass
class Call:
    """What the engine knows of the call in progress (built by the pre-hook, read by every policy)."""

    key: str  # state key: the cache_context name, or "" without one
    branch: str | None  # "cond" / "uncond" when the call carries one CFG branch, else None (the whole CFG batch)
    c: int  # 1-based count of this key's calls in the current video
    t: float | None  # the timestep, read on the host (None when no policy needs it there, or the model got none)
    t_tensor: object  # the timestep as passed (tensor, number or None)
    step: int | None  # 0-based sampler step from the cache_context (None without one)
    num_steps: int | None  # the context's num_inference_steps
    args: tuple
    kwargs: dict
    half: int | None = None  # a batched CFG-skip call runs this half of the batch (set by FasterCache's begin)
    skips_model: bool = False  # the call returns a rebuilt CFG branch without running the model (FasterCache)


@dataclass
class Probe:
    """What a probe learned: the model's output sample, the batch and frame count of its first batched input."""

    sample_shape: tuple
    sample_dtype: torch.dtype
    batch: int
    frames: int
    device: torch.device
    real: bool  # probed by a real call (the forward reads tensor values on the host)


class Policy:
    """The protocol every policy implements (methods are no-ops by default)."""

    name = "policy"
    host_time = False  # needs the timestep on the host (one host read per call)
    wraps_forward = False  # replaces the model-level forward (CFG-Cache): `model_forward(orig)` is installed

    def install(self, engine: Engine) -> None:
        pass

    def allocate(self, call: Call, probe: Probe) -> None:
        pass

    def begin(self, call: Call) -> None:
        pass

    def end(self, call: Call) -> None:
        pass

    def reset(self) -> None:
        pass

    def restart_probe(self) -> None:
        """Forget what an earlier (or failed) probe recorded."""

    def save(self):
        return None

    def load(self, state) -> None:
        pass

    def fresh(self) -> None:
        """Initial state for a key seen for the first time (buffers shaped as the last probe found)."""

    def stats(self) -> dict:
        return {}

    def drop_buffers(self) -> None:
        pass

    def cache_bytes(self) -> int:
        return 0


# Exceptions that mean "this forward cannot run on fake tensors" (host reads, data-dependent shapes): the probe
# then runs the forward for real.
def _fake_failures() -> tuple:
    from torch._subclasses import fake_tensor as ft

    out = [ft.DataDependentOutputException, ft.DynamicOutputShapeException, ft.UnsupportedFakeTensorException]
    try:
        from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

        out.append(GuardOnDataDependentSymNode)
    except ImportError:  # pragma: no cover
        pass
    return tuple(out)


class _RealProbe(Exception):
    """The adapter asks for a real probe (the forward caches tensors it computes, which fake ones would poison)."""


def fitting_buffer(old: torch.Tensor | None, shape, dtype: torch.dtype, device) -> torch.Tensor:
    """`old` when it already has this shape, dtype and device (buffers are kept across videos), else zeros."""
    device = torch.device(device)
    if old is None or tuple(old.shape) != tuple(shape) or old.dtype != dtype or old.device != device:
        return torch.zeros(shape, dtype=dtype, device=device)
    return old


def first_tensor(values) -> torch.Tensor | None:
    return next((v for v in values if isinstance(v, torch.Tensor) and v.dim() > 0), None)


def timestep_value(t) -> float | None:
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        return float(t.reshape(-1)[0]) if t.numel() else None  # the one host read per call
    return float(t)


class Engine:
    """Hooks one model; `remove()` restores it exactly. `policies` run in order (FasterCache before an adaptive
    policy: its CFG decision tells the adaptive policy which half of the batch a skip call runs)."""

    def __init__(self, model: torch.nn.Module, adapter, policies: list[Policy]):
        self.model, self.adapter, self.policies = model, adapter, list(policies)
        self._saved: list[tuple[object, str, bool, object, object]] = []
        self._hooks = []
        self._orig_forward = model.forward
        self._sig = inspect.signature(self._orig_forward)
        self.host_time = any(p.host_time for p in self.policies)
        self.timestep_fn = None  # optional callback giving the timestep (diffusers' current_timestep_callback)
        self.context = None  # the diffusers CacheContext (or any object with .name) of the call in progress
        self.key: str | None = None  # the key whose state the policies hold now
        self._states: dict[str, list] = {}  # key -> saved policy states (of keys not active now)
        self._clocks: dict[str, dict] = {}
        self._signatures: dict[str, tuple] = {}
        self._probed = None  # the input signature of the last probe
        self.probing = False
        self.probe_result: Probe | None = None
        self.in_entry = False
        self._entry_sigs: dict = {}  # entry point -> its signature (binding positional inputs)
        self.calls = 0
        self.videos = 0
        self.real_probes = 0
        self.call: Call | None = None
        self.output = None  # the model output of the call being closed (policies' `end` may read it)
        self.log = None  # summary.CallLog, set by fk.apply
        for p in self.policies:
            p.install(self)
        for p in self.policies:
            if p.wraps_forward:
                self.replace(model, "forward", p.model_forward(self._orig_forward))
        self._hooks.append(model.register_forward_pre_hook(torch.compiler.disable(self._pre), with_kwargs=True))
        # always_call: runs even when the forward raises (output None): the call stays unfinished, and the next one
        # warns and starts a new video (a BaseException skips the hook: the call stays unfinished all the same)
        self._hooks.append(model.register_forward_hook(torch.compiler.disable(self._post), always_call=True))
        for name in getattr(adapter, "entry_points", ()):
            if callable(getattr(model, name, None)):
                self.replace(model, name, self._entry_point(getattr(model, name)))
        if hasattr(model, "_reset_stateful_cache"):  # diffusers pipelines call it when a video is done
            orig_reset = model._reset_stateful_cache

            def reset_stateful_cache(*args, **kwargs):
                self.reset()
                return orig_reset(*args, **kwargs)

            self.replace(model, "_reset_stateful_cache", reset_stateful_cache)
        if callable(getattr(model, "cache_context", None)):
            orig_context = model.cache_context

            @contextlib.contextmanager
            def cache_context(name, *args, **kwargs):
                with orig_context(name, *args, **kwargs):
                    saved = self.context
                    self.context = _Context(name, **kwargs)
                    try:
                        yield
                    finally:
                        self.context = saved

            self.replace(model, "cache_context", cache_context)

    # -- installing and removing ---------------------------------------------------------------------------------
    def replace(self, obj, attr: str, value) -> None:
        """Sets `obj.attr = value`; `remove()` puts back exactly what was there (or nothing)."""
        had = attr in obj.__dict__
        self._saved.append((obj, attr, had, obj.__dict__.get(attr), value))
        setattr(obj, attr, value)

    @staticmethod
    def inner_forward(module):
        """The forward a patch of `module` wraps: inside diffusers' hooks on it (context parallelism's split)."""
        return getattr(*parallel.forward_slot(module))

    def replace_forward(self, module, value) -> None:
        self.replace(*parallel.forward_slot(module), value)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for obj, attr, had, old, value in reversed(self._saved):
            if obj.__dict__.get(attr) is not value:  # wrapped since (enable_parallelism after fk.apply): unhook inside
                ref, name = parallel.unwrap_slot(obj, attr, value)
                if ref is not None:
                    setattr(ref, name, old if had else getattr(type(obj), attr).__get__(obj))
                    continue
            if had:
                setattr(obj, attr, old)
            else:
                delattr(obj, attr)
        self._saved.clear()
        for p in self.policies:
            p.drop_buffers()
        self._states.clear()

    def _entry_point(self, orig):
        """A forward-like method a pipeline calls directly (not through __call__): the same bookkeeping."""
        engine = self

        self._entry_sigs[orig] = inspect.signature(orig)  # once, not per call

        def entry(*args, **kwargs):
            if engine.in_entry:
                return orig(*args, **kwargs)
            args, kwargs = engine._pre(engine.model, args, kwargs, fn=orig)
            engine.in_entry = True  # a forward call inside the entry point is part of this call
            try:
                out = orig(*args, **kwargs)
            finally:
                engine.in_entry = False
            engine._post(engine.model, args, out)
            return out

        return entry

    # -- state keys and the clock --------------------------------------------------------------------------------
    def _switch(self, key: str) -> None:
        if key == self.key:
            return
        if self.key is not None:
            self._states[self.key] = [p.save() for p in self.policies]
        saved = self._states.pop(key, None)
        for i, p in enumerate(self.policies):
            if saved is None:
                p.fresh()
            else:
                p.load(saved[i])
        self.key = key

    def reset(self) -> None:
        """A new video for every key (buffers are kept)."""
        current = self.key
        for key in list(self._states):
            self._switch(key)
            for p in self.policies:
                p.reset()
        if current is not None:
            self._switch(current)
            for p in self.policies:
                p.reset()
        for clock in self._clocks.values():
            clock.update(c=0, prev_t=None, step=None, in_call=False)

    def _new_video(self, clock: dict, t, step, sig_changed: bool) -> bool:
        if clock["in_call"]:
            warnings.warn("fastercache: the previous model call did not finish; starting a new video", stacklevel=4)
            return True
        if clock["c"] == 0:
            return False
        if sig_changed:
            return True
        if t is not None and clock["prev_t"] is not None and t > clock["prev_t"]:
            return True  # the timestep jumped up
        if self.adapter is not None and self.adapter.starts_video(t):
            return True
        return step is not None and clock["step"] is not None and step < clock["step"]  # the sampler restarted

    def signature(self, args: tuple, kwargs: dict) -> tuple:
        sig = tuple((k, tuple(v.shape), v.dtype, v.device) for k, v in kwargs.items() if isinstance(v, torch.Tensor))
        return sig + tuple((i, tuple(v.shape), v.dtype, v.device) for i, v in enumerate(args)
                           if isinstance(v, torch.Tensor))

    # -- per call (outside compiled graphs) ----------------------------------------------------------------------
    def bind(self, args: tuple, kwargs: dict, sig=None) -> tuple[tuple, dict]:
        """Positional arguments become keyword arguments wherever the signature allows."""
        if not args:
            return args, kwargs
        kwargs = dict(kwargs)
        params = list((sig or self._sig).parameters.values())
        for i, a in enumerate(args):
            p = params[i] if i < len(params) else None
            if p is None or p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD or p.name in kwargs:
                return tuple(args[i:]), kwargs
            kwargs[p.name] = a
        return (), kwargs

    def _pre(self, module, args, kwargs, fn=None):
        if self.in_entry:  # a nested call (an entry point that calls forward): bookkept once, outside
            return args, kwargs
        # State and buffers are never inference tensors: a video sampled under torch.inference_mode() must not
        # make the next one (under no_grad or grad mode) fail on their in-place updates.
        with torch.inference_mode(False):
            return self._begin(args, kwargs, fn)

    def _begin(self, args, kwargs, fn):
        fn = fn or self._orig_forward
        args, kwargs = self.bind(args, kwargs, self._entry_sigs.get(fn))
        ctx = self.context
        key = "" if ctx is None else str(ctx.name)
        branch = key if key in BRANCH_NAMES else None
        step = getattr(ctx, "step_index", None)
        num_steps = getattr(ctx, "num_inference_steps", None)
        if self.timestep_fn is not None:
            t_raw = self.timestep_fn()
        else:
            t_raw = kwargs.get(self.adapter.timestep_arg) if self.adapter is not None else None
        if t_raw is None and ctx is not None:
            t_raw = getattr(ctx, "timestep", None)
        t = timestep_value(t_raw) if self.host_time else None
        clock = self._clocks.setdefault(key, {"c": 0, "prev_t": None, "step": None, "in_call": False})
        signature = self.signature(args, kwargs)
        sig_changed = signature != self._signatures.get(key)
        changed = sig_changed and key in self._signatures
        if changed and clock["c"] and not clock["in_call"]:
            warnings.warn(f"fastercache: the model inputs changed mid-video (call {clock['c'] + 1}); starting a new "
                          "video with buffers for the new shapes", stacklevel=3)
        if self._new_video(clock, t, step, changed):
            self.reset()
        if clock["c"] == 0 and all(c["c"] == 0 for c in self._clocks.values()):
            self.videos += 1
        clock["c"] += 1
        clock.update(prev_t=t, step=step, in_call=True)
        self.calls += 1
        call = Call(key, branch, clock["c"], t, t_raw, step, num_steps, args, kwargs)
        self.call = call
        if sig_changed and signature != self._probed:
            # new shapes: every key's state is dropped, this key's is allocated; probed through the model's outermost
            # forward (diffusers' model-level split hook included; our own wrapper passes through while probing)
            self._probe(call, self.model.forward if fn is self._orig_forward else fn)
            self._probed = signature
            self.key = None
            self._switch(key)
            for p in self.policies:
                p.allocate(call, self.probe_result)
        else:
            self._switch(key)
            if sig_changed:  # a key seen with the shapes of the last probe: its buffers follow them
                for p in self.policies:
                    p.allocate(call, self.probe_result)
        self._signatures[key] = signature
        for p in self.policies:
            p.begin(call)
        return args, kwargs

    def _post(self, module, args, output):
        if self.in_entry or self.call is None:
            return None
        call, self.call = self.call, None
        if output is None:  # the forward raised: the call stays unfinished, and the next one starts a new video
            return None
        self.output = output
        for p in self.policies:
            p.end(call)
        if self.log is not None:  # handle.summary()'s per-call log (summary.py): host values and 0-d clones only
            self.log.record(self, call)
        self.output = None
        self._clocks[call.key]["in_call"] = False
        return None

    # -- probing -------------------------------------------------------------------------------------------------
    def _probe(self, call: Call, fn) -> None:
        """Runs the original forward once with every policy recording (fake tensors, else a real call). Other
        keys' states are dropped (new shapes)."""
        from .. import adapters

        args, kwargs = call.args, call.kwargs
        ordered = [kwargs[n] for n in self._sig.parameters if n in kwargs]
        hidden = first_tensor((*args, *ordered, *kwargs.values()))
        if hidden is None:
            raise ValueError("fastercache: the model was called without a batched tensor argument")
        frames = self.adapter.latent_frames(self.model, hidden, kwargs)
        for p in self.policies:
            p.restart_probe()
        self.probing = True
        real = False
        try:
            try:
                if not self.adapter.fake_probe:
                    raise _RealProbe
                with torch.no_grad(), torch._subclasses.fake_tensor.FakeTensorMode(allow_non_fake_inputs=True) as m:
                    fargs, fkwargs = tree_map_only(torch.Tensor, m.from_tensor, (args, kwargs))
                    out = fn(*fargs, **fkwargs)
                    sample = adapters.base.get_sample(out)
                    shape, dtype = tuple(sample.shape), sample.dtype
            except (_RealProbe, *_fake_failures()):
                for p in self.policies:
                    p.restart_probe()
                real = True
                self.real_probes += 1
                with torch.no_grad():
                    out = fn(*args, **kwargs)
                    sample = adapters.base.get_sample(out)
                    shape, dtype = tuple(sample.shape), sample.dtype
        finally:
            self.probing = False
        self._states.clear()
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"fastercache: {type(self.model).__name__} returns {dtype} samples; the cache ops store "
                            "float32, float16 or bfloat16: run the model in one of those (e.g. model.float())")
        self.probe_result = Probe(shape, dtype, hidden.shape[0], frames, hidden.device, real)

    # -- reporting -----------------------------------------------------------------------------------------------
    def clock_stats(self) -> dict:
        c = self._clocks.get(self.key or "", {}).get("c", 0) if self._clocks else 0
        return {"calls": self.calls, "videos": self.videos, "call_in_video": c,
                "keys": {k: v["c"] for k, v in self._clocks.items()}, "real_probes": self.real_probes}


@dataclass(frozen=True)
class _Context:
    """What `cache_context(name, step_index=..., num_inference_steps=..., timestep=..., sigma=...)` said."""

    name: str
    step_index: int | None = None
    num_inference_steps: int | None = None
    timestep: object = None
    sigma: float | None = None

    def __init__(self, name, step_index=None, num_inference_steps=None, timestep=None, sigma=None, **_):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "step_index", step_index)
        object.__setattr__(self, "num_inference_steps", num_inference_steps)
        object.__setattr__(self, "timestep", timestep)
        object.__setattr__(self, "sigma", sigma)
