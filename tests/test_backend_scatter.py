"""scatter_add: each library's path against an explicit loop and against the portable
sort-and-scan version; repeated, empty and boundary bins; dtypes; no mutation.  The
helpers of image-by-image sampling (scatter_add_weighted, weighted_sum, channel_dots, run_parts): fast paths
against portable ones and loops, rows split between threads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npattn import backend as npattn_backend
from npattn.backend import (channel_dots, run_parts, scatter_add, scatter_add_portable,
                            scatter_add_weighted, weighted_sum)



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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_portable_version_keeps_small_bins_exact_beside_large_ones(backend, dtype):
    # Bin 1 gets 1e-3 after (in sorted order) 4096 values of 2.5 in bin 0, and before 4096 more
    # in bin 2: a difference of running totals around 1e4 returns 0 for it in float32.
    index = np.repeat(np.array([0, 1, 2], dtype=np.int64), [4096, 1, 4096])
    values = np.concatenate([np.full(4096, 2.5), [1e-3], np.full(4096, 2.5)])
    perm = np.random.default_rng(0).permutation(index.size)
    got = scatter_add_portable(backend.asarray(index[perm]), backend.asarray(values[perm], dtype=dtype), 4)
    want = np.array([10240.0, 1e-3, 10240.0, 0.0], dtype=dtype)
    np.testing.assert_allclose(backend.to_numpy(got), want, rtol=4 * np.finfo(dtype).eps, atol=0)


def test_portable_version_keeps_an_inf_in_its_own_bin(backend):
    # A difference of running totals made every bin after an inf one NaN (inf - inf).
    index = np.array([0, 1, 1, 2], dtype=np.int64)
    values = np.array([1.0, np.inf, 1.0, 2.0])
    got = scatter_add_portable(backend.asarray(index), backend.asarray(values), 4)
    np.testing.assert_array_equal(backend.to_numpy(got), [1.0, np.inf, 2.0, 0.0])


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


# ------------------------------------------------- the helpers of image-by-image sampling

def ref_scatter_add_weighted(index, weights, rows, size):
    """``out[r, index[i]] += weights[i] * rows[r][i]``, one position at a time."""
    out = np.zeros((rows.shape[0], size))
    for r in range(rows.shape[0]):
        row = np.broadcast_to(rows[r], index.shape)
        for i in np.ndindex(index.shape):
            out[r, index[i]] += weights[i] * row[i]
    return out


@given(seed=st.integers(0, 2**32 - 1), r=st.integers(0, 3), b=st.integers(0, 3),
       k=st.integers(1, 4), s=st.integers(0, 6), size=st.integers(1, 9), crowded=st.booleans())
def test_scatter_add_weighted_matches_loop_fast_and_portable(backend, seed, r, b, k, s, size, crowded):
    rng = np.random.default_rng(seed)
    high = min(size, 2) if crowded else size
    index = rng.integers(0, high, size=(b, k, s))
    weights, rows = rng.standard_normal((b, k, s)), rng.standard_normal((r, b, 1, s))
    want = ref_scatter_add_weighted(index, weights, rows, size)
    args = (backend.asarray(index), backend.asarray(weights), backend.asarray(rows), size)
    for fast in (True, False):
        got = scatter_add_weighted(*args, fast=fast)
        assert tuple(got.shape) == (r, size)
        np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scatter_add_weighted_keeps_dtype_and_inputs(backend, dtype, rng):
    index = rng.integers(0, 5, size=(2, 4, 3))
    weights, rows = rng.standard_normal((2, 4, 3)), rng.standard_normal((3, 2, 1, 3))
    args = [backend.asarray(index)] + [backend.asarray(a, dtype=dtype) for a in (weights, rows)]
    tol = 1e-5 if dtype == "float32" else 1e-12
    for fast in (True, False):
        got = scatter_add_weighted(*args, 5, fast=fast)
        assert got.dtype == backend.dtype(dtype)
        np.testing.assert_allclose(backend.to_numpy(got), ref_scatter_add_weighted(index, weights, rows, 5),
                                   rtol=tol, atol=tol)
    for a, want in zip(args, (index, weights, rows)):
        np.testing.assert_array_equal(backend.to_numpy(a), want.astype(backend.to_numpy(a).dtype))


def test_scatter_add_weighted_rows_split_between_threads(monkeypatch, rng):
    index = rng.integers(0, 7, size=(2, 4, 5))
    weights, rows = rng.standard_normal((2, 4, 5)), rng.standard_normal((5, 2, 1, 5))
    one = scatter_add_weighted(index, weights, rows, 7)
    monkeypatch.setattr(npattn_backend, "PARALLEL_MIN_ELEMENTS", 1)
    previous = npattn_backend.set_threads(3)
    try:
        np.testing.assert_array_equal(scatter_add_weighted(index, weights, rows, 7), one)
    finally:
        npattn_backend.set_threads(previous)


def check_fast_portable_and_out(backend, fn, args, want):
    """``fn(*args)`` on both paths, fresh and into a view of a larger array, against ``want``."""
    args = [backend.asarray(a) for a in args]
    for fast in (True, False):
        got = fn(*args, fast=fast)
        assert tuple(got.shape) == want.shape
        np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-12, atol=1e-12)
        big = backend.asarray(np.full((2, *want.shape), 7.0))
        assert fn(*args, out=big[1, ...], fast=fast) is not None
        np.testing.assert_allclose(backend.to_numpy(big)[1], want, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(backend.to_numpy(big)[0], 7.0)


@given(seed=st.integers(0, 2**32 - 1), r=st.integers(0, 3), k=st.integers(1, 4), s=st.integers(0, 5))
def test_weighted_sum_matches_loop_fast_and_portable(backend, seed, r, k, s):
    rng = np.random.default_rng(seed)
    values, weights = rng.standard_normal((r, k, s)), rng.standard_normal((k, s))
    want = np.zeros((r, s))
    for j in range(k):
        want += values[:, j, :] * weights[j]
    check_fast_portable_and_out(backend, weighted_sum, (values, weights), want)


@given(seed=st.integers(0, 2**32 - 1), r=st.integers(0, 3), k=st.integers(1, 4), s=st.integers(0, 5))
def test_channel_dots_match_loop_fast_and_portable(backend, seed, r, k, s):
    rng = np.random.default_rng(seed)
    g, values = rng.standard_normal((r, s)), rng.standard_normal((r, k, s))
    want = np.zeros((k, s))
    for c in range(r):
        want += g[c] * values[c]
    check_fast_portable_and_out(backend, channel_dots, (g, values), want)


def test_run_parts_calls_every_part_once(monkeypatch):
    for threads, least in [(1, 2**18), (3, 1)]:
        monkeypatch.setattr(npattn_backend, "PARALLEL_MIN_ELEMENTS", least)
        previous = npattn_backend.set_threads(threads)
        try:
            seen = np.zeros(7, dtype=int)

            def add(part):
                seen[part] += 1

            run_parts(add, [slice(i, i + 1) for i in range(7)], np, 10)
            np.testing.assert_array_equal(seen, np.ones(7, dtype=int))
        finally:
            npattn_backend.set_threads(previous)
