"""CBAM's backward with ``consume_cache=True`` (what the module passes: ``dy_1`` computed in the
memory of its own ``y_1``) gives the gradients of the default, which leaves the cache alone;
``mul_backward(out=...)`` likewise, and refuses an ``out`` of the wrong shape or dtype."""

from __future__ import annotations

import numpy as np
import pytest

from npattn.blocks import CBAM
from npattn.blocks.cbam import cbam_backward, cbam_forward
from npattn.ops.elementwise import mul_backward, mul_forward


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_consumed_cache_gives_the_same_gradients(backend, dtype, rng):
    x, dy = (rng.standard_normal((2, 8, 5, 6)).astype(dtype) for _ in range(2))
    block = CBAM(8, reduction=2, kernel_size=3, rng=1, dtype=dtype)
    params = {k: backend.asarray(v) for k, v in block.params.items()}
    xa, dya = backend.asarray(x), backend.asarray(dy)
    _, cache = cbam_forward(xa, params)
    y1 = np.array(backend.to_numpy(cache.sa.prod.a), copy=True)
    dx, grads = cbam_backward(dya, cache)
    np.testing.assert_array_equal(backend.to_numpy(cache.sa.prod.a), y1)      # left alone
    _, cache2 = cbam_forward(xa, params)
    dx2, grads2 = cbam_backward(dya, cache2, consume_cache=True)
    assert dx2 is cache2.sa.prod.a                                              # y_1's memory
    np.testing.assert_array_equal(backend.to_numpy(dx2), backend.to_numpy(dx))
    for name in grads:
        np.testing.assert_array_equal(backend.to_numpy(grads2[name]), backend.to_numpy(grads[name]))
    np.testing.assert_array_equal(backend.to_numpy(xa), x)
    np.testing.assert_array_equal(backend.to_numpy(dya), dy)


def test_module_backward_matches_the_pure_pair(rng):
    x, dy = rng.standard_normal((3, 4, 4, 4)), rng.standard_normal((3, 4, 4, 4))
    block = CBAM(4, reduction=2, kernel_size=3, rng=2, dtype="float64")
    _, cache = cbam_forward(x, dict(block.params))
    dx, grads = cbam_backward(dy, cache)
    block.forward(x)
    np.testing.assert_array_equal(block.backward(dy), dx)
    for name, g in grads.items():
        np.testing.assert_array_equal(block.grads[name], g)


def test_mul_backward_out_receives_da_and_is_checked(backend, rng):
    a, b, dy = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 1, 4)), rng.standard_normal((2, 3, 4))
    _, cache = mul_forward(backend.asarray(a), backend.asarray(b))
    da, db = mul_backward(backend.asarray(dy), cache)
    out = backend.asarray(np.zeros((2, 3, 4)))
    da2, db2 = mul_backward(backend.asarray(dy), cache, out=out)
    assert da2 is out
    np.testing.assert_array_equal(backend.to_numpy(da2), backend.to_numpy(da))
    np.testing.assert_array_equal(backend.to_numpy(db2), backend.to_numpy(db))
    with pytest.raises(ValueError, match="mul_backward: argument 'out' expected shape"):
        mul_backward(backend.asarray(dy), cache, out=backend.asarray(np.zeros((2, 3, 5))))
    with pytest.raises(TypeError, match="mul_backward: argument 'out' expected dtype"):
        mul_backward(backend.asarray(dy), cache, out=backend.asarray(np.zeros((2, 3, 4), np.float32)))
