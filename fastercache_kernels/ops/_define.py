"""One declaration per op, and the generic layer that derives everything else from it.

An op module declares `OP = define(name, schema=..., ...)` once: its schema, argument checks, fake shapes,
fp32 reference, Triton module and compiled launcher name. From that this module derives the
custom op `torch.ops.fastercache.<name>` with its fake, the out= twin `<name>_out` (schema: the op's parameters,
then the out tensors marked as written), the backend ladder (`Launch`) and the registry `OPS` (read by
bench/ops.py, whose cases live in bench/cases.py, and tests/test_layers.py).
"""

from __future__ import annotations

import importlib
import itertools
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from .. import _backend, _ext
from ._common import call, cpu_module, cuda_stream, custom_op, direct_cpu, same_view, shares_memory

OPS: dict[str, OpDef] = {}  # every declared op by name, in declaration order
_seeds = itertools.count(1)


def _params(schema: str) -> tuple[list[str], str]:
    """(["Tensor newer", ...], "Tensor") of "(Tensor newer, ...) -> Tensor"."""
    m = re.fullmatch(r"\((.*)\)\s*->\s*(.*)", schema.strip())
    if m is None:
        raise ValueError(f"not an op schema: {schema!r}")
    params = [p.strip() for p in m.group(1).split(",") if p.strip()]
    return params, m.group(2).strip()


def _schema(params: list[str], returns: str) -> str:
    """The schema string, alias sets named a<position> as torch's own schema inference names them."""
    params = [re.sub(r"^Tensor\(\w+!\)", f"Tensor(a{i}!)", p) for i, p in enumerate(params)]
    return f"({', '.join(params)}) -> {returns}"


def _written(params: list[str]) -> tuple[str, ...]:
    return tuple(p.split()[-1] for p in params if "!)" in p.split()[0])


@dataclass(eq=False)
class OpDef:
    """What an op is, given once. `check(*args)` validates the functional form's arguments (in the real and the
    fake implementation alike); `fake(*args)` returns empty results of the right shapes (also the buffers the
    functional form computes into when it has an out twin); `run_out(*args, *outs)` writes the result into
    `outs`; `compute(*args)` computes the functional form (default: fake + run_out)."""

    name: str
    schema: str
    check: Callable
    fake: Callable | None
    reference: Callable
    triton: str  # module of fastercache_kernels.triton holding `launch`
    launcher: str  # the launcher of _cpu and _cuda (csrc/include/fastercache/launchers.h)
    compute: Callable | None = None
    run_out: Callable | None = None
    out: str | None = None  # the out twin's out parameters, e.g. "Tensor(a!) out"
    out_drop: tuple[str, ...] = ()  # functional parameters the out twin does not take
    check_out: Callable | None = None  # default: check(*args, *outs)
    example: Callable | None = None  # example(device) -> a small argument tuple (layer and determinism tests)
    elementwise: bool = False  # each written element depends only on the same element of the inputs (an input
    # that is exactly the written tensor is then safe; any other overlap is copied first)
    module: str = ""
    op: object = field(default=None, repr=False)
    op_out: object = field(default=None, repr=False)
    out_keep: tuple[int, ...] = ()  # positions of the functional arguments the out twin takes
    # cpu_direct(module, *args): the functional form on the CPU module, for a call `direct_cpu` lets through (the
    # per-call ops of the cache runtimes: no dispatch, backend ladder or second check in between)
    cpu_direct: Callable | None = None

    def __call__(self, *args, out=None, checked: bool = False):
        """Runs the op (its out twin when `out` is given: a tensor, or a tuple for several outs); `checked`: the
        caller ran `check(*args)` already (see `_common.call`)."""
        if out is None:
            if self.cpu_direct is not None:
                mod = direct_cpu(args)
                if mod is not None:
                    if not checked:
                        self.check(*args)
                    return self.cpu_direct(mod, *args)
            return call(self.op, *args, checked=checked)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        call(self.op_out, *(args if not self.out_drop else [args[i] for i in self.out_keep]), *outs)
        return out

    def launch(self, device: torch.device, launcher: str | None = None) -> Launch:
        """The backend ladder of one call on `device` (see Launch)."""
        return Launch(self, device, launcher)

    def triton_module(self):
        """fastercache_kernels.triton.<module>, imported on first use (it imports triton)."""
        return importlib.import_module(f"fastercache_kernels.triton.{self.triton}")


def define(name: str, **kw) -> OpDef:
    """Declares op `name` (see OpDef) and registers `torch.ops.fastercache.<name>` (and `<name>_out`)."""
    d = OpDef(name, **kw)
    d.module = d.module or d.reference.__module__.rsplit(".", 1)[-1]  # reference/<module>.py names the op module
    params, returns = _params(d.schema)
    check, fake, compute, run_out = d.check, d.fake, d.compute, d.run_out
    written = [i for i, p in enumerate(params) if "!)" in p.split()[0]]
    if compute is None:  # the functional form: empty results, written by the out form's body
        def body(*args):
            if written:
                args = unaliased(args, written, d.elementwise)
            res = fake(*args)
            run_out(*args, *(res if isinstance(res, tuple) else (res,)))
            return res
    else:
        def body(*args):
            return compute(*unaliased(args, written, d.elementwise)) if written else compute(*args)

    def impl(*args):
        check(*args)
        return body(*args)

    d.op = custom_op(f"fastercache::{name}", mutates_args=_written(params), schema=_schema(params, returns),
                     checked=body)(impl)

    @d.op.register_fake
    def _(*args):
        check(*args)
        return None if fake is None else fake(*args)

    if d.out is not None:
        d.out_keep = tuple(i for i, p in enumerate(params) if p.split()[-1] not in d.out_drop)
        out_params = [p for p in params if p.split()[-1] not in d.out_drop] + [p.strip() for p in d.out.split(",")]
        check_out = d.check_out or check

        written_out = [i for i, p in enumerate(out_params) if "!)" in p.split()[0]]

        def impl_out(*args):
            check_out(*args)
            run_out(*unaliased(args, written_out, d.elementwise))

        schema = _schema(out_params, "()")
        d.op_out = custom_op(f"fastercache::{name}_out", mutates_args=_written(out_params), schema=schema)(impl_out)
        d.op_out.register_fake(lambda *args: check_out(*args))
    OPS[name] = d
    return d


def unaliased(args, written: list[int], elementwise: bool):
    """`args` with every read-only tensor that overlaps a written one replaced by a copy (an exact alias of a
    written tensor is kept for elementwise ops), so a kernel never reads what it has already overwritten (e.g.
    forecast's x as a shifted view of out). Real tensors only: the fakes never write."""
    outs = [args[i] for i in written if isinstance(args[i], torch.Tensor)]
    if not outs:
        return args
    fixed = None
    for i, a in enumerate(args):
        if i in written:
            continue
        items = a if isinstance(a, (list, tuple)) else (a,)
        new = [t.clone() if isinstance(t, torch.Tensor) and any(
            shares_memory(t, o) and not (elementwise and same_view(t, o)) for o in outs) else t for t in items]
        if any(n is not t for n, t in zip(new, items)):
            fixed = fixed or list(args)
            fixed[i] = type(a)(new) if isinstance(a, (list, tuple)) else new[0]
    return args if fixed is None else tuple(fixed)


def _randn(device, *shape: int) -> torch.Tensor:
    """Normal values for the declarations' examples, drawn on the CPU from a fresh seed per call (so two inputs
    of one example differ) and moved to `device`."""
    g = torch.Generator().manual_seed(next(_seeds))
    return torch.randn(shape, generator=g).to(device)


class Launch:
    """The backend ladder of one call: `backend` is the one selected for `device` (reference, triton, cpu or
    cuda); for the compiled ones, calling the Launch runs the op's launcher in _cpu, or in _cuda on the current
    stream of `device` with its CUDA-only arguments (`cuda=`: a workspace) before the stream."""

    __slots__ = ("backend", "device", "name", "d", "_keep")

    def __init__(self, d: OpDef, device: torch.device, launcher: str | None = None):
        self.backend = _backend.select(device)
        self.device = device
        self.name = launcher or d.launcher
        self.d = d

    @property
    def compiled(self) -> bool:
        return self.backend in ("cpu", "cuda")

    def triton(self):
        """The op's Triton module (its `launch` and workspace sizes)."""
        return self.d.triton_module()

    def cuda_workspace(self, query: str, *sizes) -> tuple:
        """`cuda=` of a reduction: (pointer,) of a new fp32 device workspace of _cuda.<query>(*sizes) floats on
        the cuda backend (the partials of its blocks), () on the others."""
        if self.backend != "cuda":
            return ()
        from ._reduce import workspace

        ws = workspace(getattr(_ext.cuda(), query)(*sizes), self.device)
        self._keep = ws  # alive until the launch is queued (the caching allocator then reuses it in stream order)
        return (ws.data_ptr(),)

    def __call__(self, *args, cuda=()):
        if self.backend == "cpu":
            return getattr(cpu_module(), self.name)(*args)
        with torch.cuda.device(self.device):
            return getattr(_ext.cuda(), self.name)(*args, *cuda, cuda_stream(self.device))
