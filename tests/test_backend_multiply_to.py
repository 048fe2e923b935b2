"""``backend.multiply_to(out, a, b)``: the product written into an array the caller gives up.
NumPy's fast path (``out=``, rows split between threads) agrees with the portable slice
assignment, ``out`` may be one of the factors, and every library gets ``a * b``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npattn.backend as backend_module
from npattn.backend import multiply_to

GATES = [(1, 1, 1, 1), (3, 4, 1, 1), (3, 1, 5, 2), (1, 4, 5, 2), (3, 4, 5, 2)]


@given(gate=st.sampled_from(GATES), dtype=st.sampled_from(["float32", "float64"]),
       threads=st.integers(1, 3), into=st.sampled_from(["fresh", "a", "b"]), seed=st.integers(0, 2**16))
def test_fast_and_portable_agree_and_out_may_be_a_factor(gate, dtype, threads, into, seed, monkeypatch):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((3, 4, 5, 2)).astype(dtype), rng.standard_normal(gate).astype(dtype)
    want = a * b
    monkeypatch.setattr(backend_module, "PARALLEL_MIN_ELEMENTS", 1)    # split even tiny arrays
    previous = backend_module.set_threads(threads)
    try:
        for fast in (True, False):
            a_, b_ = a.copy(), b.copy()
            out = {"fresh": np.full(a.shape, np.nan, dtype=dtype), "a": a_, "b": None}[into]
            if out is None:                                   # b of the full shape, written over
                b_ = rng.standard_normal(a.shape).astype(dtype)
                out, want_here = b_, a_ * b_
            else:
                want_here = want
            got = multiply_to(out, a_, b_, fast=fast)
            assert got is out and got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got, want_here)
    finally:
        backend_module.set_threads(previous)


@pytest.mark.parametrize("gate", GATES)
def test_every_backend_gets_the_product(backend, gate, rng):
    a, b = rng.standard_normal((3, 4, 5, 2)), rng.standard_normal(gate)
    out = backend.asarray(np.zeros((3, 4, 5, 2)))
    got = multiply_to(out, backend.asarray(a), backend.asarray(b))
    assert got is out
    np.testing.assert_allclose(backend.to_numpy(got), a * b, rtol=1e-15, atol=0)
