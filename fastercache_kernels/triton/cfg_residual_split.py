import triton
import triton.language as tl

from ._launch import ELEMENTWISE_BLOCK, ELEMENTWISE_WARPS, cdiv


@triton.jit
def difference_kernel(out_ptr, a_ptr, b_ptr, n, BLOCK: tl.constexpr):
    # out = a - b in fp32, stored in out's dtype: R = other - computed (out fp32) and high = R - low (out in the
    # storage dtype). int64 offsets: tensors past 2^31 elements must not wrap.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(a_ptr + offs, mask=mask).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask).to(tl.float32)
    tl.store(out_ptr + offs, (a - b).to(out_ptr.dtype.element_ty), mask=mask)


def launch(out, inputs, scalars):
    a, b = inputs
    n = out.numel()
    difference_kernel[(cdiv(n, ELEMENTWISE_BLOCK),)](out, a, b, n, BLOCK=ELEMENTWISE_BLOCK,
                                                      num_warps=ELEMENTWISE_WARPS)


# For the ahead-of-time PTX check: the R pass (inputs in the model dtype, R in fp32), everything aligned.
AOT = dict(
    kernel=difference_kernel,
    signature={"out_ptr": "*fp32", "a_ptr": "*{dtype}", "b_ptr": "*{dtype}", "n": "i64", "BLOCK": "constexpr"},
    constexprs={"BLOCK": 1024},
    aligned=("out_ptr", "a_ptr", "b_ptr", "n"),
)
