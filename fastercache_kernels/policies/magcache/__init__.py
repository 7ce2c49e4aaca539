"""MagCache (Ma et al. 2025, arXiv 2506.09045): reuse decided before the call from calibrated magnitude ratios of
successive residuals.

The rule: docs/algorithms.md section(s) 12.
config.py: MagCacheConfig (ratios from `calibrate`)
hooks.py: MagCacheHooks
The kernels it calls: ops.residual_sum, ops.forecast (forecast_order) (each op: ops/, reference/, triton/, csrc/cpu,
csrc/cuda).
Shared block machinery (hooks on the blocks, chains, host/device decisions): runtime/adaptive.py.
"""

from .config import MagCacheConfig
from .hooks import MagCacheHooks

__all__ = ["MagCacheConfig", "MagCacheHooks"]
