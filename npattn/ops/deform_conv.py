"""Deformable convolution ``deform_conv2d`` (Dai et al. 2017; modulated, Zhu et al. 2019).

The semantics of ``torchvision.ops.deform_conv2d``: every kernel tap of every output position
reads the input at its regular place moved by a learned offset, by bilinear interpolation with
zeros outside the image, optionally scaled by a mask::

    y[n, o, p, q] = b[o] + sum_{c, i, j} w[o, c, i, j] * m[n, g, i, j, p, q]
                           * bilinear(x[n, c'], p s_h - pad_h + i d_h + dy[n, g, i, j, p, q],
                                                q s_w - pad_w + j d_w + dx[n, g, i, j, p, q])

with ``c'`` the input channel ``c`` of the weight group of ``o`` and ``g`` its offset group.
Layouts, as torchvision: ``offset`` (N, 2*G*kh*kw, H_out, W_out) holds for offset group ``g``
and tap ``k = i*kw + j`` the pair (dy, dx) at channels ``2*(g*kh*kw + k)`` and ``+ 1``; ``mask``
(N, G*kh*kw, H_out, W_out) holds tap ``k`` of group ``g`` at channel ``g*kh*kw + k``.

The forward samples the columns with the shared bilinear core (:mod:`._bilinear`, one ``take``
per corner) and does one batched matrix product per weight group, as ``conv2d``; the backward
is two matrix products, a scatter-add for ``dx`` and per-point sums for the offsets and mask.
Derivations: ``docs/ops/deform_conv.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import device

from ..backend import namespace
from ..checks import (argument_error, check_float_array, check_int, check_same_dtype, check_shape,
                      int_pair)
from . import _bilinear as bl
from ._geometry import batch_blocks, check_window_fits
from ._registry import register_op

__all__ = ["deform_conv2d_forward", "deform_conv2d_backward"]


class _Geometry(NamedTuple):
    """The sampling grid's hyperparameters, checked: all pairs (rows, columns)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    offset_groups: int
    out_hw: tuple[int, int]


class DeformConvCache(NamedTuple):
    """What :func:`deform_conv2d_backward` needs: the inputs (references) and the geometry.

    The sampled columns are not kept: the backward gathers the four corner values again (it
    needs them for the offset gradient anyway) and rebuilds the columns from them, block by
    block over the batch.
    """

    x: Any
    offset: Any
    weight: Any
    mask: Any
    has_bias: bool
    geometry: _Geometry


# ------------------------------------------------------------------------------------- checks

def _check_args(op: str, x: Any, offset: Any, weight: Any, bias: Any, mask: Any, stride: Any,
                padding: Any, dilation: Any, offset_groups: Any) -> tuple[Any, ...]:
    """All argument checks; return ``(xp, stride, padding, dilation, offset_groups, out_hw)``."""
    xp = namespace(op, x=x, offset=offset, weight=weight, bias=bias, mask=mask)
    check_float_array(op, "x", x, 4, "(N, C, H, W)")
    check_float_array(op, "offset", offset, 4, "(N, 2*offset_groups*kh*kw, H_out, W_out)")
    check_float_array(op, "weight", weight, 4, "(O, C/groups, kh, kw)")
    if bias is not None:
        check_float_array(op, "bias", bias, 1, "(O,)")
    if mask is not None:
        check_float_array(op, "mask", mask, 4, "(N, offset_groups*kh*kw, H_out, W_out)")
    check_same_dtype(op, x=x, offset=offset, weight=weight, bias=bias, mask=mask)
    stride = int_pair(op, "stride", stride, minimum=1)
    padding = int_pair(op, "padding", padding, minimum=0)
    dilation = int_pair(op, "dilation", dilation, minimum=1)
    offset_groups = check_int(op, "offset_groups", offset_groups, minimum=1)
    n, c, h, w = x.shape
    o, cw, kh, kw = weight.shape
    if min(h, w, kh, kw, cw) < 1 or c % cw or o % (c // cw):
        raise argument_error(op, "weight", f"shape (O, C/groups, kh, kw) with C/groups dividing "
                             f"C = {c} and groups dividing O, kernel >= 1 x 1",
                             f"shape {tuple(weight.shape)}")
    if c % offset_groups:
        raise argument_error(op, "offset_groups", f"a divisor of the input channels C = {c}",
                             offset_groups)
    out_hw = check_window_fits(op, "weight", (h, w), (kh, kw), stride, padding, dilation)
    taps = offset_groups * kh * kw
    if tuple(offset.shape) != (n, 2 * taps, *out_hw):
        raise argument_error(op, "offset", f"shape {(n, 2 * taps, *out_hw)} "
                             "(N, 2*offset_groups*kh*kw, H_out, W_out)", f"shape {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (n, taps, *out_hw):
        raise argument_error(op, "mask", f"shape {(n, taps, *out_hw)} "
                             "(N, offset_groups*kh*kw, H_out, W_out)", f"shape {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (o,):
        raise argument_error(op, "bias", f"shape ({o},) (one value per output channel)",
                             f"shape {tuple(bias.shape)}")
    return xp, stride, padding, dilation, offset_groups, out_hw


# ------------------------------------------------------------------------------ the shared core

def _blocks(x: Any, weight: Any, out_hw: tuple[int, int]) -> list[slice]:
    """Consecutive slices of the batch whose sampling work fits in about ``BLOCK_ELEMENTS``.

    One sample keeps about five (C, kh*kw*L) arrays alive in the backward (the four corner
    values and the columns): blocks of that size stay in cache and reuse freed memory instead
    of faulting fresh pages in (see ``npattn/ops/_geometry.py``).
    """
    per_sample = 5 * x.shape[1] * weight.shape[2] * weight.shape[3] * out_hw[0] * out_hw[1]
    return batch_blocks(x.shape[0], per_sample) or [slice(0, 0)]     # an empty batch: one block


def _sample_points(xp: Any, offset: Any, geometry: _Geometry, hw: tuple[int, int]) -> bl.Corners:
    """The corners of every sample point, for images ``b = n*G + g`` and points ``(i, j, p, q)``.

    ``py[n, g, i, j, p, q] = p s_h - pad_h + i d_h + offset[n, 2*(g*kh*kw + i*kw + j), p, q]``,
    ``px`` likewise from the odd channels.
    """
    (kh, kw), stride, padding, dilation, groups, (ho, wo) = geometry
    n = offset.shape[0]
    dt, dev = offset.dtype, device(offset)
    off = xp.reshape(offset, (n, groups, kh, kw, 2, ho, wo))
    rows = xp.arange(ho, dtype=dt, device=dev) * stride[0] - padding[0]
    cols = xp.arange(wo, dtype=dt, device=dev) * stride[1] - padding[1]
    taps_y = xp.arange(kh, dtype=dt, device=dev) * dilation[0]
    taps_x = xp.arange(kw, dtype=dt, device=dev) * dilation[1]
    base_y = xp.reshape(taps_y, (kh, 1, 1, 1)) + xp.reshape(rows, (1, 1, ho, 1))   # (kh, 1, ho, 1)
    base_x = xp.reshape(taps_x, (1, kw, 1, 1)) + xp.reshape(cols, (1, 1, 1, wo))   # (1, kw, 1, wo)
    py = xp.reshape(off[:, :, :, :, 0, ...] + base_y, (n * groups, kh * kw * ho * wo))
    px = xp.reshape(off[:, :, :, :, 1, ...] + base_x, (n * groups, kh * kw * ho * wo))
    return bl.corners(py, px, hw[0], hw[1])


def _source(xp: Any, x: Any, groups: int) -> Any:
    """``x`` as the padded source (C/G, N*G*H*W + 1): rows are the channels of an offset group,
    images are the pairs (n, g)."""
    n, c, h, w = x.shape
    src = xp.permute_dims(xp.reshape(x, (n, groups, c // groups, h * w)), (2, 0, 1, 3))
    return bl.padded_source(xp.reshape(src, (c // groups, n * groups * h * w)))


def _weight_matrix(xp: Any, weight: Any, c: int) -> Any:
    """``weight`` as (groups, O/groups, C/groups*kh*kw), ``groups = C / weight.shape[1]``."""
    o, cw, kh, kw = weight.shape
    return xp.reshape(weight, (c // cw, o // (c // cw), cw * kh * kw))


def _to_columns(xp: Any, v: Any, wgroups: int, geometry: _Geometry) -> Any:
    """Samples (C/G, n*G*kh*kw*L) to conv columns (n, groups, C/groups*kh*kw, L)."""
    cg, groups = v.shape[0], geometry.offset_groups
    k, length = geometry.kernel[0] * geometry.kernel[1], geometry.out_hw[0] * geometry.out_hw[1]
    n = v.shape[1] // (groups * k * length)
    cols = xp.permute_dims(xp.reshape(v, (cg, n, groups, k, length)), (1, 2, 0, 3, 4))
    return xp.reshape(cols, (n, wgroups, groups * cg * k // wgroups, length))


def _from_columns(xp: Any, dcols: Any, geometry: _Geometry) -> Any:
    """Adjoint of :func:`_to_columns`: (n, groups, C/groups*kh*kw, L) to (C/G, n*G*kh*kw*L)."""
    n, _, _, length = dcols.shape
    groups, k = geometry.offset_groups, geometry.kernel[0] * geometry.kernel[1]
    cg = dcols.shape[1] * dcols.shape[2] // (groups * k)
    d = xp.permute_dims(xp.reshape(dcols, (n, groups, cg, k, length)), (2, 0, 1, 3, 4))
    return xp.reshape(d, (cg, n * groups * k * length))


def _mask_row(xp: Any, mask: Any) -> Any:
    """The mask as one row (1, n*G*kh*kw*L), in the order of the sample points."""
    return xp.reshape(mask, (1, mask.shape[0] * mask.shape[1] * mask.shape[2] * mask.shape[3]))


# -------------------------------------------------------------------------------- deform_conv2d

def deform_conv2d_forward(x: Any, offset: Any, weight: Any, bias: Any = None, mask: Any = None,
                          stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                          offset_groups: int = 1) -> tuple[Any, DeformConvCache]:
    """Deformable 2-D convolution, as ``torchvision.ops.deform_conv2d`` (with ``mask``: v2).

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    offset : array, shape (N, 2*offset_groups*kh*kw, H_out, W_out), the dtype of ``x``
        For offset group ``g`` and tap ``k = i*kw + j``: the row offset at channel
        ``2*(g*kh*kw + k)``, the column offset at the next channel, in pixels.
    weight : array, shape (O, C/groups, kh, kw)
        As torchvision, the number of weight groups is ``C / weight.shape[1]``.
    bias : array, shape (O,), optional
    mask : array, shape (N, offset_groups*kh*kw, H_out, W_out), optional
        Tap ``k`` of offset group ``g`` at channel ``g*kh*kw + k``; scales each sample.  Absent,
        every sample has weight 1 (deformable convolution v1).
    stride, dilation : int or pair of int, >= 1
    padding : int or pair of int, >= 0
        Moves the regular grid (``p s_h - pad_h + i d_h``); outside the image samples read 0.
    offset_groups : int, >= 1, dividing C
        Channel block ``g`` (``C/offset_groups`` channels, in order) uses offsets/mask of group ``g``.

    Returns
    -------
    y : array, shape (N, O, H_out, W_out), the dtype of ``x``
        ``H_out = floor((H + 2 pad_h - d_h (kh - 1) - 1) / s_h) + 1``, likewise ``W_out``.
    cache : DeformConvCache
        ``x``, ``offset``, ``weight`` and ``mask`` (references, not copies) and the geometry.

    Raises
    ------
    TypeError
        Non-array or non-real-floating inputs, mixed dtypes or array libraries, non-integer
        hyperparameters.
    ValueError
        Wrong numbers of dimensions or shapes (``offset``, ``mask``, ``bias`` against ``x`` and
        ``weight``), ``weight.shape[1]`` not dividing C, ``offset_groups`` not dividing C,
        non-positive stride or dilation, negative padding, a kernel larger than the padded input.
    """
    op = "deform_conv2d"
    xp, stride, padding, dilation, groups, out_hw = _check_args(
        op, x, offset, weight, bias, mask, stride, padding, dilation, offset_groups)
    o = weight.shape[0]
    geometry = _Geometry(tuple(weight.shape[2:]), stride, padding, dilation, groups, out_hw)
    w_mat = _weight_matrix(xp, weight, x.shape[1])
    blocks = []
    for blk in _blocks(x, weight, out_hw):
        corners = _sample_points(xp, offset[blk, ...], geometry, tuple(x.shape[2:]))
        v = bl.sample(_source(xp, x[blk, ...], groups), corners)         # (C/G, n*G*kh*kw*L)
        if mask is not None:
            v *= _mask_row(xp, mask[blk, ...])
        cols = _to_columns(xp, v, w_mat.shape[0], geometry)              # (n, groups, K, L)
        blocks.append(xp.reshape(xp.matmul(w_mat, cols), (cols.shape[0], o, *out_hw)))
    y = bl.join(xp, blocks)
    if bias is not None:
        y += xp.reshape(bias, (1, o, 1, 1))
    return y, DeformConvCache(x, offset, weight, mask, bias is not None, geometry)


def deform_conv2d_backward(dy: Any, cache: DeformConvCache) -> tuple[Any, Any, Any, Any, Any]:
    """Gradients of :func:`deform_conv2d_forward`: ``(dx, doffset, dweight, dbias, dmask)``.

    ``dbias`` is None without a bias, ``dmask`` None without a mask.  With ``v`` the bilinear
    samples, ``m`` the mask (1 when absent) and ``cols = m v`` the columns::

        dweight[g] = sum_n dy[n, g] @ cols[n, g]^T,      dbias[o] = sum_{n,p,q} dy[n, o, p, q]
        dcols      = weight[g]^T @ dy[n, g]
        dmask      = sum_{c in group} dcols * v,          dv = m * dcols
        dx[corner k] += w_k * dv,   d(dy, dx offsets) = the bilinear slopes times dv, summed over c

    See ``docs/ops/deform_conv.md``.  ``dy`` (shape (N, O, H_out, W_out)) is not modified.
    """
    op = "deform_conv2d_backward"
    x, offset, weight, mask, geometry = cache.x, cache.offset, cache.weight, cache.mask, cache.geometry
    n, c, h, w = x.shape
    o, groups = weight.shape[0], geometry.offset_groups
    check_float_array(op, "dy", dy)
    check_shape(op, "dy", dy, (n, o, *geometry.out_hw))
    xp = namespace(op, dy=dy, x=x)
    check_same_dtype(op, x=x, dy=dy)
    w_mat = _weight_matrix(xp, weight, c)                                # (groups, O/groups, K)
    wgroups, length = w_mat.shape[0], geometry.out_hw[0] * geometry.out_hw[1]
    dweight = xp.zeros(w_mat.shape, dtype=weight.dtype, device=device(weight))
    dxs, doffsets, dmasks = [], [], []
    for blk in _blocks(x, weight, geometry.out_hw):
        corners = _sample_points(xp, offset[blk, ...], geometry, (h, w))
        values = bl.gather_corners(_source(xp, x[blk, ...], groups), corners)
        v = bl.combine(values, corners)                                  # (C/G, n*G*kh*kw*L)
        m = None if mask is None else _mask_row(xp, mask[blk, ...])
        cols = _to_columns(xp, v if m is None else v * m, wgroups, geometry)
        nb = cols.shape[0]
        dy_mat = xp.reshape(dy[blk, ...], (nb, wgroups, o // wgroups, length))
        dweight += xp.sum(xp.matmul(dy_mat, xp.matrix_transpose(cols)), axis=0)
        dcols = _from_columns(xp, xp.matmul(xp.matrix_transpose(w_mat), dy_mat), geometry)
        if m is not None:
            dmasks.append(xp.reshape(xp.sum(dcols * v, axis=0), (nb, *mask.shape[1:])))
            dcols *= m                                                   # now dv = m * dcols
        dsrc = bl.sample_backward_src(dcols, corners)                    # (C/G, n*G*H*W)
        dxs.append(xp.reshape(xp.permute_dims(xp.reshape(dsrc, (c // groups, nb, groups, h, w)),
                                              (1, 2, 0, 3, 4)), (nb, c, h, w)))
        dpy, dpx = bl.sample_backward_coords(dcols, values, corners)
        shape = (nb, groups, *geometry.kernel, *geometry.out_hw)
        doffsets.append(xp.reshape(xp.stack([xp.reshape(dpy, shape), xp.reshape(dpx, shape)],
                                            axis=4), (nb, *offset.shape[1:])))
    dbias = xp.sum(dy, axis=(0, 2, 3)) if cache.has_bias else None
    dmask = bl.join(xp, dmasks) if mask is not None else None
    return bl.join(xp, dxs), bl.join(xp, doffsets), xp.reshape(dweight, weight.shape), dbias, dmask


# ----------------------------------------------------------------------------------- registry

def _deform_example(rng):
    """Two offset groups, two weight groups, stride, padding and dilation, a mask and a bias.

    The offsets keep every sample point at least 0.15 pixel away from a pixel line.
    """
    x = rng.standard_normal((2, 4, 5, 6))
    weight = rng.standard_normal((4, 2, 2, 3))
    bias = rng.standard_normal(4)
    kw = dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1), offset_groups=2)
    ho, wo = 5, 2
    whole = rng.integers(-2, 3, size=(2, 2 * 2 * 6, ho, wo))
    offset = whole + 0.15 + 0.7 * rng.random(whole.shape)
    mask = rng.random((2, 2 * 6, ho, wo))
    return (x, offset, weight, bias, mask), kw


register_op("deform_conv2d", deform_conv2d_forward, deform_conv2d_backward, _deform_example,
            doc="ops/deform_conv.md", linear=True, tags=("kink",))        # linear in x
