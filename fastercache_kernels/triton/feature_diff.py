import triton
import triton.language as tl

from ._reduce import REDUCE_BLOCK, REDUCE_WARPS, cdiv, launch_diff_finish


# The kernels compiled ahead of time (tests/test_build.py) are self-contained: no calls to other @triton.jit
# functions, which the AOT path cannot resolve while the interpreter is on. Their metric arithmetic repeats
# DiffTerm and finalize_metric of csrc/include/fastercache/reduce.h (and _reduce.py's second stage).
@triton.jit
def feature_diff_partials_kernel(ws_ptr, a_ptr, b_ptr, cols, per_row, out_ptr, count, METRIC: tl.constexpr,
                                 PARTIALS: tl.constexpr, FINAL: tl.constexpr, BLOCK: tl.constexpr):
    # Program i: block i % per_row of row i // per_row -> its three partial sums (unused ones exactly 0; l1's
    # count comes later) in ws[i]; or, when a row fits in one block (FINAL), the row's result straight into out.
    # int64 offsets: tensors past 2^31 elements must not wrap.
    item = tl.program_id(0).to(tl.int64)
    row = item // per_row
    offs = (item % per_row) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < cols
    a = tl.load(a_ptr + row * cols + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + row * cols + offs, mask=mask, other=0.0).to(tl.float32)
    if METRIC == 3:
        s0 = tl.sum(a * b, axis=0)
        s1 = tl.sum(a * a, axis=0)
        s2 = tl.sum(b * b, axis=0)
    elif METRIC == 2:
        d = a - b
        s0 = tl.sum(d * d, axis=0)
        s1 = tl.sum(b * b, axis=0)
        s2 = tl.zeros_like(s0)
    elif METRIC == 1:
        s0 = tl.sum(tl.abs(a - b), axis=0)
        s1 = tl.sum(tl.abs(b), axis=0)
        s2 = tl.zeros_like(s0)
    else:
        s0 = tl.sum(tl.abs(a - b), axis=0)
        s1 = tl.zeros_like(s0)
        s2 = tl.zeros_like(s0)
    if FINAL:
        if METRIC == 0:
            s1 = s1 + count
        if PARTIALS:
            tl.store(out_ptr + row * 3, s0)
            tl.store(out_ptr + row * 3 + 1, s1)
            tl.store(out_ptr + row * 3 + 2, s2)
        elif METRIC == 2:
            tl.store(out_ptr + row, tl.div_rn(tl.sqrt_rn(s0), tl.sqrt_rn(s1)))
        elif METRIC == 3:
            tl.store(out_ptr + row, 1.0 - tl.div_rn(s0, tl.sqrt_rn(s1) * tl.sqrt_rn(s2)))
        else:
            tl.store(out_ptr + row, tl.div_rn(s0, s1))
    else:
        tl.store(ws_ptr + item * 3, s0)
        tl.store(ws_ptr + item * 3 + 1, s1)
        tl.store(ws_ptr + item * 3 + 2, s2)


def block_for(cols: int) -> int:
    # Short rows get a block their size (fewer idle lanes on a GPU, much less work for the interpreter).
    return max(16, min(REDUCE_BLOCK, triton.next_power_of_2(max(1, cols))))


def workspace_numel(rows: int, cols: int) -> int:
    return rows * cdiv(cols, block_for(cols)) * 3


def launch(out, ws, a, b, metric: int, partials: bool, rows: int, cols: int) -> None:
    """out: [rows] metrics or [rows, 3] sums (fp32); ws: workspace_numel(rows, cols) floats; a, b contiguous."""
    block = block_for(cols)
    per_row = cdiv(cols, block)
    final = per_row == 1
    if rows * per_row:
        feature_diff_partials_kernel[(rows * per_row,)](ws, a, b, cols, per_row, out, float(cols), METRIC=metric,
                                                        PARTIALS=partials, FINAL=final, BLOCK=block,
                                                        num_warps=REDUCE_WARPS)
    if not final:
        launch_diff_finish(out, ws, rows, per_row, cols, metric, partials)


# For the ahead-of-time PTX check: every pointer 16-byte aligned and the row length divisible by 16.
AOT = dict(
    kernel=feature_diff_partials_kernel,
    signature={"ws_ptr": "*fp32", "a_ptr": "*{dtype}", "b_ptr": "*{dtype}", "cols": "i64", "per_row": "i64",
               "out_ptr": "*fp32", "count": "fp32", "METRIC": "constexpr", "PARTIALS": "constexpr",
               "FINAL": "constexpr", "BLOCK": "constexpr"},
    constexprs={"METRIC": 1, "PARTIALS": False, "FINAL": False, "BLOCK": 4096},
    aligned=("ws_ptr", "a_ptr", "b_ptr", "cols"),
)
