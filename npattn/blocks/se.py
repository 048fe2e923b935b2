"""Squeeze-and-excitation (Hu et al., 2018): ``y = x * sigmoid(W2 relu(W1 gap(x)))``.

Built only from :mod:`npattn.ops`; the backward is the forward read in reverse, one line per
step.  Derivation: ``docs/blocks/se.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from ..backend import namespace
from ..checks import check_float_array
from ._base import BottleneckBlock, take_params

__all__ = ["se_forward", "se_backward", "SE", "SECache"]


class SECache(NamedTuple):
    """The caches of SE's ops, in forward order, and the attention map."""

    x_shape: tuple[int, ...]
    squeeze: Any   # global_avg_pool2d
    fc1: Any       # linear, excitation.0
    relu: Any
    fc2: Any       # linear, excitation.2
    gate: Any      # sigmoid
    prod: Any      # mul(x, map)
    map: Any       # (N, C, 1, 1), in [0, 1]


def se_forward(x: Any, params: dict[str, Any]) -> tuple[Any, SECache]:
    """Squeeze-and-excitation.

    .. math:: s = \\mathrm{gap}(x),\\quad m = \\sigma(W_2\\,\\mathrm{relu}(W_1 s)),\\quad y = x \\odot m

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        ``"excitation.0.weight"`` (h, C) and ``"excitation.2.weight"`` (C, h), the dtype of x.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : SECache
        The ops' caches; ``cache.map`` is the channel map ``m`` (N, C, 1, 1).
    """
    xp = namespace("se", x=x)
    check_float_array("se", "x", x, ndim=4, layout="(N, C, H, W)")
    n, c = x.shape[:2]
    p = take_params("se", params, x, {"excitation.0.weight": ("h", c),
                                      "excitation.2.weight": (c, "h")})

    s, c_squeeze = ops.global_avg_pool2d_forward(x)                        # (N, C, 1, 1)
    z1, c_fc1 = ops.linear_forward(xp.reshape(s, (n, c)), p["excitation.0.weight"])  # (N, h)
    a, c_relu = ops.relu_forward(z1)
    z2, c_fc2 = ops.linear_forward(a, p["excitation.2.weight"])             # (N, C)
    g, c_gate = ops.sigmoid_forward(z2)
    m = xp.reshape(g, (n, c, 1, 1))
    y, c_prod = ops.mul_forward(x, m)
    return y, SECache(tuple(x.shape), c_squeeze, c_fc1, c_relu, c_fc2, c_gate, c_prod, m)


def se_backward(dy: Any, cache: SECache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`se_forward`: ``(dx, {"excitation.0.weight": ..., "excitation.2.weight": ...})``.

    x feeds the product and the squeeze, so ``dx = dy * m + gap^T(dW-chain)``: the product's
    term is a fresh array, and the squeeze's is added into it on the last step.  See
    ``docs/blocks/se.md``.  ``dy`` is not modified.
    """
    xp = namespace("se_backward", dy=dy)
    n, c = cache.x_shape[:2]
    dx, dm = ops.mul_backward(dy, cache.prod)                     # through y = x * m: dx = dy * m
    dz2 = ops.sigmoid_backward(xp.reshape(dm, (n, c)), cache.gate)
    da, dw2, _ = ops.linear_backward(dz2, cache.fc2)
    dz1 = ops.relu_backward(da, cache.relu)
    ds, dw1, _ = ops.linear_backward(dz1, cache.fc1)
    dx = ops.global_avg_pool2d_backward_add(dx, xp.reshape(ds, (n, c, 1, 1)), cache.squeeze)
    return dx, {"excitation.0.weight": dw1, "excitation.2.weight": dw2}   # dx: both paths into x


class SE(BottleneckBlock):
    """Squeeze-and-excitation block, the stateful face of :func:`se_forward`.

    Parameters
    ----------
    channels : int >= 1
    reduction : int >= 1
        Hidden width ``h = max(1, channels // reduction)``.
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of both (bias-free) linear layers.
    dtype : {"float32", "float64"}

    Params ``excitation.0.weight`` (h, C) and ``excitation.2.weight`` (C, h), named as in
    ``nn.Sequential(nn.Linear(C, h, bias=False), nn.ReLU(), nn.Linear(h, C, bias=False), nn.Sigmoid())``.
    """

    pure_forward = staticmethod(se_forward)
    pure_backward = staticmethod(se_backward)
    weight_names = ("excitation.0.weight", "excitation.2.weight")
