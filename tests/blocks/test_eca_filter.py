"""ECA's filter across channels (``_channel_conv_forward``/``_backward`` in npattn/blocks/eca.py),
the fast path of its 1-D convolution, against the spec ``ops.conv1d`` with padding ``(k - 1) // 2``:
the same output, input gradient and weight gradient, on every backend, float64 and float32."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import npattn.ops as ops
from npattn.backend import namespace
from npattn.blocks.eca import _channel_conv_backward, _channel_conv_forward


@given(n=st.integers(1, 3), c=st.integers(1, 9), half=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_filter_matches_conv1d(backend, n, c, half, seed):
    rng = np.random.default_rng(seed)
    k = 2 * half + 1                                       # odd, k > C included
    s, dz = rng.standard_normal((n, c)), rng.standard_normal((n, c))
    w = rng.standard_normal((1, 1, k))
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-5)):
        sa, wa, dza = (backend.asarray(a.astype(dtype)) for a in (s, w, dz))
        xp = namespace("test", s=sa)
        z, cache = _channel_conv_forward(xp, sa, wa)
        ds, dw = _channel_conv_backward(xp, dza, cache)
        z_ref, c_ref = ops.conv1d_forward(xp.reshape(sa, (n, 1, c)), wa, padding=half)
        ds_ref, dw_ref, _ = ops.conv1d_backward(xp.reshape(dza, (n, 1, c)), c_ref)
        for got, want, shape in ((z, z_ref, (n, c)), (ds, ds_ref, (n, c)), (dw, dw_ref, (1, 1, k))):
            got, want = backend.to_numpy(got), backend.to_numpy(want)
            assert got.dtype == np.dtype(dtype) and got.shape == shape
            np.testing.assert_allclose(got, want.reshape(shape), rtol=tol, atol=tol)
