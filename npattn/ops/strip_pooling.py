"""Strip pooling: the mean over H (``mean_h``) and the mean over W (``mean_w``).

Coordinate attention and strip pooling average a map along one spatial axis and keep the other:
``mean_h`` is PyTorch's ``AdaptiveAvgPool2d((1, None))``, output (N, C, 1, W); ``mean_w`` is
``AdaptiveAvgPool2d((None, 1))``, output (N, C, H, 1).  Each is linear; its backward spreads
``dy / n`` evenly over the ``n`` positions that were averaged, and keeps only the input's shape.
``*_backward_add`` adds that spread into a gradient the caller owns, in place (no full-size
array of its own).  Derivation: ``docs/ops/strip_pooling.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import device

from ..backend import add_into, namespace, sum_over
from ..checks import check_float_array, check_shape
from ._registry import register_op
from .pooling import _check_add

__all__ = ["mean_h_forward", "mean_h_backward", "mean_w_forward", "mean_w_backward",
           "mean_h_backward_add", "mean_w_backward_add"]


class MeanCache(NamedTuple):
    """The input's shape and the axis averaged over (2 for H, 3 for W)."""

    in_shape: tuple[int, ...]
    axis: int


def _mean_forward(op: str, x: Any, axis: int) -> tuple[Any, MeanCache]:
    xp = namespace(op, x=x)
    check_float_array(op, "x", x, 4, "(N, C, H, W)")
    n, c, h, w = x.shape
    if axis == 3:                                        # W: the trailing axis
        total = sum_over(x, (3,))
    else:                                                # H: axis 1 of x seen as (N C, H, W)
        total = xp.reshape(sum_over(xp.reshape(x, (n * c, h, w)), (1,)), (n, c, 1, w))
    # sum_over, not mean: NumPy's mean is a pairwise sum, about 4x slower (benchmarks/NOTES.md)
    return total / x.shape[axis], MeanCache(tuple(x.shape), axis)


def _mean_backward(op: str, dy: Any, cache: MeanCache) -> Any:
    in_shape, axis = cache
    out_shape = tuple(1 if i == axis else n for i, n in enumerate(in_shape))
    check_shape(op, "dy", dy, out_shape)
    xp = namespace(op, dy=dy)
    # A fresh array, not a broadcast view, so callers may add into it.
    return xp.zeros(in_shape, dtype=dy.dtype, device=device(dy)) + dy / in_shape[axis]


def _mean_backward_add(op: str, dx: Any, dy: Any, cache: MeanCache) -> Any:
    in_shape, axis = cache
    check_shape(op, "dy", dy, tuple(1 if i == axis else n for i, n in enumerate(in_shape)))
    _check_add(op, dx, dy, in_shape)
    return add_into(dx, dy / in_shape[axis])


def mean_h_forward(x: Any) -> tuple[Any, MeanCache]:
    """``y[n, c, 0, w] = mean_h x[n, c, h, w]``.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64

    Returns
    -------
    y : array, shape (N, C, 1, W), the dtype of ``x``
    cache : MeanCache
        The shape of ``x`` and the axis (2).
    """
    return _mean_forward("mean_h", x, 2)


def mean_h_backward(dy: Any, cache: MeanCache) -> Any:
    """``dx[n, c, h, w] = dy[n, c, 0, w] / H``.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    return _mean_backward("mean_h_backward", dy, cache)


def mean_h_backward_add(dx: Any, dy: Any, cache: MeanCache) -> Any:
    """``dx += mean_h_backward(dy, cache)`` in place: ``dx[n, c, h, w] += dy[n, c, 0, w] / H``.

    ``dx`` (N, C, H, W) is a gradient the caller owns, of the dtype of ``dy``; it is updated
    and returned.
    """
    return _mean_backward_add("mean_h_backward_add", dx, dy, cache)


def mean_w_forward(x: Any) -> tuple[Any, MeanCache]:
    """``y[n, c, h, 0] = mean_w x[n, c, h, w]``.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64

    Returns
    -------
    y : array, shape (N, C, H, 1), the dtype of ``x``
    cache : MeanCache
        The shape of ``x`` and the axis (3).
    """
    return _mean_forward("mean_w", x, 3)


def mean_w_backward(dy: Any, cache: MeanCache) -> Any:
    """``dx[n, c, h, w] = dy[n, c, h, 0] / W``.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    return _mean_backward("mean_w_backward", dy, cache)


def mean_w_backward_add(dx: Any, dy: Any, cache: MeanCache) -> Any:
    """``dx += mean_w_backward(dy, cache)`` in place: ``dx[n, c, h, w] += dy[n, c, h, 0] / W``.

    ``dx`` (N, C, H, W) is a gradient the caller owns, of the dtype of ``dy``; it is updated
    and returned.
    """
    return _mean_backward_add("mean_w_backward_add", dx, dy, cache)


# ----------------------------------------------------------------------------------- registry

register_op("mean_h", mean_h_forward, mean_h_backward,
            lambda rng: ((rng.standard_normal((2, 3, 4, 5)),), {}), doc="ops/strip_pooling.md",
            linear=True)
register_op("mean_w", mean_w_forward, mean_w_backward,
            lambda rng: ((rng.standard_normal((2, 3, 4, 5)),), {}), doc="ops/strip_pooling.md",
            linear=True)
