"""The fused ops, as `fk.ops.<name>` and `torch.ops.fastercache.<name>`."""

from .cfg_recombine import cfg_recombine, cfg_recombine_guided
from .cfg_residual_split import cfg_residual_split
from .extrapolate import extrapolate
from .extrapolate_residual import extrapolate_residual
from .feature_diff import feature_diff, feature_diff_from_partials, feature_diff_partials
from .motion_score import motion_score
from .residual_diff_update import residual_diff_update
from .residual_sum import residual_sum

__all__ = [
    "cfg_recombine", "cfg_recombine_guided", "cfg_residual_split", "extrapolate", "extrapolate_residual",
    "feature_diff", "feature_diff_from_partials", "feature_diff_partials", "motion_score", "residual_diff_update",
    "residual_sum",
]
