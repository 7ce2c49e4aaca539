"""Benchmark cases per op: the eager formula a user would write against each available backend.

Each BENCHES entry times one op at one shape and dtype. Called with `shape=` (a `Shape`, e.g. from SHAPES), it
runs at that shape; without one it keeps its historical default (`numel` elements or the two model latents).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _backend, _ext, ops
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


def _fk(impls: dict, device, variants: dict) -> dict:
    """Adds "fk <backend><suffix>" for every timed backend and (suffix: fn) in `variants` (the reference: "" only)."""
    for be in timed_backends(device)[0]:
        for suffix, fn in variants.items():
            if be != "reference" or not suffix:  # the reference's variants only add a copy or a cast
                impls[f"fk {be}{suffix}"] = _forced(be, fn)
    return impls


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _case(shape: Shape | None, numel: int, dtype: torch.dtype, extra: str = "") -> str:
    where = shape.label() if shape is not None else str(numel)
    return f"{where} {_dtype_name(dtype)}" + (f" {extra}" if extra else "")


def bench_extrapolate(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu",
                      shape: Shape | None = None, **kw) -> list[Row]:
    device = torch.device(device)
    dims = shape.dims if shape is not None else (numel,)
    newer = torch.randn(dims, device=device).to(dtype)
    older = torch.randn(dims, device=device).to(dtype)
    out = torch.empty_like(newer)
    tmp = torch.empty_like(newer)
    w = torch.tensor(0.3, device=device)

    def eager_out():  # the same formula without temporaries
        torch.sub(newer, older, out=tmp)
        tmp.mul_(w)
        tmp.add_(newer)

    impls = {"eager": lambda: newer + w * (newer - older), "eager (in place)": eager_out}
    _fk(impls, device, {"": lambda: ops.extrapolate(newer, older, w),
                        " out=": lambda: ops.extrapolate(newer, older, w, out=out)})
    n = newer.numel()
    copy = copy_case(n, dtype, device)
    return measure("extrapolate", _case(shape, n, dtype), impls, 3 * n * newer.element_size(), device, copy, **kw)


BENCHES = {"extrapolate": bench_extrapolate}


# Reductions: bytes are what the op must move (each input read once; residual_diff_update also writes the cache).
def bench_feature_diff(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu",
                       shape: Shape | None = None, **kw) -> list[Row]:
    device = torch.device(device)
    dims = shape.dims if shape is not None else (numel,)
    a = torch.randn(dims, device=device).to(dtype)
    b = torch.randn(dims, device=device).to(dtype)
    impls = {"eager": lambda: (a - b).abs().sum() / b.abs().sum()}
    _fk(impls, device, {"": lambda: ops.feature_diff(a, b, "rel_l1")})
    n = a.numel()
    copy = copy_case(n, dtype, device)
    return measure("feature_diff", _case(shape, n, dtype, "rel_l1"), impls, 2 * n * a.element_size(), device, copy,
                   **kw)


def bench_residual_diff_update(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu",
                               shape: Shape | None = None, **kw) -> list[Row]:
    device = torch.device(device)
    dims = shape.dims if shape is not None else (numel,)
    x = torch.randn(dims, device=device).to(dtype)
    y = torch.randn(dims, device=device).to(dtype)
    cache = torch.randn(dims, device=device).to(dtype)

    def eager():  # what First-Block-Cache implementations write
        r = y - x
        d = (r - cache).abs().sum() / cache.abs().sum()
        cache.copy_(r)
        return d

    impls = {"eager": eager}
    _fk(impls, device, {"": lambda: ops.residual_diff_update(y, x, cache, "rel_l1")})
    n = x.numel()
    nbytes = 4 * n * x.element_size()  # output, input and cache read, cache written
    copy = copy_case(n, dtype, device)
    return measure("residual_diff_update", _case(shape, n, dtype, "rel_l1"), impls, nbytes, device, copy, **kw)


def motion_shape(numel: int, frames: int = 13, channels: int = 1920, batch: int = 2) -> tuple[int, int, int]:
    """[B, T*S, C] with CogVideoX-2B's width and latent frame count and about `numel` elements (CogVideoX-2B's
    full [2, 17550, 1920] is SHAPES["cogvideox-2b-hidden"])."""
    s = max(1, numel // (batch * frames * channels))
    return batch, frames * s, channels


def bench_motion_score(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu",
                       shape: Shape | None = None, **kw) -> list[Row]:
    device = torch.device(device)
    if shape is not None:
        (b, n, c), t = shape.dims, shape.frames
    else:
        (b, n, c), t = motion_shape(numel), 13
    s = n // t
    p = torch.randn(b, n, c, device=device).to(dtype)
    # docs/algorithms.md section 4, as AdaCache's reference code computes it
    impls = {"eager": lambda: (p[:, s:] - p[:, :-s]).abs().sum() / (p[:, s:].abs().sum() + p[:, :-s].abs().sum())}
    _fk(impls, device, {"": lambda: ops.motion_score(p, t, (1,))})
    nbytes = p.numel() * p.element_size()
    copy = copy_case(p.numel(), dtype, device)
    case = _case(shape, 0, dtype, f"T={t}") if shape is not None else f"[{b}, {n}, {c}] {_dtype_name(dtype)} T={t}"
    return measure("motion_score", case, impls, nbytes, device, copy, **kw)


BENCHES.update(feature_diff=bench_feature_diff, residual_diff_update=bench_residual_diff_update,
               motion_score=bench_motion_score)

# ---- CFG-Cache, extrapolate_residual, residual_sum -----------------------------------------------------------------

# Latents of the reference runs (docs/algorithms.md section 3): CogVideoX-2B [13, 16, 60, 90] (frames, channels,
# H, W) and Open-Sora 1.2 at 192 frames 480p [57, 4, 60, 106] (as given in the task; 4 channels x 57 latent frames).
LATENTS = {"CogVideoX-2B": (13, 16, 60, 90), "Open-Sora": (57, 4, 60, 106)}


def _latents(shape: Shape | None) -> list[tuple[str, tuple[int, ...]]]:
    return [(shape.label(), shape.dims)] if shape is not None else [(n, s) for n, s in LATENTS.items()]


def _spec_mask(h: int, w: int, device) -> torch.Tensor:
    from ..reference.cfg_residual_split import radius, shifted_mask

    return shifted_mask(h, w, radius(h, w), device).to(torch.float32)


def _with_ratio_to(rows: list[Row], name: str, key: str) -> list[Row]:
    """Adds rows[i].extra[key] = time of impl `name` / time of row i (>1: faster than `name`)."""
    base = next(r.ms for r in rows if r.impl == name)
    for r in rows:
        r.extra[key] = base / r.ms
    return rows


def bench_cfg_recombine_guided(numel=None, dtype: torch.dtype = torch.float32, device="cpu",
                               shape: Shape | None = None, **kw) -> list[Row]:
    """The guided output of a CFG skip call at a latent (default: the two model latents; `numel` is not used):
    the reference FFT path of docs/algorithms.md section 2 (fft2 + shifts + masks of the computed branch, the stored
    complex deltas, ifft2, then uncond + s * (cond - uncond)), the eager linear formula, and the fused op.
    extra["x spec path"] holds the ratio to the FFT path."""
    device = torch.device(device)
    rows = []
    for name, dims in _latents(shape):
        g = torch.Generator(device="cpu").manual_seed(0)
        cond = torch.randn(dims, generator=g).to(device=device, dtype=dtype)
        low, high = (torch.randn(dims, generator=g).to(device=device, dtype=dtype) for _ in range(2))
        a, b, s = (torch.tensor(v, device=device) for v in (1.1, 1.15, 6.0))
        h, w = dims[-2:]
        m = _spec_mask(h, w, device)
        d_lf = torch.fft.fftshift(torch.fft.fft2(low.float())) * m  # complex deltas as the reference stores them
        d_hf = torch.fft.fftshift(torch.fft.fft2(high.float())) * (1 - m)
        out = torch.empty_like(cond)

        def spec_path():
            spec = torch.fft.fftshift(torch.fft.fft2(cond.float()))
            uncond = torch.fft.ifft2(torch.fft.ifftshift(spec * m + a * d_lf + spec * (1 - m) + b * d_hf)).real
            return (uncond + s * (cond.float() - uncond)).to(dtype)

        impls = {"spec FFT path": spec_path, "eager": lambda: cond + (1 - s) * (a * low + b * high)}
        _fk(impls, device, {"": lambda: ops.cfg_recombine_guided(cond, low, high, a, b, s),
                            " out=": lambda: ops.cfg_recombine_guided(cond, low, high, a, b, s, out=out)})
        n = cond.numel()
        copy = copy_case(n, dtype, device)
        case = f"{name} {_dtype_name(dtype)}" if shape is not None else f"{name} {'x'.join(map(str, dims))} " \
            f"{_dtype_name(dtype)}"
        rows += _with_ratio_to(measure("cfg_recombine_guided", case, impls, 4 * n * cond.element_size(),
                                       device, copy, **kw), "spec FFT path", "x spec path")
    return rows


def bench_cfg_recombine(numel=None, dtype: torch.dtype = torch.float32, device="cpu", shape: Shape | None = None,
                        **kw) -> list[Row]:
    """other = computed + a * low + b * high at a latent (default: the two model latents; `numel` is not used),
    against the eager formula; also with bf16 low/high next to an fp32 computed (a cache stored at half the
    size)."""
    device = torch.device(device)
    rows = []
    for name, dims in _latents(shape):
        for delta_dtype in dict.fromkeys([dtype, torch.bfloat16]):
            g = torch.Generator(device="cpu").manual_seed(0)
            c = torch.randn(dims, generator=g).to(device=device, dtype=dtype)
            low, high = (torch.randn(dims, generator=g).to(device=device, dtype=delta_dtype) for _ in range(2))
            a, b = torch.tensor(1.1, device=device), torch.tensor(1.15, device=device)
            out = torch.empty_like(c)
            impls = {"eager": lambda: c + a * low.to(dtype) + b * high.to(dtype)}
            _fk(impls, device, {"": lambda: ops.cfg_recombine(c, low, high, a, b),
                                " out=": lambda: ops.cfg_recombine(c, low, high, a, b, out=out)})
            nbytes = c.numel() * (2 * c.element_size() + 2 * low.element_size())
            copy = copy_case(c.numel(), dtype, device)
            case = f"{name} {_dtype_name(dtype)}/{_dtype_name(delta_dtype)}"
            rows += measure("cfg_recombine", case, impls, nbytes, device, copy, **kw)
    return rows


def bench_cfg_residual_split(numel=None, dtype: torch.dtype = torch.float32, device="cpu", shape: Shape | None = None,
                             **kw) -> list[Row]:
    """A full call's split at a latent (default: the two model latents; `numel` is not used): the reference
    (both branches through fftshift(fft2), both masks, complex deltas) against the fused op with the default and
    bf16 storage. Ratios are to the reference ("x eager" column); no copy ratio (the FFT is not memory-bound)."""
    device = torch.device(device)
    rows = []
    for name, dims in _latents(shape):
        g = torch.Generator(device="cpu").manual_seed(0)
        other, computed = (torch.randn(dims, generator=g).to(device=device, dtype=dtype) for _ in range(2))
        m = _spec_mask(*dims[-2:], device)

        def spec_full_call():
            s_o = torch.fft.fftshift(torch.fft.fft2(other.float()))
            s_c = torch.fft.fftshift(torch.fft.fft2(computed.float()))
            return s_o * m - s_c * m, s_o * (1 - m) - s_c * (1 - m)

        low, high = torch.empty_like(other), torch.empty_like(other)
        impls = {"spec full call": spec_full_call}
        _fk(impls, device, {
            "": lambda: ops.cfg_residual_split(other, computed),
            " bf16 storage": lambda: ops.cfg_residual_split(other, computed, storage_dtype=torch.bfloat16),
            " out=": lambda: ops.cfg_residual_split(other, computed, out=(low, high))})
        case = f"{name} {_dtype_name(dtype)}" if shape is not None else f"{name} {'x'.join(map(str, dims))} " \
            f"{_dtype_name(dtype)}"
        rows += measure("cfg_residual_split", case, impls, 4 * other.numel() * other.element_size(), device, None,
                        eager="spec full call", **kw)
    return rows


def bench_extrapolate_residual(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu",
                               shape: Shape | None = None, **kw) -> list[Row]:
    """x += gate * (newer + w * (newer - older)) in place, x [B, N, C] (default [2, N, 1152] with about `numel`
    elements) and a per-sample gate [B, 1, C], against the same in eager PyTorch (in place on x)."""
    device = torch.device(device)
    if shape is not None:
        dims = shape.dims
    else:
        dims = (2, max(1, numel // (2 * 1152)), 1152)
    x = torch.randn(dims, device=device).to(dtype)
    newer, older = (torch.randn(dims, device=device).to(dtype) for _ in range(2))
    gate = torch.randn(dims[0], 1, dims[-1], device=device).to(dtype)
    w = torch.tensor(0.3, device=device)
    impls = {"eager": lambda: x.add_(gate * (newer + w * (newer - older)))}
    _fk(impls, device, {"": lambda: ops.extrapolate_residual(x, gate, newer, older, w)})
    n = x.numel()
    copy = copy_case(n, dtype, device)
    case = _case(shape, n, dtype) if shape is not None else f"{'x'.join(map(str, dims))} {_dtype_name(dtype)}"
    return measure("extrapolate_residual", case, impls, 4 * n * x.element_size(), device, copy, **kw)


# Residuals summed on a reuse call at the named hidden shapes. AdaCache keeps 2 per block (56 for 28 blocks), but
# 58 tensors of CogVideoX-2B's hidden size are 16 GB in fp32, so the named shapes use 8; the default case keeps 56.
HIDDEN_RESIDUALS = 8


def bench_residual_sum(numel=None, dtype: torch.dtype = torch.float32, device="cpu", count: int | None = None,
                       shape: Shape | tuple = (2, 4096, 1152), **kw) -> list[Row]:
    """x + the sum of `count` residuals, against sequential eager adds (a new tensor per add, as a reuse call
    written in PyTorch does), in-place adds and, for fp16/bf16, eager adds into an fp32 accumulator (the fused op's
    accuracy: low-precision adds round once per residual). Default: 56 residuals (AdaCache: 28 blocks x 2) of
    [2, 4096, 1152] (`numel` is not used); a named Shape takes HIDDEN_RESIDUALS residuals."""
    device = torch.device(device)
    named = isinstance(shape, Shape)
    dims = shape.dims if named else tuple(shape)
    count = count if count is not None else (HIDDEN_RESIDUALS if named else 56)
    x = torch.randn(dims, device=device).to(dtype)
    res = [torch.randn(dims, device=device).to(dtype) for _ in range(count)]
    out = torch.empty_like(x)

    def eager():
        y = x
        for r in res:
            y = y + r
        return y

    def eager_inplace():
        out.copy_(x)
        for r in res:
            out.add_(r)

    def eager_fp32():  # the eager formula as accurate as the fused op
        acc = x.float()
        for r in res:
            acc += r
        return acc.to(dtype)

    impls = {"eager": eager, "eager (in place)": eager_inplace}
    if dtype != torch.float32:
        impls["eager (fp32 acc)"] = eager_fp32
    _fk(impls, device, {"": lambda: ops.residual_sum(x, res), " out=": lambda: ops.residual_sum(x, res, out=out)})
    n = x.numel()
    copy = copy_case(n, dtype, device)
    case = f"{count} x " + (_case(shape, n, dtype) if named else f"{'x'.join(map(str, dims))} {_dtype_name(dtype)}")
    return measure("residual_sum", case, impls, (count + 2) * n * x.element_size(), device, copy, **kw)


BENCHES.update({
    "cfg_recombine": bench_cfg_recombine,
    "cfg_recombine_guided": bench_cfg_recombine_guided,
    "cfg_residual_split": bench_cfg_residual_split,
    "extrapolate_residual": bench_extrapolate_residual,
    "residual_sum": bench_residual_sum,
})

# Which shapes each op meets in a model: the CFG-Cache ops work on the model output (a latent), the others on the
# token tensors inside the transformer.
SHAPE_KIND = {name: "latent" if name.startswith("cfg_") else "hidden" for name in BENCHES}

# Shape-sized tensors each case holds at once (inputs, outputs, eager temporaries, the copy's two): the CLI skips
# a case whose tensors would not fit in --max-gb.
TENSORS_HELD = {"extrapolate": 9, "feature_diff": 7, "residual_diff_update": 9, "motion_score": 6,
                "cfg_recombine": 9, "cfg_recombine_guided": 16, "cfg_residual_split": 16, "extrapolate_residual": 10,
                "residual_sum": HIDDEN_RESIDUALS + 7}
