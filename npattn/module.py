"""The module protocol: a small stateful shell over the pure forward/backward pairs.

A :class:`Module` owns named parameters (PyTorch's names, dotted for nested modules, e.g.
``"ca.mlp.0.weight"``), their gradients, and the cache of its last forward::

    y = m.forward(x)          # or m(x); keeps the cache the backward needs
    dx = m.backward(dy)       # adds each parameter's gradient into m.grads, frees the cache
    m.zero_grad()             # gradients back to zero
    m.params[name] -= lr * m.grads[name]

Gradients accumulate over backward calls, as in PyTorch, until :meth:`Module.zero_grad`.  One
backward per forward: a backward before any forward, or a second one after a single forward,
raises a ``RuntimeError`` that names the module.

A subclass defines ``_forward(x) -> (y, cache)`` and ``_backward(dy, cache) -> (dx, dparams)``,
``dparams`` a dict keyed by parameter names relative to the module (dotted into its children
where it computes through them), and registers its parameters and children in ``__init__``
with :meth:`Module.add_param` and :meth:`Module.add_child`.  A composite module whose children
compute themselves (:class:`npattn.layers.Sequential`) returns an empty ``dparams``: the
children's own backward calls fill their gradients.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from .backend import cupy_available, to_device, to_numpy
from .checks import argument_error

__all__ = ["Module", "TensorView"]

_DTYPES = ("float32", "float64")
_DEVICES = ("cpu", "gpu")


class TensorView(MutableMapping):
    """A live view of a module tree's parameters (or gradients) under dotted names.

    Reading returns the array stored in the module that owns it; assigning ``view[name] = a``
    replaces that array in its owner (same shape required).  Names cannot be added or deleted.
    Iteration order is PyTorch's: a module's own entries first, then each child's in turn.
    """

    def __init__(self, module: Module, kind: str) -> None:
        self._module = module
        self._kind = kind  # "_params" or "_grads"

    def _owner(self, name: str) -> tuple[Module, str]:
        """The module storing ``name`` and the name there: its own entry, else a child's."""
        module, full = self._module, name
        while name not in getattr(module, self._kind):
            head, dot, rest = name.partition(".")
            if not dot or head not in module._children:
                raise KeyError(full)
            module, name = module._children[head], rest
        return module, name

    def __getitem__(self, name: str) -> Any:
        module, leaf = self._owner(name)
        return getattr(module, self._kind)[leaf]

    def __setitem__(self, name: str, value: Any) -> None:
        module, leaf = self._owner(name)
        old = getattr(module, self._kind)[leaf]
        if tuple(getattr(value, "shape", ())) != tuple(old.shape):
            raise argument_error(f"{self._module.name}.{self._kind[1:]}", name,
                                 f"an array of shape {tuple(old.shape)}",
                                 f"shape {tuple(getattr(value, 'shape', ()))}")
        getattr(module, self._kind)[leaf] = value

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"{self._module.name}.{self._kind[1:]}: entries cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        yield from getattr(self._module, self._kind)
        for prefix, child in self._module._children.items():
            for name in TensorView(child, self._kind):
                yield f"{prefix}.{name}"

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k!r}: {tuple(v.shape)}" for k, v in self.items())
        return f"{{{shapes}}}"


class Module:
    """Base class of every stateful layer and block.

    Attributes
    ----------
    params : TensorView
        Parameters by name (live view; assignment replaces the array in its owner).
    grads : TensorView
        Gradients by name, the shapes of ``params``; zero until a backward adds into them.
    training : bool
        ``True`` after :meth:`train` (the default), ``False`` after :meth:`eval`.
    """

    def __init__(self) -> None:
        self._params: dict[str, Any] = {}
        self._grads: dict[str, Any] = {}
        self._children: dict[str, Module] = {}
        self._cache: Any = None
        self._state = "fresh"  # "fresh" (no forward yet), "forward" (cache held), "spent"
        self.training = True

    # ------------------------------------------------------------------------------ building

    @property
    def name(self) -> str:
        """The class name, used in error messages."""
        return type(self).__name__

    def add_param(self, name: str, value: Any) -> Any:
        """Register parameter ``name`` with a zero gradient; return ``value``.

        A dotted ``name`` (``"mlp.0.weight"``) is kept as it is: a module need not build a
        child per PyTorch submodule to carry PyTorch's names.
        """
        self._params[name] = value
        self._grads[name] = _zeros_like(value)
        return value

    def add_child(self, name: str, module: Module) -> Module:
        """Register ``module`` as child ``name``: its parameters appear as ``name.*``."""
        self._children[name] = module
        return module

    def children(self) -> dict[str, Module]:
        """The direct children, by name."""
        return dict(self._children)

    @property
    def params(self) -> TensorView:
        return TensorView(self, "_params")

    @property
    def grads(self) -> TensorView:
        return TensorView(self, "_grads")

    # ------------------------------------------------------------------- forward and backward

    def _forward(self, x: Any) -> tuple[Any, Any]:
        raise NotImplementedError(f"{self.name} defines no _forward")

    def _backward(self, dy: Any, cache: Any) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError(f"{self.name} defines no _backward")

    def forward(self, x: Any) -> Any:
        """Compute the output and keep what one backward needs."""
        y, cache = self._forward(x)
        self._cache, self._state = cache, "forward"
        return y

    def __call__(self, x: Any) -> Any:
        """Same as :meth:`forward` (also where a subclass overrides it)."""
        return self.forward(x)

    def backward(self, dy: Any) -> Any:
        """Return ``dx`` for the last forward, and add each parameter's gradient into ``grads``.

        Raises
        ------
        RuntimeError
            Before any forward, or for a second backward after a single forward (the cache is
            freed by the first).
        """
        if self._state == "fresh":
            raise RuntimeError(f"{self.name}.backward: called before forward; "
                               f"call forward(x) first")
        if self._state == "spent":
            raise RuntimeError(f"{self.name}.backward: called a second time after one forward "
                               f"(the first backward freed the cache); call forward(x) again")
        dx, dparams = self._backward(dy, self._cache)
        self._cache, self._state = None, "spent"
        grads = self.grads
        for name, g in dparams.items():
            grads[name] = grads[name] + g
        return dx

    def zero_grad(self) -> None:
        """Set every gradient, children's included, to zero."""
        for name, g in list(self._grads.items()):
            self._grads[name] = _zeros_like(g)
        for child in self._children.values():
            child.zero_grad()

    def train(self, mode: bool = True) -> Module:
        """Set ``training`` on this module and every child; return ``self``."""
        self.training = bool(mode)
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Same as ``train(False)``."""
        return self.train(False)

    # --------------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """A copy of every parameter, by dotted name, in the module's array library."""
        return {name: array_namespace(p).asarray(p, copy=True) for name, p in self.params.items()}

    def load_state_dict(self, state: Mapping[str, Any] | str | os.PathLike, strict: bool = True) -> None:
        """Load parameters from a dict of arrays or an ``.npz`` file (read without pickle).

        Each value is cast to the parameter's dtype and moved to its library and device.
        With ``strict`` every key must match; shapes must match always.  Nothing is loaded
        unless everything fits.

        Raises
        ------
        ValueError
            One error listing every missing key, unexpected key and wrong shape.
        TypeError
            If ``state`` is neither a mapping nor a path.
        """
        op = f"{self.name}.load_state_dict"
        if isinstance(state, (str, os.PathLike)):
            with np.load(state, allow_pickle=False) as npz:
                state = {k: npz[k] for k in npz.files}
        if not isinstance(state, Mapping):
            raise argument_error(op, "state_dict", "a mapping of name to array, or an .npz path",
                                 type(state).__name__, TypeError)
        params = self.params
        problems = []
        if strict:
            problems += [f"missing key {k!r}" for k in params if k not in state]
            problems += [f"unexpected key {k!r}" for k in state if k not in params]
        loaded = {}
        for name in params:
            if name not in state:
                continue
            value = to_numpy(state[name])
            want = tuple(params[name].shape)
            if tuple(value.shape) != want:
                problems.append(f"{name!r} has shape {tuple(value.shape)}, expected {want}")
            loaded[name] = value
        if problems:
            raise argument_error(op, "state_dict", f"the names and shapes of {self.name}'s parameters",
                                 f"{len(problems)} problem(s): " + "; ".join(problems))
        for name, value in loaded.items():
            params[name] = _like(value, params[name])
        self._drop_caches()

    def to(self, target: str | ModuleType, device: Any = None) -> Module:
        """Move or cast every parameter and gradient; return ``self``.

        Parameters
        ----------
        target : {"cpu", "gpu", "float32", "float64"} or an array namespace
            A device (NumPy arrays for ``"cpu"``, CuPy for ``"gpu"``), a dtype, or an array-API
            namespace such as ``array_api_strict`` whose ``asarray`` takes the arrays over.
        device : optional
            With a namespace ``target`` only: the device of that library to put the arrays on
            (``array_api_strict.Device("device1")``); default, the library's default device.

        Raises
        ------
        RuntimeError
            For ``"gpu"`` where CuPy does not import or sees no GPU (the message says which),
            before anything moves.
        """
        op = f"{self.name}.to"
        is_namespace = isinstance(target, ModuleType) and hasattr(target, "asarray")
        if device is not None and not is_namespace:
            raise argument_error(op, "device", "None unless 'target' is an array namespace",
                                 repr(device), TypeError)
        if target in _DTYPES:
            convert = lambda a: array_namespace(a).astype(a, getattr(array_namespace(a), target))  # noqa: E731
        elif target in _DEVICES:
            ok, why = cupy_available() if target == "gpu" else (True, "")
            if not ok:  # checked here too, so a module without parameters fails alike
                raise RuntimeError(f"{op}: cannot move to 'gpu': {why}")
            convert = lambda a: to_device(a, target)  # noqa: E731
        elif is_namespace:
            where = {} if device is None else {"device": device}
            convert = lambda a: target.asarray(to_numpy(a), **where)  # noqa: E731
        else:
            raise argument_error(op, "target",
                                 "'cpu', 'gpu', 'float32', 'float64' or an array namespace",
                                 repr(target), TypeError if not isinstance(target, str) else ValueError)
        self._map_arrays(convert)
        return self

    def _map_arrays(self, fn: Any) -> None:
        for store in (self._params, self._grads):
            for name, a in list(store.items()):
                store[name] = fn(a)
        self._drop_caches(recurse=False)
        for child in self._children.values():
            child._map_arrays(fn)

    def _drop_caches(self, recurse: bool = True) -> None:
        """Forget a held forward (its arrays no longer match the parameters)."""
        self._cache, self._state = None, "fresh"
        if recurse:
            for child in self._children.values():
                child._drop_caches()

    def extra_repr(self) -> str:
        """The constructor arguments, for ``repr``; subclasses override it."""
        return ""

    def __repr__(self) -> str:
        if not self._children:
            return f"{self.name}({self.extra_repr()})"
        inner = "".join(f"\n  ({k}): " + repr(c).replace("\n", "\n  ") for k, c in self._children.items())
        return f"{self.name}({self.extra_repr()}{inner}\n)"


def _zeros_like(a: Any) -> Any:
    return array_namespace(a).zeros_like(a)


def _like(value: np.ndarray, ref: Any) -> Any:
    """A NumPy array as an array of ``ref``'s library, device and dtype."""
    xp = array_namespace(ref)
    return xp.astype(xp.asarray(value, device=device(ref)), ref.dtype)
