"""Optional dependencies: which extra of pyproject.toml brings each one, and an error that names it.

The package itself needs only torch and numpy; the demo, the benchmark chart, training and the examples need more.
"""

from __future__ import annotations

import importlib

# import name -> (the pip name, the extras that carry it); kept in step with [project.optional-dependencies]
EXTRAS = {
    "demo": ("tqdm", "diffusers", "safetensors", "skimage", "PIL"),  # demo, quality and train
    "train": ("tqdm", "diffusers", "safetensors", "matplotlib"),
    "plot": ("matplotlib",),  # bench --plot
    "examples": ("diffusers", "transformers", "PIL"),  # python/*_example.py
}
PIP_NAMES = {"skimage": "scikit-image", "PIL": "pillow"}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(extra: str, what: str) -> None:
    """Raise MissingExtraError naming `extra` when any module of that extra does not import; `what` is the
    command or feature that needs it ("python -m fastercache_kernels demo")."""
    missing = []
    for name in EXTRAS[extra]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(PIP_NAMES.get(name, name))
    if missing:
        raise MissingExtraError(f"{what} needs {', '.join(missing)}, not installed here: "
                                f'pip install "fastercache_kernels[{extra}]"', name=missing[0])
