"""PyramidSpatialAttention: forward against explicit loops (channel pools, PyTorch's adaptive
bins, bilinear taps with align_corners=False, the convolution), gradients by finite differences
(check_module) on Hypothesis-drawn sizes, scales and kernels, properties (scale 1 alone is CBAM's
spatial attention, maps in [0, 1], zero weights halve x, channel order ignored, the first-max
tie rule), the pure pair against the module, dtypes, no mutation, bad input, and PyTorch where
installed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from blocks_reference import host_params, sigmoid
from hypothesis import given
from hypothesis import strategies as st

from npattn.blocks import (PyramidSpatialAttention, SpatialAttention,
                           pyramid_spatial_attention_backward, pyramid_spatial_attention_forward)
from npattn.blocks._registry import tie_free
from npattn.gradcheck import check_module

seeds = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------------------- the reference

def ref_adaptive_avg_pool(f, out_h, out_w):
    """Bin i of an axis of length L cut into n bins: [floor(i L / n), ceil((i + 1) L / n))."""
    n_, c_, h, w = f.shape
    v = np.zeros((n_, c_, out_h, out_w))
    for i in range(out_h):
        h0, h1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)
        for j in range(out_w):
            w0, w1 = (j * w) // out_w, -((-(j + 1) * w) // out_w)
            v[:, :, i, j] = f[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return v


def ref_taps(n_in, n_out):
    """(i0, i1, weight of i1) per output index: PyTorch's bilinear with align_corners=False."""
    taps = []
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        taps.append((i0, i1, src - i0))
    return taps


def ref_upsample(v, h, w):
    out = np.zeros(v.shape[:2] + (h, w))
    for i, (a0, a1, la) in enumerate(ref_taps(v.shape[2], h)):
        for j, (b0, b1, lb) in enumerate(ref_taps(v.shape[3], w)):
            out[:, :, i, j] = ((1 - la) * (1 - lb) * v[:, :, a0, b0] + (1 - la) * lb * v[:, :, a0, b1]
                               + la * (1 - lb) * v[:, :, a1, b0] + la * lb * v[:, :, a1, b1])
    return out


def ref_same_conv(g, weight, bias):
    """One output channel, zero padding k // 2, by loops."""
    n_, _, h, w = g.shape
    kh, kw = weight.shape[2:]
    gp = np.zeros(g.shape[:2] + (h + kh - 1, w + kw - 1))
    gp[:, :, kh // 2:kh // 2 + h, kw // 2:kw // 2 + w] = g
    z = np.full((n_, 1, h, w), bias)
    for b in range(n_):
        for i in range(h):
            for j in range(w):
                z[b, 0, i, j] += np.sum(weight[0] * gp[b, :, i:i + kh, j:j + kw])
    return z


def ref_pyramid(x, p, scales):
    """The block written from its definition; returns (y, map)."""
    _, _, h, w = x.shape
    f = np.stack([x.mean(axis=1), x.max(axis=1)], axis=1)           # (N, 2, H, W)
    levels = []
    for s in scales:
        if s == 1:
            levels.append(f)
        else:
            levels.append(ref_upsample(ref_adaptive_avg_pool(f, max(1, h // s), max(1, w // s)), h, w))
    bias = p["conv.bias"][0] if "conv.bias" in p else 0.0
    m = sigmoid(ref_same_conv(np.concatenate(levels, axis=1), p["conv.weight"], bias))
    return x * m, m


def test_reference_upsampling_matches_pytorchs_documented_example():
    # torch.nn.functional.interpolate(arange(1., 5.).view(1, 1, 2, 2), size=4, mode="bilinear")
    v = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    np.testing.assert_allclose(ref_upsample(v, 4, 4)[0, 0, 0], [1.0, 1.25, 1.75, 2.0])
    np.testing.assert_allclose(ref_upsample(v, 4, 4)[0, 0, :, 0], [1.0, 1.5, 2.5, 3.0])


# ---------------------------------------------------------------------------------- the draws

@st.composite
def pyramid_cases(draw):
    """A float64 block and a tie-free input: batch 1-2, channels 1-3, H and W 1-6, two or three
    distinct scales from 1-4 in any order, odd kernels 1-5, with or without bias."""
    scales = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3, unique=True)))
    module = PyramidSpatialAttention(draw(st.sampled_from([1, 3, 5])), scales,
                                     bias=draw(st.booleans()), rng=draw(seeds), dtype="float64")
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 6)),
             draw(st.integers(1, 6)))
    return module, tie_free(np.random.default_rng(draw(seeds)), shape)


@given(case=pyramid_cases())
def test_forward_and_map_match_reference(backend, case):
    module, x = case
    y_ref, m_ref = ref_pyramid(x, host_params(module), module.scales)
    module.to(backend.xp)
    xb = backend.asarray(x)
    np.testing.assert_allclose(backend.to_numpy(module.forward(xb)), y_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(module.attention_map(xb)), m_ref, rtol=1e-12,
                               atol=1e-14)


@given(case=pyramid_cases())
def test_backward_matches_finite_differences(backend, case):
    module, x = case
    module.to(backend.xp)
    report = check_module(module, backend.asarray(x), rng=0)
    report.raise_if_failed()
    assert {c.name for c in report.inputs} == {"x", *module.params}


# --------------------------------------------------------------------------------- properties

def test_scale_one_alone_is_cbams_spatial_attention(backend):
    rng = np.random.default_rng(0)
    sa = SpatialAttention(3, bias=True, rng=1, dtype="float64").to(backend.xp)
    psa = PyramidSpatialAttention(3, scales=(1,), bias=True, rng=1, dtype="float64").to(backend.xp)
    x = backend.asarray(tie_free(rng, (2, 3, 4, 5)))
    dy = backend.asarray(rng.standard_normal((2, 3, 4, 5)))
    np.testing.assert_array_equal(backend.to_numpy(psa.forward(x)), backend.to_numpy(sa.forward(x)))
    np.testing.assert_array_equal(backend.to_numpy(psa.backward(dy)), backend.to_numpy(sa.backward(dy)))
    for name in sa.params:
        np.testing.assert_array_equal(backend.to_numpy(psa.grads[name]), backend.to_numpy(sa.grads[name]))


def test_a_level_pooled_to_one_bin_is_the_descriptors_mean(backend):
    # H // 8 and W // 8 are 0 -> one bin: the level is the mean of f over all positions,
    # upsampled as a constant, so only the sum of its kernel taps matters.
    rng = np.random.default_rng(1)
    x = tie_free(rng, (2, 3, 5, 6))
    module = PyramidSpatialAttention(1, scales=(8,), rng=2, dtype="float64")
    w = host_params(module)["conv.weight"][0, :, 0, 0]
    f_mean = np.stack([x.mean(axis=1), x.max(axis=1)], axis=1).mean(axis=(2, 3))  # (N, 2)
    m = sigmoid(f_mean @ w)[:, None, None, None]
    module.to(backend.xp)
    np.testing.assert_allclose(backend.to_numpy(module.forward(backend.asarray(x))), x * m,
                               rtol=1e-13)


@given(seed=seeds, shape=st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 5),
                                   st.integers(1, 5)))
def test_map_ignores_channel_order(backend, seed, shape):
    rng = np.random.default_rng(seed)
    module = PyramidSpatialAttention(3, bias=True, rng=rng, dtype="float64").to(backend.xp)
    x = tie_free(rng, shape)
    permuted = x[:, rng.permutation(shape[1])]
    np.testing.assert_allclose(backend.to_numpy(module.attention_map(backend.asarray(permuted))),
                               backend.to_numpy(module.attention_map(backend.asarray(x))),
                               rtol=1e-12, atol=1e-14)


def test_maps_lie_in_unit_interval_even_for_huge_weights(backend):
    module = PyramidSpatialAttention(3, bias=True, rng=0, dtype="float64")
    module.params["conv.weight"] = module.params["conv.weight"] * 1e4
    module.to(backend.xp)
    x = backend.asarray(tie_free(np.random.default_rng(0), (2, 4, 5, 5), spread=50.0))
    m = backend.to_numpy(module.attention_map(x))
    assert np.all(np.isfinite(m)) and np.all((m >= 0) & (m <= 1))
    assert m.min() < 1e-6 and m.max() > 1 - 1e-6
    module.forward(x)
    dx = module.backward(backend.asarray(np.random.default_rng(1).standard_normal((2, 4, 5, 5))))
    assert np.all(np.isfinite(backend.to_numpy(dx)))


def test_all_weights_zero_gives_half_the_input(backend):
    module = PyramidSpatialAttention(5, bias=True, rng=0, dtype="float64")
    for name, p in module.params.items():
        module.params[name] = p * 0.0
    module.to(backend.xp)
    x = tie_free(np.random.default_rng(0), (2, 3, 4, 4))
    np.testing.assert_array_equal(backend.to_numpy(module.forward(backend.asarray(x))), x / 2)


def test_channel_max_tie_sends_the_gradient_to_the_first_channel(backend):
    # Channels 1 and 3 hold the maximum at every position; only the max path's gradient can
    # tell them apart: with the product and mean paths subtracted, channel 1 gets all of it.
    rng = np.random.default_rng(3)
    x = rng.uniform(-1.0, 0.0, (1, 4, 3, 4))
    x[:, 3] = x[:, 1] = rng.uniform(1.0, 2.0, (1, 3, 4))
    module = PyramidSpatialAttention(3, rng=4, dtype="float64").to(backend.xp)
    y, cache = pyramid_spatial_attention_forward(backend.asarray(x), dict(module.params))
    dy = rng.standard_normal(x.shape)
    dx = backend.to_numpy(pyramid_spatial_attention_backward(backend.asarray(dy), cache)[0])
    m = backend.to_numpy(cache.map)
    shared = dx - dy * m                                  # remove the product path
    shared = shared - shared[:, 0:1]                      # channel 0 has only the mean path
    np.testing.assert_allclose(shared[:, [2, 3]], 0.0, atol=1e-14)
    assert np.all(np.abs(shared[:, 1]) > 1e-8)            # the whole max gradient is on channel 1


def test_pure_pair_matches_module(backend):
    module = PyramidSpatialAttention(3, scales=(4, 1, 2), bias=True, rng=2,
                                     dtype="float64").to(backend.xp)
    x = backend.asarray(tie_free(np.random.default_rng(0), (2, 3, 5, 4)))
    dy = backend.asarray(np.random.default_rng(1).standard_normal((2, 3, 5, 4)))
    y, cache = pyramid_spatial_attention_forward(x, dict(module.params), (4, 1, 2))
    dx, dparams = pyramid_spatial_attention_backward(dy, cache)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(module.forward(x)))
    np.testing.assert_array_equal(backend.to_numpy(dx), backend.to_numpy(module.backward(dy)))
    assert set(dparams) == {"conv.weight", "conv.bias"}
    for name, g in dparams.items():
        np.testing.assert_array_equal(backend.to_numpy(g), backend.to_numpy(module.grads[name]))


def test_float32_stays_float32_and_nothing_is_modified(backend):
    module = PyramidSpatialAttention(3, bias=True, rng=3).to(backend.xp)
    params_before = host_params(module)
    rng = np.random.default_rng(5)
    x_np = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    dy_np = rng.standard_normal(x_np.shape).astype(np.float32)
    x, dy = backend.asarray(x_np), backend.asarray(dy_np)
    y = module.forward(x)
    dx = module.backward(dy)
    assert y.dtype == backend.dtype("float32") and dx.dtype == backend.dtype("float32")
    assert all(g.dtype == backend.dtype("float32") for g in module.grads.values())
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_np)
    for name, p in host_params(module).items():
        np.testing.assert_array_equal(p, params_before[name])
    y_ref, _ = ref_pyramid(x_np.astype(np.float64), params_before, (1, 2, 4))
    np.testing.assert_allclose(backend.to_numpy(y), y_ref, rtol=1e-5, atol=1e-6)


def test_parameter_shape_and_repr():
    module = PyramidSpatialAttention(5, scales=[1, 3], rng=0)
    assert module.scales == (1, 3)
    assert {k: tuple(v.shape) for k, v in module.params.items()} == {"conv.weight": (1, 4, 5, 5)}
    assert repr(module) == "PyramidSpatialAttention(kernel_size=5, scales=(1, 3), bias=False)"
    bound = 1 / math.sqrt(4 * 25)                          # PyTorch's default: 1 / sqrt(fan_in)
    assert np.all(np.abs(module.params["conv.weight"]) <= bound)


def test_bad_input(backend):
    name = "PyramidSpatialAttention"
    with pytest.raises(ValueError, match=f"{name}: argument 'scales' expected distinct scales"):
        PyramidSpatialAttention(scales=(1, 2, 2))
    with pytest.raises(ValueError, match=f"{name}: argument 'scales' expected an int >= 1"):
        PyramidSpatialAttention(scales=(0, 2))
    with pytest.raises(ValueError, match=f"{name}: argument 'scales' expected a non-empty tuple"):
        PyramidSpatialAttention(scales=())
    with pytest.raises(TypeError, match=f"{name}: argument 'scales' expected a non-empty tuple"):
        PyramidSpatialAttention(scales=2)
    with pytest.raises(ValueError, match=f"{name}: argument 'kernel_size' expected an odd int"):
        PyramidSpatialAttention(4)
    with pytest.raises(ValueError, match=f"{name}: argument 'x' expected 4 dimensions"):
        PyramidSpatialAttention(3).forward(backend.asarray(np.zeros((2, 3, 4), np.float32)))
    module = PyramidSpatialAttention(3, rng=0, dtype="float64").to(backend.xp)
    x = backend.asarray(np.zeros((1, 2, 4, 4)))
    op = "pyramid_spatial_attention"
    with pytest.raises(ValueError, match=f"{op}: argument 'params\\['conv.weight'\\]' expected "
                                         "shape \\(1, 4, 3, 3\\)"):
        pyramid_spatial_attention_forward(x, dict(module.params), scales=(1, 2))
    with pytest.raises(TypeError, match=f"{op}: argument 'params\\['conv.weight'\\]' expected dtype"):
        pyramid_spatial_attention_forward(backend.asarray(np.zeros((1, 2, 4, 4), np.float32)),
                                          dict(module.params))
    with pytest.raises(ValueError, match=f"{op}: argument 'params' expected the keys"):
        pyramid_spatial_attention_forward(x, {"weight": module.params["conv.weight"]})


def test_matches_pytorch():
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    rng = np.random.default_rng(0)
    x = tie_free(rng, (2, 5, 7, 9))
    dy = rng.standard_normal(x.shape)
    module = PyramidSpatialAttention(5, scales=(1, 2, 4), bias=True, rng=1, dtype="float64")
    tw = torch.tensor(np.asarray(module.params["conv.weight"]), requires_grad=True)
    tb = torch.tensor(np.asarray(module.params["conv.bias"]), requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    f = torch.cat([tx.mean(dim=1, keepdim=True), tx.amax(dim=1, keepdim=True)], dim=1)
    levels = [f] + [fn.interpolate(fn.adaptive_avg_pool2d(f, (7 // s, 9 // s)), size=(7, 9),
                                   mode="bilinear", align_corners=False) for s in (2, 4)]
    ty = tx * torch.sigmoid(fn.conv2d(torch.cat(levels, dim=1), tw, tb, padding=2))
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(module.forward(x), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(module.backward(dy), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(module.grads["conv.weight"], tw.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(module.grads["conv.bias"], tb.grad.numpy(), rtol=1e-10)
