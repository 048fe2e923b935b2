"""Sampling: ``affine_grid`` and ``grid_sample``, the two halves of a spatial transformer.

``affine_grid`` maps each output pixel's normalised position through a 2x3 matrix ``theta``;
``grid_sample`` reads the input at the resulting normalised positions.  Both follow PyTorch
(``torch.nn.functional.affine_grid`` / ``grid_sample``) exactly, including ``align_corners``:

* ``align_corners=True``: -1 and +1 are the centres of the corner pixels,
  ``i = (g + 1) / 2 * (W - 1)``;
* ``align_corners=False``: -1 and +1 are the outer edges of the corner pixels,
  ``i = ((g + 1) W - 1) / 2``.

Derivations: ``docs/ops/sampling.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from array_api_compat import device

from ..backend import namespace
from ..checks import argument_error, check_float_array, check_int, check_same_dtype, check_shape
from . import _bilinear as bl
from ._registry import register_op

__all__ = [
    "affine_grid_forward", "affine_grid_backward",
    "grid_sample_forward", "grid_sample_backward",
]

MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border")


class AffineGridCache(NamedTuple):
    """What :func:`affine_grid_backward` needs: the output size and the corner convention."""

    size: tuple[int, int, int, int]
    align_corners: bool


class GridSampleCache(NamedTuple):
    """What :func:`grid_sample_backward` needs: both inputs (not copied) and the options."""

    x: Any
    grid: Any
    mode: str
    padding_mode: str
    align_corners: bool


# ----------------------------------------------------------------------------------- helpers

def _check_bool(op: str, arg: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise argument_error(op, arg, "a bool", f"{type(value).__name__} {value!r}", TypeError)
    return value


def _check_choice(op: str, arg: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        want = " or ".join(repr(c) for c in choices)
        raise argument_error(op, arg, want, repr(value))
    return value


def _linspace_from_neg_one(xp: Any, steps: int, align_corners: bool, dtype: Any, dev: Any) -> Any:
    """The normalised positions of ``steps`` pixel centres (PyTorch's rule; 0 for one pixel)."""
    if steps <= 1:
        return xp.zeros((steps,), dtype=dtype, device=dev)
    r = xp.linspace(-1.0, 1.0, steps, dtype=dtype, device=dev)
    return r if align_corners else r * (steps - 1) / steps


def _base_grid(xp: Any, height: int, width: int, align_corners: bool, dtype: Any, dev: Any) -> Any:
    """``base[h*W + w] = (u_w, v_h, 1)``: the homogeneous normalised output positions, (H*W, 3)."""
    u = _linspace_from_neg_one(xp, width, align_corners, dtype, dev)
    v = _linspace_from_neg_one(xp, height, align_corners, dtype, dev)
    uu = xp.broadcast_to(xp.reshape(u, (1, width)), (height, width))
    vv = xp.broadcast_to(xp.reshape(v, (height, 1)), (height, width))
    base = xp.stack([uu, vv, xp.ones((height, width), dtype=dtype, device=dev)], axis=-1)
    return xp.reshape(base, (height * width, 3))


def _unnormalize(g: Any, size: int, align_corners: bool) -> tuple[Any, float]:
    """Pixel coordinate of normalised ``g`` and the slope ``di/dg`` (PyTorch's unnormalisation)."""
    if align_corners:
        return (g + 1.0) * ((size - 1) / 2), (size - 1) / 2
    return ((g + 1.0) * size - 1.0) / 2, size / 2


def _source_index(xp: Any, g: Any, size: int, padding_mode: str,
                  align_corners: bool) -> tuple[Any, Any]:
    """Pixel coordinate where ``g`` samples, and ``di/dg`` (an array: 0 where border clips).

    For ``padding_mode="border"`` the coordinate is clipped to ``[0, size-1]``, and as in PyTorch
    the clip's derivative is 0 on the border itself (``i <= 0`` or ``i >= size-1``), 1 inside.
    """
    i, slope = _unnormalize(g, size, align_corners)
    if padding_mode == "border":
        inside = xp.astype((i > 0) & (i < size - 1), g.dtype)
        return xp.clip(i, 0.0, float(size - 1)), slope * inside
    return i, slope * xp.ones_like(g)


def _pixels(xp: Any, iy: Any, ix: Any, hw: tuple[int, int], mode: str) -> bl.ImageCorners:
    """The pixels each point reads in its image: the 4 bilinear corners, or the nearest pixel
    ``(round(iy), round(ix))`` with halves rounded to even (the zero pixel if outside)."""
    if mode == "bilinear":
        return bl.image_corners(iy, ix, hw[0], hw[1])
    return bl.image_pixels(xp.round(iy), xp.round(ix), hw[0], hw[1])


# ------------------------------------------------------------------------------- affine_grid

def affine_grid_forward(theta: Any, size: Any, align_corners: bool = False
                        ) -> tuple[Any, AffineGridCache]:
    """The sampling grid of a batch of affine maps, as ``torch.nn.functional.affine_grid``.

    ``grid[n, h, w] = theta[n] @ (u_w, v_h, 1)``, with ``u_w`` and ``v_h`` the normalised
    positions of the output pixel centres: ``linspace(-1, 1, W)``, scaled by ``(W - 1) / W``
    when ``align_corners`` is False (and 0 for a side of one pixel).

    Parameters
    ----------
    theta : array, shape (N, 2, 3), float32 or float64
    size : sequence of 4 ints
        ``(N, C, H, W)``, the size of the output image (``C`` is not used).
    align_corners : bool

    Returns
    -------
    grid : array, shape (N, H, W, 2), the dtype of ``theta``
        ``grid[..., 0]`` is the normalised x (column), ``grid[..., 1]`` the normalised y (row).
    cache : AffineGridCache
        The size and ``align_corners``; ``theta`` is not needed (the map is linear in it).
    """
    op = "affine_grid"
    xp = namespace(op, theta=theta)
    check_float_array(op, "theta", theta, 3, "(N, 2, 3)")
    if tuple(theta.shape[1:]) != (2, 3):
        raise argument_error(op, "theta", "shape (N, 2, 3)", f"shape {tuple(theta.shape)}")
    if not isinstance(size, (tuple, list)) or len(size) != 4:
        raise argument_error(op, "size", "a sequence of 4 ints (N, C, H, W)", repr(size), TypeError)
    size = tuple(check_int(op, "size", s, minimum=1) for s in size)
    if size[0] != theta.shape[0]:
        raise argument_error(op, "size", f"size[0] == N = {theta.shape[0]} (theta's batch)",
                             repr(size))
    align_corners = _check_bool(op, "align_corners", align_corners)
    n, _, h, w = size
    base = _base_grid(xp, h, w, align_corners, theta.dtype, device(theta))
    grid = xp.matmul(base, xp.permute_dims(theta, (0, 2, 1)))       # (H*W, 3) @ (N, 3, 2)
    return xp.reshape(grid, (n, h, w, 2)), AffineGridCache(size, align_corners)  # type: ignore[arg-type]


def affine_grid_backward(dgrid: Any, cache: AffineGridCache) -> Any:
    """``dtheta[n] = dgrid[n]^T @ base``: shape (N, 2, 3), with ``base`` the (H*W, 3) positions.

    From ``grid[n, p, i] = sum_j theta[n, i, j] base[p, j]``.  See ``docs/ops/sampling.md``.
    """
    op = "affine_grid_backward"
    n, _, h, w = cache.size
    check_float_array(op, "dgrid", dgrid)
    check_shape(op, "dgrid", dgrid, (n, h, w, 2))
    xp = namespace(op, dgrid=dgrid)
    base = _base_grid(xp, h, w, cache.align_corners, dgrid.dtype, device(dgrid))
    return xp.matmul(xp.permute_dims(xp.reshape(dgrid, (n, h * w, 2)), (0, 2, 1)), base)


# ------------------------------------------------------------------------------- grid_sample

def _pixel_coords(xp: Any, grid: Any, hw: tuple[int, int], padding_mode: str,
                  align_corners: bool) -> tuple[Any, Any, Any, Any]:
    """``(iy, ix, diy/dgy, dix/dgx)``, each of shape (N, H_out*W_out)."""
    n, ho, wo, _ = grid.shape
    gx = xp.reshape(grid[..., 0], (n, ho * wo))
    gy = xp.reshape(grid[..., 1], (n, ho * wo))
    ix, sx = _source_index(xp, gx, hw[1], padding_mode, align_corners)
    iy, sy = _source_index(xp, gy, hw[0], padding_mode, align_corners)
    return iy, ix, sy, sx


def grid_sample_forward(x: Any, grid: Any, mode: str = "bilinear", padding_mode: str = "zeros",
                        align_corners: bool = False) -> tuple[Any, GridSampleCache]:
    """Sample ``x`` at normalised positions, as ``torch.nn.functional.grid_sample`` (4-D).

    ``y[n, c, h, w] = x[n, c]`` read at ``grid[n, h, w] = (gx, gy)``, in pixels
    ``ix = ((gx + 1) W - 1) / 2`` (``(gx + 1) (W - 1) / 2`` with ``align_corners``), likewise
    ``iy`` from ``gy`` and ``H``.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    grid : array, shape (N, H_out, W_out, 2), the dtype of ``x``
        Normalised (x, y) positions; [-1, 1] covers the image.
    mode : {"bilinear", "nearest"}
        ``bilinear`` weighs the 4 pixels around the point (floor decides the cell);
        ``nearest`` takes the pixel at ``round(ix), round(iy)``, halves rounding to even.
    padding_mode : {"zeros", "border"}
        Outside the image, ``zeros`` reads 0; ``border`` clips the pixel coordinates to
        ``[0, W-1] x [0, H-1]`` first.
    align_corners : bool

    Returns
    -------
    y : array, shape (N, C, H_out, W_out), the dtype of ``x``
    cache : GridSampleCache
        ``x`` and ``grid`` (references, not copies) and the options.
    """
    op = "grid_sample"
    xp = namespace(op, x=x, grid=grid)
    check_float_array(op, "x", x, 4, "(N, C, H, W)")
    check_float_array(op, "grid", grid, 4, "(N, H_out, W_out, 2)")
    check_same_dtype(op, x=x, grid=grid)
    if grid.shape[3] != 2 or grid.shape[0] != x.shape[0]:
        raise argument_error(op, "grid", f"shape ({x.shape[0]}, H_out, W_out, 2)",
                             f"shape {tuple(grid.shape)}")
    if min(x.shape[2:]) < 1:
        raise argument_error(op, "x", "an image of at least 1 x 1 pixels", f"shape {tuple(x.shape)}")
    mode = _check_choice(op, "mode", mode, MODES)
    padding_mode = _check_choice(op, "padding_mode", padding_mode, PADDING_MODES)
    align_corners = _check_bool(op, "align_corners", align_corners)
    n, c, h, w = x.shape
    ho, wo = grid.shape[1:3]
    iy, ix, _, _ = _pixel_coords(xp, grid, (h, w), padding_mode, align_corners)
    y = bl.sample_images(xp.reshape(x, (n, c, h * w)),
                         lambda blk: _pixels(xp, iy[blk, ...], ix[blk, ...], (h, w), mode), ho * wo)
    return xp.reshape(y, (n, c, ho, wo)), GridSampleCache(x, grid, mode, padding_mode, align_corners)


def grid_sample_backward(dy: Any, cache: GridSampleCache) -> tuple[Any, Any]:
    """Gradients of :func:`grid_sample_forward`: ``(dx, dgrid)``.

    Bilinear, with ``w_k`` the corner weights and ``s_k = sum_c dy * x[corner k]``::

        dx[corner k]  += w_k * dy
        dix = (1 - ly)(s_01 - s_00) + ly (s_11 - s_10),   dgx = dix * (W - 1)/2 or W/2
        diy = (1 - lx)(s_10 - s_00) + lx (s_11 - s_01),   dgy likewise with H

    times 0 where ``border`` clipped the coordinate (on the border too, as PyTorch).  Nearest:
    ``dx[nearest] += dy`` and ``dgrid = 0`` (the output is piecewise constant in the grid).
    See ``docs/ops/sampling.md``.  ``dy`` (shape (N, C, H_out, W_out)) is not modified.
    """
    op = "grid_sample_backward"
    x, grid = cache.x, cache.grid
    n, c, h, w = x.shape
    ho, wo = grid.shape[1:3]
    check_float_array(op, "dy", dy)
    check_shape(op, "dy", dy, (n, c, ho, wo))
    xp = namespace(op, dy=dy, x=x)
    check_same_dtype(op, x=x, dy=dy)
    iy, ix, sy, sx = _pixel_coords(xp, grid, (h, w), cache.padding_mode, cache.align_corners)
    g = xp.reshape(dy, (n, c, ho * wo))
    dsrc, diy, dix = bl.sample_images_backward(
        g, xp.reshape(x, (n, c, h * w)),
        lambda blk: _pixels(xp, iy[blk, ...], ix[blk, ...], (h, w), cache.mode),
        4 if cache.mode == "bilinear" else 1)
    if diy is None:                                                       # nearest
        dgrid = xp.zeros_like(grid)
    else:
        dgrid = xp.reshape(xp.stack([dix * sx, diy * sy], axis=-1), (n, ho, wo, 2))
    return xp.reshape(dsrc, (n, c, h, w)), dgrid


# ----------------------------------------------------------------------------------- registry

def _off_integer(rng, shape, low, high, margin=0.15):
    """Pixel coordinates in [low, high) whose fractional parts lie in [margin, 1 - margin]."""
    whole = rng.integers(low, high, size=shape)
    return whole + margin + (1.0 - 2.0 * margin) * rng.random(shape)


def _grid_sample_example(rng):
    """Zero padding, some points outside the image, pixel coordinates kept off integers."""
    x = rng.standard_normal((2, 3, 4, 5))
    ix = _off_integer(rng, (2, 3, 4), -2, 6)
    iy = _off_integer(rng, (2, 3, 4), -2, 5)
    grid = ((ix * 2 + 1) / 5 - 1, (iy * 2 + 1) / 4 - 1)                # align_corners=False
    # mode and padding_mode go positionally: ``mode`` is also an option of the gradient checker.
    return (x, np.stack(grid, axis=-1), "bilinear", "zeros", False), {}


register_op("affine_grid", affine_grid_forward, affine_grid_backward,
            lambda rng: ((rng.standard_normal((2, 2, 3)), (2, 1, 4, 5)), {"align_corners": False}),
            doc="ops/sampling.md", linear=True)
register_op("grid_sample", grid_sample_forward, grid_sample_backward, _grid_sample_example,
            doc="ops/sampling.md", linear=True, tags=("kink",))            # linear in x
