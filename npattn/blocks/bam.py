"""Bottleneck attention module (BAM: Park, Woo, Lee and Kweon, "BAM: Bottleneck Attention
Module", BMVC 2018): ``y = x * (1 + sigmoid(M_c(x) + M_s(x)))``, the two maps broadcast.

Channel branch ``M_c`` (N, C, 1, 1): the global average pool, a linear layer C -> h with bias,
a batch norm over the batch, ReLU, a linear layer h -> C with bias.  Spatial branch ``M_s``
(N, 1, H, W): a 1x1 convolution C -> h, two 3x3 convolutions h -> h with dilation and padding
``dilation``, a 1x1 convolution h -> 1, all with bias, each of the first three followed by a
batch norm and ReLU.  ``h = max(1, C // reduction)``.  The paper sums the two maps, as here; the
authors' code multiplies them.  Built only from :mod:`npattn.ops`; the backward is the forward
read in reverse.  Derivation: ``docs/blocks/bam.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import device

from .. import ops
from ..backend import (batch_channel_blocks, namespace, run_blocks, store_scaled,
                       store_sigmoid_of_sum, sum_over)
from ..checks import argument_error, check_float_array, check_int, check_shape
from ..init import as_generator
from ._base import hidden_width, take_params
from ._parts import (BatchNormBlock, BatchNorms, add_conv, batch_norm_shapes, check_bn_settings,
                     take_buffers, updated_buffers)

__all__ = ["bam_forward", "bam_backward", "BAM", "BAMCache", "StageCache"]

_C = "channel_att.gate_c."     # the reference's ChannelGate, an nn.Sequential named gate_c
_S = "spatial_att.gate_s."     # the reference's SpatialGate, an nn.Sequential named gate_s
_STAGES = ("reduce0", "di_0", "di_1")   # gate_s_conv_* / gate_s_bn_* pairs, in order


class StageCache(NamedTuple):
    """One convolution, batch norm, ReLU stage of the spatial branch."""

    conv: Any
    bn: Any
    relu: Any


class BAMCache(NamedTuple):
    """The caches of BAM's ops, in forward order, the updated running statistics, and the map."""

    squeeze: Any               # global_avg_pool2d
    fc0: Any                   # gate_c_fc_0, linear C -> h
    bn_c: Any                  # gate_c_bn_1, over (N, h, 1, 1)
    relu_c: Any                # gate_c_relu_1
    fc_final: Any              # gate_c_fc_final, linear h -> C
    stages: tuple[StageCache, ...]   # the spatial branch's three stages
    conv_final: Any            # gate_s_conv_final, 1x1 conv h -> 1
    x: Any                     # the input, for dM = dy * x
    buffers: Any               # the running statistics after this call, or None
    map: Any                   # sigmoid(M_c + M_s), (N, C, H, W), in [0, 1]


def _param_shapes(c: int) -> dict[str, tuple[Any, ...]]:
    """Every parameter's shape for C channels; ``"h"`` is the bottleneck width."""
    shapes: dict[str, tuple[Any, ...]] = {
        _C + "gate_c_fc_0.weight": ("h", c), _C + "gate_c_fc_0.bias": ("h",),
        **batch_norm_shapes({_C + "gate_c_bn_1": "h"}),
        _C + "gate_c_fc_final.weight": (c, "h"), _C + "gate_c_fc_final.bias": (c,)}
    for stage, fan in zip(_STAGES, ((c, 1, 1), ("h", 3, 3), ("h", 3, 3))):
        shapes[f"{_S}gate_s_conv_{stage}.weight"] = ("h", *fan)
        shapes[f"{_S}gate_s_conv_{stage}.bias"] = ("h",)
        shapes.update(batch_norm_shapes({f"{_S}gate_s_bn_{stage}": "h"}))
    shapes[_S + "gate_s_conv_final.weight"] = (1, "h", 1, 1)
    shapes[_S + "gate_s_conv_final.bias"] = (1,)
    return shapes


def bam_forward(x: Any, params: dict[str, Any], dilation: int = 4,
                buffers: dict[str, Any] | None = None, training: bool = True,
                momentum: float = 0.1, eps: float = 1e-5) -> tuple[Any, BAMCache]:
    """The bottleneck attention module.

    .. math:: M_c = W_f\\,\\mathrm{relu}(\\mathrm{BN}(W_0\\,\\mathrm{gap}(x) + b_0)) + b_f,\\quad
              M_s = w_s \\star \\mathrm{stages}(x) + b_s,\\quad
              y = x \\odot (1 + \\sigma(M_c + M_s))

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        Under ``"channel_att.gate_c."``: ``"gate_c_fc_0.weight"`` (h, C) and ``.bias`` (h,),
        the batch norm ``"gate_c_bn_1.weight"`` and ``.bias`` (h,), ``"gate_c_fc_final.weight"``
        (C, h) and ``.bias`` (C,).  Under ``"spatial_att.gate_s."``: ``"gate_s_conv_reduce0"``
        (h, C, 1, 1), ``"gate_s_conv_di_0"`` and ``"gate_s_conv_di_1"`` (h, h, 3, 3), each
        ``.weight`` with a ``.bias`` (h,) and followed by the batch norm ``"gate_s_bn_reduce0"``,
        ``"gate_s_bn_di_0"``, ``"gate_s_bn_di_1"`` (``.weight`` and ``.bias`` (h,));
        ``"gate_s_conv_final.weight"`` (1, h, 1, 1) and ``.bias`` (1,).  The dtype of x.
    dilation : int >= 1
        The dilation and padding of the two 3x3 convolutions.
    buffers : dict or None
        ``"{batch norm}.running_mean"`` and ``".running_var"`` (h,) for the four batch norms
        above; may be ``None`` in training mode.
    training : bool
        Batch statistics (True; the channel branch's batch norm then needs N >= 2) or running
        ones.
    momentum, eps : float
        The batch norms', as :func:`npattn.ops.batch_norm2d_forward`.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : BAMCache
        The ops' caches; ``cache.buffers`` the running statistics after this call (``None``
        when none were given); ``cache.map`` the attention ``sigmoid(M_c + M_s)`` (N, C, H, W).
    """
    op = "bam"
    xp = namespace(op, x=x)
    check_float_array(op, "x", x, ndim=4, layout="(N, C, H, W)")
    dilation = check_int(op, "dilation", dilation, minimum=1)
    training, momentum, eps = check_bn_settings(op, training, momentum, eps)
    n, c = x.shape[:2]
    if training and n < 2:
        raise argument_error(op, "x", "at least 2 samples in training mode (the channel branch's "
                             "batch norm takes its statistics over the batch)",
                             f"shape {tuple(x.shape)}")
    p = take_params(op, params, x, _param_shapes(c))
    hid = p[_C + "gate_c_fc_0.weight"].shape[0]
    norms = {_C + "gate_c_bn_1": hid, **{f"{_S}gate_s_bn_{s}": hid for s in _STAGES}}
    bn = BatchNorms(p, take_buffers(op, buffers, x, norms, training), training, momentum, eps)

    s, c_squeeze = ops.global_avg_pool2d_forward(x)                          # channel branch
    t, c_fc0 = ops.linear_forward(xp.reshape(s, (n, c)), p[_C + "gate_c_fc_0.weight"],
                                  p[_C + "gate_c_fc_0.bias"])                # (N, h)
    t, c_bn_c = bn.forward(_C + "gate_c_bn_1", xp.reshape(t, (n, hid, 1, 1)))  # BatchNorm1d
    t, c_relu_c = ops.relu_forward(t)
    m_c, c_fc_final = ops.linear_forward(xp.reshape(t, (n, hid)), p[_C + "gate_c_fc_final.weight"],
                                         p[_C + "gate_c_fc_final.bias"])     # (N, C)
    t, stages = x, []                                                        # spatial branch
    for stage in _STAGES:
        pad, dil = (0, 1) if stage == "reduce0" else (dilation, dilation)   # 1x1, then 3x3s
        t, c_conv = ops.conv2d_forward(t, p[f"{_S}gate_s_conv_{stage}.weight"],
                                       p[f"{_S}gate_s_conv_{stage}.bias"], padding=pad, dilation=dil)
        t, c_bn = bn.forward(f"{_S}gate_s_bn_{stage}", t)
        t, c_relu = ops.relu_forward(t)
        stages.append(StageCache(c_conv, c_bn, c_relu))
    m_s, c_conv_final = ops.conv2d_forward(t, p[_S + "gate_s_conv_final.weight"],
                                           p[_S + "gate_s_conv_final.bias"])  # (N, 1, H, W)
    g, y = _gate_forward(xp, x, xp.reshape(m_c, (n, c, 1, 1)), m_s)       # sigmoid, product
    stats = updated_buffers({_C + "gate_c_bn_1": c_bn_c,
                             **{f"{_S}gate_s_bn_{s}": st.bn for s, st in zip(_STAGES, stages)}})
    return y, BAMCache(c_squeeze, c_fc0, c_bn_c, c_relu_c, c_fc_final, tuple(stages),
                       c_conv_final, x, stats, g)


def _gate_forward(xp: Any, x: Any, m_c: Any, m_s: Any) -> tuple[Any, Any]:
    """``M = sigmoid(m_c + m_s)`` (``sigmoid_forward`` of the broadcast sum) and
    ``y = x * (1 + M)`` (``mul_forward``): the same operations in the same order, computed block
    by block (:func:`~npattn.backend.batch_channel_blocks`; on NumPy about 1 MiB of ``x`` per
    block, else one block).  What it buys: the sum and the sigmoid's four steps run in ``M``'s
    block itself (:func:`~npattn.backend.store_sigmoid_of_sum`) and ``x (1 + M)`` is written
    straight into ``y``'s (:func:`~npattn.backend.store_scaled`), ``1 + M`` a block-sized
    temporary, instead of six fresh full-size arrays (at 32x256x56x56 each is 98 MiB mapped
    and faulted in anew); only ``M`` and ``y`` are full-size."""
    g, y = xp.empty_like(x), xp.empty_like(x)

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        store_sigmoid_of_sum(g, (s, ch, ...), m_c[s, ch, ...], m_s[s, ...])   # M = sigmoid(z)
        store_scaled(y, (s, ch, ...), x[s, ch, ...], 1.0 + g[s, ch, ...])      # y = x (1 + M)

    run_blocks(block, batch_channel_blocks(x), x.size)
    return g, y


def _gate_backward(xp: Any, dy: Any, x: Any, g: Any) -> tuple[Any, Any]:
    """Through ``y = x * (1 + M)`` and ``M = sigmoid(z)``, ``z = M_c + M_s`` broadcast:
    ``dz = (dy * x) * M * (1 - M)`` (``mul_backward``'s ``dM``, then ``sigmoid_backward``),
    returned summed as ``dM_c = sum_hw dz`` (N, C, 1, 1) and ``dM_s = sum_c dz`` (N, 1, H, W)
    (``unbroadcast``).  Block by block like :func:`_gate_forward`: ``dz`` is never a full-size
    array (it was three, with ``dy * x`` and ``1 - M``); a sample split into runs of channels
    sums each run's ``dz`` over its channels into its own row of ``partial``, added at the end."""
    n, c, h, w = dy.shape
    blocks = batch_channel_blocks(dy)
    rows: list[int] = []
    for _, ch in blocks:                                        # a run's row in its sample
        rows.append(0 if ch.start == 0 else rows[-1] + 1)
    dm_c = xp.empty((n, c, 1, 1), dtype=dy.dtype, device=device(dy))
    partial = xp.zeros((n, max(rows) + 1, h, w), dtype=dy.dtype, device=device(dy))

    def block(i: int) -> None:
        s, ch = blocks[i]
        gb = g[s, ch, ...]
        dz = dy[s, ch, ...] * x[s, ch, ...]                               # dM
        dz *= gb
        dz *= 1.0 - gb                                          # dz = dM M (1 - M)
        dm_c[s, ch, ...] = sum_over(dz, (2, 3))
        partial[s, rows[i]:rows[i] + 1, ...] = sum_over(dz, (1,))

    run_blocks(block, list(range(len(blocks))), dy.size)
    dm_s = partial if partial.shape[1] == 1 else xp.sum(partial, axis=1, keepdims=True)
    return dm_c, dm_s


def _add_product_grad(xp: Any, dx: Any, dy: Any, g: Any, dx_channel: Any) -> Any:
    """``dx += (dy * (1 + M) + dx_channel)`` in place, block by block: the product's gradient
    (``mul_backward``'s ``dx``) plus the channel branch's (N, C, 1, 1), spread over H x W, added
    to ``dx``, the spatial branch's gradient (a fresh array of this backward's own).  No
    full-size temporary (the sum of three full-size arrays made two)."""

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        t = dy[s, ch, ...] * (1.0 + g[s, ch, ...])                        # dx_prod
        t += dx_channel[s, ch, ...]
        dx[s, ch, ...] += t

    run_blocks(block, batch_channel_blocks(dx), dx.size)
    return dx


def bam_backward(dy: Any, cache: BAMCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`bam_forward`: ``(dx, {name: gradient})`` for every parameter.

    The sum ``M_c + M_s`` is broadcast, so each map's gradient is ``dz`` summed over the axes
    it was broadcast on; x feeds the product and both branches: three terms summed on the last
    line.  See ``docs/blocks/bam.md``.  ``dy`` is not modified.
    """
    xp = namespace("bam_backward", dy=dy)
    check_shape("bam_backward", "dy", dy, cache.x.shape)
    n, c, h, w = dy.shape
    hid = cache.bn_c.x.shape[1]
    dm_c, dm_s = _gate_backward(xp, dy, cache.x, cache.map)       # y = x (1 + M), M = sigmoid(z)
    dm_c = xp.reshape(dm_c, (n, c))                               # z = M_c + M_s, broadcast
    dt, dw_s, db_s = ops.conv2d_backward(dm_s, cache.conv_final)
    grads = {_S + "gate_s_conv_final.weight": dw_s, _S + "gate_s_conv_final.bias": db_s}
    for stage, st in reversed(list(zip(_STAGES, cache.stages))):  # spatial branch in reverse
        dt = ops.relu_backward(dt, st.relu)
        dt, dg, db = ops.batch_norm2d_backward(dt, st.bn)
        dt, dw, dbias = ops.conv2d_backward(dt, st.conv)
        grads.update({f"{_S}gate_s_conv_{stage}.weight": dw, f"{_S}gate_s_conv_{stage}.bias": dbias,
                      f"{_S}gate_s_bn_{stage}.weight": dg, f"{_S}gate_s_bn_{stage}.bias": db})
    dx_spatial = dt                                               # fresh: dx accumulates here
    dt, dw_f, db_f = ops.linear_backward(dm_c, cache.fc_final)   # channel branch in reverse
    dt = ops.relu_backward(xp.reshape(dt, (n, hid, 1, 1)), cache.relu_c)
    dt, dg_c, db_c = ops.batch_norm2d_backward(dt, cache.bn_c)
    ds, dw0, db0 = ops.linear_backward(xp.reshape(dt, (n, hid)), cache.fc0)
    dx_channel = xp.reshape(ds, (n, c, 1, 1)) / (h * w)           # the pool's, spread below
    dx = _add_product_grad(xp, dx_spatial, dy, cache.map, dx_channel)  # the three paths into x
    grads.update({_C + "gate_c_fc_0.weight": dw0, _C + "gate_c_fc_0.bias": db0,
                  _C + "gate_c_bn_1.weight": dg_c, _C + "gate_c_bn_1.bias": db_c,
                  _C + "gate_c_fc_final.weight": dw_f, _C + "gate_c_fc_final.bias": db_f})
    return dx, grads


class BAM(BatchNormBlock):
    """The bottleneck attention module, the stateful face of :func:`bam_forward`.

    Parameters
    ----------
    channels : int >= 1
    reduction : int >= 1
        Bottleneck width ``h = max(1, channels // reduction)``.
    dilation : int >= 1
        Of the spatial branch's two 3x3 convolutions (the paper's 4).
    momentum, eps : float
        The batch norms' (PyTorch's defaults 0.1 and 1e-5).
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of the linear and convolution layers; each batch
        norm starts at weight 1, bias 0, running mean 0, running variance 1.
    dtype : {"float32", "float64"}

    Params named as the authors' ``BAM(C)``: ``channel_att.gate_c.gate_c_fc_0`` (``nn.Linear(C,
    h)``), ``.gate_c_bn_1`` (``nn.BatchNorm1d(h)``), ``.gate_c_fc_final`` (``nn.Linear(h, C)``);
    ``spatial_att.gate_s.gate_s_conv_reduce0`` (``nn.Conv2d(C, h, 1)``), ``.gate_s_bn_reduce0``,
    ``.gate_s_conv_di_0`` and ``.gate_s_conv_di_1`` (``nn.Conv2d(h, h, 3, padding=dilation,
    dilation=dilation)``), ``.gate_s_bn_di_0``, ``.gate_s_bn_di_1``, ``.gate_s_conv_final``
    (``nn.Conv2d(h, 1, 1)``), each with ``.weight`` and ``.bias``.  Each batch norm's
    ``running_mean`` and ``running_var`` are buffers, in ``state_dict``.  The output sums the
    two maps, as the paper; the authors' code multiplies them, so its weights load here but give
    another function.  ``attention_map(x)`` is ``sigmoid(M_c + M_s)`` (N, C, H, W).
    """

    pure_forward = staticmethod(bam_forward)
    pure_backward = staticmethod(bam_backward)

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, *,
                 momentum: float = 0.1, eps: float = 1e-5, rng: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__(momentum, eps)
        self.channels = check_int(self.name, "channels", channels, minimum=1)
        self.reduction = check_int(self.name, "reduction", reduction, minimum=1)
        self.dilation = check_int(self.name, "dilation", dilation, minimum=1)
        c, hid = self.channels, hidden_width(self.channels, self.reduction)
        gen = as_generator(rng, self.name)
        w = add_conv(self, _C + "gate_c_fc_0", (hid, c), gen, dtype)
        self.add_batch_norm(_C + "gate_c_bn_1", hid, like=w)
        add_conv(self, _C + "gate_c_fc_final", (c, hid), gen, dtype)
        for stage, fan in zip(_STAGES, ((c, 1, 1), (hid, 3, 3), (hid, 3, 3))):
            w = add_conv(self, f"{_S}gate_s_conv_{stage}", (hid, *fan), gen, dtype)
            self.add_batch_norm(f"{_S}gate_s_bn_{stage}", hid, like=w)
        add_conv(self, _S + "gate_s_conv_final", (1, hid, 1, 1), gen, dtype)

    def _forward(self, x: Any) -> tuple[Any, Any]:
        self.check_input(x)
        return bam_forward(x, dict(self.params), self.dilation, **self.bn_kwargs(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, dilation={self.dilation}"
