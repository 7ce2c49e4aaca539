"""FasterCache (Lv et al. 2024, arXiv 2410.19355): attention outputs reused by extrapolation and the CFG residual
reused split by frequency.

The rule: docs/algorithms.md section(s) 1, 2, 3, 6.
config.py: FasterCacheConfig, its presets and call-kind schedule (FasterCacheSchedule, CallPlan)
hooks.py: FasterCacheHooks (attention caches, CFG-skip calls, per-branch CFG-Cache)
cfg.py: CFGResidual, the stored low/high-frequency residual
The kernels it calls: ops.forecast (attention reuse: the extrapolation as weights (1 + w, -w) on the two stored
outputs), ops.cfg_residual_split and ops.cfg_recombine (CFG-Cache) (each op: ops/, reference/, triton/, csrc/cpu,
csrc/cuda).
The engine it plugs into: runtime/engine.py (it shares no block machinery with the adaptive policies).
"""

from .config import BRANCHES, CallPlan, FasterCacheConfig, FasterCacheSchedule, KINDS, PRESETS
from .hooks import FasterCacheHooks

__all__ = ["BRANCHES", "CallPlan", "FasterCacheConfig", "FasterCacheSchedule", "KINDS", "PRESETS", "FasterCacheHooks"]
