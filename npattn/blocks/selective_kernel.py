"""Selective kernel convolution (SKNet: Li, Wang, Hu and Yang, "Selective Kernel Networks",
CVPR 2019): branches of different receptive fields, fused by a softmax across the branches.

Split: branch ``i`` is a 3x3 convolution with dilation ``d_i = (k_i - 1) // 2`` and padding
``d_i`` (no bias), a batch norm and a ReLU, so kernel ``k_i`` is covered by a *dilated 3x3*
(5 -> dilation 2, 7 -> dilation 3), as the paper does for its 5x5 branch.  Fuse:
``U = sum_i U_i``, ``s = gap(U)``, ``z = relu(BN(W_fc s))`` of width
``d = max(C // reduction, L)``.  Select: per branch a 1x1 convolution with bias gives logits
``W_i z + b_i``; a softmax across the branches gives ``a_i`` (N, C, 1, 1); ``V = sum_i a_i U_i``.
Built only from :mod:`npattn.ops`; the backward is the forward read in reverse.
Derivation: ``docs/blocks/selective_kernel.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import ops
from ..backend import (add_into, batch_channel_blocks, keep_where, maximum_into, namespace,
                       run_blocks, store_scaled, sum_of_products, sum_over)
from ..checks import argument_error, check_float_array, check_int, check_shape
from ..init import as_generator
from ..ops.activation import OutputCache
from ._base import check_odd, take_params
from ._parts import (BatchNormBlock, BatchNorms, add_conv, batch_norm_shapes, check_bn_settings,
                     take_buffers, updated_buffers)

__all__ = ["selective_kernel_forward", "selective_kernel_backward", "SelectiveKernel",
           "SelectiveKernelCache", "BranchCache", "sk_width", "check_kernels"]


def sk_width(channels: int, reduction: int, L: int) -> int:
    """The fuse layer's width: ``d = max(channels // reduction, L)``."""
    return max(channels // reduction, L)


def check_kernels(op: str, kernels: Any) -> tuple[int, ...]:
    """A non-empty tuple of odd ints >= 3 (each a dilated 3x3)."""
    if not isinstance(kernels, (tuple, list)) or not kernels:
        raise argument_error(op, "kernels", "a non-empty tuple of odd ints >= 3", repr(kernels),
                             TypeError)
    for k in kernels:
        if check_odd(op, "kernels", k) < 3:
            raise argument_error(op, "kernels", "odd ints >= 3 (a dilated 3x3 each)", k)
    return tuple(int(k) for k in kernels)


class BranchCache(NamedTuple):
    """One branch: convolution, batch norm, ReLU (its output ``U_i``, which the selection's
    backward reads too)."""

    conv: Any      # convs.i.0, dilated 3x3
    bn: Any        # convs.i.1
    relu: Any      # convs.i.2 -> U_i


class SelectiveKernelCache(NamedTuple):
    """The caches of SK's ops, in forward order, the updated running statistics, and the map."""

    branches: tuple[BranchCache, ...]
    squeeze: Any    # (N, C, H, W): gap(U) is sum_i sum_hw(U_i) / (H W)
    fc: Any         # fc.0, 1x1 conv C -> d
    fc_bn: Any      # fc.1
    fc_relu: Any    # fc.2 -> z
    fcs: tuple[Any, ...]  # fcs.i, 1x1 conv d -> C with bias
    softmax: Any    # across the branches, axis 1 of (N, M, C, 1, 1)
    buffers: Any    # the running statistics after this call, or None
    map: Any        # a (N, M, C, 1, 1): each branch's weight per channel, summing to one over M


def _param_shapes(c: int, groups: int, m: int) -> dict[str, tuple[Any, ...]]:
    """Every parameter's shape for C channels and M branches; ``"d"`` is the fuse width."""
    shapes: dict[str, tuple[Any, ...]] = {}
    for i in range(m):
        shapes[f"convs.{i}.0.weight"] = (c, c // groups, 3, 3)
        shapes.update(batch_norm_shapes({f"convs.{i}.1": c}))
    shapes["fc.0.weight"] = ("d", c, 1, 1)
    shapes.update(batch_norm_shapes({"fc.1": "d"}))
    for i in range(m):
        shapes[f"fcs.{i}.weight"] = (c, "d", 1, 1)
        shapes[f"fcs.{i}.bias"] = (c,)
    return shapes


def selective_kernel_forward(x: Any, params: dict[str, Any], kernels: tuple[int, ...] = (3, 5),
                             groups: int = 1, buffers: dict[str, Any] | None = None,
                             training: bool = True, momentum: float = 0.1,
                             eps: float = 1e-5) -> tuple[Any, SelectiveKernelCache]:
    """Selective kernel convolution.

    .. math:: U_i = \\mathrm{relu}(\\mathrm{BN}_i(K_i \\star_{d_i} x)),\\quad
              z = \\mathrm{relu}(\\mathrm{BN}(W_{fc}\\,\\mathrm{gap}(\\textstyle\\sum_i U_i))),\\quad
              a = \\mathrm{softmax}_i(W_i z + b_i),\\quad V = \\sum_i a_i \\odot U_i

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    params : dict
        For each branch ``i``: ``"convs.{i}.0.weight"`` (C, C/groups, 3, 3), the batch norm's
        ``"convs.{i}.1.weight"`` and ``".bias"`` (C,), ``"fcs.{i}.weight"`` (C, d, 1, 1) and
        ``"fcs.{i}.bias"`` (C,); ``"fc.0.weight"`` (d, C, 1, 1) and the batch norm's
        ``"fc.1.weight"`` and ``".bias"`` (d,); the dtype of x.
    kernels : tuple of odd int >= 3
        The receptive field of each branch: a 3x3 with dilation ``(k - 1) // 2``.
    groups : int >= 1, dividing C
        The branch convolutions' groups.
    buffers : dict or None
        ``"convs.{i}.1.running_mean"``, ``"convs.{i}.1.running_var"`` (C,),
        ``"fc.1.running_mean"``, ``"fc.1.running_var"`` (d,); may be ``None`` in training mode.
    training : bool
        Batch statistics (True; the fuse layer's batch norm then needs N >= 2) or running ones.
    momentum, eps : float
        The batch norms', as :func:`npattn.ops.batch_norm2d_forward`.

    Returns
    -------
    v : array, shape (N, C, H, W)
    cache : SelectiveKernelCache
        The ops' caches; ``cache.buffers`` the running statistics after this call (``None``
        when none were given); ``cache.map`` the selection weights ``a`` (N, M, C, 1, 1).
    """
    op = "selective_kernel"
    xp = namespace(op, x=x)
    check_float_array(op, "x", x, ndim=4, layout="(N, C, H, W)")
    kernels = check_kernels(op, kernels)
    groups = check_int(op, "groups", groups, minimum=1)
    training, momentum, eps = check_bn_settings(op, training, momentum, eps)
    n, c, m = x.shape[0], x.shape[1], len(kernels)
    if c % groups:
        raise argument_error(op, "groups", f"a divisor of the {c} channels of 'x'", groups)
    if training and n < 2:
        raise argument_error(op, "x", "at least 2 samples in training mode (the fuse layer's "
                             "batch norm takes its statistics over the batch)",
                             f"shape {tuple(x.shape)}")
    p = take_params(op, params, x, _param_shapes(c, groups, m))
    d = p["fc.0.weight"].shape[0]
    norms = {**{f"convs.{i}.1": c for i in range(m)}, "fc.1": d}
    bn = BatchNorms(p, take_buffers(op, buffers, x, norms, training), training, momentum, eps)

    us, branches, sums = [], [], []
    for i, k in enumerate(kernels):                                          # split
        dil = (k - 1) // 2
        t, c_conv = ops.conv2d_forward(x, p[f"convs.{i}.0.weight"], padding=dil, dilation=dil,
                                       groups=groups)
        t, c_bn = bn.forward(f"convs.{i}.1", t)
        u = maximum_into(t, 0.0)              # U_i = relu(t), in BN's fresh output on NumPy
        c_relu = OutputCache(u)                                              # relu's cache
        us.append(u)
        sums.append(sum_over(u, (2, 3)))                                     # sum_hw U_i
        branches.append(BranchCache(c_conv, c_bn, c_relu))
    s = sum(sums[1:], sums[0]) / (x.shape[2] * x.shape[3])                   # fuse: gap(U)
    t, c_fc = ops.conv2d_forward(s, p["fc.0.weight"])                        # (N, d, 1, 1)
    t, c_fc_bn = bn.forward("fc.1", t)
    z, c_fc_relu = ops.relu_forward(t)
    logits, c_fcs = zip(*[ops.conv2d_forward(z, p[f"fcs.{i}.weight"], p[f"fcs.{i}.bias"])
                          for i in range(m)])                                # M x (N, C, 1, 1)
    a, c_softmax = ops.softmax_forward(xp.stack(logits, axis=1), axis=1)     # select
    v = _select_forward(xp, us, a)                                           # V = sum_i a_i U_i
    stats = updated_buffers({**{f"convs.{i}.1": branches[i].bn for i in range(m)}, "fc.1": c_fc_bn})
    return v, SelectiveKernelCache(tuple(branches), tuple(x.shape), c_fc, c_fc_bn, c_fc_relu,
                                   tuple(c_fcs), c_softmax, stats, a)


def _select_forward(xp: Any, us: list[Any], a: Any) -> Any:
    """``V = sum_i a_i U_i`` (``mul_forward`` per branch, then the sum), block by block
    (:func:`~npattn.backend.batch_channel_blocks`), each block written straight into ``V``
    (:func:`~npattn.backend.store_scaled`): one full-size array where the products and their
    sum made ``2M - 1``."""
    v = xp.empty_like(us[0])

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        rest = None
        for i in range(1, len(us)):                                  # a_1 U_1 + ... (in order)
            term = us[i][s, ch, ...] * a[s, i, ch, ...]
            rest = term if rest is None else rest + term
        store_scaled(v, (s, ch, ...), us[0][s, ch, ...], a[s, 0, ch, ...], rest)

    run_blocks(block, batch_channel_blocks(v), v.size)
    return v


def _branch_gradient(xp: Any, dv: Any, a_i: Any, du_sum: Any, u: Any) -> Any:
    """``relu_backward(dv * a_i + du_sum)`` through ``U_i = relu(.)``: ``U_i`` feeds its product
    (``dV a_i``) and the sum ``U`` (``dU = ds / (H W)``, (N, C, 1, 1), spread), and the ReLU
    keeps ``dv a_i + dU`` where ``not U_i <= 0`` (:func:`~npattn.backend.keep_where`, as
    ``relu_backward``).  Block by block: one full-size array where the product, the spread,
    their sum and the ReLU's made four."""
    dt = xp.empty_like(dv)

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        du = dv[s, ch, ...] * a_i[s, ch, ...]
        du += du_sum[s, ch, ...]
        dt[s, ch, ...] = keep_where(~(u[s, ch, ...] <= 0), du)

    run_blocks(block, batch_channel_blocks(dv), dv.size)
    return dt


def selective_kernel_backward(dv: Any, cache: SelectiveKernelCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of :func:`selective_kernel_forward`: ``(dx, {"convs.0.0.weight": ..., ...})``.

    ``z`` feeds every branch's logits and each ``U_i`` feeds its product and the sum ``U``: both
    sums are visible below; x feeds every branch, whose gradients are summed on the last line.
    See ``docs/blocks/selective_kernel.md``.  ``dv`` is not modified.
    """
    xp = namespace("selective_kernel_backward", dv=dv)
    check_shape("selective_kernel_backward", "dv", dv, cache.squeeze)
    m = len(cache.branches)
    n, c, h, w = cache.squeeze
    us = [b.relu.y for b in cache.branches]
    da = [sum_of_products(dv, u, (2, 3)) for u in us]             # V = sum_i a_i U_i: da_i
    dl = ops.softmax_backward(xp.stack(da, axis=1), cache.softmax)
    dz, dw_fcs, db_fcs = zip(*[ops.conv2d_backward(dl[:, i, ...], cache.fcs[i]) for i in range(m)])
    dt = ops.relu_backward(sum(dz), cache.fc_relu)                # z feeds every branch's logits
    dt, dg_fc, db_fc = ops.batch_norm2d_backward(dt, cache.fc_bn)
    ds, dw_fc, _ = ops.conv2d_backward(dt, cache.fc)
    du_sum = ds / (h * w)                                         # U = sum_i U_i: each gets it
    grads = {}
    dx = None
    for i, b in enumerate(cache.branches):
        dt = _branch_gradient(xp, dv, cache.softmax.y[:, i, ...], du_sum, us[i])
        dt, dg, db = ops.batch_norm2d_backward(dt, b.bn)
        dx_i, dw, _ = ops.conv2d_backward(dt, b.conv)
        dx = dx_i if dx is None else add_into(dx, dx_i)           # x feeds every branch
        grads.update({f"convs.{i}.0.weight": dw, f"convs.{i}.1.weight": dg, f"convs.{i}.1.bias": db})
    grads.update({"fc.0.weight": dw_fc, "fc.1.weight": dg_fc, "fc.1.bias": db_fc})
    for i in range(m):
        grads.update({f"fcs.{i}.weight": dw_fcs[i], f"fcs.{i}.bias": db_fcs[i]})
    return dx, grads


class SelectiveKernel(BatchNormBlock):
    """The selective kernel convolution (SKNet's SK unit), the stateful face of
    :func:`selective_kernel_forward`.

    Parameters
    ----------
    channels : int >= 1
    kernels : tuple of odd int >= 3
        One branch per entry, a 3x3 with dilation ``(k - 1) // 2`` (the paper's 5x5 is a
        dilated 3x3).
    reduction : int >= 1
    groups : int >= 1, dividing channels
        The branch convolutions' groups (SKNet uses 32 inside ResNeXt; 1 by default here).
    L : int >= 1
        The least fuse width: ``d = max(channels // reduction, L)``.
    momentum, eps : float
        The batch norms' (PyTorch's defaults 0.1 and 1e-5).
    rng : numpy.random.Generator, int seed or None
        For PyTorch's default initialisation of the convolutions; each batch norm starts at
        weight 1, bias 0, running mean 0, running variance 1.
    dtype : {"float32", "float64"}

    Params, as ``convs = nn.ModuleList([nn.Sequential(nn.Conv2d(C, C, 3, padding=d_i,
    dilation=d_i, groups=groups, bias=False), nn.BatchNorm2d(C), nn.ReLU()) ...])``,
    ``fc = nn.Sequential(nn.Conv2d(C, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU())`` and
    ``fcs = nn.ModuleList([nn.Conv2d(d, C, 1) ...])``: ``convs.{i}.0.weight``,
    ``convs.{i}.1.weight`` and ``.bias``, ``fc.0.weight``, ``fc.1.weight`` and ``.bias``,
    ``fcs.{i}.weight`` and ``.bias``.  Buffers ``convs.{i}.1.running_mean`` and
    ``.running_var``, ``fc.1.running_mean`` and ``.running_var``, in ``state_dict``.
    ``attention_map(x)`` is the selection weights ``a`` (N, M, C, 1, 1).
    """

    pure_forward = staticmethod(selective_kernel_forward)
    pure_backward = staticmethod(selective_kernel_backward)

    def __init__(self, channels: int, kernels: tuple[int, ...] = (3, 5), reduction: int = 16,
                 groups: int = 1, L: int = 32, *, momentum: float = 0.1, eps: float = 1e-5,
                 rng: Any = None, dtype: str = "float32") -> None:
        super().__init__(momentum, eps)
        self.channels = check_int(self.name, "channels", channels, minimum=1)
        self.kernels = check_kernels(self.name, kernels)
        self.reduction = check_int(self.name, "reduction", reduction, minimum=1)
        self.groups = check_int(self.name, "groups", groups, minimum=1)
        self.L = check_int(self.name, "L", L, minimum=1)
        c = self.channels
        if c % self.groups:
            raise argument_error(self.name, "groups", f"a divisor of channels={c}", self.groups)
        d = sk_width(c, self.reduction, self.L)
        gen = as_generator(rng, self.name)
        for i in range(len(self.kernels)):
            w = add_conv(self, f"convs.{i}.0", (c, c // self.groups, 3, 3), gen, dtype, bias=False)
            self.add_batch_norm(f"convs.{i}.1", c, like=w)
        w = add_conv(self, "fc.0", (d, c, 1, 1), gen, dtype, bias=False)
        self.add_batch_norm("fc.1", d, like=w)
        for i in range(len(self.kernels)):
            add_conv(self, f"fcs.{i}", (c, d, 1, 1), gen, dtype)

    def _forward(self, x: Any) -> tuple[Any, Any]:
        self.check_input(x)
        return selective_kernel_forward(x, dict(self.params), self.kernels, self.groups,
                                        **self.bn_kwargs(x))

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernels={self.kernels}, reduction={self.reduction}, "
                f"groups={self.groups}, L={self.L}")
