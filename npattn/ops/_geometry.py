"""Geometry of sliding windows, in one place: output size, padding, im2col and its adjoint col2im.

Convolution and pooling all read an input through windows of ``kh x kw`` taps, ``stride`` apart,
taps ``dilation`` apart, over an input padded by ``padding`` on each side.  The output size is

.. math:: H_{out} = \\lfloor (H + 2 p_h - d_h (k_h - 1) - 1) / s_h \\rfloor + 1

(PyTorch's rule, ``ceil_mode=False``).  ``im2col`` gathers the windows into
``cols[n, c, i, j, oh, ow] = xpad[n, c, oh*s_h + i*d_h, ow*s_w + j*d_w]``, one strided slice per
kernel tap; ``col2im`` is its exact adjoint: the same loop over taps, ``=`` turned into ``+=``.
A convolution works through its output in tiles (:func:`window_tiles`, :func:`input_rows`)
whose windows stay in a core's cache, gathered into a workspace kept between calls
(:func:`scratch`).  See ``docs/geometry.md``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device, is_numpy_namespace

from ..checks import argument_error

__all__ = ["conv_output_size", "check_window_fits", "pad2d", "crop2d", "im2col", "col2im",
           "batch_blocks", "BLOCK_ELEMENTS", "window_tiles", "input_rows", "TILE_BYTES",
           "TILE_COLUMNS", "scratch", "SCRATCH_KEEP_BYTES"]

#: The most elements a per-block workspace (:func:`batch_blocks`, used by the sampling ops)
#: should hold: 2 Mi elements, 8 MiB in float32.  Large temporaries cost more than their copy: the allocator hands
#: them back to the system when freed and every call faults their pages in again (a 58 MiB
#: im2col at 8x64x56x56 took 15 ms to build fresh, 3.5 ms block by block into one reused buffer).
BLOCK_ELEMENTS = 2 ** 21

#: The most bytes the windows of one tile of a convolution's output should hold (see
#: :func:`window_tiles`): 1.125 MiB, about half of one core's 2 MiB L2 cache, so that the matrix
#: product reads the windows from cache right after they are gathered.  Measured on one thread,
#: float32, forward+backward, against 1.125 MiB: a 3x3 64->64 conv at 8x64x56x56 took 1.06x
#: the time with 0.5 MiB tiles and 1.03x with 2.25 MiB; 16->32 at 64x16x16x16 1.07x and
#: 1.15x.  (1 MiB would give 7 output rows of 56 at 8x64x56x56, 406 columns, a width the BLAS
#: kernel runs about 7% slower than the 448 columns of 8 rows.)
TILE_BYTES = 9 * 2 ** 17

#: The fewest output positions a tile of one sample should hold (see :func:`window_tiles`):
#: the BLAS product slows down when its matrix has few columns (at 16x256x28x28, 3x3, the
#: 1.125 MiB tiles of 4 rows, 112 columns, took 1.3x the time of whole samples in float32 and
#: 1.5x in float64, where they hold 2 rows).
TILE_COLUMNS = 448


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """``floor((size + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1``; may be < 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_window_fits(op: str, arg: str, in_hw: tuple[int, int], kernel: tuple[int, int],
                      stride: tuple[int, int], padding: tuple[int, int],
                      dilation: tuple[int, int]) -> tuple[int, int]:
    """Return ``(H_out, W_out)``; raise ``ValueError`` naming ``arg`` if a window does not fit."""
    out = tuple(conv_output_size(n, k, s, p, d)
                for n, k, s, p, d in zip(in_hw, kernel, stride, padding, dilation))
    if min(out) < 1:
        eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        padded = tuple(n + 2 * p for n, p in zip(in_hw, padding))
        raise argument_error(op, arg, f"a (dilated) kernel of at most the padded input size {padded}",
                             f"an effective kernel of size {eff}")
    return out  # type: ignore[return-value]


def pad2d(x: Any, padding: tuple[int, int], value: float = 0.0) -> Any:
    """Pad the last two axes of ``x`` by ``padding = (ph, pw)`` on each side with ``value``.

    Returns ``x`` itself (not a copy) when there is nothing to pad.
    """
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = array_namespace(x)
    *lead, h, w = x.shape
    out = xp.full((*lead, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype, device=device(x))
    out[..., ph:ph + h, pw:pw + w] = x
    return out


def crop2d(g: Any, padding: tuple[int, int]) -> Any:
    """Adjoint of :func:`pad2d` (for the padded entries' gradient, which is dropped).

    Slices with explicit ends, so ``padding = 0`` keeps everything (a ``p:-p`` slice would not).
    """
    ph, pw = padding
    h, w = g.shape[-2] - 2 * ph, g.shape[-1] - 2 * pw
    return g[..., ph:ph + h, pw:pw + w]


def _tap(i: int, j: int, stride: tuple[int, int], dilation: tuple[int, int],
         out_hw: tuple[int, int]) -> tuple[slice, slice]:
    """The strided slices of padded input read by kernel tap ``(i, j)``."""
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    return (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def _copy_taps(out: np.ndarray, a: np.ndarray, shape: tuple[int, ...],
               strides: tuple[int, ...]) -> None:
    """NumPy only: fill ``out`` with every tap at once, one copy through a strided view of ``a``.

    The view has ``shape`` and byte ``strides`` (read-only, inside ``a``).  One ``np.copyto``
    instead of ``kh*kw`` slice assignments: the gather of the 3x3 windows of 8x64x56x56 in
    tiles of 8 rows took 2.4 ms against 3.2 ms, most of the difference the calls' overhead.
    """
    np.copyto(out, np.lib.stride_tricks.as_strided(a, shape=shape, strides=strides,
                                                   writeable=False))


def im2col(xpad: Any, kernel: tuple[int, int], stride: tuple[int, int],
           dilation: tuple[int, int], out_hw: tuple[int, int], out: Any = None) -> Any:
    """Gather the sliding windows of an already padded input.

    Parameters
    ----------
    xpad : array, shape (N, C, Hp, Wp)
    kernel, stride, dilation : pair of int
    out_hw : pair of int
        ``(H_out, W_out)``: from :func:`conv_output_size`, or fewer rows (the windows of the
        first ``H_out`` output rows).
    out : array, shape (N, C, kh, kw, H_out, W_out), optional
        A workspace to fill (and return) instead of a new array; every entry is overwritten.

    Returns
    -------
    cols : array, shape (N, C, kh, kw, H_out, W_out), the dtype of ``xpad``
        ``cols[n, c, i, j, oh, ow] = xpad[n, c, oh*sh + i*dh, ow*sw + j*dw]``.
    """
    xp = array_namespace(xpad)
    n, c = xpad.shape[:2]
    kh, kw = kernel
    if out is None:
        out = xp.empty((n, c, kh, kw, *out_hw), dtype=xpad.dtype, device=device(xpad))
    if is_numpy_namespace(xp):
        (sn, sc, sh, sw), (dh, dw) = xpad.strides, dilation
        _copy_taps(out, xpad, (n, c, kh, kw, *out_hw),
                   (sn, sc, dh * sh, dw * sw, stride[0] * sh, stride[1] * sw))
        return out
    for i in range(kh):
        for j in range(kw):
            rows, columns = _tap(i, j, stride, dilation, out_hw)
            out[:, :, i, j, ...] = xpad[:, :, rows, columns]
    return out


def col2im(cols: Any, padded_hw: tuple[int, int], stride: tuple[int, int],
           dilation: tuple[int, int]) -> Any:
    """Adjoint of :func:`im2col`: add every window back where it was read from.

    Parameters
    ----------
    cols : array, shape (N, C, kh, kw, H_out, W_out)
    padded_hw : pair of int
        ``(Hp, Wp)``, the padded input's spatial size.
    stride, dilation : pair of int

    Returns
    -------
    gpad : array, shape (N, C, Hp, Wp)
        ``gpad[n, c, oh*sh + i*dh, ow*sw + j*dw] += cols[n, c, i, j, oh, ow]``.
    """
    xp = array_namespace(cols)
    n, c, kh, kw, oh, ow = cols.shape
    gpad = xp.zeros((n, c, *padded_hw), dtype=cols.dtype, device=device(cols))
    for i in range(kh):
        for j in range(kw):
            rows, columns = _tap(i, j, stride, dilation, (oh, ow))
            gpad[:, :, rows, columns] += cols[:, :, i, j, ...]
    return gpad


def batch_blocks(n: int, per_sample: int, budget: int | None = None) -> list[slice]:
    """Split a batch of ``n`` into consecutive slices of ``max(1, budget // per_sample)`` samples.

    ``per_sample`` is the number of elements one sample puts in the workspace and ``budget``
    (default :data:`BLOCK_ELEMENTS`, read at call time) the most a block should hold.  All
    slices but the last have the same length, so one workspace serves them all.
    """
    budget = BLOCK_ELEMENTS if budget is None else budget
    step = max(1, budget // max(1, per_sample))
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def window_tiles(n: int, out_hw: tuple[int, int], per_position: int, itemsize: int,
                 budget: int | None = None, min_columns: int | None = None
                 ) -> list[tuple[slice, slice]]:
    """Cut a convolution's output (n samples of ``out_hw``) into tiles ``(samples, rows)``.

    ``per_position`` is the number of window elements one output position needs
    (``C*kh*kw``) and ``itemsize`` their size in bytes.  A tile's windows hold at most
    ``budget`` bytes (default :data:`TILE_BYTES`), unless that leaves fewer than
    ``min_columns`` output positions (default :data:`TILE_COLUMNS`) per sample: a matrix
    product with few columns is slow, whatever the cache.  When a whole sample fits, a tile is
    as many whole samples as fit; otherwise one sample in bands of output rows, of equal
    heights (within one) so that no band is much shorter than the others.  Tiles are listed in
    order, the first the largest; defaults are read at call time.
    """
    budget = TILE_BYTES if budget is None else budget
    min_columns = TILE_COLUMNS if min_columns is None else min_columns
    h_out, w_out = out_hw
    row = max(1, per_position * w_out * itemsize)
    if row * h_out <= budget or h_out * w_out <= min_columns:
        step = max(1, budget // (row * h_out))
        return [(slice(s, min(s + step, n)), slice(0, h_out)) for s in range(0, n, step)]
    rows = max(budget // row, -(-min_columns // w_out), 1)
    bands = -(-h_out // rows)
    edges = [-(-h_out * b // bands) for b in range(bands + 1)]      # the first band the tallest
    return [(slice(s, s + 1), slice(edges[b], edges[b + 1])) for s in range(n) for b in range(bands)]


def input_rows(rows: slice, kernel: int, stride: int, dilation: int) -> slice:
    """The rows of the padded input read by the windows of output rows ``rows``:
    ``rows.start*stride`` up to ``(rows.stop - 1)*stride + dilation*(kernel - 1)``, inclusive."""
    return slice(rows.start * stride, (rows.stop - 1) * stride + dilation * (kernel - 1) + 1)


_SCRATCH = threading.local()

#: Workspaces larger than this are handed back after use rather than kept (:func:`scratch`).
SCRATCH_KEEP_BYTES = 2 ** 25


def scratch(xp: Any, name: str, size: int, dtype: Any, where: Any) -> Any:
    """A 1-D workspace of ``size`` elements of a real floating ``dtype`` that outlives the call:
    the first ``size`` entries of a buffer kept per thread, ``name``, array library, dtype and
    device, grown when too small (and not kept above :data:`SCRATCH_KEEP_BYTES`).

    Its entries are whatever its last user left.  A tile loop that takes its workspace from
    here allocates nothing per call: a fresh workspace of about a MiB was faulted in anew on
    every call (the C allocator hands freed blocks back to the system), which cost 0.7 of
    2.5 ms in the forward of a 64x32x8x8 convolution and 1.6 of 4.7 ms at 64x16x16x16.  A
    name serves one loop at a time.
    """
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    bits = xp.finfo(dtype).bits                      # a float dtype, however it is spelled
    key = (name, xp.__name__, bits, str(where))
    buffer = buffers.get(key)
    if buffer is None or buffer.shape[0] < size:
        buffer = xp.empty((size,), dtype=dtype, device=where)
        if size * bits // 8 <= SCRATCH_KEEP_BYTES:
            buffers[key] = buffer
    return buffer[:size]
