"""The fast paths of npattn/backend.py: NumPy's faster spelling agrees with the portable one
(``fast=False``), and every library's result agrees with a reference written here in NumPy.

Hypothesis draws the shapes and axes; ties, NaNs, infs and non-contiguous inputs have their own
tests, since the fast paths branch on them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npattn.backend import add_at, first_max, keep_where, map_last_axis, sum_of_products, sum_over

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-12, atol=1e-12)}

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


@st.composite
def shape_and_axes(draw):
    shape = draw(shapes)
    axes = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
    return shape, tuple(sorted(axes))


def _both(fn, *args, **kwargs):
    """``fn`` on NumPy with the fast path and with the portable one."""
    return fn(*args, **kwargs), fn(*args, **kwargs, fast=False)


# ------------------------------------------------------------------------------------ sum_over

@settings(deadline=None)
@given(case=shape_and_axes(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_sum_over_fast_and_portable_agree(case, dtype, seed):
    shape, axes = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    fast, portable = _both(sum_over, x, axes)
    assert fast.shape == portable.shape == tuple(1 if i in axes else n for i, n in enumerate(shape))
    assert fast.dtype == x.dtype
    np.testing.assert_allclose(fast, portable, **TOL[dtype])


@pytest.mark.parametrize("axes", [(2, 3), (1,), (3,), (0, 1, 2, 3)])
def test_sum_over_every_backend_against_numpy(backend, axes, rng):
    x = rng.standard_normal((2, 6, 3, 5))
    got = backend.to_numpy(sum_over(backend.asarray(x), axes))
    np.testing.assert_allclose(got, x.sum(axis=axes, keepdims=True), rtol=1e-12, atol=1e-12)


def test_sum_over_non_contiguous_input_takes_the_portable_path(rng):
    x = rng.standard_normal((3, 4, 6, 5))[:, ::2, :, 1:]
    for axes in [(2, 3), (1,)]:
        np.testing.assert_allclose(sum_over(x, axes), x.sum(axis=axes, keepdims=True),
                                   rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- sum_of_products

@settings(deadline=None)
@given(case=shape_and_axes(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_sum_of_products_fast_and_portable_agree(case, dtype, seed):
    shape, axes = case
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    fast, portable = _both(sum_of_products, a, b, axes)
    assert fast.shape == portable.shape and fast.dtype == a.dtype
    np.testing.assert_allclose(fast, portable, **TOL[dtype])


def test_sum_of_products_every_backend_against_loops(backend, rng):
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    got = backend.to_numpy(sum_of_products(backend.asarray(a), backend.asarray(b), (1,)))
    want = np.zeros((2, 1, 4, 5))
    for n in range(2):
        for c in range(3):
            want[n, 0] += a[n, c] * b[n, c]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------ first_max

def _first_max_reference(v, axis):
    """Loop over the lines: the first entry that is NaN, else the first equal to the maximum."""
    lines = np.moveaxis(v, axis, -1)
    m = np.empty(lines.shape[:-1])
    index = np.empty(lines.shape[:-1], dtype=np.int64)
    for pos in np.ndindex(*lines.shape[:-1]):
        line = lines[pos]
        nan = np.flatnonzero(np.isnan(line))
        k = nan[0] if nan.size else int(np.flatnonzero(line == line.max())[0])
        m[pos], index[pos] = line[k], k
    return np.expand_dims(m, axis), np.expand_dims(index, axis)


@settings(deadline=None)
@given(shape=shapes, data=st.data(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
       ties=st.booleans())
def test_first_max_fast_and_portable_agree(shape, data, dtype, seed, ties):
    axis = data.draw(st.integers(0, len(shape) - 1))
    rng = np.random.default_rng(seed)
    v = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    (m_fast, i_fast), (m_port, i_port) = _both(first_max, v, axis)
    m_ref, i_ref = _first_max_reference(v, axis)
    for m, i in [(m_fast, i_fast), (m_port, i_port)]:
        assert m.dtype == v.dtype and m.shape == i.shape == m_ref.shape
        np.testing.assert_array_equal(i, i_ref)
        np.testing.assert_array_equal(m, m_ref.astype(dtype))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_first_max_ties_and_nans_every_backend(backend, axis):
    v = np.array([[[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]],
                  [[np.nan, 5.0, np.nan], [-np.inf, -np.inf, 0.0]],
                  [[0.0, -0.0, 0.0], [4.0, np.nan, 4.0]]])
    m, index = first_max(backend.asarray(v), axis)
    m_ref, i_ref = _first_max_reference(v, axis)
    np.testing.assert_array_equal(backend.to_numpy(index), i_ref)
    np.testing.assert_array_equal(backend.to_numpy(m), m_ref)


def test_first_max_without_ties_over_channels_uses_the_weighted_hits(rng):
    """The usual case of the channel path: distinct values, so the count finds one hit per line."""
    v = rng.permutation(2 * 7 * 3 * 4).reshape(2, 7, 3, 4).astype(np.float32)
    m, index = first_max(v, 1)
    np.testing.assert_array_equal(index, np.argmax(v, axis=1)[:, None])
    np.testing.assert_array_equal(m, v.max(axis=1, keepdims=True))
    assert index.dtype == np.intp


# ------------------------------------------------------------------------------------ keep_where

@pytest.mark.parametrize("dtype", DTYPES)
def test_keep_where_fast_and_portable_agree_with_and_without_infs(dtype, rng):
    values = rng.standard_normal((3, 4, 5)).astype(dtype)
    mask = rng.random((3, 4, 5)) < 0.5
    for special in [None, np.inf, np.nan]:
        v = values.copy()
        if special is not None:
            v[0, 0, 0], mask[0, 0, 0] = special, False
            v[1, 1, 1], mask[1, 1, 1] = special, True
        fast, portable = _both(keep_where, mask, v)
        np.testing.assert_array_equal(fast, portable)
        np.testing.assert_array_equal(fast, np.where(mask, v, 0.0))
        assert fast.dtype == v.dtype


def test_keep_where_broadcasts_every_backend(backend, rng):
    values = rng.standard_normal((2, 1, 4))
    mask = rng.random((2, 3, 4)) < 0.5
    got = backend.to_numpy(keep_where(backend.asarray(mask), backend.asarray(values)))
    np.testing.assert_array_equal(got, np.where(mask, values, 0.0))


# -------------------------------------------------------------------------------- map_last_axis

def test_map_last_axis_fast_and_portable_agree_split_between_threads(threaded, rng):
    x = rng.standard_normal((3, 7, 5))
    fn = lambda v: np.exp(v - v.max(axis=-1, keepdims=True))       # noqa: E731
    out = map_last_axis(fn, x)
    np.testing.assert_array_equal(out, fn(x))
    np.testing.assert_array_equal(out, map_last_axis(fn, x, fast=False))


def test_map_last_axis_every_backend(backend, rng):
    x = rng.standard_normal((2, 3, 4))
    got = map_last_axis(lambda v: v * 2.0, backend.asarray(x))
    np.testing.assert_array_equal(backend.to_numpy(got), 2.0 * x)


# --------------------------------------------------------------------------------------- add_at

def _winner_index(shape, axis, index):
    """The keepdims index tuple naming ``index`` along ``axis`` and every position elsewhere."""
    return tuple(index if k == axis else
                 np.arange(n).reshape((1,) * k + (n,) + (1,) * (len(shape) - k - 1))
                 for k, n in enumerate(shape))


@settings(deadline=None)
@given(shape=shapes, data=st.data(), seed=st.integers(0, 2**16))
def test_add_at_fast_and_portable_agree(shape, data, seed):
    axis = data.draw(st.integers(0, len(shape) - 1))
    rng = np.random.default_rng(seed)
    kept = tuple(1 if k == axis else n for k, n in enumerate(shape))
    index = _winner_index(shape, axis, rng.integers(0, shape[axis], kept))
    values = rng.standard_normal(kept)
    start = rng.standard_normal(shape)
    want = start.copy()
    for pos in np.ndindex(*kept):
        at = list(pos)
        at[axis] = index[axis][pos]
        want[tuple(at)] += values[pos]
    for fast in (True, False):
        target = start.copy()
        out = add_at(target, index, values, fast=fast)
        assert out is target
        np.testing.assert_allclose(target, want, rtol=1e-14, atol=1e-14)


def test_add_at_every_backend_on_a_strided_target(backend, rng):
    """A non-contiguous target is updated where it lives (no reshaped copy)."""
    base = rng.standard_normal((2, 6, 3))
    index = _winner_index((2, 3, 3), 1, np.array([[[0, 2, 1]], [[1, 1, 0]]]))
    values = rng.standard_normal((2, 1, 3))
    want = base.copy()
    want[:, ::2][index] += values
    xbase = backend.asarray(base)
    target = xbase[:, ::2, :]
    add_at(target, tuple(backend.asarray(i) for i in index), backend.asarray(values))
    if backend.name == "numpy":        # a view: the update shows in the base array
        np.testing.assert_allclose(backend.to_numpy(xbase), want, rtol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(target), want[:, ::2], rtol=1e-14)


# ------------------------------------------------------------------------------------- threads

@pytest.fixture
def threaded(monkeypatch):
    """Two threads on arrays of any size, and cache blocks of a few lines: every split path."""
    import npattn.backend as backend
    monkeypatch.setattr(backend, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(backend, "CACHE_BLOCK_BYTES", 64)
    previous = backend.set_threads(2)
    yield backend
    backend.set_threads(previous)


@pytest.mark.parametrize("dtype", DTYPES)
def test_threaded_paths_agree_with_the_portable_ones(threaded, dtype, rng):
    x = rng.standard_normal((5, 7, 3, 4)).astype(dtype)
    y = rng.standard_normal((5, 7, 3, 4)).astype(dtype)
    gate = rng.standard_normal((5, 1, 3, 4)).astype(dtype)
    scale = rng.standard_normal((5, 7, 1, 1)).astype(dtype)
    for b in (gate, scale, y, np.asarray(2.0, dtype=dtype), 0.5):
        np.testing.assert_array_equal(threaded.multiply(x, b), x * b)
        np.testing.assert_array_equal(threaded.add_into(x.copy(), b), x + b)
    for axes in [(1,), (2, 3), (1, 2, 3), (0,)]:
        np.testing.assert_allclose(sum_of_products(x, y, axes), sum_of_products(x, y, axes, fast=False),
                                   **TOL[dtype])
    for axes in [(1,), (2, 3), (3,)]:
        np.testing.assert_allclose(sum_over(x, axes), sum_over(x, axes, fast=False), **TOL[dtype])
    rowwise = lambda a, b: a * b - a.max(axis=-1, keepdims=True)       # noqa: E731
    np.testing.assert_array_equal(threaded.map_last_axis(rowwise, x, y), rowwise(x, y))
    ties = rng.integers(0, 3, (5, 7, 3, 4)).astype(dtype)
    ties[1, :, 0, 0] = np.nan
    for v in (x, ties):
        for axis in (1, 2):
            (m, i), (m_ref, i_ref) = _both(first_max, v, axis)
            np.testing.assert_array_equal(i, i_ref)
            np.testing.assert_array_equal(m, m_ref)


def test_set_threads_checks_and_returns_the_previous_number():
    import npattn.backend as backend
    previous = backend.set_threads(3)
    try:
        assert backend.get_threads() == 3
        assert backend.set_threads(1) == 3
        with pytest.raises(ValueError, match="set_threads: argument 'n' expected an int >= 1"):
            backend.set_threads(0)
        with pytest.raises(TypeError, match="set_threads: argument 'n' expected an int >= 1"):
            backend.set_threads(2.0)
    finally:
        backend.set_threads(previous)


def test_a_fast_path_inside_a_part_runs_on_its_own_thread(threaded, rng):
    """map_last_axis's function calling sum_over (which would split again) does not wait on the
    pool from inside it."""
    x = rng.standard_normal((6, 8, 5))
    fn = lambda v: v - sum_over(v, (1,))                            # noqa: E731
    np.testing.assert_allclose(threaded.map_last_axis(fn, x), x - x.sum(axis=-1, keepdims=True),
                               rtol=1e-12, atol=1e-12)


def test_an_error_in_a_thread_reaches_the_caller(threaded):
    def fail(part):
        raise RuntimeError(f"part {part}")
    with pytest.raises(RuntimeError, match="part"):
        threaded._run_parts(fail, [0, 1, 2, 3])
