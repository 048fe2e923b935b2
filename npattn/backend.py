"""Which array library an array belongs to, device moves, and the few primitives the standard lacks.

npattn computes with the namespace of its inputs: NumPy arrays with NumPy, CuPy arrays on the
GPU, and any other library that implements the Python array API standard through
``array-api-compat``.  This is the only module of the package that imports CuPy, and it does
so lazily, so npattn imports and runs on a machine without it.

Primitives that the standard lacks live here, each with a portable fallback written in standard
functions only, and a faster path for the libraries that have one:

* :func:`scatter_add` -- sum values into bins given by integer indices (``np.add.at``).

The fast paths (the last section) compute standard things faster on NumPy, each beside its
portable spelling: :func:`multiply`, :func:`add_into`, :func:`multiply_into`, :func:`multiply_to`,
:func:`keep_where`, :func:`sum_over`,
:func:`sum_of_products`, :func:`first_max`, :func:`add_at`, :func:`map_last_axis`,
:func:`exp_into`, :func:`all_within`.  On large
NumPy arrays they split
the work over the batch axis between threads (:func:`set_threads`; NumPy releases the GIL
inside its loops, and one NumPy thread reaches about half of the machine's memory bandwidth).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Callable

import numpy as np
from array_api_compat import array_namespace as _compat_array_namespace
from array_api_compat import device, is_array_api_obj, is_cupy_namespace, is_numpy_namespace

from .checks import argument_error

__all__ = [
    "namespace",
    "array_namespace",
    "is_numpy",
    "is_cupy",
    "to_device",
    "to_numpy",
    "cupy_available",
    "scatter_add",
    "scatter_add_portable",
    "get_threads",
    "set_threads",
    "multiply",
    "add_into",
    "multiply_into",
    "multiply_to",
    "map_last_axis",
    "keep_where",
    "sum_over",
    "sum_of_products",
    "first_max",
    "add_at",
    "exp_into",
    "all_within",
]


#: array-api-compat's NumPy namespace: what the lookups below return for plain NumPy arrays.
_NUMPY_NAMESPACE = _compat_array_namespace(np.empty(0))


def array_namespace(*arrays: Any, **options: Any) -> ModuleType:
    """``array_api_compat.array_namespace``, answered at once for plain NumPy arrays.

    Note: array-api-compat's lookup costs about 5 us a call (measured); npattn's ops and fast
    paths make tens of them per block call, so plain ``numpy.ndarray`` arguments (not
    subclasses) skip it: one library, one device, the same namespace.
    """
    if not options and arrays and all(type(a) is np.ndarray for a in arrays):
        return _NUMPY_NAMESPACE
    return _compat_array_namespace(*arrays, **options)


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
    # Note: plain NumPy arrays, the common case, skip array-api-compat's lookup (about 5 us a
    # call, measured; every op calls this once or twice): one library, one device, one answer.
    plain = False
    for v in arrays.values():
        if v is not None:
            if type(v) is not np.ndarray:
                plain = False
                break
            plain = True
    if plain:
        return _NUMPY_NAMESPACE
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

    Written in standard functions only (sort, search, slices), so it runs on any array-API
    library.  The values sorted by bin, a segmented inclusive scan (Hillis-Steele: at offset
    ``d = 1, 2, 4, ...`` each value adds the one ``d`` places before it when that one is in its
    bin) leaves each bin's sum on its last value.  Only values of one bin are ever added, in a
    binary tree: each sum is as exact as a pairwise sum of its own values, whatever the other
    bins hold.  Note: not the difference of two running totals over all values, which is
    shorter but loses the small bins to the large ones (in float32, a bin of 1e-3 after values
    summing to 1e4 came out 2% off).  Cost O(n log n) for n values.

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
    n = index.shape[0]
    zeros = xp.zeros((size,), dtype=values.dtype, device=device(values))
    if n == 0:
        return zeros
    order = xp.argsort(index)
    sorted_index = xp.take(index, order)
    scan = xp.take(values, order)
    d = 1
    while d < n:                                  # scan[i] = sum of its bin's values up to i
        same_bin = sorted_index[d:] == sorted_index[:-d]
        scan = xp.concat([scan[:d], scan[d:] + xp.where(same_bin, scan[:-d], xp.zeros_like(scan[d:]))])
        d *= 2
    bins = xp.arange(size, dtype=sorted_index.dtype, device=device(index))
    end = xp.searchsorted(sorted_index, bins, side="right")      # one past each bin's last
    start = xp.searchsorted(sorted_index, bins, side="left")
    last = xp.take(scan, xp.clip(end - 1, 0, n - 1))
    return xp.where(end > start, last, zeros)


def scatter_add(index: Any, values: Any, size: int) -> Any:
    """Sum ``values`` into ``size`` bins given by ``index`` (see :func:`scatter_add_portable`).

    NumPy uses ``np.bincount`` (computed in float64, cast back), CuPy ``cupyx.scatter_add``;
    every other library the portable sort-and-scan version.
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

def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _default_threads() -> int:
    """``NPATTN_THREADS`` if set, else the CPUs this process may use, at most 4."""
    env = os.environ.get("NPATTN_THREADS", "").strip()
    if env:
        return max(1, int(env))
    return max(1, min(_available_cpus(), 4))


_THREADS = _default_threads()
_POOL: ThreadPoolExecutor | None = None
_LOCAL = threading.local()   # .inside: this thread runs parts already (no nested splitting)

#: Below this many elements a pass stays on one thread: handing work to a thread and back costs
#: 60-75 us on the project's 2-core VMs (measured; a thread's wake-up), as much as a pass over
#: a quarter to half a million float32.  Thresholds from 2^18 to 2^22 measured alike within the
#: noise across the CBAM family's small shapes (benchmarks/NOTES.md, 2026-12-08).
PARALLEL_MIN_ELEMENTS = 2 ** 18


def get_threads() -> int:
    """How many threads NumPy's fast paths use (1: the calling thread only)."""
    return _THREADS


def set_threads(n: int) -> int:
    """Use ``n`` threads (>= 1) in NumPy's fast paths; return the previous number.

    The default is the environment variable ``NPATTN_THREADS``, else the number of CPUs the
    process may use, at most 4.  Results do not depend on it: every thread computes its own
    slice of the batch, with the same operations in the same order within each entry.
    """
    global _THREADS, _POOL
    if isinstance(n, bool) or not isinstance(n, int):
        raise argument_error("set_threads", "n", "an int >= 1", repr(n), TypeError)
    if n < 1:
        raise argument_error("set_threads", "n", "an int >= 1", n)
    previous, _THREADS = _THREADS, n
    if _POOL is not None and n != previous:
        _POOL.shutdown(wait=True)
        _POOL = None
    return previous


def _run_parts(fn: Callable[[Any], None], parts: list[Any], parallel: bool = True) -> None:
    """``fn(part)`` for every part: the parts split in contiguous runs between the threads (when
    ``parallel``), the first run on the calling thread.  Exceptions reach the caller.

    A call made from inside a part (``fn`` using another fast path) runs its parts on its own
    thread: the pool's threads are busy, and waiting on them from one of them would deadlock.
    """
    global _POOL
    nested = getattr(_LOCAL, "inside", False)
    threads = min(_THREADS, len(parts)) if parallel and not nested else 1
    if threads <= 1:
        for part in parts:
            fn(part)
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_THREADS - 1, thread_name_prefix="npattn")
    runs = [parts[len(parts) * k // threads:len(parts) * (k + 1) // threads] for k in range(threads)]

    def run(chunk: list[Any]) -> None:
        _LOCAL.inside = True
        try:
            for part in chunk:
                fn(part)
        finally:
            _LOCAL.inside = False

    futures = [_POOL.submit(run, chunk) for chunk in runs[1:]]
    try:
        run(runs[0])
    finally:
        for future in futures:
            future.result()


def _row_parts(rows: int, size: int) -> list[slice]:
    """Slices of ``range(rows)`` (the batch axis of an array of ``size`` elements), one per
    thread when the array is large enough to share, else the whole range."""
    threads = min(_THREADS, rows) if size >= PARALLEL_MIN_ELEMENTS else 1
    return [slice(rows * k // threads, rows * (k + 1) // threads) for k in range(threads)]


def _rows(a: Any, rows: slice, out_ndim: int, out_rows: int) -> Any:
    """The rows ``rows`` of operand ``a`` of an output with ``out_rows`` rows; an operand that
    broadcasts along that axis (fewer dimensions, or size 1, or a Python scalar) is taken whole."""
    if np.ndim(a) == out_ndim and a.shape[0] == out_rows and out_rows != 1:
        return a[rows]
    return a


def _contiguous(x: Any) -> bool:
    return bool(x.flags.c_contiguous)


def multiply(a: Any, b: Any, *, fast: bool = True) -> Any:
    """``a * b`` with broadcasting, a fresh array.

    NumPy's fast path writes the product into one output, its batch axis (axis 0) split
    between the threads (:func:`set_threads`).
    """
    xp = array_namespace(a, b)
    if fast and is_numpy(xp) and _THREADS > 1 and np.ndim(a) and np.ndim(b):
        shape = np.broadcast_shapes(a.shape, b.shape)
        size = int(np.prod(shape, dtype=np.int64))
        parts = _row_parts(shape[0], size) if len(shape) else [slice(None)]
        if len(parts) > 1:
            out = np.empty(shape, dtype=np.result_type(a, b))
            n = len(shape)
            _run_parts(lambda r: np.multiply(_rows(a, r, n, shape[0]), _rows(b, r, n, shape[0]),
                                             out=out[r]), parts)
            return out
    return a * b


def _in_place(ufunc: Any, target: Any, b: Any, fast: bool) -> bool:
    """NumPy: ``target = ufunc(target, b)`` with the batch axis split between the threads;
    False (nothing done) where that does not apply."""
    if not (fast and is_numpy(array_namespace(target, b)) and _THREADS > 1 and target.ndim):
        return False
    parts = _row_parts(target.shape[0], target.size)
    if len(parts) == 1:
        return False
    n = target.ndim
    _run_parts(lambda r: ufunc(target[r], _rows(b, r, n, target.shape[0]), out=target[r]), parts)
    return True


def add_into(target: Any, b: Any, *, fast: bool = True) -> Any:
    """``target += b`` in place (``b`` broadcast against ``target``); returns ``target``.

    NumPy's fast path splits ``target``'s batch axis (axis 0) between the threads.
    """
    if not _in_place(np.add, target, b, fast):
        target += b
    return target


def multiply_into(target: Any, b: Any, *, fast: bool = True) -> Any:
    """``target *= b`` in place (``b`` broadcast against ``target``); returns ``target``.

    NumPy's fast path splits ``target``'s batch axis (axis 0) between the threads.
    """
    if not _in_place(np.multiply, target, b, fast):
        target *= b
    return target


def multiply_to(out: Any, a: Any, b: Any, *, fast: bool = True) -> Any:
    """``out[...] = a * b`` (``a`` and ``b`` broadcast to ``out``'s shape); returns ``out``.

    For a caller that gives up an array of its own: the product lands in memory already mapped
    instead of a fresh array (at 98 MiB a fresh one's page faults cost about a quarter of the
    pass, measured 26-27 against 21 ms).  ``out`` may be ``a`` or ``b`` itself.  Spec: slice
    assignment of the product (a temporary).  NumPy's fast path: ``multiply(a, b, out=out)``,
    the batch axis split between the threads.
    """
    xp = array_namespace(out, a, b)
    if fast and is_numpy(xp) and out.ndim:
        n = out.ndim
        _run_parts(lambda r: np.multiply(_rows(a, r, n, out.shape[0]), _rows(b, r, n, out.shape[0]),
                                         out=out[r]), _row_parts(out.shape[0], out.size))
        return out
    out[...] = a * b
    return out


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
            return multiply(values, mask)          # the boolean cast inside NumPy's loop
        return values * xp.astype(mask, values.dtype)
    return xp.where(mask, values, xp.zeros((), dtype=values.dtype, device=device(values)))


def sum_over(x: Any, axes: tuple[int, ...], *, fast: bool = True) -> Any:
    """``sum(x, axis=axes, keepdims=True)`` for non-negative ``axes`` in increasing order.

    NumPy's ``sum`` along a contiguous axis is pairwise and compute-bound (16-26 GB/s even in
    cache).  For a C-contiguous NumPy array the fast path sums the trailing axes, or axis 1 of a
    (N, C, ...) array, with ``einsum`` (``"ij->i"``, ``"ncl->nl"``): memory speed, as fast as
    the BLAS product with ones (``x2 @ ones``, 1.5-3x faster than ``sum``) without starting BLAS's
    own threads, so that the rows can be split between npattn's.  Other cases take ``sum``.
    """
    xp = array_namespace(x)
    axes = tuple(axes)
    shape = tuple(x.shape)
    kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
    if fast and is_numpy(xp) and _contiguous(x) and x.size and axes:
        rows = int(np.prod(shape[:axes[0]], dtype=np.int64))
        if axes == tuple(range(axes[0], x.ndim)):               # trailing axes
            spec, v = "ij->i", np.reshape(x, (rows, -1))
        elif axes == (1,) and x.ndim >= 3:                      # channels of (N, C, ...)
            spec, v = "ncl->nl", np.reshape(x, (shape[0], shape[1], -1))
        else:
            return xp.sum(x, axis=axes, keepdims=True)
        out = np.empty((v.shape[0], *v.shape[2:]), dtype=x.dtype)
        _run_parts(lambda r: np.einsum(spec, v[r], out=out[r]), _row_parts(v.shape[0], x.size))
        return np.reshape(out, kept)
    return xp.sum(x, axis=axes, keepdims=True)


def sum_of_products(a: Any, b: Any, axes: tuple[int, ...], *, fast: bool = True) -> Any:
    """``sum(a * b, axis=axes, keepdims=True)`` for ``a`` and ``b`` of one shape.

    NumPy's fast path is one ``einsum``, which multiplies and adds without the product's
    temporary: 2-4x faster than the product and the sum over the trailing axes, 1.6-2x over
    the channels; the batch axis split between the threads when it is not summed.
    """
    xp = array_namespace(a, b)
    axes = tuple(axes)
    if fast and is_numpy(xp) and tuple(a.shape) == tuple(b.shape) and 0 < a.ndim <= 26:
        letters = "abcdefghijklmnopqrstuvwxyz"[:a.ndim]
        spec = f"{letters},{letters}->" + "".join(ch for i, ch in enumerate(letters) if i not in axes)
        kept = tuple(1 if i in axes else n for i, n in enumerate(a.shape))
        parts = [slice(None)] if 0 in axes else _row_parts(a.shape[0], a.size)
        if len(parts) == 1:
            return np.reshape(np.einsum(spec, a, b), kept)
        out = np.empty(kept, dtype=np.result_type(a, b))
        flat = np.reshape(out, tuple(n for i, n in enumerate(a.shape) if i not in axes))
        _run_parts(lambda r: np.einsum(spec, a[r], b[r], out=flat[r]), parts)
        return out
    return xp.sum(a * b, axis=axes, keepdims=True)


#: The bytes of input a blocked fast path reads per step: about half of one core's L2 cache, so
#: that a block read once from memory is still in cache for the passes after the first.
CACHE_BLOCK_BYTES = 2 ** 20


def _blocks(lead: int, size: int, post: int, itemsize: int) -> list[tuple[slice, slice]]:
    """Blocks ``(lines of lead, range of post)`` of a (lead, size, post) array, each about
    :data:`CACHE_BLOCK_BYTES`: whole items of ``lead`` when one fits, else runs of ``post``."""
    item = size * post * itemsize
    if item <= CACHE_BLOCK_BYTES:
        k = max(1, CACHE_BLOCK_BYTES // item)
        return [(slice(i, min(i + k, lead)), slice(0, post)) for i in range(0, lead, k)]
    w = max(1, CACHE_BLOCK_BYTES // (size * itemsize))
    return [(slice(i, i + 1), slice(j, min(j + w, post)))
            for i in range(lead) for j in range(0, post, w)]


def _first_max_blocked(v3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy: :func:`first_max` along axis 1 of a (lead, size, post) array, block by block."""
    lead, size, post = v3.shape
    m = np.empty((lead, 1, post), dtype=v3.dtype)
    index = np.empty((lead, 1, post), dtype=np.intp)
    position = np.arange(size, dtype=np.float32)                  # exact below 2**24

    def one_block(where: tuple[slice, slice]) -> None:
        rows, cols = where
        block, m_block = v3[rows, :, cols], m[rows, :, cols]
        np.max(block, axis=1, keepdims=True, out=m_block)
        hit = block == m_block
        if np.count_nonzero(hit) == m_block.size and not np.isnan(np.sum(m_block)):
            # one hit per line: its position is the hits weighted by their positions
            index[rows, :, cols] = np.einsum("c,ncl->nl", position, hit)[:, None, :]
        else:                                                     # a tie or a NaN
            index[rows, :, cols] = np.argmax(hit | np.isnan(block), axis=1, keepdims=True)

    blocks = _blocks(lead, size, post, v3.itemsize)
    _run_parts(one_block, blocks, parallel=v3.size >= PARALLEL_MIN_ELEMENTS)
    return m, index


def first_max(v: Any, axis: int, *, fast: bool = True) -> tuple[Any, Any]:
    """The maximum of ``v`` along ``axis`` and the index of its first occurrence, both kept with
    size 1 along ``axis``; the index is an integer array (the default index dtype).

    A NaN counts as the maximum: a line holding a NaN has maximum NaN and index its first NaN.

    Spec: ``m = max(v)``, then ``argmax`` of ``v == m or isnan(v)`` as int8, which returns the
    first of the largest values.  NumPy's fast paths: along the last axis, ``argmax`` of ``v``
    itself (first maximum, first NaN) and a gather of the value, one pass.  Along another axis,
    where ``argmax`` would make a transposed copy (about 5x the cost), block by block of about
    1 MiB (read once from memory, then from cache): the maximum, the hits ``v == m``, and when
    every line holds its maximum exactly once and no maximum is NaN (the usual case), the index
    as the hits weighted by their positions, one ``einsum``; otherwise the spec's ``argmax``
    for that block.  No full-size temporary.
    """
    xp = array_namespace(v)
    size = v.shape[axis]
    if fast and is_numpy(xp) and size <= 2 ** 24 and v.size:
        if axis == v.ndim - 1:
            index = np.argmax(v, axis=axis, keepdims=True)
            return np.take_along_axis(v, index, axis=axis), index
        lead = int(np.prod(v.shape[:axis], dtype=np.int64))
        m, index = _first_max_blocked(np.reshape(v, (lead, size, -1)))
        kept = tuple(1 if i == axis else n for i, n in enumerate(v.shape))
        return np.reshape(m, kept), np.reshape(index, kept)
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
    channels or over H x W that is 1/C or 1/(HW) of the array (a C-contiguous NumPy target
    through one flat index, about 7x faster than the index arrays).
    """
    xp = array_namespace(target, values)
    if fast and is_numpy(xp) and _contiguous(target):
        # one flat index into the contiguous target: about 7x faster than four index arrays
        flat = 0
        for idx, stride in zip(index, target.strides):
            flat = flat + idx * (stride // target.itemsize)
        target.reshape(-1)[flat] += values
        return target
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


def map_last_axis(fn: Callable[..., Any], *arrays: Any, fast: bool = True) -> Any:
    """``fn(*arrays)`` for a function that works line by line along the last axis.

    ``arrays`` share one shape; ``fn`` returns an array of that shape and dtype whose every line
    along the last axis depends only on the same lines of the inputs (a softmax, its backward).
    Spec: ``fn`` on the whole arrays.  For large C-contiguous NumPy arrays and more than one
    thread, the fast path splits the lines between the threads, calls ``fn`` on each share and
    writes one output.  (Calling ``fn`` on cache-sized blocks of lines on one thread bought
    nothing: a (4, 784, 784) float32 softmax took 5.6 ms in blocks against 4.9 ms whole.)
    """
    xp = array_namespace(*arrays)
    first = arrays[0]
    if (fast and is_numpy(xp) and first.ndim >= 2 and _THREADS > 1
            and all(tuple(a.shape) == tuple(first.shape) and _contiguous(a) for a in arrays)):
        length = first.shape[-1]
        lines = first.size // length
        parts = _row_parts(lines, first.size)
        if len(parts) > 1:
            flat = [np.reshape(a, (lines, length)) for a in arrays]
            out = np.empty((lines, length), dtype=first.dtype)

            def one_part(rows: slice) -> None:
                out[rows] = fn(*(f[rows] for f in flat))

            _run_parts(one_part, parts)
            return np.reshape(out, first.shape)
    return fn(*arrays)


def exp_into(target: Any, *, fast: bool = True) -> Any:
    """``exp(target)``, written over ``target`` where the library allows; returns the result.

    Spec: ``xp.exp(target)``, a fresh array (``target`` left as it was).  NumPy's fast path
    writes into ``target`` (``np.exp(target, out=target)``), its batch axis split between the
    threads: no fresh array of ``target``'s size (at (4, 784, 784) float32, 9.4 MiB mapped and
    faulted in anew on every call).  The caller must own ``target`` and use the return value.
    """
    xp = array_namespace(target)
    if fast and is_numpy(xp) and target.ndim and _contiguous(target):
        _run_parts(lambda r: np.exp(target[r], out=target[r]),
                   _row_parts(target.shape[0], target.size))
        return target
    return xp.exp(target)


# ------------------------------------------------------------------ sampling at data positions
#
# The bilinear sampling of grid_sample (npattn/ops/_bilinear.py) works image by image: gather
# the K corners of every point, weigh them, and in backward scatter the weighted cotangents back.
# Measured at 8x64x28x28 float32, one thread (benchmarks/NOTES-sampling.md).

def run_parts(fn: Callable[[Any], None], parts: list[Any], xp: ModuleType, size: int) -> None:
    """``fn(part)`` for every part: independent pieces of work that write disjoint outputs.

    Spec: the parts in order on the calling thread.  NumPy, with more than one thread
    (:func:`set_threads`) and ``size`` (the elements the parts touch together) at least
    :data:`PARALLEL_MIN_ELEMENTS`: the parts split in contiguous runs between the threads
    (NumPy's ``take``, ``einsum``, ufuncs and ``bincount`` release the GIL in their loops).
    Every other library runs the parts in order.
    """
    _run_parts(fn, list(parts), parallel=is_numpy(xp) and size >= PARALLEL_MIN_ELEMENTS)


def _into(out: Any, result: Any) -> Any:
    """``result`` written into ``out`` when one is given (then ``out`` is returned).  ``out`` may
    be a basic-slicing view of a larger array: NumPy, CuPy and array-api-strict write through it."""
    if out is None:
        return result
    out[...] = result
    return out


def weighted_sum(values: Any, weights: Any, *, out: Any = None, fast: bool = True) -> Any:
    """``sum(values * weights, axis=1)`` for ``values`` (R, K, S) and ``weights`` (K, S): (R, S).

    The bilinear samples from their K gathered corners; written into ``out`` (R, S) when given.
    NumPy's fast path is one ``einsum`` (``"rks,ks->rs"``) without the (R, K, S) product, straight
    into ``out``: 1.1 ms against 1.4 ms for the product and the sum at 8 images of (64, 4, 784)
    float32.
    """
    xp = array_namespace(values, weights)
    if fast and is_numpy(xp):
        return np.einsum("rks,ks->rs", values, weights, out=out)
    return _into(out, xp.sum(values * weights, axis=1))


def channel_dots(g: Any, values: Any, *, out: Any = None, fast: bool = True) -> Any:
    """``sum(g[:, None, :] * values, axis=0)`` for ``g`` (R, S) and ``values`` (R, K, S): (K, S).

    The dot products over the rows (channels) of a cotangent with each of K gathered corners;
    written into ``out`` (K, S) when given.  NumPy's fast path is one ``einsum``
    (``"rs,rks->ks"``) straight into ``out``: 25 against 32 us (float32) and 66 against 80 us
    (float64) per (64, 4, 784) image for :func:`sum_of_products` of a broadcast ``g`` and a copy.
    """
    xp = array_namespace(g, values)
    if fast and is_numpy(xp):
        return np.einsum("rs,rks->ks", g, values, out=out)
    r, s = g.shape
    return _into(out, xp.sum(xp.reshape(g, (r, 1, s)) * values, axis=0))


def scatter_add_weighted(index: Any, weights: Any, rows: Any, size: int, *,
                         fast: bool = True) -> Any:
    """``out[r, q] = sum(weights[i] * rows[r][i] for the positions i where index[i] == q)``.

    The adjoint of a weighted gather shared by ``R`` rows (channels).

    Parameters
    ----------
    index : integer array, shape P (at least one dimension)
        The bin of each position, in ``[0, size)``.
    weights : floating array, shape P
    rows : floating array, shape (R, ...)
        Each ``rows[r]`` broadcasts against ``weights`` to exactly shape P.
    size : int
        The number of bins.

    Returns
    -------
    out : array, shape (R, size), the dtype of ``rows``

    Spec: row by row, the products ``weights * rows[r]`` summed into the bins by
    :func:`scatter_add`.  NumPy's fast path writes each row's products into one buffer per
    thread and adds them into the row with ``np.add.at`` (NumPy's 1-D fast loop, in the rows'
    dtype, the index made contiguous once): at 64 rows of 25088 products into 6280 bins,
    2.4 ms against 3.0 ms for ``bincount`` in float32 (which sums in float64, a conversion in
    and out per row), equal in float64.  Each row goes in runs of about 2^16 positions along
    the first axis of ``index``, so that the products stay in cache; the rows are split
    between the threads.
    """
    xp = array_namespace(index, weights, rows)
    r = rows.shape[0]
    if fast and is_numpy(xp) and index.ndim:
        bins = np.ascontiguousarray(index, dtype=np.intp)
        out = np.zeros((r, size), dtype=rows.dtype)
        lead = index.shape[0]
        # runs along the first axis of about 2^16 positions: the products stay in cache
        per = max(1, 2 ** 16 // max(1, index[0].size)) if lead else 1
        runs = [slice(j, min(j + per, lead)) for j in range(0, lead, per)]

        def some_rows(part: slice) -> None:
            product = np.empty((min(per, lead), *index.shape[1:]), dtype=rows.dtype)
            for i in range(part.start, part.stop):
                for run in runs:
                    p = product[:run.stop - run.start]
                    np.multiply(weights[run], _rows(rows[i], run, index.ndim, lead), out=p)
                    np.add.at(out[i], np.reshape(bins[run], (-1,)), np.reshape(p, (-1,)))

        _run_parts(some_rows, _row_parts(r, r * bins.size))
        return out
    flat = xp.reshape(index, (-1,))
    if r == 0:
        return xp.zeros((0, size), dtype=rows.dtype, device=device(rows))
    return xp.stack([xp.astype(scatter_add(flat, xp.reshape(weights * rows[i, ...], (-1,)), size),
                               rows.dtype) for i in range(r)], axis=0)


__all__ += ["run_parts", "weighted_sum", "channel_dots", "scatter_add_weighted"]


# ------------------------------------------------------------- element-wise work block by block

#: The bytes of one input that :func:`batch_channel_blocks` puts in a block.  Note: measured,
#: not derived from the cache sizes.  Blocks of 256 KiB kept a gate's working set in one core's
#: L2, but made so many short NumPy calls that two threads contending for the GIL were slower
#: than one (SimAM 8x64x56x56 float32: 17.0 ms against 13.8); blocks of 1 MiB make a quarter
#: as many calls and let two threads gain (SimAM 12.0 ms, BAM 22.9 -> 12.4 ms, CoordAttention
#: 8.1 -> 5.7 ms there), at equal speed on one thread.  Larger blocks lose again where the
#: batch no longer splits into a block per thread (benchmarks/NOTES.md, 2026-12-08).
ELEMENTWISE_BLOCK_BYTES = 2 ** 20


def batch_channel_blocks(x: Any, *, block_bytes: int | None = None,
                         fast: bool = True) -> list[tuple[slice, slice]]:
    """Blocks ``(samples, channels)`` that cover the (N, C) grid of an (N, C, ...) array once,
    for an element-wise computation done block by block (:func:`run_blocks`).

    Spec: one block, the whole array (``(slice(0, N), slice(0, C))``), which is what every
    library but NumPy gets.  NumPy's fast path: blocks of about ``block_bytes`` (default
    :data:`ELEMENTWISE_BLOCK_BYTES`) of ``x``: whole samples when one fits, else runs of
    channels of one sample.  What it buys: a chain of element-wise steps (a sum, a sigmoid, a
    product) makes its temporaries block-sized, in cache and reused from the heap, instead of
    one fresh full-size array per step, each mapped and faulted in anew once it exceeds glibc's
    mmap threshold (20-35 ms per 98 MiB array on these machines).
    """
    n, c = x.shape[0], x.shape[1]
    if not (fast and is_numpy(array_namespace(x))) or x.size == 0:
        return [(slice(0, n), slice(0, c))]
    per_channel = max(1, int(np.prod(x.shape[2:], dtype=np.int64))) * x.itemsize
    limit = ELEMENTWISE_BLOCK_BYTES if block_bytes is None else block_bytes
    return _batch_channel_runs(n, c, per_channel, limit)


def _batch_channel_runs(n: int, c: int, per_channel: int, limit: int) -> list[tuple[slice, slice]]:
    """Whole samples, about ``limit // sample`` at a time, when a sample fits in ``limit``
    bytes; else runs of about ``limit // per_channel`` channels (at least one) of one sample.
    The runs are balanced (28 channels in runs of 10: 9 + 9 + 10, not 10 + 10 + 8)."""
    def runs(total: int, most: int) -> list[slice]:
        k = -(-total // max(1, most))
        return [slice(total * i // k, total * (i + 1) // k) for i in range(k)]

    sample = c * per_channel
    if sample <= limit:
        return [(samples, slice(0, c)) for samples in runs(n, limit // sample)]
    return [(slice(i, i + 1), channels) for i in range(n) for channels in runs(c, limit // per_channel)]


def run_blocks(fn: Callable[[Any], None], blocks: list[Any], size: int) -> None:
    """``fn(block)`` for every block of :func:`batch_channel_blocks`, the blocks shared between
    npattn's threads when the array has ``size >=`` :data:`PARALLEL_MIN_ELEMENTS` elements
    (``fn`` must write only its own block's entries)."""
    _run_parts(fn, blocks, parallel=len(blocks) > 1 and size >= PARALLEL_MIN_ELEMENTS)


__all__ += ["batch_channel_blocks", "run_blocks"]


def store_scaled(target: Any, index: tuple[Any, ...], a: Any, scale: Any, shift: Any = None, *,
                 fast: bool = True) -> Any:
    """``target[index] = a * scale + shift`` (``shift`` optional; all broadcast against the
    block ``target[index]``); returns ``target``.

    Spec: the slice assignment.  NumPy's fast path writes the product straight into the view
    ``target[index]`` (``multiply(..., out=)``) and adds ``shift`` there in place: the block's
    temporary and the copy into ``target`` saved (one pass of two or three per block).
    """
    xp = array_namespace(target, a)
    if fast and is_numpy(xp):
        view = target[index]
        np.multiply(a, scale, out=view)
        if shift is not None:
            view += shift
        return target
    target[index] = a * scale if shift is None else a * scale + shift
    return target


__all__ += ["store_scaled"]


def all_within(a: Any, low: float, high: float, *, fast: bool = True) -> bool | None:
    """Whether every entry of ``a`` lies in ``[low, high]``, when that is cheap to know.

    NumPy (fast path): ``True`` or ``False`` from the minimum and the maximum (a NaN gives
    ``False``).  Spec, and every other library: ``None``, "not known" (finding out would read a
    device array on the host), so a caller takes its general path.  For a guard that lets a
    caller skip work that only matters outside the range.
    """
    xp = array_namespace(a)
    if fast and is_numpy(xp):
        return bool(a.size == 0 or (np.min(a) >= low and np.max(a) <= high))
    return None


# ------------------------------------------------------------------ thin products, no BLAS

def thin_matmul(a: Any, b: Any, *, fast: bool = True) -> Any:
    """``matmul(a, b)`` for stacks of thin products: ``a`` of shape (..., 1, K) (a row times
    matrices), ``b`` of shape (..., K, 1) (matrices times a column), or an inner size K of at
    most 2 (a sum of one or two outer products); the leading axes broadcast as ``matmul``
    broadcasts them.  Other shapes take ``matmul``.

    Spec: ``xp.matmul(a, b)``.  Such a product is memory-bound (each entry of the large operand
    or of the output touched once for two or four flops).  NumPy's fast path is one ``einsum``
    per share of the leading axis, split between npattn's threads, without BLAS.  What it buys:
    OpenBLAS threads each product of the stack on its own and waits on its worker at every
    call; when another process holds one of the two cores that wait is a time slice per call,
    and GlobalContext's products on (32, 256, 3136) float32 made its forward+backward take
    1.2-1.7 s against 0.31 s with one BLAS thread (benchmarks/NOTES-context-blocks.md).  What
    it costs on one quiet thread: the einsum is about 25% slower than BLAS for a row or a
    column (7.1 against 5.8 ms at (32, 256, 3136) float32), 15-80% for inner size 2.
    """
    xp = array_namespace(a, b)
    if (fast and is_numpy(xp) and a.ndim >= 2 and b.ndim >= 2
            and (a.shape[-2] == 1 or b.shape[-1] == 1 or a.shape[-1] <= 2)):
        lead = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        if not lead:
            return np.einsum("ij,jk->ik", a, b)
        shape = (*lead, a.shape[-2], b.shape[-1])
        out = np.empty(shape, dtype=np.result_type(a, b))
        n, rows = len(shape), shape[0]
        _run_parts(lambda r: np.einsum("...ij,...jk->...ik", _rows(a, r, n, rows),
                                       _rows(b, r, n, rows), out=out[r]),
                   _row_parts(rows, max(a.size, b.size, out.size)))
        return out
    return xp.matmul(a, b)


__all__ += ["thin_matmul"]


def maximum_into(target: Any, low: float) -> Any:
    """``maximum(target, low)`` (a NaN stays NaN), computed in ``target``'s memory where the
    library allows it; returns the result.  ``target`` must be an array the caller owns.

    Spec: ``xp.maximum(target, low)``, a fresh array.  NumPy's fast path writes it in place
    (``np.maximum(..., out=target)``): a ReLU on a fresh intermediate without a second
    full-size array.
    """
    xp = array_namespace(target)
    if is_numpy(xp):
        return np.maximum(target, low, out=target)
    return xp.maximum(target, xp.asarray(low, dtype=target.dtype, device=device(target)))


__all__ += ["maximum_into"]


def store_sigmoid_of_sum(target: Any, index: tuple[Any, ...], a: Any, b: Any, *,
                         fast: bool = True) -> Any:
    """``target[index] = sigmoid(a + b)`` (``a`` and ``b`` broadcast against the block), with
    ``sigmoid_forward``'s formula and order, ``0.5 * (tanh(0.5 * z) + 1)``; returns ``target``.

    Spec: the slice assignment of that expression.  NumPy's fast path computes it in the view
    ``target[index]`` itself (the sum with ``out=``, then four steps in place): no block-sized
    temporaries and no copy into ``target``; the same numbers bit for bit.
    """
    xp = array_namespace(target, a, b)
    if fast and is_numpy(xp):
        view = target[index]
        np.add(a, b, out=view)
        view *= 0.5
        np.tanh(view, out=view)
        view += 1.0
        view *= 0.5
        return target
    target[index] = 0.5 * (xp.tanh(0.5 * (a + b)) + 1.0)
    return target


__all__ += ["store_sigmoid_of_sum"]
