"""A model's block structure, observed from the data flow of one real call (no adapter needed).

`Observer` watches one model call that the caller makes itself; `Observer.structure` then reads off the rules
below (docs/models.md, "How fk observes a model"). Nothing is decided by a module's name or a tensor's shape.

- **Candidates**: every child of every `torch.nn.ModuleList` (with the `blocks` override: the modules whose names
  match), each with a forward pre-hook and a forward hook; one running inside another candidate is not a block.
- **Labels**: while entered, a `TorchFunctionMode` that only looks (every function runs as it would without it)
  keeps two labellings of tensors, by identity (weak references):
  *provenance*, the block outputs (block, slot) a tensor derives from through any torch function (functions
  that take only a shape or dtype, as `new_zeros`, give none); and *continuation*, the block inputs a tensor is
  "plus updates" of, through additions, layout ops (view, reshape, permute, cat, slices, splits), casts and
  scaling by a broadcast factor (a mask or gate) only. A `torch.cat` (or a slice assignment) remembers which
  labels fill which range of its dim; a slice, `split` or `narrow` takes the labels of the ranges it covers, and
  the ranges survive ops that act per position along that dim (pointwise ops, norms and reductions over other
  dims, linear layers over the last dim) and blocks whose output continues the cat (its ranges become parts of
  that output). Regions the model compiles itself (flex_attention) are not followed.
- **Chains**: a ModuleList whose children ran once each is a chain when each child derives from the previous
  one (directly, or through blocks run in between: Latte's interleaved spatial and temporal lists) and some child
  is a block, i.e. has an output that continues an input and is not that input (an MLP's layers are not blocks).
- **Pairing** (`BlockSpec.io`): output j of block b continues input n when the block receiving b's outputs gets
  output j as its input n (by identity, else by provenance): the next child of the same list, else, for the last
  child, the pairing of the previous one when of the same class, else the first later block receiving b's
  outputs (its input names must be b's too), else (a block no later block receives from) the input output j is
  "plus updates" of. An output nothing continues is None. Where the pairing is ambiguous or absent, a ValueError
  names `block_io`, the override that states it.
- **Image stream**: among the block outputs the model's output sample derives from, keep those of chains whose
  slot continues an input and drop blocks upstream of another one (conditioning); exactly one must remain: the
  last block's image output. Walking back, a block's image input carries the previous block's image output, as
  long as that input continues it (a slice of a cat: the part it covers); the stream starts where an input does
  not (it comes from the model inputs, or is packed by index ops from several sources).
- **Stacks**: the lists on the image chain, and chains of two or more blocks off it (text refiners:
  `BlockSpec.image` is -1), in execution order.
- **CFG arguments**: the call's inputs (positionals bound to parameter names) that are tensors of dim > 0 whose
  leading dim is the batch of the output sample (a tensor, a tuple's first item, `.sample`; a list of per-sample
  tensors counts its length).

Observe an eager call: dynamo would trace the mode.
"""

from __future__ import annotations

import inspect
import re
import weakref
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["BlockSpec", "Structure", "Observer"]


@dataclass
class BlockSpec:
    name: str  # module path, e.g. "transformer_blocks.0"
    module: torch.nn.Module
    stack: str  # the ModuleList path, e.g. "transformer_blocks"
    index: int  # position in its stack
    kind: str  # "temporal" when the stack's attribute name contains "temporal", else "spatial" (a label only)
    io: tuple  # per output slot: the input name it continues, or None (output None or not continued)
    tuple_out: bool
    image: int  # index into io of the image stream


@dataclass
class Structure:
    blocks: list  # list[BlockSpec], in execution order
    stacks: list  # list[str], in execution order of their first block
    image_stream: str  # input name of the image stream in the (first) blocks
    cfg_args: tuple  # the call's inputs whose leading dim equals the sample's batch
    batch: int

    def describe(self) -> dict:
        streams = {}
        for b in self.blocks:
            streams.setdefault(b.stack, tuple(b.io))
        return {"stacks": list(self.stacks), "blocks": len(self.blocks),
                "blocks_per_stack": {s: sum(b.stack == s for b in self.blocks) for s in self.stacks},
                "streams": streams, "image_stream": self.image_stream, "cfg_args": list(self.cfg_args),
                "image_stacks": [s for s in self.stacks if any(b.stack == s and b.image >= 0 for b in self.blocks)]}


def _sample(out):
    """The sample of a model output: a tensor, a tuple's first item or `.sample`; a list of per-sample tensors."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, list) and out and all(isinstance(t, torch.Tensor) for t in out):
        return out
    if isinstance(out, tuple) and out and isinstance(out[0], (torch.Tensor, list)):
        return _sample(out[0])
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor) or (isinstance(sample, list) and sample):
        return _sample(sample)
    raise TypeError(f"fastercache: cannot find the sample in a model output of type {type(out).__name__}")


def _tensors(x):
    """The tensors among a function's arguments (one level into lists and tuples: torch.cat's list)."""
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            if isinstance(v, torch.Tensor):
                yield v


# Ops that act per position along every dim but (at most) the last ones: a cat's ranges survive them.
_POINTWISE = {"add", "sub", "mul", "div", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "addcmul", "gelu", "silu", "relu", "tanh", "sigmoid", "dropout", "to",
              "contiguous", "float", "half", "bfloat16", "type_as", "clone", "detach", "neg", "__neg__", "exp",
              "clip", "clamp", "__iadd__", "__isub__", "add_", "sub_", "mul_", "__imul__"}
_POINTWISE |= {"pow", "__pow__", "rsqrt", "sqrt", "square", "abs", "reciprocal", "__mul__", "where", "lerp"}
_REDUCE = {"mean", "sum", "amax", "amin", "var", "std", "norm", "logsumexp"}
# Functions whose outputs take only the dtype, device or shape of their inputs, none of their values.
_FRESH = {"new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "zeros_like", "ones_like", "empty_like",
          "full_like", "rand_like", "randn_like", "randint_like", "size", "dim"}
_SPLITS = {"split", "split_with_sizes", "chunk", "tensor_split", "unbind"}
_CATS = {"cat", "concat", "concatenate"}
_SCALE = {"mul", "__mul__", "__rmul__", "mul_", "__imul__"}
# The ops through which a value stays "input n plus updates" (the residual rule): additions, layout, and scaling by
# a broadcast factor (a mask or gate of fewer elements: only the operand of the output's full shape continues).
_RESIDUAL = {"add", "sub", "__add__", "__radd__", "__sub__", "__iadd__", "__isub__", "add_", "sub_", "view",
             "reshape", "permute", "transpose", "flatten", "unflatten", "squeeze", "unsqueeze", "contiguous", "to",
             "float", "half", "bfloat16", "type_as", "clone", "detach", "clip", "clamp", "__getitem__", "narrow",
             "movedim", "view_as", "reshape_as", "addcmul", "addcdiv", "stack", "pad_sequence", *_SCALE, *_SPLITS,
             *_CATS}


class _Table:
    """Labels of tensors, by identity (weak references: no tensor is kept alive, a reused id is not confused)."""

    def __init__(self):
        self.d = {}  # id -> (weakref, frozenset of labels, (dim, [(start, end, labels)]) or None)

    def get(self, t):
        e = self.d.get(id(t))
        if e is None or e[0]() is not t:
            return frozenset(), None
        return e[1], e[2]

    def set(self, t, labels, segs=None):
        try:
            self.d[id(t)] = (weakref.ref(t), frozenset(labels), segs)
        except TypeError:  # not weak-referenceable
            pass

    def add(self, t, labels):
        self.set(t, self.get(t)[0] | frozenset(labels))


def _place(idx: tuple, dim: int, size: int):
    """Where an index puts dim `dim` (of `size`): (its position in the result, None, None) when it keeps it whole,
    (its position or None where an int drops it, lo, hi) when it takes the positions [lo, hi) of it; None when the
    index is not ints and slices."""
    shift = 0
    for k, i in enumerate(idx):
        if isinstance(i, bool) or not isinstance(i, (int, slice)):
            return None
        if k == dim:
            if isinstance(i, int):  # the dim is dropped
                i = i % size
                return None, i, i + 1
            if i == slice(None):
                return dim - shift, None, None
            lo, hi, step = i.indices(size)
            return (dim - shift, lo, hi) if step == 1 else None
        if isinstance(i, int):
            shift += 1
        elif i != slice(None):
            return None
    return dim - shift, None, None


def _write(table, target, idx, labels):
    """`target[idx] = value` with the value's labels: the written range of target's first sliced dim gets them."""
    old, segs = table.get(target)
    idx = idx if isinstance(idx, tuple) else (idx,)
    d = next((k for k, i in enumerate(idx) if not (isinstance(i, int) and not isinstance(i, bool))), None)
    if d is None or d >= target.dim() or not isinstance(idx[d], slice) or (segs is not None and segs[0] != d):
        table.set(target, old | labels)
        return
    n = target.shape[d]
    lo, hi, step = idx[d].indices(n)
    if step != 1 or lo >= hi:
        table.set(target, old | labels)
        return
    ranges = list(segs[1]) if segs is not None else [(0, n, old)]
    cut = sorted({0, n, lo, hi, *(a for a, _, _ in ranges), *(e for _, e, _ in ranges)})
    out = []
    for a, e in zip(cut, cut[1:]):
        lab = frozenset().union(*(lb for s0, e0, lb in ranges if s0 <= a and e <= e0))
        out.append((a, e, lab | labels if lo <= a and e <= hi else lab))
    table.set(target, old | labels, (d, out))


def _inplace(name):
    return name == "__setitem__" or name.startswith("__i") or (name.endswith("_") and not name.endswith("__"))


class _Provenance(TorchFunctionMode):
    """Two label tables (see the module docstring): `prov`, the block outputs a tensor derives from through any op;
    `res`, the block inputs a tensor is "plus updates" of (additions and layout ops only). Changes no result."""

    def __init__(self):
        super().__init__()
        self.prov, self.res = _Table(), _Table()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if torch.compiler.is_compiling():  # a region the model compiles itself (flex_attention): not followed
            return out
        ins = [t for a in (*args, *kwargs.values()) for t in _tensors(a)]
        if not ins:
            return out
        name = getattr(func, "__name__", "")
        if name in _FRESH:
            return out
        for table in (self.prov, self.res):
            if table is self.res and name not in _RESIDUAL and name != "__setitem__":
                continue
            operands = ins
            if table is self.res and name in ("addcmul", "addcdiv"):
                operands = ins[:1]
            elif table is self.res and name in _SCALE:  # x * mask[..., None]: scaled by a broadcast factor
                operands = [t for t in ins if isinstance(out, torch.Tensor) and t.shape == out.shape]
            got = [(t, *table.get(t)) for t in operands]
            got = [g for g in got if g[1]]
            if not got:
                continue
            labels = frozenset().union(*(g[1] for g in got))
            if name == "__setitem__" and len(args) == 3 and isinstance(args[0], torch.Tensor):
                if args[2] is not args[0]:
                    _write(table, args[0], args[1], frozenset().union(*(g[1] for g in got if g[0] is not args[0])))
                continue
            if args and _inplace(name) and isinstance(args[0], torch.Tensor):
                table.add(args[0], labels)  # written in place: the target now carries the inputs' labels too
            outs = list(_tensors(out))
            if not outs or (args and outs[0] is args[0] and _inplace(name)):
                continue
            segs = _segments(table, name, args, kwargs, got, out)
            if isinstance(segs, list):  # one (labels, ranges) per piece of a split
                for o, (lab, sg) in zip(outs, segs):
                    table.set(o, lab, sg)
            elif isinstance(segs, _Cut):
                for o in outs:
                    table.set(o, segs.labels, segs.segs)
            else:
                for o in outs:
                    table.set(o, labels, segs)
        return out


@dataclass
class _Cut:
    """A slice of a cat: the labels of the ranges it covers, and those ranges (shifted), or None."""

    labels: frozenset
    segs: tuple | None


def _segments(table, name, args, kwargs, got, out):
    """Ranges of a concatenation: None (the plain union), (dim, [(start, end, labels)]) for a cat or an op that keeps
    a cat's ranges, a frozenset for a slice of one, a list of frozensets for a split of one."""
    if name in _CATS and isinstance(out, torch.Tensor) and out.dim():
        parts = args[0] if args else kwargs.get("tensors")
        dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % out.dim()
        ranges, start = [], 0
        for t in parts:
            n = t.shape[dim] if t.dim() > dim else 0
            lab, sg = table.get(t)
            if sg is not None and sg[0] == dim and t.dim() == out.dim():  # a cat of a cat: keep its ranges
                ranges.extend((start + a, start + e, lb) for a, e, lb in sg[1])
            else:
                ranges.append((start, start + n, lab))
            start += n
        return dim, ranges
    if name in ("stack", "pad_sequence") and isinstance(out, torch.Tensor):
        return _stacked(table, name, args, kwargs, out)
    segd = [g for g in got if g[2] is not None]
    if not segd:
        return None
    src, _, (dim, ranges) = segd[0]
    if len(got) > 1:  # several labelled operands: per position along the cat dim (pointwise ops only)
        return _merge(name, got, src, dim, ranges, out)

    def within(lo, hi, d=dim):
        cut = [(max(s, lo) - lo, min(e, hi) - lo, lab) for s, e, lab in ranges if s < hi and e > lo]
        keep = d is not None and len(cut) > 1
        return _Cut(frozenset().union(*(lab for _, _, lab in cut)), (d, cut) if keep else None)

    if name == "__getitem__" and src is args[0]:
        idx = args[1] if isinstance(args[1], tuple) else (args[1],)
        place = _place(idx, dim, src.shape[dim])
        if place is None:
            return None
        d, lo, hi = place
        return (d, ranges) if lo is None else within(lo, hi, d)  # kept whole (shifted by the ints before it) or cut
    if name == "narrow" and src is args[0]:
        d = args[1] % src.dim()
        return within(args[2], args[2] + args[3]) if d == dim else None
    if name in _SPLITS and src is args[0] and isinstance(out, (tuple, list)):
        if name == "unbind":  # along another dim: each piece keeps the ranges
            d = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % src.dim()
            sg = None if d == dim else (dim - (d < dim), ranges)
            return None if sg is None else [(frozenset().union(*(lab for _, _, lab in ranges)), sg) for _ in out]
        d = (args[2] if len(args) > 2 else kwargs.get("dim", 0)) % src.dim()
        if d != dim:
            return None
        res, pos = [], 0
        for o in out:
            c = within(pos, pos + o.shape[d])
            res.append((c.labels, c.segs))
            pos += o.shape[d]
        return res
    if name in _REDUCE and isinstance(out, torch.Tensor):
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None:
            return None
        dims = {d % src.dim() for d in ((dims,) if isinstance(dims, int) else dims)}
        keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        if dim in dims:
            return None
        return (dim if keep else dim - sum(d < dim for d in dims)), ranges
    if name == "linear" and isinstance(out, torch.Tensor) and out.shape[:-1] == src.shape[:-1]:
        return (dim, ranges) if dim < src.dim() - 1 else None
    if not isinstance(out, torch.Tensor) or out.shape != src.shape:
        return None
    if name in ("layer_norm", "rms_norm"):
        shape = args[1] if len(args) > 1 else kwargs.get("normalized_shape")
        n = 1 if isinstance(shape, int) else len(shape)
        return (dim, ranges) if dim < src.dim() - n else None
    if name in _POINTWISE:
        return dim, ranges
    return None


def _stacked(table, name, args, kwargs, out):
    """A stack (or pad_sequence) of tensors with the same cat ranges (Z-Image's per-sample joint sequences) keeps
    them, one dim later when the new dim comes first; padding at the end carries nothing."""
    parts = args[0] if args else kwargs.get("tensors", kwargs.get("sequences"))
    segs = [table.get(t)[1] for t in parts]
    if not parts or any(sg is None for sg in segs):
        return None
    dim, first = segs[0]
    if any(sg[0] != dim or [(a, e) for a, e, _ in sg[1]] != [(a, e) for a, e, _ in first] for sg in segs):
        return None
    at = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) if name == "stack" else (
        0 if (args[1] if len(args) > 1 else kwargs.get("batch_first", False)) else 1)
    if name == "pad_sequence" and dim != 0:
        return None
    d = dim + 1 if at <= dim else dim
    ranges = [(a, e, frozenset().union(*(sg[1][k][2] for sg in segs))) for k, (a, e, _) in enumerate(first)]
    if ranges[-1][1] < out.shape[d]:
        ranges.append((ranges[-1][1], out.shape[d], frozenset()))
    return d, ranges


def _merge(name, got, src, dim, ranges, out):
    """A pointwise op of several labelled operands keeps the ranges of a cat when every other labelled operand
    either has the same ranges or is broadcast along that dim (its labels then reach every range)."""
    if name not in _POINTWISE or not isinstance(out, torch.Tensor):
        return None
    od = dim + out.dim() - src.dim()
    if od < 0 or out.shape[od] != src.shape[dim]:
        return None
    bounds = [(a, e) for a, e, _ in ranges]
    merged = [set(lab) for _, _, lab in ranges]
    for t, labs, segs in got:
        if t is src:
            continue
        k = od - (out.dim() - t.dim())
        if segs is not None and segs[0] == k and [(a, e) for a, e, _ in segs[1]] == bounds:
            for m, (_, _, lab) in zip(merged, segs[1]):
                m |= lab
        elif k < 0 or t.shape[k] == 1:
            for m in merged:
                m |= labs
        else:
            return None
    return od, [(a, e, frozenset(m)) for (a, e), m in zip(bounds, merged)]


def _params(fn):
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []


def _named(fn, args, kwargs) -> dict:
    """name -> value of a call's inputs: positionals bound to parameter names, keywords (and **kwargs) as named."""
    out, params = {}, _params(fn)
    pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var = next((p for p in params if p.kind == p.VAR_POSITIONAL), None)
    for i, a in enumerate(args):
        if i < len(pos):
            out[pos[i].name] = a
        else:
            out[f"{var.name if var else 'args'}[{i - len(pos)}]"] = a
    out.update(kwargs)
    return out


@dataclass(eq=False)
class _Call:
    name: str
    module: torch.nn.Module
    parent: str
    order: int
    depth: int
    ins: dict = field(default_factory=dict)  # tensor input name -> (id, labels, cat ranges or None)
    params: frozenset = frozenset()
    outs: tuple = ()  # per output slot: id of the tensor or None
    tuple_out: bool = False
    cont: tuple = ()  # per output slot: the inputs it is "plus updates" of (the residual rule)
    parts: dict = field(default_factory=dict)  # output slot -> labels of each range of the cat it continues
    carries: dict = field(default_factory=dict)  # tensor input name -> the block outputs (name, slot) it continues
    done: bool = False

    def residual(self) -> bool:
        """Some output is one of its inputs plus updates (not the input itself: Dropout in eval passes it on)."""
        ids = {i for i, _, _ in self.ins.values()}
        return any(names and o is not None and o not in ids for names, o in zip(self.cont, self.outs))


class Observer:
    """Context manager: forward pre-hooks (with kwargs) and forward hooks on the candidate blocks (every child of
    every torch.nn.ModuleList in the model, or the modules named by `blocks`) and a provenance mode (see the module
    docstring), installed on __enter__ and removed on __exit__; the model is left as it was. It never calls the
    model or any module itself: make one model call inside the `with`, then call `structure(args, kwargs, out)`.

    Overrides (an adapter's fields): `blocks`, regular expressions (re.search) naming the blocks (then those are
    the blocks, outermost match first, and their parent modules the stacks); `block_io`, the input names a
    block's outputs continue, in output order (replaces the observed pairing).
    """

    def __init__(self, model, *, blocks=None, block_io=None):
        self.model = model
        self.blocks = None if blocks is None else ((blocks,) if isinstance(blocks, str) else tuple(blocks))
        self.block_io = None if block_io is None else ((block_io,) if isinstance(block_io, str) else tuple(block_io))
        self._handles, self._mode, self._calls, self._open = [], None, [], []

    # -- hooks ------------------------------------------------------------------------------------------------
    def _candidates(self):
        if self.blocks is not None:
            found = []
            for name, mod in self.model.named_modules():
                if not name or any(name.startswith(f + ".") for f, _, _ in found):
                    continue
                if any(re.search(p, name) for p in self.blocks):
                    found.append((name, mod, name.rpartition(".")[0]))
            return found
        out = []
        for lname, lst in self.model.named_modules():
            if isinstance(lst, torch.nn.ModuleList):
                for cname, child in lst.named_children():
                    out.append((f"{lname}.{cname}" if lname else cname, child, lname))
        return out

    def __enter__(self) -> Observer:
        self._calls, self._open = [], []
        for name, mod, parent in self._candidates():
            self._handles.append(mod.register_forward_pre_hook(self._pre(name, mod, parent), with_kwargs=True))
            self._handles.append(mod.register_forward_hook(self._post(), with_kwargs=True, always_call=True))
        self._mode = _Provenance()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        mode, self._mode = self._mode, None
        if mode is not None:
            mode.__exit__(*exc)
            self._prov = mode.prov
        for h in self._handles:
            h.remove()
        self._handles = []
        return False

    def _pre(self, name, mod, parent):
        def hook(module, args, kwargs):
            c = _Call(name, mod, parent, len(self._calls), len(self._open))
            c.params = frozenset(p.name for p in _params(mod.forward))
            for n, v in _named(mod.forward, args, kwargs).items():
                if isinstance(v, torch.Tensor):
                    c.ins[n] = (id(v), *self._mode.prov.get(v))
                    c.carries[n] = {lab[1:] for lab in self._mode.res.get(v)[0] if lab[0] == "out"}
                    self._mode.res.add(v, {(name, n)})
            self._calls.append(c)
            self._open.append(c)
            return None
        return hook

    def _post(self):
        def hook(module, args, kwargs, output):
            c = next((c for c in reversed(self._open) if c.module is module), None)
            if c is None or self._mode is None:
                return None
            self._open.remove(c)
            c.done = True
            c.tuple_out = isinstance(output, tuple)
            outs = output if c.tuple_out else (output,)
            c.outs = tuple(id(o) if isinstance(o, torch.Tensor) else None for o in outs)
            c.cont = tuple(tuple(sorted(n for b, n, *_ in self._mode.res.get(o)[0] if b == c.name))
                           if isinstance(o, torch.Tensor) else () for o in outs)
            for j, o in enumerate(outs):
                if not isinstance(o, torch.Tensor):
                    continue
                segs = None
                if len(c.cont[j]) == 1:  # the input continued was a cat: its ranges keep their positions
                    _, _, ranges = c.ins[c.cont[j][0]]
                    if ranges is not None and o.dim() > ranges[0] and o.shape[ranges[0]] == ranges[1][-1][1]:
                        c.parts[j] = [lab for _, _, lab in ranges[1]]
                        segs = (ranges[0], [(a, e, {(c.name, j, k)}) for k, (a, e, _) in enumerate(ranges[1])])
                self._mode.prov.set(o, {(c.name, j)}, segs)
                self._mode.res.add(o, {("out", c.name, j)})  # added: an outer block's labels on it stay
            return None
        return hook

    # -- reading the structure --------------------------------------------------------------------------------
    def structure(self, args: tuple, kwargs: dict, output) -> Structure:
        sample = _sample(output)
        if isinstance(sample, list):  # one tensor per sample (Z-Image)
            batch = len(sample)
        else:
            batch = int(sample.shape[0]) if sample.dim() else 1
        named = _named(self.model.forward, tuple(args), dict(kwargs))
        if "kwargs" in named and isinstance(named.get("kwargs"), dict):
            named.update(named.pop("kwargs"))
        cfg = tuple(n for n, v in named.items()
                    if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch)
        top = [c for c in self._calls if c.done]
        if self.blocks is None:
            top = [c for c in top if c.depth == 0]
        if not top:
            raise ValueError("fastercache: no block ran in the observed call (no child of a torch.nn.ModuleList, "
                             "or none named by `blocks`): set the adapter's `blocks`")
        runs = {}
        for c in top:
            runs.setdefault(c.name, []).append(c)
        once = {n: cs[0] for n, cs in runs.items() if len(cs) == 1}
        lists = {}
        for c in top:
            if c.name in once:
                lists.setdefault(c.parent, []).append(c)
        self._feed = {c.name: {lab[0] for _, labs, _ in c.ins.values() for lab in labs} for c in top}
        # a block carries a stream: some output is one of its inputs plus updates (an MLP's layers are not blocks)
        chained = {p for p, m in lists.items() if self.blocks is not None or (
            any(c.residual() for c in m) and all(self._reaches(a, b) for a, b in zip(m, m[1:])))}
        usable = {c.name for p in chained for c in lists[p]}
        io = {}
        for p in chained:
            for k, c in enumerate(lists[p]):
                io[c.name] = self._pair(c, lists[p], k, top, io)
        self._io = io

        # the image chain, walking back from the output sample
        out_labels = frozenset().union(*map(self._labels_of, sample if isinstance(sample, list) else [sample]))
        labels = self._pick(out_labels, usable, "the model output")
        chain = []
        while True:
            (name, slot, part) = labels
            c = once[name]
            pairing = io[c.name]
            if isinstance(pairing, Exception):
                raise pairing
            n = pairing[slot] if slot < len(pairing) else None
            if n is None:
                raise ValueError(f"fastercache: block {c.name!r}: its output {slot} reaches the model output but "
                                 "continues none of its inputs; set the adapter's `block_io`")
            chain.append((c, slot))
            prev = c.parts[slot][part] if part is not None else c.ins.get(n, (0, frozenset(), None))[1]
            # the stream starts here unless the input is a block output plus updates, through layout ops
            if not any(lab[0] in usable for lab in prev) or not any(b in usable for b, _ in c.carries.get(n, ())):
                break
            labels = self._pick(prev, usable, f"input {n!r} of block {c.name!r}")
        chain.reverse()
        image = {c.name: slot for c, slot in chain}
        stacks = {c.parent for c, _ in chain}
        for p in stacks:
            if any(c.name not in image for c in lists[p]):
                raise ValueError(f"fastercache: some children of {p!r} carry the image stream, others do not; set "
                                 "the adapter's `blocks`")
        # lists of two or more chained blocks off the image chain (text refiners) are stacks too
        stacks |= {p for p in chained if len(lists[p]) > 1}
        order = sorted(stacks, key=lambda p: lists[p][0].order)
        blocks = []
        for p in order:
            attr = p.rpartition(".")[2]
            for k, c in enumerate(lists[p]):
                if isinstance(io[c.name], Exception):
                    raise io[c.name]
                blocks.append(BlockSpec(name=c.name, module=c.module, stack=p, index=k,
                                        kind="temporal" if "temporal" in attr else "spatial", io=io[c.name],
                                        tuple_out=c.tuple_out, image=image.get(c.name, -1)))
        blocks.sort(key=lambda b: once[b.name].order)
        first = chain[0]
        return Structure(blocks=blocks, stacks=order, image_stream=io[first[0].name][first[1]], cfg_args=cfg,
                         batch=batch)

    def _reaches(self, a: _Call, b: _Call) -> bool:
        """Whether b derives from a's outputs through blocks that ran between them (Latte's interleaved lists)."""
        seen, todo = set(), [b.name]
        between = {c.name for c in self._calls if a.order <= c.order <= b.order}
        while todo:
            x = todo.pop()
            for y in self._feed.get(x, ()):
                if y == a.name:
                    return True
                if y in between and y not in seen:
                    seen.add(y)
                    todo.append(y)
        return False

    def _pick(self, labels, usable, where):
        """The one (block, slot, part) among `labels`: blocks of lists that are not chains of blocks and outputs
        that continue no input dropped, then blocks that feed another one of them (conditioning upstream of the
        stream)."""
        io = self._io
        labs = {lab for lab in labels if lab[0] in usable}
        # only a stream (an output that continues an input) can carry the image: not a skip or hint output
        labs = {lab for lab in labs if isinstance(io[lab[0]], Exception) or (
            lab[1] < len(io[lab[0]]) and io[lab[0]][lab[1]] is not None)}
        names = {lab[0] for lab in labs}
        down = {x for x in names if not any(y != x and self._upstream(x, y) for y in names)}
        labs = {lab for lab in labs if lab[0] in down}
        keys = {(lab[0], lab[1]) for lab in labs}
        if len(keys) != 1 or len({lab[2] if len(lab) > 2 else None for lab in labs}) != 1:
            raise ValueError(f"fastercache: {where} derives from the block outputs {sorted(map(str, labs))}, not "
                             "exactly one: the image stream cannot be told from the data flow; set the adapter's "
                             "`blocks` and `block_io`")
        lab = next(iter(labs))
        return lab[0], lab[1], (lab[2] if len(lab) > 2 else None)

    def _upstream(self, x: str, y: str) -> bool:
        """Whether block y derives (through any blocks) from block x's outputs."""
        seen, todo = set(), [y]
        while todo:
            for z in self._feed.get(todo.pop(), ()):
                if z == x:
                    return True
                if z not in seen:
                    seen.add(z)
                    todo.append(z)
        return False

    def _labels_of(self, t):
        table = self._mode.prov if self._mode is not None else getattr(self, "_prov", None)
        return table.get(t)[0] if table is not None else frozenset()

    def _pair(self, c: _Call, members, k, top, io):
        """The input names c's outputs continue (a tuple per output slot), or the ValueError that says why not."""
        if self.block_io is not None:
            if len(self.block_io) < len(c.outs):
                return ValueError(f"fastercache: block {c.name!r} returns {len(c.outs)} outputs but `block_io` "
                                  f"names {list(self.block_io)}: set `block_io` to the inputs its outputs continue, in "
                                  "output order")
            return tuple(self.block_io[j] if o is not None else None for j, o in enumerate(c.outs))
        nxt = members[k + 1] if k + 1 < len(members) else None
        if nxt is not None and self._feeds(c, nxt):
            return self._observed(c, nxt)
        prev = members[k - 1] if k > 0 else None
        if nxt is None and prev is not None and type(prev.module) is type(c.module):
            got = io[prev.name]
            if isinstance(got, Exception):
                return got
            return tuple(got[j] if j < len(got) and o is not None else None for j, o in enumerate(c.outs))
        receivers = [r for r in top if r.order > c.order and r is not c and r.done and self._feeds(c, r)]
        if receivers:
            r = receivers[0]
            pairing = self._observed(c, r)
            if isinstance(pairing, Exception):
                return pairing
            alien = [n for n in pairing if n is not None and n not in c.params]
            if alien:
                return ValueError(f"fastercache: block {c.name!r} feeds {r.name!r} (another class), whose inputs "
                                  f"{alien} are not inputs of {c.name!r}; set the adapter's `block_io`")
            return pairing
        return self._final(c)

    def _feeds(self, c: _Call, r: _Call) -> bool:
        return c.name in self._feed.get(r.name, ())

    def _observed(self, c: _Call, r: _Call):
        pairing = []
        for j, oid in enumerate(c.outs):
            if oid is None:
                pairing.append(None)
                continue
            same = [n for n, (i, _, _) in r.ins.items() if i == oid]
            derived = [n for n, (_, labs, _) in r.ins.items() if any(lab[:2] == (c.name, j) for lab in labs)]
            names = same if same else derived
            if len(names) > 1:
                return ValueError(f"fastercache: block {c.name!r}: {r.name!r} receives its output {j} as several "
                                  f"inputs {names}; set the adapter's `block_io` (the inputs its outputs continue, in "
                                  "output order)")
            pairing.append(names[0] if names else None)
        taken = [n for n in pairing if n is not None]
        if len(set(taken)) != len(taken):
            return ValueError(f"fastercache: block {c.name!r}: several outputs reach the same input {taken} of "
                              f"{r.name!r}; set the adapter's `block_io` (the inputs its outputs continue, in output "
                              "order)")
        if not taken:
            return ValueError(f"fastercache: block {c.name!r}: {r.name!r} receives none of its outputs as an input; "
                              "set the adapter's `block_io`")
        return tuple(pairing)

    def _final(self, c: _Call):
        """A block no later block receives from, without an earlier block of its class (the last block of a
        one-block list): output j continues input n when it is input n plus updates (additions and layout ops
        inside the block, e.g. Flux's single-stream block concatenates (text, image), adds its update and slices
        them apart again)."""
        pairing = []
        for j, names in enumerate(c.cont):
            if c.outs[j] is None:
                pairing.append(None)
                continue
            if len(names) > 1:
                return ValueError(f"fastercache: block {c.name!r} feeds no later block and its output {j} is "
                                  f"several inputs {list(names)} plus updates; set the adapter's `block_io`")
            pairing.append(names[0] if names else None)
        taken = [n for n in pairing if n is not None]
        if not taken or len(set(taken)) != len(taken):
            return ValueError(f"fastercache: block {c.name!r} feeds no later block and its outputs continue "
                              f"{pairing} of its inputs; set the adapter's `block_io`")
        return tuple(pairing)
