"""Batched matrix product and the moves around it: ``matmul``, ``reshape``, ``permute``.

Self-attention blocks (Non-local, GCNet) flatten the spatial axes, transpose, and multiply
matrices batch by batch; these three ops are those steps, each a pure pair.  ``reshape`` and
``permute`` move entries without changing them, so each backward is the inverse move;
``matmul`` is linear in each operand.  Derivations: ``docs/ops/matmul.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import namespace
from ..checks import argument_error, check_axis, check_float_array, check_same_dtype, check_shape
from ._registry import register_op
from .elementwise import broadcast_shape, unbroadcast

__all__ = [
    "matmul_forward", "matmul_backward",
    "reshape_forward", "reshape_backward",
    "permute_forward", "permute_backward",
]


class MatmulCache(NamedTuple):
    """Both operands: each one's gradient is the other one times ``dy``."""

    a: Any
    b: Any


class ReshapeCache(NamedTuple):
    """The input's shape, to go back to, and the output's, to check ``dy`` against."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


class PermuteCache(NamedTuple):
    """The permutation ``axes`` (normalised to non-negative) and the input's shape."""

    axes: tuple[int, ...]
    in_shape: tuple[int, ...]


# --------------------------------------------------------------------------------------- matmul

def _matmul_shape(op: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``batch + (m, n)`` for ``(..., m, k) @ (..., k, n)``, the batch axes broadcast."""
    if a_shape[-1] != b_shape[-2]:
        raise argument_error(op, "b", f"{a_shape[-1]} rows (the columns of 'a', shape {a_shape})",
                             f"shape {b_shape}")
    batch = broadcast_shape(op, a_shape[:-2], b_shape[:-2])
    return (*batch, a_shape[-2], b_shape[-1])


def matmul_forward(a: Any, b: Any) -> tuple[Any, MatmulCache]:
    """``y = a @ b``, batched over the leading axes, which broadcast (``torch.matmul``).

    Parameters
    ----------
    a : array, shape (..., m, k), float32 or float64
    b : array, shape (..., k, n), the dtype of ``a``
        The leading (batch) axes of ``a`` and ``b`` broadcast against each other.

    Returns
    -------
    y : array, shape (batch..., m, n), the dtype of ``a``
        ``y[..., i, j] = sum_l a[..., i, l] * b[..., l, j]``.
    cache : MatmulCache
        ``a`` and ``b``.
    """
    xp = namespace("matmul", a=a, b=b)
    check_float_array("matmul", "a", a)
    check_float_array("matmul", "b", b)
    check_same_dtype("matmul", a=a, b=b)
    for name, m in (("a", a), ("b", b)):
        if m.ndim < 2:
            raise argument_error("matmul", name, "at least 2 dimensions (..., rows, columns)",
                                 f"{m.ndim} with shape {tuple(m.shape)}")
    _matmul_shape("matmul", tuple(a.shape), tuple(b.shape))
    return xp.matmul(a, b), MatmulCache(a, b)


def matmul_backward(dy: Any, cache: MatmulCache) -> tuple[Any, Any]:
    """``da = dy @ b^T`` and ``db = a^T @ dy``, each summed over the batch axes it was broadcast on.

    Returns
    -------
    da : array, the shape of ``a``
    db : array, the shape of ``b``
    """
    a, b = cache
    check_shape("matmul_backward", "dy", dy,
                _matmul_shape("matmul_backward", tuple(a.shape), tuple(b.shape)))
    xp = namespace("matmul_backward", dy=dy, a=a, b=b)
    da = unbroadcast(xp.matmul(dy, xp.matrix_transpose(b)), tuple(a.shape))
    db = unbroadcast(xp.matmul(xp.matrix_transpose(a), dy), tuple(b.shape))
    return da, db


# -------------------------------------------------------------------------------------- reshape

def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for n in shape:
        size *= n
    return size


def _target_shape(x_shape: tuple[int, ...], shape: Any) -> tuple[int, ...]:
    """Resolve a ``reshape`` target with at most one ``-1``, checking the sizes agree."""
    if isinstance(shape, int) or hasattr(shape, "__index__"):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(
            hasattr(n, "__index__") and not isinstance(n, bool) for n in shape):
        raise argument_error("reshape", "shape", "a tuple of ints", repr(shape), TypeError)
    shape = tuple(int(n) for n in shape)
    size = _size(x_shape)
    known = _size(tuple(n for n in shape if n != -1))
    if shape.count(-1) > 1 or any(n < -1 for n in shape):
        raise argument_error("reshape", "shape", "sizes >= 0 and at most one -1", shape)
    if -1 in shape:
        if known == 0 or size % known:
            raise argument_error("reshape", "shape", f"a shape of size {size}, the size of 'x' "
                                 f"{x_shape}", shape)
        shape = tuple(size // known if n == -1 else n for n in shape)
    elif known != size:
        raise argument_error("reshape", "shape", f"a shape of size {size}, the size of 'x' "
                             f"{x_shape}", shape)
    return shape


def reshape_forward(x: Any, shape: tuple[int, ...]) -> tuple[Any, ReshapeCache]:
    """``y = reshape(x, shape)`` in row-major (C) order; one entry of ``shape`` may be ``-1``.

    Like PyTorch's ``reshape``, ``y`` may share memory with ``x``.

    Parameters
    ----------
    x : array, any shape, float32 or float64
    shape : tuple of int
        The new shape, of the same size as ``x``.

    Returns
    -------
    y : array, shape ``shape``, the dtype of ``x``
    cache : ReshapeCache
        The shapes of ``x`` and ``y``.
    """
    xp = namespace("reshape", x=x)
    check_float_array("reshape", "x", x)
    shape = _target_shape(tuple(x.shape), shape)
    return xp.reshape(x, shape), ReshapeCache(tuple(x.shape), shape)


def reshape_backward(dy: Any, cache: ReshapeCache) -> Any:
    """``dx = reshape(dy, x.shape)``: the same entries, read back in the same order."""
    check_shape("reshape_backward", "dy", dy, cache.out_shape)
    xp = namespace("reshape_backward", dy=dy)
    return xp.reshape(dy, cache.in_shape)


# -------------------------------------------------------------------------------------- permute

def permute_forward(x: Any, axes: tuple[int, ...]) -> tuple[Any, PermuteCache]:
    """``y = permute_dims(x, axes)``: axis ``i`` of ``y`` is axis ``axes[i]`` of ``x``.

    PyTorch's ``x.permute(*axes)``; negative axes count from the end.

    Parameters
    ----------
    x : array, any shape, float32 or float64
    axes : tuple of int
        A permutation of ``range(x.ndim)``.

    Returns
    -------
    y : array, shape ``tuple(x.shape[a] for a in axes)``, the dtype of ``x``
    cache : PermuteCache
        The normalised ``axes`` and the shape of ``x``.
    """
    xp = namespace("permute", x=x)
    check_float_array("permute", "x", x)
    if not isinstance(axes, (tuple, list)):
        raise argument_error("permute", "axes", "a tuple of ints", repr(axes), TypeError)
    axes = tuple(check_axis("permute", "axes", a, x.ndim) for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise argument_error("permute", "axes", f"a permutation of range({x.ndim})", axes)
    return xp.permute_dims(x, axes), PermuteCache(axes, tuple(x.shape))


def permute_backward(dy: Any, cache: PermuteCache) -> Any:
    """``dx = permute_dims(dy, inverse)`` with ``inverse[axes[i]] = i``."""
    axes, in_shape = cache
    check_shape("permute_backward", "dy", dy, tuple(in_shape[a] for a in axes))
    xp = namespace("permute_backward", dy=dy)
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a] = i
    return xp.permute_dims(dy, tuple(inverse))


# ----------------------------------------------------------------------------------- registry

register_op("matmul", matmul_forward, matmul_backward,
            lambda rng: ((rng.standard_normal((2, 1, 3, 4)), rng.standard_normal((3, 4, 5))), {}),
            doc="ops/matmul.md", linear=True)
register_op("reshape", reshape_forward, reshape_backward,
            lambda rng: ((rng.standard_normal((2, 3, 4, 5)),), {"shape": (2, 3, -1)}),
            doc="ops/matmul.md", linear=True)
register_op("permute", permute_forward, permute_backward,
            lambda rng: ((rng.standard_normal((2, 3, 4)),), {"axes": (0, 2, 1)}),
            doc="ops/matmul.md", linear=True)
