"""The fused ops, as `fk.ops.<name>` and `torch.ops.fastercache.<name>`.

Every module of this package that does not start with "_" is an op module: importing it declares its ops
(`_define.define`); its `__all__` lists the public functions exported here.
"""

import importlib as _importlib
import pkgutil as _pkgutil

__all__ = []
for _info in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        _mod = _importlib.import_module(f".{_info.name}", __name__)
        for _name in _mod.__all__:
            globals()[_name] = getattr(_mod, _name)
        __all__ += _mod.__all__
__all__.sort()
