"""fastercache_kernels: fused ops and compile-friendly cache policies for video diffusion transformers.

Importing this package never initialises CUDA and never requires a compiled module.
"""

from . import adapters, ops, pipeline
from ._backend import BackendUnavailableError, available_backends, use_backend
from ._version import __version__
from .api import AdaptiveHandle, FasterCacheHandle, apply
from .policies.adacache import AdaCacheConfig
from .policies.fastercache import FasterCacheConfig
from .policies.fbcache import FirstBlockCacheConfig
from .policies.teacache import TeaCacheConfig

__all__ = ["ops", "adapters", "pipeline", "apply", "FasterCacheConfig", "FasterCacheHandle", "AdaCacheConfig",
           "TeaCacheConfig", "FirstBlockCacheConfig", "AdaptiveHandle", "use_backend", "available_backends",
           "BackendUnavailableError", "__version__"]
