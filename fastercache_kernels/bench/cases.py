"""The benchmark cases of every op: the eager formula(s) a user would write next to fk's backends.

One function per op yields `bench.ops.Case`s at a shape and dtype; CASES registers it with the kind of shapes the
op meets in a model ("latent": model outputs, "hidden": tokens) and the shape-sized tensors a case holds at once
(the CLI's memory guard). The op declarations (ops/) know nothing of benchmarks; bench/ops.py times these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..ops.cfg_recombine import cfg_recombine, cfg_recombine_guided
from ..ops.cfg_residual_split import cfg_residual_split
from ..ops.feature_diff import feature_diff
from ..ops.forecast import forecast
from ..ops.motion_score import motion_score
from ..ops.residual_diff_update import residual_diff_update
from ..ops.residual_sum import HIDDEN_RESIDUALS, residual_sum


@dataclass(frozen=True)
class Cases:
    run: Callable  # run(dtype, device, shape, numel, **kw) yields bench.ops.Case
    kind: str
    tensors: int


def _cfg_recombine(dtype, device, shape, numel):
    """other = computed + a * low + b * high at a latent (default: the two model latents; `numel` is not used),
    against the eager formula; also with bf16 low/high next to an fp32 computed (a cache stored at half the
    size)."""
    from .ops import Case, dtype_name, fk_variants, latents

    for name, dims in latents(shape):
        for delta_dtype in dict.fromkeys([dtype, torch.bfloat16]):
            g = torch.Generator(device="cpu").manual_seed(0)
            c = torch.randn(dims, generator=g).to(device=device, dtype=dtype)
            low, high = (torch.randn(dims, generator=g).to(device=device, dtype=delta_dtype) for _ in range(2))
            a, b = torch.tensor(1.1, device=device), torch.tensor(1.15, device=device)
            out = torch.empty_like(c)
            impls = {"eager": lambda c=c, low=low, high=high, a=a, b=b: c + a * low.to(dtype) + b * high.to(dtype)}
            impls.update(fk_variants(device, {
                "": lambda c=c, low=low, high=high, a=a, b=b: cfg_recombine(c, low, high, a, b),
                " out=": lambda c=c, low=low, high=high, a=a, b=b, out=out: cfg_recombine(c, low, high, a, b,
                                                                                           out=out)}))
            nbytes = c.numel() * (2 * c.element_size() + 2 * low.element_size())
            yield Case(f"{name} {dtype_name(dtype)}/{dtype_name(delta_dtype)}", impls, nbytes, c.numel())


def _cfg_recombine_guided(dtype, device, shape, numel):
    """The guided output of a CFG skip call at a latent (default: the two model latents; `numel` is not used):
    the reference FFT path of SPEC section 2 (fft2 + shifts + masks of the computed branch, the stored complex
    deltas, ifft2, then uncond + s * (cond - uncond)), the eager linear formula, and the fused op.
    extra["x spec path"] holds the ratio to the FFT path."""
    from .ops import Case, dtype_name, fk_variants, latents, spec_mask

    for name, dims in latents(shape):
        g = torch.Generator(device="cpu").manual_seed(0)
        cond = torch.randn(dims, generator=g).to(device=device, dtype=dtype)
        low, high = (torch.randn(dims, generator=g).to(device=device, dtype=dtype) for _ in range(2))
        a, b, s = (torch.tensor(v, device=device) for v in (1.1, 1.15, 6.0))
        m = spec_mask(*dims[-2:], device)
        d_lf = torch.fft.fftshift(torch.fft.fft2(low.float())) * m  # complex deltas as the reference stores them
        d_hf = torch.fft.fftshift(torch.fft.fft2(high.float())) * (1 - m)
        out = torch.empty_like(cond)

        def spec_path(cond=cond, m=m, d_lf=d_lf, d_hf=d_hf, a=a, b=b, s=s):
            spec = torch.fft.fftshift(torch.fft.fft2(cond.float()))
            uncond = torch.fft.ifft2(torch.fft.ifftshift(spec * m + a * d_lf + spec * (1 - m) + b * d_hf)).real
            return (uncond + s * (cond.float() - uncond)).to(dtype)

        args = (cond, low, high, a, b, s)
        impls = {"spec FFT path": spec_path, "eager": lambda: cond + (1 - s) * (a * low + b * high)}
        impls.update(fk_variants(device, {"": lambda args=args: cfg_recombine_guided(*args),
                                          " out=": lambda args=args, out=out: cfg_recombine_guided(*args, out=out)}))
        n = cond.numel()
        label = f"{name} {dtype_name(dtype)}" if shape is not None else \
            f"{name} {'x'.join(map(str, dims))} {dtype_name(dtype)}"
        yield Case(label, impls, 4 * n * cond.element_size(), n, ratio_to=("spec FFT path", "x spec path"))


def _cfg_residual_split(dtype, device, shape, numel):
    """A full call's split at a latent (default: the two model latents; `numel` is not used): the reference
    (both branches through fftshift(fft2), both masks, complex deltas) against the fused op with the default and
    bf16 storage. Ratios are to the reference ("x eager" column); no copy ratio (the FFT is not memory-bound)."""
    from .ops import Case, dtype_name, fk_variants, latents, spec_mask

    for name, dims in latents(shape):
        g = torch.Generator(device="cpu").manual_seed(0)
        other, computed = (torch.randn(dims, generator=g).to(device=device, dtype=dtype) for _ in range(2))
        m = spec_mask(*dims[-2:], device)

        def spec_full_call():
            s_o = torch.fft.fftshift(torch.fft.fft2(other.float()))
            s_c = torch.fft.fftshift(torch.fft.fft2(computed.float()))
            return s_o * m - s_c * m, s_o * (1 - m) - s_c * (1 - m)

        low, high = torch.empty_like(other), torch.empty_like(other)
        impls = {"spec full call": spec_full_call}
        impls.update(fk_variants(device, {
            "": lambda: cfg_residual_split(other, computed),
            " bf16 storage": lambda: cfg_residual_split(other, computed, storage_dtype=torch.bfloat16),
            " out=": lambda: cfg_residual_split(other, computed, out=(low, high))}))
        label = f"{name} {dtype_name(dtype)}" if shape is not None else \
            f"{name} {'x'.join(map(str, dims))} {dtype_name(dtype)}"
        yield Case(label, impls, 4 * other.numel() * other.element_size(), None, eager="spec full call")


def _feature_diff(dtype, device, shape, numel):
    from .ops import Case, case_label, fk_variants

    dims = shape.dims if shape is not None else (numel,)
    a = torch.randn(dims, device=device).to(dtype)
    b = torch.randn(dims, device=device).to(dtype)
    impls = {"eager": lambda: (a - b).abs().sum() / b.abs().sum()}
    impls.update(fk_variants(device, {"": lambda: feature_diff(a, b, "rel_l1")}))
    n = a.numel()
    yield Case(case_label(shape, n, dtype, "rel_l1"), impls, 2 * n * a.element_size(), n)


def _forecast(dtype, device, shape, numel):
    """x + the order-2 forecast of a residual from 3 stored values (TaylorSeer-style reuse of a block's residual),
    against the eager formula (a new tensor per term), the same in place, and a tensordot over the slots."""
    from .ops import Case, case_label, fk_variants

    dims = shape.dims if shape is not None else (numel,)
    history = torch.randn((3, *dims), device=device).to(dtype)
    x = torch.randn(dims, device=device).to(dtype)
    w = torch.tensor([3.0, -3.0, 1.0], device=device)  # order 2 at equal spacing, one step ahead
    wd = w.to(dtype)
    out = torch.empty_like(x)

    def eager():
        return x + wd[0] * history[0] + wd[1] * history[1] + wd[2] * history[2]

    def eager_inplace():  # the same formula without temporaries
        torch.mul(history[0], wd[0], out=out)
        out.addcmul_(history[1], wd[1])
        out.addcmul_(history[2], wd[2])
        out.add_(x)

    impls = {"eager": eager, "eager (in place)": eager_inplace,
             "eager tensordot": lambda: x + torch.tensordot(wd, history, dims=1)}
    impls.update(fk_variants(device, {"": lambda: forecast(history, w, x),
                                      " out=": lambda: forecast(history, w, x, out=out)}))
    n = x.numel()
    yield Case(case_label(shape, n, dtype, "K=3 +x"), impls, 5 * n * x.element_size(), n)


def _motion_score(dtype, device, shape, numel):
    from .ops import Case, case_label, dtype_name, fk_variants, motion_shape

    if shape is not None:
        (b, n, c), t = shape.dims, shape.frames
    else:
        (b, n, c), t = motion_shape(numel), 13
    s = n // t
    p = torch.randn(b, n, c, device=device).to(dtype)
    # SPEC section 4, as AdaCache's reference code computes it
    impls = {"eager": lambda: (p[:, s:] - p[:, :-s]).abs().sum() / (p[:, s:].abs().sum() + p[:, :-s].abs().sum())}
    impls.update(fk_variants(device, {"": lambda: motion_score(p, t, (1,))}))
    label = case_label(shape, 0, dtype, f"T={t}") if shape is not None else f"[{b}, {n}, {c}] {dtype_name(dtype)} T={t}"
    yield Case(label, impls, p.numel() * p.element_size(), p.numel())


def _residual_diff_update(dtype, device, shape, numel):
    from .ops import Case, case_label, fk_variants

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
    impls.update(fk_variants(device, {"": lambda: residual_diff_update(y, x, cache, "rel_l1")}))
    n = x.numel()
    # output, input and cache read, cache written
    yield Case(case_label(shape, n, dtype, "rel_l1"), impls, 4 * n * x.element_size(), n)


def _residual_sum(dtype, device, shape, numel, count: int | None = None):
    """x + the sum of `count` residuals, against sequential eager adds (a new tensor per add, as a reuse call
    written in PyTorch does), in-place adds and, for fp16/bf16, eager adds into an fp32 accumulator (the fused op's
    accuracy: low-precision adds round once per residual). Default: 56 residuals (AdaCache: 28 blocks x 2) of
    [2, 4096, 1152] (`numel` is not used); a named Shape takes HIDDEN_RESIDUALS residuals."""
    from .ops import Case, case_label, dtype_name, fk_variants

    named = shape is not None
    dims = shape.dims if named else (2, 4096, 1152)
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
    impls.update(fk_variants(device, {"": lambda: residual_sum(x, res),
                                      " out=": lambda: residual_sum(x, res, out=out)}))
    n = x.numel()
    where = case_label(shape, n, dtype) if named else f"{'x'.join(map(str, dims))} {dtype_name(dtype)}"
    yield Case(f"{count} x {where}", impls, (count + 2) * n * x.element_size(), n)


CASES = {
    "cfg_recombine": Cases(_cfg_recombine, "latent", 9),
    "cfg_recombine_guided": Cases(_cfg_recombine_guided, "latent", 16),
    "cfg_residual_split": Cases(_cfg_residual_split, "latent", 16),
    "feature_diff": Cases(_feature_diff, "hidden", 7),
    "forecast": Cases(_forecast, "hidden", 9),
    "motion_score": Cases(_motion_score, "hidden", 6),
    "residual_diff_update": Cases(_residual_diff_update, "hidden", 9),
    "residual_sum": Cases(_residual_sum, "hidden", HIDDEN_RESIDUALS + 7),
}
