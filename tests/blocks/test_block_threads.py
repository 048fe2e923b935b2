"""Every registered block on NumPy with npattn's threads splitting every array they can against
the same block on the calling thread alone: the same y, dx and parameter gradients.

The threaded paths only switch on above ``PARALLEL_MIN_ELEMENTS`` elements, so the other tests'
small inputs never reach them; this test forces them on the registry's examples.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import THREAD_TOL, one_thread_then_every_array_split

from npattn.blocks import BLOCK_REGISTRY


def _forward_backward(name: str, dtype: str) -> list[np.ndarray]:
    spec = BLOCK_REGISTRY[name]
    rng = np.random.default_rng(5)
    module = spec.make(rng).to(dtype)
    x = spec.example(rng).astype(dtype)
    y = module.forward(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = module.backward(dy)
    return [y, dx, *(np.array(module.grads[k]) for k in sorted(module.grads))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(BLOCK_REGISTRY))
def test_threads_give_the_one_thread_results(name, dtype, monkeypatch):
    alone, split = one_thread_then_every_array_split(monkeypatch, lambda: _forward_backward(name, dtype))
    assert len(split) == len(alone)
    for got, want in zip(split, alone):
        np.testing.assert_allclose(got, want, **THREAD_TOL[dtype])
