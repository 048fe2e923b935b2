"""The fully connected layer: ``linear(x, weight, bias=None)``, PyTorch's ``nn.Linear``.

Derivations: ``docs/ops/linear.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import namespace
from ..checks import argument_error, check_float_array, check_same_dtype, check_shape
from ._registry import register_op

__all__ = ["linear_forward", "linear_backward"]


class LinearCache(NamedTuple):
    """What ``linear_backward`` needs: the input (for ``dweight``), the weight (for ``dx``),
    and whether a bias was given (``dbias`` is ``None`` otherwise)."""

    x: Any
    weight: Any
    has_bias: bool


def linear_forward(x: Any, weight: Any, bias: Any = None) -> tuple[Any, LinearCache]:
    """``y = x @ weight.T + bias``.

    Parameters
    ----------
    x : array, shape (N, in), float32 or float64
    weight : array, shape (out, in), the dtype of ``x``
    bias : array, shape (out,), the dtype of ``x``, optional

    Returns
    -------
    y : array, shape (N, out), the dtype of ``x``
    cache : LinearCache
        ``x``, ``weight`` and whether there is a bias.
    """
    xp = namespace("linear", x=x, weight=weight, bias=bias)
    check_float_array("linear", "x", x, ndim=2, layout="(N, in)")
    check_float_array("linear", "weight", weight, ndim=2, layout="(out, in)")
    if bias is not None:
        check_float_array("linear", "bias", bias, ndim=1, layout="(out,)")
    check_same_dtype("linear", x=x, weight=weight, bias=bias)
    if weight.shape[1] != x.shape[1]:
        raise argument_error("linear", "weight", f"shape (out, {x.shape[1]}) to match x's "
                             f"{x.shape[1]} input features", f"shape {tuple(weight.shape)}")
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise argument_error("linear", "bias", f"shape ({weight.shape[0]},) to match weight's "
                             "output features", f"shape {tuple(bias.shape)}")
    y = xp.matmul(x, xp.matrix_transpose(weight))
    if bias is not None:
        y = y + bias
    return y, LinearCache(x, weight, bias is not None)


def linear_backward(dy: Any, cache: LinearCache) -> tuple[Any, Any, Any]:
    """Gradients of ``y = x @ weight.T + bias``.

    .. math:: dx = dy\\,W, \\qquad dW = dy^T x, \\qquad db = \\textstyle\\sum_n dy_{n,:}

    Parameters
    ----------
    dy : array, shape (N, out)
    cache : LinearCache

    Returns
    -------
    (dx, dweight, dbias) : arrays of shapes (N, in), (out, in), (out,); ``dbias`` is ``None``
        when the forward had no bias.
    """
    x, weight, has_bias = cache
    check_shape("linear_backward", "dy", dy, (x.shape[0], weight.shape[0]))
    xp = namespace("linear_backward", dy=dy, x=x, weight=weight)
    dx = xp.matmul(dy, weight)
    dweight = xp.matmul(xp.matrix_transpose(dy), x)
    dbias = xp.sum(dy, axis=0) if has_bias else None
    return dx, dweight, dbias


# ----------------------------------------------------------------------------------- registry

register_op("linear", linear_forward, linear_backward,
            lambda rng: ((rng.standard_normal((3, 4)), rng.standard_normal((5, 4)),
                          rng.standard_normal(5)), {}),
            doc="ops/linear.md", linear=True)
