"""CoordAttention: the map is one row gate times one column gate, swapping H with W (and conv_h
with conv_w) transposes the output, the names and shapes of the reference CoordAtt with
mip = max(8, C // reduction), bad input, and PyTorch in training and evaluation modes.
(Forward against the NumPy reference and finite differences: test_context_blocks.py; running
statistics: test_batch_norm_blocks.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from context_blocks_reference import assert_matches_torch, build, randomize
from hypothesis import given
from hypothesis import strategies as st

from npattn.blocks import CoordAttention, coord_attention_forward

shapes = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3))


def made(channels, seed, reduction=1):
    rng = np.random.default_rng(seed)
    return randomize(build("CoordAttention", channels, rng, reduction=reduction), rng)


@given(shape=shapes, seed=st.integers(0, 2**32 - 1), training=st.booleans())
def test_map_is_a_row_gate_times_a_column_gate(backend, shape, seed, training):
    module = made(shape[1], seed).train(training).to(backend.xp)
    x = np.random.default_rng(seed).standard_normal(shape)
    m = backend.to_numpy(module.attention_map(backend.asarray(x)))
    assert m.shape == shape and np.all((m > 0) & (m < 1))
    # rank one per sample and channel: m[h, w] m[h', w'] = m[h, w'] m[h', w]
    np.testing.assert_allclose(np.einsum("nchw,ncij->nchwij", m, m),
                               np.einsum("nchj,nciw->nchwij", m, m), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("training", [True, False])
def test_swapping_height_and_width_transposes_the_output(backend, training):
    # The strips are concatenated H first, but the batch norm pools both, so swapping the two
    # axes of x and the two gate convolutions transposes everything.
    module = made(3, 7).train(training)
    swapped = CoordAttention(3, 1, dtype="float64")
    twin = {"conv_h": "conv_w", "conv_w": "conv_h"}
    for name in module.params:
        layer, leaf = name.split(".")
        swapped.params[name] = module.params[f"{twin.get(layer, layer)}.{leaf}"]
    for name in module.buffers:
        swapped.buffers[name] = module.buffers[name]
    swapped.train(training)
    x = np.random.default_rng(8).standard_normal((2, 3, 2, 4))
    y = module.to(backend.xp).forward(backend.asarray(x))
    y_t = swapped.to(backend.xp).forward(backend.asarray(np.swapaxes(x, 2, 3).copy()))
    np.testing.assert_allclose(backend.to_numpy(y_t), np.swapaxes(backend.to_numpy(y), 2, 3),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("channels, reduction, mip",
                         [(64, 32, 8), (512, 32, 16), (4, 32, 8), (40, 4, 10)])
def test_names_and_shapes_are_the_references(channels, reduction, mip):
    module = CoordAttention(channels, reduction, rng=0)
    c = channels
    assert {k: tuple(v.shape) for k, v in module.params.items()} == {
        "conv1.weight": (mip, c, 1, 1), "conv1.bias": (mip,), "bn1.weight": (mip,),
        "bn1.bias": (mip,), "conv_h.weight": (c, mip, 1, 1), "conv_h.bias": (c,),
        "conv_w.weight": (c, mip, 1, 1), "conv_w.bias": (c,)}
    assert {k: tuple(v.shape) for k, v in module.buffers.items()} == {
        "bn1.running_mean": (mip,), "bn1.running_var": (mip,)}
    assert all(p.dtype == np.float32 for p in module.state_dict().values())
    assert repr(module) == f"CoordAttention(channels={c}, reduction={reduction})"


def test_bad_input(backend):
    module = made(4, 0).to(backend.xp)
    with pytest.raises(ValueError, match=r"CoordAttention: argument 'x' expected 4 channels"):
        module.forward(backend.asarray(np.zeros((1, 3, 2, 2))))
    with pytest.raises(ValueError, match=r"CoordAttention: argument 'x' expected 4 dimensions"):
        module.forward(backend.asarray(np.zeros((4, 2, 2))))
    with pytest.raises(ValueError, match="CoordAttention: argument 'reduction' expected an int >= 1"):
        CoordAttention(4, reduction=0)
    x, params = backend.asarray(np.zeros((1, 4, 2, 2))), dict(module.params)
    wrong = {**params, "bn1.weight": backend.asarray(np.ones(3))}
    with pytest.raises(ValueError, match=r"coord_attention: argument 'params\['bn1.weight'\]' "
                                         r"expected shape \(8,\), got shape \(3,\)"):
        coord_attention_forward(x, wrong)


def test_matches_pytorch_after_loading_its_state_dict():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class TorchCoordAtt(nn.Module):
        """Hou et al.'s CoordAtt(C, C, reduction), with h-swish as x * relu6(x + 3) / 6."""

        def __init__(self, c, reduction):
            super().__init__()
            mip = max(8, c // reduction)
            self.conv1 = nn.Conv2d(c, mip, 1)
            self.bn1 = nn.BatchNorm2d(mip)
            self.conv_h = nn.Conv2d(mip, c, 1)
            self.conv_w = nn.Conv2d(mip, c, 1)

        def forward(self, x):
            h = x.shape[2]
            x_h = x.mean(dim=3, keepdim=True)                             # (N, C, H, 1)
            x_w = x.mean(dim=2, keepdim=True).permute(0, 1, 3, 2)         # (N, C, W, 1)
            u = self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2)))
            u = u * nn.functional.relu6(u + 3) / 6
            u_h, u_w = u[:, :, :h], u[:, :, h:].permute(0, 1, 3, 2)
            return x * self.conv_w(u_w).sigmoid() * self.conv_h(u_h).sigmoid()

    rng = np.random.default_rng(1)
    module = made(5, 2)
    x, dy = rng.standard_normal((2, 5, 3, 4)), rng.standard_normal((2, 5, 3, 4))
    assert_matches_torch(module, TorchCoordAtt(5, 1).double(), x, dy)


@pytest.mark.parametrize("block_bytes, blocks", [(8, 15), (400, 9), (10**9, 1)])
def test_blocks_and_threads_agree_with_one_block(monkeypatch, block_bytes, blocks):
    """The full-size steps in runs of one or two channels (8 and 400 bytes a block; a channel
    is 192), the whole array, and two threads give what one block gives."""
    from blocking import in_blocks, one_block

    from npattn.blocks import coord_attention_backward
    rng = np.random.default_rng(3)
    params = dict(CoordAttention(5, reduction=1, rng=1, dtype="float64").params)
    x = rng.standard_normal((3, 5, 4, 6))
    dy = rng.standard_normal(x.shape)

    def both():
        y, cache = coord_attention_forward(x, params)
        return y, *coord_attention_backward(dy, cache)

    y_one, dx_one, grads_one = one_block(monkeypatch, both)
    y, dx, grads = in_blocks(monkeypatch, block_bytes, both, x, blocks)
    np.testing.assert_allclose(y, y_one, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dx, dx_one, rtol=1e-13, atol=1e-14)
    for name in grads_one:
        np.testing.assert_allclose(grads[name], grads_one[name], rtol=1e-13, atol=1e-14)
