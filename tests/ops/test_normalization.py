"""batch_norm2d and layer_norm: forward against explicit loops, PyTorch's running-average update
(momentum, unbiased variance), evaluation mode, gradients through the batch statistics by finite
differences, dtypes, no mutation, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npattn.ops as ops
from npattn.gradcheck import check_adjoint, check_op

seeds = st.integers(0, 2**32 - 1)
bn_shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
                      st.integers(1, 3)).filter(lambda s: s[0] * s[2] * s[3] >= 2)


def ref_batch_norm(x, w, b, rm, rv, training, momentum, eps):
    """Channel by channel, statistics by explicit sums; returns y and the new running stats."""
    n_, c_, h_, w_ = x.shape
    y, new_rm, new_rv = np.zeros_like(x), rm.copy(), rv.copy()
    for c in range(c_):
        values = [x[n, c, i, j] for n in range(n_) for i in range(h_) for j in range(w_)]
        m = len(values)
        mean = sum(values) / m
        biased = sum((v - mean) ** 2 for v in values) / m
        if training:
            new_rm[c] = (1 - momentum) * rm[c] + momentum * mean
            new_rv[c] = (1 - momentum) * rv[c] + momentum * biased * m / (m - 1)
        else:
            mean, biased = rm[c], rv[c]
        for n, i, j in itertools.product(range(n_), range(h_), range(w_)):
            y[n, c, i, j] = w[c] * (x[n, c, i, j] - mean) / math.sqrt(biased + eps) + b[c]
    return y, new_rm, new_rv


def bn_inputs(rng, shape):
    c = shape[1]
    return (rng.standard_normal(shape), 1 + 0.5 * rng.standard_normal(c), rng.standard_normal(c),
            0.3 * rng.standard_normal(c), 0.5 + rng.random(c))


# ------------------------------------------------------------------------------- batch_norm2d

@given(shape=bn_shapes, training=st.booleans(), momentum=st.floats(0.0, 1.0),
       eps=st.sampled_from([1e-5, 1e-3, 0.5]), seed=seeds)
def test_batch_norm_forward_and_running_stats_match_loops(backend, shape, training, momentum,
                                                          eps, seed):
    x, w, b, rm, rv = bn_inputs(np.random.default_rng(seed), shape)
    y, cache = ops.batch_norm2d_forward(*map(backend.asarray, (x, w, b, rm, rv)),
                                        training=training, momentum=momentum, eps=eps)
    y_ref, rm_ref, rv_ref = ref_batch_norm(x, w, b, rm, rv, training, momentum, eps)
    np.testing.assert_allclose(backend.to_numpy(y), y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(cache.running_mean), rm_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(cache.running_var), rv_ref, rtol=1e-12, atol=1e-14)


def test_running_stats_update_by_hand(backend):
    # One channel, values 1, 2, 3, 6: mean 3, biased variance 3.5, unbiased 14/3.
    x = np.array([1.0, 2.0, 3.0, 6.0]).reshape(2, 1, 1, 2)
    rm, rv = np.array([1.0]), np.array([2.0])
    y, cache = ops.batch_norm2d_forward(backend.asarray(x), None, None, backend.asarray(rm),
                                        backend.asarray(rv))  # PyTorch's defaults: 0.1, 1e-5
    np.testing.assert_allclose(backend.to_numpy(cache.running_mean), [0.9 * 1 + 0.1 * 3], rtol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(cache.running_var), [0.9 * 2 + 0.1 * 14 / 3],
                               rtol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(y).reshape(-1),
                               (np.array([1, 2, 3, 6]) - 3) / np.sqrt(3.5 + 1e-5), rtol=1e-14)


def test_eval_mode_uses_running_stats_not_the_batch(backend):
    rng = np.random.default_rng(4)
    x, w, b, rm, rv = bn_inputs(rng, (3, 2, 2, 2))
    args = [backend.asarray(v) for v in (w, b, rm, rv)]
    y_all, cache = ops.batch_norm2d_forward(backend.asarray(x), *args, training=False)
    y_one, _ = ops.batch_norm2d_forward(backend.asarray(x[1:2]), *args, training=False)
    np.testing.assert_allclose(backend.to_numpy(y_all)[1:2], backend.to_numpy(y_one), rtol=1e-15)
    expected = (w[None, :, None, None] * (x - rm[None, :, None, None])
                / np.sqrt(rv[None, :, None, None] + 1e-5) + b[None, :, None, None])
    np.testing.assert_allclose(backend.to_numpy(y_all), expected, rtol=1e-13)
    # The running statistics are passed through unchanged.
    np.testing.assert_array_equal(backend.to_numpy(cache.running_mean), rm)
    np.testing.assert_array_equal(backend.to_numpy(cache.running_var), rv)


@given(shape=bn_shapes, affine=st.booleans(), seed=seeds)
def test_batch_norm_training_gradients_through_batch_statistics(backend, shape, affine, seed):
    rng = np.random.default_rng(seed)
    x, w, b, rm, rv = bn_inputs(rng, shape)
    w, b = (backend.asarray(w), backend.asarray(b)) if affine else (None, None)
    check_op(ops.batch_norm2d_forward, ops.batch_norm2d_backward, backend.asarray(x), w, b,
             backend.asarray(rm), backend.asarray(rv), True, 0.1, 1e-3,
             inputs=("x", "weight", "bias") if affine else "x", rng=rng).raise_if_failed()


@given(shape=bn_shapes, seed=seeds)
def test_batch_norm_eval_gradients_and_adjoint(backend, shape, seed):
    rng = np.random.default_rng(seed)
    x, w, b, rm, rv = (backend.asarray(v) for v in bn_inputs(rng, shape))
    args = (x, w, b, rm, rv, False)
    check_op(ops.batch_norm2d_forward, ops.batch_norm2d_backward, *args,
             inputs=("x", "weight", "bias"), rng=rng).raise_if_failed()
    # Affine in x and in weight (the running statistics are constants).
    check_adjoint(ops.batch_norm2d_forward, ops.batch_norm2d_backward, *args,
                  inputs=("x", "weight"), rng=rng).raise_if_failed()


def test_batch_norm_absent_parameters_get_none_and_no_running_stats(backend):
    x = backend.asarray(np.random.default_rng(5).standard_normal((2, 3, 2, 2)))
    y, cache = ops.batch_norm2d_forward(x)
    assert cache.running_mean is None and cache.running_var is None
    dx, dw, db = ops.batch_norm2d_backward(backend.asarray(np.ones((2, 3, 2, 2))), cache)
    assert dw is None and db is None
    # A constant dy does not move a normalised output: dx is zero.
    np.testing.assert_allclose(backend.to_numpy(dx), 0.0, atol=1e-14)
    # Each channel of y has mean 0 and biased variance 1 (up to eps).
    yn = backend.to_numpy(y)
    np.testing.assert_allclose(yn.mean(axis=(0, 2, 3)), 0.0, atol=1e-14)
    np.testing.assert_allclose(yn.var(axis=(0, 2, 3)), 1.0, rtol=1e-3)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("blocks", ["one per sample", "one channel each, two threads"])
def test_blocked_batch_norm_agrees_with_the_clear_one(monkeypatch, training, affine, blocks):
    """NumPy's blocked batch norm (sums per sample and channel, xhat recomputed in the backward)
    against the clear whole-array formulas: y, the running statistics and all three gradients."""
    from npattn import backend as be
    from npattn.ops import normalization as norm
    rng = np.random.default_rng(3)
    x, dy = 3.0 + rng.standard_normal((3, 4, 5, 2)), rng.standard_normal((3, 4, 5, 2))
    w, b = (1.0 + 0.5 * rng.standard_normal(4), rng.standard_normal(4)) if affine else (None, None)
    rm, rv = rng.standard_normal(4), 0.5 + rng.random(4)
    kwargs = dict(running_mean=rm, running_var=rv, training=training, momentum=0.3)

    def run():
        y, cache = ops.batch_norm2d_forward(x, w, b, **kwargs)
        return (y, cache.running_mean, cache.running_var, *ops.batch_norm2d_backward(dy, cache))

    monkeypatch.setattr(norm, "BLOCKED_BATCH_NORM", False)
    clear = run()
    monkeypatch.setattr(norm, "BLOCKED_BATCH_NORM", True)
    if blocks != "one per sample":
        monkeypatch.setattr(be, "ELEMENTWISE_BLOCK_BYTES", 1)
        monkeypatch.setattr(be, "PARALLEL_MIN_ELEMENTS", 0)
    x0, dy0 = x.copy(), dy.copy()
    previous = be.set_threads(1 if blocks == "one per sample" else 2)
    try:
        blocked = run()
    finally:
        be.set_threads(previous)
    for got, want in zip(blocked, clear):
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(x, x0)                                 # inputs untouched
    np.testing.assert_array_equal(dy, dy0)


def test_batch_norm_bad_input(backend):
    x = backend.asarray(np.zeros((2, 3, 2, 2)))
    c3 = backend.asarray(np.ones(3))
    with pytest.raises(ValueError, match="batch_norm2d: argument 'x' expected 4 dimensions"):
        ops.batch_norm2d_forward(backend.asarray(np.zeros((2, 3, 4))))
    with pytest.raises(ValueError, match="batch_norm2d: argument 'weight' expected shape \\(3,\\)"):
        ops.batch_norm2d_forward(x, backend.asarray(np.ones(2)))
    with pytest.raises(ValueError, match="argument 'x' expected more than 1 value per channel"):
        ops.batch_norm2d_forward(backend.asarray(np.zeros((1, 3, 1, 1))))
    with pytest.raises(ValueError, match="argument 'running_mean' expected the running statistics"):
        ops.batch_norm2d_forward(x, training=False)
    with pytest.raises(ValueError, match="argument 'running_var' expected an array"):
        ops.batch_norm2d_forward(x, None, None, c3, None)
    with pytest.raises(ValueError, match="argument 'momentum' expected a float in \\[0, 1\\]"):
        ops.batch_norm2d_forward(x, momentum=1.5)
    with pytest.raises(TypeError, match="argument 'momentum' expected a float"):
        ops.batch_norm2d_forward(x, momentum=None)
    with pytest.raises(ValueError, match="argument 'eps' expected a float > 0"):
        ops.batch_norm2d_forward(x, eps=0.0)
    with pytest.raises(TypeError, match="argument 'training' expected a bool"):
        ops.batch_norm2d_forward(x, training=1)
    with pytest.raises(TypeError, match="argument 'bias' expected dtype"):
        ops.batch_norm2d_forward(x, c3, backend.asarray(np.ones(3, dtype=np.float32)))
    _, cache = ops.batch_norm2d_forward(x)
    with pytest.raises(ValueError, match="batch_norm2d_backward: argument 'dy' expected shape"):
        ops.batch_norm2d_backward(backend.asarray(np.zeros((2, 3, 2, 1))), cache)


# --------------------------------------------------------------------------------- layer_norm

@st.composite
def ln_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=4)))
    k = draw(st.integers(1, len(shape)))
    normalized = shape[len(shape) - k:]
    return shape, normalized if k > 1 or draw(st.booleans()) else normalized[0]


def ref_layer_norm(x, k, w, b, eps):
    """Sample by sample over the leading index, statistics over the trailing k axes by sums."""
    lead = x.shape[:x.ndim - k]
    y = np.zeros_like(x)
    for idx in itertools.product(*map(range, lead)):
        values = list(x[idx].reshape(-1))
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / len(values)
        y[idx] = w * (x[idx] - mean) / math.sqrt(var + eps) + b
    return y


@given(case=ln_cases(), affine=st.booleans(), seed=seeds)
def test_layer_norm_forward_and_gradients(backend, case, affine, seed):
    shape, normalized = case
    k = 1 if isinstance(normalized, int) else len(normalized)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    w, b = 1 + 0.5 * rng.standard_normal(shape[len(shape) - k:]), rng.standard_normal(shape[len(shape) - k:])
    args = (backend.asarray(x), normalized) + ((backend.asarray(w), backend.asarray(b)) if affine
                                               else (None, None)) + (1e-3,)
    y, _ = ops.layer_norm_forward(*args)
    expected = ref_layer_norm(x, k, w if affine else 1.0, b if affine else 0.0, 1e-3)
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-10, atol=1e-12)
    check_op(ops.layer_norm_forward, ops.layer_norm_backward, *args, rng=rng).raise_if_failed()


def test_layer_norm_gcnet_shape(backend):
    # GCNet normalises a (N, C, 1, 1) bottleneck over (C, 1, 1), per sample.
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((2, 4, 1, 1)), rng.standard_normal((4, 1, 1)), rng.standard_normal((4, 1, 1))
    y, cache = ops.layer_norm_forward(*map(backend.asarray, (x,)), (4, 1, 1), backend.asarray(w),
                                      backend.asarray(b))
    np.testing.assert_allclose(backend.to_numpy(y), ref_layer_norm(x, 3, w, b, 1e-5), rtol=1e-12)
    dx, none, dw, db = ops.layer_norm_backward(backend.asarray(np.ones((2, 4, 1, 1))), cache)
    assert none is None and tuple(dw.shape) == (4, 1, 1) and tuple(db.shape) == (4, 1, 1)


def test_layer_norm_bad_input(backend):
    x = backend.asarray(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="layer_norm: argument 'x' expected a shape ending in"):
        ops.layer_norm_forward(x, (3,))
    with pytest.raises(TypeError, match="argument 'normalized_shape' expected an int or a non-empty"):
        ops.layer_norm_forward(x, ())
    with pytest.raises(ValueError, match="layer_norm: argument 'weight' expected shape \\(3, 4\\)"):
        ops.layer_norm_forward(x, (3, 4), backend.asarray(np.ones(4)))
    _, cache = ops.layer_norm_forward(x, 4)
    with pytest.raises(ValueError, match="layer_norm_backward: argument 'dy' expected shape"):
        ops.layer_norm_backward(backend.asarray(np.zeros((2, 3))), cache)


# ------------------------------------------------------------------------------------ both

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["batch_norm2d", "layer_norm"])
def test_dtype_kept_and_nothing_modified(backend, op, dtype):
    rng = np.random.default_rng(7)
    host = [v.astype(dtype) for v in bn_inputs(rng, (2, 3, 2, 2))]
    dy_np = rng.standard_normal((2, 3, 2, 2)).astype(dtype)
    arrays = [backend.asarray(v) for v in host]
    dy = backend.asarray(dy_np)
    if op == "batch_norm2d":
        y, cache = ops.batch_norm2d_forward(*arrays)
        extra = [cache.running_mean, cache.running_var]
    else:
        w, b = (backend.asarray(np.ones((2, 2), dtype=dtype)) for _ in range(2))
        y, cache = ops.layer_norm_forward(arrays[0], (2, 2), w, b)
        extra = []
    grads = getattr(ops, f"{op}_backward")(dy, cache)
    assert all(a.dtype == arrays[0].dtype for a in [y, *grads, *extra] if a is not None)
    for arr, ref in [*zip(arrays, host), (dy, dy_np)]:
        np.testing.assert_array_equal(backend.to_numpy(arr), ref)
