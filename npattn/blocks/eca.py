"""Efficient channel attention (Wang et al., 2020): ``y = x * sigmoid(conv1d_k(gap(x)))``.

The channel descriptor ``gap(x)`` is read as a length-C signal and filtered by one bias-free
1-D kernel of odd size k with padding ``(k - 1) / 2``, so each channel's gate sees its k
neighbours.  The adaptive size is :func:`eca_kernel_size`.  Derivation: ``docs/blocks/eca.md``.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, NamedTuple

from array_api_compat import device

from .. import ops
from ..backend import namespace
from ..checks import argument_error, check_float_array, check_int
from ..init import as_generator, kaiming_uniform
from ._base import Block, check_odd, take_params

__all__ = ["eca_kernel_size", "eca_forward", "eca_backward", "ECA", "ECACache"]


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size: ``t = int(|(log2 C + b) / gamma|)``, plus one if ``t`` is even.

    >>> [eca_kernel_size(c) for c in (64, 128, 256, 512)]
    [3, 5, 5, 5]

    (At C = 128, ``t = 4`` is even and becomes 5.)
    """
    channels = check_int("eca_kernel_size", "channels", channels, minimum=1)
    for arg, value in (("gamma", gamma), ("b", b)):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise argument_error("eca_kernel_size", arg, "a finite real number", repr(value), TypeError)
    if gamma == 0:
        raise argument_error("eca_kernel_size", "gamma", "a non-zero number", gamma)
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ChannelConvCache(NamedTuple):
    """What the filter's backward needs: the windows of the zero-padded means and the taps."""

    windows: Any   # (N, C, k): windows[n, c, j] = s[n, c + j - p], zero outside 0..C-1
    taps: Any      # (k,), the kernel w


def _channel_windows(xp: Any, v: Any, k: int) -> Any:
    """``(B, C) -> (B, C, k)``: entry ``[b, c, j]`` is ``v[b, c + j - p]``, ``p = (k - 1) // 2``,
    zero outside ``0..C-1`` (the windows of a 'same' 1-D cross-correlation, one slice per tap)."""
    p, c = (k - 1) // 2, v.shape[1]
    zeros = xp.zeros((v.shape[0], p), dtype=v.dtype, device=device(v))
    padded = xp.concat([zeros, v, zeros], axis=1)                          # (B, C + 2p)
    return xp.stack([padded[:, j:j + c] for j in range(k)], axis=-1)


def _channel_conv_forward(xp: Any, s: Any, w: Any) -> tuple[Any, ChannelConvCache]:
    """``z[n, c] = sum_j w_j s[n, c + j - p]``: the numbers of ``ops.conv1d_forward(s[:, None, :],
    w, padding=p)`` (the spec, tested against it), as one product of the windows with the taps.

    Note: ``conv1d`` runs through ``conv2d``'s tiled im2col, a fixed cost of many small calls:
    at 8x512 with k = 5, 38 + 74 us forward and backward timed alone against 19 + 39 us here,
    and ECA at 8x512x14x14 0.1-0.5 ms faster in all (measured; benchmarks/NOTES-cbam.md).
    """
    taps = xp.reshape(w, (w.shape[2],))
    windows = _channel_windows(xp, s, taps.shape[0])
    return xp.matmul(windows, taps), ChannelConvCache(windows, taps)


def _channel_conv_backward(xp: Any, dz: Any, cache: ChannelConvCache) -> tuple[Any, Any]:
    """``(ds, dw)`` of :func:`_channel_conv_forward`: ``ds[n, c] = sum_j w_j dz[n, c - j + p]``,
    the windows of ``dz`` times the flipped taps; ``dw[j] = sum_{n, c} dz[n, c] windows[n, c, j]``,
    shape (1, 1, k)."""
    n, c, k = cache.windows.shape
    ds = xp.matmul(_channel_windows(xp, dz, k), xp.flip(cache.taps, axis=0))
    dw = xp.matmul(xp.reshape(dz, (1, n * c)), xp.reshape(cache.windows, (n * c, k)))
    return ds, xp.reshape(dw, (1, 1, k))


class ECACache(NamedTuple):
    """The caches of ECA's ops, in forward order, and the attention map."""

    x_shape: tuple[int, ...]
    squeeze: Any   # global_avg_pool2d
    conv: Any      # the 1-D filter across channels (ChannelConvCache)
    gate: Any      # sigmoid
    prod: Any      # mul(x, map)
    map: Any       # (N, C, 1, 1), in [0, 1]


def eca_forward(x: Any, params: dict[str, Any]) -> tuple[Any, ECACache]:
    """Efficient channel attention.

    .. math:: s = \\mathrm{gap}(x),\\quad m = \\sigma(w \\star s),\\quad y = x \\odot m

    with ``w * s`` the 1-D cross-correlation along the channel axis, padding ``(k - 1) / 2``.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        ``"conv.weight"`` (1, 1, k), k odd, the dtype of x.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : ECACache
        The ops' caches; ``cache.map`` is the channel map ``m`` (N, C, 1, 1).
    """
    xp = namespace("eca", x=x)
    check_float_array("eca", "x", x, ndim=4, layout="(N, C, H, W)")
    n, c = x.shape[:2]
    w = take_params("eca", params, x, {"conv.weight": (1, 1, "k")})["conv.weight"]
    check_odd("eca", "params['conv.weight'].shape[2]", w.shape[2])   # odd: "same" padding

    s, c_squeeze = ops.global_avg_pool2d_forward(x)                   # (N, C, 1, 1)
    z, c_conv = _channel_conv_forward(xp, xp.reshape(s, (n, c)), w)    # (N, C): conv1d, padding k // 2
    g, c_gate = ops.sigmoid_forward(z)
    m = xp.reshape(g, (n, c, 1, 1))
    y, c_prod = ops.mul_forward(x, m)
    return y, ECACache(tuple(x.shape), c_squeeze, c_conv, c_gate, c_prod, m)


def eca_backward(dy: Any, cache: ECACache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`eca_forward`: ``(dx, {"conv.weight": ...})``.

    x feeds the product and the squeeze: the product's term is a fresh array, and the
    squeeze's is added into it on the last step.  See ``docs/blocks/eca.md``.  ``dy`` is not
    modified.
    """
    xp = namespace("eca_backward", dy=dy)
    n, c = cache.x_shape[:2]
    dx, dm = ops.mul_backward(dy, cache.prod)                     # through y = x * m: dx = dy * m
    dz = ops.sigmoid_backward(xp.reshape(dm, (n, c)), cache.gate)
    ds, dw = _channel_conv_backward(xp, dz, cache.conv)
    dx = ops.global_avg_pool2d_backward_add(dx, xp.reshape(ds, (n, c, 1, 1)), cache.squeeze)
    return dx, {"conv.weight": dw}                                # dx: both paths into x


class ECA(Block):
    """Efficient channel attention block, the stateful face of :func:`eca_forward`.

    Parameters
    ----------
    channels : int >= 1
    gamma, b : float
        The adaptive kernel rule's constants (:func:`eca_kernel_size`).
    kernel_size : odd int >= 1, optional
        Overrides the adaptive size.
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of ``nn.Conv1d(1, 1, k, bias=False)``.
    dtype : {"float32", "float64"}

    Param ``conv.weight`` (1, 1, k).
    """

    pure_forward = staticmethod(eca_forward)
    pure_backward = staticmethod(eca_backward)

    def __init__(self, channels: int, gamma: float = 2, b: float = 1, kernel_size: int | None = None,
                 *, rng: Any = None, dtype: str = "float32") -> None:
        super().__init__()
        self.channels = check_int("ECA", "channels", channels, minimum=1)
        adaptive = eca_kernel_size(self.channels, gamma, b)
        self.kernel_size = adaptive if kernel_size is None else check_odd("ECA", "kernel_size", kernel_size)
        self.add_param("conv.weight", kaiming_uniform((1, 1, self.kernel_size), as_generator(rng, "ECA"),
                                                      dtype=dtype))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
