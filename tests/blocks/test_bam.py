"""BAM: the output is x times a factor in (1, 2), the map is sigmoid(M_c + M_s) with each branch
visible on its own (a silenced branch leaves a map constant along its axes), the names and
shapes of the authors' BAM, bad input, and PyTorch (with the paper's sum) in training and
evaluation modes.  (Forward against the NumPy reference and finite differences:
test_context_blocks.py; running statistics: test_batch_norm_blocks.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from blocks_reference import sigmoid
from context_blocks_reference import assert_matches_torch, build, randomize
from hypothesis import given
from hypothesis import strategies as st

from npattn.blocks import BAM, bam_forward

C, S = "channel_att.gate_c.", "spatial_att.gate_s."


def made(channels, seed, **kwargs):
    rng = np.random.default_rng(seed)
    return randomize(build("BAM", channels, rng, **kwargs), rng)


def silenced(module, layer):
    """The branch's last layer's weight zeroed: that branch's map is its bias, a constant."""
    module.params[f"{layer}.weight"] = 0.0 * module.params[f"{layer}.weight"]
    return module


@given(seed=st.integers(0, 2**32 - 1), channels=st.integers(1, 3),
       hw=st.tuples(st.integers(1, 3), st.integers(1, 3)))
def test_output_is_x_times_one_plus_the_map(backend, seed, channels, hw):
    module = made(channels, seed).to(backend.xp)
    x = np.random.default_rng(seed).standard_normal((2, channels, *hw))
    m = backend.to_numpy(module.attention_map(backend.asarray(x)))
    y = backend.to_numpy(module.forward(backend.asarray(x)))
    assert m.shape == x.shape and np.all((m > 0) & (m < 1))
    np.testing.assert_allclose(y, x * (1.0 + m), rtol=1e-14, atol=1e-15)


def test_each_branch_on_its_own(backend):
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 4))
    # Spatial branch silenced: M_s = its final bias, the map varies only with the channel.
    module = silenced(made(3, 1), S + "gate_s_conv_final").to(backend.xp)
    m = backend.to_numpy(module.attention_map(backend.asarray(x)))
    np.testing.assert_allclose(m, np.broadcast_to(m[:, :, :1, :1], m.shape), rtol=1e-14)
    assert np.ptp(m[:, :, 0, 0], axis=1).min() > 1e-6
    # Channel branch silenced: M_c = its final bias; the logit less it is one map for all channels.
    module = silenced(made(3, 1), C + "gate_c_fc_final").to(backend.xp)
    m = backend.to_numpy(module.attention_map(backend.asarray(x)))
    bias = np.asarray(backend.to_numpy(module.params[C + "gate_c_fc_final.bias"]))
    logit = np.log(m / (1.0 - m)) - bias[None, :, None, None]
    np.testing.assert_allclose(logit, np.broadcast_to(logit[:, :1], m.shape), rtol=1e-9, atol=1e-11)
    assert np.ptp(logit[:, 0]) > 1e-6
    np.testing.assert_allclose(sigmoid(logit + bias[None, :, None, None]), m, rtol=1e-12)


@pytest.mark.parametrize("channels, reduction, h", [(64, 16, 4), (8, 16, 1), (12, 5, 2)])
def test_names_and_shapes_are_the_authors(channels, reduction, h):
    module = BAM(channels, reduction, rng=0)
    c = channels
    want = {C + "gate_c_fc_0.weight": (h, c), C + "gate_c_fc_0.bias": (h,),
            C + "gate_c_bn_1.weight": (h,), C + "gate_c_bn_1.bias": (h,),
            C + "gate_c_fc_final.weight": (c, h), C + "gate_c_fc_final.bias": (c,),
            S + "gate_s_conv_final.weight": (1, h, 1, 1), S + "gate_s_conv_final.bias": (1,)}
    for stage, fan in (("reduce0", (c, 1, 1)), ("di_0", (h, 3, 3)), ("di_1", (h, 3, 3))):
        want.update({f"{S}gate_s_conv_{stage}.weight": (h, *fan),
                     f"{S}gate_s_conv_{stage}.bias": (h,), f"{S}gate_s_bn_{stage}.weight": (h,),
                     f"{S}gate_s_bn_{stage}.bias": (h,)})
    assert {k: tuple(v.shape) for k, v in module.params.items()} == want
    norms = (C + "gate_c_bn_1", S + "gate_s_bn_reduce0", S + "gate_s_bn_di_0", S + "gate_s_bn_di_1")
    assert set(module.buffers) == {f"{b}.{s}" for b in norms for s in ("running_mean", "running_var")}
    assert repr(module) == f"BAM(channels={c}, reduction={reduction}, dilation=4)"


def test_bad_input(backend):
    module = made(4, 0).to(backend.xp)
    with pytest.raises(ValueError, match=r"BAM: argument 'x' expected 4 channels"):
        module.forward(backend.asarray(np.zeros((2, 3, 2, 2))))
    x = backend.asarray(np.zeros((1, 4, 2, 2)))
    with pytest.raises(ValueError, match=r"bam: argument 'x' expected at least 2 samples in "
                                         r"training mode"):
        module.forward(x)
    module.eval().forward(x)                               # one sample is fine in eval mode
    with pytest.raises(ValueError, match="BAM: argument 'dilation' expected an int >= 1, got 0"):
        BAM(4, dilation=0)
    with pytest.raises(ValueError, match="bam: argument 'dilation' expected an int >= 1"):
        bam_forward(x, dict(module.params), 0, buffers=dict(module.buffers), training=False)
    params = {k: v for k, v in module.params.items() if "di_1" not in k}
    with pytest.raises(ValueError, match=r"bam: argument 'params' expected the keys .* missing "
                                         r"\['spatial_att.gate_s.gate_s_conv_di_1.weight'"):
        bam_forward(x, params, training=False, buffers=dict(module.buffers))


def test_matches_pytorch_after_loading_its_state_dict():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    from collections import OrderedDict

    class TorchBAM(nn.Module):
        """The authors' module layout (gate_c, gate_s), with the paper's sum of the two maps."""

        def __init__(self, c, h, dilation):
            super().__init__()
            self.channel_att, self.spatial_att = nn.Module(), nn.Module()
            self.channel_att.gate_c = nn.Sequential(OrderedDict([
                ("flatten", nn.Flatten()), ("gate_c_fc_0", nn.Linear(c, h)),
                ("gate_c_bn_1", nn.BatchNorm1d(h)), ("gate_c_relu_1", nn.ReLU()),
                ("gate_c_fc_final", nn.Linear(h, c))]))
            layers = [("gate_s_conv_reduce0", nn.Conv2d(c, h, 1)),
                      ("gate_s_bn_reduce0", nn.BatchNorm2d(h)), ("gate_s_relu_reduce0", nn.ReLU())]
            for i in range(2):
                conv = nn.Conv2d(h, h, 3, padding=dilation, dilation=dilation)
                layers += [(f"gate_s_conv_di_{i}", conv), (f"gate_s_bn_di_{i}", nn.BatchNorm2d(h)),
                           (f"gate_s_relu_di_{i}", nn.ReLU())]
            layers.append(("gate_s_conv_final", nn.Conv2d(h, 1, 1)))
            self.spatial_att.gate_s = nn.Sequential(OrderedDict(layers))

        def forward(self, x):
            m_c = self.channel_att.gate_c(x.mean(dim=(2, 3), keepdim=True))[:, :, None, None]
            m_s = self.spatial_att.gate_s(x)
            return x * (1 + torch.sigmoid(m_c + m_s))

    rng = np.random.default_rng(4)
    module = made(4, 5, reduction=2, dilation=2)
    x, dy = rng.standard_normal((3, 4, 3, 4)), rng.standard_normal((3, 4, 3, 4))
    assert_matches_torch(module, TorchBAM(4, 2, 2).double(), x, dy)


# ------------------------------------------------- the gate block by block (batch_channel_blocks)

@pytest.mark.parametrize("shape, limit", [((3, 5, 2, 3), 10**6), ((3, 5, 2, 3), 60),
                                          ((2, 7, 4, 4), 200), ((4, 3, 1, 1), 1)])
def test_batch_channel_blocks_cover_the_grid_once(backend, shape, limit):
    from npattn.backend import batch_channel_blocks
    x = backend.asarray(np.zeros(shape))
    blocks = batch_channel_blocks(x, block_bytes=limit)
    seen = np.zeros(shape[:2], dtype=int)
    for samples, channels in blocks:
        seen[samples, channels] += 1
    assert np.all(seen == 1)
    if backend.name != "numpy":
        assert blocks == [(slice(0, shape[0]), slice(0, shape[1]))]       # the spec: one block
    else:
        per_channel = 8 * shape[2] * shape[3]
        sizes = [(s.stop - s.start) * (c.stop - c.start) * per_channel for s, c in blocks]
        assert max(sizes) <= max(limit, per_channel)
        widths = {c.stop - c.start for _, c in blocks}
        assert max(widths) - min(widths) <= 1                              # balanced runs


@pytest.mark.parametrize("threads", [1, 2])
def test_blocks_and_threads_change_nothing(monkeypatch, threads):
    """BAM with one channel per block (and the blocks shared between two threads) against BAM
    with whole samples per block: the same output, map and gradients (the sums over channels
    are added run by run, so equal up to rounding)."""
    from npattn import backend as be
    module = made(6, 3, reduction=2, dilation=1)
    rng = np.random.default_rng(7)
    x, dy = rng.standard_normal((3, 6, 4, 5)), rng.standard_normal((3, 6, 4, 5))
    y_ref = module.forward(x)
    dx_ref = module.backward(dy)
    grads_ref = {k: np.array(v) for k, v in module.grads.items()}
    monkeypatch.setattr(be, "ELEMENTWISE_BLOCK_BYTES", 1)
    monkeypatch.setattr(be, "PARALLEL_MIN_ELEMENTS", 0)
    previous = be.set_threads(threads)
    try:
        module.zero_grad()
        y = module.forward(x)
        dx = module.backward(dy)
    finally:
        be.set_threads(previous)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-13, atol=1e-14)
    for k, v in module.grads.items():
        np.testing.assert_allclose(v, grads_ref[k], rtol=1e-12, atol=1e-14, err_msg=k)
