"""SimAM (Yang et al., "SimAM: A Simple, Parameter-Free Attention Module for Convolutional
Neural Networks", ICML 2021): ``y = x * sigmoid(e)`` with the inverse energy ``e`` per position.

Per sample and channel, with ``n = H W - 1``::

    d = (x - mean_hw(x))^2,   v = sum_hw(d) / n,   e = d / (4 (v + lambda_)) + 1/2

A position far from its channel's mean (large ``d``) has low energy, so a large ``e``, and is
kept; the block has no parameters.  Built only from :mod:`npattn.ops` and scalar arithmetic;
the backward is the forward read in reverse.  Derivation: ``docs/blocks/simam.md``.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, NamedTuple

from .. import ops
from ..backend import namespace
from ..checks import argument_error, check_float_array
from ._base import Block, take_params

__all__ = ["simam_forward", "simam_backward", "SimAM", "SimAMCache"]


class SimAMCache(NamedTuple):
    """The caches of SimAM's ops, in forward order, and the attention map."""

    hw: int
    mean: Any      # global_avg_pool2d of x
    square: Any    # mul(c, c), c = x - mean
    spread: Any    # global_avg_pool2d of d
    r: Any         # 1 / (4 (v + lambda_)), (N, C, 1, 1)
    scale: Any     # mul(d, r)
    gate: Any      # sigmoid
    prod: Any      # mul(x, map)
    map: Any       # (N, C, H, W), in [sigmoid(1/2), 1)


def _check_lambda(op: str, lambda_: Any) -> float:
    if isinstance(lambda_, bool) or not isinstance(lambda_, Real):
        raise argument_error(op, "lambda_", "a float", repr(lambda_), TypeError)
    if not lambda_ > 0:
        raise argument_error(op, "lambda_", "a float > 0", lambda_)
    return float(lambda_)


def simam_forward(x: Any, params: dict[str, Any] | None = None,
                  lambda_: float = 1e-4) -> tuple[Any, SimAMCache]:
    """SimAM.

    .. math:: d = (x - \\mu)^2,\\quad v = \\frac{1}{HW - 1} \\sum_{hw} d,\\quad
              e = \\frac{d}{4 (v + \\lambda)} + \\frac12,\\quad y = x \\odot \\sigma(e)

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64, with ``H * W >= 2``
    params : dict or None
        Empty: SimAM has no parameters (the argument keeps the blocks' common signature).
    lambda_ : float > 0
        The regulariser ``lambda`` of the energy.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : SimAMCache
        The ops' caches; ``cache.map`` is ``sigmoid(e)`` (N, C, H, W).
    """
    xp = namespace("simam", x=x)
    check_float_array("simam", "x", x, ndim=4, layout="(N, C, H, W)")
    take_params("simam", {} if params is None else params, x, {})
    lam = _check_lambda("simam", lambda_)
    hw = x.shape[2] * x.shape[3]
    if hw < 2:
        raise argument_error("simam", "x", "at least 2 positions (H * W >= 2: the variance "
                             "divides by H * W - 1)", f"shape {tuple(x.shape)}")

    mu, c_mean = ops.global_avg_pool2d_forward(x)                 # (N, C, 1, 1)
    c = x - mu
    d, c_square = ops.mul_forward(c, c)                           # d = (x - mu)^2
    s, c_spread = ops.global_avg_pool2d_forward(d)                # mean of d
    v = s * (hw / (hw - 1))                                       # sum(d) / n
    r = 1.0 / (4.0 * (v + lam))
    q, c_scale = ops.mul_forward(d, r)                            # d / (4 (v + lambda))
    e = q + 0.5
    g, c_gate = ops.sigmoid_forward(e)
    y, c_prod = ops.mul_forward(x, g)
    return y, SimAMCache(hw, c_mean, c_square, c_spread, r, c_scale, c_gate, c_prod, g)


def simam_backward(dy: Any, cache: SimAMCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`simam_forward`: ``(dx, {})``.

    x feeds the product, the centred values ``c`` and the mean: three terms summed on the last
    line; ``d`` feeds the numerator and the variance: two terms summed where they meet.
    See ``docs/blocks/simam.md``.  ``dy`` is not modified.
    """
    xp = namespace("simam_backward", dy=dy)
    hw = cache.hw
    dx_prod, dg = ops.mul_backward(dy, cache.prod)                # through y = x * g
    de = ops.sigmoid_backward(dg, cache.gate)
    dq = de                                                       # e = q + 1/2
    dd_scale, dr = ops.mul_backward(dq, cache.scale)              # through q = d * r
    dv = dr * (-4.0 * cache.r * cache.r)                          # r = 1 / (4 (v + lambda))
    ds = dv * (hw / (hw - 1))                                     # v = s * HW / (HW - 1)
    dd_spread = ops.global_avg_pool2d_backward(ds, cache.spread)
    dd = dd_scale + dd_spread                                     # d feeds q and v
    dc_left, dc_right = ops.mul_backward(dd, cache.square)
    dc = dc_left + dc_right                                       # d = c * c
    dmu = -xp.sum(dc, axis=(2, 3), keepdims=True)                 # c = x - mu
    dx_mean = ops.global_avg_pool2d_backward(dmu, cache.mean)
    dx = dx_prod + dc + dx_mean                                   # the three paths into x
    return dx, {}


class SimAM(Block):
    """The SimAM block, the stateful face of :func:`simam_forward`; it has no parameters.

    Parameters
    ----------
    lambda_ : float > 0
        The energy's regulariser (the paper's ``e_lambda``, 1e-4 by default).

    Any number of channels; ``H * W >= 2``.
    """

    pure_forward = staticmethod(simam_forward)
    pure_backward = staticmethod(simam_backward)

    def __init__(self, lambda_: float = 1e-4) -> None:
        super().__init__()
        self.lambda_ = _check_lambda("SimAM", lambda_)

    def _forward(self, x: Any) -> tuple[Any, Any]:
        self.check_input(x)
        return simam_forward(x, {}, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"
