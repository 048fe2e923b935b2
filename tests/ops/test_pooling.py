"""Pooling: forward and backward against explicit loops, finite differences, the dot-product
test, the first-maximum tie rule, bad input, no mutation, dtypes and NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npattn.ops as ops
from npattn.gradcheck import check_adjoint, check_op


GLOBAL_OPS = ["global_avg_pool2d", "global_max_pool2d", "channel_mean", "channel_max"]
WINDOW_OPS = ["max_pool2d", "avg_pool2d"]
ALL_OPS = GLOBAL_OPS + WINDOW_OPS + ["adaptive_avg_pool2d"]
MAX_OPS = ["global_max_pool2d", "channel_max", "max_pool2d"]
LINEAR_OPS = ["global_avg_pool2d", "channel_mean", "avg_pool2d", "adaptive_avg_pool2d"]
DEFAULT_KWARGS = {"max_pool2d": {"kernel_size": 2}, "avg_pool2d": {"kernel_size": 2},
                  "adaptive_avg_pool2d": {"output_size": (2, 3)}}


def pair(op):
    return getattr(ops, f"{op}_forward"), getattr(ops, f"{op}_backward")


def distinct(rng, shape):
    """Values at least ``4 / size`` apart: no max is tied, or flips within a finite difference."""
    size = math.prod(shape)
    return (4.0 * rng.permutation(size) / size - 2.0).reshape(shape)


# ------------------------------------------------------------------------- loop references

def ref_global(x, reduce):
    """``reduce`` over H x W (row-major), one (n, c) at a time."""
    n_, c_, h_, w_ = x.shape
    y = np.zeros((n_, c_, 1, 1))
    for n in range(n_):
        for c in range(c_):
            y[n, c, 0, 0] = reduce([x[n, c, h, w] for h in range(h_) for w in range(w_)])
    return y


def ref_channel(x, reduce):
    n_, c_, h_, w_ = x.shape
    y = np.zeros((n_, 1, h_, w_))
    for n in range(n_):
        for h in range(h_):
            for w in range(w_):
                y[n, 0, h, w] = reduce([x[n, c, h, w] for c in range(c_)])
    return y


def first_max(values):
    """The index of the first maximum, by a strict comparison in index order."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def mean(values):
    return sum(values) / len(values)


def maximum(values):
    return values[first_max(values)]


def out_shape(shape, kernel, stride, padding):
    n_, c_, h_, w_ = shape
    return (n_, c_, *((size + 2 * p - k) // s + 1
                      for size, k, s, p in zip((h_, w_), kernel, stride, padding)))


def windows(shape, kernel, stride, padding):
    """Yield ``(n, c, oh, ow, cells)``: the real cells ``(h, w)`` of each window, row-major;
    the padded cells are left out."""
    n_, c_, oh_, ow_ = out_shape(shape, kernel, stride, padding)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    for n in range(n_):
        for c in range(c_):
            for oh in range(oh_):
                for ow in range(ow_):
                    cells = [(oh * sh + i - ph, ow * sw + j - pw)
                             for i in range(kh) for j in range(kw)]
                    cells = [(h, w) for h, w in cells if 0 <= h < shape[2] and 0 <= w < shape[3]]
                    yield n, c, oh, ow, cells


def ref_max_pool(x, dy, kernel, stride, padding):
    """Forward and backward of max pooling by loops: padding never wins, ties go first."""
    y, dx = np.zeros(out_shape(x.shape, kernel, stride, padding)), np.zeros_like(x)
    for n, c, oh, ow, cells in windows(x.shape, kernel, stride, padding):
        h, w = cells[first_max([x[n, c, h, w] for h, w in cells])]
        y[n, c, oh, ow] = x[n, c, h, w]
        if dy is not None:
            dx[n, c, h, w] += dy[n, c, oh, ow]
    return y, dx


def ref_avg_pool(x, dy, kernel, stride, padding):
    """Forward and backward of average pooling by loops, the padded zeros counted."""
    taps = kernel[0] * kernel[1]
    y, dx = np.zeros(out_shape(x.shape, kernel, stride, padding)), np.zeros_like(x)
    for n, c, oh, ow, cells in windows(x.shape, kernel, stride, padding):
        y[n, c, oh, ow] = sum(x[n, c, h, w] for h, w in cells) / taps
        if dy is not None:
            for h, w in cells:
                dx[n, c, h, w] += dy[n, c, oh, ow] / taps
    return y, dx


def ref_adaptive(x, out_hw):
    n_, c_, h_, w_ = x.shape
    oh_, ow_ = out_hw
    y = np.zeros((n_, c_, oh_, ow_))
    for i in range(oh_):
        h0, h1 = math.floor(i * h_ / oh_), math.ceil((i + 1) * h_ / oh_)
        for j in range(ow_):
            w0, w1 = math.floor(j * w_ / ow_), math.ceil((j + 1) * w_ / ow_)
            for n in range(n_):
                for c in range(c_):
                    y[n, c, i, j] = mean([x[n, c, h, w] for h in range(h0, h1)
                                          for w in range(w0, w1)])
    return y


# ------------------------------------------------------------------------- hypothesis cases

@st.composite
def window_cases(draw):
    """A small input shape, kernel, stride (or None), padding in [0, k // 2], and a seed."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    hw = tuple(draw(st.integers(max(1, k - 2 * p), k - 2 * p + 4))
               for k, p in zip(kernel, padding))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *hw)
    return shape, kernel, stride, padding, draw(st.integers(0, 2**32 - 1))


small_shapes = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5))
seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------------------------- forward

@given(shape=small_shapes, seed=seeds)
def test_global_and_channel_forward_match_loops(backend, shape, seed):
    x = distinct(np.random.default_rng(seed), shape)
    references = {"global_avg_pool2d": ref_global(x, mean),
                  "global_max_pool2d": ref_global(x, maximum),
                  "channel_mean": ref_channel(x, mean), "channel_max": ref_channel(x, maximum)}
    for op, expected in references.items():
        y, _ = pair(op)[0](backend.asarray(x))
        np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-12, atol=1e-14,
                                   err_msg=op)


@given(case=window_cases())
def test_windowed_pools_match_loops(backend, case):
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = distinct(rng, shape)
    for op, ref in [("max_pool2d", ref_max_pool), ("avg_pool2d", ref_avg_pool)]:
        forward, backward = pair(op)
        y, cache = forward(backend.asarray(x), kernel, stride, padding)
        y_ref, _ = ref(x, None, kernel, stride or kernel, padding)
        np.testing.assert_allclose(backend.to_numpy(y), y_ref, rtol=1e-12, atol=1e-14, err_msg=op)
        dy = rng.standard_normal(y_ref.shape)
        _, dx_ref = ref(x, dy, kernel, stride or kernel, padding)
        dx = backward(backend.asarray(dy), cache)
        np.testing.assert_allclose(backend.to_numpy(dx), dx_ref, rtol=1e-12, atol=1e-14,
                                   err_msg=op)


@given(shape=small_shapes, out_hw=st.tuples(st.integers(1, 7), st.integers(1, 7)), seed=seeds)
def test_adaptive_avg_pool2d_matches_loops(backend, shape, out_hw, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    y, _ = ops.adaptive_avg_pool2d_forward(backend.asarray(x), out_hw)
    np.testing.assert_allclose(backend.to_numpy(y), ref_adaptive(x, out_hw), rtol=1e-12, atol=1e-14)


def test_adaptive_avg_pool2d_overlapping_bins_by_hand(backend):
    # H = 5 into 3 bins: [0, 2), [1, 4), [3, 5) -- the middle bin overlaps both others;
    # W = 4 into 2 bins: [0, 2), [2, 4).  Each row h holds h**2.
    x = np.broadcast_to((np.arange(5.0) ** 2)[:, None], (1, 1, 5, 4)).copy()
    y, _ = ops.adaptive_avg_pool2d_forward(backend.asarray(x), (3, 2))
    expected = np.array([(0 + 1) / 2, (1 + 4 + 9) / 3, (9 + 16) / 2])
    np.testing.assert_allclose(backend.to_numpy(y)[0, 0], np.stack([expected] * 2, axis=1),
                               rtol=1e-15)


def test_adaptive_avg_pool2d_int_output_size(backend):
    y, _ = ops.adaptive_avg_pool2d_forward(backend.asarray(np.ones((2, 3, 5, 4))), 3)
    assert tuple(y.shape) == (2, 3, 3, 3)


def test_avg_pool2d_counts_padding_in_the_divisor(backend):
    x = np.ones((1, 1, 2, 2))
    y, _ = ops.avg_pool2d_forward(backend.asarray(x), 3, stride=1, padding=1)
    # Every 3x3 window holds the four ones and five padded zeros.
    np.testing.assert_allclose(backend.to_numpy(y), np.full((1, 1, 2, 2), 4 / 9), rtol=1e-15)


def test_stride_defaults_to_kernel_size(backend):
    x = backend.asarray(np.random.default_rng(1).standard_normal((1, 2, 6, 4)))
    for op in WINDOW_OPS:
        y, _ = pair(op)[0](x, (3, 2))
        assert tuple(y.shape) == (1, 2, 2, 2), op


# ---------------------------------------------------------- finite differences, adjoint

@given(shape=small_shapes, seed=seeds)
def test_global_and_channel_gradients_match_finite_differences(backend, shape, seed):
    rng = np.random.default_rng(seed)
    for op in GLOBAL_OPS:
        x = backend.asarray(distinct(rng, shape))   # no ties: a max is differentiable there
        check_op(*pair(op), x, rng=rng).raise_if_failed()


@given(case=window_cases())
def test_windowed_gradients_match_finite_differences(backend, case):
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    for op in WINDOW_OPS:
        x = backend.asarray(distinct(rng, shape))
        check_op(*pair(op), x, kernel, stride, padding, rng=rng).raise_if_failed()


@given(shape=small_shapes, out_hw=st.tuples(st.integers(1, 6), st.integers(1, 6)), seed=seeds)
def test_adaptive_gradient_matches_finite_differences(backend, shape, out_hw, seed):
    rng = np.random.default_rng(seed)
    x = backend.asarray(rng.standard_normal(shape))
    check_op(*pair("adaptive_avg_pool2d"), x, out_hw, rng=rng).raise_if_failed()


@given(case=window_cases(), out_hw=st.tuples(st.integers(1, 6), st.integers(1, 6)))
def test_linear_pools_pass_the_dot_product_test(backend, case, out_hw):
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = backend.asarray(rng.standard_normal(shape))
    check_adjoint(*pair("avg_pool2d"), x, kernel, stride, padding, rng=rng).raise_if_failed()
    check_adjoint(*pair("adaptive_avg_pool2d"), x, out_hw, rng=rng).raise_if_failed()
    for op in ["global_avg_pool2d", "channel_mean"]:
        check_adjoint(*pair(op), x, rng=rng).raise_if_failed()


@pytest.mark.parametrize("op", ALL_OPS)
def test_float32_gradients_match_float64_finite_differences(backend, op):
    rng = np.random.default_rng(7)
    x = backend.asarray(distinct(rng, (2, 3, 5, 4)), dtype="float32")
    check_op(*pair(op), x, rng=rng, **DEFAULT_KWARGS.get(op, {})).raise_if_failed()


# ------------------------------------------------------------------------- the tie rule

def test_global_max_pool2d_tie_goes_to_first_in_row_major_order(backend):
    x = np.zeros((1, 2, 3, 3))
    x[0, 0, 1, 2] = x[0, 0, 2, 0] = 5.0      # plane 0: two maxima, (1, 2) comes first
    x[0, 1] = 7.0                             # plane 1: all equal, (0, 0) comes first
    y, cache = ops.global_max_pool2d_forward(backend.asarray(x))
    dy = np.array([2.0, -3.0]).reshape(1, 2, 1, 1)
    dx = backend.to_numpy(ops.global_max_pool2d_backward(backend.asarray(dy), cache))
    expected = np.zeros_like(x)
    expected[0, 0, 1, 2], expected[0, 1, 0, 0] = 2.0, -3.0
    np.testing.assert_array_equal(backend.to_numpy(y).ravel(), [5.0, 7.0])
    np.testing.assert_array_equal(dx, expected)


def test_channel_max_tie_goes_to_lowest_channel(backend):
    x = np.zeros((1, 4, 1, 2))
    x[0, 1, 0, 0] = x[0, 3, 0, 0] = 1.0      # pixel 0: channels 1 and 3 tie
    x[0, :, 0, 1] = -2.0                      # pixel 1: all channels tie
    y, cache = ops.channel_max_forward(backend.asarray(x))
    dy = np.array([0.5, 4.0]).reshape(1, 1, 1, 2)
    dx = backend.to_numpy(ops.channel_max_backward(backend.asarray(dy), cache))
    expected = np.zeros_like(x)
    expected[0, 1, 0, 0], expected[0, 0, 0, 1] = 0.5, 4.0
    np.testing.assert_array_equal(backend.to_numpy(y).ravel(), [1.0, -2.0])
    np.testing.assert_array_equal(dx, expected)


def test_max_pool2d_tie_goes_to_first_in_window(backend):
    x = np.ones((1, 1, 2, 4))
    dy = np.array([[[[3.0, -1.0]]]])
    _, cache = ops.max_pool2d_forward(backend.asarray(x), 2)
    dx = backend.to_numpy(ops.max_pool2d_backward(backend.asarray(dy), cache))
    np.testing.assert_array_equal(dx, [[[[3.0, 0, -1.0, 0], [0, 0, 0, 0]]]])


@pytest.mark.parametrize("fill", [0.0, -np.inf])
def test_max_pool2d_ties_with_overlap_and_padding_match_loops(backend, fill):
    # Every cell equal: each window's first *real* cell wins; padding never does, even at -inf.
    x = np.full((1, 2, 4, 5), fill)
    dy = np.random.default_rng(3).standard_normal((1, 2, 4, 5))
    y, cache = ops.max_pool2d_forward(backend.asarray(x), 3, stride=1, padding=1)
    dx = ops.max_pool2d_backward(backend.asarray(dy), cache)
    y_ref, dx_ref = ref_max_pool(x, dy, (3, 3), (1, 1), (1, 1))
    np.testing.assert_array_equal(backend.to_numpy(y), y_ref)
    np.testing.assert_allclose(backend.to_numpy(dx), dx_ref, rtol=1e-15)


def test_first_nan_wins_and_a_nan_line_does_not_hide_a_tie(backend):
    # One plane with two NaNs (the first wins), one with a two-way tie: as many hits of
    # "x == max" as planes, so a count alone would wrongly take the fast path.
    x = np.zeros((1, 2, 2, 3))
    x[0, 0, 0, 2] = x[0, 0, 1, 1] = np.nan
    x[0, 1, 0, 1] = x[0, 1, 1, 0] = 4.0
    dy = np.array([2.0, 3.0]).reshape(1, 2, 1, 1)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 2], expected[0, 1, 0, 1] = 2.0, 3.0
    _, cache = ops.global_max_pool2d_forward(backend.asarray(x))
    dx = ops.global_max_pool2d_backward(backend.asarray(dy), cache)
    np.testing.assert_array_equal(backend.to_numpy(dx), expected)
    # The same planes read across channels: (C=2 as H*W=6 pixels) -> first NaN, lowest tie.
    xc = np.moveaxis(x.reshape(1, 2, 6), 2, 1).reshape(1, 6, 1, 2)   # channels = 6 cells
    dyc = np.array([2.0, 3.0]).reshape(1, 1, 1, 2)
    _, cache = ops.channel_max_forward(backend.asarray(xc))
    dxc = backend.to_numpy(ops.channel_max_backward(backend.asarray(dyc), cache))
    expected_c = np.moveaxis(expected.reshape(1, 2, 6), 2, 1).reshape(xc.shape)
    np.testing.assert_array_equal(dxc, expected_c)
    # And inside a pooling window.
    _, cache = ops.max_pool2d_forward(backend.asarray(x), (2, 3))
    dx = ops.max_pool2d_backward(backend.asarray(dy), cache)
    np.testing.assert_array_equal(backend.to_numpy(dx), expected)


# ---------------------------------------------------------------------------------- bad input

def call_forward(op, x, **kwargs):
    return pair(op)[0](x, **{**DEFAULT_KWARGS.get(op, {}), **kwargs})


@pytest.mark.parametrize("op", ALL_OPS)
def test_wrong_ndim_is_a_value_error(backend, op):
    with pytest.raises(ValueError, match=rf"^{op}: argument 'x' expected 4 dimensions"):
        call_forward(op, backend.asarray(np.ones((2, 3, 4))))


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("dtype", ["int32", "bool", "complex128"])
def test_non_float_dtype_is_a_type_error(backend, op, dtype):
    with pytest.raises(TypeError, match=rf"^{op}: argument 'x' expected a real floating"):
        call_forward(op, backend.asarray(np.ones((1, 2, 4, 4)), dtype=dtype))


@pytest.mark.parametrize("op", ALL_OPS)
def test_not_an_array_is_a_type_error(op):
    with pytest.raises(TypeError, match=rf"^{op}: "):
        call_forward(op, np.ones((1, 2, 4, 4)).tolist())


@pytest.mark.parametrize("op", ALL_OPS)
def test_dy_of_the_wrong_shape_is_a_value_error(backend, op):
    forward, backward = pair(op)
    y, cache = call_forward(op, backend.asarray(np.ones((1, 2, 4, 4))))
    bad = backend.asarray(np.ones((*y.shape[:-1], y.shape[-1] + 1)))
    with pytest.raises(ValueError, match=rf"^{op}_backward: argument 'dy' expected shape"):
        backward(bad, cache)



@pytest.mark.parametrize("op", MAX_OPS)
def test_dy_from_another_library_is_a_type_error(backend, op):
    y, cache = call_forward(op, backend.asarray(distinct(np.random.default_rng(0), (1, 2, 4, 4))))
    dy = backend.other_asarray(np.ones(tuple(y.shape)))
    with pytest.raises(TypeError, match=rf"^{op}_backward: argument '\w+' expected an array of "
                                        "the same library"):
        pair(op)[1](dy, cache)


@pytest.mark.parametrize("op", WINDOW_OPS)
@pytest.mark.parametrize("kwargs, arg, cls", [
    ({"kernel_size": 4}, "kernel_size", ValueError),            # 4 > H = 3
    ({"kernel_size": (2, 6), "padding": (1, 0)}, "kernel_size", ValueError),  # 6 > W = 4
    ({"kernel_size": 0}, "kernel_size", ValueError),
    ({"kernel_size": 2.0}, "kernel_size", TypeError),
    ({"kernel_size": (2, 2, 2)}, "kernel_size", TypeError),
    ({"kernel_size": 2, "stride": 0}, "stride", ValueError),
    ({"kernel_size": 2, "stride": (1, -1)}, "stride", ValueError),
    ({"kernel_size": 2, "padding": -1}, "padding", ValueError),
    ({"kernel_size": 3, "padding": 2}, "padding", ValueError),  # more than half the kernel
    ({"kernel_size": (2, 4), "padding": (1, 3)}, "padding", ValueError),
])
def test_bad_window_arguments(backend, op, kwargs, arg, cls):
    with pytest.raises(cls, match=rf"^{op}: argument '{arg}' expected"):
        pair(op)[0](backend.asarray(np.ones((1, 2, 3, 4))), **kwargs)


@pytest.mark.parametrize("output_size, cls", [(0, ValueError), ((2, 0), ValueError),
                                              ((2, 2, 2), TypeError), (1.5, TypeError)])
def test_bad_output_size(backend, output_size, cls):
    with pytest.raises(cls, match=r"^adaptive_avg_pool2d: argument 'output_size' expected"):
        ops.adaptive_avg_pool2d_forward(backend.asarray(np.ones((1, 2, 3, 4))), output_size)


# ------------------------------------------------------------- no mutation, dtypes, NaN

@pytest.mark.parametrize("op", ALL_OPS)
def test_inputs_and_dy_are_not_modified(backend, op):
    rng = np.random.default_rng(5)
    x_np = distinct(rng, (2, 3, 4, 6))
    x = backend.asarray(x_np)
    y, cache = call_forward(op, x)
    dy_np = rng.standard_normal(tuple(y.shape))
    dy = backend.asarray(dy_np)
    dx = pair(op)[1](dy, cache)
    dx[...] = 0.0      # the gradient is a fresh array: writing to it touches nothing else
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_np)
    np.testing.assert_array_equal(backend.to_numpy(call_forward(op, x)[0]), backend.to_numpy(y))


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept(backend, op, dtype):
    rng = np.random.default_rng(6)
    x = backend.asarray(distinct(rng, (2, 3, 4, 6)), dtype=dtype)
    y, cache = call_forward(op, x)
    dx = pair(op)[1](backend.asarray(rng.standard_normal(tuple(y.shape)), dtype=dtype), cache)
    assert y.dtype == backend.dtype(dtype) and dx.dtype == backend.dtype(dtype)
    assert tuple(dx.shape) == tuple(x.shape)


@pytest.mark.parametrize("op", ALL_OPS)
def test_nan_reaches_exactly_the_outputs_that_read_it(backend, op):
    # The outputs that read cell (0, 1, 2, 3) are those where the op of an indicator is nonzero
    # (every op here is monotone, and an indicator of 1 among zeros shows as a nonzero).
    shape = (2, 3, 5, 6)
    x = np.ones(shape)
    x[0, 1, 2, 3] = np.nan
    indicator = np.zeros(shape)
    indicator[0, 1, 2, 3] = 1.0
    y, cache = call_forward(op, backend.asarray(x))
    reads = backend.to_numpy(call_forward(op, backend.asarray(indicator))[0]) != 0
    np.testing.assert_array_equal(np.isnan(backend.to_numpy(y)), reads)
    dx = backend.to_numpy(pair(op)[1](backend.asarray(np.ones(tuple(y.shape))), cache))
    assert dx.shape == shape and np.all(np.isfinite(dx))


def test_registry_entries():
    for op in ALL_OPS:
        spec = ops.REGISTRY[op]
        assert spec.linear == (op in LINEAR_OPS), op
        assert spec.family == "pooling" and spec.doc == "ops/pooling.md", op
        assert (spec.forward, spec.backward) == pair(op)
