"""CBAM's spatial attention (Woo et al., 2018): ``M_s = sigmoid(conv_k([mean_c(x); max_c(x)]))``.

The channel-wise mean and max of x, stacked as two channels, pass through one k x k
convolution with "same" padding ``k // 2`` (k odd) and a sigmoid.  Output ``x * M_s``.
Derivation: ``docs/blocks/spatial_attention.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from ..backend import namespace
from ..checks import check_float_array, int_pair
from ..init import as_generator, bias_uniform, fan_in, kaiming_uniform
from ._base import Block, check_odd, take_params

__all__ = ["spatial_attention_forward", "spatial_attention_backward", "SpatialAttention",
           "SpatialAttentionCache"]


class SpatialAttentionCache(NamedTuple):
    """The caches of spatial attention's ops, in forward order, and the attention map."""

    mean: Any      # channel_mean
    max: Any       # channel_max
    conv: Any      # conv2d on [mean; max]
    gate: Any      # sigmoid
    prod: Any      # mul(x, map)
    map: Any       # (N, 1, H, W), in [0, 1]


def spatial_attention_forward(x: Any, params: dict[str, Any]) -> tuple[Any, SpatialAttentionCache]:
    """CBAM's spatial attention.

    .. math:: f = [\\mathrm{mean}_c(x); \\max_c(x)],\\quad M_s = \\sigma(w \\star f + b),
              \\quad y = x \\odot M_s

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        ``"conv.weight"`` (1, 2, kh, kw), kh and kw odd, and optionally ``"conv.bias"`` (1,);
        the dtype of x.  Padding is ``(kh // 2, kw // 2)``.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : SpatialAttentionCache
        The ops' caches; ``cache.map`` is ``M_s`` (N, 1, H, W).  The channel max sends its
        gradient to the first maximum in index order.
    """
    xp = namespace("spatial_attention", x=x)
    check_float_array("spatial_attention", "x", x, ndim=4, layout="(N, C, H, W)")
    p = take_params("spatial_attention", params, x, {"conv.weight": (1, 2, "kh", "kw"),
                                                     "conv.bias": (1,)}, optional=("conv.bias",))
    w, b = p["conv.weight"], p.get("conv.bias")
    kh = check_odd("spatial_attention", "params['conv.weight'].shape[2]", w.shape[2])
    kw = check_odd("spatial_attention", "params['conv.weight'].shape[3]", w.shape[3])

    f_mean, c_mean = ops.channel_mean_forward(x)                  # (N, 1, H, W)
    f_max, c_max = ops.channel_max_forward(x)                     # (N, 1, H, W)
    f = xp.concat([f_mean, f_max], axis=1)                        # (N, 2, H, W)
    z, c_conv = ops.conv2d_forward(f, w, b, padding=(kh // 2, kw // 2))
    g, c_gate = ops.sigmoid_forward(z)
    y, c_prod = ops.mul_forward(x, g)
    return y, SpatialAttentionCache(c_mean, c_max, c_conv, c_gate, c_prod, g)


def spatial_attention_backward(dy: Any, cache: SpatialAttentionCache, *,
                               dx_out: Any = None) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`spatial_attention_forward`: ``(dx, {"conv.weight": ..., ["conv.bias": ...]})``.

    x feeds the product, the channel mean and the channel max: the product's term is a fresh
    array, and the two maps' terms are added into it.  See ``docs/blocks/spatial_attention.md``.
    ``dy`` is not modified.  ``dx_out``: an array of x's shape that the caller gives up (CBAM's
    own ``y_1``, this block's x, read here only for ``dM_s``), where ``dx`` is computed instead
    of a fresh array.
    """
    namespace("spatial_attention_backward", dy=dy)
    dx, dg = ops.mul_backward(dy, cache.prod, out=dx_out)   # through y = x * M_s: dx = dy * M_s
    dz = ops.sigmoid_backward(dg, cache.gate)
    df, dw, db = ops.conv2d_backward(dz, cache.conv)
    df_mean, df_max = df[:, 0:1, ...], df[:, 1:2, ...]            # undo the concat
    dx = ops.channel_mean_backward_add(dx, df_mean, cache.mean)   # + the mean path
    dx = ops.channel_max_backward_add(dx, df_max, cache.max)      # + the max path
    grads = {"conv.weight": dw}
    if db is not None:
        grads["conv.bias"] = db
    return dx, grads


class SpatialAttention(Block):
    """CBAM's spatial attention module, the stateful face of :func:`spatial_attention_forward`.

    Parameters
    ----------
    kernel_size : odd int >= 1, or a pair of them
        The convolution's size; padding ``k // 2`` keeps H and W.
    bias : bool
        Whether the convolution has a bias (CBAM's reference code has none).
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of ``nn.Conv2d(2, 1, k, padding=k // 2)``.
    dtype : {"float32", "float64"}

    Params ``conv.weight`` (1, 2, k, k) and, with ``bias``, ``conv.bias`` (1,).  Any number of
    input channels.
    """

    pure_forward = staticmethod(spatial_attention_forward)
    pure_backward = staticmethod(spatial_attention_backward)

    def __init__(self, kernel_size: Any = 7, bias: bool = False, *, rng: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        pair = int_pair("SpatialAttention", "kernel_size", kernel_size, minimum=1)
        self.kernel_size = tuple(check_odd("SpatialAttention", "kernel_size", k) for k in pair)
        gen = as_generator(rng, "SpatialAttention")
        shape = (1, 2, *self.kernel_size)
        self.add_param("conv.weight", kaiming_uniform(shape, gen, dtype=dtype))
        if bias:
            self.add_param("conv.bias", bias_uniform((1,), fan_in(shape), gen, dtype))

    def extra_repr(self) -> str:
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        return f"kernel_size={k}, bias={'conv.bias' in self._params}"
