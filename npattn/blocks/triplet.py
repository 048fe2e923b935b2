"""Triplet attention (Misra, Nalamada, Arasanipalai and Hou, "Rotate to Attend: Convolutional
Triplet Attention Module", WACV 2021): three rotated branches, each a spatial gate with Z-pooling.

Branch ``cw`` rotates x (N, C, H, W) to (N, H, C, W), ``hc`` to (N, W, H, C) (both are axis
swaps, their own inverses), ``hw`` leaves it.  Each branch Z-pools its first axis,
``[max; mean]`` (max first, as the reference code), filters the two maps by one k x k
convolution without bias ("same" padding ``k // 2``), a batch norm of one channel and a sigmoid,
multiplies its rotated input by the map and rotates back.  The output is the average of the
branches: ``(y_cw + y_hc + y_hw) / 3``, or ``(y_cw + y_hc) / 2`` with ``no_spatial``.
Built only from :mod:`npattn.ops`; the backward is the forward read in reverse.
Derivation: ``docs/blocks/triplet.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from ..backend import add_into, multiply_into, namespace
from ..checks import argument_error, check_float_array, check_shape, int_pair
from ..init import as_generator
from ._base import check_odd, take_params
from ._parts import (BatchNormBlock, BatchNorms, add_conv, batch_norm_shapes, check_bn_settings,
                     take_buffers, updated_buffers)

__all__ = ["triplet_attention_forward", "triplet_attention_backward", "TripletAttention",
           "TripletAttentionCache", "GateCache", "ROTATIONS", "triplet_branches"]

#: Each branch's rotation of (N, C, H, W), as ``x.permute(*axes)``; ``None``: no rotation.
#: Both rotations swap two axes, so the same permutation turns the result back.
ROTATIONS: dict[str, tuple[int, ...] | None] = {"cw": (0, 2, 1, 3), "hc": (0, 3, 2, 1), "hw": None}


def triplet_branches(no_spatial: bool) -> tuple[str, ...]:
    """The branches in the order they are summed: ``("cw", "hc", "hw")``, without ``"hw"`` when
    ``no_spatial``."""
    return ("cw", "hc") if no_spatial else ("cw", "hc", "hw")


class GateCache(NamedTuple):
    """One branch's ops, in forward order: rotation, Z-pool, convolution, batch norm, gate."""

    rotate: Any    # permute x -> v (None for hw)
    max: Any       # channel_max over v's axis 1
    mean: Any      # channel_mean over v's axis 1
    conv: Any      # conv2d on [max; mean], no bias
    bn: Any        # batch_norm2d of one channel
    gate: Any      # sigmoid
    prod: Any      # mul(v, map)
    back: Any      # permute the product back to (N, C, H, W) (None for hw)


class TripletAttentionCache(NamedTuple):
    """The branches' caches, the updated running statistics, and the maps."""

    shape: tuple[int, ...]
    branches: tuple[str, ...]
    gates: tuple[GateCache, ...]
    buffers: Any   # the running statistics after this call, or None
    map: Any       # {"cw": (N, 1, C, W), "hc": (N, 1, H, C)[, "hw": (N, 1, H, W)]}, in [0, 1]


def _gate_forward(xp: Any, v: Any, weight: Any, bn: BatchNorms, name: str
                  ) -> tuple[Any, Any, tuple[Any, ...]]:
    """One attention gate on ``v`` (N, A, B, D): ``v * sigmoid(BN(w * [max_1 v; mean_1 v]))``.
    Returns the product, the map (N, 1, B, D) and the six ops' caches."""
    f_max, c_max = ops.channel_max_forward(v)                         # (N, 1, B, D)
    f_mean, c_mean = ops.channel_mean_forward(v)
    f = xp.concat([f_max, f_mean], axis=1)                            # Z-pool: max, then mean
    kh, kw = weight.shape[2:]
    z, c_conv = ops.conv2d_forward(f, weight, None, padding=(kh // 2, kw // 2))
    zn, c_bn = bn.forward(f"{name}.conv.bn", z)
    m, c_gate = ops.sigmoid_forward(zn)
    u, c_prod = ops.mul_forward(v, m)
    return u, m, (c_max, c_mean, c_conv, c_bn, c_gate, c_prod)


def _gate_backward(du: Any, cache: GateCache) -> tuple[Any, Any, Any, Any]:
    """``(dv, dweight, dbn_weight, dbn_bias)`` of :func:`_gate_forward`: v feeds the product,
    the max and the mean, three terms summed on the last lines (the pools' terms added in place
    into the product's fresh gradient: no full-size array for either)."""
    dv_prod, dm = ops.mul_backward(du, cache.prod)                    # through u = v * m
    dzn = ops.sigmoid_backward(dm, cache.gate)
    dz, dgamma, dbeta = ops.batch_norm2d_backward(dzn, cache.bn)
    df, dw, _ = ops.conv2d_backward(dz, cache.conv)                   # no bias
    df_max, df_mean = df[:, 0:1, ...], df[:, 1:2, ...]                # undo the concat
    dv = ops.channel_max_backward_add(dv_prod, df_max, cache.max)    # dv_prod + dv_max
    dv = ops.channel_mean_backward_add(dv, df_mean, cache.mean)       # ... + dv_mean
    return dv, dw, dgamma, dbeta


def _unrotated_first(branches: tuple[str, ...]) -> list[int]:
    """The branches' positions, ``hw`` (no rotation) first: its result is contiguous and fresh,
    so the sum over the branches accumulates in its memory."""
    return sorted(range(len(branches)), key=lambda i: ROTATIONS[branches[i]] is not None)


def _accumulate(total: Any, term: Any) -> Any:
    """The branches' sum so far plus ``term``: in place when ``total`` is an array of our own
    (wrapped in a list, ``[array]``: hw's fresh result, or a sum made here); ``None`` (nothing
    yet) keeps ``term`` as it is (a view), and the second term makes a fresh sum."""
    if total is None:
        return term
    if isinstance(total, list):
        return [add_into(total[0], term)]
    return [total + term]


def _shapes(branches: tuple[str, ...]) -> dict[str, tuple[Any, ...]]:
    shapes: dict[str, tuple[Any, ...]] = {}
    for b in branches:
        shapes[f"{b}.conv.conv.weight"] = (1, 2, "kh", "kw")
        shapes.update(batch_norm_shapes({f"{b}.conv.bn": 1}))
    return shapes


def triplet_attention_forward(x: Any, params: dict[str, Any], buffers: dict[str, Any] | None = None,
                              no_spatial: bool = False, training: bool = True,
                              momentum: float = 0.01, eps: float = 1e-5
                              ) -> tuple[Any, TripletAttentionCache]:
    """Triplet attention.

    .. math:: y_b = R_b^{-1}\\big(v_b \\odot \\sigma(\\mathrm{BN}_b(w_b \\star
              [\\max_1 v_b; \\mathrm{mean}_1 v_b]))\\big),\\quad v_b = R_b(x),\\quad
              y = \\tfrac{1}{|B|} \\textstyle\\sum_{b \\in B} y_b

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        For each branch ``b`` in ``("cw", "hc", "hw")`` (no ``"hw"`` with ``no_spatial``):
        ``"{b}.conv.conv.weight"`` (1, 2, kh, kw), kh and kw odd, the same for every branch;
        ``"{b}.conv.bn.weight"`` and ``"{b}.conv.bn.bias"`` (1,); the dtype of x.
    buffers : dict or None
        ``"{b}.conv.bn.running_mean"`` and ``"{b}.conv.bn.running_var"`` (1,) for each branch;
        may be ``None`` in training mode (then no running statistics are kept).
    no_spatial : bool
        Leave out the ``hw`` branch (the average is then over two).
    training : bool
        The batch norms use the batch statistics (True) or the running ones (False).
    momentum, eps : float
        The batch norms', as :func:`npattn.ops.batch_norm2d_forward`; the reference code's
        ``nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)`` by default.

    Returns
    -------
    y : array, shape (N, C, H, W)
    cache : TripletAttentionCache
        The branches' caches; ``cache.buffers`` the running statistics after this call (``None``
        when none were given); ``cache.map`` a dict of each branch's map in its rotated layout:
        ``"cw"`` (N, 1, C, W), ``"hc"`` (N, 1, H, C), ``"hw"`` (N, 1, H, W).  Each max sends its
        gradient to the first maximum in index order.

    Raises
    ------
    ValueError
        In training mode, when a branch's map has a single value (``N C W``, ``N H C`` or
        ``N H W`` equal to 1): its batch norm has no variance to take.
    """
    op = "triplet_attention"
    xp = namespace(op, x=x)
    check_float_array(op, "x", x, ndim=4, layout="(N, C, H, W)")
    if not isinstance(no_spatial, bool):
        raise argument_error(op, "no_spatial", "a bool", repr(no_spatial), TypeError)
    training, momentum, eps = check_bn_settings(op, training, momentum, eps)
    branches = triplet_branches(no_spatial)
    p = take_params(op, params, x, _shapes(branches))
    norms = {f"{b}.conv.bn": 1 for b in branches}
    bn = BatchNorms(p, take_buffers(op, buffers, x, norms, training), training, momentum, eps)
    w0 = p[f"{branches[0]}.conv.conv.weight"]
    check_odd(op, f"params['{branches[0]}.conv.conv.weight'].shape[2]", w0.shape[2])
    check_odd(op, f"params['{branches[0]}.conv.conv.weight'].shape[3]", w0.shape[3])
    n, c, h, w = x.shape
    if training and min(n * c * w, n * h * c, n * h * w) < 2:
        raise argument_error(op, "x", "more than 1 value in every branch's map in training mode "
                             "(N*C*W, N*H*C and N*H*W >= 2)", f"shape {tuple(x.shape)}")

    y, gates, maps = None, [None] * len(branches), {}
    for i in _unrotated_first(branches):                              # hw's product holds the sum
        b, axes = branches[i], ROTATIONS[branches[i]]
        v, c_rotate = (x, None) if axes is None else ops.permute_forward(x, axes)
        u, maps[b], c_ops = _gate_forward(xp, v, p[f"{b}.conv.conv.weight"], bn, b)
        y_b, c_back = (u, None) if axes is None else ops.permute_forward(u, axes)  # rotate back
        y = [u] if axes is None else _accumulate(y, y_b)              # u is fresh: ours
        gates[i] = GateCache(c_rotate, *c_ops, c_back)
    y = multiply_into(y[0], 1.0 / len(branches))                      # the average
    stats = updated_buffers({f"{b}.conv.bn": g.bn for b, g in zip(branches, gates)})
    return y, TripletAttentionCache(tuple(x.shape), branches, tuple(gates), stats, maps)


def triplet_attention_backward(dy: Any, cache: TripletAttentionCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`triplet_attention_forward`: ``(dx, {"cw.conv.conv.weight": ..., ...})``.

    Each branch gets ``dy / |B|``, rotated into its layout, through its gate and rotated back; x
    feeds every branch, so the branches' gradients are summed.  The running statistics get none
    (they are buffers).  See ``docs/blocks/triplet.md``.  ``dy`` is not modified.
    """
    namespace("triplet_attention_backward", dy=dy)
    check_shape("triplet_attention_backward", "dy", dy, cache.shape)
    dy_b = dy * (1.0 / len(cache.branches))                           # through the average
    grads: dict[str, Any] = {}
    dx = None
    for i in _unrotated_first(cache.branches):                        # hw's dv holds the sum
        b, g = cache.branches[i], cache.gates[i]
        du = dy_b if g.back is None else ops.permute_backward(dy_b, g.back)
        dv, dw, dgamma, dbeta = _gate_backward(du, g)
        dx = [dv] if g.rotate is None else _accumulate(dx, ops.permute_backward(dv, g.rotate))
        grads.update({f"{b}.conv.conv.weight": dw, f"{b}.conv.bn.weight": dgamma,
                      f"{b}.conv.bn.bias": dbeta})
    return dx[0], grads


class TripletAttention(BatchNormBlock):
    """Triplet attention, the stateful face of :func:`triplet_attention_forward`.

    Parameters
    ----------
    kernel_size : odd int >= 1, or a pair of them
        Every branch's convolution size (7 in the reference code); padding ``k // 2``.
    no_spatial : bool
        Leave out the ``hw`` branch.
    momentum, eps : float
        The batch norms' (the reference code's 0.01 and 1e-5).
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of the convolutions, branch by branch; each batch
        norm starts at weight 1, bias 0, running mean 0, running variance 1.
    dtype : {"float32", "float64"}

    Params named as the reference ``TripletAttention`` (``self.cw = AttentionGate()`` holding
    ``self.conv = BasicConv(2, 1, k, relu=False)`` with ``.conv`` and ``.bn``):
    ``{b}.conv.conv.weight`` (1, 2, k, k), ``{b}.conv.bn.weight`` and ``{b}.conv.bn.bias`` (1,)
    for ``b`` in ``cw``, ``hc``[, ``hw``].  Buffers ``{b}.conv.bn.running_mean`` and
    ``{b}.conv.bn.running_var`` (1,), in ``state_dict``; ``train()`` (the default) normalises
    with the batch statistics and updates them, ``eval()`` uses them.  Any number of channels.
    ``attention_map(x)`` is the dict of the branches' maps.
    """

    pure_forward = staticmethod(triplet_attention_forward)
    pure_backward = staticmethod(triplet_attention_backward)

    def __init__(self, kernel_size: Any = 7, no_spatial: bool = False, *, momentum: float = 0.01,
                 eps: float = 1e-5, rng: Any = None, dtype: str = "float32") -> None:
        super().__init__(momentum, eps)
        pair = int_pair(self.name, "kernel_size", kernel_size, minimum=1)
        self.kernel_size = tuple(check_odd(self.name, "kernel_size", k) for k in pair)
        if not isinstance(no_spatial, bool):
            raise argument_error(self.name, "no_spatial", "a bool", repr(no_spatial), TypeError)
        self.no_spatial = no_spatial
        gen = as_generator(rng, self.name)
        for b in triplet_branches(no_spatial):
            w = add_conv(self, f"{b}.conv.conv", (1, 2, *self.kernel_size), gen, dtype, bias=False)
            self.add_batch_norm(f"{b}.conv.bn", 1, like=w)

    def _forward(self, x: Any) -> tuple[Any, Any]:
        self.check_input(x)
        return triplet_attention_forward(x, dict(self.params), no_spatial=self.no_spatial,
                                         **self.bn_kwargs(x))

    def extra_repr(self) -> str:
        k = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] else self.kernel_size
        return f"kernel_size={k}, no_spatial={self.no_spatial}"
