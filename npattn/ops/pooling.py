"""Pooling, PyTorch's semantics: global, per-pixel across channels, windowed, and adaptive.

* ``global_avg_pool2d``, ``global_max_pool2d``: (N, C, H, W) -> (N, C, 1, 1);
* ``channel_mean``, ``channel_max``: (N, C, H, W) -> (N, 1, H, W);
* ``max_pool2d``, ``avg_pool2d``: windows of ``kernel_size``, ``stride`` apart, over an input
  padded by ``padding`` (at most half the kernel, as PyTorch demands);
* ``adaptive_avg_pool2d``: PyTorch's bins, ``start = floor(i H / H_out)``,
  ``end = ceil((i + 1) H / H_out)``.

**The tie rule of every max.**  A max sends its whole gradient to the *first* maximum in index
order, as PyTorch does: row-major within a window or over ``H x W``, the lowest channel for
``channel_max``.  A NaN counts as the maximum (the first NaN gets the gradient), and a padded
cell of ``max_pool2d`` never wins, even against a window of ``-inf``.  Max ops cache where the
winner is (its index along the reduced axis, or the winning tap of each window), never the input.

The global and channel pools also have an accumulating backward, ``NAME_backward_add(dx, dy,
cache)``: ``dx + NAME_backward(dy, cache)``, added into ``dx`` in place (which it returns).
A block whose input feeds several paths sums their gradients with it, without building each
path's full-size gradient; for a max it touches only the winners.
Derivations: ``docs/ops/pooling.md``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

from array_api_compat import device

from ..backend import add_at, add_into, array_namespace, first_max, is_numpy, keep_where, namespace, sum_over
from ..checks import argument_error, check_float_array, check_shape, int_pair
from ._geometry import _tap, check_window_fits, col2im, crop2d, pad2d
from ._registry import register_op

__all__ = [
    "global_avg_pool2d_forward", "global_avg_pool2d_backward", "global_avg_pool2d_backward_add",
    "global_max_pool2d_forward", "global_max_pool2d_backward", "global_max_pool2d_backward_add",
    "channel_mean_forward", "channel_mean_backward", "channel_mean_backward_add",
    "channel_max_forward", "channel_max_backward", "channel_max_backward_add",
    "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
]

_NO_DILATION = (1, 1)


class ShapeCache(NamedTuple):
    """A mean's backward needs only the input's shape."""

    shape: tuple[int, ...]


class IndexCache(NamedTuple):
    """A max's backward needs where the first maximum of each reduced line is: its index along
    the reduced axis (an integer array of the output's shape), and the input's shape."""

    index: Any
    shape: tuple[int, ...]


class WindowCache(NamedTuple):
    """A windowed pool's geometry; ``index`` is the winning tap ``i k_w + j`` (row-major in the
    window) of each output for ``max_pool2d``, int32 of shape (N, C, H_out, W_out), and
    ``None`` for ``avg_pool2d``."""

    shape: tuple[int, int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    out_hw: tuple[int, int]
    index: Any = None


class AdaptiveCache(NamedTuple):
    """The input's shape and the output size; the bins follow from them."""

    shape: tuple[int, int, int, int]
    out_hw: tuple[int, int]


# ------------------------------------------------------------------------------------ helpers

def _check_nchw(op: str, x: Any) -> ModuleType:
    """The namespace of ``x``, after checking it is a real floating (N, C, H, W) array."""
    xp = namespace(op, x=x)
    check_float_array(op, "x", x, ndim=4, layout="(N, C, H, W)")
    return xp


def _spread(dy: Any, shape: tuple[int, ...], count: int) -> Any:
    """The adjoint of a mean over ``count`` entries: ``dy / count`` copied to ``shape``."""
    xp = array_namespace(dy)
    return xp.asarray(xp.broadcast_to(dy / count, shape), copy=True)


# ---------------------------------------------------------------------------- global pooling

def _check_add(op: str, dx: Any, dy: Any, shape: tuple[int, ...]) -> Any:
    """Check the gradient ``dx`` that a ``*_backward_add`` adds into and return the namespace;
    ``dx = None`` is a plain backward, which adds into zeros of its own (nothing to check)."""
    xp = namespace(op, dy=dy)
    if dx is None:
        return xp
    check_shape(op, "dx", dx, shape)
    namespace(op, dx=dx, dy=dy)
    if dx.dtype != dy.dtype:
        raise argument_error(op, "dx", f"dtype {dy.dtype} (the dtype of 'dy')", f"dtype {dx.dtype}",
                             TypeError)
    return xp


def _zeros(dy: Any, shape: tuple[int, ...]) -> Any:
    xp = array_namespace(dy)
    return xp.zeros(shape, dtype=dy.dtype, device=device(dy))


def _positions(xp: ModuleType, shape: tuple[int, ...], axis: int, like: Any) -> Any:
    """``arange(shape[axis])`` laid along ``axis`` of an array of ``len(shape)`` dimensions."""
    size = shape[axis]
    return xp.reshape(xp.arange(size, dtype=like.dtype, device=device(like)),
                      (1,) * axis + (size,) + (1,) * (len(shape) - axis - 1))


def global_avg_pool2d_forward(x: Any) -> tuple[Any, ShapeCache]:
    """``y[n, c] = mean over (h, w) of x[n, c, h, w]``.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64

    Returns
    -------
    y : array, shape (N, C, 1, 1), the dtype of ``x``
    cache : ShapeCache
        The shape of ``x``.
    """
    _check_nchw("global_avg_pool2d", x)
    h, w = x.shape[2:]
    return sum_over(x, (2, 3)) / (h * w), ShapeCache(tuple(x.shape))


def global_avg_pool2d_backward(dy: Any, cache: ShapeCache) -> Any:
    """``dx[n, c, h, w] = dy[n, c] / (H W)``.

    Parameters
    ----------
    dy : array, shape (N, C, 1, 1)

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    n, c, h, w = cache.shape
    check_shape("global_avg_pool2d_backward", "dy", dy, (n, c, 1, 1))
    return _spread(dy, cache.shape, h * w)


def global_avg_pool2d_backward_add(dx: Any, dy: Any, cache: ShapeCache) -> Any:
    """``dx += global_avg_pool2d_backward(dy, cache)`` in place: ``dx[n, c] += dy[n, c] / (H W)``.

    ``dx`` (N, C, H, W) is a gradient the caller owns, of the dtype of ``dy`` (N, C, 1, 1);
    it is updated and returned.
    """
    n, c, h, w = cache.shape
    check_shape("global_avg_pool2d_backward_add", "dy", dy, (n, c, 1, 1))
    _check_add("global_avg_pool2d_backward_add", dx, dy, cache.shape)
    return add_into(dx, dy / (h * w))


def global_max_pool2d_forward(x: Any) -> tuple[Any, IndexCache]:
    """``y[n, c] = max over (h, w) of x[n, c, h, w]``.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64

    Returns
    -------
    y : array, shape (N, C, 1, 1), the dtype of ``x``
    cache : IndexCache
        The first maximum of each ``x[n, c]`` in row-major order, as its position ``h W + w``
        (integers of shape (N, C, 1, 1)), and the shape of ``x``.
    """
    xp = _check_nchw("global_max_pool2d", x)
    n, c, h, w = x.shape
    m, index = first_max(xp.reshape(x, (n, c, h * w)), axis=2)
    return xp.reshape(m, (n, c, 1, 1)), IndexCache(xp.reshape(index, (n, c, 1, 1)), tuple(x.shape))


def global_max_pool2d_backward(dy: Any, cache: IndexCache) -> Any:
    """``dx[n, c, h, w] = dy[n, c]`` at the first maximum of ``x[n, c]``, else 0.

    Parameters
    ----------
    dy : array, shape (N, C, 1, 1)

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    return _add_global_max("global_max_pool2d_backward", None, dy, cache)


def global_max_pool2d_backward_add(dx: Any, dy: Any, cache: IndexCache) -> Any:
    """``dx += global_max_pool2d_backward(dy, cache)`` in place: ``dy[n, c]`` added at the first
    maximum of ``x[n, c]`` only.

    ``dx`` (N, C, H, W) is a gradient the caller owns, of the dtype of ``dy`` (N, C, 1, 1);
    it is updated and returned.
    """
    return _add_global_max("global_max_pool2d_backward_add", dx, dy, cache)


def _add_global_max(op: str, dx: Any, dy: Any, cache: IndexCache) -> Any:
    """``dy`` added into ``dx`` (zeros when ``None``) at each line's first maximum."""
    shape = cache.shape
    check_shape(op, "dy", dy, (*shape[:2], 1, 1))
    xp = _check_add(op, dx, dy, shape)
    namespace(op, dy=dy, index=cache.index)
    dx = _zeros(dy, shape) if dx is None else dx
    w = shape[3]
    winner = (_positions(xp, shape, 0, cache.index), _positions(xp, shape, 1, cache.index),
              cache.index // w, cache.index % w)                   # (n, c, h*, w*)
    return add_at(dx, winner, dy)


# --------------------------------------------------------------------------- across channels

def channel_mean_forward(x: Any) -> tuple[Any, ShapeCache]:
    """``y[n, 0, h, w] = mean over c of x[n, c, h, w]``.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64

    Returns
    -------
    y : array, shape (N, 1, H, W), the dtype of ``x``
    cache : ShapeCache
        The shape of ``x``.
    """
    _check_nchw("channel_mean", x)
    return sum_over(x, (1,)) / x.shape[1], ShapeCache(tuple(x.shape))


def channel_mean_backward(dy: Any, cache: ShapeCache) -> Any:
    """``dx[n, c, h, w] = dy[n, 0, h, w] / C``.

    Parameters
    ----------
    dy : array, shape (N, 1, H, W)

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    n, c, h, w = cache.shape
    check_shape("channel_mean_backward", "dy", dy, (n, 1, h, w))
    return _spread(dy, cache.shape, c)


def channel_mean_backward_add(dx: Any, dy: Any, cache: ShapeCache) -> Any:
    """``dx += channel_mean_backward(dy, cache)`` in place: ``dx[n, c] += dy[n, 0] / C``.

    ``dx`` (N, C, H, W) is a gradient the caller owns, of the dtype of ``dy`` (N, 1, H, W);
    it is updated and returned.
    """
    n, c, h, w = cache.shape
    check_shape("channel_mean_backward_add", "dy", dy, (n, 1, h, w))
    _check_add("channel_mean_backward_add", dx, dy, cache.shape)
    return add_into(dx, dy / c)


def channel_max_forward(x: Any) -> tuple[Any, IndexCache]:
    """``y[n, 0, h, w] = max over c of x[n, c, h, w]``.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64

    Returns
    -------
    y : array, shape (N, 1, H, W), the dtype of ``x``
    cache : IndexCache
        The lowest channel holding the maximum of each pixel (integers of shape (N, 1, H, W)),
        and the shape of ``x``.
    """
    _check_nchw("channel_max", x)
    y, index = first_max(x, axis=1)
    return y, IndexCache(index, tuple(x.shape))


def channel_max_backward(dy: Any, cache: IndexCache) -> Any:
    """``dx[n, c, h, w] = dy[n, 0, h, w]`` for the first channel ``c`` holding the maximum,
    else 0.

    Parameters
    ----------
    dy : array, shape (N, 1, H, W)

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    return _add_channel_max("channel_max_backward", None, dy, cache)


def channel_max_backward_add(dx: Any, dy: Any, cache: IndexCache) -> Any:
    """``dx += channel_max_backward(dy, cache)`` in place: ``dy[n, 0, h, w]`` added at the first
    channel holding the maximum of pixel ``(h, w)`` only.

    ``dx`` (N, C, H, W) is a gradient the caller owns, of the dtype of ``dy`` (N, 1, H, W);
    it is updated and returned.
    """
    return _add_channel_max("channel_max_backward_add", dx, dy, cache)


def _add_channel_max(op: str, dx: Any, dy: Any, cache: IndexCache) -> Any:
    """``dy`` added into ``dx`` (zeros when ``None``) at each pixel's first maximal channel."""
    n, c, h, w = shape = cache.shape
    check_shape(op, "dy", dy, (n, 1, h, w))
    xp = _check_add(op, dx, dy, shape)
    namespace(op, dy=dy, index=cache.index)
    dx = _zeros(dy, shape) if dx is None else dx
    winner = (_positions(xp, shape, 0, cache.index), cache.index,
              _positions(xp, shape, 2, cache.index), _positions(xp, shape, 3, cache.index))
    return add_at(dx, winner, dy)


# -------------------------------------------------------------------------- windowed pooling

def _window_args(op: str, x: Any, kernel_size: Any, stride: Any,
                 padding: Any) -> tuple[tuple[int, int], ...]:
    """Read and check ``kernel_size``, ``stride`` (``None``: the kernel) and ``padding``.

    Returns ``(kernel, stride, padding, out_hw)``, each a pair of ints.
    """
    kernel = int_pair(op, "kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else int_pair(op, "stride", stride, minimum=1)
    padding = int_pair(op, "padding", padding, minimum=0)
    half = (kernel[0] // 2, kernel[1] // 2)
    if padding[0] > half[0] or padding[1] > half[1]:
        raise argument_error(op, "padding", f"at most half the kernel size, {half}", padding)
    out_hw = check_window_fits(op, "kernel_size", tuple(x.shape[2:]), kernel, stride, padding,
                               _NO_DILATION)
    return kernel, stride, padding, out_hw


def _padded_hw(cache: WindowCache) -> tuple[int, int]:
    return tuple(n + 2 * p for n, p in zip(cache.shape[2:], cache.padding))  # type: ignore


def _check_window_dy(op: str, dy: Any, cache: WindowCache) -> None:
    check_shape(op, "dy", dy, (*cache.shape[:2], *cache.out_hw))


def _taps(kernel: tuple[int, int], stride: tuple[int, int],
          out_hw: tuple[int, int]) -> list[tuple[slice, slice]]:
    """The strided slices of the padded input read by each tap, in row-major tap order."""
    return [_tap(i, j, stride, _NO_DILATION, out_hw)
            for i in range(kernel[0]) for j in range(kernel[1])]


def _first_real_cell(x: Any, kernel: tuple[int, int], stride: tuple[int, int],
                     padding: tuple[int, int], out_hw: tuple[int, int]) -> tuple[Any, Any]:
    """The first cell of each window (row-major) that is not padding: its value, shape
    (N, C, H_out, W_out), and its tap ``i k_w + j``, shape (H_out, W_out), as int32.

    Real rows and columns are separable, so that cell is at the first real row ``i0`` and the
    first real column ``j0`` of the window: ``i0 = max(0, p_h - oh s_h)``, likewise ``j0``.
    """
    xp = array_namespace(x)
    dev = device(x)
    (sh, sw), (ph, pw), (out_h, out_w) = stride, padding, out_hw
    first_i = [max(0, ph - oh * sh) for oh in range(out_h)]
    first_j = [max(0, pw - ow * sw) for ow in range(out_w)]
    rows = [oh * sh - ph + i for oh, i in enumerate(first_i)]
    cols = [ow * sw - pw + j for ow, j in enumerate(first_j)]
    value = xp.take(xp.take(x, xp.asarray(rows, device=dev), axis=2),
                    xp.asarray(cols, device=dev), axis=3)
    tap = xp.asarray([[i * kernel[1] + j for j in first_j] for i in first_i],
                     dtype=xp.int32, device=dev)
    return value, tap


def max_pool2d_forward(x: Any, kernel_size: Any, stride: Any = None,
                       padding: Any = 0) -> tuple[Any, WindowCache]:
    """``y[n, c, oh, ow] = max over (i, j) of xpad[n, c, oh s_h + i, ow s_w + j]``.

    ``xpad`` is ``x`` padded with ``-inf``; a padded cell never wins (see the module's tie
    rule).  ``H_out = floor((H + 2 p_h - k_h) / s_h) + 1``, likewise ``W_out``.

    The windows are read one tap at a time (no (N, C, k_h, k_w, H_out, W_out) copy): starting
    from each window's first real cell, a later tap wins only if strictly greater (or the first
    NaN), so the first maximum keeps the gradient and ``-inf`` padding can never take it.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    kernel_size : int or pair of int, >= 1
    stride : int or pair of int, >= 1, optional
        Defaults to ``kernel_size``.
    padding : int or pair of int, 0 <= padding <= kernel_size // 2

    Returns
    -------
    y : array, shape (N, C, H_out, W_out), the dtype of ``x``
    cache : WindowCache
        The geometry and the first winning tap of every window.
    """
    xp = _check_nchw("max_pool2d", x)
    kernel, stride, padding, out_hw = _window_args("max_pool2d", x, kernel_size, stride, padding)
    xpad = pad2d(x, padding, float("-inf"))
    best, index = _first_real_cell(x, kernel, stride, padding, out_hw)
    any_nan = not is_numpy(xp) or bool(xp.any(xp.isnan(x)))  # no host read on a device
    for t, (rows, cols) in enumerate(_taps(kernel, stride, out_hw)):
        v = xpad[:, :, rows, cols]
        better = v > best
        if any_nan:  # a NaN beats any number; the first NaN is then kept
            better = better | (xp.isnan(v) & ~xp.isnan(best))
        best = xp.maximum(best, v)  # = where(better, v, best); maximum propagates NaN
        # t grows along the loop, so this moves index to t exactly where better is true
        # (branch-free, unlike where).
        index = xp.maximum(index, xp.astype(better, xp.int32) * t)
    return best, WindowCache(tuple(x.shape), kernel, stride, padding, out_hw, index)


def max_pool2d_backward(dy: Any, cache: WindowCache) -> Any:
    """``dx = crop(col2im(g))`` with ``g[n, c, i, j, oh, ow] = dy[n, c, oh, ow]`` at the
    winning tap ``(i, j)`` of window ``(oh, ow)``, else 0.

    ``col2im`` is done here tap by tap, without building ``g``: the same loop over taps, each
    adding its share into the padded gradient.

    Parameters
    ----------
    dy : array, shape (N, C, H_out, W_out)

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    _check_window_dy("max_pool2d_backward", dy, cache)
    xp = namespace("max_pool2d_backward", dy=dy, index=cache.index)
    gpad = xp.zeros((*cache.shape[:2], *_padded_hw(cache)), dtype=dy.dtype, device=device(dy))
    finite = is_numpy(xp) and bool(xp.all(xp.isfinite(dy)))  # no host read on a device
    for t, (rows, cols) in enumerate(_taps(cache.kernel, cache.stride, cache.out_hw)):
        gpad[:, :, rows, cols] += keep_where(cache.index == t, dy, finite=finite)
    return crop2d(gpad, cache.padding)


def avg_pool2d_forward(x: Any, kernel_size: Any, stride: Any = None,
                       padding: Any = 0) -> tuple[Any, WindowCache]:
    """``y[n, c, oh, ow] = sum over (i, j) of xpad[n, c, oh s_h + i, ow s_w + j] / (k_h k_w)``.

    ``xpad`` is ``x`` padded with zeros, and the padded zeros count in the divisor
    (PyTorch's default ``count_include_pad=True``).  Output size as for :func:`max_pool2d_forward`.
    The sum runs over the taps, one strided slice each (the columns of ``im2col``, without
    building them).

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    kernel_size : int or pair of int, >= 1
    stride : int or pair of int, >= 1, optional
        Defaults to ``kernel_size``.
    padding : int or pair of int, 0 <= padding <= kernel_size // 2

    Returns
    -------
    y : array, shape (N, C, H_out, W_out), the dtype of ``x``
    cache : WindowCache
        The geometry (``index`` is ``None``).
    """
    _check_nchw("avg_pool2d", x)
    kernel, stride, padding, out_hw = _window_args("avg_pool2d", x, kernel_size, stride, padding)
    xpad = pad2d(x, padding)
    total = 0.0
    for rows, cols in _taps(kernel, stride, out_hw):
        total = total + xpad[:, :, rows, cols]
    y = total / (kernel[0] * kernel[1])
    return y, WindowCache(tuple(x.shape), kernel, stride, padding, out_hw)


def avg_pool2d_backward(dy: Any, cache: WindowCache) -> Any:
    """``dx = crop(col2im(g))`` with ``g[n, c, i, j, oh, ow] = dy[n, c, oh, ow] / (k_h k_w)``.

    Parameters
    ----------
    dy : array, shape (N, C, H_out, W_out)

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    _check_window_dy("avg_pool2d_backward", dy, cache)
    xp = namespace("avg_pool2d_backward", dy=dy)
    (n, c, _, _), (kh, kw) = cache.shape, cache.kernel
    g = xp.reshape(dy / (kh * kw), (n, c, 1, 1, *cache.out_hw))
    g = xp.broadcast_to(g, (n, c, kh, kw, *cache.out_hw))
    return crop2d(col2im(g, _padded_hw(cache), cache.stride, _NO_DILATION), cache.padding)


# -------------------------------------------------------------------------- adaptive pooling

def _bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive bins: ``[floor(i size / out), ceil((i + 1) size / out))``."""
    return [((i * size) // out, -(-(i + 1) * size // out)) for i in range(out)]


def _along(axis: int, start: int, stop: int) -> tuple[Any, ...]:
    """The index of ``start:stop`` along a negative ``axis``."""
    return (Ellipsis, slice(start, stop)) + (slice(None),) * (-1 - axis)


def _pool_axis(x: Any, bins: list[tuple[int, int]], axis: int) -> Any:
    """The mean of each bin along ``axis`` (negative), one slice per bin."""
    xp = array_namespace(x)
    return xp.concat([xp.mean(x[_along(axis, s, e)], axis=axis, keepdims=True)
                      for s, e in bins], axis=axis)


def _unpool_axis(g: Any, bins: list[tuple[int, int]], size: int, axis: int) -> Any:
    """The adjoint of :func:`_pool_axis`: bin ``i``'s gradient spread evenly over its slice."""
    xp = array_namespace(g)
    shape = list(g.shape)
    shape[axis] = size
    out = xp.zeros(tuple(shape), dtype=g.dtype, device=device(g))
    for i, (s, e) in enumerate(bins):
        out[_along(axis, s, e)] += g[_along(axis, i, i + 1)] / (e - s)
    return out


def adaptive_avg_pool2d_forward(x: Any, output_size: Any) -> tuple[Any, AdaptiveCache]:
    """``y[n, c, i, j] = mean of x[n, c, h, w] over h in bin i of H, w in bin j of W``.

    Bin ``i`` of an axis of length ``H`` cut into ``H_out`` is ``[floor(i H / H_out),
    ceil((i + 1) H / H_out))``, PyTorch's rule; bins may overlap, and ``H_out > H`` is allowed.
    A bin is a rectangle, so the mean is taken along H, then along W, one slice per bin
    (a NaN reaches only the outputs whose bins hold it).

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    output_size : int or pair of int, >= 1
        ``(H_out, W_out)``.

    Returns
    -------
    y : array, shape (N, C, H_out, W_out), the dtype of ``x``
    cache : AdaptiveCache
        The shape of ``x`` and the output size.
    """
    _check_nchw("adaptive_avg_pool2d", x)
    out_hw = int_pair("adaptive_avg_pool2d", "output_size", output_size, minimum=1)
    h, w = x.shape[2:]
    y = _pool_axis(_pool_axis(x, _bins(h, out_hw[0]), -2), _bins(w, out_hw[1]), -1)
    return y, AdaptiveCache(tuple(x.shape), out_hw)


def adaptive_avg_pool2d_backward(dy: Any, cache: AdaptiveCache) -> Any:
    """``dx[n, c, h, w] = sum over the bins (i, j) holding (h, w) of dy[n, c, i, j] / |bin|``.

    Parameters
    ----------
    dy : array, shape (N, C, H_out, W_out)

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    (n, c, h, w), (out_h, out_w) = cache
    check_shape("adaptive_avg_pool2d_backward", "dy", dy, (n, c, out_h, out_w))
    g = _unpool_axis(dy, _bins(w, out_w), w, -1)
    return _unpool_axis(g, _bins(h, out_h), h, -2)


# ----------------------------------------------------------------------------------- registry

def _distinct(rng, shape):
    """Values in [-2, 2) at least ``4 / size`` apart, so no max has a tie within a finite
    difference's step."""
    size = 1
    for n in shape:
        size *= n
    return (4.0 * rng.permutation(size) / size - 2.0).reshape(shape)


_DOC = "ops/pooling.md"
register_op("global_avg_pool2d", global_avg_pool2d_forward, global_avg_pool2d_backward,
            lambda rng: ((rng.standard_normal((2, 3, 4, 5)),), {}), doc=_DOC, linear=True)
register_op("global_max_pool2d", global_max_pool2d_forward, global_max_pool2d_backward,
            lambda rng: ((_distinct(rng, (2, 3, 4, 5)),), {}), doc=_DOC, tags=("kink",))
register_op("channel_mean", channel_mean_forward, channel_mean_backward,
            lambda rng: ((rng.standard_normal((2, 4, 3, 5)),), {}), doc=_DOC, linear=True)
register_op("channel_max", channel_max_forward, channel_max_backward,
            lambda rng: ((_distinct(rng, (2, 4, 3, 5)),), {}), doc=_DOC, tags=("kink",))
register_op("max_pool2d", max_pool2d_forward, max_pool2d_backward,
            lambda rng: ((_distinct(rng, (2, 3, 7, 6)),),
                         {"kernel_size": 3, "stride": 2, "padding": 1}),
            doc=_DOC, tags=("kink",))
register_op("avg_pool2d", avg_pool2d_forward, avg_pool2d_backward,
            lambda rng: ((rng.standard_normal((2, 3, 7, 6)),),
                         {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 0)}),
            doc=_DOC, linear=True)
register_op("adaptive_avg_pool2d", adaptive_avg_pool2d_forward, adaptive_avg_pool2d_backward,
            lambda rng: ((rng.standard_normal((2, 3, 7, 5)),), {"output_size": (3, 2)}),
            doc=_DOC, linear=True)
