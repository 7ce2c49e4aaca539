import triton
import triton.language as tl

from ._reduce import REDUCE_BLOCK, REDUCE_WARPS, cdiv, launch_diff_finish


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
    # the three sums of (r, c), as feature_diff_partials_kernel (self-contained for the AOT check)
    if METRIC == 3:
        s0 = tl.sum(r * c, axis=0)
        s1 = tl.sum(r * r, axis=0)
        s2 = tl.sum(c * c, axis=0)
    elif METRIC == 2:
        d = r - c
        s0 = tl.sum(d * d, axis=0)
        s1 = tl.sum(c * c, axis=0)
        s2 = tl.zeros_like(s0)
    elif METRIC == 1:
        s0 = tl.sum(tl.abs(r - c), axis=0)
        s1 = tl.sum(tl.abs(c), axis=0)
        s2 = tl.zeros_like(s0)
    else:
        s0 = tl.sum(tl.abs(r - c), axis=0)
        s1 = tl.zeros_like(s0)
        s2 = tl.zeros_like(s0)
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
