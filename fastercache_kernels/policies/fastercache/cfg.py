"""The CFG residual of FasterCache's CFG-Cache (docs/algorithms.md §2), shared by every way a model meets it: a batched
call ([uncond, cond] halves), per-branch calls (diffusers' `cache_context("cond" | "uncond")`) and a denoising
loop driving it step by step (`fk.pipeline.CFGCache`).

On a full step `refresh(other, computed)` keeps the split residual `R = other - computed` (`R_low`, `R_high`,
`fk.ops.cfg_residual_split`) and resets the weights; on a skip step `skip(low_mult, high_mult)` compounds them
(a *= low_mult, b *= high_mult) and `reconstruct(computed)` gives `computed + a*R_low + b*R_high`
(`fk.ops.cfg_recombine`, the linear form of the reference's FFT path).
"""

from __future__ import annotations

import torch

from ... import ops
from ...runtime.engine import fitting_buffer


class CFGResidual:
    """R_low / R_high of the last full step and the 0-d weights a, b (kept on the device, updated in place)."""

    def __init__(self, radius_divisor: int, storage_dtype: torch.dtype | None = None):
        self.radius_divisor = radius_divisor
        self.storage_dtype = storage_dtype
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None
        self.a = torch.ones(())
        self.b = torch.ones(())
        self._ab = (1.0, 1.0)
        self.refreshed = False  # a full step has filled low/high since the last reset

    def allocate(self, shape, dtype, device) -> None:
        """Buffers for samples of `shape` (kept when they already fit)."""
        dtype = self.storage_dtype or dtype
        self.low = fitting_buffer(self.low, shape, dtype, device)
        self.high = fitting_buffer(self.high, shape, dtype, device)
        self.a, self.b = self.a.to(device), self.b.to(device)
        self._ab = (None, None)
        self.set_weights(1.0, 1.0)

    def reset(self) -> None:
        self.set_weights(1.0, 1.0)
        self.refreshed = False

    def set_weights(self, a: float, b: float) -> None:
        if (a, b) != self._ab:
            self.a.fill_(a)
            self.b.fill_(b)
            self._ab = (a, b)

    def full(self) -> None:
        """A full step: the weights restart at 1."""
        self.set_weights(1.0, 1.0)

    def skip(self, low_mult: float, high_mult: float) -> None:
        """A skip step: the weights compound (docs/algorithms.md §2)."""
        a, b = self._ab
        self.set_weights(a * low_mult, b * high_mult)

    def refresh(self, other: torch.Tensor, computed: torch.Tensor) -> None:
        """Inside a graph or eager: R = other - computed, split into its low and high frequencies."""
        ops.cfg_residual_split(other, computed, self.radius_divisor, out=(self.low, self.high))

    def reconstruct(self, computed: torch.Tensor) -> torch.Tensor:
        return ops.cfg_recombine(computed, self.low, self.high, self.a, self.b)

    def nbytes(self) -> int:
        return 0 if self.low is None else 2 * self.low.numel() * self.low.element_size()
