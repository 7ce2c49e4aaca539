"""Shared pieces of the Triton reductions: block sizes and the second stage of the feature-difference metrics.

Like the CUDA kernels, no float atomics: each program of the first stage stores its partial sums to a workspace
and one program per output row combines them in a fixed order, so results are bit-identical run to run.
"""

import triton
import triton.language as tl

from ._launch import INTERPRETING, cdiv

# Elements per first-stage program: 4096 on a GPU (32 per thread at 4 warps, eight 128-bit loads per tensor);
# under the interpreter, which costs ~1 ms per program, 64K.
REDUCE_BLOCK = 1 << 16 if INTERPRETING else 4096
REDUCE_WARPS = 4
# Partials combined per step of the second stage.
FINISH_BLOCK = 1024


@triton.jit
def finalize_metric(s0, s1, s2, METRIC: tl.constexpr):
    # finalize_metric of csrc/include/fastercache/reduce.h, with correctly rounded division and square root
    # (plain `/` and tl.sqrt are approximate on NVIDIA GPUs).
    if METRIC == 2:
        res = tl.div_rn(tl.sqrt_rn(s0), tl.sqrt_rn(s1))
    elif METRIC == 3:
        res = 1.0 - tl.div_rn(s0, tl.sqrt_rn(s1) * tl.sqrt_rn(s2))
    else:
        res = tl.div_rn(s0, s1)
    return res


@triton.jit
def store_row(out_ptr, row, s0, s1, s2, count, METRIC: tl.constexpr, PARTIALS: tl.constexpr):
    # store_diff of reduce.h: the metric of row `row`, or its three sums.
    if METRIC == 0:  # l1: the count is the row length, not a sum (the first stage stored exact zeros)
        s1 = s1 + count
    if PARTIALS:
        tl.store(out_ptr + row * 3, s0)
        tl.store(out_ptr + row * 3 + 1, s1)
        tl.store(out_ptr + row * 3 + 2, s2)
    else:
        tl.store(out_ptr + row, finalize_metric(s0, s1, s2, METRIC))


@triton.jit
def diff_finish_kernel(out_ptr, ws_ptr, per_row, count, METRIC: tl.constexpr, PARTIALS: tl.constexpr,
                       BLOCK: tl.constexpr):
    # Program r: the per_row partials (3 sums each) of row r, summed in a fixed order; then the metric or the sums.
    row = tl.program_id(0).to(tl.int64)
    acc0 = tl.zeros([BLOCK], tl.float32)
    acc1 = tl.zeros([BLOCK], tl.float32)
    acc2 = tl.zeros([BLOCK], tl.float32)
    for start in range(0, per_row, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        mask = idx < per_row
        p = ws_ptr + (row * per_row + idx) * 3
        acc0 += tl.load(p, mask=mask, other=0.0)
        acc1 += tl.load(p + 1, mask=mask, other=0.0)
        acc2 += tl.load(p + 2, mask=mask, other=0.0)
    s0 = tl.sum(acc0, axis=0)
    s1 = tl.sum(acc1, axis=0)
    s2 = tl.sum(acc2, axis=0)
    store_row(out_ptr, row, s0, s1, s2, count, METRIC, PARTIALS)


def launch_diff_finish(out, ws, rows: int, per_row: int, count: int, metric: int, partials: bool) -> None:
    if rows == 0:
        return
    diff_finish_kernel[(rows,)](out, ws, per_row, float(count), METRIC=metric, PARTIALS=partials,
                                BLOCK=FINISH_BLOCK, num_warps=4)


__all__ = ["FINISH_BLOCK", "REDUCE_BLOCK", "REDUCE_WARPS", "cdiv", "diff_finish_kernel", "finalize_metric",
           "launch_diff_finish", "store_row"]
