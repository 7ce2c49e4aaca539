import triton
import triton.language as tl

from ._reduce import REDUCE_BLOCK, REDUCE_WARPS, cdiv, launch_diff_finish
from .feature_diff import diff_terms


@triton.jit
def residual_diff_update_kernel(ws_ptr, output_ptr, input_ptr, cache_ptr, n, METRIC: tl.constexpr,
                                BLOCK: tl.constexpr):
    # r = output - input in fp32; the metric's partial sums of (r, cache) into ws[i]; r (in cache's dtype) into
    # cache. Every element is read before it is written, by the same program.
    item = tl.program_id(0).to(tl.int64)
    offs = item * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    o = tl.load(output_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(input_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(cache_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    r = o - x
    s0, s1, s2 = diff_terms(r, c, METRIC)
    tl.store(cache_ptr + offs, r.to(cache_ptr.dtype.element_ty), mask=mask)
    tl.store(ws_ptr + item * 3, s0)
    tl.store(ws_ptr + item * 3 + 1, s1)
    tl.store(ws_ptr + item * 3 + 2, s2)


def workspace_numel(n: int) -> int:
    return cdiv(n, REDUCE_BLOCK) * 3


def launch(out, ws, output, input, cache, metric: int, partials: bool, n: int) -> None:
    items = cdiv(n, REDUCE_BLOCK)
    if items:
        residual_diff_update_kernel[(items,)](ws, output, input, cache, n, METRIC=metric, BLOCK=REDUCE_BLOCK,
                                              num_warps=REDUCE_WARPS)
    launch_diff_finish(out, ws, 1, items, n, metric, partials)


AOT = dict(
    kernel=residual_diff_update_kernel,
    signature={"ws_ptr": "*fp32", "output_ptr": "*{dtype}", "input_ptr": "*{dtype}", "cache_ptr": "*{dtype}",
               "n": "i64", "METRIC": "constexpr", "BLOCK": "constexpr"},
    constexprs={"METRIC": 1, "BLOCK": 4096},
    aligned=("ws_ptr", "output_ptr", "input_ptr", "cache_ptr", "n"),
)
