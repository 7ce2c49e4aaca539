"""Model adapters: which modules to cache, the output layout, where the timestep and the CFG batch are."""

from .base import Adapter, OutputLayout
from .generic import generic_adapter

__all__ = ["Adapter", "OutputLayout", "generic_adapter", "for_model"]


def for_model(model) -> Adapter | None:
    """The adapter registered for the model's class, or None."""
    from . import cogvideox, latte

    for mod in (cogvideox, latte):
        if mod.ADAPTER.matches(model):
            return mod.ADAPTER
    return None
