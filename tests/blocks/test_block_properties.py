"""Properties the blocks must have: permutation invariances of the maps, maps in [0, 1], the
output with all weights zero, ECA's kernel rule, and the first-maximum tie rule."""

from __future__ import annotations

import numpy as np
import pytest
from blocks_reference import build
from hypothesis import given
from hypothesis import strategies as st

from npattn.blocks import CBAM, ECA, SpatialAttention, eca_kernel_size
from npattn.blocks._registry import tie_free

CHANNEL_GATES = ["SE", "ECA", "ChannelAttention"]
SINGLE_GATES = CHANNEL_GATES + ["SpatialAttention"]
seeds = st.integers(0, 2**32 - 1)
shapes = st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4))


def zeroed(module):
    for name, p in module.params.items():
        module.params[name] = p * 0.0
    return module


@given(shape=shapes, k=st.sampled_from([1, 3, 5]), seed=seeds)
def test_spatial_map_ignores_channel_order(backend, shape, k, seed):
    rng = np.random.default_rng(seed)
    module = SpatialAttention(k, bias=True, rng=rng, dtype="float64").to(backend.xp)
    x = tie_free(rng, shape)
    permuted = x[:, rng.permutation(shape[1])]
    np.testing.assert_allclose(backend.to_numpy(module.attention_map(backend.asarray(permuted))),
                               backend.to_numpy(module.attention_map(backend.asarray(x))),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", CHANNEL_GATES)
@given(shape=shapes, seed=seeds)
def test_channel_map_ignores_spatial_order(backend, kind, shape, seed):
    rng = np.random.default_rng(seed)
    module = build(kind, shape[1], reduction=2, rng=rng).to(backend.xp)
    x = tie_free(rng, shape)
    n, c, h, w = shape
    permuted = x.reshape(n, c, h * w)[:, :, rng.permutation(h * w)].reshape(shape)
    np.testing.assert_allclose(backend.to_numpy(module.attention_map(backend.asarray(permuted))),
                               backend.to_numpy(module.attention_map(backend.asarray(x))),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", SINGLE_GATES + ["CBAM"])
def test_maps_lie_in_unit_interval_even_for_huge_weights(backend, kind):
    module = build(kind, 4, reduction=2, bias=True, rng=0).to(backend.xp)
    for name, p in module.params.items():
        module.params[name] = p * 1e4                       # pre-activations far beyond +-700
    x = backend.asarray(tie_free(np.random.default_rng(0), (2, 4, 3, 3), spread=50.0))
    maps = module.attention_map(x)
    for m in maps if kind == "CBAM" else [maps]:
        m = backend.to_numpy(m)
        assert np.all(np.isfinite(m)) and np.all((m >= 0) & (m <= 1))
        assert m.min() < 1e-6 and m.max() > 1 - 1e-6    # saturated both ways, not clipped
    module.forward(x)
    dy = backend.asarray(np.random.default_rng(1).standard_normal((2, 4, 3, 3)))
    assert np.all(np.isfinite(backend.to_numpy(module.backward(dy))))


@pytest.mark.parametrize("kind", SINGLE_GATES)
def test_all_weights_zero_gives_half_the_input(backend, kind):
    module = zeroed(build(kind, 5, reduction=2, bias=True, rng=0)).to(backend.xp)
    x = tie_free(np.random.default_rng(0), (2, 5, 3, 4))
    np.testing.assert_allclose(backend.to_numpy(module.forward(backend.asarray(x))), x / 2,
                               rtol=1e-15, atol=0)


def test_cbam_with_all_weights_zero_gives_a_quarter(backend):
    module = zeroed(CBAM(5, reduction=2, kernel_size=3, rng=0, dtype="float64")).to(backend.xp)
    x = tie_free(np.random.default_rng(0), (2, 5, 3, 4))
    np.testing.assert_allclose(backend.to_numpy(module.forward(backend.asarray(x))), x / 4,
                               rtol=1e-15, atol=0)


# ----------------------------------------------------------------------------- ECA's kernel rule

@pytest.mark.parametrize("channels, k", [(64, 3), (128, 5), (256, 5), (512, 5)])
def test_eca_kernel_rule(channels, k):
    # t = int(|(log2 C + 1) / 2|): 3 (odd), 4 (even -> 5), 4 (even -> 5), 5 (odd).
    assert eca_kernel_size(channels) == k
    module = ECA(channels, rng=0)
    assert module.kernel_size == k and module.params["conv.weight"].shape == (1, 1, k)


def test_eca_kernel_rule_constants_and_override():
    assert eca_kernel_size(64, gamma=1, b=1) == 7                   # t = 7
    assert eca_kernel_size(64, gamma=2, b=2) == 5                   # t = 4, even -> 5
    assert eca_kernel_size(1) == 1                                  # t = 0, even -> 1
    assert ECA(512, kernel_size=3).params["conv.weight"].shape == (1, 1, 3)


# ----------------------------------------------------------------------------------- tie rule

def _dx(module, x, dy):
    module.forward(x)
    return module.backward(dy)


def _tie_case(kind):
    """A positive input with a tie (value 6) in the max that the block takes, and the two tied
    positions, first and second in index order."""
    x = tie_free(np.random.default_rng(5), (1, 3, 2, 3)) + 3.0        # in [1, 5]
    if kind == "ChannelAttention":              # global max of channel 1: (0, 2) and (1, 0)
        x[0, 1, 0, 2] = x[0, 1, 1, 0] = 6.0
        return x, (0, 1, 0, 2), (0, 1, 1, 0)
    x[0, 0, 1, 1] = x[0, 2, 1, 1] = 6.0         # channel max at (1, 1): channels 0 and 2
    return x, (0, 0, 1, 1), (0, 2, 1, 1)


@pytest.mark.parametrize("kind", ["ChannelAttention", "SpatialAttention"])
def test_max_tie_sends_the_gradient_to_the_first_maximum(backend, kind):
    # The gradient at a tie equals the limit of the gradient where the FIRST tied entry is the
    # unique maximum (bumped up by d), not where the second is.
    module = build(kind, 3, reduction=1, kernel_size=3, bias=True, rng=2)
    for name, p in module.params.items():       # positive weights: every ReLU is active
        module.params[name] = np.abs(p)
    x, first, second = _tie_case(kind)
    dy = np.random.default_rng(6).standard_normal(x.shape)
    d = 1e-9
    bumped_first, bumped_second = x.copy(), x.copy()
    bumped_first[first] += d
    bumped_second[second] += d
    tie = backend.to_numpy(_dx(module.to(backend.xp), backend.asarray(x), backend.asarray(dy)))
    want = _dx(module.to("cpu"), bumped_first, dy)
    other = _dx(module, bumped_second, dy)
    np.testing.assert_allclose(tie, want, rtol=1e-6, atol=1e-8)
    assert np.abs(tie - other).max() > 1e-3
