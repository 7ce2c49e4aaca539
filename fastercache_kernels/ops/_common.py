"""Argument checks and launch plumbing shared by every op.

Checks run in both the real and the fake implementation, so bad input fails the same way in eager mode and
while torch.compile traces. Every message names the op and the argument.
"""

from __future__ import annotations

import numbers
import threading

import torch
import torch.utils._python_dispatch as _python_dispatch
from torch import Tensor

from .. import _backend, _ext

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Same table as fastercache::DType in csrc/include/fastercache/common.h.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def custom_op(name: str, *, mutates_args=(), schema: str | None = None, checked=None):
    """`torch.library.custom_op`, keeping the Python implementation so `call` can run it without the dispatcher
    (`checked`: the same without its argument check, for callers that ran it)."""

    def register(fn):
        op = torch.library.custom_op(name, mutates_args=mutates_args, schema=schema)(fn)
        params = [a.name for a in op._opoverload._schema.arguments]
        op.fk_impl = fn
        op.fk_checked = checked or fn
        op.fk_mutated = tuple(params.index(a) for a in mutates_args)
        return op

    return register


def _plain_tensors(args) -> bool:
    """Every tensor argument is a plain CPU/CUDA tensor that autograd does not track."""
    grad = torch.is_grad_enabled()
    for a in args:
        for t in a if isinstance(a, (list, tuple)) else (a,):
            if isinstance(t, Tensor) and (type(t) is not Tensor or not (t.is_cpu or t.is_cuda)  # not t.device.type:
                                          or (grad and t.requires_grad)):  # 5x slower (0.24 us vs 0.05 us)
                return False
    return True


def _arg_names(op) -> list[str]:
    names = getattr(op, "fk_names", None)
    if names is None:
        names = op.fk_names = [a.name for a in op._opoverload._schema.arguments]
    return names


def check_no_grad(op, args) -> None:
    """The ops define no backward (cache arithmetic is inference-only): an input autograd tracks, with grad mode on,
    is an error naming the argument, never a silently dropped gradient (in-place and out= forms would drop it)."""
    if not torch.is_grad_enabled():
        return
    for i, a in enumerate(args):
        for t in a if isinstance(a, (list, tuple)) else (a,):
            if isinstance(t, Tensor) and t.requires_grad:
                name = _arg_names(op)[i] if i < len(_arg_names(op)) else f"argument {i}"
                raise RuntimeError(f"{op._name if hasattr(op, '_name') else op}: `{name}` requires grad, and the "
                                   "fastercache ops define no backward: call them under torch.no_grad() (or "
                                   "torch.inference_mode()), or pass detached tensors")


def call(op, *args, checked: bool = False):
    """Runs a custom op. A plain eager call (no compile, no tracing or dispatch mode, no functorch transform, no
    profiler, no autograd-tracked input) runs the implementation directly: the dispatcher round trip costs ~20 us
    per call here (cfg_recombine_guided on [2, 4, 8, 8]: 31 us through torch.ops, 9 us direct, medians of 200),
    a fifth of a 0.1 ms fused op. Everything else goes through torch.ops, so fakes, compile and autograd's
    errors behave as registered. Mutated arguments get their version bumped, as the dispatcher would.
    `checked`: the caller ran the op's own argument check already (the public functions do, so an error names the
    argument before the schema is parsed); the direct path then skips the second one."""
    if (torch.compiler.is_compiling() or not _plain_tensors(args) or _python_dispatch._is_in_torch_dispatch_mode
            or torch._C._are_functorch_transforms_active() or torch._C._is_torch_function_mode_enabled()
            or torch.autograd.profiler._is_profiler_enabled):
        check_no_grad(op, args)
        return op(*args)
    out = (op.fk_checked if checked else op.fk_impl)(*args)
    for i in op.fk_mutated:
        torch.autograd.graph.increment_version(args[i])
    return out


_CPU = torch.device("cpu")


def direct_cpu(args):
    """The CPU module when an op call may run its launcher straight away (an op's `cpu_direct`), else None: as
    `call`'s direct path (eager, no mode or transform, no profiler, no tracked input), every tensor on the CPU, and
    the cpu backend selected. Inside a model call each Python layer skipped saves microseconds: the op layers cost
    about 90 us for a feature_diff that takes 12 us in a tight loop (docs/results.md "Host time per call")."""
    if (torch.compiler.is_compiling() or _python_dispatch._is_in_torch_dispatch_mode
            or torch._C._are_functorch_transforms_active() or torch._C._is_torch_function_mode_enabled()
            or torch.autograd.profiler._is_profiler_enabled):
        return None
    grad = torch.is_grad_enabled()
    for a in args:  # a tensor or scalar argument in one step (feature_diff's four: 1.26 -> 0.91 us a call, warm)
        if isinstance(a, Tensor):
            if type(a) is not Tensor or not a.is_cpu or (grad and a.requires_grad):
                return None
        elif isinstance(a, (list, tuple)):
            for t in a:
                if isinstance(t, Tensor) and (type(t) is not Tensor or not t.is_cpu or (grad and t.requires_grad)):
                    return None
    env = _ext._ENV
    # the selection depends on use_backend and two environment variables only (what is built does not change)
    key = None if env is None else (_backend._forced.get(), env.get(b"FASTERCACHE_BACKEND"),
                                    env.get(b"FASTERCACHE_CPU_ISA"))
    mod = _direct_modules.get(key)
    if mod is None:
        mod = _ext.cpu() if _backend.select(_CPU) == "cpu" else False
        if key is not None:
            _direct_modules[key] = mod
    if mod is False:
        return None
    key = (mod, torch.get_num_threads())
    if _omp_threads.__dict__.get("key") != key:  # follow torch's thread setting (OpenMP's is per thread: so is this)
        mod.set_num_threads(key[1])
        _omp_threads.key = key
    return mod


_omp_threads = threading.local()  # (module, thread count) this thread last gave a CPU module

_direct_modules: dict = {}  # (use_backend's, FASTERCACHE_BACKEND, FASTERCACHE_CPU_ISA) -> CPU module, or False


def _shape(t: Tensor) -> tuple:
    return tuple(t.shape)


def check_float_tensor(op: str, name: str, t) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: `{name}` must be a tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: `{name}` must be float32, float16 or bfloat16, got {t.dtype}")


def check_like(op: str, name: str, t, ref_name: str, ref: Tensor) -> None:
    """`t` must have the shape, dtype and device of `ref`."""
    check_float_tensor(op, name, t)
    if t.shape != ref.shape:
        raise ValueError(f"{op}: `{name}` has shape {_shape(t)} but `{ref_name}` has shape {_shape(ref)}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{op}: `{name}` is {t.dtype} but `{ref_name}` is {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{op}: `{name}` is on {t.device} but `{ref_name}` is on {ref.device}")


def check_scalar(op: str, name: str, s, device: torch.device) -> None:
    """A per-step scalar: a 0-d float tensor on `device` or on the CPU."""
    if not isinstance(s, Tensor):
        raise TypeError(f"{op}: `{name}` must be a 0-d tensor here, got {type(s).__name__}")
    if s.dim() != 0:
        raise ValueError(f"{op}: `{name}` must be a 0-d tensor (a per-step scalar), got shape {_shape(s)}")
    if not (s.dtype.is_floating_point or s.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{op}: `{name}` must be a float tensor, got {s.dtype}")
    if s.device != device and s.device.type != "cpu":
        raise ValueError(f"{op}: `{name}` is on {s.device} but the inputs are on {device}")


def as_scalar(op: str, name: str, value, like: Tensor) -> Tensor:
    """A Python number or 0-d tensor as a 0-d tensor (public functions call this before the custom op, so
    compiled graphs see a tensor and never specialise on its value)."""
    if not isinstance(like, Tensor):
        raise TypeError(f"{op}: the tensor arguments must be tensors, got {type(like).__name__} (before `{name}`)")
    if isinstance(value, Tensor):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float32, device=like.device)
    raise TypeError(f"{op}: `{name}` must be a Python float or a 0-d tensor, got {type(value).__name__}")


def scalar_f32(s: Tensor, device: torch.device) -> Tensor:
    """The fp32 0-d tensor on `device` whose data pointer the launchers read."""
    return s.to(device=device, dtype=torch.float32)


def dense(t: Tensor) -> Tensor:
    """`t` itself when contiguous, else a contiguous copy (every layout is computed right, the common one fast)."""
    return t if t.is_contiguous() else t.contiguous()


def _extent(t: Tensor) -> tuple[int, int]:
    """[first, last] byte addresses `t` can touch."""
    if t.numel() == 0:
        return (0, -1)
    start = t.data_ptr()
    span = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
    return start, start + (span + 1) * t.element_size() - 1


def same_view(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype


def shares_memory(a: Tensor, b: Tensor) -> bool:
    """Whether `a` and `b` may touch common bytes (their address ranges intersect)."""
    if a.device != b.device or a.numel() == 0 or b.numel() == 0:
        return False
    (a0, a1), (b0, b1) = _extent(a), _extent(b)
    return a0 <= b1 and b0 <= a1


def _overlaps(a: Tensor, b: Tensor) -> bool:
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr() or a.numel() == 0 or b.numel() == 0:
        return False
    return not (a.data_ptr() == b.data_ptr() and a.stride() == b.stride())


class writable_dense:
    """A contiguous tensor to write the result into, copied into `out` on exit when `out` is strided or
    partially overlaps an input (an exact alias of an input is fine for elementwise ops). A class, not a generator
    context manager: it runs on every op call, and the common case (`out` itself) then costs no generator."""

    __slots__ = ("out", "tmp")

    def __init__(self, out: Tensor, *inputs: Tensor):
        self.out = out
        self.tmp = None if out.is_contiguous() and not any(_overlaps(out, t) for t in inputs) else torch.empty(
            out.shape, dtype=out.dtype, device=out.device)

    def __enter__(self) -> Tensor:
        return self.out if self.tmp is None else self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.tmp is not None and exc_type is None:  # the result is complete: into `out`
            self.out.copy_(self.tmp)
        return False


def cpu_module():
    mod = _ext.cpu()
    mod.set_num_threads(torch.get_num_threads())  # follow torch's thread setting
    return mod


def cuda_stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def run_map(d, out: Tensor, inputs: list[Tensor], scalars: list[Tensor], codes: list[int] | None = None,
            reference=None, launcher: str | None = None) -> None:
    """Runs the elementwise op `out = f(inputs, scalars)` declared by `d` (an OpDef) on the selected backend.

    The launcher (`d.launcher`, or `launcher`) is op(dtype, out, *inputs, *scalars, n[, stream]) with raw
    pointers; `codes` replaces the one dtype code for launchers that read several dtypes (mixed-dtype maps).
    `reference(*inputs, *scalars)` (default `d.reference`) returns the result; Triton's `launch(out, inputs,
    scalars)` writes it.
    """
    launch = d.launch(out.device, launcher)
    if launch.backend == "reference":
        out.copy_((reference or d.reference)(*inputs, *scalars))
        return
    if out.numel() == 0:
        return
    ins = [dense(t) for t in inputs]
    sc = [scalar_f32(s, out.device) for s in scalars]
    with writable_dense(out, *inputs) as o:
        if launch.backend == "triton":
            launch.triton().launch(o, ins, sc)
            return
        ptrs = [o.data_ptr(), *(t.data_ptr() for t in ins), *(s.data_ptr() for s in sc)]
        launch(*([DTYPE_CODES[out.dtype]] if codes is None else codes), *ptrs, out.numel())
