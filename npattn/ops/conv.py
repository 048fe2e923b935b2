"""Convolution: ``conv2d`` on (N, C, H, W) and ``conv1d`` on (N, C, L), PyTorch semantics.

As in PyTorch, "convolution" is a cross-correlation (the kernel is not flipped):

.. math:: y[n, o, p, q] = b[o] + \\sum_{c, i, j} w[o, c, i, j]\\,
          x_{pad}[n, g C_g + c, p s_h + i d_h, q s_w + j d_w]

with ``g = o // (O / groups)`` the group of output channel ``o`` and ``C_g = C / groups``.
The forward works through the output in tiles (a few samples, or a band of rows of one) whose
windows fit in a core's cache: it gathers a tile's windows with
:func:`~npattn.ops._geometry.im2col` into a workspace kept between calls and multiplies them by
the kernel, one matrix product per sample and group.  The backward: ``dweight`` from ``dy`` and
the windows gathered again tile by tile; ``dx`` through :func:`~npattn.ops._geometry.col2im`,
the adjoint of the gather, or at stride 1 as a convolution of ``dy`` with the flipped kernel.
``conv1d`` is ``conv2d`` with a unit height.  Derivations: ``docs/ops/conv.md``; what each
speed measure bought: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import device

from ..backend import is_numpy, namespace, sum_over
from ..checks import (argument_error, check_float_array, check_int, check_same_dtype, check_shape,
                      int_pair)
from ._geometry import (check_window_fits, col2im, crop2d, im2col, input_rows, pad2d, scratch,
                        window_tiles)
from ._registry import register_op

__all__ = [
    "conv2d_forward", "conv2d_backward",
    "conv1d_forward", "conv1d_backward",
]


class ConvCache(NamedTuple):
    """What :func:`conv2d_backward` needs.

    Attributes
    ----------
    xpad : array, shape (N, C, H + 2 p_h, W + 2 p_w)
        The zero-padded input, for ``dweight``; with zero padding, ``x`` itself (a reference,
        as PyTorch keeps one: change ``x`` in place before the backward and ``dweight`` is
        wrong).  The backward gathers its windows again, block by block, rather than keeping
        them all: they are ``kh*kw`` times the size of ``x``.
    weight : array, shape (O, C/G, kh, kw)
        The kernel (for ``dx``).
    groups : int
    has_bias : bool
        Whether a bias was given (``dbias`` is ``None`` otherwise).
    stride, padding, dilation, out_hw : pair of int
        The geometry; ``out_hw = (H_out, W_out)``.
    """

    xpad: Any
    weight: Any
    groups: int
    has_bias: bool
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out_hw: tuple[int, int]


class Conv1dCache(NamedTuple):
    """What :func:`conv1d_backward` needs: the cache of the unit-height ``conv2d``."""

    conv: ConvCache


# ------------------------------------------------------------------------------------- checks

def _check_conv_args(op: str, x: Any, weight: Any, bias: Any, groups: Any,
                     spatial: int) -> tuple[Any, int]:
    """Checks shared by conv1d and conv2d; return the namespace and ``groups`` as an int."""
    xp = namespace(op, x=x, weight=weight, bias=bias)
    dims = ("L",) if spatial == 1 else ("H", "W")
    kdims = ("k",) if spatial == 1 else ("kh", "kw")
    check_float_array(op, "x", x, 2 + spatial, f"(N, C, {', '.join(dims)})")
    check_float_array(op, "weight", weight, 2 + spatial, f"(O, C/groups, {', '.join(kdims)})")
    if bias is not None:
        check_float_array(op, "bias", bias, 1, "(O,)")
    check_same_dtype(op, x=x, weight=weight, bias=bias)
    groups = check_int(op, "groups", groups, minimum=1)
    c, o = x.shape[1], weight.shape[0]
    if c % groups or o % groups:
        raise argument_error(op, "groups", f"a divisor of both the input channels C = {c} "
                             f"and the output channels O = {o}", groups)
    if weight.shape[1] * groups != c:
        raise argument_error(op, "weight", f"shape[1] == C/groups = {c // groups} "
                             f"(x has C = {c} channels, groups = {groups})",
                             f"shape {tuple(weight.shape)}")
    if min(weight.shape[2:]) < 1:
        raise argument_error(op, "weight", "a kernel of size >= 1 in every spatial dimension",
                             f"shape {tuple(weight.shape)}")
    if bias is not None and bias.shape[0] != o:
        raise argument_error(op, "bias", f"shape ({o},) (one value per output channel)",
                             f"shape {tuple(bias.shape)}")
    return xp, groups


def _int_one(op: str, arg: str, value: Any, minimum: int) -> int:
    """Read conv1d's int-or-1-tuple argument (PyTorch accepts ``3`` and ``(3,)``)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise argument_error(op, arg, "an int or a 1-tuple of ints", repr(value), TypeError)
        value = value[0]
    return check_int(op, arg, value, minimum=minimum)


# ------------------------------------------------------------------------------ the shared core

def _tiles(xp: Any, xpad: Any, kernel: tuple[int, int],
           out_hw: tuple[int, int]) -> list[tuple[slice, slice]]:
    """The output's tiles ``(samples, rows)`` for a padded input: windows of about
    ``TILE_BYTES`` each (:func:`~npattn.ops._geometry.window_tiles`)."""
    n, c = xpad.shape[:2]
    return window_tiles(n, out_hw, c * kernel[0] * kernel[1], xp.finfo(xpad.dtype).bits // 8)


def _extent(tile: tuple[slice, slice]) -> tuple[int, int]:
    """``(n, r)``: the samples and the output rows of a tile."""
    samples, rows = tile
    return samples.stop - samples.start, rows.stop - rows.start


def _windows(xp: Any, xpad: Any, kernel: tuple[int, int], groups: int, stride: tuple[int, int],
             dilation: tuple[int, int], out_hw: tuple[int, int]):
    """Yield ``(samples, rows, cols)``: the output in tiles and the windows of each, as matrices.

    ``cols`` has shape (n, G, C/G*kh*kw, r*W_out) for a tile of ``n`` samples and ``r`` output
    rows: for sample ``s`` of the tile, row ``(c, i, j)`` of group ``g`` holds
    ``xpad[s, g*C/G + c, p*s_h + i*d_h, q*s_w + j*d_w]`` in column ``(p, q)``, ``p`` counted
    from the tile's first row.  The tiles share one workspace
    (:func:`~npattn.ops._geometry.scratch`), so a tile's ``cols`` is only valid until the next
    one is drawn.

    A 1x1 kernel at stride 1 reads every input position once, in place: its windows are the
    tile of ``xpad`` itself, reshaped (on NumPy a strided view), and nothing is gathered (a copy
    of the input per pass saved: 0.3 ms at 8x512x14x14 float32, about 1 ms at 16x256x28x28).
    """
    c, kh, kw = xpad.shape[1], *kernel
    tiles = _tiles(xp, xpad, kernel, out_hw)
    if (kh, kw) == (1, 1) and tuple(stride) == (1, 1):
        for samples, rows in tiles:
            n, r = _extent((samples, rows))
            yield samples, rows, xp.reshape(xpad[samples, :, rows, :],
                                            (n, groups, c // groups, r * out_hw[1]))
        return
    per_row = c * kh * kw * out_hw[1]
    largest = math.prod(_extent(tiles[0])) * per_row if tiles else 0   # the first tile
    workspace = scratch(xp, "conv windows", largest, xpad.dtype, device(xpad))
    for samples, rows in tiles:
        n, r = _extent((samples, rows))
        slab = xpad[samples, :, input_rows(rows, kh, stride[0], dilation[0]), :]
        cols = im2col(slab, kernel, stride, dilation, (r, out_hw[1]),
                      out=xp.reshape(workspace[:n * r * per_row], (n, c, kh, kw, r, out_hw[1])))
        yield samples, rows, xp.reshape(cols, (n, groups, c // groups * kh * kw, r * out_hw[1]))


def _dy_tile(xp: Any, dy: Any, samples: slice, rows: slice, groups: int) -> Any:
    """The tile ``dy[samples, :, rows, :]`` as the matrices (n, G, O/G, r*W_out) of the
    products, columns as in :func:`_windows` (NumPy: a view, no copy)."""
    tile = dy[samples, :, rows, :]
    n, o, r, w_out = tile.shape
    return xp.reshape(tile, (n, groups, o // groups, r * w_out))


def _side_by_side(b: Any, rows_of_a: int) -> bool:
    """Whether a product ``a @ b`` with a tile's matrices ``b`` (n, G, Q, M) is done with the
    samples side by side (one product, ``a`` read once) rather than one by one (a batched
    product): when a sample has fewer columns ``M`` than ``a`` has rows, the batched product
    would read ``a``, or write results, larger than the windows themselves (1x1 feature maps,
    small maps with many channels).  Measured at M = 1 with a 256x256 kernel: 82 ms against
    0.6 ms for the weight gradient of 64 samples."""
    return b.shape[0] > 1 and b.shape[-1] < rows_of_a


def _samples_side_by_side(xp: Any, b: Any) -> Any:
    """(n, G, Q, M) -> (G, Q, n*M): a tile's samples side by side, sample by sample."""
    n, g, q, m = b.shape
    return xp.reshape(xp.permute_dims(b, (1, 2, 0, 3)), (g, q, n * m))


def _tile_product(xp: Any, a: Any, b: Any) -> Any:
    """``a @ b`` for a (G, P, Q) matrix and a tile's (n, G, Q, M): (n, G, P, M)."""
    if not _side_by_side(b, a.shape[1]):
        return xp.matmul(a, b)
    n, g, _, m = b.shape
    product = xp.reshape(xp.matmul(a, _samples_side_by_side(xp, b)), (g, a.shape[1], n, m))
    return xp.permute_dims(product, (2, 0, 1, 3))


def _correlate(xp: Any, xpad: Any, weight: Any, groups: int, stride: tuple[int, int],
               dilation: tuple[int, int], out_hw: tuple[int, int], bias: Any = None) -> Any:
    """``y[tile] = weight[g] @ cols[tile, g] (+ bias)`` tile by tile: the convolution."""
    o, cg, kh, kw = weight.shape
    w_mat = xp.reshape(weight, (groups, o // groups, cg * kh * kw))
    y = xp.empty((xpad.shape[0], o, *out_hw), dtype=xpad.dtype, device=device(xpad))
    for samples, rows, cols in _windows(xp, xpad, (kh, kw), groups, stride, dilation, out_hw):
        if is_numpy(xp) and not _side_by_side(cols, o // groups):
            _matmul_into(xp, w_mat, cols, y[samples, :, rows, :])
        else:                                                # (G, O/G, K) @ (n, G, K, r*W_out)
            tile = y[samples, :, rows, :]
            y[samples, :, rows, :] = xp.reshape(_tile_product(xp, w_mat, cols), tuple(tile.shape))
        if bias is not None:
            y[samples, :, rows, :] += bias
    return y


def _matmul_into(xp: Any, a: Any, b: Any, tile: Any) -> None:
    """NumPy: ``tile[...] = a @ b`` for a (G, O/G, K) kernel, a tile's (n, G, K, r*W_out)
    windows and the tile ``y[samples, :, rows, :]`` of the output, shape (n, O, r, W_out).

    The tile's rows are contiguous within each channel, so its reshape to the product's
    (n, G, O/G, r*W_out) is a view (``copy=False`` checks it) that BLAS writes through
    ``matmul(..., out=)``: no tile-sized temporary and no copy (3-6% of the forward at
    8x64x56x56).  The portable spelling is :func:`_tile_product` and a slice assignment.
    """
    np.matmul(a, b, out=xp.reshape(tile, (*b.shape[:2], a.shape[-2], b.shape[-1]), copy=False))


def _dweight(xp: Any, dy: Any, cache: ConvCache) -> Any:
    """``dweight[g]^T = sum over tiles and samples of cols[s, g] @ dy[s, g]^T``, the windows
    gathered again tile by tile: per sample and summed, or the samples side by side
    (:func:`_side_by_side`, here when the per-sample results would outsize the windows).

    The first tile's product is the sum's memory (no zeros to add to), and a tile of one
    sample adds its product as it is (no sum over a batch of one, which copied it): at
    8x512x14x14 3x3 512 -> 512 (tiles of one sample, 9.4 MiB products) 82 -> 70 ms, at
    16x256x28x28 3x3 256 -> 256 138 -> 126 ms (one thread).
    """
    o, cg, kh, kw = cache.weight.shape
    groups = cache.groups
    dweight_t = None
    for samples, rows, cols in _windows(xp, cache.xpad, (kh, kw), groups, cache.stride,
                                        cache.dilation, cache.out_hw):
        dy_mat = _dy_tile(xp, dy, samples, rows, groups)          # (n, G, O/G, M)
        if _side_by_side(cols, o // groups):
            term = xp.matmul(_samples_side_by_side(xp, cols),
                             xp.matrix_transpose(_samples_side_by_side(xp, dy_mat)))
        elif cols.shape[0] == 1:                                  # (G, K, M) @ (G, M, O/G)
            term = xp.matmul(cols[0, ...], xp.matrix_transpose(dy_mat[0, ...]))
        else:                                                     # (n, G, K, M) @ (n, G, M, O/G)
            term = xp.sum(xp.matmul(cols, xp.matrix_transpose(dy_mat)), axis=0)
        if dweight_t is None:
            dweight_t = term                                      # fresh: the sum starts here
        else:
            dweight_t += term
        del term       # not alive beside the next tile's product, nor beside the final copy
    if dweight_t is None:                                         # no output positions
        dweight_t = xp.zeros((groups, cg * kh * kw, o // groups), dtype=dy.dtype, device=device(dy))
    return xp.reshape(xp.matrix_transpose(dweight_t), cache.weight.shape)


def _dx_by_col2im(xp: Any, dy: Any, cache: ConvCache) -> Any:
    """``dx = crop(col2im(weight[g]^T @ dy[tile, g]))``: every window added back where it was
    read, tile by tile."""
    n, c, hp, wp = cache.xpad.shape
    o, cg, kh, kw = cache.weight.shape
    groups, (h_out, w_out) = cache.groups, cache.out_hw
    w_mat_t = xp.matrix_transpose(xp.reshape(cache.weight, (groups, o // groups, cg * kh * kw)))
    dxpad = xp.zeros(cache.xpad.shape, dtype=dy.dtype, device=device(dy))
    for samples, rows in _tiles(xp, cache.xpad, (kh, kw), cache.out_hw):
        dy_mat = _dy_tile(xp, dy, samples, rows, groups)
        n_tile, r = _extent((samples, rows))                  # (G, K, O/G) @ (n, G, O/G, M):
        dcols = xp.reshape(_tile_product(xp, w_mat_t, dy_mat), (n_tile, c, kh, kw, r, w_out))
        read = input_rows(rows, kh, cache.stride[0], cache.dilation[0])
        dxpad[samples, :, read, :] += col2im(dcols, (read.stop - read.start, wp), cache.stride,
                                             cache.dilation)
    return crop2d(dxpad, cache.padding)


def _transposes_to_a_convolution(cache: ConvCache) -> bool:
    """Stride 1 and ``padding <= dilation*(k - 1)``: :func:`_dx_by_convolution` applies."""
    kernel = cache.weight.shape[2:]
    return cache.stride == (1, 1) and all(
        p <= d * (k - 1) for p, d, k in zip(cache.padding, cache.dilation, kernel))


def _dx_by_convolution(xp: Any, dy: Any, cache: ConvCache) -> Any:
    """For stride 1: ``dx`` is ``dy`` padded by ``d(k-1) - p`` correlated with the flipped kernel.

    ``flipped[g*C/G + c, o, i, j] = weight[g*O/G + o, c, kh-1-i, kw-1-j]``, same groups and
    dilation.  The same sums as :func:`_dx_by_col2im`, with one long matrix product (K = O/G*kh*kw)
    in place of a short one and ``kh*kw`` additions.
    """
    n, c, hp, wp = cache.xpad.shape
    o, cg, kh, kw = cache.weight.shape
    groups = cache.groups
    w_groups = xp.reshape(cache.weight, (groups, o // groups, cg, kh, kw))
    # One copy: the permuted, flipped view reshaped (flipping after the reshape made a second,
    # kernel-sized, when _correlate reshaped the flipped view: 9.4 MiB each at 3x3 512 -> 512).
    flipped = xp.reshape(xp.flip(xp.permute_dims(w_groups, (0, 2, 1, 3, 4)), axis=(3, 4)),
                         (c, o // groups, kh, kw))
    pad = tuple(d * (k - 1) - p for d, k, p in zip(cache.dilation, (kh, kw), cache.padding))
    in_hw = (hp - 2 * cache.padding[0], wp - 2 * cache.padding[1])
    return _correlate(xp, pad2d(dy, pad), flipped, groups, (1, 1), cache.dilation, in_hw)


def _conv2d(xp: Any, x: Any, weight: Any, bias: Any, groups: int, stride: tuple[int, int],
            padding: tuple[int, int], dilation: tuple[int, int],
            out_hw: tuple[int, int]) -> tuple[Any, ConvCache]:
    """conv2d on checked arguments: the input padded (and cached), then :func:`_correlate`."""
    cache = ConvCache(pad2d(x, padding), weight, groups, bias is not None, stride, padding,
                      dilation, out_hw)
    b = None if bias is None else xp.reshape(bias, (1, weight.shape[0], 1, 1))
    return _correlate(xp, cache.xpad, weight, groups, stride, dilation, out_hw, b), cache


def _conv2d_grads(xp: Any, dy: Any, cache: ConvCache) -> tuple[Any, Any, Any]:
    """The three gradients of :func:`_conv2d` from ``dy`` of shape (N, O, H_out, W_out)."""
    # Both routes are the same sums.  The convolution gathers the windows of dy, O/G rows per
    # tap; col2im writes C/G rows per tap and adds them back: the fewer channels win.
    if _transposes_to_a_convolution(cache) and cache.weight.shape[0] <= cache.xpad.shape[1]:
        dx = _dx_by_convolution(xp, dy, cache)
    else:
        dx = _dx_by_col2im(xp, dy, cache)
    # sum_over: the sum over (H_out, W_out) at memory speed on NumPy, then the batch
    dbias = xp.sum(sum_over(dy, (2, 3)), axis=(0, 2, 3)) if cache.has_bias else None
    return dx, _dweight(xp, dy, cache), dbias


def _check_dy(op: str, dy: Any, cache: ConvCache, shape: tuple[int, ...]) -> Any:
    """Check ``dy`` (a float array of ``shape``, the dtype of the forward) and return the namespace."""
    check_float_array(op, "dy", dy)
    check_shape(op, "dy", dy, shape)
    xp = namespace(op, dy=dy, weight=cache.weight)
    check_same_dtype(op, weight=cache.weight, dy=dy)
    return xp


# --------------------------------------------------------------------------------------- conv2d

def conv2d_forward(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                   dilation: Any = 1, groups: int = 1) -> tuple[Any, ConvCache]:
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    weight : array, shape (O, C/groups, kh, kw), the dtype of ``x``
    bias : array, shape (O,), optional
    stride, dilation : int or pair of int, >= 1
    padding : int or pair of int, >= 0
        Zeros added on both sides of each spatial axis.
    groups : int, >= 1, dividing C and O
        Input channel group ``g`` (``C/groups`` channels, in order) feeds output group ``g``.

    Returns
    -------
    y : array, shape (N, O, H_out, W_out), the dtype of ``x``
        ``H_out = floor((H + 2 p_h - d_h (kh - 1) - 1) / s_h) + 1``, likewise ``W_out``.
    cache : ConvCache
        The padded input ``xpad`` (for ``dweight``; ``x`` itself when ``padding`` is 0) and
        ``weight`` (for ``dx``), with the geometry.  Not the im2col windows, ``kh*kw`` times
        larger: the backward gathers them again.

    Raises
    ------
    TypeError
        Non-array or non-real-floating inputs, ``x`` and ``weight`` (or ``bias``) of different
        dtypes or array libraries, non-integer hyperparameters.
    ValueError
        Wrong numbers of dimensions, ``weight.shape[1] * groups != C``, ``groups`` not dividing
        C and O, a bias not of shape (O,), non-positive stride or dilation, negative padding,
        a dilated kernel larger than the padded input.
    """
    op = "conv2d"
    xp, groups = _check_conv_args(op, x, weight, bias, groups, spatial=2)
    stride = int_pair(op, "stride", stride, minimum=1)
    padding = int_pair(op, "padding", padding, minimum=0)
    dilation = int_pair(op, "dilation", dilation, minimum=1)
    out_hw = check_window_fits(op, "weight", tuple(x.shape[2:]), tuple(weight.shape[2:]),
                               stride, padding, dilation)
    return _conv2d(xp, x, weight, bias, groups, stride, padding, dilation, out_hw)


def conv2d_backward(dy: Any, cache: ConvCache) -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv2d_forward`: ``(dx, dweight, dbias)``, ``dbias`` None without bias.

    With ``cols[n, g]`` the windows (K = C/G*kh*kw rows, L = H_out*W_out columns)::

        dbias[o]   = sum_{n, p, q} dy[n, o, p, q]
        dweight[g] = sum_n dy[n, g] @ cols[n, g]^T
        dx         = crop(col2im(weight[g]^T @ dy[n, g]))            (any stride)
                   = correlate(pad(dy, d(k-1) - p), flipped weight)  (stride 1, p <= d(k-1))

    The two forms of ``dx`` are the same sums; the second, used when also O <= C, is faster
    there.  Derivations:
    ``docs/ops/conv.md``.  ``dy`` (shape (N, O, H_out, W_out)) is not modified.
    """
    n = cache.xpad.shape[0]
    xp = _check_dy("conv2d_backward", dy, cache, (n, cache.weight.shape[0], *cache.out_hw))
    return _conv2d_grads(xp, dy, cache)


# --------------------------------------------------------------------------------------- conv1d

def conv1d_forward(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                   dilation: Any = 1, groups: int = 1) -> tuple[Any, Conv1dCache]:
    """1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.

    Computed as :func:`conv2d_forward` on ``x`` viewed as (N, C, 1, L) with a (O, C/groups, 1, k)
    kernel, stride ``(1, s)``, padding ``(0, p)``, dilation ``(1, d)``.

    Parameters
    ----------
    x : array, shape (N, C, L), float32 or float64
    weight : array, shape (O, C/groups, k), the dtype of ``x``
    bias : array, shape (O,), optional
    stride, dilation : int or 1-tuple of int, >= 1
    padding : int or 1-tuple of int, >= 0
    groups : int, >= 1, dividing C and O

    Returns
    -------
    y : array, shape (N, O, L_out), ``L_out = floor((L + 2p - d(k - 1) - 1) / s) + 1``
    cache : Conv1dCache
        The unit-height conv2d's cache (padded input and weight).

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d_forward`, named ``conv1d``.
    """
    op = "conv1d"
    xp, groups = _check_conv_args(op, x, weight, bias, groups, spatial=1)
    stride = _int_one(op, "stride", stride, minimum=1)
    padding = _int_one(op, "padding", padding, minimum=0)
    dilation = _int_one(op, "dilation", dilation, minimum=1)
    (l_out,) = check_window_fits(op, "weight", (x.shape[2],), (weight.shape[2],),
                                 (stride,), (padding,), (dilation,))
    n, c, length = x.shape
    o, cg, k = weight.shape
    y, cache = _conv2d(xp, xp.reshape(x, (n, c, 1, length)), xp.reshape(weight, (o, cg, 1, k)),
                       bias, groups, (1, stride), (0, padding), (1, dilation), (1, l_out))
    return xp.reshape(y, (n, o, l_out)), Conv1dCache(cache)


def conv1d_backward(dy: Any, cache: Conv1dCache) -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv1d_forward`: ``(dx, dweight, dbias)``, ``dbias`` None without bias.

    The unit-height conv2d's gradients (:func:`conv2d_backward`), reshaped back to (N, C, L) and
    (O, C/groups, k).  ``dy`` (shape (N, O, L_out)) is not modified.
    """
    conv = cache.conv
    n, c, _, length = conv.xpad.shape
    length -= 2 * conv.padding[1]
    o, cg, _, k = conv.weight.shape
    l_out = conv.out_hw[1]
    xp = _check_dy("conv1d_backward", dy, conv, (n, o, l_out))
    dx, dweight, dbias = _conv2d_grads(xp, xp.reshape(dy, (n, o, 1, l_out)), conv)
    return xp.reshape(dx, (n, c, length)), xp.reshape(dweight, (o, cg, k)), dbias


# ----------------------------------------------------------------------------------- registry

def _conv2d_example(rng):
    """Grouped, strided, padded and dilated, odd sizes, with a bias."""
    x = rng.standard_normal((2, 4, 7, 6))
    weight = rng.standard_normal((6, 2, 3, 2))
    bias = rng.standard_normal(6)
    return (x, weight, bias), {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2}


def _conv1d_example(rng):
    """ECA's shape of use: one channel in and out, odd kernel, 'same' padding, no bias."""
    x = rng.standard_normal((2, 1, 9))
    weight = rng.standard_normal((1, 1, 3))
    return (x, weight), {"padding": 1}


register_op("conv2d", conv2d_forward, conv2d_backward, _conv2d_example, doc="ops/conv.md",
            linear=True)
register_op("conv1d", conv1d_forward, conv1d_backward, _conv1d_example, doc="ops/conv.md",
            linear=True)
