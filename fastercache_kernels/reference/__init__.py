"""Pure-PyTorch fp32 references: the test oracle and the last fallback of every op."""

from .extrapolate import extrapolate

__all__ = ["extrapolate"]
