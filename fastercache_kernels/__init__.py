"""fastercache_kernels: fused ops and compile-friendly cache policies for video diffusion transformers.

Importing this package never initialises CUDA and never requires a compiled module.
"""

from . import adapters, ops, pipeline, runtime
from ._backend import BackendUnavailableError, available_backends, use_backend
from ._version import __version__
from .api import Handle, PipelineHandle, apply
from .conventions import is_applied, remove
from .policies.adacache.config import AdaCacheConfig
from .policies.fastercache.config import FasterCacheConfig
from .policies.fbcache.config import FirstBlockCacheConfig
from .policies.magcache.config import MagCacheConfig
from .policies.seacache.config import SeaCacheConfig
from .policies.taylorseer.config import TaylorSeerConfig
from .policies.teacache.config import TeaCacheConfig

__all__ = ["ops", "adapters", "pipeline", "runtime", "apply", "remove", "is_applied", "Handle", "PipelineHandle",
           "FasterCacheConfig", "AdaCacheConfig", "TeaCacheConfig", "FirstBlockCacheConfig", "MagCacheConfig",
           "TaylorSeerConfig", "SeaCacheConfig", "use_backend",
           "available_backends", "BackendUnavailableError", "__version__"]
