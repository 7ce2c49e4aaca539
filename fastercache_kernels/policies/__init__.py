"""Cache policies: schedule, state and decision of each method."""

from .fastercache import PRESETS, CallPlan, FasterCacheConfig, FasterCacheSchedule

__all__ = ["FasterCacheConfig", "FasterCacheSchedule", "CallPlan", "PRESETS"]
