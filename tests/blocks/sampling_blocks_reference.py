"""What the tests of the sampling blocks (SpatialTransformer, DeformConv2d) share."""

from __future__ import annotations

import numpy as np
from blocks_reference import host_params


def float32_round_trip(backend, module, rng, shape):
    """Run a float32 ``module`` forward and backward on ``backend``; check that every output and
    gradient stays float32 and that neither the input, ``dy`` nor a parameter changed.

    Returns the output as float32 NumPy, the float32 input, and the parameters as float64 NumPy.
    """
    params_before = host_params(module)
    x_np = rng.standard_normal(shape).astype(np.float32)
    x = backend.asarray(x_np)
    y = module.forward(x)
    dy_np = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    dy = backend.asarray(dy_np)
    dx = module.backward(dy)
    assert y.dtype == dx.dtype == backend.dtype("float32")
    assert all(g.dtype == backend.dtype("float32") for g in module.grads.values())
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_np)
    for name, p in host_params(module).items():
        np.testing.assert_array_equal(p, params_before[name])
    return backend.to_numpy(y), x_np, params_before
