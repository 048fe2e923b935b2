"""Element-wise activations and softmax: ``relu``, ``sigmoid``, ``softmax``.

Each backward keeps only the forward's output ``y``: every derivative here is a function of it.
Derivations: ``docs/ops/activation.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import namespace
from ..checks import argument_error, check_axis, check_float_array, check_shape
from ._registry import register_op

__all__ = [
    "relu_forward", "relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "softmax_forward", "softmax_backward",
]


class OutputCache(NamedTuple):
    """What an activation's backward needs: its output ``y``."""

    y: Any


class SoftmaxCache(NamedTuple):
    """Softmax's output ``y`` and the axis it normalised over."""

    y: Any
    axis: int


# ----------------------------------------------------------------------------------------- relu

def relu_forward(x: Any) -> tuple[Any, OutputCache]:
    """``y = max(x, 0)``.

    Parameters
    ----------
    x : array, any shape, float32 or float64

    Returns
    -------
    y : array, the shape and dtype of ``x``
    cache : OutputCache
        ``y``.
    """
    xp = namespace("relu", x=x)
    check_float_array("relu", "x", x)
    y = xp.maximum(x, xp.zeros_like(x))
    return y, OutputCache(y)


def relu_backward(dy: Any, cache: OutputCache) -> Any:
    """``dx = dy * [y > 0]``.

    The derivative at ``x = 0`` is taken as 0, as in PyTorch.  ``dy`` is not modified.
    """
    check_shape("relu_backward", "dy", dy, cache.y.shape)
    xp = namespace("relu_backward", dy=dy, y=cache.y)
    return xp.where(cache.y > 0, dy, xp.zeros_like(dy))


# -------------------------------------------------------------------------------------- sigmoid

def sigmoid_forward(x: Any) -> tuple[Any, OutputCache]:
    """``y = 1 / (1 + exp(-x))``, computed as ``(1 + tanh(x / 2)) / 2``.

    The ``tanh`` form never overflows, so ``y`` is finite (0 or 1 at the extremes) for any
    finite ``x``, e.g. ``x = -1e4``.

    Parameters
    ----------
    x : array, any shape, float32 or float64

    Returns
    -------
    y : array, the shape and dtype of ``x``, in [0, 1]
    cache : OutputCache
        ``y``.
    """
    xp = namespace("sigmoid", x=x)
    check_float_array("sigmoid", "x", x)
    y = 0.5 * (xp.tanh(0.5 * x) + 1.0)
    return y, OutputCache(y)


def sigmoid_backward(dy: Any, cache: OutputCache) -> Any:
    """``dx = dy * y * (1 - y)``."""
    check_shape("sigmoid_backward", "dy", dy, cache.y.shape)
    namespace("sigmoid_backward", dy=dy, y=cache.y)
    y = cache.y
    return dy * y * (1.0 - y)


# -------------------------------------------------------------------------------------- softmax

def softmax_forward(x: Any, axis: int = -1) -> tuple[Any, SoftmaxCache]:
    """``y = exp(x - max x) / sum(exp(x - max x))`` along ``axis``.

    Subtracting the maximum changes nothing mathematically and keeps ``exp`` from overflowing.

    Parameters
    ----------
    x : array, any shape with at least one dimension, float32 or float64
    axis : int
        The axis that sums to one.

    Returns
    -------
    y : array, the shape and dtype of ``x``
    cache : SoftmaxCache
        ``y`` and the axis.
    """
    xp = namespace("softmax", x=x)
    check_float_array("softmax", "x", x)
    if x.ndim == 0:
        raise argument_error("softmax", "x", "at least 1 dimension", "a 0-d array")
    axis = check_axis("softmax", "axis", axis, x.ndim)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    y = e / xp.sum(e, axis=axis, keepdims=True)
    return y, SoftmaxCache(y, axis)


def softmax_backward(dy: Any, cache: SoftmaxCache) -> Any:
    """``dx = y * (dy - sum(dy * y))``, the sum along the softmax axis.

    From ``dy_j/dx_i = y_j (delta_ij - y_i)``.
    """
    check_shape("softmax_backward", "dy", dy, cache.y.shape)
    xp = namespace("softmax_backward", dy=dy, y=cache.y)
    y = cache.y
    return y * (dy - xp.sum(dy * y, axis=cache.axis, keepdims=True))


# ----------------------------------------------------------------------------------- registry

def _away_from_zero(rng, shape, margin=0.1):
    """Normal draws with ``|x| >= margin``, so the ReLU kink is never inside a finite difference."""
    x = rng.standard_normal(shape)
    return x + margin * (2.0 * (x >= 0) - 1.0)


register_op("relu", relu_forward, relu_backward,
            lambda rng: ((_away_from_zero(rng, (2, 3, 4)),), {}),
            doc="ops/activation.md", tags=("kink",))
register_op("sigmoid", sigmoid_forward, sigmoid_backward,
            lambda rng: ((2.0 * rng.standard_normal((2, 3, 4)),), {}), doc="ops/activation.md")
register_op("softmax", softmax_forward, softmax_backward,
            lambda rng: ((rng.standard_normal((2, 3, 5)),), {"axis": 1}), doc="ops/activation.md")
