"""Coordinate attention (Hou, Zhou and Feng, "Coordinate Attention for Efficient Mobile Network
Design", CVPR 2021): ``y = x * a_h * a_w`` with one gate per row and one per column.

x is averaged along W (one value per row, (N, C, H, 1)) and along H (one per column, turned to
(N, C, W, 1)); the two strips, concatenated along the spatial axis, pass through one shared 1x1
convolution C -> mip with bias, a batch norm and h-swish; split again, each strip goes through
its own 1x1 convolution back to C with bias and a sigmoid.  ``mip = max(8, C // reduction)``.
The batch norm normalises over N and the H + W strip positions together, as in the reference
code.  Built from :mod:`npattn.ops`, with the full-size steps done block by block of
(samples, channels); the backward is the forward read in reverse.  Derivation:
``docs/blocks/coord_attention.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import device

from .. import ops
from ..backend import add_into, batch_channel_blocks, multiply_to, namespace, run_blocks
from ..checks import check_float_array, check_int, check_shape
from ..init import as_generator
from ._base import take_params
from ._parts import (BatchNormBlock, BatchNorms, add_conv, batch_norm_shapes, check_bn_settings,
                     take_buffers, updated_buffers)

__all__ = ["coord_attention_forward", "coord_attention_backward", "CoordAttention",
           "CoordAttentionCache", "coord_mip"]


def coord_mip(channels: int, reduction: int) -> int:
    """The shared convolution's width: ``max(8, channels // reduction)``."""
    return max(8, channels // reduction)


class CoordAttentionCache(NamedTuple):
    """The caches of coordinate attention's ops, in forward order, x, and the updated running
    statistics; ``map`` is computed on demand (no full-size array is kept)."""

    h: int
    pool_h: Any     # mean_w: x -> x_h (N, C, H, 1)
    pool_w: Any     # mean_h: x -> x_w (N, C, 1, W)
    turn_in: Any    # permute x_w -> (N, C, W, 1)
    conv1: Any      # conv1 on the concatenation (N, C, H + W, 1)
    bn1: Any        # batch_norm2d
    act: Any        # hardswish
    turn_out: Any   # permute the W strip back -> (N, mip, 1, W)
    conv_h: Any
    conv_w: Any
    gate_h: Any     # sigmoid -> a_h (N, C, H, 1)
    gate_w: Any     # sigmoid -> a_w (N, C, 1, W)
    x: Any          # the input, for the gates' gradients
    buffers: Any    # the running statistics after this call, or None

    @property
    def map(self) -> Any:
        """The attention map ``a_h * a_w``, (N, C, H, W), in [0, 1]."""
        return self.gate_h.y * self.gate_w.y


def coord_attention_forward(x: Any, params: dict[str, Any], buffers: dict[str, Any] | None = None,
                            training: bool = True, momentum: float = 0.1,
                            eps: float = 1e-5) -> tuple[Any, CoordAttentionCache]:
    """Coordinate attention.

    .. math:: f = [\\mathrm{mean}_w(x); \\mathrm{mean}_h(x)^\\top],\\quad
              u = \\mathrm{hswish}(\\mathrm{BN}(W_1 f + b_1)) = [u^h; u^w],\\quad
              a_h = \\sigma(W_h u^h + b_h),\\ a_w = \\sigma(W_w u^{w\\top} + b_w),\\quad
              y = x \\odot a_h \\odot a_w

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        ``"conv1.weight"`` (mip, C, 1, 1), ``"conv1.bias"`` (mip,); ``"bn1.weight"`` and
        ``"bn1.bias"`` (mip,); ``"conv_h.weight"`` and ``"conv_w.weight"`` (C, mip, 1, 1),
        ``"conv_h.bias"`` and ``"conv_w.bias"`` (C,); the dtype of x.
    buffers : dict or None
        ``"bn1.running_mean"`` and ``"bn1.running_var"`` (mip,); may be ``None`` in training
        mode (then no running statistics are kept).
    training : bool
        The batch norm uses the batch statistics (True) or the running ones (False).
    momentum, eps : float
        The batch norm's, as :func:`npattn.ops.batch_norm2d_forward`.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : CoordAttentionCache
        The ops' caches; ``cache.buffers`` the running statistics after this call (``None``
        when none were given); ``cache.map`` the product ``a_h * a_w`` (N, C, H, W), formed
        when read.  ``y`` is ``(x * a_h) * a_w``, block by block, without a full-size map.
    """
    op = "coord_attention"
    xp = namespace(op, x=x)
    check_float_array(op, "x", x, ndim=4, layout="(N, C, H, W)")
    training, momentum, eps = check_bn_settings(op, training, momentum, eps)
    n, c, h, w = x.shape
    p = take_params(op, params, x, {"conv1.weight": ("mip", c, 1, 1), "conv1.bias": ("mip",),
                                    **batch_norm_shapes({"bn1": "mip"}),
                                    "conv_h.weight": (c, "mip", 1, 1), "conv_h.bias": (c,),
                                    "conv_w.weight": (c, "mip", 1, 1), "conv_w.bias": (c,)})
    mip = p["conv1.weight"].shape[0]
    bn = BatchNorms(p, take_buffers(op, buffers, x, {"bn1": mip}, training), training, momentum, eps)

    x_h, c_pool_h = ops.mean_w_forward(x)                                    # (N, C, H, 1)
    x_w, c_pool_w = ops.mean_h_forward(x)                                    # (N, C, 1, W)
    x_w_t, c_turn_in = ops.permute_forward(x_w, (0, 1, 3, 2))                # (N, C, W, 1)
    f = xp.concat([x_h, x_w_t], axis=2)                                      # (N, C, H + W, 1)
    z, c_conv1 = ops.conv2d_forward(f, p["conv1.weight"], p["conv1.bias"])   # (N, mip, H + W, 1)
    zn, c_bn1 = bn.forward("bn1", z)
    u, c_act = ops.hardswish_forward(zn)
    u_h, u_w_t = u[:, :, :h, :], u[:, :, h:, :]                              # split the strips
    u_w, c_turn_out = ops.permute_forward(u_w_t, (0, 1, 3, 2))               # (N, mip, 1, W)
    z_h, c_conv_h = ops.conv2d_forward(u_h, p["conv_h.weight"], p["conv_h.bias"])  # (N, C, H, 1)
    z_w, c_conv_w = ops.conv2d_forward(u_w, p["conv_w.weight"], p["conv_w.bias"])  # (N, C, 1, W)
    a_h, c_gate_h = ops.sigmoid_forward(z_h)
    a_w, c_gate_w = ops.sigmoid_forward(z_w)
    y = _gated(xp, x, a_h, a_w)                                              # x * a_h * a_w
    return y, CoordAttentionCache(h, c_pool_h, c_pool_w, c_turn_in, c_conv1, c_bn1, c_act,
                                  c_turn_out, c_conv_h, c_conv_w, c_gate_h, c_gate_w, x,
                                  updated_buffers({"bn1": c_bn1}))


def coord_attention_backward(dy: Any, cache: CoordAttentionCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`coord_attention_forward`: ``(dx, {"conv1.weight": ..., ...})``.

    The running statistics get none (they are buffers).  ``y = x m`` with ``m = a_h a_w``:
    ``dm = dy x``, and each gate's gradient sums ``dm`` times the other gate over the other
    axis, a matrix-vector product per sample and channel (``_gate_grads``, ``dm`` only
    block-sized).  x feeds the product and both strip means: ``_input_grad`` sums the three
    terms block by block into one fresh array.  See ``docs/blocks/coord_attention.md``.
    ``dy`` is not modified.
    """
    xp = namespace("coord_attention_backward", dy=dy)
    check_shape("coord_attention_backward", "dy", dy, cache.x.shape)
    h = cache.h
    a_h, a_w = cache.gate_h.y, cache.gate_w.y
    da_h, da_w = _gate_grads(xp, dy, cache.x, a_h, a_w)           # through y = x * m
    dz_h = ops.sigmoid_backward(da_h, cache.gate_h)
    dz_w = ops.sigmoid_backward(da_w, cache.gate_w)
    du_h, dw_h, db_h = ops.conv2d_backward(dz_h, cache.conv_h)
    du_w, dw_w, db_w = ops.conv2d_backward(dz_w, cache.conv_w)
    du_w_t = ops.permute_backward(du_w, cache.turn_out)
    du = xp.concat([du_h, du_w_t], axis=2)                        # undo the split
    dzn = ops.hardswish_backward(du, cache.act)
    dz, dg_bn, db_bn = ops.batch_norm2d_backward(dzn, cache.bn1)
    df, dw1, db1 = ops.conv2d_backward(dz, cache.conv1)
    df_h, df_w_t = df[:, :, :h, :], df[:, :, h:, :]               # undo the concat
    df_w = ops.permute_backward(df_w_t, cache.turn_in)
    dx = _input_grad(xp, dy, a_h, a_w, df_h, df_w)                # the three paths into x
    return dx, {"conv1.weight": dw1, "conv1.bias": db1, "bn1.weight": dg_bn, "bn1.bias": db_bn,
                "conv_h.weight": dw_h, "conv_h.bias": db_h,
                "conv_w.weight": dw_w, "conv_w.bias": db_w}


# The full-size steps, block by block of (samples, channels) (batch_channel_blocks: on NumPy
# about 1 MiB of x per block, else one block, the whole array): each reads its full-size
# inputs once and writes its output once; the products land straight in the output's block
# (multiply_to: NumPy's out=), and dm is block-sized, in cache.

def _gated(xp: Any, x: Any, a_h: Any, a_w: Any) -> Any:
    """``y = (x * a_h) * a_w``, both gates broadcast: no full-size map."""
    y = xp.empty_like(x)

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        yb = multiply_to(y[s, ch, ...], x[s, ch, ...], a_h[s, ch, ...])     # x a_h, in y
        multiply_to(yb, yb, a_w[s, ch, ...])                                 # then * a_w

    run_blocks(block, batch_channel_blocks(x), x.size)
    return y


def _gate_grads(xp: Any, dy: Any, x: Any, a_h: Any, a_w: Any) -> tuple[Any, Any]:
    """Through ``y = x * m``, ``m = a_h * a_w``: ``dm = dy * x`` (block-sized only), then each
    gate's gradient, ``dm`` times the other gate summed over the axis it was broadcast along,
    as a matrix-vector product per sample and channel: ``da_h = dm a_w^T`` (N, C, H, 1) and
    ``da_w = a_h^T dm`` (N, C, 1, W)."""
    n, c, h, w = dy.shape
    da_h = xp.empty((n, c, h, 1), dtype=dy.dtype, device=device(dy))
    da_w = xp.empty((n, c, 1, w), dtype=dy.dtype, device=device(dy))

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        dm = dy[s, ch, ...] * x[s, ch, ...]                                  # dm = dy x
        da_h[s, ch, ...] = xp.matmul(dm, xp.matrix_transpose(a_w[s, ch, ...]))
        da_w[s, ch, ...] = xp.matmul(xp.matrix_transpose(a_h[s, ch, ...]), dm)

    run_blocks(block, batch_channel_blocks(dy), dy.size)
    return da_h, da_w


def _input_grad(xp: Any, dy: Any, a_h: Any, a_w: Any, df_h: Any, df_w: Any) -> Any:
    """``dx = dy * a_h * a_w + df_h / W + df_w / H``: the product's term and the two strip
    means' (``mean_w_backward``, ``mean_h_backward``: each spreads ``df / n`` over the axis it
    averaged), summed block by block into one fresh array."""
    h, w = dy.shape[2:]
    dx = xp.empty_like(dy)
    spread_h, spread_w = df_h / w, df_w / h                               # (N, C, H, 1), (N, C, 1, W)

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        dxb = multiply_to(dx[s, ch, ...], dy[s, ch, ...], a_h[s, ch, ...])
        multiply_to(dxb, dxb, a_w[s, ch, ...])                               # dy m
        add_into(dxb, spread_h[s, ch, ...])                                  # + the mean over W
        add_into(dxb, spread_w[s, ch, ...])                                  # + the mean over H

    run_blocks(block, batch_channel_blocks(dy), dy.size)
    return dx


class CoordAttention(BatchNormBlock):
    """Coordinate attention, the stateful face of :func:`coord_attention_forward`.

    Parameters
    ----------
    channels : int >= 1
    reduction : int >= 1
        The shared convolution's width is ``mip = max(8, channels // reduction)``.
    momentum, eps : float
        The batch norm's (PyTorch's defaults 0.1 and 1e-5).
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of the three convolutions; the batch norm starts
        at weight 1, bias 0, running mean 0, running variance 1.
    dtype : {"float32", "float64"}

    Params named as the reference ``CoordAtt(C, C, reduction)``: ``conv1.weight`` (mip, C, 1, 1),
    ``conv1.bias`` (mip,), ``bn1.weight`` and ``bn1.bias`` (mip,), ``conv_h.weight`` and
    ``conv_w.weight`` (C, mip, 1, 1), ``conv_h.bias`` and ``conv_w.bias`` (C,).  Buffers
    ``bn1.running_mean`` and ``bn1.running_var`` (mip,), in ``state_dict``; ``train()`` (the
    default) normalises with the batch statistics and updates them, ``eval()`` uses them.
    ``attention_map(x)`` is ``a_h * a_w`` (N, C, H, W).
    """

    pure_forward = staticmethod(coord_attention_forward)
    pure_backward = staticmethod(coord_attention_backward)

    def __init__(self, channels: int, reduction: int = 32, *, momentum: float = 0.1,
                 eps: float = 1e-5, rng: Any = None, dtype: str = "float32") -> None:
        super().__init__(momentum, eps)
        self.channels = check_int(self.name, "channels", channels, minimum=1)
        self.reduction = check_int(self.name, "reduction", reduction, minimum=1)
        c, mip = self.channels, coord_mip(self.channels, self.reduction)
        gen = as_generator(rng, self.name)
        w1 = add_conv(self, "conv1", (mip, c, 1, 1), gen, dtype)
        self.add_batch_norm("bn1", mip, like=w1)
        add_conv(self, "conv_h", (c, mip, 1, 1), gen, dtype)
        add_conv(self, "conv_w", (c, mip, 1, 1), gen, dtype)

    def _forward(self, x: Any) -> tuple[Any, Any]:
        self.check_input(x)
        return coord_attention_forward(x, dict(self.params), **self.bn_kwargs(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
