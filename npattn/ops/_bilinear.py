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
(:func:`scatter_rows`), the zero pixel's bin being dropped.  Derivations: ``docs/ops/sampling.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace, device

from ..backend import scatter_add

#: The most elements one (rows, points) temporary of grid_sample should hold: 2^18, 1 MiB in
#: float32.  It samples the batch in blocks below that size (read at call time): larger
#: temporaries go back to the system when freed and fault their pages in again on every call
#: (8x64x28x28: a forward took 4.5 ms with about 2000 page faults in one piece, 2.1 ms without).
BLOCK_ELEMENTS = 2 ** 18

__all__ = ["BLOCK_ELEMENTS", "Corners", "corners", "flat_index", "padded_source", "corner_weights",
           "gather_corners", "combine", "sample", "sample_backward_src", "sample_backward_coords",
           "scatter_rows", "join"]


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


def flat_index(xp: Any, iy: Any, ix: Any, height: int, width: int) -> Any:
    """Flat positions of integer-valued float pixel coordinates ``(B, S)`` -> ``(B*S,)`` int64,
    ``B*H*W`` (the appended zero pixel) for a position outside ``[0, H-1] x [0, W-1]``."""
    return _flat(xp, _axis(xp, iy, height), _axis(xp, ix, width), height, width)


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


def scatter_rows(index: Any, values: Any, size: int) -> Any:
    """``out[r, q] = sum_{i : index[i] == q} values[r, i]`` for ``q < size``: shape (R, size).

    Values whose index is ``size`` (the zero pixel) are dropped.  The index is shared by every
    row, so each row is one 1-D :func:`~npattn.backend.scatter_add` (on NumPy a ``bincount``
    over bins that fit in cache, which beats one ``bincount`` over ``R * size`` bins with an
    ``R`` times larger index).
    """
    return _stack_rows(values, size, [scatter_add(index, values[r, :], size + 1)[:size]
                                      for r in range(values.shape[0])])


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
