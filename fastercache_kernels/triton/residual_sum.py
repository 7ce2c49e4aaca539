import torch
import triton
import triton.language as tl

from ._launch import ELEMENTWISE_BLOCK, ELEMENTWISE_WARPS, cdiv

# Residuals per launch. They travel as a tuple of pointer arguments (each with its own alignment
# specialisation, so the loads vectorise); beyond this many the sum runs in chunks through an fp32 workspace.
CAPACITY = 64


@triton.jit
def residual_sum_kernel(out_ptr, base_ptr, residuals, n, BLOCK: tl.constexpr):
    # out = base + residuals[0] + ... in fp32, in list order. int64 offsets: past 2^31 elements must not wrap.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = tl.load(base_ptr + offs, mask=mask).to(tl.float32)
    for k in tl.static_range(len(residuals)):
        acc += tl.load(residuals[k] + offs, mask=mask).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def launch(out, x, residuals):
    n = out.numel()
    grid = (cdiv(n, ELEMENTWISE_BLOCK),)

    def run(dst, base, chunk):
        residual_sum_kernel[grid](dst, base, tuple(chunk), n, BLOCK=ELEMENTWISE_BLOCK, num_warps=ELEMENTWISE_WARPS)

    if len(residuals) <= CAPACITY:
        run(out, x, residuals)
        return
    work = torch.empty(out.shape, dtype=torch.float32, device=out.device)
    run(work, x, residuals[:CAPACITY])
    k = CAPACITY
    while len(residuals) - k > CAPACITY:
        run(work, work, residuals[k : k + CAPACITY])
        k += CAPACITY
    run(out, work, residuals[k:])


# For the ahead-of-time PTX check: four residuals, every pointer 16-byte aligned and n divisible by 16.
AOT = dict(
    kernel=residual_sum_kernel,
    signature={"out_ptr": "*{dtype}", "base_ptr": "*{dtype}", "residuals": ("*{dtype}",) * 4, "n": "i64",
               "BLOCK": "constexpr"},
    constexprs={"BLOCK": 1024},
    aligned=("out_ptr", "base_ptr", "residuals", "n"),
)
