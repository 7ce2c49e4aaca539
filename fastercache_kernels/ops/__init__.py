"""The fused ops, as `fk.ops.<name>` and `torch.ops.fastercache.<name>`."""

from .extrapolate import extrapolate
from .cfg_recombine import cfg_recombine, cfg_recombine_guided
from .cfg_residual_split import cfg_residual_split
from .extrapolate_residual import extrapolate_residual
from .residual_sum import residual_sum

__all__ = ["extrapolate"]
__all__ += ["cfg_recombine", "cfg_recombine_guided", "cfg_residual_split", "extrapolate_residual", "residual_sum"]
