"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018), without batch norm
and without sub-sampling: ``z = x + W_z (a(theta(x), phi(x)) g(x))``.

Three 1x1 convolutions with bias map x to ``inter_channels`` (theta, phi, g); every position
attends to every position, with the pairwise weights of the *embedded Gaussian* (a softmax over
``theta_i . phi_j``, unscaled) or the *dot product* (``theta_i . phi_j / (H W)``); the attended
``g`` passes through an output 1x1 convolution with bias (``out``) and is added to x.
The positions are flattened once, so each 1x1 convolution is one matrix product broadcast over
the batch.  Built from :mod:`npattn.ops` (and a bias add); the backward is the forward read in
reverse.
Derivation: ``docs/blocks/nonlocal.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from ..backend import namespace
from ..checks import argument_error, check_float_array, check_int
from ..init import as_generator, bias_uniform, fan_in, kaiming_uniform
from ._base import Block, take_params

__all__ = ["nonlocal_forward", "nonlocal_backward", "NonLocal", "NonLocalCache", "MODES"]

MODES = ("embedded_gaussian", "dot_product")
_EMBEDDINGS = ("theta", "phi", "g")


class Conv1x1Cache(NamedTuple):
    """A 1x1 convolution on flattened positions: the weight's reshape and the product."""

    weight: Any    # reshape (O, I, 1, 1) -> (O, I)
    product: Any   # matmul (O, I) @ (N, I, P)


def _conv1x1_forward(xp: Any, v: Any, weight: Any, bias: Any) -> tuple[Any, Conv1x1Cache]:
    """``W v + b`` for ``v`` (N, I, P), weight (O, I, 1, 1), bias (O,): a 1x1 convolution with
    the positions flattened, one matrix product broadcast over the batch."""
    w, c_weight = ops.reshape_forward(weight, tuple(weight.shape[:2]))
    u, c_product = ops.matmul_forward(w, v)                           # (N, O, P)
    return u + xp.reshape(bias, (-1, 1)), Conv1x1Cache(c_weight, c_product)


def _conv1x1_backward(xp: Any, du: Any, cache: Conv1x1Cache) -> tuple[Any, Any, Any]:
    """``(dv, dweight, dbias)`` of :func:`_conv1x1_forward`."""
    dw, dv = ops.matmul_backward(du, cache.product)                   # dw summed over the batch
    return dv, ops.reshape_backward(dw, cache.weight), xp.sum(du, axis=(0, 2))


class NonLocalCache(NamedTuple):
    """The caches of the Non-local block's ops, in forward order, and the attention map."""

    mode: str
    hw: int
    x_flat: Any     # reshape (N, C, H, W) -> (N, C, P), P = H W
    theta: Any      # 1x1 convolutions to (N, Ci, P)
    phi: Any
    g: Any
    theta_t: Any    # permute theta -> (N, P, Ci)
    pair: Any       # matmul theta^T phi -> f (N, P, P)
    weights: Any    # softmax of f over its last axis (embedded Gaussian), or None (dot product)
    g_t: Any        # permute g -> (N, P, Ci)
    attend: Any     # matmul a g^T -> y^T (N, P, Ci)
    y: Any          # permute y^T -> y (N, Ci, P)
    out: Any        # 1x1 convolution back to (N, C, P)
    out_map: Any    # reshape -> (N, C, H, W)
    map: Any        # a (N, P, P): row i holds the weights position i gives every position


def nonlocal_forward(x: Any, params: dict[str, Any],
                     mode: str = "embedded_gaussian") -> tuple[Any, NonLocalCache]:
    """The Non-local block.

    .. math:: \\theta, \\phi, g = W_{\\theta,\\phi,g} x + b,\\quad
              f_{ij} = \\theta_i^\\top \\phi_j,\\quad
              a = \\mathrm{softmax}_j(f) \\text{ or } f / (HW),\\quad
              y_i = \\sum_j a_{ij} g_j,\\quad z = x + W_z y + b_z

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        ``"theta.weight"``, ``"phi.weight"``, ``"g.weight"`` (Ci, C, 1, 1) with biases (Ci,);
        ``"out.weight"`` (C, Ci, 1, 1) and ``"out.bias"`` (C,); the dtype of x.
    mode : {"embedded_gaussian", "dot_product"}
        The pairwise function: a softmax over ``j`` of ``theta_i . phi_j`` (no scaling), or
        ``theta_i . phi_j`` divided by the number of positions ``H W``.

    Returns
    -------
    z : array, shape (N, C, H, W)
    cache : NonLocalCache
        The ops' caches; ``cache.map`` is the attention matrix ``a`` (N, HW, HW), whose rows
        sum to one in the embedded Gaussian mode.
    """
    xp = namespace("nonlocal", x=x)
    check_float_array("nonlocal", "x", x, ndim=4, layout="(N, C, H, W)")
    if mode not in MODES:
        raise argument_error("nonlocal", "mode", f"one of {MODES}", repr(mode))
    n, c, h, w = x.shape
    shapes = {f"{e}.{k}": s for e in _EMBEDDINGS
              for k, s in (("weight", ("ci", c, 1, 1)), ("bias", ("ci",)))}
    p = take_params("nonlocal", params, x, {**shapes, "out.weight": (c, "ci", 1, 1),
                                            "out.bias": (c,)})
    hw = h * w

    v, c_x_flat = ops.reshape_forward(x, (n, c, hw))                         # (N, C, P)
    t, c_theta = _conv1x1_forward(xp, v, p["theta.weight"], p["theta.bias"])  # (N, Ci, P)
    ph, c_phi = _conv1x1_forward(xp, v, p["phi.weight"], p["phi.bias"])
    g, c_g = _conv1x1_forward(xp, v, p["g.weight"], p["g.bias"])
    t_t, c_theta_t = ops.permute_forward(t, (0, 2, 1))                       # (N, P, Ci)
    f, c_pair = ops.matmul_forward(t_t, ph)                                  # (N, P, P)
    if mode == "embedded_gaussian":
        a, c_weights = ops.softmax_forward(f, axis=-1)
    else:
        a, c_weights = f / hw, None
    g_t, c_g_t = ops.permute_forward(g, (0, 2, 1))                           # (N, P, Ci)
    y_t, c_attend = ops.matmul_forward(a, g_t)                               # y_i = sum_j a_ij g_j
    y, c_y = ops.permute_forward(y_t, (0, 2, 1))                             # (N, Ci, P)
    o, c_out = _conv1x1_forward(xp, y, p["out.weight"], p["out.bias"])       # (N, C, P)
    o4, c_out_map = ops.reshape_forward(o, (n, c, h, w))
    z = x + o4                                                               # the residual
    return z, NonLocalCache(mode, hw, c_x_flat, c_theta, c_phi, c_g, c_theta_t, c_pair,
                            c_weights, c_g_t, c_attend, c_y, c_out, c_out_map, a)


def nonlocal_backward(dz: Any, cache: NonLocalCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`nonlocal_forward`: ``(dx, {"theta.weight": ..., ..., "out.bias": ...})``.

    x feeds the residual and the three embeddings: four terms summed on the last line.
    See ``docs/blocks/nonlocal.md``.  ``dz`` is not modified.
    """
    xp = namespace("nonlocal_backward", dz=dz)
    do = ops.reshape_backward(dz, cache.out_map)                  # z = x + o: both get dz
    dy, dw_out, db_out = _conv1x1_backward(xp, do, cache.out)
    dy_t = ops.permute_backward(dy, cache.y)
    da, dg_t = ops.matmul_backward(dy_t, cache.attend)            # y^T = a g^T
    dg = ops.permute_backward(dg_t, cache.g_t)
    if cache.mode == "embedded_gaussian":
        df = ops.softmax_backward(da, cache.weights)
    else:
        df = da / cache.hw
    dt_t, dph = ops.matmul_backward(df, cache.pair)               # f = theta^T phi
    dt = ops.permute_backward(dt_t, cache.theta_t)
    dv_g, dw_g, db_g = _conv1x1_backward(xp, dg, cache.g)
    dv_phi, dw_phi, db_phi = _conv1x1_backward(xp, dph, cache.phi)
    dv_theta, dw_theta, db_theta = _conv1x1_backward(xp, dt, cache.theta)
    dx_embed = ops.reshape_backward(dv_theta + dv_phi + dv_g, cache.x_flat)
    dx = dz + dx_embed                                            # residual + the three embeddings
    return dx, {"theta.weight": dw_theta, "theta.bias": db_theta,
                "phi.weight": dw_phi, "phi.bias": db_phi,
                "g.weight": dw_g, "g.bias": db_g,
                "out.weight": dw_out, "out.bias": db_out}


class NonLocal(Block):
    """The Non-local block, the stateful face of :func:`nonlocal_forward`.

    Parameters
    ----------
    channels : int >= 1
    inter_channels : int >= 1, optional
        The embeddings' width; ``max(1, channels // 2)`` when not given.
    mode : {"embedded_gaussian", "dot_product"}
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of the four ``nn.Conv2d(..., 1)`` layers.
    dtype : {"float32", "float64"}

    Params ``theta``, ``phi``, ``g`` (``.weight`` (Ci, C, 1, 1), ``.bias`` (Ci,)) and ``out``
    (``.weight`` (C, Ci, 1, 1), ``.bias`` (C,)), named as the attributes ``self.theta =
    nn.Conv2d(C, Ci, 1)`` ... ``self.out = nn.Conv2d(Ci, C, 1)`` of a PyTorch module.
    """

    pure_forward = staticmethod(nonlocal_forward)
    pure_backward = staticmethod(nonlocal_backward)

    def __init__(self, channels: int, inter_channels: int | None = None,
                 mode: str = "embedded_gaussian", *, rng: Any = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        self.channels = check_int("NonLocal", "channels", channels, minimum=1)
        self.inter_channels = (max(1, self.channels // 2) if inter_channels is None else
                               check_int("NonLocal", "inter_channels", inter_channels, minimum=1))
        if mode not in MODES:
            raise argument_error("NonLocal", "mode", f"one of {MODES}", repr(mode))
        self.mode = mode
        gen = as_generator(rng, "NonLocal")
        c, ci = self.channels, self.inter_channels
        for name, shape in [("theta", (ci, c, 1, 1)), ("phi", (ci, c, 1, 1)),
                            ("g", (ci, c, 1, 1)), ("out", (c, ci, 1, 1))]:
            self.add_param(f"{name}.weight", kaiming_uniform(shape, gen, dtype=dtype))
            self.add_param(f"{name}.bias", bias_uniform((shape[0],), fan_in(shape), gen, dtype))

    def _forward(self, x: Any) -> tuple[Any, Any]:
        self.check_input(x)
        return nonlocal_forward(x, dict(self.params), self.mode)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, inter_channels={self.inter_channels}, "
                f"mode={self.mode!r}")
