"""scatter_add: each library's path against an explicit loop and against the portable
sort-and-cumulative-sum version; repeated, empty and boundary bins; dtypes; no mutation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npattn.backend import scatter_add, scatter_add_portable



def ref_scatter_add(index, values, size):
    out = np.zeros(size)
    for i, v in zip(index, values):
        out[i] += v
    return out


def draw(seed, n, size, crowded):
    """``n`` values into ``size`` bins; ``crowded`` puts them all in a few bins (many repeats,
    many empty bins)."""
    rng = np.random.default_rng(seed)
    bins = rng.integers(0, size, size=min(size, 2)) if crowded else np.arange(size)
    return rng.choice(bins, size=n).astype(np.int64), rng.standard_normal(n)


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40), size=st.integers(1, 12),
       crowded=st.booleans())
def test_scatter_add_matches_loop_and_portable_version(backend, seed, n, size, crowded):
    index, values = draw(seed, n, size, crowded)
    want = ref_scatter_add(index, values, size)
    got = scatter_add(backend.asarray(index), backend.asarray(values), size)
    portable = scatter_add_portable(backend.asarray(index), backend.asarray(values), size)
    assert tuple(got.shape) == tuple(portable.shape) == (size,)
    np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(portable), backend.to_numpy(got), rtol=1e-12,
                               atol=1e-12)


def test_first_and_last_bins_and_bins_past_the_values(backend):
    index = np.array([4, 0, 4, 0, 4], dtype=np.int64)
    values = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    for f in (scatter_add, scatter_add_portable):
        got = f(backend.asarray(index), backend.asarray(values), 7)
        np.testing.assert_array_equal(backend.to_numpy(got), [10.0, 0, 0, 0, 21.0, 0, 0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept(backend, dtype):
    index, values = draw(1, 30, 6, False)
    for f in (scatter_add, scatter_add_portable):
        got = f(backend.asarray(index), backend.asarray(values, dtype=dtype), 6)
        assert got.dtype == backend.dtype(dtype)
        tol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(backend.to_numpy(got), ref_scatter_add(index, values, 6),
                                   rtol=tol, atol=tol)


def test_inputs_are_not_modified(backend):
    index, values = draw(2, 25, 5, True)
    index_, values_ = backend.asarray(index), backend.asarray(values)
    for f in (scatter_add, scatter_add_portable):
        f(index_, values_, 5)
        np.testing.assert_array_equal(backend.to_numpy(index_), index)
        np.testing.assert_array_equal(backend.to_numpy(values_), values)
