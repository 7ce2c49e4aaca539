"""Benchmark cases per op: the eager formula a user would write against each available backend."""

from __future__ import annotations

import torch

from .. import _backend, ops
from .core import Row, copy_gbps, measure

DTYPE_NAMES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def fk_backends(device: torch.device) -> list[str]:
    """The compiled backends that can run on `device` (the reference is the eager formula itself)."""
    names = [b for b in ("cpu", "cuda", "triton") if _backend.why_unavailable(b, device.type) is None]
    if device.type == "cpu":  # the Triton interpreter says nothing about speed
        names = [b for b in names if b != "triton"]
    return names


def bench_extrapolate(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu", **kw) -> list[Row]:
    device = torch.device(device)
    newer = torch.randn(numel, device=device).to(dtype)
    older = torch.randn(numel, device=device).to(dtype)
    out = torch.empty_like(newer)
    tmp = torch.empty_like(newer)
    w = torch.tensor(0.3, device=device)

    def eager_out():  # the same formula without temporaries
        torch.sub(newer, older, out=tmp)
        tmp.mul_(w)
        tmp.add_(newer)

    impls = {"eager": lambda: newer + w * (newer - older), "eager (in place)": eager_out}
    for b in fk_backends(device):
        impls[f"fk {b}"] = _forced(b, lambda: ops.extrapolate(newer, older, w))
        impls[f"fk {b} out="] = _forced(b, lambda: ops.extrapolate(newer, older, w, out=out))
    nbytes = 3 * numel * newer.element_size()
    copy = copy_gbps(numel, dtype, device, **kw)
    case = f"{numel} {str(dtype).removeprefix('torch.')}"
    return measure("extrapolate", case, impls, nbytes, device, copy, **kw)


def _forced(backend: str, fn):
    def run():
        with _backend.use_backend(backend):
            return fn()

    return run


BENCHES = {"extrapolate": bench_extrapolate}


# Reductions: bytes are what the op must move (each input read once; residual_diff_update also writes the cache).
def bench_feature_diff(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu", **kw) -> list[Row]:
    device = torch.device(device)
    a = torch.randn(numel, device=device).to(dtype)
    b = torch.randn(numel, device=device).to(dtype)
    impls = {"eager": lambda: (a - b).abs().sum() / b.abs().sum()}
    for be in fk_backends(device):
        impls[f"fk {be}"] = _forced(be, lambda: ops.feature_diff(a, b, "rel_l1"))
    nbytes = 2 * numel * a.element_size()
    copy = copy_gbps(numel, dtype, device, **kw)
    case = f"{numel} {str(dtype).removeprefix('torch.')} rel_l1"
    return measure("feature_diff", case, impls, nbytes, device, copy, **kw)


def bench_residual_diff_update(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu",
                               **kw) -> list[Row]:
    device = torch.device(device)
    x = torch.randn(numel, device=device).to(dtype)
    y = torch.randn(numel, device=device).to(dtype)
    cache = torch.randn(numel, device=device).to(dtype)

    def eager():  # what First-Block-Cache implementations write
        r = y - x
        d = (r - cache).abs().sum() / cache.abs().sum()
        cache.copy_(r)
        return d

    impls = {"eager": eager}
    for be in fk_backends(device):
        impls[f"fk {be}"] = _forced(be, lambda: ops.residual_diff_update(y, x, cache, "rel_l1"))
    nbytes = 4 * numel * x.element_size()  # output, input and cache read, cache written
    copy = copy_gbps(numel, dtype, device, **kw)
    case = f"{numel} {str(dtype).removeprefix('torch.')} rel_l1"
    return measure("residual_diff_update", case, impls, nbytes, device, copy, **kw)


def motion_shape(numel: int, frames: int = 13, channels: int = 1920, batch: int = 2) -> tuple[int, int, int]:
    """[B, T*S, C] with CogVideoX-2B's width and latent frame count and about `numel` elements (CogVideoX-2B's
    full [2, 17550, 1920] is 67M elements: minutes of eager runs on a small CPU, so the default is 16M)."""
    s = max(1, numel // (batch * frames * channels))
    return batch, frames * s, channels


def bench_motion_score(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu", **kw) -> list[Row]:
    device = torch.device(device)
    b, n, c = motion_shape(numel)
    t = 13
    s = n // t
    p = torch.randn(b, n, c, device=device).to(dtype)
    # SPEC section 4, as AdaCache's reference code computes it
    impls = {"eager": lambda: (p[:, s:] - p[:, :-s]).abs().sum() / (p[:, s:].abs().sum() + p[:, :-s].abs().sum())}
    for be in fk_backends(device):
        impls[f"fk {be}"] = _forced(be, lambda: ops.motion_score(p, t, (1,)))
    nbytes = p.numel() * p.element_size()
    copy = copy_gbps(p.numel(), dtype, device, **kw)
    case = f"[{b}, {n}, {c}] {str(dtype).removeprefix('torch.')} T={t}"
    return measure("motion_score", case, impls, nbytes, device, copy, **kw)


BENCHES.update(feature_diff=bench_feature_diff, residual_diff_update=bench_residual_diff_update,
               motion_score=bench_motion_score)

# ---- CFG-Cache, extrapolate_residual, residual_sum -----------------------------------------------------------------

# Latents of the reference runs (SPEC section 3): CogVideoX-2B [13, 16, 60, 90] (frames, channels, H, W) and
# Open-Sora 1.2 at 192 frames 480p [57, 4, 60, 106] (as given in the task; 4 channels x 57 latent frames).
LATENTS = {"CogVideoX-2B": (13, 16, 60, 90), "Open-Sora": (57, 4, 60, 106)}


def _spec_mask(h: int, w: int, device) -> torch.Tensor:
    from ..reference.cfg_residual_split import radius, shifted_mask

    return shifted_mask(h, w, radius(h, w), device).to(torch.float32)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _with_ratio_to(rows: list[Row], name: str, key: str) -> list[Row]:
    """Adds rows[i].extra[key] = time of impl `name` / time of row i (>1: faster than `name`)."""
    base = next(r.ms for r in rows if r.impl == name)
    for r in rows:
        r.extra[key] = base / r.ms
    return rows


def bench_cfg_recombine_guided(numel=None, dtype: torch.dtype = torch.float32, device="cpu", **kw) -> list[Row]:
    """The guided output of a CFG skip call at the two model latents (`numel` is not used): the reference FFT
    path of SPEC section 2 (fft2 + shifts + masks of the computed branch, the stored complex deltas, ifft2, then
    uncond + s * (cond - uncond)), the eager linear formula, and the fused op. extra["x spec path"] holds the
    ratio to the FFT path."""
    device = torch.device(device)
    rows = []
    for name, shape in LATENTS.items():
        g = torch.Generator(device="cpu").manual_seed(0)
        cond = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
        low, high = (torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(2))
        a, b, s = (torch.tensor(v, device=device) for v in (1.1, 1.15, 6.0))
        h, w = shape[-2:]
        m = _spec_mask(h, w, device)
        d_lf = torch.fft.fftshift(torch.fft.fft2(low.float())) * m  # complex deltas as the reference stores them
        d_hf = torch.fft.fftshift(torch.fft.fft2(high.float())) * (1 - m)
        out = torch.empty_like(cond)

        def spec_path():
            spec = torch.fft.fftshift(torch.fft.fft2(cond.float()))
            uncond = torch.fft.ifft2(torch.fft.ifftshift(spec * m + a * d_lf + spec * (1 - m) + b * d_hf)).real
            return (uncond + s * (cond.float() - uncond)).to(dtype)

        impls = {"spec FFT path": spec_path, "eager": lambda: cond + (1 - s) * (a * low + b * high)}
        for be in fk_backends(device):
            impls[f"fk {be}"] = _forced(be, lambda: ops.cfg_recombine_guided(cond, low, high, a, b, s))
            impls[f"fk {be} out="] = _forced(be, lambda: ops.cfg_recombine_guided(cond, low, high, a, b, s, out=out))
        numel_ = cond.numel()
        copy = copy_gbps(numel_, dtype, device, **kw)
        case = f"{name} {'x'.join(map(str, shape))} {_dtype_name(dtype)}"
        rows += _with_ratio_to(measure("cfg_recombine_guided", case, impls, 4 * numel_ * cond.element_size(),
                                       device, copy, **kw), "spec FFT path", "x spec path")
    return rows


def bench_cfg_recombine(numel=None, dtype: torch.dtype = torch.float32, device="cpu", **kw) -> list[Row]:
    """other = computed + a * low + b * high at the two model latents (`numel` is not used), against the eager
    formula; also with bf16 low/high next to an fp32 computed (a cache stored at half the size)."""
    device = torch.device(device)
    rows = []
    for name, shape in LATENTS.items():
        for delta_dtype in dict.fromkeys([dtype, torch.bfloat16]):
            g = torch.Generator(device="cpu").manual_seed(0)
            c = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
            low, high = (torch.randn(shape, generator=g).to(device=device, dtype=delta_dtype) for _ in range(2))
            a, b = torch.tensor(1.1, device=device), torch.tensor(1.15, device=device)
            out = torch.empty_like(c)
            impls = {"eager": lambda: c + a * low.to(dtype) + b * high.to(dtype)}
            for be in fk_backends(device):
                impls[f"fk {be}"] = _forced(be, lambda: ops.cfg_recombine(c, low, high, a, b))
                impls[f"fk {be} out="] = _forced(be, lambda: ops.cfg_recombine(c, low, high, a, b, out=out))
            nbytes = c.numel() * (2 * c.element_size() + 2 * low.element_size())
            copy = copy_gbps(c.numel(), dtype, device, **kw)
            case = f"{name} {_dtype_name(dtype)}/{_dtype_name(delta_dtype)}"
            rows += measure("cfg_recombine", case, impls, nbytes, device, copy, **kw)
    return rows


def bench_cfg_residual_split(numel=None, dtype: torch.dtype = torch.float32, device="cpu", **kw) -> list[Row]:
    """A full call's split at the two model latents (`numel` is not used): the reference (both branches through
    fftshift(fft2), both masks, complex deltas) against the fused op with the default and bf16 storage.
    Ratios are to the reference ("x eager" column)."""
    device = torch.device(device)
    rows = []
    for name, shape in LATENTS.items():
        g = torch.Generator(device="cpu").manual_seed(0)
        other, computed = (torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(2))
        m = _spec_mask(*shape[-2:], device)

        def spec_full_call():
            s_o = torch.fft.fftshift(torch.fft.fft2(other.float()))
            s_c = torch.fft.fftshift(torch.fft.fft2(computed.float()))
            return s_o * m - s_c * m, s_o * (1 - m) - s_c * (1 - m)

        low, high = torch.empty_like(other), torch.empty_like(other)
        impls = {"spec full call": spec_full_call}
        for be in fk_backends(device):
            impls[f"fk {be}"] = _forced(be, lambda: ops.cfg_residual_split(other, computed))
            impls[f"fk {be} bf16 storage"] = _forced(
                be, lambda: ops.cfg_residual_split(other, computed, storage_dtype=torch.bfloat16))
            impls[f"fk {be} out="] = _forced(be, lambda: ops.cfg_residual_split(other, computed, out=(low, high)))
        case = f"{name} {'x'.join(map(str, shape))} {_dtype_name(dtype)}"
        rows += measure("cfg_residual_split", case, impls, 4 * other.numel() * other.element_size(), device, None,
                        eager="spec full call", **kw)
    return rows


def bench_extrapolate_residual(numel: int = 1 << 24, dtype: torch.dtype = torch.float32, device="cpu",
                               **kw) -> list[Row]:
    """x += gate * (newer + w * (newer - older)) in place, x [2, N, 1152] with about `numel` elements and a
    per-sample gate [2, 1, 1152], against the same in eager PyTorch (in place on x)."""
    device = torch.device(device)
    c = 1152
    shape = (2, max(1, numel // (2 * c)), c)
    x = torch.randn(shape, device=device).to(dtype)
    newer, older = (torch.randn(shape, device=device).to(dtype) for _ in range(2))
    gate = torch.randn(2, 1, c, device=device).to(dtype)
    w = torch.tensor(0.3, device=device)
    impls = {"eager": lambda: x.add_(gate * (newer + w * (newer - older)))}
    for be in fk_backends(device):
        impls[f"fk {be}"] = _forced(be, lambda: ops.extrapolate_residual(x, gate, newer, older, w))
    n = x.numel()
    copy = copy_gbps(n, dtype, device, **kw)
    case = f"{'x'.join(map(str, shape))} {_dtype_name(dtype)}"
    return measure("extrapolate_residual", case, impls, 4 * n * x.element_size(), device, copy, **kw)


def bench_residual_sum(numel=None, dtype: torch.dtype = torch.float32, device="cpu", count: int = 56,
                       shape=(2, 4096, 1152), **kw) -> list[Row]:
    """x + the sum of 56 residuals (AdaCache: 28 blocks x 2), [2, 4096, 1152] (`numel` is not used), against
    sequential eager adds (a new tensor per add, as a reuse call written in PyTorch does), in-place adds and, for
    fp16/bf16, eager adds into an fp32 accumulator (the fused op's accuracy)."""
    device = torch.device(device)
    x = torch.randn(shape, device=device).to(dtype)
    res = [torch.randn(shape, device=device).to(dtype) for _ in range(count)]
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

    def eager_fp32():  # the eager formula as accurate as the fused op: fp16/bf16 adds round 56 times
        acc = x.float()
        for r in res:
            acc += r
        return acc.to(dtype)

    impls = {"eager": eager, "eager (in place)": eager_inplace}
    if dtype != torch.float32:
        impls["eager (fp32 acc)"] = eager_fp32
    for be in fk_backends(device):
        impls[f"fk {be}"] = _forced(be, lambda: ops.residual_sum(x, res))
        impls[f"fk {be} out="] = _forced(be, lambda: ops.residual_sum(x, res, out=out))
    n = x.numel()
    copy = copy_gbps(n, dtype, device, **kw)
    case = f"{count} x {'x'.join(map(str, shape))} {_dtype_name(dtype)}"
    return measure("residual_sum", case, impls, (count + 2) * n * x.element_size(), device, copy, **kw)


BENCHES.update({
    "cfg_recombine": bench_cfg_recombine,
    "cfg_recombine_guided": bench_cfg_recombine_guided,
    "cfg_residual_split": bench_cfg_residual_split,
    "extrapolate_residual": bench_extrapolate_residual,
    "residual_sum": bench_residual_sum,
})
