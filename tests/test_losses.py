"""Losses: forward against explicit loops (and SciPy), backward against finite differences."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import log_expit, logsumexp

from npattn import losses as L

# The backend fixture only picks a library, so sharing it across Hypothesis examples is safe.
fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])
REDUCTIONS = ["mean", "sum", "none"]


# ---------------------------------------------------------------------------------- references

def reduce_ref(per_element: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "mean":
        return np.asarray(per_element.mean())
    if reduction == "sum":
        return np.asarray(per_element.sum())
    return per_element


def cross_entropy_ref(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.array([logsumexp(z[n]) - z[n, t[n]] for n in range(z.shape[0])])


def mse_ref(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for i in np.ndindex(x.shape):
        out[i] = (x[i] - t[i]) ** 2
    return out


def bce_ref(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = np.empty_like(p)
    for i in np.ndindex(p.shape):
        log_p = max(math.log(p[i]), -100.0) if p[i] > 0 else -100.0
        log_q = max(math.log(1.0 - p[i]), -100.0) if p[i] < 1 else -100.0
        out[i] = -(t[i] * log_p + (1.0 - t[i]) * log_q)
    return out


def bce_with_logits_ref(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    return -(t * log_expit(z) + (1.0 - t) * log_expit(-z))


def draw_input(name: str, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Inputs away from the edges: probabilities in [0.05, 0.95] for ``bce``."""
    if name == "bce":
        return rng.uniform(0.05, 0.95, shape)
    return 2.0 * rng.standard_normal(shape)


ELEMENTWISE = {
    "mse": (L.mse_forward, L.mse_backward, mse_ref),
    "bce": (L.bce_forward, L.bce_backward, bce_ref),
    "bce_with_logits": (L.bce_with_logits_forward, L.bce_with_logits_backward, bce_with_logits_ref),
}


# --------------------------------------------------------------------------- forward references

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_forward_matches_logsumexp(backend, reduction):
    rng = np.random.default_rng(1)
    z, t = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    y, _ = L.softmax_cross_entropy_forward(backend.asarray(z), backend.asarray(t), reduction)
    np.testing.assert_allclose(backend.to_numpy(y), reduce_ref(cross_entropy_ref(z, t), reduction),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_forward_matches_loops(backend, name, reduction):
    forward, _, reference = ELEMENTWISE[name]
    rng = np.random.default_rng(2)
    x, t = draw_input(name, rng, (2, 3, 2)), rng.uniform(0.0, 1.0, (2, 3, 2))
    y, _ = forward(backend.asarray(x), backend.asarray(t), reduction)
    np.testing.assert_allclose(backend.to_numpy(y), reduce_ref(reference(x, t), reduction),
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- gradients (finite diff.)

@fixture_ok
@given(n=st.integers(1, 4), k=st.integers(2, 5), scale=st.sampled_from([1.0, 30.0, 1e3]),
       reduction=st.sampled_from(REDUCTIONS), seed=st.integers(0, 2**16))
def test_cross_entropy_gradcheck(backend, n, k, scale, reduction, seed):
    from npattn.gradcheck import check_op
    rng = np.random.default_rng(seed)
    z, t = scale * rng.standard_normal((n, k)), rng.integers(0, k, n)
    check_op(L.softmax_cross_entropy_forward, L.softmax_cross_entropy_backward,
             backend.asarray(z), backend.asarray(t), reduction=reduction,
             rng=np.random.default_rng(seed + 1)).raise_if_failed()


@fixture_ok
@given(name=st.sampled_from(sorted(ELEMENTWISE)), shape=st.lists(st.integers(1, 3), min_size=1,
       max_size=3).map(tuple), reduction=st.sampled_from(REDUCTIONS), seed=st.integers(0, 2**16))
def test_elementwise_gradcheck(backend, name, shape, reduction, seed):
    """Gradients of both the input and the target."""
    from npattn.gradcheck import check_op
    forward, backward, _ = ELEMENTWISE[name]
    rng = np.random.default_rng(seed)
    x, t = draw_input(name, rng, shape), rng.uniform(0.0, 1.0, shape)
    check_op(forward, backward, backend.asarray(x), backend.asarray(t), reduction=reduction,
             rng=np.random.default_rng(seed + 1)).raise_if_failed()


# ------------------------------------------------------------------------------ large logits

def test_cross_entropy_large_logits_exact(backend):
    """Logits of 1e4: the loss is the margin, the gradient softmax - onehot, all finite."""
    z = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0]])
    t = np.array([2, 1])
    y, cache = L.softmax_cross_entropy_forward(backend.asarray(z), backend.asarray(t), "none")
    np.testing.assert_allclose(backend.to_numpy(y), [2e4, 0.0], atol=1e-9)
    dz = L.softmax_cross_entropy_backward(backend.asarray(np.array([1.0, 2.0])), cache)
    np.testing.assert_allclose(backend.to_numpy(dz), [[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]], atol=1e-12)


def test_cross_entropy_large_logits_float32(backend):
    z = np.array([[3e4, -3e4, 1.0]], dtype=np.float32)
    y, cache = L.softmax_cross_entropy_forward(backend.asarray(z), backend.asarray(np.array([1])))
    dz = L.softmax_cross_entropy_backward(backend.asarray(np.float32(1.0)), cache)
    assert np.isfinite(backend.to_numpy(y)) and np.isfinite(backend.to_numpy(dz)).all()
    np.testing.assert_allclose(backend.to_numpy(y), 6e4, rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(dz), [[1.0, -1.0, 0.0]], atol=1e-6)


def test_bce_with_logits_large_logits(backend):
    z, t = np.array([1e4, -1e4, 1e4, -1e4]), np.array([0.0, 1.0, 1.0, 0.0])
    y, cache = L.bce_with_logits_forward(backend.asarray(z), backend.asarray(t), "none")
    np.testing.assert_allclose(backend.to_numpy(y), [1e4, 1e4, 0.0, 0.0], atol=1e-9)
    dz, dt = L.bce_with_logits_backward(backend.asarray(np.ones(4)), cache)
    np.testing.assert_allclose(backend.to_numpy(dz), [1.0, -1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(dt), -z)


def test_bce_at_zero_and_one_is_finite_and_quiet(backend):
    """log is clamped at -100 (PyTorch): p = 0 or 1 costs at most 100, with no warning."""
    p, t = np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, cache = L.bce_forward(backend.asarray(p), backend.asarray(t), "none")
        dp, dt = L.bce_backward(backend.asarray(np.ones(4)), cache)
    np.testing.assert_allclose(backend.to_numpy(y), [0.0, 0.0, 100.0, 100.0])
    np.testing.assert_allclose(backend.to_numpy(dp), [0.0, 0.0, -1e12, 1e12])
    np.testing.assert_allclose(backend.to_numpy(dt), [100.0, -100.0, 100.0, -100.0])


def test_bce_chain_through_sigmoid_equals_bce_with_logits(backend):
    """bce(sigmoid(z)) and bce_with_logits(z) agree in value and gradient for moderate z."""
    from npattn.ops import sigmoid_backward, sigmoid_forward
    rng = np.random.default_rng(3)
    z, t = backend.asarray(3.0 * rng.standard_normal((3, 4))), backend.asarray(rng.uniform(0, 1, (3, 4)))
    p, s_cache = sigmoid_forward(z)
    y1, c1 = L.bce_forward(p, t)
    y2, c2 = L.bce_with_logits_forward(z, t)
    one = backend.asarray(np.asarray(1.0))
    dz1 = sigmoid_backward(L.bce_backward(one, c1)[0], s_cache)
    np.testing.assert_allclose(backend.to_numpy(y1), backend.to_numpy(y2), rtol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(dz1), backend.to_numpy(L.bce_with_logits_backward(one, c2)[0]),
                               rtol=1e-8, atol=1e-12)


# --------------------------------------------------------------------- dtype and no mutation

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["cross_entropy"] + sorted(ELEMENTWISE))
def test_dtype_kept_and_inputs_untouched(backend, name, dtype):
    rng = np.random.default_rng(4)
    if name == "cross_entropy":
        forward, backward = L.softmax_cross_entropy_forward, L.softmax_cross_entropy_backward
        x, t = rng.standard_normal((3, 4)).astype(dtype), rng.integers(0, 4, 3)
    else:
        forward, backward, _ = ELEMENTWISE[name]
        x, t = draw_input(name, rng, (3, 4)).astype(dtype), rng.uniform(0, 1, (3, 4)).astype(dtype)
    dy = np.asarray(rng.standard_normal(), dtype=dtype)
    xb, tb, dyb = backend.asarray(x), backend.asarray(t), backend.asarray(dy)
    y, cache = forward(xb, tb)
    grads = backward(dyb, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert y.dtype == backend.dtype(dtype) and all(g.dtype == backend.dtype(dtype) for g in grads)
    for before, after in ((x, xb), (t, tb), (dy, dyb)):
        np.testing.assert_array_equal(backend.to_numpy(after), before)


# -------------------------------------------------------------------------------- bad input

def test_cross_entropy_bad_input(backend):
    z = backend.asarray(np.zeros((3, 4)))
    with pytest.raises(TypeError, match="softmax_cross_entropy: argument 'target' expected an integer"):
        L.softmax_cross_entropy_forward(z, backend.asarray(np.zeros(3)))
    with pytest.raises(ValueError, match=r"argument 'target' expected labels in \[0, 4\)"):
        L.softmax_cross_entropy_forward(z, backend.asarray(np.array([0, 4, 1])))
    with pytest.raises(ValueError, match=r"argument 'target' expected shape \(3,\)"):
        L.softmax_cross_entropy_forward(z, backend.asarray(np.array([0, 1])))
    with pytest.raises(ValueError, match="argument 'logits' expected 2 dimensions"):
        L.softmax_cross_entropy_forward(backend.asarray(np.zeros(3)), backend.asarray(np.array([0, 1, 2])))
    with pytest.raises(ValueError, match="argument 'reduction' expected one of"):
        L.softmax_cross_entropy_forward(z, backend.asarray(np.array([0, 1, 2])), "avg")


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_bad_input(backend, name):
    forward, backward, _ = ELEMENTWISE[name]
    x = backend.asarray(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="argument 'target' expected the shape"):
        forward(x, backend.asarray(np.full((3, 2), 0.5)))
    with pytest.raises(TypeError, match=r"argument 'target' expected dtype \S*float64"):
        forward(x, backend.asarray(np.full((2, 3), 0.5, dtype=np.float32)))
    _, cache = forward(x, backend.asarray(np.full((2, 3), 0.5)))
    with pytest.raises(ValueError, match=r"argument 'dy' expected shape \(\)"):
        backward(backend.asarray(np.ones((2, 3))), cache)


def test_bce_rejects_values_outside_unit_interval(backend):
    with pytest.raises(ValueError, match=r"bce: argument 'p' expected probabilities in \[0, 1\]"):
        L.bce_forward(backend.asarray(np.array([0.5, 1.5])), backend.asarray(np.array([0.0, 1.0])))
