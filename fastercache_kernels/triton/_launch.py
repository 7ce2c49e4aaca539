"""Launch sizes shared by the Triton kernels."""

import os

# The interpreter (TRITON_INTERPRET=1, how tests run the kernels on CPU tensors) costs ~1 ms per program
# instance whatever its size, so interpreted launches use large blocks; on a GPU 1024 elements per program with
# 4 warps gives every thread two 128-bit accesses per tensor.
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
ELEMENTWISE_BLOCK = 1 << 16 if INTERPRETING else 1024
ELEMENTWISE_WARPS = 4


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
