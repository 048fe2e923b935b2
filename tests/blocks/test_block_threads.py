"""Every registered block on NumPy with npattn's threads splitting every array they can (two
threads, no size threshold, cache blocks of a few hundred bytes) against the same block on the
calling thread alone: the same y, dx and parameter gradients.

The threaded paths only switch on above ``PARALLEL_MIN_ELEMENTS`` elements, so the other tests'
small inputs never reach them; this test forces them on the registry's examples.
"""

from __future__ import annotations

import numpy as np
import pytest

import npattn.backend as backend
from npattn.blocks import BLOCK_REGISTRY


def _forward_backward(name: str, dtype: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    spec = BLOCK_REGISTRY[name]
    rng = np.random.default_rng(5)
    module = spec.make(rng).to(dtype)
    x = spec.example(rng).astype(dtype)
    y = module.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = module.backward(dy)
    return y, dx, {k: np.array(g) for k, g in module.grads.items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(BLOCK_REGISTRY))
def test_threads_give_the_one_thread_results(name, dtype, monkeypatch):
    previous = backend.set_threads(1)
    try:
        y1, dx1, g1 = _forward_backward(name, dtype)
        monkeypatch.setattr(backend, "PARALLEL_MIN_ELEMENTS", 0)
        monkeypatch.setattr(backend, "CACHE_BLOCK_BYTES", 256)
        monkeypatch.setattr(backend, "ELEMENTWISE_BLOCK_BYTES", 256)
        backend.set_threads(2)
        y2, dx2, g2 = _forward_backward(name, dtype)
    finally:
        backend.set_threads(previous)
    tol = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}[dtype]
    np.testing.assert_allclose(y2, y1, **tol)
    np.testing.assert_allclose(dx2, dx1, **tol)
    assert g2.keys() == g1.keys()
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], **tol, err_msg=k)
