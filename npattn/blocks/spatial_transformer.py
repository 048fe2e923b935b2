"""Spatial transformer (Jaderberg et al., 2015): the network learns *where* to look.

A small localization network predicts one affine map per sample, and the input is resampled
through it::

    theta = fc_loc(flatten(relu(max_pool_2(conv(x)))))          (N, 6) -> (N, 2, 3)
    y     = grid_sample(x, affine_grid(theta, x.shape))

The convolution is k x k with "same" padding ``k // 2``; the last layer ``fc_loc`` starts at
the identity transform (zero weight, bias ``(1, 0, 0, 0, 1, 0)``), so a fresh block returns x
unchanged.  Sampling is bilinear with zero padding and ``align_corners=False`` (PyTorch's
defaults).  Derivation: ``docs/blocks/spatial_transformer.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import ops
from ..backend import namespace
from ..checks import argument_error, check_float_array, check_int, int_pair
from ..init import as_generator, bias_uniform, fan_in, kaiming_uniform
from ._base import Block, check_odd, take_params

__all__ = ["spatial_transformer_forward", "spatial_transformer_backward", "SpatialTransformer",
           "SpatialTransformerCache", "IDENTITY_THETA"]

#: ``fc_loc.bias`` of a fresh block: theta = [[1, 0, 0], [0, 1, 0]], the identity map.
IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class SpatialTransformerCache(NamedTuple):
    """The caches of the spatial transformer's ops, in forward order, and its sampling grid."""

    conv: Any      # conv2d, localization.0
    pool: Any      # max_pool2d, 2 x 2
    relu: Any      # relu
    flat: Any      # reshape (N, hidden, H/2, W/2) -> (N, features)
    fc: Any        # linear fc_loc -> (N, 6)
    theta: Any     # reshape (N, 6) -> (N, 2, 3)
    grid: Any      # affine_grid
    sample: Any    # grid_sample
    map: Any       # the sampling grid (N, H, W, 2): where each output pixel reads x


def spatial_transformer_forward(x: Any, params: dict[str, Any]) -> tuple[Any, SpatialTransformerCache]:
    """The spatial transformer.

    .. math:: \\theta = W_{fc}\\, \\mathrm{vec}(\\mathrm{relu}(\\mathrm{pool}_2(w \\star x + b)))
              + b_{fc},\\qquad y = \\mathrm{grid\\_sample}(x, \\mathrm{affine\\_grid}(\\theta))

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64, H and W >= 2
    params : dict
        ``"localization.0.weight"`` (hidden, C, kh, kw), kh and kw odd, and
        ``"localization.0.bias"`` (hidden,): the localization convolution, padding
        ``(kh // 2, kw // 2)``; ``"fc_loc.weight"`` (6, hidden * (H // 2) * (W // 2)) and
        ``"fc_loc.bias"`` (6,): the affine map, row-major ``theta``.  The dtype of x.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : SpatialTransformerCache
        The ops' caches; ``cache.map`` is the sampling grid (N, H, W, 2) in normalised
        coordinates.  The max-pool sends its gradient to the first maximum of each window.
    """
    op = "spatial_transformer"
    namespace(op, x=x)
    check_float_array(op, "x", x, ndim=4, layout="(N, C, H, W)")
    n, c, h, w = x.shape
    p = take_params(op, params, x, {"localization.0.weight": ("hidden", c, "kh", "kw"),
                                    "localization.0.bias": ("hidden",),
                                    "fc_loc.weight": (6, "features"), "fc_loc.bias": (6,)})
    conv_w = p["localization.0.weight"]
    kh = check_odd(op, "params['localization.0.weight'].shape[2]", conv_w.shape[2])
    kw = check_odd(op, "params['localization.0.weight'].shape[3]", conv_w.shape[3])
    features = conv_w.shape[0] * (h // 2) * (w // 2)
    if min(h, w) < 2 or p["fc_loc.weight"].shape[1] != features:
        raise argument_error(op, "params['fc_loc.weight']",
                             f"shape (6, {features}) (hidden * (H // 2) * (W // 2) for x of shape "
                             f"{tuple(x.shape)}, H and W >= 2)", f"shape {tuple(p['fc_loc.weight'].shape)}")

    z, c_conv = ops.conv2d_forward(x, conv_w, p["localization.0.bias"], padding=(kh // 2, kw // 2))
    zp, c_pool = ops.max_pool2d_forward(z, 2)                           # (N, hidden, H/2, W/2)
    a, c_relu = ops.relu_forward(zp)
    f, c_flat = ops.reshape_forward(a, (n, features))
    t, c_fc = ops.linear_forward(f, p["fc_loc.weight"], p["fc_loc.bias"])  # (N, 6)
    theta, c_theta = ops.reshape_forward(t, (n, 2, 3))
    grid, c_grid = ops.affine_grid_forward(theta, (n, c, h, w), False)
    y, c_sample = ops.grid_sample_forward(x, grid, "bilinear", "zeros", False)
    return y, SpatialTransformerCache(c_conv, c_pool, c_relu, c_flat, c_fc, c_theta, c_grid,
                                      c_sample, grid)


def spatial_transformer_backward(dy: Any, cache: SpatialTransformerCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`spatial_transformer_forward`: ``(dx, {"localization.0.weight": ...,
    "localization.0.bias": ..., "fc_loc.weight": ..., "fc_loc.bias": ...})``.

    x feeds the sampler and the localization network: two terms summed on the last line.
    See ``docs/blocks/spatial_transformer.md``.  ``dy`` is not modified.
    """
    namespace("spatial_transformer_backward", dy=dy)
    dx_sample, dgrid = ops.grid_sample_backward(dy, cache.sample)       # y = sample(x, grid)
    dtheta = ops.affine_grid_backward(dgrid, cache.grid)
    dt = ops.reshape_backward(dtheta, cache.theta)
    df, dw_fc, db_fc = ops.linear_backward(dt, cache.fc)
    da = ops.reshape_backward(df, cache.flat)
    dzp = ops.relu_backward(da, cache.relu)
    dz = ops.max_pool2d_backward(dzp, cache.pool)
    dx_loc, dw_conv, db_conv = ops.conv2d_backward(dz, cache.conv)
    dx = dx_sample + dx_loc                                             # the sampler + the localizer
    return dx, {"localization.0.weight": dw_conv, "localization.0.bias": db_conv,
                "fc_loc.weight": dw_fc, "fc_loc.bias": db_fc}


class SpatialTransformer(Block):
    """A spatial transformer module, the stateful face of :func:`spatial_transformer_forward`.

    Parameters
    ----------
    in_channels : int >= 1
    input_size : int >= 2 or a pair of them
        ``(H, W)`` of the input, which fixes the width of ``fc_loc``.
    hidden : int >= 1
        The localization convolution's output channels.
    kernel_size : odd int >= 1, or a pair of them
        The localization convolution's size; padding ``k // 2`` keeps H and W.
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of ``nn.Conv2d(in_channels, hidden, k, padding=k // 2)``.
    dtype : {"float32", "float64"}

    Params ``localization.0.weight`` (hidden, C, k, k), ``localization.0.bias`` (hidden,), and
    ``fc_loc.weight`` (6, hidden * (H // 2) * (W // 2)), ``fc_loc.bias`` (6,), named as the
    attributes ``self.localization = nn.Sequential(nn.Conv2d(...), nn.MaxPool2d(2), nn.ReLU())``
    and ``self.fc_loc = nn.Linear(...)`` of a PyTorch module.  ``fc_loc`` starts at the
    identity transform: zero weight, bias :data:`IDENTITY_THETA`.
    """

    pure_forward = staticmethod(spatial_transformer_forward)
    pure_backward = staticmethod(spatial_transformer_backward)

    def __init__(self, in_channels: int, input_size: Any, hidden: int = 8, kernel_size: Any = 3, *,
                 rng: Any = None, dtype: str = "float32") -> None:
        super().__init__()
        op = "SpatialTransformer"
        self.channels = check_int(op, "in_channels", in_channels, minimum=1)
        self.input_size = int_pair(op, "input_size", input_size, minimum=2)
        self.hidden = check_int(op, "hidden", hidden, minimum=1)
        self.kernel_size = tuple(check_odd(op, "kernel_size", k)
                                 for k in int_pair(op, "kernel_size", kernel_size, minimum=1))
        gen = as_generator(rng, op)
        shape = (self.hidden, self.channels, *self.kernel_size)
        conv_w = self.add_param("localization.0.weight", kaiming_uniform(shape, gen, dtype=dtype))
        self.add_param("localization.0.bias", bias_uniform((self.hidden,), fan_in(shape), gen, dtype))
        features = self.hidden * (self.input_size[0] // 2) * (self.input_size[1] // 2)
        self.add_param("fc_loc.weight", np.zeros((6, features), dtype=conv_w.dtype))
        self.add_param("fc_loc.bias", np.asarray(IDENTITY_THETA, dtype=conv_w.dtype))

    def check_input(self, x: Any) -> None:
        """``x`` must be (N, in_channels, H, W) with ``(H, W) == input_size``."""
        super().check_input(x)
        if tuple(x.shape[2:]) != self.input_size:
            raise argument_error(self.name, "x", f"spatial size {self.input_size} (input_size)",
                                 f"shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        return (f"in_channels={self.channels}, input_size={self.input_size}, hidden={self.hidden}, "
                f"kernel_size={k}")
