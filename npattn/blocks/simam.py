"""SimAM (Yang et al., "SimAM: A Simple, Parameter-Free Attention Module for Convolutional
Neural Networks", ICML 2021): ``y = x * sigmoid(e)`` with the inverse energy ``e`` per position.

Per sample and channel, with ``n = H W - 1``::

    d = (x - mean_hw(x))^2,   v = sum_hw(d) / n,   e = d / (4 (v + lambda_)) + 1/2

A position far from its channel's mean (large ``d``) has low energy, so a large ``e``, and is
kept; the block has no parameters.  Computed block by block of (samples, channels), every
statistic being one channel's; the backward is the forward read in reverse.  Derivation:
``docs/blocks/simam.md``.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, NamedTuple

from array_api_compat import device

from ..backend import batch_channel_blocks, namespace, run_blocks, sum_of_products, sum_over
from ..checks import argument_error, check_float_array, check_shape
from ._base import Block, take_params

__all__ = ["simam_forward", "simam_backward", "SimAM", "SimAMCache"]


class SimAMCache(NamedTuple):
    """What the backward needs: x and each channel's mean and ``r``; ``map`` is computed when
    read (no full-size array is kept besides x)."""

    hw: int
    x: Any         # the input (N, C, H, W)
    mean: Any      # mu, (N, C, 1, 1)
    r: Any         # 1 / (4 (v + lambda_)), (N, C, 1, 1)

    @property
    def map(self) -> Any:
        """The gate ``sigmoid(e)``, (N, C, H, W), in [sigmoid(1/2), 1)."""
        return _gate(namespace("simam", x=self.x), self.x - self.mean, self.r)[1]


def _check_lambda(op: str, lambda_: Any) -> float:
    if isinstance(lambda_, bool) or not isinstance(lambda_, Real):
        raise argument_error(op, "lambda_", "a float", repr(lambda_), TypeError)
    if not lambda_ > 0:
        raise argument_error(op, "lambda_", "a float > 0", lambda_)
    return float(lambda_)


def _gate(xp: Any, c: Any, r: Any) -> tuple[Any, Any]:
    """``d = c * c`` and the gate ``sigmoid(d r + 1/2)``, through ``(tanh(e / 2) + 1) / 2``
    (stable at any ``e``), of one block of centred values ``c`` and its channels' ``r``."""
    d = c * c
    g = d * r                                                     # q = d r
    g += 0.5                                                      # e = q + 1/2
    g *= 0.5
    g = xp.tanh(g)
    g += 1.0
    g *= 0.5                                                      # g = sigmoid(e)
    return d, g


def simam_forward(x: Any, params: dict[str, Any] | None = None,
                  lambda_: float = 1e-4) -> tuple[Any, SimAMCache]:
    """SimAM.

    .. math:: d = (x - \\mu)^2,\\quad v = \\frac{1}{HW - 1} \\sum_{hw} d,\\quad
              e = \\frac{d}{4 (v + \\lambda)} + \\frac12,\\quad y = x \\odot \\sigma(e)

    Every statistic belongs to one sample and channel, so the whole computation runs block by
    block of (samples, channels) (:func:`~npattn.backend.batch_channel_blocks`: on NumPy about
    1 MiB of x per block, else one block): x is read once, y written once, and every
    temporary is block-sized, in cache.

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
        x, the means ``mu`` and ``r = 1 / (4 (v + lambda))`` (N, C, 1, 1); ``cache.map`` is
        ``sigmoid(e)`` (N, C, H, W), computed when read.
    """
    xp = namespace("simam", x=x)
    check_float_array("simam", "x", x, ndim=4, layout="(N, C, H, W)")
    take_params("simam", {} if params is None else params, x, {})
    lam = _check_lambda("simam", lambda_)
    n, c, h, w = x.shape
    hw = h * w
    if hw < 2:
        raise argument_error("simam", "x", "at least 2 positions (H * W >= 2: the variance "
                             "divides by H * W - 1)", f"shape {tuple(x.shape)}")
    y = xp.empty_like(x)
    mu = xp.empty((n, c, 1, 1), dtype=x.dtype, device=device(x))
    r = xp.empty((n, c, 1, 1), dtype=x.dtype, device=device(x))

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        xb = x[s, ch, ...]
        mu_b = sum_over(xb, (2, 3)) / hw                          # mu = mean_hw(x)
        cb = xb - mu_b                                            # c = x - mu
        v = sum_of_products(cb, cb, (2, 3)) / (hw - 1)            # v = sum_hw(c^2) / n
        r_b = 1.0 / (4.0 * (v + lam))                             # r = 1 / (4 (v + lambda))
        _, g = _gate(xp, cb, r_b)                                     # g = sigmoid(d r + 1/2)
        y[s, ch, ...] = xb * g                                    # y = x g
        mu[s, ch, ...] = mu_b
        r[s, ch, ...] = r_b

    run_blocks(block, batch_channel_blocks(x), x.size)
    return y, SimAMCache(hw, x, mu, r)


def simam_backward(dy: Any, cache: SimAMCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`simam_forward`: ``(dx, {})``.

    Block by block like the forward, recomputing ``c``, ``d`` and the gate from x and the
    channel's ``mu`` and ``r`` (in cache, cheaper than keeping them full-size): x feeds the
    product, the centred values ``c`` and the mean, three terms summed into ``dx``; ``d``
    feeds ``q`` and the variance, two terms summed where they meet.  See
    ``docs/blocks/simam.md``.  ``dy`` is not modified.
    """
    xp = namespace("simam_backward", dy=dy)
    check_shape("simam_backward", "dy", dy, tuple(cache.x.shape))
    hw, x, mu, r = cache
    dx = xp.empty_like(dy)

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        xb, dyb, r_b = x[s, ch, ...], dy[s, ch, ...], r[s, ch, ...]
        cb = xb - mu[s, ch, ...]                                  # c = x - mu, again
        d, g = _gate(xp, cb, r_b)                                     # d and g, again
        dxb = dyb * g                                             # through y = x g: dy g
        de = dyb * xb                                             # dg = dy x
        de *= g
        de *= 1.0 - g                                             # de = dg g (1 - g)
        dr = sum_of_products(de, d, (2, 3))                       # q = d r: dr = sum_hw de d
        dv = dr * (-4.0 * r_b * r_b)                              # r = 1 / (4 (v + lambda))
        dd = de * r_b                                             # q = d r: dd_q = de r
        dd += dv / (hw - 1)                                       # + v = sum_hw(d) / n
        dc = dd * cb
        dc *= 2.0                                                 # d = c c: dc = 2 c dd
        dxb += dc                                                 # + c = x - mu
        dxb -= sum_over(dc, (2, 3)) / hw                          # + mu = mean_hw(x)
        dx[s, ch, ...] = dxb

    run_blocks(block, batch_channel_blocks(dy), dy.size)
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
