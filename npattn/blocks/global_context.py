"""Global context block (GCNet: Cao, Xu, Lin, Wei and Hu, "GCNet: Non-local Networks Meet
Squeeze-Excitation Networks and Beyond", ICCV Workshops 2019), with attention pooling and the
"channel add" fusion: ``y = x + T(sum_p softmax_p(w_m . x_p + b_m) x_p)``.

Context modelling: a 1x1 convolution to one map, a softmax over the H W positions, and the
positions of x averaged with those weights.  Transform ``T``: a 1x1 convolution C -> P, layer
norm over (P, 1, 1), ReLU, a 1x1 convolution P -> C, all with bias.  The context vector is added
to every position.  Built only from :mod:`npattn.ops`; the backward is the forward read in
reverse.  Derivation: ``docs/blocks/global_context.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import ops
from ..backend import namespace
from ..checks import check_float_array, check_int, check_shape
from ..init import as_generator
from ._base import Block, hidden_width, take_params
from ._parts import add_conv

__all__ = ["global_context_forward", "global_context_backward", "GlobalContext",
           "GlobalContextCache"]


class GlobalContextCache(NamedTuple):
    """The caches of the global context block's ops, in forward order, and the attention map."""

    mask: Any       # conv2d x -> logits k (N, 1, H, W), conv_mask
    k_flat: Any     # reshape k -> (N, HW, 1)
    softmax: Any    # softmax over the positions (axis 1)
    x_flat: Any     # reshape x -> (N, C, HW)
    pool: Any       # matmul x_flat @ a -> context (N, C, 1)
    context: Any    # reshape -> (N, C, 1, 1)
    conv0: Any      # channel_add_conv.0, 1x1 conv C -> P
    norm: Any       # channel_add_conv.1, layer norm over (P, 1, 1)
    relu: Any       # channel_add_conv.2
    conv3: Any      # channel_add_conv.3, 1x1 conv P -> C
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
        The ops' caches; ``cache.map`` is the attention ``a`` as (N, 1, H, W), which sums to
        one over H and W.
    """
    xp = namespace("global_context", x=x)
    check_float_array("global_context", "x", x, ndim=4, layout="(N, C, H, W)")
    n, c, h, w = x.shape
    p = take_params("global_context", params, x, _param_shapes(c))
    planes = p["channel_add_conv.0.weight"].shape[0]

    k, c_mask = ops.conv2d_forward(x, p["conv_mask.weight"], p["conv_mask.bias"])  # (N, 1, H, W)
    k_flat, c_k_flat = ops.reshape_forward(k, (n, h * w, 1))
    a, c_softmax = ops.softmax_forward(k_flat, axis=1)                       # over the positions
    v, c_x_flat = ops.reshape_forward(x, (n, c, h * w))
    ctx, c_pool = ops.matmul_forward(v, a)                                   # (N, C, 1)
    ctx4, c_context = ops.reshape_forward(ctx, (n, c, 1, 1))
    t0, c_conv0 = ops.conv2d_forward(ctx4, p["channel_add_conv.0.weight"],
                                     p["channel_add_conv.0.bias"])           # (N, P, 1, 1)
    t1, c_norm = ops.layer_norm_forward(t0, (planes, 1, 1), p["channel_add_conv.1.weight"],
                                        p["channel_add_conv.1.bias"])
    t2, c_relu = ops.relu_forward(t1)
    t3, c_conv3 = ops.conv2d_forward(t2, p["channel_add_conv.3.weight"],
                                     p["channel_add_conv.3.bias"])           # (N, C, 1, 1)
    y = x + t3                                                               # at every position
    return y, GlobalContextCache(c_mask, c_k_flat, c_softmax, c_x_flat, c_pool, c_context,
                                 c_conv0, c_norm, c_relu, c_conv3, xp.reshape(a, (n, 1, h, w)))


def global_context_backward(dy: Any, cache: GlobalContextCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`global_context_forward`: ``(dx, {"conv_mask.weight": ..., ...})``.

    x feeds the sum, the attention pooling and the mask's logits: three terms summed on the
    last line.  See ``docs/blocks/global_context.md``.  ``dy`` is not modified.
    """
    namespace("global_context_backward", dy=dy)
    check_shape("global_context_backward", "dy", dy, cache.x_flat.in_shape)
    n, c = dy.shape[:2]
    dt3 = ops.unbroadcast(dy, (n, c, 1, 1))                       # y = x + t3, t3 broadcast
    dt2, dw3, db3 = ops.conv2d_backward(dt3, cache.conv3)
    dt1 = ops.relu_backward(dt2, cache.relu)
    dt0, _, dw1, db1 = ops.layer_norm_backward(dt1, cache.norm)
    dctx4, dw0, db0 = ops.conv2d_backward(dt0, cache.conv0)
    dctx = ops.reshape_backward(dctx4, cache.context)
    dv, da = ops.matmul_backward(dctx, cache.pool)                # ctx = x_flat @ a
    dk_flat = ops.softmax_backward(da, cache.softmax)
    dk = ops.reshape_backward(dk_flat, cache.k_flat)
    dx_mask, dwm, dbm = ops.conv2d_backward(dk, cache.mask)
    dx_pool = ops.reshape_backward(dv, cache.x_flat)
    dx = dy + dx_pool + dx_mask                                   # the three paths into x
    return dx, {"conv_mask.weight": dwm, "conv_mask.bias": dbm,
                "channel_add_conv.0.weight": dw0, "channel_add_conv.0.bias": db0,
                "channel_add_conv.1.weight": dw1, "channel_add_conv.1.bias": db1,
                "channel_add_conv.3.weight": dw3, "channel_add_conv.3.bias": db3}


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
