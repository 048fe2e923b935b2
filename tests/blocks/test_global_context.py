"""GlobalContext: the attention sums to one, the same context is added at every position, a
permutation of positions permutes the output, zero last layer gives the identity, the names and
shapes of GCNet's ContextBlock, bad input, and PyTorch.  (Forward against the NumPy reference
and finite differences: test_context_blocks.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from context_blocks_reference import assert_matches_torch, build, randomize
from hypothesis import given
from hypothesis import strategies as st

from npattn.blocks import GlobalContext, global_context_forward

shapes = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3))


def made(channels, seed, reduction=1):
    rng = np.random.default_rng(seed)
    return randomize(build("GlobalContext", channels, rng, reduction=reduction), rng)


@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_attention_sums_to_one_and_one_context_is_added_everywhere(backend, shape, seed):
    module = made(shape[1], seed).to(backend.xp)
    x = 2.0 * np.random.default_rng(seed).standard_normal(shape)
    a = backend.to_numpy(module.attention_map(backend.asarray(x)))
    assert a.shape == (shape[0], 1, *shape[2:]) and np.all(a > 0)
    np.testing.assert_allclose(a.sum(axis=(1, 2, 3)), 1.0, rtol=1e-13)
    added = backend.to_numpy(module.forward(backend.asarray(x))) - x
    np.testing.assert_allclose(added, np.broadcast_to(added[:, :, :1, :1], shape), atol=1e-13)


def test_permuting_positions_permutes_the_output(backend):
    rng = np.random.default_rng(3)
    module = made(3, 3).to(backend.xp)
    n, c, h, w = 2, 3, 3, 4
    x = rng.standard_normal((n, c, h, w))
    perm = rng.permutation(h * w)
    shuffle = lambda v: v.reshape(v.shape[0], v.shape[1], h * w)[:, :, perm].reshape(v.shape)  # noqa: E731
    y = backend.to_numpy(module.forward(backend.asarray(x)))
    np.testing.assert_allclose(backend.to_numpy(module.forward(backend.asarray(shuffle(x)))),
                               shuffle(y), rtol=1e-12, atol=1e-13)
    a = backend.to_numpy(module.attention_map(backend.asarray(x)))
    np.testing.assert_allclose(backend.to_numpy(module.attention_map(backend.asarray(shuffle(x)))),
                               shuffle(a), rtol=1e-12, atol=1e-15)


def test_zero_last_layer_is_the_identity(backend):
    # GCNet's code zero-initialises channel_add_conv.3, so a new block passes x through.
    module = made(4, 1)
    for name in ("channel_add_conv.3.weight", "channel_add_conv.3.bias"):
        module.params[name] = 0.0 * module.params[name]
    module.to(backend.xp)
    x = np.random.default_rng(0).standard_normal((2, 4, 2, 3))
    np.testing.assert_array_equal(backend.to_numpy(module.forward(backend.asarray(x))), x)


@pytest.mark.parametrize("channels, reduction, planes", [(64, 16, 4), (8, 16, 1), (12, 5, 2)])
def test_names_and_shapes_are_gcnets(channels, reduction, planes):
    module = GlobalContext(channels, reduction, rng=0)
    c, p = channels, planes
    assert {k: tuple(v.shape) for k, v in module.params.items()} == {
        "conv_mask.weight": (1, c, 1, 1), "conv_mask.bias": (1,),
        "channel_add_conv.0.weight": (p, c, 1, 1), "channel_add_conv.0.bias": (p,),
        "channel_add_conv.1.weight": (p, 1, 1), "channel_add_conv.1.bias": (p, 1, 1),
        "channel_add_conv.3.weight": (c, p, 1, 1), "channel_add_conv.3.bias": (c,)}
    np.testing.assert_array_equal(module.params["channel_add_conv.1.weight"], 1.0)
    np.testing.assert_array_equal(module.params["channel_add_conv.1.bias"], 0.0)
    bound = 1.0 / np.sqrt(c)                               # PyTorch's default for a C-input conv
    assert np.abs(module.params["conv_mask.weight"]).max() <= bound
    assert repr(module) == f"GlobalContext(channels={c}, reduction={reduction})"


def test_bad_input(backend):
    module = made(4, 0).to(backend.xp)
    with pytest.raises(ValueError, match=r"GlobalContext: argument 'x' expected 4 channels"):
        module.forward(backend.asarray(np.zeros((1, 3, 2, 2))))
    with pytest.raises(ValueError, match="GlobalContext: argument 'reduction' expected an int >= 1"):
        GlobalContext(4, 0)
    with pytest.raises(TypeError, match="GlobalContext: argument 'channels' expected an int"):
        GlobalContext(4.0)
    x, params = backend.asarray(np.zeros((1, 4, 2, 2))), dict(module.params)
    flat = {**params, "channel_add_conv.1.weight": backend.asarray(np.ones(4))}
    with pytest.raises(ValueError, match=r"global_context: argument "
                                         r"'params\['channel_add_conv.1.weight'\]' expected 3 dimensions"):
        global_context_forward(x, flat)
    del params["conv_mask.bias"]
    with pytest.raises(ValueError, match=r"global_context: argument 'params' expected the keys .* "
                                         r"missing \['conv_mask.bias'\]"):
        global_context_forward(x, params)


def test_matches_pytorch_after_loading_its_state_dict():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class TorchContextBlock(nn.Module):
        """GCNet's ContextBlock with attention pooling and channel_add fusion."""

        def __init__(self, c, planes):
            super().__init__()
            self.conv_mask = nn.Conv2d(c, 1, 1)
            self.channel_add_conv = nn.Sequential(nn.Conv2d(c, planes, 1), nn.LayerNorm([planes, 1, 1]),
                                                  nn.ReLU(), nn.Conv2d(planes, c, 1))

        def forward(self, x):
            n, c, h, w = x.shape
            a = self.conv_mask(x).view(n, 1, h * w).softmax(dim=2)          # (N, 1, HW)
            context = torch.bmm(x.view(n, c, h * w), a.transpose(1, 2)).view(n, c, 1, 1)
            return x + self.channel_add_conv(context)

    rng = np.random.default_rng(0)
    module = made(6, 5, reduction=2)
    x, dy = rng.standard_normal((2, 6, 3, 4)), rng.standard_normal((2, 6, 3, 4))
    assert_matches_torch(module, TorchContextBlock(6, 3).double(), x, dy, modes=(True,))
