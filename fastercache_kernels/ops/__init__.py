"""The fused ops, as `fk.ops.<name>` and `torch.ops.fastercache.<name>`."""

from .extrapolate import extrapolate
from .cfg_recombine import cfg_recombine, cfg_recombine_guided
from .cfg_residual_split import cfg_residual_split
from .extrapolate_residual import extrapolate_residual
from .residual_sum import residual_sum

__all__ = ["extrapolate"]

from .feature_diff import feature_diff, feature_diff_from_partials, feature_diff_partials  # noqa: E402
from .motion_score import motion_score  # noqa: E402
from .residual_diff_update import residual_diff_update  # noqa: E402

__all__ += ["feature_diff", "feature_diff_partials", "feature_diff_from_partials", "residual_diff_update",
            "motion_score"]
__all__ += ["cfg_recombine", "cfg_recombine_guided", "cfg_residual_split", "extrapolate_residual", "residual_sum"]
