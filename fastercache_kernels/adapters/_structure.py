"""Structure checks shared by the seed-model adapters: they recognise a class by its name AND the module names
the cache depends on, never by importing the model's package."""

from __future__ import annotations

import re

import torch


def has_module(model: torch.nn.Module, pattern: str) -> bool:
    """Whether some `model.named_modules()` name matches `pattern` (re.fullmatch)."""
    rx = re.compile(pattern)
    return any(rx.fullmatch(name) for name, _ in model.named_modules())


def named(model: torch.nn.Module, class_name: str, *patterns: str) -> bool:
    return type(model).__name__ == class_name and all(has_module(model, p) for p in patterns)
