"""Bilinear sampling at data-dependent positions: the core shared by grid_sample and deform_conv2d.

Both ops read an image at real-valued pixel coordinates ``(py, px)`` (row, column), with zeros
outside the image, by the rule PyTorch and torchvision use::

    y0 = floor(py), x0 = floor(px), ly = py - y0, lx = px - x0
    v  = (1-ly)(1-lx) x[y0, x0] + (1-ly) lx x[y0, x0+1] + ly (1-lx) x[y0+1, x0] + ly lx x[y0+1, x0+1]

where a corner outside ``[0, H-1] x [0, W-1]`` reads 0.  At an exact integer ``py = y0`` the
upper corner ``y0 + 1`` has weight 0, and the derivative in ``py`` is the one-sided slope
towards ``y0 + 1`` (floor decides the cell).

Layout.  The source is ``src`` of shape ``(R, B*H*W)``: ``R`` rows (channels) that share every
sample position, and ``B`` images of ``H*W`` pixels each, side by side.  :func:`padded_source`
appends one more pixel, a zero, and every corner outside its image reads that pixel: so no
corner needs a mask, and a NaN or inf in the image reaches only the samples that read it (as
in PyTorch).  Coordinates are ``(B, S)``: ``S`` sample points per image; samples come out as
``(R, B*S)``.  Gathering one corner is one ``take`` along the last axis with a flat index
``b*H*W + y*W + x`` shared by all rows; its adjoint adds values back into the bins of that index
(:func:`sample_backward_src`), the zero pixel's bin being dropped.  Derivations: ``docs/ops/sampling.md``.

Image by image (grid_sample).  The second half of this module keeps each image in its own
layout ``(B, R, H*W)`` (a view of an NCHW array, no transposes): :class:`ImageCorners` holds
flat positions ``y*W + x`` within each image, ``H*W`` for the zero pixel appended to that image
alone.  The batch goes in blocks of images whose corners are located together
(:func:`image_blocks`); every image is gathered and weighed on its own (it stays in cache), the
images of a block split between threads on NumPy; the backward's scatter runs per row over the
bins of a block's images.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from array_api_compat import array_namespace, device

from ..backend import channel_dots, run_parts, scatter_add, scatter_add_weighted, weighted_sum

__all__ = ["Corners", "corners", "padded_source", "corner_weights",
           "gather_corners", "combine", "sample", "sample_backward_src", "sample_backward_coords",
           "join",
           "ImageCorners", "image_corners", "image_pixels", "POINTS_PER_BLOCK", "image_blocks",
           "sample_images", "sample_images_backward"]

#: The most sample points whose corners :func:`sample_images` locates at once (read at call
#: time): the (B, 4, S) int64 index of a block of 2^16 points is 2 MiB.  Located all at once,
#: the corners of 16x3x224x224 took 69 ms (their arrays faulted in anew on every call).
POINTS_PER_BLOCK = 2 ** 16


class Corners(NamedTuple):
    """The four pixels around each sample point, in the order (y0, x0), (y0, x1), (y1, x0), (y1, x1).

    Attributes
    ----------
    index : tuple of 4 integer arrays, shape (B*S,)
        Flat position ``b*H*W + y*W + x`` of each corner, or ``B*H*W`` (the appended zero
        pixel) for a corner outside its image.
    ly, lx : array, shape (B*S,)
        The fractional parts ``py - floor(py)`` and ``px - floor(px)``, in [0, 1).
    size : int
        ``B*H*W``, the number of real pixels.
    """

    index: tuple[Any, Any, Any, Any]
    ly: Any
    lx: Any
    size: int


def _axis(xp: Any, i: Any, size: int) -> tuple[Any, Any]:
    """Whether integer-valued float coordinates lie in ``[0, size-1]``, and their int64 values
    there (0 elsewhere, before the cast: a coordinate at 1e30 or NaN is never cast)."""
    inside = (i >= 0) & (i <= size - 1)
    return inside, xp.astype(xp.where(inside, i, xp.zeros_like(i)), xp.int64)


def _flat(xp: Any, row: tuple[Any, Any], col: tuple[Any, Any], height: int, width: int) -> Any:
    """Flat positions ``b*H*W + y*W + x`` from :func:`_axis` results (B, S), or ``B*H*W`` (the
    appended zero pixel) where the row or the column is outside; shape (B*S,)."""
    (row_ok, y), (col_ok, x) = row, col
    b, s = y.shape
    image = xp.reshape(xp.arange(b, dtype=xp.int64, device=device(y)) * (height * width), (b, 1))
    outside = xp.asarray(b * height * width, dtype=xp.int64, device=device(y))
    return xp.reshape(xp.where(row_ok & col_ok, image + y * width + x, outside), (b * s,))


def corners(py: Any, px: Any, height: int, width: int) -> Corners:
    """Locate the four corners of each point ``(py[b, s], px[b, s])`` in ``B`` images of ``H x W``.

    Parameters
    ----------
    py, px : array, shape (B, S), floating
        Row and column coordinates in pixels (0 is the centre of the first pixel).
    height, width : int
        ``H`` and ``W``.
    """
    xp = array_namespace(py, px)
    b, s = py.shape
    y0 = xp.floor(py)
    x0 = xp.floor(px)
    rows = [_axis(xp, y0 + dy, height) for dy in (0, 1)]
    cols = [_axis(xp, x0 + dx, width) for dx in (0, 1)]
    index = tuple(_flat(xp, row, col, height, width) for row in rows for col in cols)
    ly, lx = xp.reshape(py - y0, (b * s,)), xp.reshape(px - x0, (b * s,))
    return Corners(index, ly, lx, b * height * width)  # type: ignore[arg-type]


def padded_source(src: Any) -> Any:
    """``src`` (R, B*H*W) with one zero column appended: the pixel that outside corners read."""
    xp = array_namespace(src)
    zero = xp.zeros((src.shape[0], 1), dtype=src.dtype, device=device(src))
    return xp.concat([src, zero], axis=1)


def corner_weights(c: Corners) -> tuple[Any, Any, Any, Any]:
    """The bilinear weight of each corner: ``(1-ly)(1-lx), (1-ly) lx, ly (1-lx), ly lx``."""
    hy, hx = 1.0 - c.ly, 1.0 - c.lx
    return hy * hx, hy * c.lx, c.ly * hx, c.ly * c.lx


def gather_corners(src: Any, c: Corners) -> tuple[Any, Any, Any, Any]:
    """The pixel values at the four corners (0 outside), each of shape (R, B*S).

    ``src`` is the padded source of :func:`padded_source`.
    """
    xp = array_namespace(src)
    return tuple(xp.take(src, index, axis=1) for index in c.index)  # type: ignore[return-value]


def combine(values: tuple[Any, Any, Any, Any], c: Corners) -> Any:
    """``v = sum_k w_k * values_k``: the samples from already gathered corner values."""
    out = None
    for value, weight in zip(values, corner_weights(c)):
        if out is None:
            out = value * weight
        else:
            out += value * weight
    return out


def sample(src: Any, c: Corners) -> Any:
    """``v = sum_k w_k * src[:, index_k]``: the bilinear samples, shape (R, B*S).

    ``src`` is the padded source.  One corner at a time, accumulated in place, so at most two
    (R, B*S) arrays are alive.
    """
    xp = array_namespace(src)
    out = None
    for index, weight in zip(c.index, corner_weights(c)):
        term = xp.take(src, index, axis=1)
        term *= weight
        if out is None:
            out = term
        else:
            out += term
    return out


def sample_backward_src(g: Any, c: Corners) -> Any:
    """Adjoint of :func:`sample` in ``src``: ``dsrc[:, index_k] += w_k * g`` over the 4 corners.

    Row by row, the four corners' weighted cotangents go into one scatter-add; each row's
    products are small enough to stay in cache.

    Parameters
    ----------
    g : array, shape (R, B*S)
        The cotangent of the samples.

    Returns
    -------
    dsrc : array, shape (R, B*H*W)
        The gradient of the (unpadded) source.
    """
    xp = array_namespace(g)
    index = xp.concat(list(c.index))
    weights = corner_weights(c)
    return _stack_rows(g, c.size, [
        scatter_add(index, xp.concat([g[r, :] * w for w in weights]), c.size + 1)[:c.size]
        for r in range(g.shape[0])])


def _stack_rows(like: Any, size: int, rows: list[Any]) -> Any:
    """Stack per-row results into (R, size); an empty (0, size) array for no rows."""
    xp = array_namespace(like)
    if not rows:
        return xp.zeros((0, size), dtype=like.dtype, device=device(like))
    return xp.stack(rows, axis=0)


def sample_backward_coords(g: Any, values: tuple[Any, Any, Any, Any], c: Corners) -> tuple[Any, Any]:
    """Gradients of ``sum(g * v)`` in the coordinates: ``(dpy, dpx)``, each of shape (B*S,).

    With ``s_k = sum_r g[r] * v_k[r]`` (``v_k`` the corner values from :func:`gather_corners`,
    0 outside the image)::

        dpy = (1 - lx) (s_10 - s_00) + lx (s_11 - s_01)
        dpx = (1 - ly) (s_01 - s_00) + ly (s_11 - s_10)
    """
    xp = array_namespace(g)
    s00, s01, s10, s11 = (xp.sum(g * v, axis=0) for v in values)
    hy, hx = 1.0 - c.ly, 1.0 - c.lx
    dpy = hx * (s10 - s00) + c.lx * (s11 - s01)
    dpx = hy * (s01 - s00) + c.ly * (s11 - s10)
    return dpy, dpx


def join(xp: Any, blocks: list[Any]) -> Any:
    """Per-block results of a batch, joined along the batch axis."""
    return blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=0)


# ------------------------------------------------------------------------- image by image

class ImageCorners(NamedTuple):
    """The pixels each sample point reads in its own image, and their weights.

    Attributes
    ----------
    index : integer array, shape (B, K, S)
        Flat position ``y*W + x`` of pixel ``k`` of point ``s`` in image ``b``, or ``H*W`` (the
        zero pixel appended to each image) outside the image.  ``K = 4`` bilinear corners in the
        order (y0, x0), (y0, x1), (y1, x0), (y1, x1), or ``K = 1`` nearest pixel.
    weight : array, shape (B, K, S)
        The weight of each pixel: :func:`corner_weights`, or 1 for the nearest pixel.
    ly, lx : array, shape (B, S), or None
        Bilinear: the fractional parts ``py - floor(py)`` and ``px - floor(px)``.
    """

    index: Any
    weight: Any
    ly: Any
    lx: Any


def _image_flat(xp: Any, row: tuple[Any, Any], col: tuple[Any, Any], height: int, width: int) -> Any:
    """Flat positions ``y*W + x`` within each image from :func:`_axis` results (broadcasting
    against each other), or ``H*W`` (the image's zero pixel) where the row or the column is
    outside."""
    (row_ok, y), (col_ok, x) = row, col
    outside = xp.asarray(height * width, dtype=xp.int64, device=device(y))
    return xp.where(row_ok & col_ok, y * width + x, outside)


def _pair(xp: Any, low: Any, high: Any) -> Any:
    """``(low, high)`` (B, S) as (B, 2, S)."""
    b, s = low.shape
    return xp.concat([xp.reshape(low, (b, 1, s)), xp.reshape(high, (b, 1, s))], axis=1)


def image_corners(py: Any, px: Any, height: int, width: int) -> ImageCorners:
    """:func:`corners` (the same arguments: ``py``, ``px`` (B, S), ``H``, ``W``), each corner's
    position counted within its own image, as (B, 4, S) arrays.

    The rows ``y0, y0 + 1`` and columns ``x0, x0 + 1`` are (B, 2, S) pairs; the four corners
    and their weights ``corner_weights`` are their broadcast combinations (B, 2, 2, S) read as
    (B, 4, S), in the order (y0, x0), (y0, x1), (y1, x0), (y1, x1): no per-corner arrays to stack.
    """
    xp = array_namespace(py, px)
    b, s = py.shape
    y0 = xp.floor(py)
    x0 = xp.floor(px)
    ly, lx = py - y0, px - x0
    row_ok, y = _axis(xp, _pair(xp, y0, y0 + 1), height)
    col_ok, x = _axis(xp, _pair(xp, x0, x0 + 1), width)
    index = _image_flat(xp, (xp.reshape(row_ok, (b, 2, 1, s)), xp.reshape(y, (b, 2, 1, s))),
                        (xp.reshape(col_ok, (b, 1, 2, s)), xp.reshape(x, (b, 1, 2, s))), height, width)
    wy = xp.reshape(_pair(xp, 1.0 - ly, ly), (b, 2, 1, s))
    wx = xp.reshape(_pair(xp, 1.0 - lx, lx), (b, 1, 2, s))
    return ImageCorners(xp.reshape(index, (b, 4, s)), xp.reshape(wy * wx, (b, 4, s)), ly, lx)


def image_pixels(iy: Any, ix: Any, height: int, width: int) -> ImageCorners:
    """One pixel per point, at integer-valued float coordinates ``(iy, ix)`` (B, S), weight 1."""
    xp = array_namespace(iy, ix)
    index = _image_flat(xp, _axis(xp, iy, height), _axis(xp, ix, width), height, width)
    b, s = index.shape
    return ImageCorners(xp.reshape(index, (b, 1, s)), xp.ones((b, 1, s), dtype=iy.dtype, device=device(iy)),
                        None, None)


def _gather(xp: Any, image: Any, index: Any) -> Any:
    """The pixels ``index`` (K, S) of one image (R, H*W), 0 at the zero pixel: shape (R, K, S)."""
    k, s = index.shape
    values = xp.take(padded_source(image), xp.reshape(index, (k * s,)), axis=1)
    return xp.reshape(values, (image.shape[0], k, s))


def image_blocks(images: int, points: int) -> list[slice]:
    """Consecutive blocks of images whose corners are located together (:func:`sample_images`):
    at most :data:`POINTS_PER_BLOCK` points each (large images one at a time, so that their
    corner arrays stay in cache instead of being faulted in anew)."""
    per = max(1, POINTS_PER_BLOCK // max(points, 1))
    return [slice(i, min(i + per, images)) for i in range(0, images, per)]


def _each_image(xp: Any, fn: Callable[[int, int], None], blk: slice, size: int) -> None:
    """``fn(i, j)`` for every image ``i`` of the block (``j`` its place in the block), the
    images split between threads on NumPy (:func:`~npattn.backend.run_parts`).  The block's
    small per-point work stays on the calling thread: shared out, its many short NumPy calls
    would pass the GIL back and forth."""
    run_parts(lambda part: [fn(i, i - blk.start) for i in range(part.start, part.stop)],
              [slice(i, i + 1) for i in range(blk.start, blk.stop)], xp, size)


def sample_images(src: Any, locate: Callable[[slice], ImageCorners], points: int) -> Any:
    """``y[b] = sum_k weight[b, k] * src[b][:, index[b, k]]``: shape (B, R, S).

    ``src`` (B, R, H*W) holds the images (0 read at index ``H*W``); ``locate(blk)`` returns the
    :class:`ImageCorners` of the images ``blk`` (a slice of the batch), ``points`` is ``S``.
    Block by block of images (:func:`image_blocks`): the block's corners, then image by image
    (split between threads) the K pixels of every point gathered by one ``take`` from the image
    with its zero pixel appended, weighed and summed over K (:func:`~npattn.backend.weighted_sum`).
    """
    xp = array_namespace(src)
    b, r, _ = src.shape
    out = xp.empty((b, r, points), dtype=src.dtype, device=device(src))
    for blk in image_blocks(b, points):
        c = locate(blk)

        def one(i: int, j: int) -> None:
            weighted_sum(_gather(xp, src[i, ...], c.index[j, ...]), c.weight[j, ...], out=out[i, ...])

        _each_image(xp, one, blk, (blk.stop - blk.start) * r * (points + src.shape[2]))
    return out


def sample_images_backward(g: Any, src: Any, locate: Callable[[slice], ImageCorners],
                           corners: int) -> tuple[Any, Any, Any]:
    """Gradients of ``sum(g * sample_images(src, locate, S))``: ``(dsrc, dpy, dpx)``.

    ``dsrc[b][:, q] = sum_{k, s : index[b, k, s] == q} weight[b, k, s] * g[b][:, s]``, shape
    (B, R, H*W): per block of images (:func:`image_blocks`), the indices shifted to the bins
    ``b*(H*W+1) + index`` of the block's images and one
    :func:`~npattn.backend.scatter_add_weighted` per row over them (the rows split between
    threads), the zero pixels' bins dropped.  The coordinates (bilinear only; None for one pixel
    per point), each (B, S): with ``s_k = sum_r g[b][r] * v_k[r]`` (``v_k`` the gathered
    corners, 0 outside; image by image, split between threads)::

        dpy = (1 - lx) (s_10 - s_00) + lx (s_11 - s_01)
        dpx = (1 - ly) (s_01 - s_00) + ly (s_11 - s_10)

    Parameters
    ----------
    g : array, shape (B, R, S)
        The cotangent of the samples.
    src : array, shape (B, R, H*W)
    locate : callable
        As for :func:`sample_images`.
    corners : int
        ``K``: 4 (bilinear) or 1 (nearest).
    """
    xp = array_namespace(g, src)
    b, r, hw = src.shape
    s, dev = g.shape[2], device(g)
    blocks = image_blocks(b, s)
    if len(blocks) != 1:
        dsrc = xp.zeros((b, r, hw), dtype=g.dtype, device=dev)
    dpy, dpx = (xp.empty((b, s), dtype=g.dtype, device=dev) for _ in range(2))
    for blk in blocks:
        c, nb = locate(blk), blk.stop - blk.start
        first = xp.reshape(xp.arange(nb, dtype=xp.int64, device=dev) * (hw + 1), (nb, 1, 1))
        rows = xp.permute_dims(xp.reshape(g[blk, ...], (nb, r, 1, s)), (1, 0, 2, 3))  # (R, nb, 1, S)
        bins = scatter_add_weighted(c.index + first, c.weight, rows, nb * (hw + 1))
        d = xp.permute_dims(xp.reshape(bins, (r, nb, hw + 1))[:, :, :hw], (1, 0, 2))
        if len(blocks) == 1:
            dsrc = d                                     # one block: its result read as dsrc
        else:
            dsrc[blk, ...] = d
        if c.ly is None:
            continue
        sums = xp.empty((nb, corners, s), dtype=g.dtype, device=dev)

        def one(i: int, j: int) -> None:
            channel_dots(g[i, ...], _gather(xp, src[i, ...], c.index[j, ...]), out=sums[j, ...])

        _each_image(xp, one, blk, nb * r * (s + hw))
        s00, s01, s10, s11 = (sums[:, k, :] for k in range(4))
        hy, hx = 1.0 - c.ly, 1.0 - c.lx
        dpy[blk, ...] = hx * (s10 - s00) + c.lx * (s11 - s01)
        dpx[blk, ...] = hy * (s01 - s00) + c.ly * (s11 - s10)
    return (dsrc, dpy, dpx) if corners == 4 else (dsrc, None, None)
