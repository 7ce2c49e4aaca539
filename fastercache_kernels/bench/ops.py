"""Benchmark cases per op: the eager formula a user would write against each available backend.

The cases live in bench/cases.py, one function per op; BENCHES, SHAPE_KIND and TENSORS_HELD are derived from
its registry. Each BENCHES entry times one op at one shape and dtype. Called with `shape=`
(a `Shape`, e.g. from SHAPES), it runs at that shape; without one it keeps its historical default (`numel`
elements or the two model latents).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .. import _backend, _ext, ops  # noqa: F401  (importing ops declares every op)
from ..ops._define import OPS
from .._backend import backend_context
from .core import Row, copy_case, measure

DTYPE_NAMES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Shape:
    """A tensor shape an op meets in a real model. kind "latent": a model output [..., H, W] (the CFG-Cache ops);
    kind "hidden": frame-major tokens [B, T*S, C] with T = `frames` (the attention and residual ops)."""

    name: str
    dims: tuple[int, ...]
    kind: str
    frames: int = 1
    note: str = ""

    @property
    def numel(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n

    def label(self) -> str:
        return f"{self.name} [{', '.join(map(str, self.dims))}]"


def _hidden(name: str, batch: int, frames: int, tokens_per_frame: int, width: int, note: str) -> Shape:
    return Shape(name, (batch, frames * tokens_per_frame, width), "hidden", frames, note)


# Latents of the reference runs (docs/algorithms.md section 3) and the token tensors their transformer blocks see:
# the CFG batch of 2, latent frames x (H/2 x W/2) patches, the model width.
SHAPES = {s.name: s for s in (
    Shape("cogvideox-2b-latent", (13, 16, 60, 90), "latent", note="CogVideoX-2B 49 frames 480x720: (T, C, H, W)"),
    Shape("latte-latent", (2, 4, 16, 64, 64), "latent", note="Latte-1 16 frames 512x512: (B, C, T, H, W)"),
    Shape("opensora-latent", (57, 4, 60, 106), "latent", note="Open-Sora 1.2 192 frames 480p: (T, C, H, W)"),
    _hidden("latte-hidden", 2, 16, 32 * 32, 1152, "Latte-XL: 16 frames x 32x32 patches, width 1152"),
    _hidden("cogvideox-2b-hidden", 2, 13, 30 * 45, 1920, "CogVideoX-2B: 13 frames x 30x45 patches, width 1920"),
    _hidden("opensora-hidden", 2, 57, 30 * 53, 1152, "Open-Sora 1.2 STDiT3: 57 frames x 30x53 patches, width 1152"),
)}
# The default set runs in a few minutes on a 2-core CPU; opensora-hidden (209M elements, 0.8 GB per fp32 tensor)
# only on request. --quick: the latents and the smallest hidden shape.
DEFAULT_SHAPES = ("cogvideox-2b-latent", "latte-latent", "opensora-latent", "latte-hidden", "cogvideox-2b-hidden")
QUICK_SHAPES = ("cogvideox-2b-latent", "latte-latent", "latte-hidden")


def custom_shapes(numel: int) -> list[Shape]:
    """One latent and one hidden shape of about `numel` elements each (small sizes for tests and quick looks)."""
    hw = max(1, int((numel / 8) ** 0.5))
    s = max(1, numel // (2 * 4 * 64))
    return [Shape(f"latent-{numel}", (2, 4, hw, hw), "latent"),
            Shape(f"hidden-{numel}", (2, 4 * s, 64), "hidden", 4)]


def fk_backends(device: torch.device) -> list[str]:
    """The compiled backends that can run on `device` (the reference is the eager formula itself)."""
    names = [b for b in ("cpu", "cuda", "triton") if _backend.why_unavailable(b, device.type) is None]
    if device.type == "cpu":  # the Triton interpreter says nothing about speed
        names = [b for b in names if b != "triton"]
    return names


def timed_backends(device: torch.device) -> tuple[list[str], dict[str, str]]:
    """(backend ids to time on `device`, {backend id: why it is not timed}). Ids: reference, cpu-baseline,
    cpu-avx2 (each build of the CPU module), cuda, triton."""
    device = torch.device(device)
    ids, skipped = ["reference"], {}
    if device.type == "cpu":
        for isa, mod in _ext.CPU_VARIANTS.items():
            why = _ext.why_not(mod)
            if isa == "avx2" and why is None and not _ext._has_avx2():
                why = "this CPU has no AVX2"
            if why is None:
                ids.append(f"cpu-{isa}")
            else:
                skipped[f"cpu-{isa}"] = why
        skipped["triton"] = ("not timed on CPU tensors: the Triton interpreter checks the kernels' results, its "
                             "speed means nothing; Triton is timed on CUDA tensors")
        skipped["cuda"] = "runs CUDA tensors only" + ("" if torch.cuda.is_available() else " (no CUDA device here)")
    else:
        for name in ("cuda", "triton"):
            why = _backend.why_unavailable(name, device.type)
            if why is None:
                ids.append(name)
            else:
                skipped[name] = why
    return ids, skipped


def _forced(backend_id: str, fn):
    def run():
        with backend_context(backend_id):
            return fn()

    return run


def fk_variants(device, variants: dict) -> dict:
    """{"fk <backend><suffix>": fn} for every timed backend and (suffix: fn) in `variants` (the reference: ""
    only)."""
    impls = {}
    for be in timed_backends(torch.device(device))[0]:
        for suffix, fn in variants.items():
            if be != "reference" or not suffix:  # the reference's variants only add a copy or a cast
                impls[f"fk {be}{suffix}"] = _forced(be, fn)
    return impls


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def case_label(shape: Shape | None, numel: int, dtype: torch.dtype, extra: str = "") -> str:
    where = shape.label() if shape is not None else str(numel)
    return f"{where} {dtype_name(dtype)}" + (f" {extra}" if extra else "")


@dataclass
class Case:
    """One benchmark case of an op, as its declaration (`bench=` in ops/<op>.py) yields it: the implementations
    timed side by side (eager formulas and "fk <backend>" variants), the bytes the op must move, the elements of
    the device copy it is held to (None: no copy ratio), the impl the "x eager" ratios are to, and optionally
    (impl, key): extra[key] = that impl's time / each row's time."""

    label: str
    impls: dict
    nbytes: int
    copy_numel: int | None
    eager: str = "eager"
    ratio_to: tuple[str, str] | None = None


# Latents of the reference runs (docs/algorithms.md section 3): CogVideoX-2B [13, 16, 60, 90] (frames, channels, H,
# W) and Open-Sora 1.2 at 192 frames 480p [57, 4, 60, 106] (as given in the task; 4 channels x 57 latent frames).
LATENTS = {"CogVideoX-2B": (13, 16, 60, 90), "Open-Sora": (57, 4, 60, 106)}


def latents(shape: Shape | None) -> list[tuple[str, tuple[int, ...]]]:
    return [(shape.label(), shape.dims)] if shape is not None else [(n, s) for n, s in LATENTS.items()]


def spec_mask(h: int, w: int, device) -> torch.Tensor:
    from ..reference.cfg_residual_split import radius, shifted_mask

    return shifted_mask(h, w, radius(h, w), device).to(torch.float32)


def motion_shape(numel: int, frames: int = 13, channels: int = 1920, batch: int = 2) -> tuple[int, int, int]:
    """[B, T*S, C] with CogVideoX-2B's width and latent frame count and about `numel` elements (CogVideoX-2B's
    full [2, 17550, 1920] is SHAPES["cogvideox-2b-hidden"])."""
    s = max(1, numel // (batch * frames * channels))
    return batch, frames * s, channels


def _with_ratio_to(rows: list[Row], name: str, key: str) -> list[Row]:
    """Adds rows[i].extra[key] = time of impl `name` / time of row i (>1: faster than `name`)."""
    base = next(r.ms for r in rows if r.impl == name)
    for r in rows:
        r.extra[key] = base / r.ms
    return rows


def cases(name: str, dtype: torch.dtype = torch.float32, device="cpu", shape: Shape | None = None,
          numel: int = 1 << 24, **kw):
    """The benchmark cases of op `name` (bench/cases.py), one at a time (a case's tensors live until the next)."""
    from .cases import CASES

    yield from CASES[name].run(dtype, torch.device(device), shape, numel, **kw)


def bench_op(name: str, numel: int | None = None, dtype: torch.dtype = torch.float32, device="cpu",
             shape: Shape | None = None, **kw) -> list[Row]:
    """Times every case of op `name` (bench/cases.py): at `shape` when given, else at the op's
    default size (`numel` elements or the two model latents). `kw`: the timing options of core.measure, and any
    extra parameter of the op's cases (residual_sum's `count`)."""
    timing = {k: kw.pop(k) for k in ("warmup", "repeat", "min_seconds") if k in kw}
    device = torch.device(device)
    rows = []
    for c in cases(name, dtype, device, shape, 1 << 24 if numel is None else numel, **kw):
        copy = copy_case(c.copy_numel, dtype, device) if c.copy_numel else None
        r = measure(name, c.label, c.impls, c.nbytes, device, copy, eager=c.eager, **timing)
        rows += _with_ratio_to(r, *c.ratio_to) if c.ratio_to else r
    return rows


# From bench/cases.py, in declaration order: every op with benchmark cases, the kind of shapes it meets in a model,
# and the shape-sized tensors each case holds at once (the CLI skips a case that would not fit --max-gb).
from .cases import CASES  # noqa: E402  (it imports this module's helpers inside its functions)

BENCHES = {name: functools.partial(bench_op, name) for name in OPS if name in CASES}
SHAPE_KIND = {name: CASES[name].kind for name in BENCHES}
TENSORS_HELD = {name: CASES[name].tensors for name in BENCHES}


