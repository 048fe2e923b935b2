"""What every block shares: reading a params dict, dotted prefixes, and the thin module class.

A block's pure pair takes its parameters as a dict keyed by PyTorch's names
(``{"mlp.0.weight": w1, "mlp.2.weight": w2}``) and returns its gradients in a dict of the same
keys.  :func:`take_params` validates that dict (keys, dtypes, array library, shapes) with the
wording of :mod:`npattn.checks`; :func:`split_params` and :func:`prefixed` move between a
composite block's names (``"ca.mlp.0.weight"``) and its parts' (``"mlp.0.weight"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from ..backend import namespace
from ..checks import argument_error, check_float_array, check_int
from ..init import as_generator, kaiming_uniform
from ..module import Module

__all__ = ["take_params", "split_params", "prefixed", "hidden_width", "check_odd", "Block", "BottleneckBlock"]


def take_params(op: str, params: Any, x: Any, shapes: Mapping[str, tuple[Any, ...]],
                optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check a block's ``params`` against ``x`` and return them (optional ones may be absent).

    Parameters
    ----------
    op : str
        The block's pure function, for messages (``"se"``).
    params : mapping of str to array
    x : array
        The block's input: every parameter must share its dtype and array library.
    shapes : mapping of name to shape
        The expected shape of each parameter.  A size may be a string naming a free size
        (``"h"``): it takes its value where it first appears and must agree wherever else.
    optional : tuple of str
        Names in ``shapes`` that may be missing.

    Raises
    ------
    TypeError
        ``params`` not a mapping; a parameter not a real floating array, or of another dtype
        or array library than ``x``.
    ValueError
        A missing or unexpected key, or a wrong shape.
    """
    if not isinstance(params, Mapping):
        raise argument_error(op, "params", "a mapping of parameter name to array",
                             type(params).__name__, TypeError)
    missing = [k for k in shapes if k not in params and k not in optional]
    unexpected = [k for k in params if k not in shapes]
    if missing or unexpected:
        raise argument_error(op, "params", f"the keys {list(shapes)}",
                             f"missing {missing}, unexpected {unexpected}")
    taken = {k: params[k] for k in shapes if k in params}
    sizes: dict[str, int] = {}
    for name, p in taken.items():
        arg = f"params[{name!r}]"
        check_float_array(op, arg, p, ndim=len(shapes[name]))
        namespace(op, x=x, **{arg: p})
        if p.dtype != x.dtype:
            raise argument_error(op, arg, f"dtype {x.dtype} (the dtype of 'x')", f"dtype {p.dtype}",
                                 TypeError)
        for w, size in zip(shapes[name], p.shape):
            if isinstance(w, str):
                sizes.setdefault(w, size)
        want = tuple(sizes.get(w, w) if isinstance(w, str) else w for w in shapes[name])
        if want != tuple(p.shape):
            raise argument_error(op, arg, f"shape {want}", f"shape {tuple(p.shape)}")
    return taken


def split_params(op: str, params: Any, prefixes: tuple[str, ...]) -> list[dict[str, Any]]:
    """A composite block's ``params`` split by prefix: ``"ca.mlp.0.weight"`` -> ``"mlp.0.weight"``.

    Raises
    ------
    TypeError, ValueError
        ``params`` not a mapping, or a key under none of the prefixes.
    """
    if not isinstance(params, Mapping):
        raise argument_error(op, "params", "a mapping of parameter name to array",
                             type(params).__name__, TypeError)
    heads = tuple(p + "." for p in prefixes)
    unexpected = [k for k in params if not k.startswith(heads)]
    if unexpected:
        raise argument_error(op, "params", f"keys under {list(heads)}", f"unexpected {unexpected}")
    return [{k[len(h):]: v for k, v in params.items() if k.startswith(h)} for h in heads]


def prefixed(prefix: str, grads: Mapping[str, Any]) -> dict[str, Any]:
    """``grads`` with every key put under ``prefix.`` (the inverse of :func:`split_params`)."""
    return {f"{prefix}.{k}": v for k, v in grads.items()}


def hidden_width(channels: int, reduction: int) -> int:
    """The bottleneck width of SE and channel attention: ``max(1, channels // reduction)``."""
    return max(1, channels // reduction)


def check_odd(op: str, arg: str, value: Any) -> int:
    """An odd int >= 1 (a kernel that a 'same' padding of ``k // 2`` centres)."""
    k = check_int(op, arg, value, minimum=1)
    if k % 2 == 0:
        raise argument_error(op, arg, "an odd int (so that padding k // 2 keeps the size)", k)
    return k


class Block(Module):
    """A thin module over a block's pure pair.

    Subclasses set ``pure_forward(x, params) -> (y, cache)`` and
    ``pure_backward(dy, cache) -> (dx, dparams)`` (as staticmethods), register their
    parameters, and set ``channels`` (or ``None`` when any channel count will do).
    """

    pure_forward: Callable[..., Any]
    pure_backward: Callable[..., Any]
    channels: int | None = None

    def check_input(self, x: Any) -> None:
        """``x`` must be (N, C, H, W) with the block's channel count."""
        check_float_array(self.name, "x", x, ndim=4, layout="(N, C, H, W)")
        if self.channels is not None and x.shape[1] != self.channels:
            raise argument_error(self.name, "x", f"{self.channels} channels, shape "
                                 f"(N, {self.channels}, H, W)", f"shape {tuple(x.shape)}")

    def _forward(self, x: Any) -> tuple[Any, Any]:
        self.check_input(x)
        return type(self).pure_forward(x, dict(self.params))

    def _backward(self, dy: Any, cache: Any) -> tuple[Any, dict[str, Any]]:
        return type(self).pure_backward(dy, cache)

    def attention_map(self, x: Any) -> Any:
        """The attention map for input ``x`` (keeps no cache: a later backward is unaffected)."""
        _, cache = self._forward(x)
        return cache.map


class BottleneckBlock(Block):
    """A block whose parameters are a bias-free ``C -> h -> C`` bottleneck (SE, channel attention).

    Subclasses set ``weight_names`` (the squeeze's and the expansion's PyTorch names) and
    ``kernel``: ``()`` for linear layers, ``(1, 1)`` for 1x1 convolutions.  Both weights are
    drawn like PyTorch's defaults, the squeeze first, from one generator.
    """

    weight_names: tuple[str, str]
    kernel: tuple[int, ...] = ()

    def __init__(self, channels: int, reduction: int = 16, *, rng: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        self.channels = check_int(self.name, "channels", channels, minimum=1)
        self.reduction = check_int(self.name, "reduction", reduction, minimum=1)
        h = hidden_width(self.channels, self.reduction)
        gen = as_generator(rng, self.name)
        squeeze, expand = self.weight_names
        self.add_param(squeeze, kaiming_uniform((h, self.channels, *self.kernel), gen, dtype=dtype))
        self.add_param(expand, kaiming_uniform((self.channels, h, *self.kernel), gen, dtype=dtype))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
