"""Which array library an array belongs to, device moves, and the few primitives the standard lacks.

npattn computes with the namespace of its inputs: NumPy arrays with NumPy, CuPy arrays on the
GPU, and any other library that implements the Python array API standard through
``array-api-compat``.  This is the only module of the package that imports CuPy, and it does
so lazily, so npattn imports and runs on a machine without it.

Primitives that the standard lacks live here, each with a portable fallback written in standard
functions only, and a faster path for the libraries that have one:

* :func:`scatter_add` -- sum values into bins given by integer indices (``np.add.at``).
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
