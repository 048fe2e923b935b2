"""matmul, reshape, permute: forward against explicit loops, backward against finite differences
and the dot-product test, broadcasting of batch axes, dtypes, no mutation, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npattn.ops as ops
from npattn.gradcheck import check_adjoint, check_op

seeds = st.integers(0, 2**32 - 1)


def ref_matmul(a, b):
    """Loops over the broadcast batch index, then the textbook triple loop."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    y = np.zeros((*batch, m, n))
    for idx in itertools.product(*map(range, batch)):
        ia = tuple(0 if s == 1 else i for i, s in zip(idx[len(idx) - a.ndim + 2:], a.shape[:-2]))
        ib = tuple(0 if s == 1 else i for i, s in zip(idx[len(idx) - b.ndim + 2:], b.shape[:-2]))
        for i in range(m):
            for j in range(n):
                y[(*idx, i, j)] = sum(a[(*ia, i, l)] * b[(*ib, l, j)] for l in range(k))
    return y


@st.composite
def matmul_shapes(draw):
    """Two operand shapes whose batch axes broadcast (some size 1, some missing)."""
    m, k, n = (draw(st.integers(1, 3)) for _ in range(3))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    a_batch = [s if draw(st.booleans()) else 1 for s in batch]
    b_batch = [s if draw(st.booleans()) else 1 for s in batch]
    b_batch = b_batch[draw(st.integers(0, len(b_batch))):]  # drop some leading axes
    return (*a_batch, m, k), (*b_batch, k, n)


# ------------------------------------------------------------------------------------ matmul

@given(shapes=matmul_shapes(), seed=seeds)
def test_matmul_forward_matches_loops(backend, shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    y, _ = ops.matmul_forward(backend.asarray(a), backend.asarray(b))
    np.testing.assert_allclose(backend.to_numpy(y), ref_matmul(a, b), rtol=1e-12, atol=1e-14)


@given(shapes=matmul_shapes(), seed=seeds)
def test_matmul_backward_finite_differences_and_adjoint(backend, shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = (backend.asarray(rng.standard_normal(s)) for s in shapes)
    check_op(ops.matmul_forward, ops.matmul_backward, a, b, rng=rng).raise_if_failed()
    check_adjoint(ops.matmul_forward, ops.matmul_backward, a, b, rng=rng).raise_if_failed()


def test_matmul_broadcast_gradient_is_summed_by_hand(backend):
    # b (2, 2) is shared by the 3 batches of a: db = sum_batches a^T dy.
    rng = np.random.default_rng(1)
    a, b, dy = rng.standard_normal((3, 1, 2)), rng.standard_normal((2, 2)), rng.standard_normal((3, 1, 2))
    _, cache = ops.matmul_forward(backend.asarray(a), backend.asarray(b))
    da, db = ops.matmul_backward(backend.asarray(dy), cache)
    expected_db = sum(a[i].T @ dy[i] for i in range(3))
    np.testing.assert_allclose(backend.to_numpy(db), expected_db, rtol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(da), dy @ b.T, rtol=1e-14)


def test_matmul_bad_input(backend):
    a = backend.asarray(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="matmul: argument 'b' expected 4 rows"):
        ops.matmul_forward(a, backend.asarray(np.zeros((2, 3, 5))))
    with pytest.raises(ValueError, match="matmul: argument 'b' expected a shape that broadcasts"):
        ops.matmul_forward(a, backend.asarray(np.zeros((3, 4, 5))))
    with pytest.raises(ValueError, match="matmul: argument 'b' expected at least 2 dimensions"):
        ops.matmul_forward(a, backend.asarray(np.zeros(4)))
    with pytest.raises(TypeError, match="matmul: argument 'b' expected dtype .*float64"):
        ops.matmul_forward(a, backend.asarray(np.zeros((4, 5), dtype=np.float32)))
    with pytest.raises(TypeError, match="matmul: argument 'a'"):
        ops.matmul_forward(backend.asarray(np.zeros((2, 2), dtype=np.int64)), a)
    _, cache = ops.matmul_forward(a, backend.asarray(np.zeros((4, 5))))
    with pytest.raises(ValueError, match="matmul_backward: argument 'dy' expected shape"):
        ops.matmul_backward(backend.asarray(np.zeros((2, 3, 4))), cache)


# ---------------------------------------------------------------------------- reshape, permute

@st.composite
def reshape_cases(draw):
    """A shape, and a target of the same size (factors regrouped), maybe with one -1."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    factors = [f for n in shape for f in ([2, n // 2] if n % 2 == 0 else [n])]
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(factors) - 1)), max_size=3)))
    groups = [factors[i:j] for i, j in zip([0, *cuts], [*cuts, len(factors)]) if factors[i:j]]
    target = [int(np.prod(g)) for g in groups]
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return shape, tuple(target)


@given(case=reshape_cases(), seed=seeds)
def test_reshape_reads_row_major_and_goes_back(backend, case, seed):
    shape, target = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    y, cache = ops.reshape_forward(backend.asarray(x), target)
    y = backend.to_numpy(y)
    known = int(np.prod([n for n in target if n != -1]))
    assert y.shape == tuple(x.size // known if n == -1 else n for n in target)
    # Row-major order: the k-th entry of x (last index fastest) is the k-th entry of y.
    flat_x = [x[i] for i in itertools.product(*map(range, x.shape))]
    flat_y = [y[i] for i in itertools.product(*map(range, y.shape))]
    assert flat_x == flat_y
    dy = rng.standard_normal(y.shape)
    dx = backend.to_numpy(ops.reshape_backward(backend.asarray(dy), cache))
    assert dx.shape == shape
    assert [dx[i] for i in itertools.product(*map(range, shape))] == list(dy.reshape(-1))
    check_adjoint(ops.reshape_forward, ops.reshape_backward, backend.asarray(x), target,
                  rng=rng).raise_if_failed()


@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=4).map(tuple), data=st.data())
def test_permute_moves_axes_and_back(backend, shape, data):
    axes = tuple(data.draw(st.permutations(range(len(shape)))))
    signed = tuple(a - len(shape) if data.draw(st.booleans()) else a for a in axes)
    rng = np.random.default_rng(data.draw(seeds))
    x = rng.standard_normal(shape)
    y, cache = ops.permute_forward(backend.asarray(x), signed)
    y = backend.to_numpy(y)
    assert y.shape == tuple(shape[a] for a in axes)
    for idx in itertools.product(*map(range, y.shape)):
        src = [0] * len(shape)
        for i, a in enumerate(axes):
            src[a] = idx[i]
        assert y[idx] == x[tuple(src)]
    check_op(ops.permute_forward, ops.permute_backward, backend.asarray(x), signed,
             rng=rng).raise_if_failed()
    check_adjoint(ops.permute_forward, ops.permute_backward, backend.asarray(x), signed,
                  rng=rng).raise_if_failed()


def test_reshape_and_permute_bad_input(backend):
    x = backend.asarray(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="reshape: argument 'shape' expected a shape of size 24"):
        ops.reshape_forward(x, (5, -1))
    with pytest.raises(ValueError, match="reshape: argument 'shape' expected a shape of size 24"):
        ops.reshape_forward(x, (2, 3, 5))
    with pytest.raises(ValueError, match="at most one -1"):
        ops.reshape_forward(x, (-1, -1))
    with pytest.raises(TypeError, match="reshape: argument 'shape' expected a tuple of ints"):
        ops.reshape_forward(x, (2.0, 12))
    with pytest.raises(ValueError, match="permute: argument 'axes' expected a permutation"):
        ops.permute_forward(x, (0, 1, 1))
    with pytest.raises(ValueError, match="permute: argument 'axes' expected an axis in"):
        ops.permute_forward(x, (0, 1, 3))
    _, cache = ops.reshape_forward(x, (6, 4))
    with pytest.raises(ValueError, match="reshape_backward: argument 'dy' expected shape"):
        ops.reshape_backward(x, cache)
    _, cache = ops.permute_forward(x, (2, 0, 1))
    with pytest.raises(ValueError, match="permute_backward: argument 'dy' expected shape"):
        ops.permute_backward(x, cache)


# ------------------------------------------------------------------------------ all three

CALLS = {
    "matmul": lambda be, a, b: ops.matmul_forward(a, b),
    "reshape": lambda be, a, b: ops.reshape_forward(a, (-1,)),
    "permute": lambda be, a, b: ops.permute_forward(a, (2, 0, 1)),
}


@pytest.mark.parametrize("op", list(CALLS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_kept_and_nothing_modified(backend, op, dtype):
    rng = np.random.default_rng(2)
    a_np, b_np = rng.standard_normal((2, 3, 3)).astype(dtype), rng.standard_normal((3, 3)).astype(dtype)
    a, b = backend.asarray(a_np), backend.asarray(b_np)
    y, cache = CALLS[op](backend, a, b)
    dy_np = rng.standard_normal(tuple(y.shape)).astype(dtype)
    dy = backend.asarray(dy_np)
    grads = getattr(ops, f"{op}_backward")(dy, cache)
    assert y.dtype == a.dtype
    assert all(g.dtype == a.dtype for g in (grads if isinstance(grads, tuple) else (grads,)))
    for arr, ref in [(a, a_np), (b, b_np), (dy, dy_np)]:
        np.testing.assert_array_equal(backend.to_numpy(arr), ref)
