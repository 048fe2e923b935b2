"""Element-wise activations and softmax: ``relu``, ``sigmoid``, ``softmax``, ``tanh``,
``hardsigmoid``, ``hardswish``.

The smooth ones keep only the forward's output ``y``: their derivatives are functions of it.
The hard ones (piecewise, with kinks at ``x = -3`` and ``x = 3``) keep their input ``x``, since
which piece applies is decided on ``x`` (exactly as PyTorch decides it).
Derivations: ``docs/ops/activation.md`` and, for ``tanh``, ``hardsigmoid`` and ``hardswish``,
``docs/ops/activation_extra.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import exp_into, keep_where, map_last_axis, namespace, sum_of_products, sum_over
from ..checks import argument_error, check_axis, check_float_array, check_shape
from ._registry import register_op

__all__ = [
    "relu_forward", "relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "softmax_forward", "softmax_backward",
    "tanh_forward", "tanh_backward",
    "hardsigmoid_forward", "hardsigmoid_backward",
    "hardswish_forward", "hardswish_backward",
]


class OutputCache(NamedTuple):
    """What an activation's backward needs: its output ``y``."""

    y: Any


class InputCache(NamedTuple):
    """What a piecewise activation's backward needs: its input ``x``, which picks the piece."""

    x: Any


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

    The derivative at ``x = 0`` is taken as 0, as in PyTorch.  Written as "``dy`` where not
    ``y <= 0``, else zero" so that a NaN input passes ``dy`` through, as PyTorch's does; the
    selection is :func:`~npattn.backend.keep_where` (NumPy's ``where`` on random signs costs
    about ten times a product).  ``dy`` is not modified.
    """
    check_shape("relu_backward", "dy", dy, cache.y.shape)
    namespace("relu_backward", dy=dy, y=cache.y)
    return keep_where(~(cache.y <= 0), dy)


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
    if axis == x.ndim - 1:                                       # line by line, in cache
        y = map_last_axis(lambda v: _softmax(xp, v, v.ndim - 1), x)
    else:
        y = _softmax(xp, x, axis)
    return y, SoftmaxCache(y, axis)


def _softmax(xp: Any, x: Any, axis: int) -> Any:
    """``exp(x - max x) / sum`` along ``axis`` (non-negative)."""
    y = exp_into(x - xp.max(x, axis=axis, keepdims=True))       # e, in the fresh difference ...
    y /= sum_over(y, (axis,))                                    # ... divided in place
    return y


def softmax_backward(dy: Any, cache: SoftmaxCache) -> Any:
    """``dx = y * (dy - sum(dy * y))``, the sum along the softmax axis.

    From ``dy_j/dx_i = y_j (delta_ij - y_i)``.  The sum of products is
    :func:`~npattn.backend.sum_of_products` (no temporary for ``dy * y`` in NumPy), and the
    product with ``y`` is taken in place in the fresh ``dy - sum``.
    """
    check_shape("softmax_backward", "dy", dy, cache.y.shape)
    namespace("softmax_backward", dy=dy, y=cache.y)
    if cache.axis == dy.ndim - 1:                                # line by line, in cache
        return map_last_axis(lambda d, y: _softmax_grad(d, y, d.ndim - 1), dy, cache.y)
    return _softmax_grad(dy, cache.y, cache.axis)


def _softmax_grad(dy: Any, y: Any, axis: int) -> Any:
    """``y * (dy - sum(dy * y))`` along ``axis`` (non-negative)."""
    dx = dy - sum_of_products(dy, y, (axis,))
    dx *= y
    return dx


# ----------------------------------------------------------------------------------------- tanh

def tanh_forward(x: Any) -> tuple[Any, OutputCache]:
    """``y = tanh(x)``.

    Parameters
    ----------
    x : array, any shape, float32 or float64

    Returns
    -------
    y : array, the shape and dtype of ``x``, in [-1, 1]
    cache : OutputCache
        ``y``.
    """
    xp = namespace("tanh", x=x)
    check_float_array("tanh", "x", x)
    y = xp.tanh(x)
    return y, OutputCache(y)


def tanh_backward(dy: Any, cache: OutputCache) -> Any:
    """``dx = dy * (1 - y^2)``."""
    check_shape("tanh_backward", "dy", dy, cache.y.shape)
    namespace("tanh_backward", dy=dy, y=cache.y)
    y = cache.y
    return dy * (1.0 - y * y)


# ---------------------------------------------------------------------------------- hardsigmoid

def hardsigmoid_forward(x: Any) -> tuple[Any, InputCache]:
    """``y = min(max(x + 3, 0), 6) / 6``, PyTorch's ``hardsigmoid``.

    Parameters
    ----------
    x : array, any shape, float32 or float64

    Returns
    -------
    y : array, the shape and dtype of ``x``, in [0, 1]
    cache : InputCache
        ``x`` (the piece is decided on ``x``, see :func:`hardsigmoid_backward`).
    """
    xp = namespace("hardsigmoid", x=x)
    check_float_array("hardsigmoid", "x", x)
    return xp.clip(x + 3.0, 0.0, 6.0) / 6.0, InputCache(x)


def hardsigmoid_backward(dy: Any, cache: InputCache) -> Any:
    """``dx = dy / 6`` where ``-3 < x < 3``, else ``0``.

    At the kinks ``x = -3`` and ``x = 3`` the derivative is taken as 0, as in PyTorch.
    """
    check_shape("hardsigmoid_backward", "dy", dy, cache.x.shape)
    xp = namespace("hardsigmoid_backward", dy=dy, x=cache.x)
    x = cache.x
    inside = (x > -3.0) & (x < 3.0)
    return xp.where(inside, dy / 6.0, xp.zeros_like(dy))


# ------------------------------------------------------------------------------------ hardswish

def hardswish_forward(x: Any) -> tuple[Any, InputCache]:
    """``y = x * min(max(x + 3, 0), 6) / 6``, PyTorch's ``hardswish``.

    Parameters
    ----------
    x : array, any shape, float32 or float64

    Returns
    -------
    y : array, the shape and dtype of ``x``
    cache : InputCache
        ``x``.
    """
    xp = namespace("hardswish", x=x)
    check_float_array("hardswish", "x", x)
    return x * xp.clip(x + 3.0, 0.0, 6.0) / 6.0, InputCache(x)


def hardswish_backward(dy: Any, cache: InputCache) -> Any:
    """``dx = dy * s(x)`` with ``s = 0`` for ``x < -3``, ``x/3 + 1/2`` for ``-3 <= x <= 3``, ``1`` above.

    At the kinks the middle piece's slope is used, as PyTorch's ``hardswish_backward`` does
    (its CUDA kernel and the scalar path of its CPU kernel): ``s(-3) = -1/2``, ``s(3) = 3/2``.
    """
    check_shape("hardswish_backward", "dy", dy, cache.x.shape)
    xp = namespace("hardswish_backward", dy=dy, x=cache.x)
    x = cache.x
    middle = x / 3.0 + 0.5
    slope = xp.where(x < -3.0, xp.zeros_like(x), xp.where(x <= 3.0, middle, xp.ones_like(x)))
    return dy * slope


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


def _away_from_kinks(rng, shape, kinks=(-3.0, 3.0), margin=0.1, spread=2.5):
    """Normal draws (standard deviation ``spread``) moved at least ``margin`` away from each kink."""
    x = spread * rng.standard_normal(shape)
    for k in kinks:
        near = abs(x - k) < margin
        x = x + near * (margin * (2.0 * (x >= k) - 1.0) - (x - k))
    return x


register_op("tanh", tanh_forward, tanh_backward,
            lambda rng: ((rng.standard_normal((2, 3, 4)),), {}), doc="ops/activation_extra.md")
register_op("hardsigmoid", hardsigmoid_forward, hardsigmoid_backward,
            lambda rng: ((_away_from_kinks(rng, (2, 3, 4)),), {}),
            doc="ops/activation_extra.md", tags=("kink",))
register_op("hardswish", hardswish_forward, hardswish_backward,
            lambda rng: ((_away_from_kinks(rng, (2, 3, 4)),), {}),
            doc="ops/activation_extra.md", tags=("kink",))
