"""backend.thin_matmul: NumPy's einsum path (one thread and split between threads) against the
portable matmul, on every backend, for rows times matrices, matrices times columns and inner
size 1 or 2."""

from __future__ import annotations

import numpy as np
import pytest

import npattn.backend as backend
from npattn.backend import thin_matmul

CASES = [((1, 1, 5), (3, 5, 7)),          # one row (a 1x1 convolution's weight) times a stack
         ((3, 1, 5), (3, 5, 7)),          # a row per item
         ((3, 4, 5), (3, 5, 1)),          # a column per item
         ((2, 3, 1, 5), (2, 3, 5, 4)),    # two leading axes
         ((4, 5), (2, 5, 1)),             # a matrix broadcast against a stack of columns
         ((1, 5), (5, 1)),                # no leading axis
         ((3, 4, 2), (3, 2, 6)),          # inner size 2: two outer products per item
         ((1, 4, 1), (3, 1, 6))]          # inner size 1, the left one broadcast


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fast_and_portable_agree(monkeypatch, dtype, threads):
    rng = np.random.default_rng(0)
    monkeypatch.setattr(backend, "PARALLEL_MIN_ELEMENTS", 0)
    previous = backend.set_threads(threads)
    try:
        for sa, sb in CASES:
            a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
            got = thin_matmul(a, b)
            assert got.dtype == a.dtype
            tol = dict(rtol=2e-5, atol=2e-5) if dtype == "float32" else dict(rtol=1e-12)
            np.testing.assert_allclose(got, thin_matmul(a, b, fast=False), **tol)
    finally:
        backend.set_threads(previous)


def test_every_backend(backend):
    rng = np.random.default_rng(1)
    for sa, sb in CASES:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        got = backend.to_numpy(thin_matmul(backend.asarray(a), backend.asarray(b)))
        np.testing.assert_allclose(got, a @ b, rtol=1e-12)


def test_a_product_of_two_matrices_takes_matmul():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 2, 3)), rng.standard_normal((3, 3, 4))
    np.testing.assert_array_equal(thin_matmul(a, b), np.matmul(a, b))
