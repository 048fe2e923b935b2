"""CBAM's channel attention (Woo et al., 2018): ``M_c = sigmoid(MLP(gap(x)) + MLP(gmp(x)))``.

One MLP, two bias-free 1x1 convolutions with a ReLU between, is applied to both the average-
and the max-pooled descriptor with the same weights.  A 1x1 convolution of a (N, C, 1, 1)
descriptor is a linear layer on (N, C), and the same MLP on both descriptors is one MLP pass on
the two stacked as a batch of 2N: so each weight's gradient, a sum over that batch, is the sum
of the two paths'.  Output ``x * M_c``.  Derivation: ``docs/blocks/channel_attention.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from ..backend import namespace
from ..checks import check_float_array
from ._base import BottleneckBlock, take_params

__all__ = ["channel_attention_forward", "channel_attention_backward", "ChannelAttention",
           "ChannelAttentionCache", "MLPCache"]


class MLPCache(NamedTuple):
    """The caches of the pass through the shared MLP, on both descriptors stacked."""

    fc1: Any     # mlp.0, 1x1 conv C -> h, as a linear layer on (2N, C)
    relu: Any    # mlp.1
    fc2: Any     # mlp.2, 1x1 conv h -> C, as a linear layer on (2N, h)


class ChannelAttentionCache(NamedTuple):
    """The caches of channel attention's ops, in forward order, and the attention map."""

    avg_pool: Any  # global_avg_pool2d
    max_pool: Any  # global_max_pool2d
    mlp: MLPCache  # on [d_avg; d_max], (2N, C)
    gate: Any      # sigmoid
    prod: Any      # mul(x, map)
    map: Any       # (N, C, 1, 1), in [0, 1]


def _mlp_forward(xp: Any, d: Any, w1: Any, w2: Any) -> tuple[Any, MLPCache]:
    """``W2 relu(W1 d)`` on descriptors ``d`` (B, C): the two 1x1 convolutions, weights (h, C, 1, 1)
    and (C, h, 1, 1), as linear layers with those weights read as (h, C) and (C, h)."""
    z1, c_fc1 = ops.linear_forward(d, xp.reshape(w1, w1.shape[:2]))       # (B, h)
    a, c_relu = ops.relu_forward(z1)
    z2, c_fc2 = ops.linear_forward(a, xp.reshape(w2, w2.shape[:2]))       # (B, C)
    return z2, MLPCache(c_fc1, c_relu, c_fc2)


def _mlp_backward(xp: Any, dz2: Any, cache: MLPCache) -> tuple[Any, Any, Any]:
    """``(dd, dw1, dw2)`` for the pass through the MLP, the weights' gradients as (h, C, 1, 1)
    and (C, h, 1, 1)."""
    da, dw2, _ = ops.linear_backward(dz2, cache.fc2)
    dz1 = ops.relu_backward(da, cache.relu)
    dd, dw1, _ = ops.linear_backward(dz1, cache.fc1)
    return dd, xp.reshape(dw1, (*dw1.shape, 1, 1)), xp.reshape(dw2, (*dw2.shape, 1, 1))


def channel_attention_forward(x: Any, params: dict[str, Any]) -> tuple[Any, ChannelAttentionCache]:
    """CBAM's channel attention.

    .. math:: M_c = \\sigma\\big(\\mathrm{MLP}(\\mathrm{gap}(x)) + \\mathrm{MLP}(\\mathrm{gmp}(x))\\big),
              \\quad y = x \\odot M_c

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        ``"mlp.0.weight"`` (h, C, 1, 1) and ``"mlp.2.weight"`` (C, h, 1, 1), the dtype of x.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : ChannelAttentionCache
        The ops' caches; ``cache.map`` is ``M_c`` (N, C, 1, 1).  The max pool sends its
        gradient to the first maximum in index order.
    """
    xp = namespace("channel_attention", x=x)
    check_float_array("channel_attention", "x", x, ndim=4, layout="(N, C, H, W)")
    n, c = x.shape[:2]
    p = take_params("channel_attention", params, x, {"mlp.0.weight": ("h", c, 1, 1),
                                                     "mlp.2.weight": (c, "h", 1, 1)})
    w1, w2 = p["mlp.0.weight"], p["mlp.2.weight"]

    d_avg, c_avg = ops.global_avg_pool2d_forward(x)               # (N, C, 1, 1)
    d_max, c_max = ops.global_max_pool2d_forward(x)               # (N, C, 1, 1)
    d = xp.concat([xp.reshape(d_avg, (n, c)), xp.reshape(d_max, (n, c))])   # (2N, C), stacked
    z, c_mlp = _mlp_forward(xp, d, w1, w2)                        # the same MLP on both at once
    z_sum = xp.reshape(z[:n, :] + z[n:, :], (n, c, 1, 1))         # z_avg + z_max
    g, c_gate = ops.sigmoid_forward(z_sum)
    y, c_prod = ops.mul_forward(x, g)
    return y, ChannelAttentionCache(c_avg, c_max, c_mlp, c_gate, c_prod, g)


def channel_attention_backward(dy: Any, cache: ChannelAttentionCache, *,
                               overwrite_dy: bool = False) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`channel_attention_forward`: ``(dx, {"mlp.0.weight": ..., "mlp.2.weight": ...})``.

    The sum ``z_avg + z_max`` passes ``dz`` to both halves of the stacked batch; the shared
    weights' gradients, sums over that batch, are the sums of the two passes'; x feeds the
    product and both pools: the product's term is a fresh array, and the pools' terms are added
    into it on the last two steps.  See ``docs/blocks/channel_attention.md``.  ``dy`` is not
    modified, unless ``overwrite_dy``: a caller that gives ``dy`` up (CBAM, whose ``dy`` is
    spatial attention's fresh ``dx``) gets ``dx`` computed in its memory, one full-size array
    fewer.
    """
    xp = namespace("channel_attention_backward", dy=dy)
    n, c = dy.shape[:2]
    dx, dg = ops.mul_backward(dy, cache.prod, overwrite_dy=overwrite_dy)   # dx = dy * M_c
    dz = xp.reshape(ops.sigmoid_backward(dg, cache.gate), (n, c))
    dd, dw1, dw2 = _mlp_backward(xp, xp.concat([dz, dz]), cache.mlp)   # dz_avg = dz_max = dz
    dd_avg, dd_max = xp.reshape(dd[:n, :], (n, c, 1, 1)), xp.reshape(dd[n:, :], (n, c, 1, 1))
    dx = ops.global_avg_pool2d_backward_add(dx, dd_avg, cache.avg_pool)   # + the average path
    dx = ops.global_max_pool2d_backward_add(dx, dd_max, cache.max_pool)   # + the max path
    return dx, {"mlp.0.weight": dw1, "mlp.2.weight": dw2}


class ChannelAttention(BottleneckBlock):
    """CBAM's channel attention module, the stateful face of :func:`channel_attention_forward`.

    Parameters
    ----------
    channels : int >= 1
    reduction : int >= 1
        Hidden width ``h = max(1, channels // reduction)``.
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of both bias-free 1x1 convolutions.
    dtype : {"float32", "float64"}

    Params ``mlp.0.weight`` (h, C, 1, 1) and ``mlp.2.weight`` (C, h, 1, 1), named as in
    ``nn.Sequential(nn.Conv2d(C, h, 1, bias=False), nn.ReLU(), nn.Conv2d(h, C, 1, bias=False))``.
    """

    pure_forward = staticmethod(channel_attention_forward)
    pure_backward = staticmethod(channel_attention_backward)
    weight_names = ("mlp.0.weight", "mlp.2.weight")
    kernel = (1, 1)
