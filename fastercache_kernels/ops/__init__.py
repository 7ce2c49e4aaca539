"""The fused ops, as `fk.ops.<name>` and `torch.ops.fastercache.<name>`."""

from .extrapolate import extrapolate

__all__ = ["extrapolate"]
