"""fastercache::residual_diff_update: the compute-call step of First-Block-Cache and AdaCache. Forms the new
residual, measures how far it moved from the cached one, and refreshes the cache, in one pass."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext
from ..reference.residual_diff_update import residual_diff_update as reference_update
from ._common import (
    DTYPE_CODES,
    backend_for,
    call,
    check_float_tensor,
    check_like,
    cpu_module,
    cuda_stream,
    custom_op,
    dense,
)
from ._reduce import METRIC_CODES, NUM_SUMS, check_metric, f32_empty, finalize, shares_memory, workspace

_OP = "residual_diff_update"


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
    backend = backend_for(output)
    if backend == "reference":
        sums = reference_update(output, input, cache, metric, partials=True)
        return sums if partials else finalize(sums, metric)
    out = f32_empty((NUM_SUMS,) if partials else (), output.device)
    output, input = dense(output), dense(input)
    # The kernels update the cache in place: a strided cache, or one sharing memory with an input, goes through a
    # contiguous copy that is written back.
    direct = cache.is_contiguous() and not shares_memory(cache, output, input)
    c = cache if direct else cache.clone(memory_format=torch.contiguous_format)
    n = output.numel()
    args = (DTYPE_CODES[output.dtype], DTYPE_CODES[c.dtype])
    mcode = METRIC_CODES[metric]
    if backend == "triton":
        from ..triton import residual_diff_update as tk

        tk.launch(out, workspace(tk.workspace_numel(n), output.device), output, input, c, mcode, partials, n)
    elif backend == "cpu":
        cpu_module().residual_diff_update(*args, out.data_ptr(), output.data_ptr(), input.data_ptr(), c.data_ptr(),
                                          mcode, partials, n)
    else:
        mod = _ext.cuda()
        ws = workspace(mod.residual_diff_update_workspace(n), output.device)
        with torch.cuda.device(output.device):
            mod.residual_diff_update(*args, out.data_ptr(), output.data_ptr(), input.data_ptr(), c.data_ptr(), mcode,
                                     partials, n, ws.data_ptr(), cuda_stream(output.device))
    if not direct:
        cache.copy_(c)
    return out


@custom_op("fastercache::residual_diff_update", mutates_args=("cache",))
def _residual_diff_update(output: Tensor, input: Tensor, cache: Tensor, metric: str, partials: bool) -> Tensor:
    _check(output, input, cache, metric, partials)
    return _run(output, input, cache, metric, partials)


@_residual_diff_update.register_fake
def _(output, input, cache, metric, partials):
    _check(output, input, cache, metric, partials)
    return f32_empty((NUM_SUMS,) if partials else (), output.device)


def residual_diff_update(output: Tensor, input: Tensor, cache: Tensor, metric: str = "rel_l1", *,
                         partials: bool = False) -> Tensor:
    """d = metric(r, cache) with r = output - input, then cache <- r, in one pass (fp32 math):

        rel_l1 = sum |r - cache| / sum |cache|     (l1, rel_l2, cosine as in feature_diff, with a = r, b = cache)

    The metric compares r in fp32 against the residual cached on the previous compute call; cache then holds r
    rounded to its own dtype. Deterministic for any thread count.

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
    return call(_residual_diff_update, output, input, cache, metric, partials)
