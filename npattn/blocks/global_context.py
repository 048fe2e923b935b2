"""Global context block (GCNet: Cao, Xu, Lin, Wei and Hu, "GCNet: Non-local Networks Meet
Squeeze-Excitation Networks and Beyond", ICCV Workshops 2019), with attention pooling and the
"channel add" fusion: ``y = x + T(sum_p softmax_p(w_m . x_p + b_m) x_p)``.

Context modelling: a 1x1 convolution to one map, a softmax over the H W positions, and the
positions of x averaged with those weights.  Transform ``T``: a 1x1 convolution C -> P, layer
norm over (P, 1, 1), ReLU, a 1x1 convolution P -> C, all with bias.  The context vector is added
to every position.  Built from :mod:`npattn.ops` and, for the products with x, the backend's
``thin_matmul``; the backward is the forward read in reverse.  Derivation:
``docs/blocks/global_context.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import ops
from ..backend import add_into, thin_matmul, namespace, sum_over
from ..checks import check_float_array, check_int, check_shape
from ..init import as_generator
from ._base import Block, hidden_width, take_params
from ._parts import add_conv

__all__ = ["global_context_forward", "global_context_backward", "GlobalContext",
           "GlobalContextCache"]


class GlobalContextCache(NamedTuple):
    """What the backward needs: x, the mask's weight, the ops' caches in forward order, and the
    attention map (a view of the softmax's output)."""

    x: Any          # the input (N, C, H, W), for the pooling's and the mask's gradients
    w_mask: Any     # conv_mask.weight as (1, C, 1)
    softmax: Any    # softmax over the positions of the logits k (N, 1, HW), axis -1
    conv0: Any      # channel_add_conv.0, 1x1 conv C -> P, as a linear layer on (N, C)
    norm: Any       # channel_add_conv.1, layer norm over (P, 1, 1)
    relu: Any       # channel_add_conv.2
    conv3: Any      # channel_add_conv.3, 1x1 conv P -> C, as a linear layer on (N, P)
    map: Any        # a as (N, 1, H, W): the attention weights, summing to one per sample


def _param_shapes(c: int) -> dict[str, tuple[Any, ...]]:
    """Every parameter's shape; ``"p"`` is the bottleneck width P."""
    return {"conv_mask.weight": (1, c, 1, 1), "conv_mask.bias": (1,),
            "channel_add_conv.0.weight": ("p", c, 1, 1), "channel_add_conv.0.bias": ("p",),
            "channel_add_conv.1.weight": ("p", 1, 1), "channel_add_conv.1.bias": ("p", 1, 1),
            "channel_add_conv.3.weight": (c, "p", 1, 1), "channel_add_conv.3.bias": (c,)}


def global_context_forward(x: Any, params: dict[str, Any]) -> tuple[Any, GlobalContextCache]:
    """The global context block.

    .. math:: a = \\mathrm{softmax}_p(w_m^\\top x_p + b_m),\\quad c = \\sum_p a_p x_p,\\quad
              t = W_3\\,\\mathrm{relu}(\\mathrm{LN}(W_0 c + b_0)) + b_3,\\quad y_p = x_p + t

    The 1x1 convolutions are matrix products: the mask's, a batched product of ``w_m^T``
    (1, C) with x read as (N, C, HW) (:func:`~npattn.backend.thin_matmul`, as the pooling); the
    bottleneck's, linear layers on (N, C) and (N, P)
    (their (P, C, 1, 1) and (C, P, 1, 1) weights read as (P, C) and (C, P)).

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        ``"conv_mask.weight"`` (1, C, 1, 1), ``"conv_mask.bias"`` (1,);
        ``"channel_add_conv.0.weight"`` (P, C, 1, 1), ``"channel_add_conv.0.bias"`` (P,);
        ``"channel_add_conv.1.weight"`` and ``".bias"`` (P, 1, 1) (the layer norm);
        ``"channel_add_conv.3.weight"`` (C, P, 1, 1), ``"channel_add_conv.3.bias"`` (C,);
        the dtype of x.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : GlobalContextCache
        x, the ops' caches; ``cache.map`` is the attention ``a`` as (N, 1, H, W), which sums
        to one over H and W.
    """
    xp = namespace("global_context", x=x)
    check_float_array("global_context", "x", x, ndim=4, layout="(N, C, H, W)")
    n, c, h, w = x.shape
    p = take_params("global_context", params, x, _param_shapes(c))
    planes = p["channel_add_conv.0.weight"].shape[0]
    w_mask = xp.reshape(p["conv_mask.weight"], (1, c, 1))
    w0 = xp.reshape(p["channel_add_conv.0.weight"], (planes, c))
    w3 = xp.reshape(p["channel_add_conv.3.weight"], (c, planes))

    v = xp.reshape(x, (n, c, h * w))                                         # positions flattened
    k = thin_matmul(xp.matrix_transpose(w_mask), v) + p["conv_mask.bias"]      # (N, 1, HW)
    a, c_softmax = ops.softmax_forward(k, axis=-1)                           # over the positions
    ctx = xp.reshape(thin_matmul(v, xp.matrix_transpose(a)), (n, c))           # sum_p a_p x_p
    t0, c_conv0 = ops.linear_forward(ctx, w0, p["channel_add_conv.0.bias"])  # (N, P)
    t1, c_norm = ops.layer_norm_forward(xp.reshape(t0, (n, planes, 1, 1)), (planes, 1, 1),
                                        p["channel_add_conv.1.weight"],
                                        p["channel_add_conv.1.bias"])
    t2, c_relu = ops.relu_forward(t1)
    t3, c_conv3 = ops.linear_forward(xp.reshape(t2, (n, planes)), w3,
                                     p["channel_add_conv.3.bias"])           # (N, C)
    y = x + xp.reshape(t3, (n, c, 1, 1))                                     # at every position
    return y, GlobalContextCache(x, w_mask, c_softmax, c_conv0, c_norm, c_relu, c_conv3,
                                 xp.reshape(a, (n, 1, h, w)))


def global_context_backward(dy: Any, cache: GlobalContextCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`global_context_forward`: ``(dx, {"conv_mask.weight": ..., ...})``.

    x feeds the sum, the attention pooling and the mask's logits: the last two terms are the
    rank-two product ``[dc, w_m] [a; dk]`` per sample (one batched product with inner size 2),
    and ``dy`` is added into it.  See ``docs/blocks/global_context.md``.  ``dy`` is not
    modified.
    """
    xp = namespace("global_context_backward", dy=dy)
    check_shape("global_context_backward", "dy", dy, tuple(cache.x.shape))
    n, c, h, w = dy.shape
    v = xp.reshape(cache.x, (n, c, h * w))
    dt3 = xp.reshape(sum_over(dy, (2, 3)), (n, c))                # y = x + t3, t3 broadcast
    dt2, dw3, db3 = ops.linear_backward(dt3, cache.conv3)
    dt1 = ops.relu_backward(xp.reshape(dt2, cache.relu.y.shape), cache.relu)
    dt0, _, dw1, db1 = ops.layer_norm_backward(dt1, cache.norm)
    dctx, dw0, db0 = ops.linear_backward(xp.reshape(dt0, (n, -1)), cache.conv0)
    dctx = xp.reshape(dctx, (n, c, 1))
    a = cache.softmax.y                                           # (N, 1, HW)
    da = thin_matmul(xp.matrix_transpose(dctx), v)                  # ctx = v a^T: da = dc^T v
    dk = ops.softmax_backward(da, cache.softmax)                  # (N, 1, HW)
    dwm = xp.sum(thin_matmul(v, xp.matrix_transpose(dk)), axis=0)   # k = w_m^T v + b_m: sum_n v dk^T
    dbm = xp.reshape(xp.sum(dk), (1,))
    u = xp.concat([dctx, xp.broadcast_to(cache.w_mask, (n, c, 1))], axis=2)   # (N, C, 2)
    dx = thin_matmul(u, xp.concat([a, dk], axis=1))               # dv = dc a + w_m dk, (N, C, HW)
    dx = add_into(xp.reshape(dx, (n, c, h, w)), dy)               # + y = x + t3: dy itself
    return dx, {"conv_mask.weight": xp.reshape(dwm, (1, c, 1, 1)), "conv_mask.bias": dbm,
                "channel_add_conv.0.weight": xp.reshape(dw0, (*dw0.shape, 1, 1)),
                "channel_add_conv.0.bias": db0,
                "channel_add_conv.1.weight": dw1, "channel_add_conv.1.bias": db1,
                "channel_add_conv.3.weight": xp.reshape(dw3, (*dw3.shape, 1, 1)),
                "channel_add_conv.3.bias": db3}


class GlobalContext(Block):
    """The global context block (GCNet), the stateful face of :func:`global_context_forward`.

    Parameters
    ----------
    channels : int >= 1
    reduction : int >= 1
        Bottleneck width ``P = max(1, channels // reduction)`` (GCNet's ``ratio = 1/reduction``).
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of the three convolutions; the layer norm starts
        at weight 1, bias 0.  (GCNet's code zero-initialises ``channel_add_conv.3``, so that
        the block starts as the identity; set those two params to zero for that.)
    dtype : {"float32", "float64"}

    Params named as the reference ``ContextBlock`` (attention pooling, ``channel_add`` fusion):
    ``conv_mask`` = ``nn.Conv2d(C, 1, 1)`` and ``channel_add_conv`` = ``nn.Sequential(
    nn.Conv2d(C, P, 1), nn.LayerNorm([P, 1, 1]), nn.ReLU(), nn.Conv2d(P, C, 1))``, so
    ``conv_mask.weight`` (1, C, 1, 1), ``conv_mask.bias`` (1,), ``channel_add_conv.0.weight``
    (P, C, 1, 1), ``.0.bias`` (P,), ``.1.weight`` and ``.1.bias`` (P, 1, 1), ``.3.weight``
    (C, P, 1, 1), ``.3.bias`` (C,).  ``attention_map(x)`` is the softmax over positions,
    (N, 1, H, W).
    """

    pure_forward = staticmethod(global_context_forward)
    pure_backward = staticmethod(global_context_backward)

    def __init__(self, channels: int, reduction: int = 16, *, rng: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        self.channels = check_int(self.name, "channels", channels, minimum=1)
        self.reduction = check_int(self.name, "reduction", reduction, minimum=1)
        c, planes = self.channels, hidden_width(self.channels, self.reduction)
        gen = as_generator(rng, self.name)
        add_conv(self, "conv_mask", (1, c, 1, 1), gen, dtype)
        w0 = add_conv(self, "channel_add_conv.0", (planes, c, 1, 1), gen, dtype)
        self.add_param("channel_add_conv.1.weight", np.ones((planes, 1, 1), dtype=w0.dtype))
        self.add_param("channel_add_conv.1.bias", np.zeros((planes, 1, 1), dtype=w0.dtype))
        add_conv(self, "channel_add_conv.3", (c, planes, 1, 1), gen, dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
