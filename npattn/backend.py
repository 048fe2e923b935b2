"""Which array library an array belongs to, device moves, and the few primitives the standard lacks.

npattn computes with the namespace of its inputs: NumPy arrays with NumPy, CuPy arrays on the
GPU, and any other library that implements the Python array API standard through
``array-api-compat``.  This is the only module of the package that imports CuPy, and it does
so lazily, so npattn imports and runs on a machine without it.

Primitives that the standard lacks live here, each with a portable fallback written in standard
functions only, and a faster path for the libraries that have one:

* :func:`scatter_add` -- sum values into bins given by integer indices (``np.add.at``).

The fast paths (the last section) compute standard things faster on NumPy, each beside its
portable spelling: :func:`keep_where`, :func:`sum_over`, :func:`sum_of_products`,
:func:`first_max`, :func:`add_at`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj, is_cupy_namespace, is_numpy_namespace

from .checks import argument_error

__all__ = [
    "namespace",
    "is_numpy",
    "is_cupy",
    "to_device",
    "to_numpy",
    "cupy_available",
    "scatter_add",
    "scatter_add_portable",
    "keep_where",
    "sum_over",
    "sum_of_products",
    "first_max",
    "add_at",
]


def _library(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def namespace(op: str, **arrays: Any) -> ModuleType:
    """Return the array namespace shared by the named arrays (``None`` values are skipped).

    Raises
    ------
    TypeError
        If two arrays come from different libraries or live on different devices; the message
        names the op and both arguments.
    """
    named = [(k, v) for k, v in arrays.items() if v is not None and is_array_api_obj(v)]
    if not named:
        raise argument_error(op, next(iter(arrays), "x"), "at least one array", "none", TypeError)
    first_name, first = named[0]
    for name, a in named[1:]:
        if _library(a) != _library(first):
            raise argument_error(
                op, name, f"an array of the same library as '{first_name}' ({_library(first)})",
                f"an array of {_library(a)}", TypeError)
        if device(a) != device(first):
            raise argument_error(
                op, name, f"an array on the device of '{first_name}' ({device(first)})",
                f"an array on {device(a)}", TypeError)
    return array_namespace(*[a for _, a in named])


def is_numpy(xp: ModuleType) -> bool:
    """True for NumPy (plain or wrapped by ``array-api-compat``)."""
    return is_numpy_namespace(xp)


def is_cupy(xp: ModuleType) -> bool:
    """True for CuPy (plain or wrapped by ``array-api-compat``)."""
    return is_cupy_namespace(xp)


def cupy_available() -> tuple[bool, str]:
    """Whether CuPy imports and sees a GPU, and if not, why (for skip messages)."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return False, f"CuPy does not import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"CuPy sees no GPU ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "CuPy sees no GPU"
    return True, f"CuPy {cupy.__version__} with {count} GPU(s)"


def to_numpy(x: Any) -> np.ndarray:
    """Copy any array (NumPy, CuPy, array-API) to a NumPy array on the host."""
    if isinstance(x, np.ndarray):
        return x
    if _library(x) == "cupy":
        return x.get()
    try:
        return np.asarray(x)
    except Exception:  # libraries that only speak DLPack
        return np.from_dlpack(x)


def to_device(x: Any, where: str) -> Any:
    """Move an array to ``"cpu"`` (a NumPy array) or ``"gpu"`` (a CuPy array).

    Parameters
    ----------
    x : array
        Any array; NumPy and CuPy arrays already in place are returned as they are.
    where : {"cpu", "gpu"}
        The destination.
    """
    if where == "cpu":
        return to_numpy(x)
    if where == "gpu":
        ok, why = cupy_available()
        if not ok:
            raise RuntimeError(f"to_device: cannot move to 'gpu': {why}")
        import cupy
        return x if _library(x) == "cupy" else cupy.asarray(to_numpy(x))
    raise argument_error("to_device", "where", "'cpu' or 'gpu'", repr(where))


def scatter_add_portable(index: Any, values: Any, size: int) -> Any:
    """Sum ``values`` into ``size`` bins: ``out[k] = sum(values[i] for i where index[i] == k)``.

    Written in standard functions only (sort, cumulative sum, search), so it runs on any
    array-API library.  Cost O(n log n) for n values.

    Parameters
    ----------
    index : integer array, shape (n,)
        Bin of each value, in ``[0, size)``.
    values : floating array, shape (n,)
        The values to add.
    size : int
        Number of bins.

    Returns
    -------
    out : array, shape (size,), the dtype of ``values``
    """
    xp = array_namespace(index, values)
    order = xp.argsort(index)
    sorted_index = xp.take(index, order)
    sorted_values = xp.take(values, order)
    # out[k] = C[end_k] - C[start_k], with C the running sum with a leading zero.
    running = xp.concat([xp.zeros((1,), dtype=values.dtype, device=device(values)),
                         xp.cumulative_sum(sorted_values)])
    bins = xp.arange(size, dtype=sorted_index.dtype, device=device(index))
    start = xp.searchsorted(sorted_index, bins, side="left")
    end = xp.searchsorted(sorted_index, bins, side="right")
    return xp.take(running, end) - xp.take(running, start)


def scatter_add(index: Any, values: Any, size: int) -> Any:
    """Sum ``values`` into ``size`` bins given by ``index`` (see :func:`scatter_add_portable`).

    NumPy uses ``np.bincount`` (computed in float64, cast back), CuPy ``cupyx.scatter_add``;
    every other library the portable sort-and-cumulative-sum version.
    """
    xp = array_namespace(index, values)
    if is_numpy(xp):
        out = np.bincount(np.asarray(index), weights=np.asarray(values), minlength=size)
        return out.astype(values.dtype, copy=False)
    if is_cupy(xp):
        import cupy
        import cupyx
        with values.device:  # on the GPU of the inputs, not the current one
            out = cupy.zeros((size,), dtype=values.dtype)
        cupyx.scatter_add(out, index, values)
        return out
    return scatter_add_portable(index, values, size)


# ------------------------------------------------------------------------------- fast paths
#
# Each helper below computes one thing two ways: in standard functions only (the spec, run by
# every library, and by NumPy too with ``fast=False``), and, on NumPy, by a faster spelling that
# gives the same numbers (up to the order of a sum's terms).  Each docstring says what the fast
# spelling buys, as measured on the project's 2-core machines (benchmarks/NOTES.md).
# tests/test_backend_fast.py checks that the two paths agree.  No helper reads a device array
# on the host off NumPy (a stall on a GPU).

def _contiguous(x: Any) -> bool:
    return bool(x.flags.c_contiguous)


def _sum_is_finite(a: np.ndarray) -> bool:
    """NumPy only: every entry of ``a`` is finite, known from one sum (an inf or a NaN makes the
    sum inf or NaN).  Conservative: a sum that overflows reads as 'not finite'."""
    return bool(np.isfinite(np.sum(a)))


def keep_where(mask: Any, values: Any, *, finite: bool | None = None, fast: bool = True) -> Any:
    """``values`` where ``mask`` is true, zero elsewhere (``mask`` and ``values`` broadcast).

    Spec: ``where(mask, values, 0)``.  NumPy's ``where`` with an irregular mask costs about ten
    times a product (measured 30 ms against 3.8 ms on 16x256x28x28 float32), so for values
    without inf or NaN the fast path is the product ``values * mask`` (``0 * v`` is zero for a
    finite ``v``; its sign may differ, and ``-0.0 == 0.0``).  Values holding an inf or a NaN,
    which the product would spread, keep ``where``.  ``finite`` says whether ``values`` holds
    neither, when the caller knows; ``None``: NumPy finds out from one sum, and every other
    library takes ``where`` (finding out would be a host read on a device).
    """
    xp = array_namespace(mask, values)
    if finite is None:
        finite = is_numpy(xp) and _sum_is_finite(values)
    if fast and finite:
        if is_numpy(xp):
            return np.multiply(values, mask, dtype=values.dtype)
        return values * xp.astype(mask, values.dtype)
    return xp.where(mask, values, xp.zeros((), dtype=values.dtype, device=device(values)))


def sum_over(x: Any, axes: tuple[int, ...], *, fast: bool = True) -> Any:
    """``sum(x, axis=axes, keepdims=True)`` for non-negative ``axes`` in increasing order.

    NumPy's ``sum`` along a contiguous axis is pairwise and compute-bound (16-26 GB/s even in
    cache).  For a C-contiguous NumPy array the fast path sums the trailing axes as a
    matrix-vector product with ones, ``x2 @ ones`` (memory speed: 3-4x faster), and axis 1 of
    a (N, C, ...) array as ``ones @ x3`` (1.2-3x faster); BLAS adds in float32 for float32, in
    blocks, about as exactly as the pairwise sum.  Other cases take ``sum``.
    """
    xp = array_namespace(x)
    axes = tuple(axes)
    shape = tuple(x.shape)
    kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
    if fast and is_numpy(xp) and _contiguous(x) and x.size and axes:
        rows = int(np.prod(shape[:axes[0]], dtype=np.int64))
        if axes == tuple(range(axes[0], x.ndim)):               # trailing axes
            inner = x.size // rows
            ones = np.ones((inner,), dtype=x.dtype)
            return np.reshape(np.reshape(x, (rows, inner)) @ ones, kept)
        if axes == (1,) and x.ndim >= 3:                        # channels of (N, C, ...)
            ones = np.ones((shape[1],), dtype=x.dtype)
            return np.reshape(ones @ np.reshape(x, (shape[0], shape[1], -1)), kept)
    return xp.sum(x, axis=axes, keepdims=True)


def sum_of_products(a: Any, b: Any, axes: tuple[int, ...], *, fast: bool = True) -> Any:
    """``sum(a * b, axis=axes, keepdims=True)`` for ``a`` and ``b`` of one shape.

    NumPy's fast path is one ``einsum``, which multiplies and adds without the product's
    temporary: 2-4x faster than the product and the sum over the trailing axes, 1.6-2x over
    the channels.
    """
    xp = array_namespace(a, b)
    axes = tuple(axes)
    if fast and is_numpy(xp) and tuple(a.shape) == tuple(b.shape) and a.ndim <= 26:
        letters = "abcdefghijklmnopqrstuvwxyz"[:a.ndim]
        out = "".join(ch for i, ch in enumerate(letters) if i not in axes)
        kept = tuple(1 if i in axes else n for i, n in enumerate(a.shape))
        return np.reshape(np.einsum(f"{letters},{letters}->{out}", a, b), kept)
    return xp.sum(a * b, axis=axes, keepdims=True)


def first_max(v: Any, axis: int, *, fast: bool = True) -> tuple[Any, Any]:
    """The maximum of ``v`` along ``axis`` and the index of its first occurrence, both kept with
    size 1 along ``axis``; the index is an integer array (the default index dtype).

    A NaN counts as the maximum: a line holding a NaN has maximum NaN and index its first NaN.

    Spec: ``m = max(v)``, then ``argmax`` of ``v == m or isnan(v)`` as int8, which returns the
    first of the largest values.  NumPy's fast paths: along the last axis, ``argmax`` of ``v``
    itself (first maximum, first NaN) and a gather of the value, one pass; along another axis,
    where ``argmax`` would make a transposed copy (about 5x the cost), the hits ``v == m`` are
    counted, and when every line holds its maximum exactly once and no maximum is NaN (the
    usual case) the index is the hits weighted by their positions, one ``einsum``; otherwise
    the spec's ``argmax``.
    """
    xp = array_namespace(v)
    size = v.shape[axis]
    if fast and is_numpy(xp) and size <= 2 ** 24:
        if axis == v.ndim - 1:
            index = np.argmax(v, axis=axis, keepdims=True)
            return np.take_along_axis(v, index, axis=axis), index
        m = np.max(v, axis=axis, keepdims=True)
        hit = v == m
        if np.count_nonzero(hit) == m.size and not np.isnan(np.sum(m)):
            lead = int(np.prod(v.shape[:axis], dtype=np.int64))
            hit3 = np.reshape(hit, (lead, size, -1))
            position = np.arange(size, dtype=np.float32)      # exact below 2**24
            index = np.einsum("c,ncl->nl", position, hit3)    # one term per line is non-zero
            return m, np.reshape(index.astype(np.intp), m.shape)
        index = np.argmax(hit | np.isnan(v), axis=axis, keepdims=True)
        return m, index
    m = xp.max(v, axis=axis, keepdims=True)
    first = xp.argmax(xp.astype((v == m) | xp.isnan(v), xp.int8), axis=axis, keepdims=True)
    return m, first


def add_at(target: Any, index: tuple[Any, ...], values: Any, *, fast: bool = True) -> Any:
    """Add ``values`` into ``target`` in place at the entries named by ``index``, and return it.

    ``index`` holds one integer array per axis of ``target``, each with ``target``'s number of
    dimensions and, along every axis, size 1 or ``target``'s size (so the arrays broadcast
    against ``target`` as keepdims results do); ``values`` broadcasts against them.  The entries
    named must be distinct (each entry at most once), as for the first maximum of each line.

    Spec: a mask of the named entries (each axis's positions compared with its index), then
    ``target += where(mask, values, 0)``, a pass over all of ``target``.  NumPy and CuPy index
    ``target[index] += values`` directly, touching only the named entries: for a max over
    channels or over H x W that is 1/C or 1/(HW) of the array.
    """
    xp = array_namespace(target, values)
    if fast and (is_numpy(xp) or is_cupy(xp)):
        target[tuple(index)] += values
        return target
    hit = None
    for axis, idx in enumerate(index):
        size = target.shape[axis]
        shape = (1,) * axis + (size,) + (1,) * (target.ndim - axis - 1)
        position = xp.reshape(xp.arange(size, dtype=idx.dtype, device=device(target)), shape)
        on = position == idx
        hit = on if hit is None else hit & on
    target += xp.where(hit, values, xp.zeros((), dtype=target.dtype, device=device(target)))
    return target
