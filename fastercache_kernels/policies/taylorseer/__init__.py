"""TaylorSeer (Liu et al. 2025, arXiv 2503.06923): on a fixed interval, reused values are forecast by a Taylor
expansion from the last computed ones (per module, or the stack's output: 'lite').

The rule: docs/algorithms.md section(s) 13.
config.py: TaylorSeerConfig
hooks.py: TaylorSeerHooks (per module / lite), TaylorSeerResidualHooks
The kernels it calls: ops.forecast over a History ring buffer (runtime/forecast.py) (each op: ops/, reference/,
triton/, csrc/cpu, csrc/cuda).
Shared block machinery (hooks on the blocks, chains, host/device decisions): runtime/adaptive.py.
"""

from .config import TaylorSeerConfig
from .hooks import TaylorSeerHooks

__all__ = ["TaylorSeerConfig", "TaylorSeerHooks"]
