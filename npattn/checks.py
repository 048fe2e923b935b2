"""Argument checks shared by every public entry point, and the one wording of their errors.

Every error npattn raises for bad user input reads the same way::

    conv2d: argument 'weight' expected 4 dimensions (O, C/groups, kh, kw), got 3 with shape (8, 3, 3)

that is: the op, the argument, what was expected, what came.  ``TypeError`` is used for a wrong
kind of thing (not an array, an integer or complex dtype, mixed array libraries) and
``ValueError`` for a right kind with a wrong value (shape, size, range).  Checks never use
``assert``, which disappears under ``python -O``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj

__all__ = [
    "argument_error",
    "check_float_array",
    "check_same_dtype",
    "check_shape",
    "int_pair",
    "check_int",
    "check_axis",
]


def argument_error(op: str, arg: str, expected: str, actual: Any, cls: type = ValueError) -> Exception:
    """Build (not raise) the error for argument ``arg`` of ``op``: expected, then actual."""
    return cls(f"{op}: argument '{arg}' expected {expected}, got {actual}")


def _describe(x: Any) -> str:
    """A short description of a value for an error message."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{type(x).__module__.split('.')[0]} array of dtype {dtype} and shape {tuple(shape)}"
    return f"{type(x).__name__} {x!r}"


def _is_array(x: Any) -> bool:
    return type(x) is np.ndarray or is_array_api_obj(x)


def _is_real_float(x: Any) -> bool:
    # Note: a plain NumPy array answers from its dtype's kind ("f": float16 to longdouble, the
    # same set as isdtype's "real floating"), without array-api-compat's namespace lookup.
    if type(x) is np.ndarray:
        return x.dtype.kind == "f"
    return array_namespace(x).isdtype(x.dtype, "real floating")


def check_float_array(op: str, arg: str, x: Any, ndim: int | tuple[int, ...] | None = None,
                      layout: str = "") -> None:
    """Check that ``x`` is a real floating array, with ``ndim`` dimensions when given.

    Parameters
    ----------
    op, arg : str
        The op and the argument's name, for the message.
    x : array
        The value to check.
    ndim : int or tuple of int, optional
        The allowed number(s) of dimensions.
    layout : str
        The expected layout in words, e.g. ``"(N, C, H, W)"``, for the message.
    """
    if not _is_array(x):
        raise argument_error(op, arg, "a floating-point array", _describe(x), TypeError)
    if not _is_real_float(x):
        raise argument_error(op, arg, "a real floating-point dtype (float32 or float64)",
                             f"dtype {x.dtype}", TypeError)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise argument_error(op, arg, f"{want} dimensions {layout}".rstrip(),
                                 f"{x.ndim} with shape {tuple(x.shape)}")


def check_same_dtype(op: str, **arrays: Any) -> None:
    """Check that all given arrays (``None`` skipped) share one dtype."""
    named = [(k, v) for k, v in arrays.items() if v is not None]
    first_name, first = named[0]
    for name, a in named[1:]:
        if a.dtype != first.dtype:
            raise argument_error(op, name, f"dtype {first.dtype} (the dtype of '{first_name}')",
                                 f"dtype {a.dtype}", TypeError)


def check_shape(op: str, arg: str, x: Any, shape: tuple[int, ...]) -> None:
    """Check that ``x`` has exactly ``shape`` (used for ``dy`` against the forward's output)."""
    if not _is_array(x):
        raise argument_error(op, arg, f"an array of shape {tuple(shape)}", _describe(x), TypeError)
    if tuple(x.shape) != tuple(shape):
        raise argument_error(op, arg, f"shape {tuple(shape)}", f"shape {tuple(x.shape)}")


def check_int(op: str, arg: str, value: Any, minimum: int | None = None) -> int:
    """Check that ``value`` is a Python (or NumPy) integer, at least ``minimum`` when given."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise argument_error(op, arg, "an int", _describe(value), TypeError)
    value = int(value.__index__())
    if minimum is not None and value < minimum:
        raise argument_error(op, arg, f"an int >= {minimum}", value)
    return value


def int_pair(op: str, arg: str, value: Any, minimum: int = 0) -> tuple[int, int]:
    """Read an int-or-pair argument the way PyTorch does: ``3`` means ``(3, 3)``.

    ``minimum`` is 1 for kernel sizes, strides and dilations, 0 for padding.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise argument_error(op, arg, "an int or a pair of ints", _describe(value), TypeError)
        items = tuple(value)
    else:
        items = (value, value)
    try:
        pair = tuple(check_int(op, arg, v) for v in items)
    except TypeError:
        raise argument_error(op, arg, "an int or a pair of ints", _describe(value), TypeError) from None
    if min(pair) < minimum:
        raise argument_error(op, arg, f"values >= {minimum}", value)
    return pair  # type: ignore[return-value]


def check_axis(op: str, arg: str, axis: Any, ndim: int) -> int:
    """Normalise an axis in ``[-ndim, ndim)`` to ``[0, ndim)``."""
    axis = check_int(op, arg, axis)
    if not -ndim <= axis < ndim:
        raise argument_error(op, arg, f"an axis in [{-ndim}, {ndim})", axis)
    return axis % ndim
