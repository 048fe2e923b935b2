"""The mistakes of widely copied snippets of these blocks (docs/snippet-mistakes.md), each with a
test that catches it.

Every test states a property, checks that npattn's block has it, and checks that a faithful
re-creation of the mistake (built from the same npattn ops) does not: a test that the mistake
passed would not catch it.
"""

from __future__ import annotations

import math

import numpy as np

import npattn.blocks as blocks
import npattn.ops as ops
from npattn.blocks import SE, ChannelAttention, eca_kernel_size
from npattn.blocks._registry import tie_free

RNG = np.random.default_rng(11)


def _sigmoid_map(z):
    return ops.sigmoid_forward(z)[0]


def _mlp(d, w1, w2):
    return ops.conv2d_forward(ops.relu_forward(ops.conv2d_forward(d, w1)[0])[0], w2)[0]


def _descriptors(x):
    return ops.global_avg_pool2d_forward(x)[0], ops.global_max_pool2d_forward(x)[0]


def ours_channel_map(x, p):
    return blocks.channel_attention_forward(x, p)[1].map


def ours_spatial_map(x, p):
    return blocks.spatial_attention_forward(x, p)[1].map


def ours_eca_map(x, p):
    return blocks.eca_forward(x, p)[1].map


CA_PARAMS = {k: v.astype(np.float64) for k, v in ChannelAttention(6, 2, rng=3).params.items()}
SA_PARAMS = {"conv.weight": RNG.standard_normal((1, 2, 7, 7))}


# --------------------------------------------- 1. padding passed positionally as the stride

def mistaken_spatial_map_padding_as_stride(x, p):
    """``nn.Conv2d(2, 1, kernel_size, padding)``: the 4th positional argument is the stride."""
    f = np.concatenate([ops.channel_mean_forward(x)[0], ops.channel_max_forward(x)[0]], axis=1)
    w = p["conv.weight"]
    return _sigmoid_map(ops.conv2d_forward(f, w, None, w.shape[2] // 2)[0])   # stride=3, padding=0


def spatial_map_keeps_the_input_size(map_fn):
    x = tie_free(RNG, (2, 3, 9, 9))
    return map_fn(x, SA_PARAMS).shape == (2, 1, 9, 9)


def test_padding_passed_as_stride_is_caught_by_the_map_size():
    assert spatial_map_keeps_the_input_size(ours_spatial_map)
    # The mistaken map is (2, 1, 1, 1) and broadcasts against x without any error.
    assert not spatial_map_keeps_the_input_size(mistaken_spatial_map_padding_as_stride)


# ------------------------------------------------------------- 2. the reduction argument ignored

def mistaken_hidden_width(channels, reduction):
    """``nn.Linear(channels, channels // 16)``: ``reduction`` accepted, then ignored."""
    return channels // 16


def hidden_width_follows_reduction(width_fn):
    return all(width_fn(c, r) == max(1, c // r) for c, r in [(64, 4), (64, 16), (32, 8), (8, 16)])


def test_hard_coded_reduction_is_caught_by_the_hidden_width():
    assert hidden_width_follows_reduction(lambda c, r: SE(c, r).params["excitation.0.weight"].shape[0])
    assert hidden_width_follows_reduction(
        lambda c, r: ChannelAttention(c, r).params["mlp.0.weight"].shape[0])
    assert not hidden_width_follows_reduction(mistaken_hidden_width)   # and 8 // 16 = 0: no MLP


# ----------------------------------------------------------------------- 3. a missing sigmoid

def mistaken_channel_map_without_sigmoid(x, p):
    d_avg, d_max = _descriptors(x)
    return _mlp(d_avg, p["mlp.0.weight"], p["mlp.2.weight"]) + _mlp(d_max, p["mlp.0.weight"], p["mlp.2.weight"])


def map_is_a_gate(map_fn):
    """Maps in [0, 1], and all weights zero gives the neutral gate 1/2."""
    x = tie_free(RNG, (2, 6, 3, 3), spread=5.0)
    big = {k: 50.0 * v for k, v in CA_PARAMS.items()}
    zero = {k: 0.0 * v for k, v in CA_PARAMS.items()}
    m = map_fn(x, big)
    return bool(np.all((m >= 0) & (m <= 1))) and np.allclose(map_fn(x, zero), 0.5)


def test_missing_sigmoid_is_caught_by_the_gate_range():
    assert map_is_a_gate(ours_channel_map)
    assert not map_is_a_gate(mistaken_channel_map_without_sigmoid)


# --------------------------------------------- 4. an MLP not shared between the avg and max paths

def mistaken_channel_map_two_mlps(x, p):
    """``self.mlp_avg`` and ``self.mlp_max``: four weights where CBAM has two."""
    d_avg, d_max = _descriptors(x)
    return _sigmoid_map(_mlp(d_avg, p["mlp_avg.0.weight"], p["mlp_avg.2.weight"])
                        + _mlp(d_max, p["mlp_max.0.weight"], p["mlp_max.2.weight"]))


def names_are_cbams(params):
    """A PyTorch CBAM state_dict loads only into the two shared weights."""
    return set(params) == {"mlp.0.weight", "mlp.2.weight"}


def mlp_is_shared(map_fn, params):
    """Where avg and max pooling agree (a spatially constant input), CBAM's one MLP gives
    ``sigmoid(2 MLP(d))``, with the MLP whose weights were loaded under CBAM's names."""
    x = np.repeat(np.repeat(tie_free(RNG, (2, 6, 1, 1)), 3, axis=2), 4, axis=3)
    d = ops.global_avg_pool2d_forward(x)[0]
    shared = _sigmoid_map(2.0 * _mlp(d, CA_PARAMS["mlp.0.weight"], CA_PARAMS["mlp.2.weight"]))
    return np.allclose(map_fn(x, params), shared)


def test_unshared_mlp_is_caught_by_names_and_by_equal_descriptors():
    assert names_are_cbams(CA_PARAMS) and mlp_is_shared(ours_channel_map, CA_PARAMS)
    other = {k: v.astype(np.float64) for k, v in ChannelAttention(6, 2, rng=4).params.items()}
    two = {"mlp_avg.0.weight": CA_PARAMS["mlp.0.weight"], "mlp_avg.2.weight": CA_PARAMS["mlp.2.weight"],
           "mlp_max.0.weight": other["mlp.0.weight"], "mlp_max.2.weight": other["mlp.2.weight"]}
    assert not names_are_cbams(two)
    assert not mlp_is_shared(mistaken_channel_map_two_mlps, two)


# ------------------------------------------------------- 5. avg used twice instead of avg and max

def mistaken_channel_map_avg_twice(x, p):
    d_avg, _ = _descriptors(x)
    return _sigmoid_map(_mlp(d_avg, p["mlp.0.weight"], p["mlp.2.weight"])
                        + _mlp(d_avg, p["mlp.0.weight"], p["mlp.2.weight"]))


def mistaken_spatial_map_mean_twice(x, p):
    f_mean = ops.channel_mean_forward(x)[0]
    f = np.concatenate([f_mean, f_mean], axis=1)
    return _sigmoid_map(ops.conv2d_forward(f, p["conv.weight"], None, 1, 3)[0])


def channel_map_sees_the_max(map_fn):
    """Raise each channel's maximum by 1 and lower another entry by 1: the mean is unchanged,
    the max is not, so the map must change."""
    x = tie_free(RNG, (1, 6, 3, 3))
    moved = x.copy().reshape(1, 6, 9)
    top = moved.argmax(axis=2)[0]
    for c in range(6):
        moved[0, c, top[c]] += 1.0
        moved[0, c, (top[c] + 1) % 9] -= 1.0
    return not np.allclose(map_fn(x, CA_PARAMS), map_fn(moved.reshape(x.shape), CA_PARAMS))


def spatial_map_sees_the_max(map_fn):
    """The same across channels, at every position."""
    x = tie_free(RNG, (1, 4, 5, 5))
    moved = x.copy()
    top = x.argmax(axis=1)[0]
    rows, cols = np.indices((5, 5))
    moved[0, top, rows, cols] += 1.0
    moved[0, (top + 1) % 4, rows, cols] -= 1.0
    return not np.allclose(map_fn(x, SA_PARAMS), map_fn(moved, SA_PARAMS))


def test_avg_used_twice_is_caught_by_a_max_only_change():
    assert channel_map_sees_the_max(ours_channel_map)
    assert not channel_map_sees_the_max(mistaken_channel_map_avg_twice)
    assert spatial_map_sees_the_max(ours_spatial_map)
    assert not spatial_map_sees_the_max(mistaken_spatial_map_mean_twice)


# ------------------------------------------------------------------------ 6. an even ECA kernel

def mistaken_eca_kernel_size(channels, gamma=2, b=1):
    """The rule without its last step: ``int(|(log2 C + b) / gamma|)``, even at C = 128."""
    return int(abs((math.log2(channels) + b) / gamma))


def mistaken_eca_map_even_kernel(x, p):
    """An even kernel with ``padding=(k - 1) // 2``: the output is one channel short."""
    s = ops.global_avg_pool2d_forward(x)[0]
    n, c = s.shape[:2]
    k = p["conv.weight"].shape[2]
    z = ops.conv1d_forward(s.reshape(n, 1, c), p["conv.weight"], padding=(k - 1) // 2)[0]
    return _sigmoid_map(z).reshape(n, -1, 1, 1)


def kernel_rule_is_odd(rule):
    return all(rule(c) % 2 == 1 for c in (64, 128, 256, 512))


def gate_is_centred(map_fn, k):
    """A kernel with one 1 in its centre passes each channel's own mean: m_c = sigmoid(s_c)."""
    x = tie_free(RNG, (2, 8, 3, 3))
    w = np.zeros((1, 1, k))
    w[0, 0, k // 2] = 1.0
    m = map_fn(x, {"conv.weight": w})
    return m.shape == (2, 8, 1, 1) and np.allclose(m, _sigmoid_map(x.mean(axis=(2, 3), keepdims=True)))


def test_even_eca_kernel_is_caught_by_the_rule_and_by_centring():
    assert kernel_rule_is_odd(eca_kernel_size)
    assert not kernel_rule_is_odd(mistaken_eca_kernel_size)            # 4 at C = 128 and 256
    assert gate_is_centred(ours_eca_map, 5)
    assert not gate_is_centred(mistaken_eca_map_even_kernel, 4)
