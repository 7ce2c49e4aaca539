import triton
import triton.language as tl

from ._launch import ELEMENTWISE_BLOCK, ELEMENTWISE_WARPS, cdiv


@triton.jit
def extrapolate_kernel(out_ptr, newer_ptr, older_ptr, weight_ptr, n, BLOCK: tl.constexpr):
    # int64 offsets: tensors past 2^31 elements must not wrap
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(newer_ptr + offs, mask=mask).to(tl.float32)
    b = tl.load(older_ptr + offs, mask=mask).to(tl.float32)
    w = tl.load(weight_ptr)
    tl.store(out_ptr + offs, (a + w * (a - b)).to(out_ptr.dtype.element_ty), mask=mask)


def launch(out, inputs, scalars):
    newer, older = inputs
    (weight,) = scalars
    n = out.numel()
    extrapolate_kernel[(cdiv(n, ELEMENTWISE_BLOCK),)](
        out, newer, older, weight, n, BLOCK=ELEMENTWISE_BLOCK, num_warps=ELEMENTWISE_WARPS
    )


# For the ahead-of-time PTX check: the signature with every pointer 16-byte aligned and n divisible by 16.
AOT = dict(
    kernel=extrapolate_kernel,
    signature={"out_ptr": "*{dtype}", "newer_ptr": "*{dtype}", "older_ptr": "*{dtype}", "weight_ptr": "*fp32",
               "n": "i64", "BLOCK": "constexpr"},
    constexprs={"BLOCK": 1024},
    aligned=("out_ptr", "newer_ptr", "older_ptr", "n"),
)
