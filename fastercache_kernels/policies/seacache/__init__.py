"""SeaCache (arXiv 2602.18993): the stack's residual reused while the accumulated change of the spectrally (SEA-)
filtered input latents stays under a threshold.

The rule: docs/algorithms.md section(s) 14.
config.py: SeaCacheConfig
hooks.py: SeaCacheHooks
The kernels it calls: torch.fft for the filter, ops.residual_sum, ops.forecast (each op: ops/, reference/, triton/,
csrc/cpu, csrc/cuda).
Shared block machinery (hooks on the blocks, chains, host/device decisions): runtime/adaptive.py.
"""

from .config import SeaCacheConfig
from .hooks import SeaCacheHooks

__all__ = ["SeaCacheConfig", "SeaCacheHooks"]
