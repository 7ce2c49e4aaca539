"""Pure-PyTorch fp32 references: the test oracle and the last fallback of every op."""

from .extrapolate import extrapolate

__all__ = ["extrapolate"]

from .feature_diff import feature_diff, feature_diff_partials  # noqa: E402
from .motion_score import motion_score  # noqa: E402
from .residual_diff_update import residual_diff_update  # noqa: E402

__all__ += ["feature_diff", "feature_diff_partials", "residual_diff_update", "motion_score"]
