"""First-Block-Cache: the whole stack's residual reused while the first block's residual barely moves.

The rule: docs/algorithms.md section(s) 5, 10, 11.
config.py: FirstBlockCacheConfig and its per-model presets
hooks.py: FirstBlockCacheHooks (on runtime/adaptive.py's block machinery)
diffusers.py: the hooks behind diffusers' FirstBlockCacheConfig as a drop-in (policies/diffusers_compat.py)
The kernels it calls: ops.feature_diff (the metric, runtime/adaptive.metric_value), ops.residual_diff_update (device
decisions), ops.residual_sum, ops.forecast (forecast_order) (each op: ops/, reference/, triton/, csrc/cpu,
csrc/cuda).
Shared block machinery (hooks on the blocks, chains, host/device decisions): runtime/adaptive.py.
"""

from .config import FirstBlockCacheConfig
from .hooks import FirstBlockCacheHooks

__all__ = ["FirstBlockCacheConfig", "FirstBlockCacheHooks"]
