"""Blocks move to the GPU with their parameters (``to("gpu")``), and say why when they cannot.

Without a GPU every block, one without parameters too, refuses ``to("gpu")`` up front with a
``RuntimeError`` that names the block and the reason, and moves nothing.  With CuPy and a GPU
(skipped otherwise, with the reason) every block moves there in float64 and float32, computes
what it computes on NumPy, keeps its dtype, and comes back with ``to("cpu")``.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from npattn.backend import cupy_available, to_device, to_numpy
from npattn.blocks import BLOCK_REGISTRY

GPU, WHY = cupy_available()
NAMES = list(BLOCK_REGISTRY)
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def _make(name: str, dtype: str = "float64"):
    spec = BLOCK_REGISTRY[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return spec.make(rng).to(dtype), spec.example(rng).astype(dtype)


@pytest.mark.skipif(GPU, reason="a GPU is present: the moves are tested below")
@pytest.mark.parametrize("name", NAMES)
def test_to_gpu_without_a_gpu_names_the_block_and_moves_nothing(name):
    block, _ = _make(name)
    before = dict(block.params)
    with pytest.raises(RuntimeError, match=rf"^{block.name}\.to: cannot move to 'gpu': CuPy "):
        block.to("gpu")
    assert all(block.params[k] is v for k, v in before.items())
    assert all(isinstance(v, np.ndarray) for v in block.grads.values())


@pytest.mark.skipif(GPU, reason="a GPU is present")
def test_to_device_gpu_without_a_gpu_says_why():
    with pytest.raises(RuntimeError, match="to_device: cannot move to 'gpu': CuPy "):
        to_device(np.zeros(2), "gpu")


@pytest.mark.skipif(not GPU, reason=f"needs CuPy and a GPU: {WHY}")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_blocks_move_to_the_gpu_with_their_parameters(name, dtype):
    import cupy
    reference, x_np = _make(name, dtype)
    block, _ = _make(name, dtype)
    assert block.to("gpu") is block
    for store in (block.params, block.grads):
        assert all(isinstance(v, cupy.ndarray) and v.dtype == np.dtype(dtype)
                   for v in store.values())
    dy_np = np.random.default_rng(1).standard_normal(x_np.shape).astype(dtype)
    y = block.forward(cupy.asarray(x_np))
    dx = block.backward(cupy.asarray(dy_np))
    assert isinstance(y, cupy.ndarray) and isinstance(dx, cupy.ndarray) and y.dtype == np.dtype(dtype)
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(to_numpy(y), reference.forward(x_np), rtol=tol, atol=tol)
    np.testing.assert_allclose(to_numpy(dx), reference.backward(dy_np), rtol=tol, atol=tol)
    for k, g in reference.grads.items():
        np.testing.assert_allclose(to_numpy(block.grads[k]), g, rtol=tol, atol=tol, err_msg=k)
    block.to("cpu")
    assert all(isinstance(v, np.ndarray) for v in block.params.values())
