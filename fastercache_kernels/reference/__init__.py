"""Pure-PyTorch fp32 references: the test oracle and the last fallback of every op.

Every module here is one op's reference; it exports its `__all__`, or else the function named like the module.
"""

import importlib as _importlib
import pkgutil as _pkgutil

__all__ = []
for _info in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        _mod = _importlib.import_module(f".{_info.name}", __name__)
        for _name in getattr(_mod, "__all__", [_info.name]):
            globals()[_name] = getattr(_mod, _name)
            __all__.append(_name)
