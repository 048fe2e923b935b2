"""Deformable convolution block (Dai et al., 2017; modulated, Zhu et al., 2019): the network
learns where each kernel tap reads.

A plain convolution ``conv_offset`` with the main one's kernel, stride, padding and dilation
predicts, at every output position, the offsets of the ``kh*kw`` taps of each offset group and,
for the modulated version, a mask logit per tap; the mask is its sigmoid::

    o = conv_offset(x)                                   (N, 3 G kh kw, H_out, W_out)
    offset = o[:, :2 G kh kw],  mask = sigmoid(o[:, 2 G kh kw:])
    y = deform_conv2d(x, offset, weight, bias, mask, stride, padding, dilation, G)

(without modulation ``o`` has ``2 G kh kw`` channels, all offsets, and there is no mask).
``conv_offset`` starts at zero, as in both papers: a fresh block samples the regular grid, with
every mask at 1/2 -- a convolution (times 1/2 when modulated).  The channel order of ``o``
(offsets, then mask logits) is that of DCNv2's ``ModulatedDeformConv2dPack``.
Derivation: ``docs/blocks/deform.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import ops
from ..backend import namespace
from ..checks import argument_error, check_float_array, check_int, int_pair
from ..init import as_generator, bias_uniform, fan_in, kaiming_uniform
from ._base import Block, take_params

__all__ = ["deform_block_forward", "deform_block_backward", "DeformConv2d", "DeformBlockCache"]


class DeformBlockCache(NamedTuple):
    """The caches of the block's ops, in forward order, and the predicted offsets."""

    conv_offset: Any   # conv2d predicting offsets (and mask logits)
    gate: Any          # sigmoid of the mask logits, or None without modulation
    deform: Any        # deform_conv2d
    map: Any           # the offsets (N, 2 G kh kw, H_out, W_out), in pixels


def deform_block_forward(x: Any, params: dict[str, Any], stride: Any = 1, padding: Any = 0,
                         dilation: Any = 1, offset_groups: int = 1) -> tuple[Any, DeformBlockCache]:
    """The deformable convolution block.

    .. math:: o = w_o \\star x + b_o,\\quad \\Delta = o_{[:2GK]},\\quad m = \\sigma(o_{[2GK:]}),
              \\quad y = \\mathrm{deform\\_conv2d}(x, \\Delta, w, b, m)

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        ``"weight"`` (O, C/groups, kh, kw) and optionally ``"bias"`` (O,): the deformable
        convolution (groups ``C / weight.shape[1]``, as torchvision); ``"conv_offset.weight"``
        (3 G kh kw, C, kh, kw) for the modulated block or (2 G kh kw, C, kh, kw) without the
        mask, and ``"conv_offset.bias"`` of that length.  The dtype of x.
    stride, dilation : int or pair of int, >= 1
    padding : int or pair of int, >= 0
        Shared by both convolutions, so the offsets come out at (H_out, W_out).
    offset_groups : int >= 1, dividing C

    Returns
    -------
    y : array, shape (N, O, H_out, W_out)
    cache : DeformBlockCache
        The ops' caches; ``cache.map`` is the offsets (N, 2 G kh kw, H_out, W_out) in
        torchvision's layout.
    """
    op = "deform_block"
    namespace(op, x=x)
    check_float_array(op, "x", x, ndim=4, layout="(N, C, H, W)")
    c = x.shape[1]
    p = take_params(op, params, x, {"weight": ("o", "cw", "kh", "kw"), "bias": ("o",),
                                    "conv_offset.weight": ("k", c, "kh", "kw"),
                                    "conv_offset.bias": ("k",)}, optional=("bias",))
    groups = check_int(op, "offset_groups", offset_groups, minimum=1)
    w = p["weight"]
    taps = groups * w.shape[2] * w.shape[3]
    predicted = p["conv_offset.weight"].shape[0]
    if predicted not in (2 * taps, 3 * taps):
        raise argument_error(op, "params['conv_offset.weight']",
                             f"{2 * taps} (offsets) or {3 * taps} (offsets and mask) output channels "
                             f"for {groups} offset group(s) of {w.shape[2]}x{w.shape[3]} taps",
                             f"shape {tuple(p['conv_offset.weight'].shape)}")

    o, c_offset = ops.conv2d_forward(x, p["conv_offset.weight"], p["conv_offset.bias"],
                                     stride, padding, dilation)
    offset = o[:, :2 * taps, ...]
    mask, c_gate = (None, None) if predicted == 2 * taps else ops.sigmoid_forward(o[:, 2 * taps:, ...])
    y, c_deform = ops.deform_conv2d_forward(x, offset, w, p.get("bias"), mask, stride, padding,
                                            dilation, groups)
    return y, DeformBlockCache(c_offset, c_gate, c_deform, offset)


def deform_block_backward(dy: Any, cache: DeformBlockCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`deform_block_forward`: ``(dx, {"weight": ..., ["bias": ...],
    "conv_offset.weight": ..., "conv_offset.bias": ...})``.

    x feeds the deformable convolution and the offset branch: two terms summed on the last line.
    See ``docs/blocks/deform.md``.  ``dy`` is not modified.
    """
    xp = namespace("deform_block_backward", dy=dy)
    dx_deform, doffset, dw, db, dmask = ops.deform_conv2d_backward(dy, cache.deform)
    if cache.gate is None:
        do = doffset
    else:                                                               # undo the split of o
        do = xp.concat([doffset, ops.sigmoid_backward(dmask, cache.gate)], axis=1)
    dx_offset, dw_offset, db_offset = ops.conv2d_backward(do, cache.conv_offset)
    dx = dx_deform + dx_offset                                          # both paths into x
    grads = {"weight": dw, "conv_offset.weight": dw_offset, "conv_offset.bias": db_offset}
    if db is not None:
        grads["bias"] = db
    return dx, grads


class DeformConv2d(Block):
    """A deformable convolution with its offset (and mask) predictor, the stateful face of
    :func:`deform_block_forward`.

    Parameters
    ----------
    in_channels, out_channels : int >= 1
        Both divisible by ``groups``; ``in_channels`` divisible by ``offset_groups``.
    kernel_size : int or pair
    stride, padding, dilation : int or pair
        PyTorch's meaning, shared by the offset predictor.
    groups : int >= 1
        Weight groups of the deformable convolution.
    offset_groups : int >= 1
        Channel blocks with their own offsets (and mask).
    bias : bool
        Whether the deformable convolution has a bias (the offset predictor always has one).
    modulated : bool
        Deformable convolution v2: predict a mask through a sigmoid as well.
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of ``weight`` and ``bias`` (torchvision's
        ``DeformConv2d``); ``conv_offset`` starts at zero.
    dtype : {"float32", "float64"}

    Params ``weight`` (O, C/groups, kh, kw), ``bias`` (O,) with ``bias``, and
    ``conv_offset.weight`` ((3 if modulated else 2) * G*kh*kw, C, kh, kw), ``conv_offset.bias``.
    """

    pure_forward = staticmethod(deform_block_forward)
    pure_backward = staticmethod(deform_block_backward)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, offset_groups: int = 1,
                 bias: bool = True, modulated: bool = True, *, rng: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        op = "DeformConv2d"
        self.channels = check_int(op, "in_channels", in_channels, minimum=1)
        self.out_channels = check_int(op, "out_channels", out_channels, minimum=1)
        self.kernel_size = int_pair(op, "kernel_size", kernel_size, minimum=1)
        self.stride = int_pair(op, "stride", stride, minimum=1)
        self.padding = int_pair(op, "padding", padding, minimum=0)
        self.dilation = int_pair(op, "dilation", dilation, minimum=1)
        self.groups = check_int(op, "groups", groups, minimum=1)
        self.offset_groups = check_int(op, "offset_groups", offset_groups, minimum=1)
        if not isinstance(modulated, bool):
            raise argument_error(op, "modulated", "a bool", repr(modulated), TypeError)
        self.modulated = modulated
        for arg, n in (("in_channels", self.channels), ("out_channels", self.out_channels)):
            if n % self.groups:
                raise argument_error(op, "groups", f"a divisor of {arg} = {n}", self.groups)
        if self.channels % self.offset_groups:
            raise argument_error(op, "offset_groups", f"a divisor of in_channels = {self.channels}",
                                 self.offset_groups)
        gen = as_generator(rng, op)
        shape = (self.out_channels, self.channels // self.groups, *self.kernel_size)
        w = self.add_param("weight", kaiming_uniform(shape, gen, dtype=dtype))
        if bias:
            self.add_param("bias", bias_uniform((self.out_channels,), fan_in(shape), gen, dtype))
        predicted = (3 if modulated else 2) * self.offset_groups * shape[2] * shape[3]
        self.add_param("conv_offset.weight",
                       np.zeros((predicted, self.channels, *self.kernel_size), dtype=w.dtype))
        self.add_param("conv_offset.bias", np.zeros((predicted,), dtype=w.dtype))

    def _forward(self, x: Any) -> tuple[Any, Any]:
        self.check_input(x)
        return deform_block_forward(x, dict(self.params), self.stride, self.padding,
                                    self.dilation, self.offset_groups)

    def extra_repr(self) -> str:
        return (f"{self.channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, offset_groups={self.offset_groups}, "
                f"bias={'bias' in self._params}, modulated={self.modulated}")
