import triton
import triton.language as tl

from ._launch import ELEMENTWISE_BLOCK, ELEMENTWISE_WARPS, cdiv


@triton.jit
def extrapolate_residual_kernel(x_ptr, newer_ptr, older_ptr, gate_ptr, w_ptr, n, channels, sample_numel,
                                gate_stride, HAS_GATE: tl.constexpr, BLOCK: tl.constexpr):
    # In place: x += g * (newer + w * (newer - older)) with x viewed as [samples, rows, channels] and
    # g = gate[sample * gate_stride + channel] (fp32). int64 offsets: tensors past 2^31 elements must not wrap.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    nw = tl.load(newer_ptr + offs, mask=mask).to(tl.float32)
    od = tl.load(older_ptr + offs, mask=mask).to(tl.float32)
    w = tl.load(w_ptr)
    f = nw + w * (nw - od)
    if HAS_GATE:
        g = tl.load(gate_ptr + (offs // sample_numel) * gate_stride + offs % channels, mask=mask)
        y = x + g * f
    else:
        y = x + f
    tl.store(x_ptr + offs, y.to(x_ptr.dtype.element_ty), mask=mask)


def launch(x, newer, older, gate, weight, channels, sample_numel, gate_stride):
    n = x.numel()
    has_gate = gate is not None
    extrapolate_residual_kernel[(cdiv(n, ELEMENTWISE_BLOCK),)](
        x, newer, older, gate if has_gate else weight, weight, n, channels, sample_numel, gate_stride,
        HAS_GATE=has_gate, BLOCK=ELEMENTWISE_BLOCK, num_warps=ELEMENTWISE_WARPS,
    )


# For the ahead-of-time PTX check: gated, x and the cache aligned and n divisible by 16.
AOT = dict(
    kernel=extrapolate_residual_kernel,
    signature={"x_ptr": "*{dtype}", "newer_ptr": "*{dtype}", "older_ptr": "*{dtype}", "gate_ptr": "*fp32",
               "w_ptr": "*fp32", "n": "i64", "channels": "i64", "sample_numel": "i64", "gate_stride": "i64",
               "HAS_GATE": "constexpr", "BLOCK": "constexpr"},
    constexprs={"HAS_GATE": True, "BLOCK": 1024},
    aligned=("x_ptr", "newer_ptr", "older_ptr", "gate_ptr", "n", "channels", "sample_numel", "gate_stride"),
)
