"""DeformConv2d: forward against an independent SciPy reference, a convolution at initialisation,
gradients by finite differences (check_module) on Hypothesis-drawn sizes, the pure pair against
the module, dtypes, no mutation, bad input, and PyTorch's autograd where installed."""

from __future__ import annotations

import numpy as np
import pytest
from blocks_reference import host_params
from hypothesis import given, settings
from sampling_blocks_reference import float32_round_trip
from hypothesis import strategies as st
from scipy import ndimage

from npattn.blocks.deform import DeformConv2d, deform_block_backward, deform_block_forward
from npattn.gradcheck import check_module
from npattn.ops import conv2d_forward

# Full-mode finite differences of a whole block on array_api_strict take about a second per
# example: at most 10 of them (fewer if the profile asks for fewer).
few_examples = settings(max_examples=min(10, settings.default.max_examples))


def correlate(x, w, b, stride, padding, dilation, groups=1):
    """A plain convolution by einsum over the taps."""
    n, c, h, wd = x.shape
    o, cw, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((n, o, ho, wo)) + b[None, :, None, None]
    og = o // groups
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            for g in range(groups):
                y[:, g * og:(g + 1) * og] += np.einsum("oc,nchw->nohw", w[g * og:(g + 1) * og, :, i, j],
                                                       win[:, g * cw:(g + 1) * cw])
    return y


def ref_deform_block(x, p, stride, padding, dilation, offset_groups, modulated):
    """The block with SciPy's order-1 map_coordinates as the bilinear read; returns (y, offset)."""
    n, c, h, wd = x.shape
    w = p["weight"]
    o, cw, kh, kw = w.shape
    taps = offset_groups * kh * kw
    om = correlate(x, p["conv_offset.weight"], p["conv_offset.bias"], stride, padding, dilation)
    ho, wo = om.shape[2:]
    offset = om[:, :2 * taps]
    mask = 1 / (1 + np.exp(-om[:, 2 * taps:])) if modulated else np.ones((n, taps, ho, wo))
    rows = np.arange(ho)[:, None] * stride[0] - padding[0]
    cols = np.arange(wo)[None, :] * stride[1] - padding[1]
    cg, groups = c // offset_groups, c // cw
    samples = np.zeros((n, c, kh, kw, ho, wo))                 # mask * bilinear(x, point)
    for b in range(n):
        for ch in range(c):
            g = ch // cg
            for i in range(kh):
                for j in range(kw):
                    t = g * kh * kw + i * kw + j
                    py = rows + i * dilation[0] + offset[b, 2 * t]
                    px = cols + j * dilation[1] + offset[b, 2 * t + 1]
                    samples[b, ch, i, j] = mask[b, t] * ndimage.map_coordinates(
                        x[b, ch], [py, px], order=1, mode="grid-constant")
    og = o // groups
    y = np.zeros((n, o, ho, wo)) + (p["bias"][None, :, None, None] if "bias" in p else 0.0)
    for gw in range(groups):
        y[:, gw * og:(gw + 1) * og] += np.einsum("ocij,ncijhw->nohw", w[gw * og:(gw + 1) * og],
                                                 samples[:, gw * cw:(gw + 1) * cw])
    return y, offset


def perturbed(module, rng):
    """Give the offset predictor small weights and biases off the integers, so every sample
    point lies between pixel lines (a fresh block samples exactly on them)."""
    p = module.params
    shape = tuple(p["conv_offset.bias"].shape)
    p["conv_offset.weight"] = 0.02 * rng.standard_normal(tuple(p["conv_offset.weight"].shape))
    p["conv_offset.bias"] = rng.integers(-1, 2, shape) + 0.35 + 0.3 * rng.random(shape)
    return module


@st.composite
def cases(draw, n_max=2, hw_max=5, k_max=(3, 2)):
    groups, offset_groups = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    c = groups * offset_groups
    k = (draw(st.integers(1, k_max[0])), draw(st.integers(1, k_max[1])))
    padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    stride = (draw(st.integers(1, 2)), 1)
    size = tuple(draw(st.integers(max(1, kk - 2 * pp), max(kk, hw_max))) for kk, pp in zip(k, padding))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    module = DeformConv2d(c, groups * draw(st.integers(1, 2)), k, stride, padding, 1, groups,
                          offset_groups, bias=draw(st.booleans()), modulated=draw(st.booleans()),
                          rng=rng, dtype="float64")
    x = rng.standard_normal((draw(st.integers(1, n_max)), c, *size))
    return perturbed(module, rng), x


def hyper(module):
    return module.stride, module.padding, module.dilation, module.offset_groups


@given(case=cases())
def test_forward_matches_reference(backend, case):
    module, x = case
    y_ref, offset_ref = ref_deform_block(x, host_params(module), *hyper(module), module.modulated)
    module.to(backend.xp)
    y, cache = deform_block_forward(backend.asarray(x), dict(module.params), *hyper(module))
    np.testing.assert_allclose(backend.to_numpy(y), y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(cache.map), offset_ref, rtol=1e-12, atol=1e-13)


@few_examples
@given(case=cases(n_max=1, hw_max=3, k_max=(2, 1)))   # the predictor has 3 G k^2 C k^2 weights
def test_backward_matches_finite_differences(backend, case):
    module, x = case
    module.to(backend.xp)
    report = check_module(module, backend.asarray(x), rng=0)
    report.raise_if_failed()
    assert {c.name for c in report.inputs} == {"x", *module.params}


@pytest.mark.parametrize("modulated", [True, False])
def test_fresh_block_is_a_convolution(backend, modulated):
    # Zero offsets sample the regular grid; the mask starts at sigmoid(0) = 1/2.
    module = DeformConv2d(4, 6, 3, padding=1, groups=2, offset_groups=2, modulated=modulated,
                          rng=0, dtype="float64").to(backend.xp)
    x = backend.asarray(np.random.default_rng(1).standard_normal((2, 4, 5, 6)))
    p = module.params
    conv, _ = conv2d_forward(x, p["weight"], None, padding=1, groups=2)
    scale = 0.5 if modulated else 1.0
    want = scale * backend.to_numpy(conv) + backend.to_numpy(p["bias"])[None, :, None, None]
    np.testing.assert_allclose(backend.to_numpy(module.forward(x)), want, rtol=1e-12, atol=1e-12)
    assert tuple(p["conv_offset.weight"].shape) == ((3 if modulated else 2) * 2 * 9, 4, 3, 3)
    np.testing.assert_array_equal(backend.to_numpy(p["conv_offset.weight"]), 0.0)
    np.testing.assert_array_equal(backend.to_numpy(p["conv_offset.bias"]), 0.0)


def test_directional_gradient_at_a_realistic_size(backend):
    rng = np.random.default_rng(2)
    module = perturbed(DeformConv2d(8, 8, 3, padding=1, offset_groups=2, rng=rng, dtype="float64"), rng)
    x = rng.standard_normal((2, 8, 12, 12))
    module.to(backend.xp)
    check_module(module, backend.asarray(x), mode="directional", rng=0).raise_if_failed()


@pytest.mark.parametrize("modulated", [True, False])
def test_pure_pair_matches_module(backend, modulated):
    rng = np.random.default_rng(3)
    module = perturbed(DeformConv2d(2, 3, (3, 2), padding=1, bias=False, modulated=modulated,
                                    rng=rng, dtype="float64"), rng).to(backend.xp)
    x = backend.asarray(rng.standard_normal((2, 2, 4, 5)))
    y, cache = deform_block_forward(x, dict(module.params), *hyper(module))
    dy = backend.asarray(rng.standard_normal(tuple(y.shape)))
    dx, dparams = deform_block_backward(dy, cache)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(module.forward(x)))
    np.testing.assert_array_equal(backend.to_numpy(dx), backend.to_numpy(module.backward(dy)))
    assert set(dparams) == set(module.params) == {"weight", "conv_offset.weight", "conv_offset.bias"}
    for name, g in dparams.items():
        np.testing.assert_array_equal(backend.to_numpy(g), backend.to_numpy(module.grads[name]))
    np.testing.assert_array_equal(backend.to_numpy(module.attention_map(x)), backend.to_numpy(cache.map))


def test_float32_stays_float32_and_nothing_is_modified(backend):
    rng = np.random.default_rng(4)
    module = perturbed(DeformConv2d(2, 2, 3, padding=1, rng=rng), rng).to("float32").to(backend.xp)
    y, x_np, params_before = float32_round_trip(backend, module, rng, (2, 2, 4, 4))
    y_ref, _ = ref_deform_block(x_np.astype(np.float64), params_before, *hyper(module), True)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-5)


def test_bad_input(backend):
    with pytest.raises(ValueError, match="DeformConv2d: argument 'groups' expected a divisor of out_channels = 3"):
        DeformConv2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="DeformConv2d: argument 'offset_groups' expected a divisor of in_channels = 4"):
        DeformConv2d(4, 4, 3, offset_groups=3)
    with pytest.raises(TypeError, match="DeformConv2d: argument 'modulated' expected a bool"):
        DeformConv2d(4, 4, 3, modulated=1)
    module = DeformConv2d(4, 4, 3, rng=0, dtype="float64").to(backend.xp)
    with pytest.raises(ValueError, match="DeformConv2d: argument 'x' expected 4 channels"):
        module.forward(backend.asarray(np.zeros((1, 3, 5, 5))))
    params = dict(module.params)
    x = backend.asarray(np.zeros((1, 4, 5, 5)))
    with pytest.raises(ValueError, match=r"deform_block: argument 'params\['conv_offset.weight'\]' "
                                         r"expected 36 \(offsets\) or 54"):
        deform_block_forward(x, params, offset_groups=2)
    del params["conv_offset.bias"]
    with pytest.raises(ValueError, match="deform_block: argument 'params' expected the keys"):
        deform_block_forward(x, params)


def test_matches_pytorch_autograd():
    # A deformable convolution written with PyTorch's grid_sample (align_corners=True maps
    # normalised -1..1 onto pixel centres 0..S-1; zero padding is the same bilinear read), and
    # its gradients by autograd: an independent check of the whole backward.
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    module = perturbed(DeformConv2d(4, 3, 3, stride=(1, 2), padding=1, offset_groups=2, rng=rng,
                                    dtype="float64"), rng)
    x = rng.standard_normal((2, 4, 5, 6))
    dy_shape = (2, 3, 5, 3)
    dy = rng.standard_normal(dy_shape)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in host_params(module).items()}
    tx = torch.tensor(x, requires_grad=True)

    om = F.conv2d(tx, t["conv_offset.weight"], t["conv_offset.bias"], (1, 2), 1)
    n, c, h, w = x.shape
    ho, wo = om.shape[2:]
    offset, mask = om[:, :36], torch.sigmoid(om[:, 36:])
    rows = torch.arange(ho, dtype=torch.float64)[:, None] - 1
    cols = torch.arange(wo, dtype=torch.float64)[None, :] * 2 - 1
    cols_out = []
    for ch in range(c):
        g = ch // 2
        taps = []
        for i in range(3):
            for j in range(3):
                tap = g * 9 + i * 3 + j
                py = rows + i + offset[:, 2 * tap]
                px = cols + j + offset[:, 2 * tap + 1]
                grid = torch.stack([2 * px / (w - 1) - 1, 2 * py / (h - 1) - 1], dim=-1)
                v = F.grid_sample(tx[:, ch:ch + 1], grid, "bilinear", "zeros", align_corners=True)
                taps.append(mask[:, tap] * v[:, 0])
        cols_out.append(torch.stack(taps, dim=1))                    # (N, 9, ho, wo)
    sampled = torch.stack(cols_out, dim=1)                           # (N, C, 9, ho, wo)
    y_t = torch.einsum("ock,nckhw->nohw", t["weight"].reshape(3, 4, 9), sampled)
    y_t = y_t + t["bias"][None, :, None, None]
    y_t.backward(torch.tensor(dy))

    np.testing.assert_allclose(module.forward(x), y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(module.backward(dy), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for name, p in t.items():
        np.testing.assert_allclose(module.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-11)
