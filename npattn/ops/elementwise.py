"""Element-wise products with broadcasting: ``mul``, and the ``unbroadcast`` helper.

Broadcasting copies an input along the axes it lacks (or has with size 1); the adjoint of that
copy is a sum over those axes.  :func:`unbroadcast` does that sum once, for every op that
broadcasts.  Derivations: ``docs/ops/elementwise.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace, multiply, multiply_into, multiply_to, namespace, sum_of_products
from ..checks import argument_error, check_float_array, check_same_dtype, check_shape
from ._registry import register_op

__all__ = ["broadcast_shape", "unbroadcast", "mul_forward", "mul_backward"]


def broadcast_shape(op: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...],
                    a_name: str = "a", b_name: str = "b") -> tuple[int, ...]:
    """The shape of ``a * b`` under NumPy's broadcasting rule.

    Shapes are aligned on their last axis; two sizes agree when they are equal or one is 1.

    Raises
    ------
    ValueError
        Naming ``b_name`` when the shapes do not broadcast.
    """
    ndim = max(len(a_shape), len(b_shape))
    a_full = (1,) * (ndim - len(a_shape)) + tuple(a_shape)
    b_full = (1,) * (ndim - len(b_shape)) + tuple(b_shape)
    out = []
    for m, n in zip(a_full, b_full):
        if m != n and 1 not in (m, n):
            raise argument_error(op, b_name, f"a shape that broadcasts with '{a_name}' "
                                 f"{tuple(a_shape)}", f"shape {tuple(b_shape)}")
        out.append(n if m == 1 else m)
    return tuple(out)


def unbroadcast(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum a gradient ``g`` of a broadcast result back to an input's ``shape``.

    The axes that broadcasting prepended are summed away; the axes where ``shape`` has size 1
    and ``g`` does not are summed with ``keepdims``.  This is the adjoint of
    ``broadcast_to(v, g.shape)``.

    Parameters
    ----------
    g : array, shape S, a broadcast of ``shape``
    shape : tuple of int
        The input's shape.

    Returns
    -------
    array of shape ``shape``; ``g`` itself (not a copy) when nothing is summed.
    """
    xp = array_namespace(g)
    lead = g.ndim - len(shape)
    if lead > 0:
        g = xp.sum(g, axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return g


class MulCache(NamedTuple):
    """Both factors: each one's gradient is the cotangent times the other."""

    a: Any
    b: Any


def mul_forward(a: Any, b: Any) -> tuple[Any, MulCache]:
    """``y = a * b``, element-wise with broadcasting.

    Parameters
    ----------
    a : array, shape A, float32 or float64
    b : array, shape B broadcastable with A, the dtype of ``a``

    Returns
    -------
    y : array, shape ``broadcast(A, B)``, the dtype of ``a``
    cache : MulCache
        ``a`` and ``b``.
    """
    namespace("mul", a=a, b=b)
    check_float_array("mul", "a", a)
    check_float_array("mul", "b", b)
    check_same_dtype("mul", a=a, b=b)
    broadcast_shape("mul", a.shape, b.shape)
    y = multiply(a, b)               # a * b (NumPy: the batch split between threads)
    return y, MulCache(a, b)


def mul_backward(dy: Any, cache: MulCache, *, overwrite_dy: bool = False,
                 out: Any = None) -> tuple[Any, Any]:
    """``da = unbroadcast(dy * b, A)``, ``db = unbroadcast(dy * a, B)``.

    Parameters
    ----------
    dy : array, the shape of ``a * b``
        Not modified, unless ``overwrite_dy``.
    overwrite_dy : bool
        The caller gives ``dy`` up (an intermediate gradient of its own): where ``a`` has the
        full shape, ``da`` is computed in ``dy``'s memory (``dy *= b``, after ``db``), which
        saves one full-size array.
    out : array of the shape and dtype of ``dy``, optional
        An array the caller gives up, where ``a`` has the full shape: ``da`` is written there
        (``out[...] = dy * b``, after ``db``), memory already mapped instead of a fresh array.
        It may be ``a`` itself (CBAM's own ``y_1``), whose last read is ``db``'s.

    Returns
    -------
    (da, db) : arrays of the shapes of ``a`` and ``b``
    """
    a, b = cache
    check_shape("mul_backward", "dy", dy, broadcast_shape("mul_backward", a.shape, b.shape))
    namespace("mul_backward", dy=dy, a=a, b=b)
    if out is not None:
        check_shape("mul_backward", "out", out, tuple(dy.shape))
        namespace("mul_backward", dy=dy, out=out)
        check_same_dtype("mul_backward", dy=dy, out=out)
    db = _factor_grad(dy, a, b.shape)                # first: it reads dy (and a)
    if overwrite_dy and tuple(a.shape) == tuple(dy.shape):
        return multiply_into(dy, b), db
    if out is not None and tuple(a.shape) == tuple(dy.shape):
        return multiply_to(out, dy, b), db
    return _factor_grad(dy, b, a.shape), db


def _factor_grad(dy: Any, other: Any, shape: tuple[int, ...]) -> Any:
    """``unbroadcast(dy * other, shape)``: the gradient of the factor of shape ``shape``.

    Note: where ``other`` has the full shape and ``shape`` is the full shape with some axes
    of size 1 (a per-channel scale (N, C, 1, 1) or a per-pixel gate (N, 1, H, W) against
    (N, C, H, W)), the sum of products over those axes is :func:`~npattn.backend.sum_of_products`,
    which NumPy does without a temporary for the product (2-4x faster).
    """
    full = tuple(dy.shape)
    if len(shape) == len(full) and tuple(other.shape) == full:
        axes = tuple(i for i, (n, m) in enumerate(zip(shape, full)) if n == 1 and m != 1)
        if axes:
            return sum_of_products(dy, other, axes)
    return unbroadcast(multiply(dy, other), shape)


# ----------------------------------------------------------------------------------- registry

register_op("mul", mul_forward, mul_backward,
            lambda rng: ((rng.standard_normal((2, 3, 4, 5)),
                          rng.standard_normal((2, 3, 1, 1))), {}),
            doc="ops/elementwise.md", linear=True)
