"""tanh, hardsigmoid, hardswish: forward against scalar formulas, backward against finite
differences away from the kinks, PyTorch's derivative at the kinks x = -3 and x = 3, dtypes,
no mutation, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npattn.ops as ops
from npattn.gradcheck import check_op
from npattn.ops.activation import _away_from_kinks


OPS = ["tanh", "hardsigmoid", "hardswish"]


def pair(op):
    return getattr(ops, f"{op}_forward"), getattr(ops, f"{op}_backward")


def gradient(backend, op, x, dy):
    """``op``'s backward at ``x`` for the cotangent ``dy`` (NumPy in and out)."""
    forward, backward = pair(op)
    _, cache = forward(backend.asarray(x))
    return backend.to_numpy(backward(backend.asarray(dy), cache))


# Scalar references, written from the definitions (PyTorch's docs), one value at a time.
def ref_hardsigmoid(v):
    return 0.0 if v <= -3 else 1.0 if v >= 3 else v / 6 + 0.5


def ref_hardswish(v):
    return 0.0 if v <= -3 else v if v >= 3 else v * (v + 3) / 6


REFERENCES = {"tanh": math.tanh, "hardsigmoid": ref_hardsigmoid, "hardswish": ref_hardswish}

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
seeds = st.integers(0, 2**32 - 1)


@given(shape=shapes, seed=seeds)
def test_forward_matches_scalar_formulas(backend, shape, seed):
    x = 3.0 * np.random.default_rng(seed).standard_normal(shape)
    for op in OPS:
        y, _ = pair(op)[0](backend.asarray(x))
        expected = np.vectorize(REFERENCES[op])(x)
        np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-13, atol=1e-15,
                                   err_msg=op)


@given(shape=shapes, seed=seeds)
def test_backward_matches_finite_differences(backend, shape, seed):
    rng = np.random.default_rng(seed)
    x = backend.asarray(_away_from_kinks(rng, shape))
    for op in OPS:
        check_op(*pair(op), x, rng=rng).raise_if_failed()


def test_backward_on_pieces_by_hand(backend):
    x = np.array([-5.0, -1.5, 0.0, 1.5, 5.0])
    dy = np.array([0.3, -0.7, 1.1, 2.0, -1.3])
    slopes = {"hardsigmoid": [0, 1 / 6, 1 / 6, 1 / 6, 0],
              "hardswish": [0, -1.5 / 3 + 0.5, 0.5, 1.5 / 3 + 0.5, 1],
              "tanh": 1 - np.tanh(x) ** 2}
    for op, slope in slopes.items():
        np.testing.assert_allclose(gradient(backend, op, x, dy), dy * np.asarray(slope),
                                   rtol=1e-14, err_msg=op)


def test_kink_convention_is_pytorchs(backend):
    """At x = -3 and x = 3 exactly: hardsigmoid's derivative is 0 at both (the open interval);
    hardswish uses the middle piece's slope x/3 + 1/2 at both: -1/2 at -3, 3/2 at 3."""
    x = np.array([-3.0, 3.0])
    dy = np.array([0.7, -1.9])
    np.testing.assert_array_equal(gradient(backend, "hardsigmoid", x, dy), [0.0, 0.0])
    np.testing.assert_allclose(gradient(backend, "hardswish", x, dy), [0.7 * -0.5, -1.9 * 1.5],
                               rtol=1e-15)
    # Just outside the kinks the outer pieces apply.
    x_out = np.array([np.nextafter(-3.0, -4.0), np.nextafter(3.0, 4.0)])
    for op, slope in [("hardsigmoid", [0.0, 0.0]), ("hardswish", [0.0, 1.0])]:
        np.testing.assert_allclose(gradient(backend, op, x_out, dy), dy * np.asarray(slope),
                                   rtol=1e-15, err_msg=op)


def test_kinks_are_decided_on_x_in_float32(backend):
    """Just inside x = 3 in float32, hardsigmoid's output rounds to 1 but the slope is 1/6."""
    x = np.array([np.nextafter(np.float32(3), np.float32(0))], dtype=np.float32)
    y, cache = ops.hardsigmoid_forward(backend.asarray(x))
    assert backend.to_numpy(y)[0] == 1.0
    dx = ops.hardsigmoid_backward(backend.asarray(np.ones(1, dtype=np.float32)), cache)
    np.testing.assert_allclose(backend.to_numpy(dx), [1 / 6], rtol=1e-6)


def test_tanh_is_finite_at_extremes(backend):
    x = np.array([-1e4, -50.0, 50.0, 1e4])
    y, cache = ops.tanh_forward(backend.asarray(x))
    np.testing.assert_array_equal(backend.to_numpy(y), [-1.0, -1.0, 1.0, 1.0])
    dx = ops.tanh_backward(backend.asarray(np.ones(4)), cache)
    assert np.all(np.isfinite(backend.to_numpy(dx)))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_kept_and_nothing_modified(backend, op, dtype):
    rng = np.random.default_rng(3)
    x_np = _away_from_kinks(rng, (2, 3)).astype(dtype)
    dy_np = rng.standard_normal((2, 3)).astype(dtype)
    x, dy = backend.asarray(x_np), backend.asarray(dy_np)
    forward, backward = pair(op)
    y, cache = forward(x)
    dx = backward(dy, cache)
    assert y.dtype == x.dtype and dx.dtype == x.dtype
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_np)


@pytest.mark.parametrize("op", OPS)
def test_bad_input(backend, op):
    forward, backward = pair(op)
    with pytest.raises(TypeError, match=f"{op}: argument 'x'"):
        forward(backend.asarray(np.arange(3)))
    with pytest.raises(TypeError, match=f"{op}: argument 'x'"):
        forward([1.0, 2.0])
    _, cache = forward(backend.asarray(np.zeros((2, 3))))
    with pytest.raises(ValueError, match=f"{op}_backward: argument 'dy' expected shape"):
        backward(backend.asarray(np.zeros((3, 2))), cache)
