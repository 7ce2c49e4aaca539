"""TeaCache (Liu et al. 2024, arXiv 2411.19108): the stack's residual reused while the rescaled accumulated change of
an input indicator stays under a threshold.

The rule: docs/algorithms.md section(s) 5, 11.
config.py: TeaCacheConfig and the published coefficient presets
hooks.py: TeaCacheHooks
The kernels it calls: ops.feature_diff (the indicator's change, runtime/adaptive.metric_value), ops.residual_sum,
ops.forecast (forecast_order) (each op: ops/, reference/, triton/, csrc/cpu, csrc/cuda).
Shared block machinery (hooks on the blocks, chains, host/device decisions): runtime/adaptive.py.
"""

from .config import TeaCacheConfig
from .hooks import TeaCacheHooks

__all__ = ["TeaCacheConfig", "TeaCacheHooks"]
