import triton
import triton.language as tl

from ._launch import ELEMENTWISE_BLOCK, ELEMENTWISE_WARPS, cdiv


@triton.jit
def forecast_kernel(out_ptr, history, weights_ptr, x_ptr, n, HAS_X: tl.constexpr, BLOCK: tl.constexpr):
    # out = x + sum_k w[k] * history[k] in fp32, slot order, weight-0 slots left out (the reference's rule).
    # int64 offsets: past 2^31 elements must not wrap.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    if HAS_X:
        acc = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in tl.static_range(len(history)):
        w = tl.load(weights_ptr + k)
        if w != 0.0:  # uniform over the program: a slot of weight 0 is not even read
            acc += w * tl.load(history[k] + offs, mask=mask).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def launch(out, history, weights, x):
    """history: a tuple of K contiguous slots like out; weights: K fp32 values on out's device; x: like out or
    None."""
    n = out.numel()
    forecast_kernel[(cdiv(n, ELEMENTWISE_BLOCK),)](
        out, tuple(history), weights, out if x is None else x, n, HAS_X=x is not None, BLOCK=ELEMENTWISE_BLOCK,
        num_warps=ELEMENTWISE_WARPS,
    )


# For the ahead-of-time PTX check: three slots and x, every pointer 16-byte aligned and n divisible by 16.
AOT = dict(
    kernel=forecast_kernel,
    signature={"out_ptr": "*{dtype}", "history": ("*{dtype}",) * 3, "weights_ptr": "*fp32", "x_ptr": "*{dtype}",
               "n": "i64", "HAS_X": "constexpr", "BLOCK": "constexpr"},
    constexprs={"HAS_X": True, "BLOCK": 1024},
    aligned=("out_ptr", "history", "x_ptr", "n"),
)
