"""SpatialTransformer: forward against an independent SciPy reference, the identity at
initialisation, gradients by finite differences (check_module) on Hypothesis-drawn sizes, the
pure pair against the module, dtypes, no mutation, bad input, and PyTorch where installed."""

from __future__ import annotations

import numpy as np
import pytest
from blocks_reference import host_params
from hypothesis import given, settings
from sampling_blocks_reference import float32_round_trip
from hypothesis import strategies as st
from scipy import ndimage, signal

from npattn.blocks.spatial_transformer import (IDENTITY_THETA, SpatialTransformer,
                                               spatial_transformer_backward,
                                               spatial_transformer_forward)
from npattn.gradcheck import check_module


# Full-mode finite differences of a whole block on array_api_strict take about a second per
# example: at most 10 of them (fewer if the profile asks for fewer).
few_examples = settings(max_examples=min(10, settings.default.max_examples))


def ref_spatial_transformer(x, p):
    """The block with SciPy's correlation and order-1 map_coordinates; returns (y, theta)."""
    n, c, h, w = x.shape
    wc, bc = p["localization.0.weight"], p["localization.0.bias"]
    hidden, _, kh, kw = wc.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    z = np.stack([np.stack([bc[o] + sum(signal.correlate(xpad[b, ci], wc[o, ci], mode="valid")
                                        for ci in range(c)) for o in range(hidden)])
                  for b in range(n)])
    h2, w2 = h // 2, w // 2
    pooled = z[:, :, :2 * h2, :2 * w2].reshape(n, hidden, h2, 2, w2, 2).max(axis=(3, 5))
    theta = (np.maximum(pooled, 0).reshape(n, -1) @ p["fc_loc.weight"].T
             + p["fc_loc.bias"]).reshape(n, 2, 3)
    u = (2 * np.arange(w) + 1) / w - 1                        # pixel centres, align_corners=False
    v = (2 * np.arange(h) + 1) / h - 1
    y = np.zeros_like(x)
    for b in range(n):
        gx = theta[b, 0, 0] * u[None, :] + theta[b, 0, 1] * v[:, None] + theta[b, 0, 2]
        gy = theta[b, 1, 0] * u[None, :] + theta[b, 1, 1] * v[:, None] + theta[b, 1, 2]
        coords = [((gy + 1) * h - 1) / 2, ((gx + 1) * w - 1) / 2]
        for ci in range(c):
            y[b, ci] = ndimage.map_coordinates(x[b, ci], coords, order=1, mode="grid-constant")
    return y, theta


def perturbed(module, rng, scale=0.3):
    """Give ``fc_loc`` a random weight and a theta away from the identity, so the gradient
    reaches the localization network and the sample points fall between pixel centres."""
    p = module.params
    p["fc_loc.weight"] = 0.05 * rng.standard_normal(tuple(p["fc_loc.weight"].shape))
    p["fc_loc.bias"] = np.asarray(IDENTITY_THETA) + scale * rng.uniform(-1, 1, 6)
    return module


@st.composite
def cases(draw, n_max=2):
    c, hidden = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    size = (draw(st.integers(2, 4)), draw(st.integers(2, 4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    module = SpatialTransformer(c, size, hidden, kernel_size=draw(st.sampled_from([1, 3])),
                                rng=rng, dtype="float64")
    x = rng.standard_normal((draw(st.integers(1, n_max)), c, *size))
    return perturbed(module, rng), x


@given(case=cases())
def test_forward_matches_reference(backend, case):
    module, x = case
    y_ref, theta = ref_spatial_transformer(x, host_params(module))
    module.to(backend.xp)
    y, cache = spatial_transformer_forward(backend.asarray(x), dict(module.params))
    np.testing.assert_allclose(backend.to_numpy(y), y_ref, rtol=1e-10, atol=1e-12)
    assert tuple(cache.map.shape) == (x.shape[0], *x.shape[2:], 2)


@few_examples
@given(case=cases(n_max=1))
def test_backward_matches_finite_differences(backend, case):
    module, x = case
    module.to(backend.xp)
    report = check_module(module, backend.asarray(x), rng=0)
    report.raise_if_failed()
    assert {c.name for c in report.inputs} == {"x", *module.params}


def test_fresh_block_is_the_identity(backend):
    module = SpatialTransformer(3, (6, 5), rng=0, dtype="float64").to(backend.xp)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 5))
    np.testing.assert_allclose(backend.to_numpy(module.forward(backend.asarray(x))), x,
                               rtol=0, atol=1e-14)
    np.testing.assert_array_equal(backend.to_numpy(module.params["fc_loc.weight"]), 0.0)
    np.testing.assert_array_equal(backend.to_numpy(module.params["fc_loc.bias"]), IDENTITY_THETA)


def test_directional_gradient_at_a_realistic_size(backend):
    rng = np.random.default_rng(2)
    module = perturbed(SpatialTransformer(8, (16, 16), 8, rng=rng, dtype="float64"), rng)
    x = rng.standard_normal((2, 8, 16, 16))
    module.to(backend.xp)
    check_module(module, backend.asarray(x), mode="directional", rng=0).raise_if_failed()


def test_pure_pair_matches_module(backend):
    rng = np.random.default_rng(3)
    module = perturbed(SpatialTransformer(2, (4, 6), 3, rng=rng, dtype="float64"), rng).to(backend.xp)
    x = backend.asarray(rng.standard_normal((2, 2, 4, 6)))
    dy = backend.asarray(rng.standard_normal((2, 2, 4, 6)))
    y, cache = spatial_transformer_forward(x, dict(module.params))
    dx, dparams = spatial_transformer_backward(dy, cache)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(module.forward(x)))
    np.testing.assert_array_equal(backend.to_numpy(dx), backend.to_numpy(module.backward(dy)))
    assert set(dparams) == set(module.params)
    for name, g in dparams.items():
        np.testing.assert_array_equal(backend.to_numpy(g), backend.to_numpy(module.grads[name]))
    np.testing.assert_array_equal(backend.to_numpy(module.attention_map(x)), backend.to_numpy(cache.map))


def test_float32_stays_float32_and_nothing_is_modified(backend):
    rng = np.random.default_rng(4)
    module = perturbed(SpatialTransformer(2, (4, 4), 2, rng=rng), rng).to("float32").to(backend.xp)
    y, x_np, params_before = float32_round_trip(backend, module, rng, (2, 2, 4, 4))
    y_ref, _ = ref_spatial_transformer(x_np.astype(np.float64), params_before)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-5)


def test_bad_input(backend):
    module = SpatialTransformer(2, (4, 6), rng=0, dtype="float64").to(backend.xp)
    with pytest.raises(ValueError, match=r"SpatialTransformer: argument 'x' expected spatial size \(4, 6\)"):
        module.forward(backend.asarray(np.zeros((1, 2, 6, 4))))
    with pytest.raises(ValueError, match="SpatialTransformer: argument 'x' expected 2 channels"):
        module.forward(backend.asarray(np.zeros((1, 3, 4, 6))))
    with pytest.raises(ValueError, match="SpatialTransformer: argument 'input_size' expected values >= 2"):
        SpatialTransformer(2, (1, 6))
    with pytest.raises(ValueError, match="SpatialTransformer: argument 'kernel_size' expected an odd int"):
        SpatialTransformer(2, 4, kernel_size=2)
    params = dict(module.params)
    with pytest.raises(ValueError, match=r"spatial_transformer: argument 'params\['fc_loc.weight'\]' "
                                         r"expected shape \(6, 96\)"):
        spatial_transformer_forward(backend.asarray(np.zeros((1, 2, 8, 6))), params)
    del params["fc_loc.bias"]
    with pytest.raises(ValueError, match="spatial_transformer: argument 'params' expected the keys"):
        spatial_transformer_forward(backend.asarray(np.zeros((1, 2, 4, 6))), params)


def test_matches_pytorch_after_loading_its_state_dict():
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class TorchSTN(nn.Module):
        def __init__(self, c, size, hidden):
            super().__init__()
            self.localization = nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1), nn.MaxPool2d(2),
                                              nn.ReLU())
            self.fc_loc = nn.Linear(hidden * (size[0] // 2) * (size[1] // 2), 6)

        def forward(self, x):
            theta = self.fc_loc(self.localization(x).flatten(1)).view(-1, 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            return F.grid_sample(x, grid, align_corners=False)

    torch.manual_seed(0)
    reference = TorchSTN(3, (6, 7), 4).double()
    with torch.no_grad():
        reference.fc_loc.weight.mul_(0.1)
    module = SpatialTransformer(3, (6, 7), 4, dtype="float64")
    module.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((2, 3, 6, 7))
    tx = torch.tensor(x, requires_grad=True)
    reference(tx).backward(torch.tensor(dy))
    np.testing.assert_allclose(module.forward(x), reference(tx).detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(module.backward(dy), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(module.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-11)
