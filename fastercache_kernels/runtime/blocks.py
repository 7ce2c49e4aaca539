"""Block-level patching shared by the adaptive policies (AdaCache, TeaCache, First-Block-Cache).

Every candidate block (`candidate_blocks`: each child of a ModuleList not inside another one, or the modules the
adapter's `blocks` name) gets a forward; once the first call showed which of them are the blocks and which input
each output continues (runtime/structure.py; the adapter's `block_io` where it sets one), the blocks' forwards ask
the policy runtime whether to run the block or to return its inputs plus cached residuals (one residual per output
tensor), and the others run as they are. AdaCache also splits the residual at the attention: a block is called
through a `View` of itself whose capture submodule (`adapter.attn_capture`, e.g. CogVideoX `norm2`, Latte `attn2`
or `norm2`) records its inputs, which are `x + p` (p = gated self-attention residual). The View is created inside
the call, so the capture is a local list: no outside state is mutated and the call traces inside `torch.cond`.

The engine's hooks (outside compiled graphs) do the per-call bookkeeping; the block forwards read only Python flags
that never change after allocation, and tensors.
"""

from __future__ import annotations

import inspect
import operator
import re
from dataclasses import dataclass, field

import torch


class View:
    """`module` with some attributes overridden: calling the unbound forward on it swaps in the capture."""

    def __init__(self, module, overrides: dict):
        self._fk_module = module
        self._fk_overrides = overrides

    def __getattr__(self, name):
        over = self.__dict__["_fk_overrides"]
        if name in over:
            return over[name]
        return getattr(self.__dict__["_fk_module"], name)


def _get(args, kwargs, loc):
    return args[loc[1]] if loc[0] == "a" else kwargs[loc[1]]


@dataclass(eq=False)
class BlockInfo:
    """One patched block: where its mirrored inputs sit in the call, its outputs, its cache buffers."""

    name: str
    module: torch.nn.Module
    kind: str  # "spatial" or "temporal"
    index: int  # position among the adapter's blocks of its kind
    orig: object = None  # the forward before patching
    order: int = -1  # execution order in a model call (-1: not called)
    locs: dict = field(default_factory=dict)
    io: list = field(default_factory=list)
    tuple_out: bool = False
    shapes: list = field(default_factory=list)  # [(shape, dtype)] per output
    capture: str | None = None  # None: the block has no x + p point (single-stream blocks), p is 0
    capture_io: tuple = ()  # the block_io names the capture's positional inputs carry x + p of, in order
    io_names: tuple = ()  # the block_io name of each mirrored input
    slots: tuple = ()  # positions of the tensor outputs in a tuple output (others are None: SD3's last block)
    n_out: int = 1
    primary: int = 0  # index (among the mirrored streams) of the image / video stream, named hidden_states
    bufs: dict = field(default_factory=dict)  # name -> list of tensors (one per output)
    motion: tuple | None = None  # how MoReg views p: ("bnc", T) or ("fold", B, T)
    metric_slot: int = -1  # row in the runtime's metric table, -1: not a metric block
    block_io: tuple = ()  # the input each output continues (None: not continued): observed, or the adapter's
    image_name: str | None = None  # observed: the input name of the image stream

    def locate(self, args, kwargs) -> None:
        sig = inspect.signature(self.orig)
        params = list(sig.parameters.values())
        locs = {}
        for i, p in enumerate(params[: len(args)]):
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                locs[p.name] = ("a", i)
        for k in kwargs:
            locs[k] = ("k", k)
        self.locs = locs

    def get(self, args, kwargs, name):
        loc = self.locs.get(name)
        return None if loc is None else _get(args, kwargs, loc)

    def inputs(self, args, kwargs) -> list:
        return [_get(args, kwargs, loc) for loc in self.io]

    def _with(self, args, kwargs, ins):
        if ins is None:
            return args, kwargs
        args, kwargs = list(args), dict(kwargs)
        for loc, v in zip(self.io, ins):
            if loc[0] == "a":
                args[loc[1]] = v
            else:
                kwargs[loc[1]] = v
        return tuple(args), kwargs

    overrides: dict = field(default_factory=dict)  # submodule name -> callable used instead (see traceable_attention)
    # Chains (host decisions, one residual per block output): consecutive blocks where each takes the previous one's
    # outputs as they are share ONE residual, held by the chain's last block (`tail`); on reuse the first block
    # (`head`) adds it and the others pass their inputs through, as the references' whole-stack residual.
    in_ids: tuple = ()
    out_ids: tuple = ()
    head: BlockInfo | None = None
    tail: BlockInfo | None = None
    held: list | None = None  # the head's inputs during a compute call
    passes: bool = False  # inside a chain, not its head: a reused host call passes the inputs through
    # Runs (device decisions, eager calls): the same links, each block keeping its own residual; a reused eager call
    # adds them all at the run's first block (`run_head`, whose `run` lists the run's blocks) and the others pass
    run_head: BlockInfo | None = None
    run: list = field(default_factory=list)

    def call(self, args, kwargs, ins=None):
        args, kwargs = self._with(args, kwargs, ins)
        if self.overrides:
            return self.orig.__func__(View(self.module, self.overrides), *args, **kwargs)
        return self.orig(*args, **kwargs)

    def call_capture(self, args, kwargs, ins=None, strict: bool = True):
        """(output, mids): mids[j] = the capture module's j-th input = x_j + p_j (`strict=False` while probing,
        before the number of block outputs is known)."""
        args, kwargs = self._with(args, kwargs, ins)
        xs = list(ins) if ins is not None else self.inputs(args, kwargs)
        if self.capture is None:  # no x + p point: p = 0, the whole residual is the rest
            return self.call(args, kwargs), xs
        seen = []
        sub = self.overrides.get(self.capture) or getattr(self.module, self.capture)
        cap = self.capture_io or self.io_names
        k = sum(n in cap for n in self.io_names) if strict else len(cap)

        def capture(*a, **kw):
            seen.append(a[:len(cap)])
            return sub(*a, **kw)

        out = self.orig.__func__(View(self.module, {**self.overrides, self.capture: capture}), *args, **kwargs)
        if len(seen) != 1 or (len(seen[0]) < k if strict else not seen[0]):
            raise RuntimeError(f"fastercache: block {self.name!r}: its {self.capture!r} ran {len(seen)} times with "
                               f"{[len(s) for s in seen]} positional inputs; AdaCache needs it once with {k} (set "
                               "the adapter's `attn_capture` / `capture_io`)")
        got = seen[0]
        # a stream the capture does not see keeps p = 0 (its mid is its input)
        mids = [got[cap.index(n)] if n in cap and cap.index(n) < len(got) else x for n, x in zip(self.io_names, xs)]
        return out, mids

    def outs(self, out) -> list:
        return [out[i] for i in self.slots] if self.tuple_out else [out]

    def passthrough(self, args, kwargs):
        """The block's output when it passes its inputs through: `pack(inputs(...))`. `link` replaces it with one
        itemgetter where it can."""
        return self.pack(self.inputs(args, kwargs))

    def link(self) -> None:
        """After the structure is known: `passthrough` as one C itemgetter where the mirrored inputs are all keyword
        (or all positional) arguments and fill the output in order (a reused call passes most blocks through:
        0.80 -> 0.12 us per block in a 20000-call loop, two keyword streams)."""
        self.__dict__.pop("passthrough", None)
        self.__dict__.pop("inputs", None)
        kinds, keys = {loc[0] for loc in self.io}, [loc[1] for loc in self.io]
        if len(kinds) == 1 and len(keys) <= 2:  # `inputs` without a Python call per input (one or two streams: the
            # usual blocks; 0.26 -> 0.08 us a call, two keyword streams, 200000-call loop); plain indexing, which
            # torch.compile traces (it cannot trace an itemgetter on a dict)
            k0, k1 = (*keys, None)[:2]
            if "k" in kinds:
                self.inputs = (lambda args, kwargs: [kwargs[k0]]) if k1 is None else (
                    lambda args, kwargs: [kwargs[k0], kwargs[k1]])
            else:
                self.inputs = (lambda args, kwargs: [args[k0]]) if k1 is None else (
                    lambda args, kwargs: [args[k0], args[k1]])
        in_order = self.tuple_out and len(keys) >= 2 and tuple(self.slots) == tuple(range(self.n_out))
        if len(kinds) != 1 or not (in_order or (not self.tuple_out and len(keys) == 1)):
            return
        get = operator.itemgetter(*keys)
        self.passthrough = (lambda args, kwargs: get(kwargs)) if "k" in kinds else (lambda args, kwargs: get(args))

    def pack(self, outs):
        if not self.tuple_out:
            return outs[0]
        full = [None] * self.n_out
        for i, o in zip(self.slots, outs):
            full[i] = o
        return tuple(full)


def traceable_attention(block) -> dict:
    """Overrides for a block's diffusers `Attention` submodules that call their processor directly, as
    Attention.forward does after dropping the keyword arguments its processor does not take. Attention.forward
    reads inspect.signature on every call, which dynamo cannot trace inside a torch.cond branch (torch 2.13): the
    filter is computed here, once. Used for blocks called inside torch.cond (decide="device")."""
    out = {}
    for name, sub in block.named_children():
        proc = getattr(sub, "processor", None)
        if proc is None or type(sub).__name__ != "Attention" or getattr(sub, "_fk_no_direct", False):
            continue
        accepted = set(inspect.signature(proc.__call__).parameters)

        def direct(hidden_states, encoder_hidden_states=None, attention_mask=None, _attn=sub, _proc=proc,
                   _ok=frozenset(accepted), **kw):
            kw = {k: v for k, v in kw.items() if k in _ok}
            return _proc(_attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                         attention_mask=attention_mask, **kw)

        out[name] = direct
    return out


def _attention_class():
    try:
        from diffusers.models.attention_processor import Attention
    except ImportError:  # pragma: no cover (diffusers is a dependency; a model without it has no such modules)
        return None
    return Attention


def direct_attention(attn, orig):
    """A forward for a diffusers `Attention` module (`orig`: its Attention.forward) that does what that forward does,
    with the processor's parameter names computed once per processor instead of by inspect.signature on every call
    (about 20 us of host time per attention call on the tiny CogVideoX, a block's share of a computed call's
    overhead: benchmarks/bench_overhead.py). Keyword arguments the processor does not take go through `orig`,
    which warns about them and drops them, as before; a processor set later is seen on its first call."""
    # the processor of the last call and its parameter names (filled now: a compiled graph then guards on the
    # processor's identity and never traces the signature's computation)
    seen = [attn.processor, frozenset(inspect.signature(attn.processor.__call__).parameters)]

    def forward(hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
        proc = attn.processor
        if proc is not seen[0]:
            seen[0], seen[1] = proc, frozenset(inspect.signature(proc.__call__).parameters)
        if kw and not seen[1].issuperset(kw):
            return orig(hidden_states, encoder_hidden_states, attention_mask, **kw)
        return proc(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                    attention_mask=attention_mask, **kw)

    forward.__wrapped__ = orig  # (inspect.signature: the module's own)
    return forward


def install_direct_attention(engine, blocks) -> None:
    """`direct_attention` on the diffusers `Attention` children of `blocks` whose forward nobody replaced (a policy's
    or a library's wrapper keeps Attention.forward), through `engine.replace_forward` (undone by `remove()`)."""
    cls = _attention_class()
    if cls is None:
        return
    for b in blocks:
        for sub in b.module.children():
            if type(sub) is not cls or getattr(sub, "_fk_direct", False) or getattr(sub, "_fk_no_direct", False):
                continue
            inner = engine.inner_forward(sub)
            if getattr(inner, "__func__", None) is not cls.forward or getattr(inner, "__self__", None) is not sub:
                continue
            engine.replace_forward(sub, direct_attention(sub, inner))
            engine.replace(sub, "_fk_direct", True)


def find_blocks(model, adapter) -> list[BlockInfo]:
    """The blocks named by the adapter (`blocks`: spatial, `temporal_blocks`: temporal), in module order."""
    found, count = [], {"spatial": 0, "temporal": 0}
    for name, mod in model.named_modules():
        if not name or any(name.startswith(b.name + ".") for b in found):  # not inside a block already taken
            continue
        kind = ("spatial" if any(re.search(p, name) for p in adapter.blocks) else
                "temporal" if any(re.search(p, name) for p in adapter.temporal_blocks) else None)
        if kind is None:
            continue
        found.append(BlockInfo(name, mod, kind, count[kind]))
        count[kind] += 1
    return found


def candidate_blocks(model) -> list[BlockInfo]:
    """Every child of every torch.nn.ModuleList that is not inside another one (module order): the modules the first
    call's observation chooses the blocks from (runtime/structure.py; nested lists, such as an attention's `to_out`,
    run inside a block). Kind "temporal" when the list's attribute name contains "temporal", as the observer labels
    it."""
    lists = {name for name, mod in model.named_modules() if isinstance(mod, torch.nn.ModuleList)}
    found, count = [], {"spatial": 0, "temporal": 0}
    for name, mod in model.named_modules():
        parent = name.rpartition(".")[0]
        if not name or parent not in lists or any(name.startswith(b.name + ".") for b in found):
            continue
        if isinstance(mod, (torch.nn.ModuleList, torch.nn.ModuleDict)):  # a container is never called: its children
            continue
        kind = "temporal" if "temporal" in parent.rpartition(".")[2] else "spatial"
        found.append(BlockInfo(name, mod, kind, count[kind]))
        count[kind] += 1
    return found
