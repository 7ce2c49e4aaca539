"""AdaCache (Kahatapitiya et al. 2024, arXiv 2411.02397) with motion regularisation: per-block residuals reused for a
stretch chosen from a codebook by how much they changed.

The rule: docs/algorithms.md section(s) 4, 11.
config.py: AdaCacheConfig, codebooks
hooks.py: AdaCacheHooks
The kernels it calls: ops.feature_diff_partials (metric), ops.motion_score (MoReg), ops.residual_sum, ops.forecast
(forecast_order) (each op: ops/, reference/, triton/, csrc/cpu, csrc/cuda).
Shared block machinery (hooks on the blocks, chains, host/device decisions): runtime/adaptive.py.
"""

from .config import AdaCacheConfig
from .hooks import AdaCacheHooks

__all__ = ["AdaCacheConfig", "AdaCacheHooks"]
