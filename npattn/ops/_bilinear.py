"""Bilinear sampling at data-dependent positions: the core shared by grid_sample and deform_conv2d.

Both ops read an image at real-valued pixel coordinates ``(py, px)`` (row, column), with zeros
outside the image, by the rule PyTorch and torchvision use::

    y0 = floor(py), x0 = floor(px), ly = py - y0, lx = px - x0
    v  = (1-ly)(1-lx) x[y0, x0] + (1-ly) lx x[y0, x0+1] + ly (1-lx) x[y0+1, x0] + ly lx x[y0+1, x0+1]

where a corner outside ``[0, H-1] x [0, W-1]`` reads 0.  At an exact integer ``py = y0`` the
upper corner ``y0 + 1`` has weight 0, and the derivative in ``py`` is the one-sided slope
towards ``y0 + 1`` (floor decides the cell).

Layout.  The source is ``src`` of shape ``(R, B*H*W)``: ``R`` rows (channels) that share every
sample position, and ``B`` images of ``H*W`` pixels each, side by side.  Coordinates are
``(B, S)``: ``S`` sample points per image.  Samples come out as ``(R, B*S)``.  Gathering one
corner is one ``take`` along the last axis with a flat index ``b*H*W + y*W + x`` shared by all
rows; its adjoint adds values back into the bins of that index (:func:`scatter_rows`).
Derivations: ``docs/ops/sampling.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace, device

from ..backend import scatter_add

__all__ = ["Corners", "corners", "corner_weights", "gather_corners", "combine", "sample",
           "sample_backward_src", "sample_backward_coords", "scatter_rows"]


class Corners(NamedTuple):
    """The four pixels around each sample point, in the order (y0, x0), (y0, x1), (y1, x0), (y1, x1).

    Attributes
    ----------
    index : tuple of 4 integer arrays, shape (B*S,)
        Flat position ``b*H*W + y*W + x`` of each corner, clipped into the image (a corner
        outside reads a pixel that its zero ``valid`` then cancels).
    valid : tuple of 4 arrays, shape (B*S,), the coordinates' dtype
        1 where the corner lies inside the image, else 0.
    ly, lx : array, shape (B*S,)
        The fractional parts ``py - floor(py)`` and ``px - floor(px)``, in [0, 1).
    """

    index: tuple[Any, Any, Any, Any]
    valid: tuple[Any, Any, Any, Any]
    ly: Any
    lx: Any


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
    ly = xp.reshape(py - y0, (b * s,))
    lx = xp.reshape(px - x0, (b * s,))
    # Clip before the integer cast, so a point far outside (at 1e30, say) cannot overflow; both
    # corners of a cell at -2 or at H are outside, as they were before the clip.
    iy0 = xp.astype(xp.clip(y0, -2.0, float(height)), xp.int64)
    ix0 = xp.astype(xp.clip(x0, -2.0, float(width)), xp.int64)
    image = xp.reshape(xp.arange(b, dtype=xp.int64, device=device(py)) * (height * width), (b, 1))
    index, valid = [], []
    for dy in (0, 1):
        for dx in (0, 1):
            iy, ix = iy0 + dy, ix0 + dx
            inside = (iy >= 0) & (iy <= height - 1) & (ix >= 0) & (ix <= width - 1)
            flat = image + xp.clip(iy, 0, height - 1) * width + xp.clip(ix, 0, width - 1)
            index.append(xp.reshape(flat, (b * s,)))
            valid.append(xp.reshape(xp.astype(inside, py.dtype), (b * s,)))
    return Corners(tuple(index), tuple(valid), ly, lx)


def corner_weights(c: Corners) -> tuple[Any, Any, Any, Any]:
    """The bilinear weight of each corner, zero for a corner outside the image."""
    hy, hx = 1.0 - c.ly, 1.0 - c.lx
    return (c.valid[0] * hy * hx, c.valid[1] * hy * c.lx,
            c.valid[2] * c.ly * hx, c.valid[3] * c.ly * c.lx)


def gather_corners(src: Any, c: Corners) -> tuple[Any, Any, Any, Any]:
    """The raw pixel values at the four (clipped) corners, each of shape (R, B*S)."""
    xp = array_namespace(src)
    return tuple(xp.take(src, index, axis=1) for index in c.index)  # type: ignore[return-value]


def combine(values: tuple[Any, Any, Any, Any], c: Corners) -> Any:
    """``v = sum_k w_k * values_k``: the samples from already gathered corner values."""
    w00, w01, w10, w11 = corner_weights(c)
    return values[0] * w00 + values[1] * w01 + values[2] * w10 + values[3] * w11


def sample(src: Any, c: Corners) -> Any:
    """``v = sum_k w_k * src[:, index_k]``: the bilinear samples, shape (R, B*S).

    One corner at a time, so at most two (R, B*S) arrays are alive.
    """
    xp = array_namespace(src)
    out = None
    for index, weight in zip(c.index, corner_weights(c)):
        term = xp.take(src, index, axis=1) * weight
        out = term if out is None else out + term
    return out


def scatter_rows(index: Any, values: Any, size: int) -> Any:
    """``out[r, q] = sum_{i : index[i] == q} values[r, i]``: shape (R, size).

    The index is shared by every row, so each row is one 1-D :func:`~npattn.backend.scatter_add`
    (on NumPy a ``bincount`` over bins that fit in cache, which beats one ``bincount`` over
    ``R * size`` bins with an ``R`` times larger index).
    """
    xp = array_namespace(values)
    rows = [scatter_add(index, values[r, :], size) for r in range(values.shape[0])]
    if not rows:
        return xp.zeros((0, size), dtype=values.dtype, device=device(values))
    return xp.stack(rows, axis=0)


def sample_backward_src(g: Any, c: Corners, size: int) -> Any:
    """Adjoint of :func:`sample` in ``src``: ``dsrc[:, index_k] += w_k * g`` over the 4 corners.

    Parameters
    ----------
    g : array, shape (R, B*S)
        The cotangent of the samples.
    size : int
        ``B*H*W``, the number of pixels in ``src``'s last axis.
    """
    xp = array_namespace(g)
    index = xp.concat(list(c.index))
    values = xp.concat([g * w for w in corner_weights(c)], axis=1)
    return scatter_rows(index, values, size)


def sample_backward_coords(g: Any, values: tuple[Any, Any, Any, Any], c: Corners) -> tuple[Any, Any]:
    """Gradients of ``sum(g * v)`` in the coordinates: ``(dpy, dpx)``, each of shape (B*S,).

    With ``s_k = valid_k * sum_r g[r] * v_k[r]`` (``v_k`` the raw corner values from
    :func:`gather_corners`)::

        dpy = (1 - lx) (s_10 - s_00) + lx (s_11 - s_01)
        dpx = (1 - ly) (s_01 - s_00) + ly (s_11 - s_10)
    """
    xp = array_namespace(g)
    s00, s01, s10, s11 = (valid * xp.sum(g * v, axis=0) for v, valid in zip(values, c.valid))
    hy, hx = 1.0 - c.ly, 1.0 - c.lx
    dpy = hx * (s10 - s00) + c.lx * (s11 - s01)
    dpx = hy * (s01 - s00) + c.ly * (s11 - s10)
    return dpy, dpx
