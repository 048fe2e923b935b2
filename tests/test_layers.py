"""Plain layers (npattn.layers): forward against loop references and PyTorch, backward through
check_module, PyTorch's names and default initialisation, bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import npattn.ops as ops
from npattn.blocks._registry import tie_free
from npattn.gradcheck import check_module
from npattn.init import bias_uniform, fan_in, kaiming_uniform
from npattn.layers import (AdaptiveAvgPool2d, AvgPool2d, Conv2d, Flatten, GlobalAvgPool2d, Linear, MaxPool2d,
                           ReLU, Sequential, Sigmoid)



def ref_conv2d(x, w, b, stride, padding, dilation, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, o, ho, wo))
    for oc in range(o):
        g = oc // (o // groups)
        for i in range(ho):
            for j in range(wo):
                for a in range(kh):
                    for bb in range(kw):
                        patch = xp[:, g * cg:(g + 1) * cg, i * stride[0] + a * dilation[0],
                                   j * stride[1] + bb * dilation[1]]
                        y[:, oc, i, j] += patch @ w[oc, :, a, bb]
    return y + (0 if b is None else b[None, :, None, None])


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 2]))
    c, o = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    hw = tuple(d * (kk - 1) + 1 + draw(st.integers(0, 2)) for d, kk in zip(dilation, k))
    conv = Conv2d(c, o, k, stride, padding, dilation, groups, bias=draw(st.booleans()),
                  rng=draw(st.integers(0, 2**32 - 1)), dtype="float64")
    return conv, (draw(st.integers(1, 2)), c, *hw), draw(st.integers(0, 2**32 - 1))


@given(case=conv_cases())
def test_conv2d_matches_loops_and_finite_differences(backend, case):
    conv, shape, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    p = {k: np.array(v) for k, v in conv.params.items()}
    want = ref_conv2d(x, p["weight"], p.get("bias"), conv.stride, conv.padding, conv.dilation, conv.groups)
    conv.to(backend.xp)
    np.testing.assert_allclose(backend.to_numpy(conv(backend.asarray(x))), want, rtol=1e-12, atol=1e-12)
    check_module(conv, backend.asarray(x), rng=seed).raise_if_failed()


def test_linear_matches_the_formula_and_finite_differences(backend):
    lin = Linear(4, 3, rng=0, dtype="float64")
    x = np.random.default_rng(1).standard_normal((5, 4))
    want = x @ lin.params["weight"].T + lin.params["bias"]
    lin.to(backend.xp)
    np.testing.assert_allclose(backend.to_numpy(lin(backend.asarray(x))), want, rtol=1e-13)
    check_module(lin, backend.asarray(x), rng=2).raise_if_failed()


def small_net(dtype="float64"):
    return Sequential(Conv2d(2, 3, 3, padding=1, rng=0, dtype=dtype), ReLU(), MaxPool2d(2),
                      Conv2d(3, 2, 1, bias=False, rng=1, dtype=dtype), Sigmoid(), AvgPool2d(2, stride=1),
                      AdaptiveAvgPool2d((2, 1)), Flatten(), Linear(4, 3, rng=2, dtype=dtype))


def test_sequential_of_every_layer_passes_check_module(backend):
    net = small_net().to(backend.xp)
    x = tie_free(np.random.default_rng(3), (2, 2, 6, 5))
    # Away from kinks: no ReLU input near zero, no max-pool near-tie at this seed (checked).
    z = backend.to_numpy(net[0](backend.asarray(x)))
    assert np.abs(z).min() > 1e-3
    check_module(net, backend.asarray(x), rng=4).raise_if_failed()
    assert list(net.params) == ["0.weight", "0.bias", "3.weight", "8.weight", "8.bias"]


def test_parameter_free_layers_are_their_ops(backend):
    x_np = tie_free(np.random.default_rng(5), (2, 3, 5, 4))
    x = backend.asarray(x_np)
    pairs = [(ReLU(), ops.relu_forward(x)), (Sigmoid(), ops.sigmoid_forward(x)),
             (MaxPool2d(2), ops.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))),
             (MaxPool2d(3, 1, 1), ops.max_pool2d_forward(x, 3, 1, 1)),
             (AvgPool2d((2, 1)), ops.avg_pool2d_forward(x, (2, 1), (2, 1), 0)),
             (AdaptiveAvgPool2d(3), ops.adaptive_avg_pool2d_forward(x, (3, 3))),
             (GlobalAvgPool2d(), ops.global_avg_pool2d_forward(x))]
    for layer, (want, _) in pairs:
        np.testing.assert_array_equal(backend.to_numpy(layer(x)), backend.to_numpy(want))
        assert layer.backward(backend.asarray(np.ones(want.shape))).shape == x.shape


def test_flatten(backend):
    x = backend.asarray(np.arange(120.0).reshape(2, 3, 4, 5))
    assert Flatten()(x).shape == (2, 60)
    assert Flatten(0, 1)(x).shape == (6, 4, 5)
    f = Flatten(2)
    assert f(x).shape == (2, 3, 20)
    dx = f.backward(backend.asarray(np.arange(120.0).reshape(2, 3, 20)))
    np.testing.assert_array_equal(backend.to_numpy(dx), np.arange(120.0).reshape(2, 3, 4, 5))
    f(x)
    with pytest.raises(ValueError, match=r"Flatten.backward: argument 'dy' expected shape \(2, 3, 20\)"):
        f.backward(backend.asarray(np.ones((2, 60))))
    with pytest.raises(ValueError, match="Flatten: argument 'x' expected at least 2 dimensions"):
        Flatten()(backend.asarray(np.ones(3)))


def test_sequential_container():
    a, b = ReLU(), Sigmoid()
    seq = Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b and list(seq) == [a, b]
    assert repr(seq) == "Sequential(\n  (0): ReLU()\n  (1): Sigmoid()\n)"
    with pytest.raises(TypeError, match=r"Sequential: argument 'modules\[1\]' expected an npattn Module"):
        Sequential(a, lambda x: x)


def test_float32_stays_float32(backend):
    net = small_net("float32").to(backend.xp)
    x = backend.asarray(tie_free(np.random.default_rng(3), (2, 2, 6, 5)).astype(np.float32))
    y = net(x)
    assert y.dtype == backend.dtype("float32")
    assert net.backward(backend.asarray(np.ones((2, 3), np.float32))).dtype == backend.dtype("float32")


# --------------------------------------------------------------------------------- initialisation

def test_default_init_bounds_and_fan_in_with_groups():
    conv = Conv2d(8, 6, (3, 2), groups=2, rng=0)
    assert conv.params["weight"].shape == (6, 4, 3, 2) and fan_in((6, 4, 3, 2)) == 24
    bound = 1 / math.sqrt(24)
    for name in ("weight", "bias"):
        p = conv.params[name]
        assert p.dtype == np.float32 and np.abs(p).max() <= bound
    assert np.abs(conv.params["weight"]).max() > 0.9 * bound
    lin = Linear(50, 40, rng=0, dtype="float64")
    assert lin.params["weight"].dtype == np.float64
    assert 0.9 / math.sqrt(50) < np.abs(lin.params["weight"]).max() <= 1 / math.sqrt(50)
    # U(-b, b) has standard deviation b / sqrt(3).
    assert abs(lin.params["weight"].std() - 1 / math.sqrt(50) / math.sqrt(3)) < 0.01


def test_init_is_seeded():
    np.testing.assert_array_equal(Conv2d(3, 4, 3, rng=5).params["bias"], Conv2d(3, 4, 3, rng=5).params["bias"])
    np.testing.assert_array_equal(kaiming_uniform((4, 3), np.random.default_rng(1)),
                                  kaiming_uniform((4, 3), 1))
    assert not np.array_equal(Linear(3, 4, rng=1).params["weight"], Linear(3, 4, rng=2).params["weight"])
    assert not np.any(bias_uniform((3,), 0, 0))          # fan_in 0: the bound is 0


def test_init_rejects_bad_arguments():
    with pytest.raises(TypeError, match="kaiming_uniform: argument 'rng'"):
        kaiming_uniform((2, 2), rng=1.5)
    with pytest.raises(ValueError, match="bias_uniform: argument 'dtype' expected 'float32' or 'float64'"):
        bias_uniform((2,), 4, dtype="float16")


@pytest.mark.parametrize("make, cls, words", [
    (lambda: Conv2d(0, 4, 3), ValueError, "Conv2d: argument 'in_channels' expected an int >= 1, got 0"),
    (lambda: Conv2d(3, 4, 3, groups=2), ValueError, "Conv2d: argument 'in_channels' expected a multiple of groups=2"),
    (lambda: Conv2d(4, 3, 3, groups=2), ValueError, "argument 'out_channels' expected a multiple of groups=2"),
    (lambda: Conv2d(3, 4, 0), ValueError, "Conv2d: argument 'kernel_size' expected values >= 1"),
    (lambda: Conv2d(3, 4, 3, stride=0), ValueError, "argument 'stride' expected values >= 1"),
    (lambda: Conv2d(3, 4, 3, padding=-1), ValueError, "argument 'padding' expected values >= 0"),
    (lambda: Conv2d(3, 4, (3, 3, 3)), TypeError, "argument 'kernel_size' expected an int or a pair"),
    (lambda: Linear(3, 0), ValueError, "Linear: argument 'out_features' expected an int >= 1"),
    (lambda: MaxPool2d(0), ValueError, "MaxPool2d: argument 'kernel_size'"),
    (lambda: AvgPool2d(2, stride=0), ValueError, "AvgPool2d: argument 'stride'"),
    (lambda: AdaptiveAvgPool2d(0), ValueError, "AdaptiveAvgPool2d: argument 'output_size'"),
    (lambda: Flatten(1.5), TypeError, "Flatten: argument 'start_dim' expected an int"),
])
def test_bad_constructor_arguments(make, cls, words):
    with pytest.raises(cls, match=words):
        make()


def test_conv2d_input_with_the_wrong_channel_count():
    with pytest.raises(ValueError, match="conv2d"):
        Conv2d(3, 4, 3)(np.ones((1, 2, 5, 5), np.float32))


def test_layers_match_pytorch_after_loading_its_state_dict():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(2, 4, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
                              nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d((2, 3)), nn.Flatten(),
                              nn.Linear(24, 5)).double()
    net = Sequential(Conv2d(2, 4, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, dtype="float64"),
                     ReLU(), MaxPool2d(2), AdaptiveAvgPool2d((2, 3)), Flatten(), Linear(24, 5, dtype="float64"))
    net.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    x = tie_free(np.random.default_rng(0), (2, 2, 9, 8))
    dy = np.random.default_rng(1).standard_normal((2, 5))
    tx = torch.tensor(x, requires_grad=True)
    reference(tx).backward(torch.tensor(dy))
    np.testing.assert_allclose(net(x), reference(tx).detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.backward(dy), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(net.grads[name], p.grad.numpy(), rtol=1e-12, atol=1e-12)
