"""The fused ops, as `fk.ops.<name>` and `torch.ops.fastercache.<name>`."""

# TEMPORARY: pure-torch stand-ins until the fused CFG-Cache ops land (the integrator deletes _pending_cfg.py).
from ._pending_cfg import cfg_recombine, cfg_recombine_guided, cfg_residual_split
from .extrapolate import extrapolate

__all__ = ["extrapolate", "cfg_residual_split", "cfg_recombine", "cfg_recombine_guided"]
