"""mean_h and mean_w (strip pooling): forward against explicit loops, the dot-product test and
finite differences, the backward spread by hand, dtypes, no mutation, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npattn.ops as ops
from npattn.gradcheck import check_adjoint, check_op

OPS = ["mean_h", "mean_w"]
shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))
seeds = st.integers(0, 2**32 - 1)


def pair(op):
    return getattr(ops, f"{op}_forward"), getattr(ops, f"{op}_backward")


def ref_strip_means(x):
    """Both strip means by explicit sums: (N, C, 1, W) over H and (N, C, H, 1) over W."""
    n_, c_, h_, w_ = x.shape
    over_h, over_w = np.zeros((n_, c_, 1, w_)), np.zeros((n_, c_, h_, 1))
    for n in range(n_):
        for c in range(c_):
            for j in range(w_):
                over_h[n, c, 0, j] = sum(x[n, c, i, j] for i in range(h_)) / h_
            for i in range(h_):
                over_w[n, c, i, 0] = sum(x[n, c, i, j] for j in range(w_)) / w_
    return {"mean_h": over_h, "mean_w": over_w}


@given(shape=shapes, seed=seeds)
def test_forward_matches_loops(backend, shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    expected = ref_strip_means(x)
    for op in OPS:
        y, _ = pair(op)[0](backend.asarray(x))
        np.testing.assert_allclose(backend.to_numpy(y), expected[op], rtol=1e-12, atol=1e-14,
                                   err_msg=op)


@given(shape=shapes, seed=seeds)
def test_backward_adjoint_and_finite_differences(backend, shape, seed):
    rng = np.random.default_rng(seed)
    x = backend.asarray(rng.standard_normal(shape))
    for op in OPS:
        check_adjoint(*pair(op), x, rng=rng).raise_if_failed()
        check_op(*pair(op), x, rng=rng).raise_if_failed()


def test_backward_spreads_evenly_by_hand(backend):
    x = backend.asarray(np.zeros((1, 1, 2, 4)))
    _, cache = ops.mean_h_forward(x)
    dx = ops.mean_h_backward(backend.asarray(np.array([[[[1.0, 2.0, 3.0, 4.0]]]])), cache)
    np.testing.assert_array_equal(backend.to_numpy(dx)[0, 0], [[0.5, 1.0, 1.5, 2.0]] * 2)
    _, cache = ops.mean_w_forward(x)
    dx = ops.mean_w_backward(backend.asarray(np.array([[[[4.0], [8.0]]]])), cache)
    np.testing.assert_array_equal(backend.to_numpy(dx)[0, 0], [[1.0] * 4, [2.0] * 4])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_kept_nothing_modified_and_gradient_writable(backend, op, dtype):
    rng = np.random.default_rng(10)
    x_np = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    x = backend.asarray(x_np)
    forward, backward = pair(op)
    y, cache = forward(x)
    dy_np = rng.standard_normal(tuple(y.shape)).astype(dtype)
    dy = backend.asarray(dy_np)
    dx = backward(dy, cache)
    assert y.dtype == x.dtype and dx.dtype == x.dtype and tuple(dx.shape) == x_np.shape
    dx[0, 0, 0, 0] = 1.0  # a fresh array, not a read-only broadcast view
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_np)


@pytest.mark.parametrize("op", OPS)
def test_bad_input(backend, op):
    forward, backward = pair(op)
    with pytest.raises(ValueError, match=f"{op}: argument 'x' expected 4 dimensions"):
        forward(backend.asarray(np.zeros((3, 4, 5))))
    with pytest.raises(TypeError, match=f"{op}: argument 'x' expected a real floating"):
        forward(backend.asarray(np.zeros((1, 1, 2, 2), dtype=np.int32)))
    _, cache = forward(backend.asarray(np.zeros((1, 2, 3, 4))))
    with pytest.raises(ValueError, match=f"{op}_backward: argument 'dy' expected shape"):
        backward(backend.asarray(np.zeros((1, 2, 3, 4))), cache)


@pytest.mark.parametrize("op", OPS)
def test_backward_add_adds_the_backward_in_place(backend, op):
    rng = np.random.default_rng(11)
    x = backend.asarray(rng.standard_normal((2, 3, 4, 5)))
    forward, backward = pair(op)
    y, cache = forward(x)
    dy = backend.asarray(rng.standard_normal(tuple(y.shape)))
    base = rng.standard_normal((2, 3, 4, 5))
    dx = backend.asarray(base.copy())
    out = getattr(ops, f"{op}_backward_add")(dx, dy, cache)
    assert out is dx
    np.testing.assert_allclose(backend.to_numpy(dx), base + backend.to_numpy(backward(dy, cache)),
                               rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="dx"):
        getattr(ops, f"{op}_backward_add")(backend.asarray(base[:, :2]), dy, cache)
