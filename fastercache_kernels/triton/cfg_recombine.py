import triton
import triton.language as tl

from ._launch import ELEMENTWISE_BLOCK, ELEMENTWISE_WARPS, cdiv


@triton.jit
def cfg_recombine_kernel(out_ptr, computed_ptr, low_ptr, high_ptr, a_ptr, b_ptr, s_ptr, n, GUIDED: tl.constexpr,
                         BLOCK: tl.constexpr):
    # int64 offsets: tensors past 2^31 elements must not wrap. low and high may be in another dtype than
    # computed and out (a cache storage dtype); everything is computed in fp32.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    c = tl.load(computed_ptr + offs, mask=mask).to(tl.float32)
    lo = tl.load(low_ptr + offs, mask=mask).to(tl.float32)
    hi = tl.load(high_ptr + offs, mask=mask).to(tl.float32)
    a = tl.load(a_ptr)
    b = tl.load(b_ptr)
    if GUIDED:
        s = tl.load(s_ptr)
        y = c + (1.0 - s) * (a * lo + b * hi)
    else:
        y = c + a * lo + b * hi
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def launch(out, inputs, scalars):
    computed, low, high = inputs
    guided = len(scalars) == 3
    a, b = scalars[:2]
    s = scalars[2] if guided else a  # unused when not guided
    n = out.numel()
    cfg_recombine_kernel[(cdiv(n, ELEMENTWISE_BLOCK),)](
        out, computed, low, high, a, b, s, n, GUIDED=guided, BLOCK=ELEMENTWISE_BLOCK, num_warps=ELEMENTWISE_WARPS
    )


# For the ahead-of-time PTX check: the guided form, every pointer 16-byte aligned and n divisible by 16.
AOT = dict(
    kernel=cfg_recombine_kernel,
    signature={"out_ptr": "*{dtype}", "computed_ptr": "*{dtype}", "low_ptr": "*{dtype}", "high_ptr": "*{dtype}",
               "a_ptr": "*fp32", "b_ptr": "*fp32", "s_ptr": "*fp32", "n": "i64", "GUIDED": "constexpr",
               "BLOCK": "constexpr"},
    constexprs={"GUIDED": True, "BLOCK": 1024},
    aligned=("out_ptr", "computed_ptr", "low_ptr", "high_ptr", "n"),
)
