"""fastercache_kernels: fused ops and compile-friendly cache policies for video diffusion transformers.

Importing this package never initialises CUDA and never requires a compiled module.
"""

from . import adapters, ops, pipeline
from ._backend import BackendUnavailableError, available_backends, use_backend
from ._version import __version__
from .api import FasterCacheHandle, apply
from .policies.fastercache import FasterCacheConfig

__all__ = ["ops", "adapters", "pipeline", "apply", "FasterCacheConfig", "FasterCacheHandle", "use_backend",
           "available_backends", "BackendUnavailableError", "__version__"]
