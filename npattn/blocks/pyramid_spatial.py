"""Pyramid spatial attention: CBAM's spatial descriptor seen at several scales, one gate.

.. math:: f = [\\mathrm{mean}_c(x); \\max_c(x)],\\quad
          u_s = \\mathrm{up}_{H \\times W}(\\mathrm{pool}_{h_s \\times w_s}(f)),\\quad
          M = \\sigma(w \\star [u_{s_1}; \\dots; u_{s_L}] + b),\\quad y = x \\odot M

For each scale ``s`` the two-channel descriptor ``f`` (N, 2, H, W) is average-pooled to
``h_s = max(1, H // s)`` by ``w_s = max(1, W // s)`` bins with PyTorch's adaptive bins
(``adaptive_avg_pool2d``), and upsampled back to (H, W) bilinearly with ``align_corners=False``
(``interpolate``); scale 1 is ``f`` itself (no pooling).  The levels are stacked along the
channels in the order of ``scales`` (channel ``2 i`` the mean map and ``2 i + 1`` the max map of
scale ``scales[i]``), filtered by one k x k convolution with "same" padding ``k // 2``, and
squashed by a sigmoid.  The pyramid pooling follows PSPNet (Zhao et al., 2017) and SPANet's
1-2-4 pyramid (Guo et al., 2020); the descriptor and the gate are CBAM's (Woo et al., 2018).
Derivation and the departures from the literature: ``docs/blocks/pyramid_spatial.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from ..backend import namespace
from ..checks import argument_error, check_float_array, check_int, int_pair
from ..init import as_generator, bias_uniform, fan_in, kaiming_uniform
from ._base import Block, check_odd, take_params

__all__ = ["pyramid_spatial_attention_forward", "pyramid_spatial_attention_backward",
           "PyramidSpatialAttention", "PyramidSpatialAttentionCache", "LevelCache",
           "pyramid_level_size"]


def pyramid_level_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """The pooled size of one level: ``(max(1, H // s), max(1, W // s))`` for ``size = (H, W)``."""
    return max(1, size[0] // scale), max(1, size[1] // scale)


def check_scales(op: str, scales: Any) -> tuple[int, ...]:
    """A non-empty tuple of distinct ints >= 1 (a list is accepted and made a tuple)."""
    if not isinstance(scales, (tuple, list)) or not scales:
        raise argument_error(op, "scales", "a non-empty tuple of ints >= 1", repr(scales),
                             TypeError if not isinstance(scales, (tuple, list)) else ValueError)
    out = tuple(check_int(op, "scales", s, minimum=1) for s in scales)
    if len(set(out)) != len(out):
        raise argument_error(op, "scales", "distinct scales", repr(scales))
    return out


class LevelCache(NamedTuple):
    """One level of the pyramid above scale 1: the pooling and the upsampling."""

    pool: Any      # adaptive_avg_pool2d to (h_s, w_s)
    up: Any        # interpolate back to (H, W), bilinear, align_corners=False


class PyramidSpatialAttentionCache(NamedTuple):
    """The caches of the block's ops, in forward order, and the attention map."""

    mean: Any                     # channel_mean
    max: Any                      # channel_max
    levels: tuple[Any, ...]       # a LevelCache per scale, None for scale 1 (the identity)
    conv: Any                     # conv2d on the stacked levels
    gate: Any                     # sigmoid
    prod: Any                     # mul(x, map)
    map: Any                      # (N, 1, H, W), in [0, 1]


def pyramid_spatial_attention_forward(x: Any, params: dict[str, Any], scales: Any = (1, 2, 4)
                                      ) -> tuple[Any, PyramidSpatialAttentionCache]:
    """Pyramid spatial attention.

    .. math:: u_s = \\mathrm{up}(\\mathrm{pool}_s([\\mathrm{mean}_c x; \\max_c x])),\\quad
              M = \\sigma(w \\star [u_{s_1}; \\dots; u_{s_L}] + b),\\quad y = x \\odot M

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        ``"conv.weight"`` (1, 2 L, kh, kw), ``L = len(scales)``, kh and kw odd, and optionally
        ``"conv.bias"`` (1,); the dtype of x.  Padding is ``(kh // 2, kw // 2)``.
    scales : tuple of distinct int >= 1
        Level ``i`` pools to ``(max(1, H // s), max(1, W // s))`` bins, ``s = scales[i]``, and
        feeds weight channels ``2 i`` (mean) and ``2 i + 1`` (max); scale 1 is not pooled.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : PyramidSpatialAttentionCache
        The ops' caches; ``cache.map`` is ``M`` (N, 1, H, W).  The channel max sends its
        gradient to the first maximum in index order.
    """
    op = "pyramid_spatial_attention"
    xp = namespace(op, x=x)
    check_float_array(op, "x", x, ndim=4, layout="(N, C, H, W)")
    scales = check_scales(op, scales)
    p = take_params(op, params, x, {"conv.weight": (1, 2 * len(scales), "kh", "kw"),
                                    "conv.bias": (1,)}, optional=("conv.bias",))
    w, b = p["conv.weight"], p.get("conv.bias")
    kh = check_odd(op, "params['conv.weight'].shape[2]", w.shape[2])
    kw = check_odd(op, "params['conv.weight'].shape[3]", w.shape[3])
    size = tuple(x.shape[2:])

    f_mean, c_mean = ops.channel_mean_forward(x)                      # (N, 1, H, W)
    f_max, c_max = ops.channel_max_forward(x)                         # (N, 1, H, W)
    f = xp.concat([f_mean, f_max], axis=1)                            # (N, 2, H, W)
    us, c_levels = [], []
    for s in scales:
        if s == 1:                                                    # the identity level
            us.append(f)
            c_levels.append(None)
            continue
        v, c_pool = ops.adaptive_avg_pool2d_forward(f, pyramid_level_size(size, s))
        u, c_up = ops.interpolate_forward(v, size=size, mode="bilinear", align_corners=False)
        us.append(u)                                                  # (N, 2, H, W)
        c_levels.append(LevelCache(c_pool, c_up))
    g = xp.concat(us, axis=1)                                         # (N, 2 L, H, W)
    z, c_conv = ops.conv2d_forward(g, w, b, padding=(kh // 2, kw // 2))
    m, c_gate = ops.sigmoid_forward(z)
    y, c_prod = ops.mul_forward(x, m)
    return y, PyramidSpatialAttentionCache(c_mean, c_max, tuple(c_levels), c_conv, c_gate,
                                           c_prod, m)


def pyramid_spatial_attention_backward(dy: Any, cache: PyramidSpatialAttentionCache
                                       ) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`pyramid_spatial_attention_forward`: ``(dx, {"conv.weight": ...[, "conv.bias": ...]})``.

    The descriptor ``f`` feeds every level: their gradients are summed into ``df``.  x feeds the
    product, the channel mean and the channel max: the product's term is a fresh array, and the
    two maps' terms are added into it in place on the last two steps.  See
    ``docs/blocks/pyramid_spatial.md``.  ``dy`` is not modified.
    """
    namespace("pyramid_spatial_attention_backward", dy=dy)
    dx, dm = ops.mul_backward(dy, cache.prod)                         # through y = x * M: dy M
    dz = ops.sigmoid_backward(dm, cache.gate)
    dg, dw, db = ops.conv2d_backward(dz, cache.conv)
    df = 0
    for i, level in enumerate(cache.levels):
        du = dg[:, 2 * i:2 * i + 2, ...]                              # undo the stacking
        if level is None:
            df = df + du                                              # scale 1: f itself
        else:
            dv = ops.interpolate_backward(du, level.up)
            df = df + ops.adaptive_avg_pool2d_backward(dv, level.pool)
    df_mean, df_max = df[:, 0:1, ...], df[:, 1:2, ...]                # undo the concat
    dx = ops.channel_mean_backward_add(dx, df_mean, cache.mean)       # + the mean path
    dx = ops.channel_max_backward_add(dx, df_max, cache.max)          # + the max path
    grads = {"conv.weight": dw}
    if db is not None:
        grads["conv.bias"] = db
    return dx, grads


class PyramidSpatialAttention(Block):
    """Pyramid spatial attention, the stateful face of :func:`pyramid_spatial_attention_forward`.

    Parameters
    ----------
    kernel_size : odd int >= 1, or a pair of them
        The convolution's size; padding ``k // 2`` keeps H and W.
    scales : tuple of distinct int >= 1
        The pyramid's scales; ``(1, 2, 4)`` by default.
    bias : bool
        Whether the convolution has a bias.
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of ``nn.Conv2d(2 L, 1, k, padding=k // 2)``.
    dtype : {"float32", "float64"}

    Params ``conv.weight`` (1, 2 L, k, k), ``L = len(scales)``, and, with ``bias``,
    ``conv.bias`` (1,).  Any number of input channels.
    """

    pure_forward = staticmethod(pyramid_spatial_attention_forward)
    pure_backward = staticmethod(pyramid_spatial_attention_backward)

    def __init__(self, kernel_size: Any = 7, scales: Any = (1, 2, 4), bias: bool = False, *,
                 rng: Any = None, dtype: str = "float32") -> None:
        super().__init__()
        name = "PyramidSpatialAttention"
        pair = int_pair(name, "kernel_size", kernel_size, minimum=1)
        self.kernel_size = tuple(check_odd(name, "kernel_size", k) for k in pair)
        self.scales = check_scales(name, scales)
        gen = as_generator(rng, name)
        shape = (1, 2 * len(self.scales), *self.kernel_size)
        self.add_param("conv.weight", kaiming_uniform(shape, gen, dtype=dtype))
        if bias:
            self.add_param("conv.bias", bias_uniform((1,), fan_in(shape), gen, dtype))

    def _forward(self, x: Any) -> tuple[Any, Any]:
        self.check_input(x)
        return pyramid_spatial_attention_forward(x, dict(self.params), self.scales)

    def extra_repr(self) -> str:
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        return f"kernel_size={k}, scales={self.scales}, bias={'conv.bias' in self._params}"
