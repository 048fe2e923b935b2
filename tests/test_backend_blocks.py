"""The block-by-block helpers of npattn/backend.py that the blocks' fast paths rest on:
store_scaled (NumPy writes into the view; the spec is a slice assignment) and maximum_into (in
place on NumPy, a fresh array elsewhere); batch_channel_blocks is tested in blocks/test_bam.py."""

from __future__ import annotations

import numpy as np
import pytest

from npattn.backend import maximum_into, store_scaled


@pytest.mark.parametrize("with_shift", [True, False])
def test_store_scaled_writes_one_block_only(backend, rng, with_shift):
    a = rng.standard_normal((2, 3, 4))
    scale, shift = rng.standard_normal((1, 3, 1)), rng.standard_normal((2, 3, 4))
    target = backend.asarray(np.full((3, 5, 4), 7.0))
    index = (slice(1, 3), slice(1, 4), ...)
    got = store_scaled(target, index, backend.asarray(a), backend.asarray(scale),
                       backend.asarray(shift) if with_shift else None)
    want = np.full((3, 5, 4), 7.0)
    want[1:3, 1:4] = a * scale + (shift if with_shift else 0.0)
    np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-15, atol=0)


def test_store_scaled_fast_and_portable_agree(rng):
    a, scale, shift = rng.standard_normal((4, 6)), rng.standard_normal((1, 6)), rng.standard_normal((4, 6))
    fast = store_scaled(np.zeros((5, 6)), (slice(1, 5), ...), a, scale, shift)
    portable = store_scaled(np.zeros((5, 6)), (slice(1, 5), ...), a, scale, shift, fast=False)
    np.testing.assert_array_equal(fast, portable)


def test_maximum_into_is_a_relu_keeping_nan(backend):
    values = np.array([[-2.0, 0.0, np.nan], [3.0, -0.5, np.inf]])
    got = backend.to_numpy(maximum_into(backend.asarray(values.copy()), 0.0))
    np.testing.assert_array_equal(got, np.array([[0.0, 0.0, np.nan], [3.0, 0.0, np.inf]]))


def test_maximum_into_works_in_place_on_numpy():
    target = np.array([-1.0, 2.0], dtype=np.float32)
    out = maximum_into(target, 0.0)
    assert out is target and out.dtype == np.float32
    np.testing.assert_array_equal(target, [0.0, 2.0])
