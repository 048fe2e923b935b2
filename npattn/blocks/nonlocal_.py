"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018), without batch norm
and without sub-sampling: ``z = x + W_z (a(theta(x), phi(x)) g(x))``.

Three 1x1 convolutions with bias map x to ``inter_channels`` (theta, phi, g); every position
attends to every position, with the pairwise weights of the *embedded Gaussian* (a softmax over
``theta_i . phi_j``, unscaled) or the *dot product* (``theta_i . phi_j / (H W)``); the attended
``g`` passes through an output 1x1 convolution with bias (``out``) and is added to x.

Two spellings of one block:

* :func:`nonlocal_forward_by_ops` / :func:`nonlocal_backward_by_ops`, the spec: the block built
  from :mod:`npattn.ops` step by step (reshape, three 1x1 convolutions, permute, matmul,
  softmax, matmul ...), the backward the forward read in reverse;
* :func:`nonlocal_forward` / :func:`nonlocal_backward`, the fused pair that ``NonLocal`` runs,
  tested against the spec: the three embeddings as one product, the softmax's normalisation
  moved from the (N, P, P) weights to the (N, Ci, P) output, and the softmax's backward folded
  into the product that makes its ``dy`` (one (N, P, P) pass in the backward instead of four).

Derivation: ``docs/blocks/nonlocal.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import device

from .. import ops
from ..backend import (add_into, all_within, exp_into, multiply_into, namespace, sum_of_products,
                       sum_over)
from ..checks import argument_error, check_float_array, check_int, check_shape
from ..init import as_generator, bias_uniform, fan_in, kaiming_uniform
from ._base import Block, take_params

__all__ = ["nonlocal_forward", "nonlocal_backward", "NonLocal", "NonLocalCache", "MODES",
           "nonlocal_forward_by_ops", "nonlocal_backward_by_ops"]

MODES = ("embedded_gaussian", "dot_product")
_EMBEDDINGS = ("theta", "phi", "g")


def _checked_params(x: Any, params: dict[str, Any], mode: str) -> dict[str, Any]:
    """The entry checks of both forwards: x (N, C, H, W), the mode, the eight parameters."""
    check_float_array("nonlocal", "x", x, ndim=4, layout="(N, C, H, W)")
    if mode not in MODES:
        raise argument_error("nonlocal", "mode", f"one of {MODES}", repr(mode))
    c = x.shape[1]
    shapes = {f"{e}.{k}": s for e in _EMBEDDINGS
              for k, s in (("weight", ("ci", c, 1, 1)), ("bias", ("ci",)))}
    return take_params("nonlocal", params, x, {**shapes, "out.weight": (c, "ci", 1, 1),
                                               "out.bias": (c,)})


# --------------------------------------------------------------------------- the fused pair

class NonLocalCache(NamedTuple):
    """What :func:`nonlocal_backward` needs; ``map`` (a property) is the attention matrix."""

    mode: str
    x_shape: tuple[int, ...]   # (N, C, H, W)
    v: Any                     # x as (N, C, P), P = H W
    w_embed: Any               # (3 Ci + 1, C): the weights of theta, phi, g and a zero row
    embed: Any                 # (N, 3 Ci + 1, P): theta, phi, g and a row of ones
    weights: Any               # e (N, P, P): exp(f - max_j f) or exp(f) (embedded Gaussian), or f
    rowsum: Any                # s: sum_j e (N, P, 1) (embedded Gaussian), or the int P
    y: Any                     # (N, Ci, P): the attended g, y_i = sum_j a_ij g_j
    w_out: Any                 # (C, Ci)

    @property
    def map(self) -> Any:
        """``a = e / s`` (N, P, P), computed on each access: row i holds the weights position
        i gives every position."""
        return self.weights / self.rowsum


#: Row maxima of ``f`` for which the forward skips the subtraction: ``e = exp(f)`` differs from
#: ``exp(f - max)`` by the factor ``exp(max_i)`` in row ``i``, which ``s_i`` carries too, so
#: ``a``, ``y`` and every gradient are the same.  Inside these ranges ``sum_j exp(f_ij)``
#: cannot overflow (``P exp(60) < 3e38`` for any P below 1e12), the largest entry of a row
#: is a normal number, and an entry becomes subnormal only where its weight is below
#: ``exp(-67)`` (float32; ``exp(-408)`` in float64) times the row's largest.
_NO_SHIFT_RANGE = {"float32": (-20.0, 60.0), "float64": (-300.0, 300.0)}


#: Below this many entries of ``f`` the forward takes the row maxima without trying
#: :func:`_logit_bound` first: the bound costs about 60 us, the max pass about 0.2 ns an entry
#: (float32; 0.3 in float64), so it pays from about half a million entries.
_BOUND_MIN_ENTRIES = 2 ** 19


def _logit_bound(xp: Any, t: Any, ph: Any) -> Any:
    """``max_i |theta_i| max_j |phi_j|`` per sample (N,): a bound on every ``|f_ij|``
    (Cauchy-Schwarz), from the (N, Ci, P) embeddings.  Where it is at most the upper end of
    :data:`_NO_SHIFT_RANGE`, every ``exp(f_ij)`` is a normal number below ``exp(60)`` (float32)
    and the forward needs neither the row maxima nor their subtraction."""
    squares = [xp.max(sum_of_products(v, v, (1,)), axis=(1, 2)) for v in (t, ph)]
    return xp.sqrt(squares[0] * squares[1])


def _times_transposed(xp: Any, small: Any, big: Any) -> Any:
    """``small @ big^T`` (..., Ci, R) for ``small`` (..., Ci, P) and ``big`` (..., R, P).

    The same product either way round; OpenBLAS on the project's machines runs it faster
    as ``(big @ small^T)^T`` (a transposed view) in float32 and directly in float64 (one
    thread, P = 784, Ci = 32: 1.49 against 2.06 ms in float32, 3.05 against 4.06 ms in
    float64; benchmarks/NOTES-nonlocal.md).
    """
    if small.dtype == xp.float32:
        return xp.matrix_transpose(xp.matmul(big, xp.matrix_transpose(small)))
    return xp.matmul(small, xp.matrix_transpose(big))


def nonlocal_forward(x: Any, params: dict[str, Any],
                     mode: str = "embedded_gaussian") -> tuple[Any, NonLocalCache]:
    """The Non-local block.

    .. math:: \\theta, \\phi, g = W_{\\theta,\\phi,g} x + b,\\quad
              f_{ij} = \\theta_i^\\top \\phi_j,\\quad
              a = \\mathrm{softmax}_j(f) \\text{ or } f / (HW),\\quad
              y_i = \\sum_j a_{ij} g_j,\\quad z = x + W_z y + b_z

    Computed as ``e = exp(f - max_j f)``, ``s = sum_j e`` and ``y = (g e^T) / s`` (embedded
    Gaussian; the maxima are neither taken nor subtracted where NumPy knows them to be safe,
    a factor per row that ``s`` carries too) or ``e = f``, ``s = P`` (dot product): the
    normalisation divides the (N, Ci, P) product, not the (N, P, P) weights.  The result
    equals :func:`nonlocal_forward_by_ops` up to rounding.

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
        ``x`` flattened, the stacked embeddings and their weights, ``e``, ``s``, ``y`` and the
        output weight; ``cache.map`` is the attention matrix ``a`` (N, HW, HW), whose rows sum
        to one in the embedded Gaussian mode.
    """
    xp = namespace("nonlocal", x=x)
    p = _checked_params(x, params, mode)
    n, c, h, w = x.shape
    ci, hw = p["theta.weight"].shape[0], h * w
    v = xp.reshape(x, (n, c, hw))                                               # (N, C, P)
    one = xp.ones((1,), dtype=x.dtype, device=device(x))
    w_embed = xp.concat([xp.reshape(p[f"{e}.weight"], (ci, c)) for e in _EMBEDDINGS]
                        + [xp.zeros((1, c), dtype=x.dtype, device=device(x))], axis=0)
    u = xp.matmul(w_embed, v)                               # theta; phi; g; 0 (N, 3Ci + 1, P)
    u += xp.reshape(xp.concat([p[f"{e}.bias"] for e in _EMBEDDINGS] + [one]), (-1, 1))
    t, ph, g1 = u[:, :ci, :], u[:, ci:2 * ci, :], u[:, 2 * ci:, :]   # g1 = [g; 1] (0 v + 1)
    e = xp.matmul(xp.permute_dims(t, (0, 2, 1)), ph)                 # f = theta^T phi (N, P, P)
    if mode == "embedded_gaussian":
        low, high = _NO_SHIFT_RANGE["float32" if e.dtype == xp.float32 else "float64"]
        bounded = n * hw * hw >= _BOUND_MIN_ENTRIES and all_within(
            _logit_bound(xp, t, ph), 0.0, high)                      # None (unknown): the max
        if not bounded:
            m = xp.max(e, axis=2, keepdims=True)
            if not all_within(m, low, high):                         # None (unknown): subtract
                e = add_into(e, -m)                                  # f - max_j f, in place
        e = exp_into(e)                                              # e, in place where allowed
    y1 = _times_transposed(xp, g1, e)                                # [g e^T; s^T] (N, Ci + 1, P)
    if mode == "embedded_gaussian":
        s = xp.reshape(y1[:, ci, :], (n, hw, 1))                     # s_i = sum_j e_ij
        y = y1[:, :ci, :] / xp.reshape(s, (n, 1, hw))                # y_i = sum_j e_ij g_j / s_i
    else:
        s = hw
        y = y1[:, :ci, :] / s
    w_out = xp.reshape(p["out.weight"], (c, ci))
    o = xp.matmul(w_out, y)                                                     # (N, C, P)
    o += xp.reshape(p["out.bias"], (-1, 1))
    o += v                                                                      # the residual
    return xp.reshape(o, (n, c, h, w)), NonLocalCache(mode, (n, c, h, w), v, w_embed, u, e, s,
                                                      y, w_out)


#: At most this many rows of a sample's (P, P) arrays per step of the backward (a sample's
#: P rows split in equal blocks): whole samples up to P = 1024.  Smaller blocks measured
#: slower at P = 784 (the products lose more than the element-wise pass gains).
ROW_BLOCK = 1024


def _attention_backward_rows(xp: Any, lhs: Any, rhs: Any, dy_s: Any, e: Any, t: Any, ph: Any,
                             softmax: bool) -> tuple[Any, Any, Any]:
    """``(dtheta, dphi, dg)`` (each (N, Ci, P)) from ``df = lhs @ rhs`` (times ``e`` when
    ``softmax``): ``dtheta = phi df^T``, ``dphi = theta df``, ``dg = dy_s^T e``.

    Sample by sample (and block of rows by block of rows when P > :data:`ROW_BLOCK`): ``df``
    is never whole; each sample's ``df`` is made, scaled and read by the two products while it
    is in cache (at (4, 784, 784) float64, 19.6 MiB written to memory and read back three times
    otherwise).
    """
    n, ci, hw = t.shape
    dt = xp.zeros((n, ci, hw), dtype=t.dtype, device=device(t))
    dph, dg = xp.zeros_like(dt), xp.zeros_like(dt)
    blocks = -(-hw // ROW_BLOCK)
    for k in range(n):
        for b in range(blocks):
            rows = slice(hw * b // blocks, hw * (b + 1) // blocks)
            eb = e[k, rows, :]
            dfb = xp.matmul(lhs[k, rows, :], rhs[k, :, :])           # (R, P)
            if softmax:
                dfb = multiply_into(dfb, eb)
            dt[k, :, rows] = _times_transposed(xp, ph[k, :, :], dfb)
            dph[k, :, :] += xp.matmul(t[k, :, rows], dfb)
            dg[k, :, :] += xp.matmul(xp.permute_dims(dy_s[k, rows, :], (1, 0)), eb)
    return dt, dph, dg


def nonlocal_backward(dz: Any, cache: NonLocalCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`nonlocal_forward`: ``(dx, {"theta.weight": ..., ..., "out.bias": ...})``.

    With ``dy_s = dy / s`` (each position's column divided by its row sum; by ``P`` in the dot
    product mode): ``dg = dy_s e``, and ``df = e * (dy_s^T g - q)`` with
    ``q_i = sum_c dy_s[c, i] y[c, i]`` (embedded Gaussian; the softmax's backward, its row sum
    taken on (N, Ci, P) arrays and its subtraction inside the product, whose left factor gets
    the row ``-q``), or ``df = dy_s^T g`` (dot product).  x feeds the residual and the three
    embeddings: ``dx = dz + W^T [dtheta; dphi; dg]``.  See ``docs/blocks/nonlocal.md``.
    ``dz`` is not modified.
    """
    check_shape("nonlocal_backward", "dz", dz, cache.x_shape)
    xp = namespace("nonlocal_backward", dz=dz, e=cache.weights)
    n, c, h, w = cache.x_shape
    hw, ci, e = h * w, cache.y.shape[1], cache.weights
    do = xp.reshape(dz, (n, c, hw))                                  # z = x + o: both get dz
    db_out = xp.sum(do, axis=(0, 2))
    dw_out = xp.sum(xp.matmul(do, xp.permute_dims(cache.y, (0, 2, 1))), axis=0)   # (C, Ci)
    dy_s = xp.matmul(xp.permute_dims(do, (0, 2, 1)), cache.w_out)   # dy^T (N, P, Ci), by rows
    t, ph, g1 = cache.embed[:, :ci, :], cache.embed[:, ci:2 * ci, :], cache.embed[:, 2 * ci:, :]
    dy_s /= cache.rowsum                                             # dy_s = dy / s, row i by s_i
    if cache.mode == "embedded_gaussian":
        q = sum_of_products(dy_s, xp.permute_dims(cache.y, (0, 2, 1)), (2,))   # (N, P, 1)
        lhs, rhs = xp.concat([dy_s, -q], axis=2), g1                 # [dy_s, -q], [g; 1]
    else:
        lhs, rhs = dy_s, g1[:, :ci, :]
    dt, dph, dg = _attention_backward_rows(xp, lhs, rhs, dy_s, e, t, ph,
                                           cache.mode == "embedded_gaussian")
    du = xp.concat([dt, dph, dg], axis=1)                            # (N, 3Ci, P)
    dw_embed = xp.sum(xp.matmul(du, xp.permute_dims(cache.v, (0, 2, 1))), axis=0)  # (3Ci, C)
    db_embed = xp.sum(du, axis=(0, 2))
    dv = xp.matmul(xp.permute_dims(cache.w_embed[:3 * ci, :], (1, 0)), du)        # (N, C, P)
    dv += do                                                         # the residual's term
    grads = {}
    for k, name in enumerate(_EMBEDDINGS):
        grads[f"{name}.weight"] = xp.reshape(dw_embed[k * ci:(k + 1) * ci, :], (ci, c, 1, 1))
        grads[f"{name}.bias"] = db_embed[k * ci:(k + 1) * ci]
    grads["out.weight"] = xp.reshape(dw_out, (c, ci, 1, 1))
    grads["out.bias"] = db_out
    return xp.reshape(dv, (n, c, h, w)), grads


# ------------------------------------------------------------------------ the spec, op by op

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


class NonLocalOpsCache(NamedTuple):
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


def nonlocal_forward_by_ops(x: Any, params: dict[str, Any],
                            mode: str = "embedded_gaussian") -> tuple[Any, NonLocalOpsCache]:
    """The Non-local block op by op: the spec of :func:`nonlocal_forward`.

    Arguments, checks and ``z`` as :func:`nonlocal_forward`; the cache is a
    :class:`NonLocalOpsCache` of the ops' caches, whose ``map`` field is the attention matrix
    ``a`` (N, HW, HW).
    """
    xp = namespace("nonlocal", x=x)
    p = _checked_params(x, params, mode)
    n, c, h, w = x.shape
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
    return z, NonLocalOpsCache(mode, hw, c_x_flat, c_theta, c_phi, c_g, c_theta_t, c_pair,
                            c_weights, c_g_t, c_attend, c_y, c_out, c_out_map, a)


def nonlocal_backward_by_ops(dz: Any, cache: NonLocalOpsCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`nonlocal_forward_by_ops`, the forward read in reverse op by op: the
    spec of :func:`nonlocal_backward`.

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
