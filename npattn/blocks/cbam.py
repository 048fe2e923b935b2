"""CBAM (Woo et al., 2018): channel attention, then spatial attention on its output.

.. math:: y_1 = x \\odot M_c(x), \\qquad y = y_1 \\odot M_s(y_1)

Two gates in a row: the backward runs spatial attention's backward, then channel attention's.
Derivation: ``docs/blocks/cbam.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..checks import check_int
from ..init import as_generator
from ._base import Block, prefixed, split_params
from .channel_attention import (ChannelAttention, ChannelAttentionCache, channel_attention_backward,
                                channel_attention_forward)
from .spatial_attention import (SpatialAttention, SpatialAttentionCache, spatial_attention_backward,
                                spatial_attention_forward)

__all__ = ["cbam_forward", "cbam_backward", "CBAM", "CBAMCache"]


class CBAMCache(NamedTuple):
    """The two gates' caches; ``map`` is the pair ``(M_c, M_s)``."""

    ca: ChannelAttentionCache
    sa: SpatialAttentionCache

    @property
    def map(self) -> tuple[Any, Any]:
        return self.ca.map, self.sa.map


def cbam_forward(x: Any, params: dict[str, Any]) -> tuple[Any, CBAMCache]:
    """CBAM: :func:`channel_attention_forward`, then :func:`spatial_attention_forward`.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        ``"ca.mlp.0.weight"`` (h, C, 1, 1), ``"ca.mlp.2.weight"`` (C, h, 1, 1),
        ``"sa.conv.weight"`` (1, 2, k, k) and optionally ``"sa.conv.bias"`` (1,).

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : CBAMCache
        Both gates' caches; ``cache.map`` is ``(M_c, M_s)``, shapes (N, C, 1, 1) and
        (N, 1, H1, W1) where M_s is computed on the channel-attended ``y_1``.
    """
    p_ca, p_sa = split_params("cbam", params, ("ca", "sa"))
    y1, c_ca = channel_attention_forward(x, p_ca)
    y, c_sa = spatial_attention_forward(y1, p_sa)
    return y, CBAMCache(c_ca, c_sa)


def cbam_backward(dy: Any, cache: CBAMCache, *, consume_cache: bool = False) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`cbam_forward`: the gates' backward in reverse order.

    ``dx`` comes back through both gates; each gate sums its own two paths.  ``dy1``, the
    gradient between the gates, is this function's own, so channel attention computes ``dx`` in
    its memory (``overwrite_dy``).  With ``consume_cache`` (the module's backward, which frees
    the cache after), ``dy1`` is computed in the memory of ``y_1`` (``cache.sa.prod.a``, read
    once before, for ``dM_s``): no fresh full-size array in the backward, and ``cache`` is spent.
    See ``docs/blocks/cbam.md``.  ``dy`` is not modified.
    """
    y1 = cache.sa.prod.a if consume_cache else None               # spatial attention's input
    dy1, d_sa = spatial_attention_backward(dy, cache.sa, dx_out=y1)
    dx, d_ca = channel_attention_backward(dy1, cache.ca, overwrite_dy=True)   # dy1 is ours
    return dx, {**prefixed("ca", d_ca), **prefixed("sa", d_sa)}


class CBAM(Block):
    """The convolutional block attention module, the stateful face of :func:`cbam_forward`.

    Parameters
    ----------
    channels : int >= 1
    reduction : int >= 1
        Channel attention's hidden width is ``max(1, channels // reduction)``.
    kernel_size : odd int >= 1
        Spatial attention's convolution size.
    rng : numpy.random.Generator, int seed or None
        Initialises channel attention, then spatial attention, from one generator.
    dtype : {"float32", "float64"}

    Children ``ca`` (:class:`ChannelAttention`) and ``sa`` (:class:`SpatialAttention`, no bias),
    so the params are ``ca.mlp.0.weight``, ``ca.mlp.2.weight`` and ``sa.conv.weight``.
    ``attention_map(x)`` returns the pair ``(M_c, M_s)``.
    """

    pure_forward = staticmethod(cbam_forward)
    pure_backward = staticmethod(cbam_backward)

    def _backward(self, dy: Any, cache: CBAMCache) -> tuple[Any, dict[str, Any]]:
        return cbam_backward(dy, cache, consume_cache=True)   # backward() frees the cache after

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, *,
                 rng: Any = None, dtype: str = "float32") -> None:
        super().__init__()
        self.channels = check_int("CBAM", "channels", channels, minimum=1)
        gen = as_generator(rng, "CBAM")
        self.ca = self.add_child("ca", ChannelAttention(channels, reduction, rng=gen, dtype=dtype))
        self.sa = self.add_child("sa", SpatialAttention(kernel_size, rng=gen, dtype=dtype))

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, reduction={self.ca.reduction}, "
                f"kernel_size={self.sa.kernel_size[0]}")
