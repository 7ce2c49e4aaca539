"""fastercache::residual_diff_update: the compute-call step of First-Block-Cache and AdaCache. Forms the new
residual, measures how far it moved from the cached one, and refreshes the cache, in one pass."""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference.residual_diff_update import residual_diff_update as reference_update
from ._common import DTYPE_CODES, check_float_tensor, check_like, dense
from ._define import Launch, _randn, define
from ._reduce import METRIC_CODES, NUM_SUMS, check_metric, f32_empty, finalize, shares_memory, workspace

_OP = "residual_diff_update"
__all__ = ["residual_diff_update"]


def _check(output: Tensor, input: Tensor, cache: Tensor, metric: str, partials: bool) -> None:
    check_float_tensor(_OP, "output", output)
    check_like(_OP, "input", input, "output", output)
    check_float_tensor(_OP, "cache", cache)  # any float dtype: a storage dtype of its own
    if cache.shape != output.shape:
        raise ValueError(f"{_OP}: `cache` has shape {tuple(cache.shape)} but `output` has shape "
                         f"{tuple(output.shape)}")
    if cache.device != output.device:
        raise ValueError(f"{_OP}: `cache` is on {cache.device} but `output` is on {output.device}")
    check_metric(_OP, metric)
    if not isinstance(partials, bool):
        raise TypeError(f"{_OP}: `partials` must be a bool, got {type(partials).__name__}")


def _run(output: Tensor, input: Tensor, cache: Tensor, metric: str, partials: bool) -> Tensor:
    launch = Launch(OP, output.device)
    if launch.backend == "reference":
        sums = reference_update(output, input, cache, metric, partials=True)
        return sums if partials else finalize(sums, metric)
    out = _empty(output, input, cache, metric, partials)
    output, input = dense(output), dense(input)
    # The kernels update the cache in place: a strided cache, or one sharing memory with an input, goes through a
    # contiguous copy that is written back.
    direct = cache.is_contiguous() and not shares_memory(cache, output, input)
    c = cache if direct else cache.clone(memory_format=torch.contiguous_format)
    n = output.numel()
    mcode = METRIC_CODES[metric]
    if launch.backend == "triton":
        tk = launch.triton()
        tk.launch(out, workspace(tk.workspace_numel(n), output.device), output, input, c, mcode, partials, n)
    else:
        ws = launch.cuda_workspace("residual_diff_update_workspace", n)
        launch(DTYPE_CODES[output.dtype], DTYPE_CODES[c.dtype], out.data_ptr(), output.data_ptr(), input.data_ptr(),
               c.data_ptr(), mcode, partials, n, cuda=ws)
    if not direct:
        cache.copy_(c)
    return out


def _empty(output: Tensor, input: Tensor, cache: Tensor, metric: str, partials: bool) -> Tensor:
    return f32_empty((NUM_SUMS,) if partials else (), output.device)


OP = define(
    "residual_diff_update",
    elementwise=True,
    schema="(Tensor output, Tensor input, Tensor(a!) cache, str metric, bool partials) -> Tensor",
    check=_check,
    fake=_empty,
    compute=_run,
    reference=reference_update,
    triton="residual_diff_update",
    example=lambda dev: (_randn(dev, 2, 30001), _randn(dev, 2, 30001), _randn(dev, 2, 30001), "rel_l1", False),
    launcher="residual_diff_update",
)


def residual_diff_update(output: Tensor, input: Tensor, cache: Tensor, metric: str = "rel_l1", *,
                         partials: bool = False) -> Tensor:
    """d = metric(r, cache) with r = output - input, then cache <- r, in one pass (fp32 math):

        rel_l1 = sum |r - cache| / sum |cache|     (l1, rel_l2, cosine as in feature_diff, with a = r, b = cache)

    The metric compares r in fp32 against the residual cached on the previous compute call; cache then holds r
    rounded to its own dtype. Deterministic for any thread count
    (the CPU module, CUDA and Triton; the reference backend's torch reductions can differ by an ulp).

    Args:
        output: [*] the block's (or block stack's) output; fp32, fp16 or bf16, any strides.
        input: [*] its input; same shape, dtype and device as `output`.
        cache: [*] the cached residual, updated in place; same shape and device, any float dtype (a storage
            dtype of its own) and any strides.
        metric: "l1", "rel_l1", "rel_l2" or "cosine".
        partials: return the raw sums [3] instead (see feature_diff_partials), e.g. to all-reduce them.

    Returns:
        fp32 0-d tensor (or [3] sums).
    """
    _check(output, input, cache, metric, partials)  # here too: schema errors would not name the argument
    return OP(output, input, cache, metric, partials, checked=True)
