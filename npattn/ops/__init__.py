"""Pure forward/backward pairs, one module per family.

``NAME_forward(...) -> (y, cache)`` and ``NAME_backward(dy, cache) -> gradients``: the bare
gradient for a one-input op, else a tuple in argument order (``None`` for an absent bias).
Every family registers its ops in :data:`REGISTRY` when imported; importing this package
imports every family module in this folder and re-exports its ``__all__``.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from ._registry import REGISTRY, OpSpec, register_op

__all__ = ["REGISTRY", "OpSpec", "register_op"]

for _info in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        _module = _importlib.import_module(f"{__name__}.{_info.name}")
        globals().update({_name: getattr(_module, _name) for _name in _module.__all__})
        __all__ += list(_module.__all__)
