"""mul with broadcasting and unbroadcast: loops, finite differences, the dot-product test,
bad input, no mutation, dtypes and NaN."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npattn.gradcheck import check_adjoint, check_op
from npattn.ops import mul_backward, mul_forward
from npattn.ops.elementwise import broadcast_shape, unbroadcast



@st.composite
def broadcast_pairs(draw):
    """Two shapes that broadcast: each drops some leading axes of a common shape and sets
    some of the others to 1."""
    full = draw(st.lists(st.integers(2, 3), min_size=0, max_size=4))

    def operand():
        drop = draw(st.integers(0, len(full)))
        return tuple(1 if draw(st.booleans()) else n for n in full[drop:])

    return operand(), operand(), draw(st.integers(0, 2**32 - 1))


def source_index(out_index, shape):
    """The entry of an operand of ``shape`` that output entry ``out_index`` reads."""
    tail = out_index[len(out_index) - len(shape):]
    return tuple(0 if n == 1 else i for i, n in zip(tail, shape))


def ref_mul(a, b):
    out_shape = tuple(max(m, n) for m, n in zip((1,) * (len(b.shape) - len(a.shape)) + a.shape,
                                                (1,) * (len(a.shape) - len(b.shape)) + b.shape))
    y = np.zeros(out_shape)
    for idx in np.ndindex(out_shape):
        y[idx] = a[source_index(idx, a.shape)] * b[source_index(idx, b.shape)]
    return y


def ref_unbroadcast(g, shape):
    out = np.zeros(shape)
    for idx in np.ndindex(g.shape):
        out[source_index(idx, shape)] += g[idx]
    return out


@given(case=broadcast_pairs())
def test_mul_and_its_gradients_match_loops(backend, case):
    a_shape, b_shape, seed = case
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    y, cache = mul_forward(backend.asarray(a), backend.asarray(b))
    y_ref = ref_mul(a, b)
    np.testing.assert_allclose(backend.to_numpy(y), y_ref, rtol=1e-15)
    dy = rng.standard_normal(y_ref.shape)
    da, db = mul_backward(backend.asarray(dy), cache)
    da_ref = ref_unbroadcast(dy * np.broadcast_to(b, y_ref.shape), a_shape)
    db_ref = ref_unbroadcast(dy * np.broadcast_to(a, y_ref.shape), b_shape)
    np.testing.assert_allclose(backend.to_numpy(da), da_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(db), db_ref, rtol=1e-12, atol=1e-14)


@given(case=broadcast_pairs())
def test_unbroadcast_matches_loops(backend, case):
    a_shape, b_shape, seed = case
    out_shape = broadcast_shape("test", a_shape, b_shape)
    g = np.random.default_rng(seed).standard_normal(out_shape)
    for shape in (a_shape, b_shape):
        summed = unbroadcast(backend.asarray(g), shape)
        assert tuple(summed.shape) == shape
        np.testing.assert_allclose(backend.to_numpy(summed), ref_unbroadcast(g, shape),
                                   rtol=1e-12, atol=1e-14)


@given(case=broadcast_pairs())
def test_mul_gradients_match_finite_differences_and_adjoint(backend, case):
    a_shape, b_shape, seed = case
    rng = np.random.default_rng(seed)
    a = backend.asarray(rng.standard_normal(a_shape))
    b = backend.asarray(rng.standard_normal(b_shape))
    check_op(mul_forward, mul_backward, a, b, rng=rng).raise_if_failed()
    check_adjoint(mul_forward, mul_backward, a, b, rng=rng).raise_if_failed()


def test_mul_float32_gradients_match_float64_finite_differences(backend):
    rng = np.random.default_rng(1)
    a = backend.asarray(rng.standard_normal((2, 3, 4)), dtype="float32")
    b = backend.asarray(rng.standard_normal((3, 1)), dtype="float32")
    check_op(mul_forward, mul_backward, a, b, rng=rng).raise_if_failed()


@pytest.mark.parametrize("b_shape", [(2, 3, 1, 1), (2, 1, 1, 1), (1, 1, 1, 1), (2, 3, 4, 1),
                                     (2, 1, 4, 5), (3, 1, 1)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scale_gradients_match_loops(backend, b_shape, dtype):
    # Per-channel (and coarser) scales take the vecdot path; the others the product and sum.
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal(b_shape)
    dy = rng.standard_normal((2, 3, 4, 5))
    _, cache = mul_forward(backend.asarray(a, dtype=dtype), backend.asarray(b, dtype=dtype))
    da, db = mul_backward(backend.asarray(dy, dtype=dtype), cache)
    tol = {"float32": 1e-5, "float64": 1e-12}[dtype]
    assert db.dtype == backend.dtype(dtype)
    np.testing.assert_allclose(backend.to_numpy(db), ref_unbroadcast(dy * a, b_shape),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(backend.to_numpy(da), dy * b, rtol=tol, atol=tol)


def test_broadcast_shape_follows_numpy():
    for a, b in [((2, 1, 4), (3, 1)), ((), (2, 3)), ((5,), (1,)), ((1, 0), (3, 1))]:
        assert broadcast_shape("test", a, b) == np.broadcast_shapes(a, b)


# ---------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("dtype", ["int32", "bool", "complex128"])
@pytest.mark.parametrize("arg", ["a", "b"])
def test_non_float_dtype_is_a_type_error(backend, dtype, arg):
    args = {"a": backend.asarray(np.ones((2, 3))), "b": backend.asarray(np.ones((2, 3)))}
    args[arg] = backend.asarray(np.ones((2, 3)), dtype=dtype)
    with pytest.raises(TypeError, match=rf"^mul: argument '{arg}' expected a real floating"):
        mul_forward(**args)


def test_mixed_float_dtypes_are_a_type_error(backend):
    with pytest.raises(TypeError, match=r"^mul: argument 'b' expected dtype .*float64"):
        mul_forward(backend.asarray(np.ones(3)), backend.asarray(np.ones(3), dtype="float32"))


def test_shapes_that_do_not_broadcast_are_a_value_error(backend):
    with pytest.raises(ValueError, match=r"^mul: argument 'b' expected a shape that broadcasts "
                                         r"with 'a' \(2, 3\), got shape \(2, 1, 4\)"):
        mul_forward(backend.asarray(np.ones((2, 3))), backend.asarray(np.ones((2, 1, 4))))


def test_dy_of_the_wrong_shape_is_a_value_error(backend):
    _, cache = mul_forward(backend.asarray(np.ones((2, 3))), backend.asarray(np.ones(3)))
    with pytest.raises(ValueError, match=r"^mul_backward: argument 'dy' expected shape \(2, 3\)"):
        mul_backward(backend.asarray(np.ones(3)), cache)



def test_arrays_of_two_libraries_are_a_type_error(backend):
    a = backend.asarray(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"^mul: argument 'b' expected an array of the same"):
        mul_forward(a, backend.other_asarray(np.ones((2, 3))))
    _, cache = mul_forward(a, a)
    with pytest.raises(TypeError, match=r"^mul_backward: argument '\w+' expected an array of"):
        mul_backward(backend.other_asarray(np.ones((2, 3))), cache)


# ------------------------------------------------------------- no mutation, dtypes, NaN

def test_inputs_and_dy_are_not_modified(backend):
    rng = np.random.default_rng(2)
    a_np, b_np, dy_np = (rng.standard_normal((2, 3)) for _ in range(3))
    a, b, dy = backend.asarray(a_np), backend.asarray(b_np), backend.asarray(dy_np)
    _, cache = mul_forward(a, b)
    da, db = mul_backward(dy, cache)
    da[...] = 0.0
    db[...] = 0.0      # same shapes: nothing summed, yet the gradients are fresh arrays
    for arr, ref in [(a, a_np), (b, b_np), (dy, dy_np)]:
        np.testing.assert_array_equal(backend.to_numpy(arr), ref)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept(backend, dtype):
    a = backend.asarray(np.ones((2, 1, 3)), dtype=dtype)
    b = backend.asarray(np.ones((4, 1)), dtype=dtype)
    y, cache = mul_forward(a, b)
    grads = mul_backward(backend.asarray(np.ones((2, 4, 3)), dtype=dtype), cache)
    assert y.dtype == backend.dtype(dtype)
    assert [g.dtype for g in grads] == [backend.dtype(dtype)] * 2
    assert [tuple(g.shape) for g in grads] == [(2, 1, 3), (4, 1)]


def test_nan_propagates_along_its_broadcast(backend):
    a = np.ones((2, 3))
    a[1, 2] = np.nan
    b = np.ones((4, 1, 1))
    y, cache = mul_forward(backend.asarray(a), backend.asarray(b))
    expected = np.zeros((4, 2, 3), dtype=bool)
    expected[:, 1, 2] = True
    np.testing.assert_array_equal(np.isnan(backend.to_numpy(y)), expected)
    da, db = mul_backward(backend.asarray(np.ones((4, 2, 3))), cache)
    assert np.all(np.isfinite(backend.to_numpy(da))) and np.all(np.isnan(backend.to_numpy(db)))


@pytest.mark.parametrize("b_shape", [(2, 3, 1, 1), (2, 1, 4, 5), (2, 3, 4, 5), (1, 1, 1, 5)])
def test_mul_backward_overwrite_dy_gives_the_same_gradients_in_dy(backend, b_shape, rng):
    """``overwrite_dy=True``: ``da`` is computed in ``dy``'s memory, same numbers; without it
    ``dy`` is left alone."""
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal(b_shape)
    dy = rng.standard_normal((2, 3, 4, 5))
    _, cache = mul_forward(backend.asarray(a), backend.asarray(b))
    kept = backend.asarray(dy)
    da, db = mul_backward(kept, cache)
    np.testing.assert_array_equal(backend.to_numpy(kept), dy)
    given = backend.asarray(dy)
    da2, db2 = mul_backward(given, cache, overwrite_dy=True)
    assert da2 is given
    np.testing.assert_allclose(backend.to_numpy(da2), backend.to_numpy(da), rtol=1e-15, atol=0)
    np.testing.assert_allclose(backend.to_numpy(db2), backend.to_numpy(db), rtol=1e-13, atol=1e-13)
