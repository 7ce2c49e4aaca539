"""The hook engine: one per patched model, whatever the policies.

It installs everything and removes it exactly: the model's forward, which runs the per-call bookkeeping before and
after the original (the "pre-hook" `_pre` and "post-hook" `_post`: plain Python, run outside compiled graphs), the
wrappers of extra entry points an adapter names (Vchitect's `my_forward`), diffusers'
`cache_context` and `_reset_stateful_cache`, and, through `Engine.replace`, each policy's module forwards. It holds
the clock (per state key: calls in the video, the timestep, new-video detection, the step index and step count a
diffusers `cache_context` carries), decides which state a call uses, and observes the first call of new input shapes.

Policies plug in with a small protocol (see `Hooks`): `install`, `allocate` and `adopt` after an observed call,
`begin`/`end` around each call, `reset` for a new video, `save`/`load`/`fresh` (and `swap`: a save and a load at
once) to keep their state per key, `stats`, `buffers`, `drop_buffers`.

State keys (docs/algorithms.md section 10): calls on the same sample tensor at the same timestep are the CFG branches
of one sampler step, each with its own state: keyed by the `cache_context` name ("cond", "uncond") or, without a
context, "#0", "#1" in call order; the later branches of a step follow the first one's decision. Any other
context name (CogVideoX's "cond_uncond") or no context on a single call per step is a call holding the whole batch,
keyed by that name ("" without one).

Buffers: the first real call of each new input signature is *observed*: it runs in full (as the first call of a
video always does), every policy's module forwards record what they see (which blocks run, in which order, their
output shapes, which tensor each block hands to the next) and keep the values the call computed that a cache
holds (attention outputs, block residuals, indicators). Where a policy takes the block structure from the data
flow (the adaptive ones, for every class), the same call is watched by `structure.Observer`; after the call the
policies take the structure (`Hooks.structure_known`), `Hooks.allocate` sizes the buffers from the real output
and `Hooks.adopt` fills them. No user code ever runs on fake or meta tensors, and no extra model
call is made. The observed call always runs eagerly, also inside `torch.compile` (see `_model_forward`).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from dataclasses import dataclass

import torch

from . import parallel

BRANCH_NAMES = ("cond", "uncond")


@dataclass(slots=True)
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
    pos: int = 0  # the call's position in its sampler step: 1, 2, ... for the later CFG branches of one step
    leader: str | None = None  # the state key of the step's first call, on the later calls of a step
    half: int | None = None  # a batched CFG-skip call runs this half of the batch (set by FasterCache's begin)
    skips_model: bool = False  # the call returns a rebuilt CFG branch without running the model (FasterCache)


@dataclass
class Observation:
    """What an observed call showed: the model's output sample, the batch and frame count of its first batched
    input."""

    sample_shape: tuple
    sample_dtype: torch.dtype
    batch: int
    frames: int
    device: torch.device


class Hooks:
    """The protocol every policy implements (methods are no-ops by default)."""

    name = "policy"
    host_time = False  # needs the timestep on the host (one host read per call)
    wraps_forward = False  # replaces the model-level forward (CFG-Cache): `model_forward(orig)` is installed

    def install(self, engine: Engine) -> None:
        pass

    def allocate(self, call: Call, probe: Observation) -> None:
        pass

    def adopt(self, call: Call, output) -> None:
        """After an observed call (between `begin` and `end`): fill the buffers with what the call computed."""

    def begin(self, call: Call) -> None:
        pass

    def end(self, call: Call) -> None:
        pass

    def reset(self) -> None:
        pass

    def start_observing(self) -> None:
        """A call is about to be observed: forget what an earlier (or failed) observation recorded."""

    def save(self):
        return None

    def load(self, state) -> None:
        pass

    def swap(self, state):
        """The branch switch: returns `save()` after loading `state` in its place (`fresh()` for None): one call per
        policy on every per-branch call."""
        mine = self.save()
        if state is None:
            self.fresh()
        else:
            self.load(state)
        return mine

    def fresh(self) -> None:
        """Initial state for a key seen for the first time (buffers shaped as the last observed call showed)."""

    def stats(self) -> dict:
        return {}

    def video_ended(self, calls: int) -> None:
        """A video of this many calls (of the key in progress) ended: a new one starts."""

    def needs_structure(self) -> bool:
        """Whether the policy takes the model's block structure from the observed call (runtime/structure.py)."""
        return False

    def observer_overrides(self) -> dict:
        """What the adapter states instead of observing (`blocks`, `block_io`): the Observer's keyword arguments."""
        return {}

    def structure_known(self, structure) -> None:
        """After an observed call, before `allocate`: the structure it showed."""

    def drop_buffers(self) -> None:
        pass

    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def buffers(self) -> list:
        """Every cache tensor the policy holds for the key in progress (and its shared ones)."""
        return []


def _under_torch_compile() -> bool:
    from .adaptive import under_torch_compile  # (adaptive imports this module)

    return under_torch_compile()


def _callback_getter():
    try:
        from torch._C._dynamo.eval_frame import get_eval_frame_callback
    except ImportError:  # pragma: no cover (another torch: the bookkeeping always goes through compiler.disable)
        return None
    return get_eval_frame_callback


_eval_frame_callback = _callback_getter()


def _ran_eagerly_by_design() -> None:
    """Inside `torch.compile(model, fullgraph=True)`, a call that compiled no frame raises "found no compiled
    frames" when it returns (torch 2.13, eval_frame.py). The observed call runs eagerly on purpose: it counts as one
    frame for that check (the counter is -1 when no fullgraph call is in progress, and is left alone then)."""
    try:
        from torch._C._dynamo.eval_frame import set_fullgraph_compiled_frame_count as count
    except ImportError:  # pragma: no cover (another torch: no such check)
        return
    prev = count(-1)
    count(prev + 1 if prev >= 0 else prev)


def _version(t) -> int | None:
    """The tensor's version counter (bumped by in-place updates); None for inference tensors, which keep none."""
    return None if t is None or t.is_inference() else t._version


def _same_tensor(a, b, read: bool) -> bool:
    """Same object or storage view; else equal values where reading them costs no device sync (CPU) or `read`."""
    if a is None or b is None:
        return False
    if a is b:
        return True
    if a.shape != b.shape or a.device != b.device or a.dtype != b.dtype:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return (a.device.type == "cpu" or read) and bool(torch.equal(a, b))


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
        n = t.numel()
        return float(t.item() if n == 1 else t.reshape(-1)[0]) if n else None  # the one host read per call
    return float(t)


class Engine:
    """Hooks one model; `remove()` restores it exactly. `policies` run in order (FasterCache before an adaptive
    policy: its CFG decision tells the adaptive policy which half of the batch a skip call runs)."""

    def __init__(self, model: torch.nn.Module, adapter, policies: list[Hooks]):
        self.model, self.adapter, self.policies = model, adapter, list(policies)
        self._saved: list[tuple[object, str, bool, object, object]] = []
        self._orig_forward = getattr(*parallel.model_slot(model))
        self._sig = inspect.signature(self._orig_forward)
        self._params = tuple(self._sig.parameters)  # the forward's parameter names, in order (read per call)
        # the adapter's own new-video rule, where it has one (a Python call fewer per call otherwise)
        from ..adapters.base import Adapter

        rule = getattr(type(adapter), "starts_video", None)
        self._starts_video = adapter.starts_video if rule is not None and rule is not Adapter.starts_video else None
        # whether calls at one timestep are the CFG branches of one step (an adapter may say they are not)
        self._by_timestep = adapter is None or getattr(adapter, "branches_by_timestep", True)
        self.host_time = any(p.host_time for p in self.policies)
        self.static_shapes = any(getattr(p, "device_mode", False) for p in self.policies)
        # decide="auto": whether a call runs under torch.compile is part of its input signature, so the first call
        # of each kind is observed and lays out the buffers for it (the policies read `compiled` then)
        self.auto = any(getattr(p, "auto", False) for p in self.policies)
        # whether a call runs under torch.compile, looked at once per call by the engine for whoever needs it (auto;
        # device decisions mark the inputs static; host decisions in the forward refuse compiling): the check costs
        # about 7 us of a cold pre-hook (benchmarks/profile_overhead.py), so no policy repeats it
        self.checks_compile = self.auto or self.static_shapes or any(
            getattr(p, "reads_in_forward", False) for p in self.policies)
        self.compiled = False
        self.timestep_fn = None  # optional callback giving the timestep (diffusers' current_timestep_callback)
        self.context = None  # the diffusers CacheContext (or any object with .name) of the call in progress
        self.key: str | None = None  # the key whose state the policies hold now
        self._states: dict[str, list] = {}  # key -> saved policy states (of keys not active now)
        self._no_states = [None] * len(self.policies)  # a key seen for the first time: every policy fresh
        self._clocks: dict[str, dict] = {}
        self._signatures: dict[str, tuple] = {}
        self._observed_sig = None  # the input signature of the last observed call
        self.observing = False  # the call in progress is observed (the first of a new input signature)
        self._observer = None  # the data-flow observer of a call showing the block stack (runtime/structure.py)
        self.structure = None  # what it showed
        self.adopting = False  # the policies' bookkeeping of an observed call (a full call: nothing to decide)
        self.observation: Observation | None = None
        self.in_entry = False
        self._entry_sigs: dict = {}  # entry point -> its signature (binding positional inputs)
        # The call pattern, from the calls: two or more calls at one timestep are the CFG branches of one step
        self._last_t = None  # the previous call's timestep, as passed
        self._last_sample = None  # the previous call's sample input
        self._last_version = None  # and its version counter then (an in-place update makes it a new step)
        self._pending_step = (None, None, None, None)  # the same of the call in progress (and its host timestep)
        self._step_keys: list[str] = []  # the keys of the current step's calls, in call order
        self.per_branch = False  # calls without cache_context come once per branch (seen: two calls at a timestep)
        self.branch_keys: set = set()  # the keys of the later branches of a step (they follow the first one's)
        self.pipeline = None  # () -> the pipeline fk.apply was given (a weak reference), or None
        self.calls = 0
        self.videos = 0
        self.observed = 0
        self.call: Call | None = None
        self.output = None  # the model output of the call being closed (policies' `end` may read it)
        self.log = None  # summary.CallLog, set by fk.apply
        for p in self.policies:
            p.install(self)
        inner = self._orig_forward
        for p in self.policies:
            if p.wraps_forward:
                inner = p.model_forward(inner)
        # outside diffusers' hook chain on the model (CFG-Cache works on the gathered output under context parallelism)
        # a forward that raises leaves its call unfinished (`_post` with no output), and the next one warns and
        # starts a new video (a BaseException skips `_post`: the call stays unfinished all the same)
        self.replace(*parallel.model_slot(model), self._model_forward(inner))
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

            def cache_context(name, *args, **kwargs):
                return _InContext(self, orig_context(name, *args, **kwargs), _Context(name, **kwargs))

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
        for obj, attr, had, old, value in reversed(self._saved):
            if obj.__dict__.get(attr) is not value:  # hooks were put around it since (offloading, parallelism)
                ref, name = parallel.unwrap_slot(obj, attr, value)
                if ref is not None:
                    if ref is obj and name == "forward" and not had:
                        delattr(obj, "forward")  # the class's forward again
                    else:
                        setattr(ref, name, old if had else getattr(type(obj), attr).__get__(obj))
                continue  # not found: whoever replaced it dropped it already
            if had:
                setattr(obj, attr, old)
            else:
                delattr(obj, attr)
        self._saved.clear()
        for p in self.policies:
            p.drop_buffers()
        self._states.clear()

    def _model_forward(self, inner):
        """The model's forward: the per-call bookkeeping (`_pre`, `_post`, never traced) around `inner` (the
        original, or a policy's wrapper of it), run eagerly on an observed call. Its own frame is skipped by
        torch.compile (`recursive=False`): the bookkeeping runs in Python on every call, and `inner` is compiled as
        its own frame (one graph per call kind); an observed call runs `inner` with compilation disabled, so
        recording what it sees never happens inside a graph. The bookkeeping is called here rather than from
        forward hooks on the model: with two hooks (empty ones) the tiny CogVideoX took 14 us from the call to its
        forward against 4 us without (median of 250 cold calls between computed ones), and the model's `__call__`
        keeps its fast path. It sees the inputs as the forward gets them: after accelerate's
        offload hook (which moves them to the execution device) and any forward pre-hook."""
        engine = self
        eager = torch.compiler.disable(inner)
        disabled_pre, disabled_post, model = torch.compiler.disable(self._pre), torch.compiler.disable(self._post), \
            self.model

        def forward(*args, **kwargs):
            # no eval-frame callback: no torch.compile region runs (this frame is skipped, not disabled, so it sees
            # the caller's), and the bookkeeping is called as it is, known to run eagerly (the compile check took
            # about 7 us of a cold call by the line timer, the compiler.disable wrapper 0.4 us warm); else through
            # the wrappers
            plain = _eval_frame_callback is not None and _eval_frame_callback() is None
            pre, post = (engine._pre, engine._post) if plain else (disabled_pre, disabled_post)
            try:
                args, kwargs = pre(model, args, kwargs, eager=plain)
                if engine.observing:
                    out = eager(*args, **kwargs)
                    _ran_eagerly_by_design()
                else:
                    out = inner(*args, **kwargs)
            except Exception:  # the call stays unfinished (as an always-called forward hook sees it)
                post(model, args, None)
                raise
            post(model, args, out)
            return out

        # inspect.signature(model.forward) follows __wrapped__ to the model's own signature (pipelines read it)
        functools.update_wrapper(forward, inner)
        return torch.compiler.disable(forward, recursive=False)

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
                out = (torch.compiler.disable(orig) if engine.observing else orig)(*args, **kwargs)
            finally:
                engine.in_entry = False
            engine._post(engine.model, args, out)
            return out

        return entry

    # -- state keys and the clock --------------------------------------------------------------------------------
    def _switch(self, key: str) -> None:
        if key == self.key:
            return
        saved = self._states.pop(key, None) or self._no_states  # (None: a key seen for the first time, fresh)
        if self.key is not None:
            self._states[self.key] = [p.swap(state) for p, state in zip(self.policies, saved)]
        else:  # (no key's state is held: nothing to save)
            for p, state in zip(self.policies, saved):
                if state is None:
                    p.fresh()
                else:
                    p.load(state)
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

    def _pipeline_step(self) -> tuple:
        """(step index, step count) from the scheduler of the pipeline fk.apply was given, where it keeps them
        (diffusers' schedulers set `timesteps` before the loop and count `step_index` as they step); else
        (None, None) and the policies count calls."""
        pipe = self.pipeline() if self.pipeline is not None else None
        sched = getattr(pipe, "scheduler", None)
        timesteps = getattr(sched, "timesteps", None)
        if timesteps is None or not hasattr(sched, "step_index"):
            return None, None
        step = sched.step_index
        return (0 if step is None else int(step)), len(timesteps)

    def pipeline_guides(self) -> bool | None:
        """Whether the pipeline fk.apply was given runs classifier-free guidance in the video in progress (None: no
        pipeline, or it does not say)."""
        pipe = self.pipeline() if self.pipeline is not None else None
        if pipe is None:
            return None
        try:
            flag = pipe.do_classifier_free_guidance  # set by the pipeline's __call__ (from its guidance_scale)
        except AttributeError:
            flag = None
        if isinstance(flag, bool):
            return flag
        scale = getattr(pipe, "_guidance_scale", None)
        return None if scale is None else float(scale) > 1.0

    def _sample(self, args: tuple, kwargs: dict):
        """first_tensor of the positional inputs, then the keyword inputs in the forward's order, then the others
        (without building their list: this runs on every call)."""
        for v in args:
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return v
        for n in self._params:
            v = kwargs.get(n)
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return v
        return first_tensor(kwargs.values())

    def _same_step(self, t_raw, sample, t=None) -> bool:
        """Whether this call is another CFG branch of the previous call's sampler step: the same sample input, not
        modified in place since (the same tensor or storage at the same version, or equal values on the CPU),
        at the same timestep where the timestep is known (the same tensor or storage, equal values of a CPU tensor
        or number, or equal host values where a policy reads the timestep anyway). A device tensor is never read
        for this alone; a loop whose timesteps repeat has new latents."""
        # compared with the last call that finished (an interrupted call starts nothing), kept when this one does
        prev, prev_sample, version = self._last_t, self._last_sample, self._last_version
        self._pending_step = (t_raw, sample, _version(sample), t)
        if sample is None or prev_sample is None:
            return False
        if t is not None and prev is not None and self._last_host_t is not None and t != self._last_host_t:
            return False  # the timesteps' host values (read anyway) differ: no need to compare the samples
        if sample is prev_sample or (sample.data_ptr() == prev_sample.data_ptr() and sample.shape == prev_sample.shape
                                     and sample.stride() == prev_sample.stride()):
            if _version(sample) != version:
                return False  # the latents were updated in place: a new step
        elif not _same_tensor(sample, prev_sample, self.host_time):
            return False
        if t_raw is None and prev is None:
            return True  # no timestep argument known (a class without an adapter): the sample decides
        if t_raw is None or prev is None:
            return False
        if isinstance(t_raw, torch.Tensor) and isinstance(prev, torch.Tensor):
            return _same_tensor(t_raw, prev, self.host_time)
        if isinstance(t_raw, torch.Tensor) or isinstance(prev, torch.Tensor):
            return False
        return float(t_raw) == float(prev)

    def _rename(self, old: str, new: str) -> None:
        """The state kept under `old` is `new`'s from now on (the first call of a per-branch step ran as `old`)."""
        for table in (self._clocks, self._signatures, self._states):
            if old in table:
                table[new] = table.pop(old)
        if old in self.branch_keys:
            self.branch_keys.discard(old)
            self.branch_keys.add(new)
        if self.key == old:
            self.key = new

    def peek(self, key: str, policy: Hooks):
        """`policy`'s saved state of `key` (another branch of this step), or None."""
        saved = self._states.get(key)
        return None if saved is None else saved[self.policies.index(policy)]

    def signature(self, args: tuple, kwargs: dict) -> tuple:
        # (torch.Size is a tuple: compared and hashed as one, no copy)
        sig = tuple([(k, v.shape, v.dtype, v.device) for k, v in kwargs.items() if isinstance(v, torch.Tensor)])
        if args:
            sig += tuple([(i, v.shape, v.dtype, v.device) for i, v in enumerate(args) if isinstance(v, torch.Tensor)])
        return sig

    _last_host_t = None  # the previous call's timestep on the host, where it was read (with `_last_t`)

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

    def _pre(self, module, args, kwargs, fn=None, eager: bool = False):
        if self.in_entry:  # a nested call (an entry point that calls forward): bookkept once, outside
            return args, kwargs
        # State and buffers are never inference tensors: a video sampled under torch.inference_mode() must not
        # make the next one (under no_grad or grad mode) fail on their in-place updates.
        if not torch.is_inference_mode_enabled():  # the usual case: no context to enter
            return self._begin(args, kwargs, fn, eager)
        with torch.inference_mode(False):
            return self._begin(args, kwargs, fn, eager)

    def _begin(self, args, kwargs, fn, eager: bool):
        # (runs on every call: written for few Python lines on the usual path, a keyword call in a context)
        if self._observer is not None:  # an observed call ended by a BaseException (no forward hook ran)
            self._observer.__exit__(None, None, None)
            self._observer = None
        if self.call is not None:  # the previous call did not finish (a BaseException skips the forward hook)
            self._last_t = self._last_sample = self._last_version = None
        if args:
            args, kwargs = self.bind(args, kwargs, self._entry_sigs.get(fn or self._orig_forward))
        ctx = self.context  # (a _Context: set by the cache_context wrapper alone)
        if ctx is None:
            step = num_steps = None
        else:
            step, num_steps = ctx.step_index, ctx.num_inference_steps
        if self.timestep_fn is not None:
            t_raw = self.timestep_fn()
        else:
            t_raw = kwargs.get(self.adapter.timestep_arg) if self.adapter is not None else None
        if t_raw is None and ctx is not None:
            t_raw = ctx.timestep
        # the timestep on the host: read once per call where a policy needs it, else only where it is free (a CPU
        # tensor or a number): a new video when it jumps up
        if t_raw is None:
            t = None
        elif not isinstance(t_raw, torch.Tensor):
            t = float(t_raw)
        elif self.host_time or t_raw.is_cpu:
            try:
                t = float(t_raw)  # (a one-element tensor: the usual timestep)
            except (RuntimeError, ValueError):
                t = timestep_value(t_raw)
        else:
            t = None
        sample = self._sample(args, kwargs)
        if t is not None and self._last_host_t is not None and t != self._last_host_t:
            # the usual call: the next sampler step (no need to compare the samples: `_same_step`)
            self._pending_step = (t_raw, sample, _version(sample), t)
            same = False
        else:
            same = self._same_step(t_raw, sample, t) and self._by_timestep
        pos = len(self._step_keys) if same else 0
        if ctx is None:
            if pos and not self.per_branch:  # the second call at one timestep: calls come once per CFG branch
                self.per_branch = True
                self._rename("", "#0")
                self._step_keys = ["#0"]
            key = f"#{pos}" if self.per_branch else ""
            branch = key if self.per_branch else None
        else:
            key = str(ctx.name)
            branch = key if key in BRANCH_NAMES else None
        if pos:
            self._step_keys = [*self._step_keys, key]
            self.branch_keys.add(key)
            leader = self._step_keys[0] if self._step_keys[0] != key else None
        else:
            self._step_keys = [key]
            leader = None
        clock = self._clocks.get(key)
        if clock is None:
            clock = self._clocks[key] = {"c": 0, "prev_t": None, "step": None, "in_call": False}
        # (inlined `signature`: this runs on every call)
        signature = tuple([(k, v.shape, v.dtype, v.device) for k, v in kwargs.items() if isinstance(v, torch.Tensor)])
        if args:
            signature += self.signature(args, {})
        if self.checks_compile:
            self.compiled = False if eager else _under_torch_compile()
            if self.auto:
                signature += (("torch.compile", self.compiled),)
        known = self._signatures.get(key)
        sig_changed = signature != known
        changed = sig_changed and known is not None
        prev_t = clock["prev_t"]
        if changed and clock["c"] and not clock["in_call"] and not (t is not None and prev_t is not None
                                                                    and t > prev_t):  # (jumped: a new video anyway)
            warnings.warn(f"fastercache: the model inputs changed mid-video (call {clock['c'] + 1}); starting a new "
                          "video with buffers for the new shapes", stacklevel=3)
        if step is None and num_steps is None and self.pipeline is not None:
            step, num_steps = self._pipeline_step()
        # a new video: the previous call did not finish, new shapes, the timestep jumped up, the adapter's own rule,
        # or the sampler restarted (one expression: this runs on every call)
        if clock["c"] and (clock["in_call"] or changed or (t is not None and prev_t is not None and t > prev_t) or (
                self._starts_video is not None and self._starts_video(t)) or (
                step is not None and clock["step"] is not None and step < clock["step"])):
            if clock["in_call"]:
                warnings.warn("fastercache: the previous model call did not finish; starting a new video",
                              stacklevel=3)
            for p in self.policies:
                p.video_ended(clock["c"])
            self.reset()
        if clock["c"] == 0 and all(c["c"] == 0 for c in self._clocks.values()):
            self.videos += 1
        clock["c"] += 1
        clock["prev_t"], clock["step"], clock["in_call"] = t, step, True
        self.calls += 1
        if self.static_shapes and self.compiled:
            # torch.cond (decide="device") rejects the symbolic strides of a dynamic-shape recompile (torch 2.13:
            # "cond's output stride is not a simple accumulative multiplication"): a new resolution compiles its own
            # static graph instead (only dynamo reads the mark: an eager call skips it)
            for v in (*args, *kwargs.values()):
                if isinstance(v, torch.Tensor):
                    torch._dynamo.mark_static(v)
        call = Call(key, branch, clock["c"], t, t_raw, step, num_steps, args, kwargs, pos, leader)
        self.call = call
        self._signatures[key] = signature
        if signature != self._observed_sig:
            # new shapes: this call is observed (it runs in full); every key's state is dropped, and this key's
            # buffers are allocated and filled from it in `_post`
            self._states.clear()
            self.key = None
            self.observing = True
            for p in self.policies:
                p.start_observing()
            wants = [p for p in self.policies if p.needs_structure()]
            if wants:
                # the same call shows the block stack (data flow, runtime/structure.py): the policies' observing
                # forwards keep what their caches hold meanwhile, and take the stack after the call (`_post`)
                from .structure import Observer

                over = wants[0].observer_overrides()
                self._observer = Observer(self.model, blocks=over.get("blocks")).__enter__()
                self._observer.declared_io = over.get("block_io")
            return args, kwargs
        if key != self.key:
            self._switch(key)
        if sig_changed:  # a key seen with the shapes of the last observed call: its buffers follow them
            for p in self.policies:
                p.allocate(call, self.observation)
        for p in self.policies:
            p.begin(call)
        return args, kwargs

    def _post(self, module, args, output):
        if self.in_entry or self.call is None:
            return None
        call, self.call = self.call, None
        observed, self.observing = self.observing, False
        finished = self._pending_step if output is not None else (None, None, None, None)
        self._last_t, self._last_sample, self._last_version, self._last_host_t = finished
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.__exit__(None, None, None)
        if output is None:  # the forward raised: the call stays unfinished, and the next one starts a new video
            return None
        if observer is not None:
            from ..adapters.base import get_sample

            get_sample(output)  # a model fk cannot cache says so now
            try:
                try:
                    structure = observer.structure(call.args, call.kwargs, output)
                except ValueError:
                    if not observer.declared_io:  # the data flow is ambiguous and no `block_io` states it
                        raise
                    observer.block_io = observer.declared_io
                    structure = observer.structure(call.args, call.kwargs, output)
                for p in sorted(self.policies, key=lambda p: p.name == "fastercache"):  # the block owners first
                    p.structure_known(structure)
            except Exception:  # (the next call is observed again: nothing was adopted)
                self._clocks[call.key]["in_call"] = False
                raise
            self.structure = structure
        if observed:
            self._adopt(call, output)
        else:
            self.output = output
            for p in self.policies:
                p.end(call)
            self.output = None
        if self.log is not None:  # handle.summary()'s per-call log (summary.py): host values and 0-d clones only
            self.log.record(self, call)
        self._clocks[call.key]["in_call"] = False
        return None

    # -- observed calls ------------------------------------------------------------------------------------------
    def _adopt(self, call: Call, output) -> None:
        """After an observed call: size every buffer from what it produced, then run the policies' per-call
        bookkeeping around it as for any call (`begin`, `adopt` instead of the hooked forwards' work, `end`)."""
        from .. import adapters

        with torch.inference_mode(False), torch.no_grad():
            sample = adapters.base.get_sample(output)
            if sample.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                raise TypeError(f"fastercache: {type(self.model).__name__} returns {sample.dtype} samples; the cache "
                                "ops store float32, float16 or bfloat16: run the model in one of those (e.g. "
                                "model.float())")
            args, kwargs = call.args, call.kwargs
            ordered = [kwargs[n] for n in self._sig.parameters if n in kwargs]
            hidden = first_tensor((*args, *ordered, *kwargs.values()))
            if hidden is None:
                raise ValueError("fastercache: the model was called without a batched tensor argument")
            frames = self.adapter.latent_frames(self.model, hidden, kwargs)
            self.observation = Observation(tuple(sample.shape), sample.dtype, hidden.shape[0], frames, hidden.device)
            self._observed_sig = self._signatures[call.key]
            self.observed += 1
            self._switch(call.key)
            for p in self.policies:
                p.allocate(call, self.observation)
            self.adopting = True
            try:
                for p in self.policies:
                    p.begin(call)
                for p in self.policies:
                    p.adopt(call, output)
                self.output = output
                for p in self.policies:
                    p.end(call)
            finally:
                self.output = None
                self.adopting = False

    # -- reporting -----------------------------------------------------------------------------------------------
    def cache_bytes(self, per_key: bool = False):
        """The memory of every key's buffers (each CFG branch keeps its own), tensors shared between keys counted
        once; `per_key`: {key: bytes} as each key's state holds them."""
        seen: dict = {}
        current = self.key
        for key in [current, *self._states] if current is not None else list(self._states):
            self._switch(key)
            seen[key] = {(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()): t
                         for p in self.policies for t in p.buffers()}
        if current is not None:
            self._switch(current)
        if per_key:
            return {k: sum(n for _, n in v) for k, v in seen.items()}
        return sum(n for _, n in set().union(*seen.values())) if seen else 0

    def clock_stats(self) -> dict:
        c = self._clocks.get(self.key or "", {}).get("c", 0) if self._clocks else 0
        return {"calls": self.calls, "videos": self.videos, "call_in_video": c,
                "keys": {k: v["c"] for k, v in self._clocks.items()}, "observed_calls": self.observed}


class _Context:
    """What `cache_context(name, step_index=..., num_inference_steps=..., timestep=..., sigma=...)` said."""

    __slots__ = ("name", "step_index", "num_inference_steps", "timestep", "sigma")

    def __init__(self, name, step_index=None, num_inference_steps=None, timestep=None, sigma=None, **_):
        self.name, self.step_index, self.num_inference_steps = name, step_index, num_inference_steps
        self.timestep, self.sigma = timestep, sigma


class _InContext:
    """The patched `cache_context(...)`: diffusers' own context, and the engine's `context` set inside it (a class,
    not a generator-based context manager: pipelines enter one per branch and step)."""

    __slots__ = ("engine", "inner", "ctx", "saved")

    def __init__(self, engine, inner, ctx):
        self.engine, self.inner, self.ctx = engine, inner, ctx

    def __enter__(self):
        out = self.inner.__enter__()
        self.saved, self.engine.context = self.engine.context, self.ctx
        return out

    def __exit__(self, *exc):
        self.engine.context = self.saved
        return self.inner.__exit__(*exc)
