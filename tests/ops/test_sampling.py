"""affine_grid and grid_sample: loops, SciPy, finite differences, the dot-product test, PyTorch's
conventions at exact integers, bad input, no mutation, dtypes and NaN."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from npattn.gradcheck import check_adjoint, check_op
from npattn import backend as npattn_backend
from npattn.ops import _bilinear
from npattn.ops import (affine_grid_backward, affine_grid_forward, grid_sample_backward,
                        grid_sample_forward)


MODES = ["bilinear", "nearest"]
PADDINGS = ["zeros", "border"]
seeds = st.integers(0, 2**32 - 1)
options = st.tuples(st.sampled_from(MODES), st.sampled_from(PADDINGS), st.booleans())
# (N, C, H, W, H_out, W_out)
shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5),
                   st.integers(1, 4), st.integers(1, 4))


# --------------------------------------------------------------------------- references

def unnormalize(g, size, align_corners):
    """PyTorch's map from a normalised coordinate to pixels, written out."""
    return (g + 1) / 2 * (size - 1) if align_corners else ((g + 1) * size - 1) / 2


def normalize(i, size, align_corners):
    """The inverse of :func:`unnormalize` (``size >= 2`` with ``align_corners``)."""
    return 2 * i / (size - 1) - 1 if align_corners else (2 * i + 1) / size - 1


def to_grid(iy, ix, h, w, align_corners):
    return np.stack([normalize(ix, w, align_corners), normalize(iy, h, align_corners)], axis=-1)


def ref_affine_grid(theta, size, align_corners):
    """``grid[n, i, j] = theta[n] @ (u_j, v_i, 1)`` by loops, the positions written out."""
    n_, _, h_, w_ = size

    def position(k, steps):
        if steps == 1:
            return 0.0
        u = -1 + 2 * k / (steps - 1)
        return u if align_corners else u * (steps - 1) / steps

    grid = np.zeros((n_, h_, w_, 2))
    for n in range(n_):
        for i in range(h_):
            for j in range(w_):
                grid[n, i, j] = theta[n] @ np.array([position(j, w_), position(i, h_), 1.0])
    return grid


def ref_grid_sample(x, grid, mode, padding_mode, align_corners):
    """grid_sample one output pixel at a time, each corner checked against the image."""
    n_, c_, h_, w_ = x.shape
    y = np.zeros((n_, c_, *grid.shape[1:3]))

    def pixel(n, r, c):
        return x[n, :, r, c] if 0 <= r < h_ and 0 <= c < w_ else np.zeros(c_)

    for n in range(n_):
        for a in range(grid.shape[1]):
            for b in range(grid.shape[2]):
                ix = unnormalize(grid[n, a, b, 0], w_, align_corners)
                iy = unnormalize(grid[n, a, b, 1], h_, align_corners)
                if padding_mode == "border":
                    ix, iy = min(max(ix, 0), w_ - 1), min(max(iy, 0), h_ - 1)
                if mode == "nearest":
                    y[n, :, a, b] = pixel(n, int(np.rint(iy)), int(np.rint(ix)))  # half to even
                    continue
                x0, y0 = int(np.floor(ix)), int(np.floor(iy))
                lx, ly = ix - x0, iy - y0
                y[n, :, a, b] = ((1 - ly) * (1 - lx) * pixel(n, y0, x0) + (1 - ly) * lx * pixel(n, y0, x0 + 1)
                                 + ly * (1 - lx) * pixel(n, y0 + 1, x0) + ly * lx * pixel(n, y0 + 1, x0 + 1))
    return y


def off_kinks(rng, shape, low, high, mode, margin=0.15):
    """Pixel coordinates in [low, high) at least ``margin`` from every kink of ``mode``:
    integers for bilinear (cell lines, image and border edges), half-integers for nearest."""
    whole = rng.integers(low, high, size=shape).astype(float)
    frac = margin + (1 - 2 * margin) * rng.random(shape)
    if mode == "nearest":
        frac = (frac + 0.5) % 1.0                     # now at least `margin` from 0.5
    return whole + frac


def draw_case(shape, mode, align_corners, seed):
    """x and a grid whose pixel coordinates lie off the kinks, some outside the image."""
    n, c, h, w, ho, wo = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    if align_corners and min(h, w) == 1:               # every point maps to pixel 0: no kinks
        grid = rng.uniform(-1.5, 1.5, (n, ho, wo, 2))
    else:
        iy = off_kinks(rng, (n, ho, wo), -2, h + 1, mode)
        ix = off_kinks(rng, (n, ho, wo), -2, w + 1, mode)
        grid = to_grid(iy, ix, h, w, align_corners)
    return rng, x, grid


def on(backend, *arrays, dtype=None):
    return [None if a is None else backend.asarray(a, dtype=dtype) for a in arrays]


# ------------------------------------------------------------------------------ affine_grid

@given(n=st.integers(1, 3), hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
       align_corners=st.booleans(), seed=seeds)
def test_affine_grid_matches_loops(backend, n, hw, align_corners, seed):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n, 2, 3))
    size = (n, 2, *hw)
    grid, _ = affine_grid_forward(backend.asarray(theta), size, align_corners)
    np.testing.assert_allclose(backend.to_numpy(grid), ref_affine_grid(theta, size, align_corners),
                               rtol=1e-12, atol=1e-14)


@given(n=st.integers(1, 3), hw=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       align_corners=st.booleans(), seed=seeds)
def test_affine_grid_gradient_and_dot_product(backend, n, hw, align_corners, seed):
    rng = np.random.default_rng(seed)
    theta = backend.asarray(rng.standard_normal((n, 2, 3)))
    size = (n, 1, *hw)
    check_op(affine_grid_forward, affine_grid_backward, theta, size, align_corners,
             rng=rng).raise_if_failed()
    check_adjoint(affine_grid_forward, affine_grid_backward, theta, size, align_corners,
                  rng=rng).raise_if_failed()


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_identity_theta_samples_x_back(backend, align_corners, mode):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 4))
    theta = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (2, 1, 1))
    grid, _ = affine_grid_forward(backend.asarray(theta), x.shape, align_corners)
    y, _ = grid_sample_forward(backend.asarray(x), grid, mode, "zeros", align_corners)
    np.testing.assert_allclose(backend.to_numpy(y), x, rtol=1e-12, atol=1e-12)


def test_affine_grid_unit_side_is_at_zero(backend):
    # PyTorch puts the only pixel of a side of length 1 at 0 (not at -1), with either convention.
    theta = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    for align_corners in (True, False):
        grid, _ = affine_grid_forward(backend.asarray(theta), (1, 1, 1, 3), align_corners)
        g = backend.to_numpy(grid)
        np.testing.assert_array_equal(g[0, 0, :, 1], 0.0)
        want = [-1.0, 0.0, 1.0] if align_corners else [-2 / 3, 0.0, 2 / 3]
        np.testing.assert_allclose(g[0, 0, :, 0], want, atol=1e-15)


# ------------------------------------------------------------------------------ grid_sample

@given(shape=shapes, opts=options, seed=seeds)
def test_grid_sample_matches_loops(backend, shape, opts, seed):
    mode, padding_mode, align_corners = opts
    n, c, h, w, ho, wo = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    grid = rng.uniform(-1.6, 1.6, (n, ho, wo, 2))
    y, _ = grid_sample_forward(*on(backend, x, grid), mode, padding_mode, align_corners)
    np.testing.assert_allclose(backend.to_numpy(y), ref_grid_sample(x, grid, mode, padding_mode,
                                                                    align_corners),
                               rtol=1e-12, atol=1e-13)


@given(shape=shapes, padding_mode=st.sampled_from(PADDINGS), align_corners=st.booleans(),
       seed=seeds)
def test_bilinear_matches_scipy_map_coordinates(backend, shape, padding_mode, align_corners, seed):
    # SciPy's order-1 spline is bilinear interpolation; 'grid-constant' pads with zeros and
    # interpolates across the edge, 'nearest' repeats the edge (the same as clipping).
    n, c, h, w, ho, wo = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    grid = rng.uniform(-1.6, 1.6, (n, ho, wo, 2))
    y, _ = grid_sample_forward(*on(backend, x, grid), "bilinear", padding_mode, align_corners)
    iy = unnormalize(grid[..., 1], h, align_corners)
    ix = unnormalize(grid[..., 0], w, align_corners)
    scipy_mode = "grid-constant" if padding_mode == "zeros" else "nearest"
    want = np.stack([np.stack([ndimage.map_coordinates(x[i, k], [iy[i], ix[i]], order=1,
                                                       mode=scipy_mode, cval=0.0)
                               for k in range(c)]) for i in range(n)])
    np.testing.assert_allclose(backend.to_numpy(y), want, rtol=1e-10, atol=1e-12)


@given(shape=shapes, opts=options, seed=seeds)
def test_grid_sample_gradients_match_finite_differences(backend, shape, opts, seed):
    mode, padding_mode, align_corners = opts
    rng, x, grid = draw_case(shape, mode, align_corners, seed)
    # `mode` is also a check_op option: grid_sample's own options go positionally.
    check_op(grid_sample_forward, grid_sample_backward, *on(backend, x, grid), mode, padding_mode,
             align_corners, rng=rng).raise_if_failed()


@given(shape=shapes, opts=options, seed=seeds)
def test_grid_sample_is_linear_in_x(backend, shape, opts, seed):
    mode, padding_mode, align_corners = opts
    rng, x, grid = draw_case(shape, mode, align_corners, seed)
    check_adjoint(grid_sample_forward, grid_sample_backward, *on(backend, x, grid), mode,
                  padding_mode, align_corners, inputs="x", rng=rng).raise_if_failed()


@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_grid_sample_directional_gradient_at_a_realistic_size(backend, padding_mode):
    rng, x, grid = draw_case((2, 8, 16, 16, 12, 12), "bilinear", False, 3)
    check_op(grid_sample_forward, grid_sample_backward, *on(backend, x, grid), "bilinear",
             padding_mode, False, mode="directional", rng=rng).raise_if_failed()


def test_spatial_transformer_chain_gradient(backend):
    # theta -> affine_grid -> grid_sample, the chain rule by hand against finite differences.
    rng = np.random.default_rng(4)
    x = backend.asarray(rng.standard_normal((2, 2, 5, 6)))
    theta0 = np.array([[0.83, 0.21, 0.07], [-0.13, 0.91, -0.05]])
    theta = theta0 + 0.05 * rng.standard_normal((2, 2, 3))

    def forward(x, theta):
        grid, c1 = affine_grid_forward(theta, (2, 2, 4, 3), False)
        y, c2 = grid_sample_forward(x, grid, "bilinear", "zeros", False)
        return y, (c1, c2)

    def backward(dy, cache):
        dx, dgrid = grid_sample_backward(dy, cache[1])
        return dx, affine_grid_backward(dgrid, cache[0])

    check_op(forward, backward, x, backend.asarray(theta), rng=rng).raise_if_failed()


# ------------------------------------------------------- PyTorch's conventions at the kinks

def test_bilinear_at_an_exact_pixel_takes_the_floor_cell(backend):
    # A point exactly on pixel (1, 2) of a 3 x 5 image, align_corners=True (grid (0, 0), exact
    # in binary).  Value: x[1, 2].  dx: all of dy on that pixel, exactly 0 on its neighbours
    # (weight 0).  dgrid: the slope of the floor cell, towards the next pixel:
    # (x[1, 3] - x[1, 2]) * (W-1)/2 and (x[2, 2] - x[1, 2]) * (H-1)/2 -- as PyTorch gives.
    x = np.arange(15.0).reshape(1, 1, 3, 5) ** 2                      # x[1,2]=49, x[1,3]=64, x[2,2]=144
    grid = np.zeros((1, 1, 1, 2))
    y, cache = grid_sample_forward(*on(backend, x, grid), "bilinear", "zeros", True)
    dx, dgrid = grid_sample_backward(backend.asarray(np.full((1, 1, 1, 1), 2.0)), cache)
    assert backend.to_numpy(y)[0, 0, 0, 0] == 49.0
    want_dx = np.zeros_like(x)
    want_dx[0, 0, 1, 2] = 2.0
    np.testing.assert_array_equal(backend.to_numpy(dx), want_dx)
    np.testing.assert_array_equal(backend.to_numpy(dgrid)[0, 0, 0], [2.0 * (64 - 49) * 2.0,
                                                                     2.0 * (144 - 49) * 1.0])


def test_bilinear_on_the_last_pixel_slopes_towards_zero_padding(backend):
    # On the last column (ix = W - 1 = 3, grid 0.75 with align_corners=False), the cell is
    # [3, 4]: the next pixel is outside and reads 0 with zero padding, so
    # dgx = (0 - x[., 3]) * W/2, as in PyTorch.
    x = np.array([[[[1.0, 2.0, 5.0, 9.0]]]])
    grid = np.array([[[[0.75, 0.0]]]])
    y, cache = grid_sample_forward(*on(backend, x, grid), "bilinear", "zeros", False)
    _, dgrid = grid_sample_backward(backend.asarray(np.ones((1, 1, 1, 1))), cache)
    assert backend.to_numpy(y)[0, 0, 0, 0] == 9.0
    assert backend.to_numpy(dgrid)[0, 0, 0, 0] == -9.0 * 4 / 2


def test_border_gradient_is_zero_on_and_beyond_the_border(backend):
    # border clips ix to [0, W-1]; PyTorch counts the border itself as clipped: d/dgrid = 0 at
    # ix <= 0 and ix >= W-1, and the ordinary slope strictly inside.
    x = np.array([[[[1.0, 3.0, 7.0, 15.0]]]])
    ix = np.array([[[-1.5, 0.0, 0.5, 3.0, 4.2]]])
    grid = np.stack([normalize(ix, 4, True), np.zeros_like(ix)], axis=-1)      # H = 1: iy = 0
    y, cache = grid_sample_forward(*on(backend, x, grid), "bilinear", "border", True)
    dx, dgrid = grid_sample_backward(backend.asarray(np.ones((1, 1, 1, 5))), cache)
    np.testing.assert_allclose(backend.to_numpy(y)[0, 0, 0], [1.0, 1.0, 2.0, 15.0, 15.0])
    np.testing.assert_allclose(backend.to_numpy(dgrid)[0, 0, :, 0], [0.0, 0.0, 2.0 * 1.5, 0.0, 0.0])
    np.testing.assert_array_equal(backend.to_numpy(dgrid)[0, 0, :, 1], 0.0)   # H = 1: y clipped
    np.testing.assert_allclose(backend.to_numpy(dx)[0, 0, 0], [2.5, 0.5, 0.0, 2.0])


def test_nearest_rounds_halves_to_even(backend):
    # ix = 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0 (not -1), 3.5 -> 4 (outside: 0 with zeros).
    x = np.array([[[[10.0, 11.0, 12.0, 13.0]]]])
    ix = np.array([[[0.5, 1.5, 2.5, -0.5, 3.5]]])
    grid = to_grid(np.zeros_like(ix), ix, 1, 4, False)
    y, cache = grid_sample_forward(*on(backend, x, grid), "nearest", "zeros", False)
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0, 0], [10.0, 12.0, 12.0, 10.0, 0.0])
    dx, dgrid = grid_sample_backward(backend.asarray(np.arange(1.0, 6.0).reshape(1, 1, 1, 5)), cache)
    np.testing.assert_array_equal(backend.to_numpy(dx)[0, 0, 0], [5.0, 0.0, 5.0, 0.0])
    np.testing.assert_array_equal(backend.to_numpy(dgrid), 0.0)


# ---------------------------------------------------------------------------- bad input

def test_affine_grid_bad_input(backend):
    theta = backend.asarray(np.zeros((2, 2, 3)))
    bad = [
        ((backend.asarray(np.zeros((2, 3, 3))), (2, 1, 4, 4)), ValueError, "'theta' expected shape (N, 2, 3)"),
        ((theta, (2, 1, 4)), TypeError, "'size' expected a sequence of 4 ints"),
        ((theta, (3, 1, 4, 4)), ValueError, "'size' expected size[0] == N = 2"),
        ((theta, (2, 1, 0, 4)), ValueError, "'size' expected an int >= 1"),
        ((backend.asarray(np.zeros((2, 2, 3), dtype=np.int64)), (2, 1, 4, 4)), TypeError, "'theta'"),
    ]
    for args, cls, text in bad:
        with pytest.raises(cls, match=re.escape(f"affine_grid: argument {text}")):
            affine_grid_forward(*args)
    with pytest.raises(TypeError, match="'align_corners' expected a bool"):
        affine_grid_forward(theta, (2, 1, 4, 4), 1)


def test_grid_sample_bad_input(backend):
    x = backend.asarray(np.zeros((2, 3, 4, 5)))
    grid = backend.asarray(np.zeros((2, 3, 3, 2)))
    cases = [
        (dict(x=backend.asarray(np.zeros((3, 4, 5))), grid=grid), ValueError, "'x' expected 4 dimensions"),
        (dict(x=x, grid=backend.asarray(np.zeros((2, 3, 3, 3)))), ValueError, "'grid' expected shape (2, H_out"),
        (dict(x=x, grid=backend.asarray(np.zeros((1, 3, 3, 2)))), ValueError, "'grid' expected shape (2, H_out"),
        (dict(x=x, grid=backend.asarray(np.zeros((2, 3, 3, 2)), dtype="float32")), TypeError, "'grid' expected dtype"),
        (dict(x=x, grid=grid, mode="bicubic"), ValueError, "'mode' expected 'bilinear' or 'nearest'"),
        (dict(x=x, grid=grid, padding_mode="reflection"), ValueError, "'padding_mode' expected 'zeros' or 'border'"),
        (dict(x=x, grid=grid, align_corners=None), TypeError, "'align_corners' expected a bool"),
    ]
    for kwargs, cls, text in cases:
        with pytest.raises(cls, match=re.escape(f"grid_sample: argument {text}")):
            grid_sample_forward(**kwargs)


def test_grid_sample_backward_checks_dy(backend):
    rng = np.random.default_rng(0)
    _, cache = grid_sample_forward(*on(backend, rng.standard_normal((2, 3, 4, 5)),
                                       rng.uniform(-1, 1, (2, 3, 3, 2))))
    with pytest.raises(ValueError, match=re.escape("'dy' expected shape (2, 3, 3, 3)")):
        grid_sample_backward(backend.asarray(np.zeros((2, 3, 3, 4))), cache)
    with pytest.raises(TypeError, match="'dy'"):
        grid_sample_backward(backend.asarray(np.zeros((2, 3, 3, 3)), dtype="float32"), cache)
    _, acache = affine_grid_forward(backend.asarray(np.zeros((2, 2, 3))), (2, 1, 3, 4))
    with pytest.raises(ValueError, match=re.escape("'dgrid' expected shape (2, 3, 4, 2)")):
        affine_grid_backward(backend.asarray(np.zeros((2, 4, 3, 2))), acache)


def test_mixed_libraries_are_a_type_error(backend):
    if backend.name == "numpy":
        pytest.skip("needs a second library")
    with pytest.raises(TypeError, match="grid_sample: argument 'grid' expected an array of the same library"):
        grid_sample_forward(backend.asarray(np.zeros((1, 1, 2, 2))), np.zeros((1, 2, 2, 2)))


# ------------------------------------------------------------- no mutation, dtypes, NaN

@pytest.mark.parametrize("opts", [("bilinear", "zeros"), ("bilinear", "border"), ("nearest", "zeros")])
def test_inputs_and_dy_are_not_modified(backend, opts):
    rng, x, grid = draw_case((2, 3, 4, 5, 3, 3), opts[0], False, 5)
    x_, grid_ = on(backend, x, grid)
    y, cache = grid_sample_forward(x_, grid_, *opts, False)
    dy = rng.standard_normal(tuple(y.shape))
    dx, dgrid = grid_sample_backward(backend.asarray(dy), cache)
    np.testing.assert_array_equal(backend.to_numpy(x_), x)
    np.testing.assert_array_equal(backend.to_numpy(grid_), grid)
    dx[...] = 0.0          # fresh arrays: writing to them touches nothing else
    dgrid[...] = 0.0
    np.testing.assert_array_equal(backend.to_numpy(grid_sample_forward(x_, grid_, *opts, False)[0]),
                                  backend.to_numpy(y))
    theta = backend.asarray(rng.standard_normal((2, 2, 3)))
    theta_before = backend.to_numpy(theta).copy()
    g, acache = affine_grid_forward(theta, (2, 1, 3, 3))
    dg = backend.asarray(rng.standard_normal((2, 3, 3, 2)))
    dg_before = backend.to_numpy(dg).copy()
    affine_grid_backward(dg, acache)
    np.testing.assert_array_equal(backend.to_numpy(theta), theta_before)
    np.testing.assert_array_equal(backend.to_numpy(dg), dg_before)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept(backend, mode, dtype):
    rng, x, grid = draw_case((2, 3, 4, 5, 3, 2), mode, True, 6)
    y, cache = grid_sample_forward(*on(backend, x, grid, dtype=dtype), mode, "zeros", True)
    dx, dgrid = grid_sample_backward(backend.asarray(rng.standard_normal(tuple(y.shape)), dtype=dtype), cache)
    assert y.dtype == dx.dtype == dgrid.dtype == backend.dtype(dtype)
    theta = backend.asarray(rng.standard_normal((2, 2, 3)), dtype=dtype)
    g, acache = affine_grid_forward(theta, (2, 1, 3, 4))
    dtheta = affine_grid_backward(backend.asarray(rng.standard_normal((2, 3, 4, 2)), dtype=dtype), acache)
    assert g.dtype == dtheta.dtype == backend.dtype(dtype)


def test_float32_gradients_match_float64_finite_differences(backend):
    rng, x, grid = draw_case((2, 2, 4, 5, 3, 3), "bilinear", False, 7)
    check_op(grid_sample_forward, grid_sample_backward, *on(backend, x, grid, dtype="float32"),
             "bilinear", "zeros", False, rng=rng).raise_if_failed()


@pytest.mark.parametrize("mode", MODES)
def test_nan_reaches_exactly_the_outputs_that_read_it(backend, mode):
    # Corners outside the image read a zero, never a clipped real pixel: a NaN in x reaches the
    # outputs whose sample touches its pixel, as in PyTorch, and no others.
    x = np.ones((1, 2, 3, 4))
    x[0, 1, 0, 0] = np.nan
    near = np.array([-1.3, -0.7, -0.3, 0.3, 0.7, 1.3, 2.6])     # off integers and half-integers
    iy, ix = (a[None] for a in np.meshgrid(near, near, indexing="ij"))
    grid = to_grid(iy, ix, 3, 4, True)
    y, _ = grid_sample_forward(*on(backend, x, grid), mode, "zeros", True)
    y = backend.to_numpy(y)
    if mode == "bilinear":
        reads = (np.abs(iy) < 1) & (np.abs(ix) < 1)
    else:
        reads = (np.rint(iy) == 0) & (np.rint(ix) == 0)
    assert reads.any() and not reads.all()
    np.testing.assert_array_equal(np.isnan(y[0, 1]), reads[0])
    assert not np.isnan(y[0, 0]).any()


def results_before_and_after(backend, mode, padding_mode, seed, change):
    """grid_sample's output and gradients on one drawn case, then again after ``change()``."""
    rng, x, grid = draw_case((3, 2, 4, 5, 3, 2), mode, False, seed)
    args = on(backend, x, grid)
    dy = backend.asarray(rng.standard_normal((3, 2, 3, 2)))
    runs = []
    for step in range(2):
        if step:
            change()
        y, cache = grid_sample_forward(*args, mode, padding_mode, False)
        runs.append([backend.to_numpy(a) for a in (y, *grid_sample_backward(dy, cache))])
    return runs


@pytest.mark.parametrize("mode", MODES)
def test_threads_give_the_same_result(backend, monkeypatch, mode):
    # Images split between three threads (every size counted as large): the same output and
    # gradients, bit for bit (each image and each channel row is computed by one thread).
    monkeypatch.setattr(npattn_backend, "PARALLEL_MIN_ELEMENTS", 1)
    previous = npattn_backend.set_threads(1)
    try:
        one, three = results_before_and_after(backend, mode, "border", 9,
                                              lambda: npattn_backend.set_threads(3))
    finally:
        npattn_backend.set_threads(previous)
    for got, want in zip(three, one):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", MODES)
def test_blocks_of_one_image_give_the_same_result(backend, monkeypatch, mode):
    # One point per block budget: every image its own block (the portable scatter-add sums in
    # another order, hence the tolerance on the gradients).
    whole, blocks = results_before_and_after(
        backend, mode, "zeros", 11, lambda: monkeypatch.setattr(_bilinear, "POINTS_PER_BLOCK", 1))
    np.testing.assert_array_equal(blocks[0], whole[0])
    for got, want in zip(blocks[1:], whole[1:]):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_empty_batch_and_empty_grid(backend):
    for x_shape, grid_shape in [((0, 2, 4, 4), (0, 3, 3, 2)), ((1, 2, 4, 4), (1, 0, 3, 2))]:
        y, cache = grid_sample_forward(*on(backend, np.zeros(x_shape), np.zeros(grid_shape)))
        assert tuple(y.shape) == (x_shape[0], 2, *grid_shape[1:3])
        dx, dgrid = grid_sample_backward(backend.asarray(np.zeros(tuple(y.shape))), cache)
        assert tuple(dx.shape) == x_shape and tuple(dgrid.shape) == grid_shape


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_and_huge_coordinates(backend):
    # As PyTorch: a NaN or infinite coordinate gives NaN with bilinear (its weights are NaN)
    # and 0 with nearest; a huge finite one is simply outside (0).  No index overflows.
    x = np.ones((1, 1, 3, 3))
    grid = np.array([[[[np.nan, 0.0], [1e30, -1e30], [np.inf, 0.2]]]])
    for mode, want in [("bilinear", [np.nan, 0.0, np.nan]), ("nearest", [0.0, 0.0, 0.0])]:
        y, _ = grid_sample_forward(*on(backend, x, grid), mode)
        np.testing.assert_array_equal(backend.to_numpy(y).ravel(), want)
