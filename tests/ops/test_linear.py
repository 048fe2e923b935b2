"""linear: loops, finite differences, the dot-product test, bad input, no mutation, dtypes, NaN."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npattn.gradcheck import check_adjoint, check_op
from npattn.ops import linear_backward, linear_forward


cases = st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 4), st.booleans(),
                  st.integers(0, 2**32 - 1))


def draw_arrays(n, n_in, n_out, with_bias, seed):
    rng = np.random.default_rng(seed)
    bias = rng.standard_normal(n_out) if with_bias else None
    return rng, rng.standard_normal((n, n_in)), rng.standard_normal((n_out, n_in)), bias


def ref_linear(x, weight, bias, dy):
    """Forward and backward by loops over every index."""
    (n_, n_in), n_out = x.shape, weight.shape[0]
    y = np.zeros((n_, n_out))
    dx, dw, db = np.zeros_like(x), np.zeros_like(weight), np.zeros(n_out)
    for n in range(n_):
        for o in range(n_out):
            y[n, o] = (0.0 if bias is None else bias[o]) + sum(x[n, i] * weight[o, i]
                                                                 for i in range(n_in))
            db[o] += dy[n, o]
            for i in range(n_in):
                dx[n, i] += dy[n, o] * weight[o, i]
                dw[o, i] += dy[n, o] * x[n, i]
    return y, dx, dw, (None if bias is None else db)


def on(backend, *arrays):
    return [None if a is None else backend.asarray(a) for a in arrays]


@given(case=cases)
def test_forward_and_backward_match_loops(backend, case):
    rng, x, weight, bias = draw_arrays(*case)
    dy = rng.standard_normal((x.shape[0], weight.shape[0]))
    y, cache = linear_forward(*on(backend, x, weight, bias))
    grads = linear_backward(backend.asarray(dy), cache)
    y_ref, *grads_ref = ref_linear(x, weight, bias, dy)
    np.testing.assert_allclose(backend.to_numpy(y), y_ref, rtol=1e-12, atol=1e-14)
    assert len(grads) == 3
    for got, want in zip(grads, grads_ref):
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-12, atol=1e-14)


@given(case=cases)
def test_gradients_match_finite_differences_and_adjoint(backend, case):
    rng, *arrays = draw_arrays(*case)
    args = on(backend, *arrays)
    check_op(linear_forward, linear_backward, *args, rng=rng).raise_if_failed()
    check_adjoint(linear_forward, linear_backward, *args, rng=rng).raise_if_failed()


def test_float32_gradients_match_float64_finite_differences(backend):
    rng, *arrays = draw_arrays(3, 4, 2, True, 1)
    args = [backend.asarray(a, dtype="float32") for a in arrays]
    check_op(linear_forward, linear_backward, *args, rng=rng).raise_if_failed()


# ---------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("shapes, arg, message", [
    (((2, 3, 1), (4, 3), (4,)), "x", "expected 2 dimensions (N, in)"),
    (((2, 3), (4, 3, 1), (4,)), "weight", "expected 2 dimensions (out, in)"),
    (((2, 3), (4, 3), (4, 1)), "bias", "expected 1 dimensions (out,)"),
    (((2, 3), (4, 2), (4,)), "weight", "expected shape (out, 3) to match x's 3 input features"),
    (((2, 3), (4, 3), (5,)), "bias", "expected shape (4,) to match weight's output features"),
])
def test_wrong_shapes_are_value_errors(backend, shapes, arg, message):
    with pytest.raises(ValueError, match="^" + re.escape(f"linear: argument '{arg}' {message}")):
        linear_forward(*on(backend, *(np.ones(s) for s in shapes)))


@pytest.mark.parametrize("dtype", ["int32", "bool", "complex128"])
@pytest.mark.parametrize("arg", ["x", "weight", "bias"])
def test_non_float_dtype_is_a_type_error(backend, dtype, arg):
    args = dict(zip(["x", "weight", "bias"], on(backend, np.ones((2, 3)), np.ones((4, 3)),
                                                np.ones(4))))
    args[arg] = backend.asarray(np.ones(tuple(args[arg].shape)), dtype=dtype)
    with pytest.raises(TypeError, match=rf"^linear: argument '{arg}' expected a real floating"):
        linear_forward(**args)


def test_mixed_float_dtypes_are_a_type_error(backend):
    x = backend.asarray(np.ones((2, 3)), dtype="float32")
    with pytest.raises(TypeError, match=r"^linear: argument 'weight' expected dtype .*float32"):
        linear_forward(x, backend.asarray(np.ones((4, 3))))


def test_dy_of_the_wrong_shape_is_a_value_error(backend):
    _, cache = linear_forward(*on(backend, np.ones((2, 3)), np.ones((4, 3))))
    with pytest.raises(ValueError, match=r"^linear_backward: argument 'dy' expected shape \(2, 4"):
        linear_backward(backend.asarray(np.ones((4, 2))), cache)



def test_arrays_of_two_libraries_are_a_type_error(backend):
    x, weight = on(backend, np.ones((2, 3)), np.ones((4, 3)))
    with pytest.raises(TypeError, match=r"^linear: argument 'bias' expected an array of the same"):
        linear_forward(x, weight, backend.other_asarray(np.ones(4)))
    _, cache = linear_forward(x, weight)
    with pytest.raises(TypeError, match=r"^linear_backward: argument '\w+' expected an array of"):
        linear_backward(backend.other_asarray(np.ones((2, 4))), cache)


# ------------------------------------------------------------- no mutation, dtypes, NaN

def test_inputs_and_dy_are_not_modified(backend):
    rng, *arrays = draw_arrays(3, 4, 2, True, 2)
    dy_np = rng.standard_normal((3, 2))
    args, dy = on(backend, *arrays), backend.asarray(dy_np)
    _, cache = linear_forward(*args)
    linear_backward(dy, cache)
    for arr, ref in zip([*args, dy], [*arrays, dy_np]):
        np.testing.assert_array_equal(backend.to_numpy(arr), ref)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_dtype_is_kept(backend, dtype, with_bias):
    _, *arrays = draw_arrays(3, 4, 2, with_bias, 3)
    args = [None if a is None else backend.asarray(a, dtype=dtype) for a in arrays]
    y, cache = linear_forward(*args)
    grads = linear_backward(backend.asarray(np.ones((3, 2)), dtype=dtype), cache)
    assert y.dtype == backend.dtype(dtype)
    assert [g.dtype for g in grads if g is not None] == [backend.dtype(dtype)] * (2 + with_bias)


def test_nan_propagates_to_its_row(backend):
    x = np.ones((3, 4))
    x[1, 2] = np.nan
    y, cache = linear_forward(*on(backend, x, np.ones((2, 4)), np.zeros(2)))
    np.testing.assert_array_equal(np.isnan(backend.to_numpy(y)), [[0, 0], [1, 1], [0, 0]])
    dx, dw, db = (backend.to_numpy(g) for g in linear_backward(backend.asarray(np.ones((3, 2))),
                                                                cache))
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(db)) and np.all(np.isnan(dw[:, 2]))
