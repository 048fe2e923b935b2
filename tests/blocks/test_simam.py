"""SimAM: forward against per-channel loops of the paper's formula, gradients by finite
differences (check_module and check_op) on Hypothesis-drawn shapes and lambdas, the pure pair
against the module, the map's range, dtypes, no mutation, bad input, and PyTorch where
installed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npattn.blocks import SimAM, simam_backward, simam_forward
from npattn.gradcheck import check_module, check_op


def ref_simam(x, lambda_):
    """Channel by channel with explicit sums; returns (y, sigmoid(e))."""
    n_, c_, h_, w_ = x.shape
    gate = np.zeros_like(x)
    for n in range(n_):
        for c in range(c_):
            values = [x[n, c, i, j] for i in range(h_) for j in range(w_)]
            mu = sum(values) / len(values)
            v = sum((u - mu) ** 2 for u in values) / (len(values) - 1)
            for i in range(h_):
                for j in range(w_):
                    e = (x[n, c, i, j] - mu) ** 2 / (4 * (v + lambda_)) + 0.5
                    gate[n, c, i, j] = 1 / (1 + math.exp(-e))
    return x * gate, gate


@st.composite
def simam_cases(draw):
    hw = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)).filter(lambda s: s[0] * s[1] >= 2))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *hw)
    x = draw(st.sampled_from([0.1, 1.0, 3.0])) * np.random.default_rng(
        draw(st.integers(0, 2**32 - 1))).standard_normal(shape)
    return x, draw(st.sampled_from([1e-4, 1e-2, 1.0]))


@given(case=simam_cases())
def test_forward_and_map_match_loops(backend, case):
    x, lambda_ = case
    module = SimAM(lambda_)
    y_ref, gate_ref = ref_simam(x, lambda_)
    xb = backend.asarray(x)
    np.testing.assert_allclose(backend.to_numpy(module.forward(xb)), y_ref, rtol=1e-12, atol=1e-14)
    gate = backend.to_numpy(module.attention_map(xb))
    np.testing.assert_allclose(gate, gate_ref, rtol=1e-12)
    assert np.all((gate >= 1 / (1 + math.exp(-0.5))) & (gate <= 1))


@given(case=simam_cases())
def test_backward_matches_finite_differences(backend, case):
    x, lambda_ = case
    xb = backend.asarray(x)
    report = check_module(SimAM(lambda_), xb, rng=0)
    report.raise_if_failed()
    assert [c.name for c in report.inputs] == ["x"]
    check_op(simam_forward, simam_backward, xb, {}, lambda_, rng=1).raise_if_failed()


def test_pure_pair_matches_module(backend):
    x = backend.asarray(np.random.default_rng(0).standard_normal((2, 3, 2, 3)))
    dy = backend.asarray(np.random.default_rng(1).standard_normal((2, 3, 2, 3)))
    module = SimAM()
    y, cache = simam_forward(x, None)
    dx, dparams = simam_backward(dy, cache)
    assert dparams == {} and len(module.params) == 0
    np.testing.assert_allclose(backend.to_numpy(y), backend.to_numpy(module.forward(x)), rtol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(dx), backend.to_numpy(module.backward(dy)),
                               rtol=1e-15)


def test_constant_channel_gets_the_half_gate(backend):
    # A constant channel has d = 0 and v = 0, so e = 1/2 everywhere (lambda keeps it finite).
    x = np.full((1, 1, 2, 2), 3.0)
    y, cache = simam_forward(backend.asarray(x))
    np.testing.assert_allclose(backend.to_numpy(cache.map), 1 / (1 + math.exp(-0.5)), rtol=1e-15)


def test_float32_stays_float32_and_nothing_is_modified(backend):
    rng = np.random.default_rng(5)
    x_np = rng.standard_normal((2, 3, 3, 2)).astype(np.float32)
    dy_np = rng.standard_normal(x_np.shape).astype(np.float32)
    x, dy = backend.asarray(x_np), backend.asarray(dy_np)
    module = SimAM()
    y = module.forward(x)
    dx = module.backward(dy)
    assert y.dtype == backend.dtype("float32") and dx.dtype == backend.dtype("float32")
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_np)
    y_ref, _ = ref_simam(x_np.astype(np.float64), 1e-4)
    np.testing.assert_allclose(backend.to_numpy(y), y_ref, rtol=1e-5, atol=1e-6)


def test_bad_input(backend):
    with pytest.raises(ValueError, match="simam: argument 'x' expected at least 2 positions"):
        simam_forward(backend.asarray(np.zeros((2, 3, 1, 1))))
    with pytest.raises(ValueError, match="SimAM: argument 'lambda_' expected a float > 0"):
        SimAM(0.0)
    with pytest.raises(TypeError, match="SimAM: argument 'lambda_' expected a float"):
        SimAM("1e-4")
    with pytest.raises(ValueError, match="SimAM: argument 'x' expected 4 dimensions"):
        SimAM().forward(backend.asarray(np.zeros((3, 2, 2))))
    with pytest.raises(ValueError, match="simam: argument 'params' expected the keys \\[\\]"):
        simam_forward(backend.asarray(np.zeros((1, 1, 2, 2))), {"weight": np.ones(1)})


def test_matches_pytorch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 5))
    dy = np.random.default_rng(1).standard_normal(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    n = x.shape[2] * x.shape[3] - 1
    d = (tx - tx.mean(dim=(2, 3), keepdim=True)) ** 2
    ty = tx * torch.sigmoid(d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + 1e-4)) + 0.5)
    ty.backward(torch.tensor(dy))
    module = SimAM(1e-4)
    np.testing.assert_allclose(module.forward(x), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(module.backward(dy), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("block_bytes, blocks", [(8, 15), (400, 9), (10**9, 1)])
def test_blocks_and_threads_agree_with_one_block(monkeypatch, block_bytes, blocks):
    """Runs of one or two channels (8 and 400 bytes a block; a channel is 192), the whole
    array, and two threads give what one block gives."""
    from blocking import in_blocks, one_block
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 4, 6))
    dy = rng.standard_normal(x.shape)

    def both():
        y, cache = simam_forward(x)
        return y, simam_backward(dy, cache)[0], cache.map

    y_one, dx_one, map_one = one_block(monkeypatch, both)
    y, dx, map_ = in_blocks(monkeypatch, block_bytes, both, x, blocks)
    np.testing.assert_allclose(y, y_one, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dx, dx_one, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(map_, map_one, rtol=1e-14)
