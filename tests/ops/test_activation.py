"""relu, sigmoid, softmax: forward against scalar formulas and loops, backward against finite
differences, the ReLU kink, extreme inputs, bad input, no mutation, dtypes and NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npattn.ops as ops
from npattn.gradcheck import check_op


OPS = ["relu", "sigmoid", "softmax"]
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
seeds = st.integers(0, 2**32 - 1)


def pair(op):
    return getattr(ops, f"{op}_forward"), getattr(ops, f"{op}_backward")


def ref_sigmoid(v):
    """The logistic function one value at a time, from whichever side does not overflow."""
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def ref_softmax(x, axis):
    """Softmax by loops over every line along ``axis``."""
    moved = np.moveaxis(x, axis, -1)
    y = np.zeros_like(moved)
    for idx in np.ndindex(moved.shape[:-1]):
        line = [float(v) for v in moved[idx]]
        top = max(line)
        exps = [math.exp(v - top) for v in line]
        y[idx] = [e / sum(exps) for e in exps]
    return np.moveaxis(y, -1, axis)


def away_from_zero(rng, shape, margin=0.1):
    """Normal draws with ``|x| >= margin``: no finite difference straddles the ReLU kink."""
    x = rng.standard_normal(shape)
    return x + margin * np.where(x >= 0, 1.0, -1.0)


# ---------------------------------------------------------------------------------- forward

@given(shape=shapes, seed=seeds)
def test_relu_and_sigmoid_match_scalar_formulas(backend, shape, seed):
    x = 5.0 * np.random.default_rng(seed).standard_normal(shape)
    for op, ref in [("relu", lambda v: max(v, 0.0)), ("sigmoid", ref_sigmoid)]:
        y, _ = pair(op)[0](backend.asarray(x))
        np.testing.assert_allclose(backend.to_numpy(y), np.vectorize(ref)(x), rtol=1e-12,
                                   atol=1e-15, err_msg=op)


@given(shape=shapes, seed=seeds, data=st.data())
def test_softmax_matches_loops_and_sums_to_one(backend, shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = 3.0 * np.random.default_rng(seed).standard_normal(shape)
    y = backend.to_numpy(ops.softmax_forward(backend.asarray(x), axis=axis)[0])
    np.testing.assert_allclose(y, ref_softmax(x, axis), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-13)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_is_finite_at_extremes(backend, dtype):
    x = backend.asarray([-1e4, -800.0, -40.0, 0.0, 40.0, 800.0, 1e4], dtype=dtype)
    y, cache = ops.sigmoid_forward(x)
    dx = backend.to_numpy(ops.sigmoid_backward(backend.asarray(np.ones(7), dtype=dtype), cache))
    y = backend.to_numpy(y)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert y[0] == 0.0 and y[-1] == 1.0 and y[3] == 0.5
    np.testing.assert_allclose(y, [ref_sigmoid(v) for v in backend.to_numpy(x)], atol=1e-7)
    assert dx[0] == 0.0 and dx[-1] == 0.0 and dx[3] == 0.25


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_of_large_inputs_is_exact(backend, dtype):
    # exp(1e4) overflows; the shifted form gives the same answer as for x - max(x).
    x = np.array([[1e4, 1e4 - 1.0, 1e4 - 2.0], [-1e4, 0.0, 1e4], [1e38, 1e38, -1e38]])
    y, cache = ops.softmax_forward(backend.asarray(x, dtype=dtype))
    y = backend.to_numpy(y)
    expected = np.array([ref_softmax(np.array([0.0, -1.0, -2.0]), 0), [0.0, 0.0, 1.0],
                         [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(y, expected, rtol=1e-6 if dtype == "float32" else 1e-14)
    dx = ops.softmax_backward(backend.asarray(np.ones((3, 3)), dtype=dtype), cache)
    assert np.all(np.isfinite(backend.to_numpy(dx)))


def test_softmax_is_shift_invariant(backend):
    x = np.random.default_rng(4).standard_normal((2, 5))
    y0 = backend.to_numpy(ops.softmax_forward(backend.asarray(x))[0])
    y1 = backend.to_numpy(ops.softmax_forward(backend.asarray(x + 700.0))[0])
    np.testing.assert_allclose(y1, y0, rtol=1e-12)


# ------------------------------------------------------------------------------- backward

@given(shape=shapes, seed=seeds, data=st.data())
def test_gradients_match_finite_differences(backend, shape, seed, data):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    check_op(*pair("relu"), backend.asarray(away_from_zero(rng, shape)), rng=rng).raise_if_failed()
    x = backend.asarray(2.0 * rng.standard_normal(shape))
    check_op(*pair("sigmoid"), x, rng=rng).raise_if_failed()
    check_op(*pair("softmax"), x, axis, rng=rng).raise_if_failed()


@pytest.mark.parametrize("op", OPS)
def test_float32_gradients_match_float64_finite_differences(backend, op):
    rng = np.random.default_rng(8)
    x = backend.asarray(away_from_zero(rng, (3, 4)), dtype="float32")
    check_op(*pair(op), x, rng=rng).raise_if_failed()


def test_relu_derivative_at_zero_is_zero(backend):
    # The kink: PyTorch takes the derivative at exactly 0 as 0.
    _, cache = ops.relu_forward(backend.asarray([-1.0, 0.0, -0.0, 2.0]))
    dx = ops.relu_backward(backend.asarray([3.0, 5.0, 7.0, 11.0]), cache)
    np.testing.assert_array_equal(backend.to_numpy(dx), [0.0, 0.0, 0.0, 11.0])


def test_softmax_backward_matches_its_jacobian(backend):
    # dy_j/dx_i = y_j (delta_ij - y_i), written out as a matrix, row by row.
    x = np.array([0.3, -1.2, 2.0, 0.5])
    dy = np.array([0.7, -0.1, 1.3, -2.0])
    y = ref_softmax(x, 0)
    jacobian = np.diag(y) - np.outer(y, y)
    _, cache = ops.softmax_forward(backend.asarray(x))
    dx = ops.softmax_backward(backend.asarray(dy), cache)
    np.testing.assert_allclose(backend.to_numpy(dx), jacobian.T @ dy, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------------- bad input

def call_forward(op, x):
    return pair(op)[0](x)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", ["int32", "bool", "complex128"])
def test_non_float_dtype_is_a_type_error(backend, op, dtype):
    with pytest.raises(TypeError, match=rf"^{op}: argument 'x' expected a real floating"):
        call_forward(op, backend.asarray(np.ones((2, 3)), dtype=dtype))


@pytest.mark.parametrize("op", OPS)
def test_not_an_array_is_a_type_error(op):
    with pytest.raises(TypeError, match=rf"^{op}: "):
        call_forward(op, [1.0, 2.0])


@pytest.mark.parametrize("op", OPS)
def test_dy_of_the_wrong_shape_is_a_value_error(backend, op):
    _, cache = call_forward(op, backend.asarray(np.ones((2, 3))))
    with pytest.raises(ValueError, match=rf"^{op}_backward: argument 'dy' expected shape \(2, 3\)"):
        pair(op)[1](backend.asarray(np.ones((3, 2))), cache)



@pytest.mark.parametrize("op", OPS)
def test_dy_from_another_library_is_a_type_error(backend, op):
    _, cache = call_forward(op, backend.asarray(np.ones((2, 3))))
    with pytest.raises(TypeError, match=rf"^{op}_backward: argument '\w+' expected an array of"):
        pair(op)[1](backend.other_asarray(np.ones((2, 3))), cache)


@pytest.mark.parametrize("axis, cls", [(2, ValueError), (-3, ValueError), (1.0, TypeError),
                                       (None, TypeError)])
def test_softmax_bad_axis(backend, axis, cls):
    with pytest.raises(cls, match=r"^softmax: argument 'axis' expected"):
        ops.softmax_forward(backend.asarray(np.ones((2, 3))), axis=axis)


def test_softmax_of_a_0d_array_is_a_value_error(backend):
    with pytest.raises(ValueError, match=r"^softmax: argument 'x' expected at least 1 dimension"):
        ops.softmax_forward(backend.asarray(1.0))


# ------------------------------------------------------------- no mutation, dtypes, NaN

@pytest.mark.parametrize("op", OPS)
def test_inputs_and_dy_are_not_modified(backend, op):
    rng = np.random.default_rng(9)
    x_np, dy_np = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    x, dy = backend.asarray(x_np), backend.asarray(dy_np)
    y, cache = call_forward(op, x)
    y_np = backend.to_numpy(y).copy()
    dx = pair(op)[1](dy, cache)
    dx[...] = 0.0      # the gradient is a fresh array: writing to it touches nothing else
    for arr, ref in [(x, x_np), (dy, dy_np), (y, y_np)]:
        np.testing.assert_array_equal(backend.to_numpy(arr), ref)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept(backend, op, dtype):
    x = backend.asarray(np.random.default_rng(10).standard_normal((3, 4)), dtype=dtype)
    y, cache = call_forward(op, x)
    dx = pair(op)[1](backend.asarray(np.ones((3, 4)), dtype=dtype), cache)
    assert y.dtype == backend.dtype(dtype) and dx.dtype == backend.dtype(dtype)


def test_nan_propagates(backend):
    x = np.array([[0.5, np.nan, -1.0], [1.0, 2.0, 3.0]])
    dy = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    # relu and sigmoid: only the NaN entry; relu passes dy through there, as PyTorch does.
    for op in ["relu", "sigmoid"]:
        y, cache = call_forward(op, backend.asarray(x))
        np.testing.assert_array_equal(np.isnan(backend.to_numpy(y)), np.isnan(x))
        dx = backend.to_numpy(pair(op)[1](backend.asarray(dy), cache))
        assert np.all(np.isfinite(np.delete(dx.ravel(), 1)))
    _, cache = ops.relu_forward(backend.asarray(x))
    assert backend.to_numpy(ops.relu_backward(backend.asarray(dy), cache))[0, 1] == 2.0
    # softmax: the whole line holding the NaN, and no other.
    y, cache = ops.softmax_forward(backend.asarray(x), axis=1)
    np.testing.assert_array_equal(np.isnan(backend.to_numpy(y)), [[1, 1, 1], [0, 0, 0]])
    dx = backend.to_numpy(ops.softmax_backward(backend.asarray(dy), cache))
    assert np.all(np.isnan(dx[0])) and np.all(np.isfinite(dx[1]))
