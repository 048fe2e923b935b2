"""Normalisation: ``batch_norm2d`` (training and evaluation modes) and ``layer_norm``.

Both compute ``y = weight * xhat + bias`` with ``xhat = (x - mean) / sqrt(var + eps)``; they
differ only in the axes the statistics are taken over (batch norm: N, H and W, per channel;
layer norm: the trailing ``normalized_shape`` axes, per sample) and in where the statistics come
from in evaluation mode (batch norm's running averages).  One helper computes ``xhat`` and one
its backward, for both.  Derivations: ``docs/ops/normalization.md``.

Batch norm's running statistics are never modified in place: the forward returns the updated
running mean and variance in its cache (``cache.running_mean``, ``cache.running_var``), and the
caller decides what to keep.

Batch norm on NumPy takes a faster path with the same formulas (:data:`BLOCKED_BATCH_NORM`,
:func:`_bn_forward_blocked`, :func:`_bn_backward_blocked`): sums over H x W at memory speed,
the element-wise steps block by block, ``xhat`` recomputed in the backward rather than kept.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import device

from ..backend import (batch_channel_blocks, is_numpy, namespace, run_blocks, store_scaled,
                       sum_of_products, sum_over)
from ..checks import argument_error, check_float_array, check_same_dtype, check_shape
from ._registry import register_op

__all__ = [
    "batch_norm2d_forward", "batch_norm2d_backward",
    "layer_norm_forward", "layer_norm_backward",
]


class BatchNormCache(NamedTuple):
    """What ``batch_norm2d_backward`` needs, and the updated running statistics.

    Attributes
    ----------
    x : array, shape (N, C, H, W)
        The input (a reference, as PyTorch keeps one): the backward recomputes
        ``xhat = (x - mean) * inv_std`` from it.
    mean : array, shape (1, C, 1, 1)
        The batch mean (training) or the running one (evaluation).
    inv_std : array, shape (1, C, 1, 1)
        ``1 / sqrt(var + eps)``, with the batch variance (training) or the running one (eval).
    weight : array, shape (C,), or None
    has_bias : bool
    training : bool
        Whether the statistics were the batch's (then they depend on ``x``).
    running_mean, running_var : array, shape (C,), or None
        The running statistics after this call (not used by the backward); ``None`` when none
        were given.  In evaluation mode they are the ones given.
    """

    x: Any
    mean: Any
    inv_std: Any
    weight: Any
    has_bias: bool
    training: bool
    running_mean: Any
    running_var: Any


class LayerNormCache(NamedTuple):
    """What ``layer_norm_backward`` needs.

    Attributes
    ----------
    xhat : array, the shape of ``x``
    inv_std : array, shape ``x.shape[:-k] + (1,) * k``
        ``1 / sqrt(var + eps)`` per sample, ``k = len(normalized_shape)``.
    weight : array, shape ``normalized_shape``, or None
    has_bias : bool
    k : int
        ``len(normalized_shape)``, the number of trailing axes normalised over.
    """

    xhat: Any
    inv_std: Any
    weight: Any
    has_bias: bool
    k: int


# ------------------------------------------------------------------------ shared normalisation

def _standardize(xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> tuple[Any, Any, Any, Any]:
    """``xhat = (x - mean) * inv_std`` over ``axes``, the biased variance; all kept dims.

    Returns ``(xhat, inv_std, mean, var)``, the last three with size 1 along ``axes``.
    """
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=axes, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    return centred * inv_std, inv_std, mean, var


def _standardize_backward(xp: Any, dxhat: Any, xhat: Any, inv_std: Any,
                          axes: tuple[int, ...]) -> Any:
    """Gradient through ``xhat = (x - mean(x)) / sqrt(var(x) + eps)`` over ``axes``.

    ``dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``, the means over ``axes``.
    """
    mean_d = xp.mean(dxhat, axis=axes, keepdims=True)
    mean_dx = xp.mean(dxhat * xhat, axis=axes, keepdims=True)
    return inv_std * (dxhat - mean_d - xhat * mean_dx)


def _affine_backward(xp: Any, dy: Any, xhat: Any, weight: Any, has_bias: bool,
                     axes: tuple[int, ...], param_shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """For ``y = weight * xhat + bias``: ``(dxhat, dweight, dbias)``, sums over ``axes``.

    ``weight`` is already broadcastable against ``xhat``; the parameter gradients are reshaped to
    ``param_shape``.  Absent parameters get ``None``.
    """
    dxhat = dy if weight is None else dy * weight
    dweight = None if weight is None else xp.reshape(xp.sum(dy * xhat, axis=axes), param_shape)
    dbias = xp.reshape(xp.sum(dy, axis=axes), param_shape) if has_bias else None
    return dxhat, dweight, dbias


def _check_param(op: str, arg: str, p: Any, x: Any, shape: tuple[int, ...]) -> None:
    """An optional parameter: ``None``, or a float array of ``shape`` and the dtype of ``x``."""
    if p is None:
        return
    check_float_array(op, arg, p)
    if tuple(p.shape) != shape:
        raise argument_error(op, arg, f"shape {shape}", f"shape {tuple(p.shape)}")
    check_same_dtype(op, x=x, **{arg: p})


def _check_eps(op: str, eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise argument_error(op, "eps", "a float", repr(eps), TypeError)
    if not eps > 0:
        raise argument_error(op, "eps", "a float > 0", eps)
    return float(eps)


# --------------------------------------------------------------------------------- batch_norm2d

_BN_AXES = (0, 2, 3)


def batch_norm2d_forward(x: Any, weight: Any = None, bias: Any = None, running_mean: Any = None,
                         running_var: Any = None, training: bool = True, momentum: float = 0.1,
                         eps: float = 1e-5) -> tuple[Any, BatchNormCache]:
    """Batch normalisation over N, H and W, per channel (``torch.nn.functional.batch_norm``).

    Training mode normalises with the batch mean and the *biased* batch variance, and updates the
    running statistics as PyTorch does, with ``M = N * H * W`` values per channel::

        running_mean' = (1 - momentum) * running_mean + momentum * mean
        running_var'  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)

    (the *unbiased* variance).  Evaluation mode normalises with the running statistics.  The
    inputs are never modified; the new statistics are returned in the cache.

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    weight, bias : array, shape (C,), the dtype of ``x``, or None
        The affine parameters (``gamma``, ``beta``); ``None`` leaves that part out.
    running_mean, running_var : array, shape (C,), the dtype of ``x``, or None
        The running statistics.  Required in evaluation mode; in training mode they may both be
        ``None`` (PyTorch's ``track_running_stats=False``), then nothing is updated.
    training : bool
        Batch statistics (True) or running statistics (False).
    momentum : float in [0, 1]
        The weight of the new batch in the running averages.
    eps : float > 0
        Added to the variance before the square root.

    Returns
    -------
    y : array, shape (N, C, H, W), the dtype of ``x``
    cache : BatchNormCache
        ``xhat``, ``inv_std``, ``weight``, whether there is a bias, the mode, and the running
        statistics after this call (``cache.running_mean``, ``cache.running_var``).

    Raises
    ------
    ValueError
        In training mode with a single value per channel (``N * H * W == 1``), as PyTorch does.
    """
    op = "batch_norm2d"
    xp = namespace(op, x=x, weight=weight, bias=bias, running_mean=running_mean,
                   running_var=running_var)
    check_float_array(op, "x", x, 4, "(N, C, H, W)")
    c = x.shape[1]
    for arg, p in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                   ("running_var", running_var)):
        _check_param(op, arg, p, x, (c,))
    if not isinstance(training, bool):
        raise argument_error(op, "training", "a bool", repr(training), TypeError)
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)):
        raise argument_error(op, "momentum", "a float", repr(momentum), TypeError)
    if not 0.0 <= momentum <= 1.0:
        raise argument_error(op, "momentum", "a float in [0, 1]", momentum)
    eps = _check_eps(op, eps)
    if (running_mean is None) != (running_var is None):
        missing = "running_var" if running_var is None else "running_mean"
        raise argument_error(op, missing, "an array when the other running statistic is given",
                             "None")
    count = x.shape[0] * x.shape[2] * x.shape[3]
    if training and count < 2:
        raise argument_error(op, "x", "more than 1 value per channel in training mode",
                             f"shape {tuple(x.shape)}")
    if not training and running_mean is None:
        raise argument_error(op, "running_mean", "the running statistics in evaluation mode",
                             "None")

    w = None if weight is None else xp.reshape(weight, (1, c, 1, 1))
    b = None if bias is None else xp.reshape(bias, (1, c, 1, 1))
    blocked = BLOCKED_BATCH_NORM and is_numpy(xp)
    if training:
        if blocked:
            mean, var = _bn_statistics_blocked(xp, x, count)
            inv_std = 1.0 / xp.sqrt(var + eps)
        else:
            xhat, inv_std, mean, var = _standardize(xp, x, _BN_AXES, eps)
        new_mean, new_var = running_mean, running_var
        if running_mean is not None:
            new_mean = (1.0 - momentum) * running_mean + momentum * xp.reshape(mean, (c,))
            unbiased = xp.reshape(var, (c,)) * (count / (count - 1))
            new_var = (1.0 - momentum) * running_var + momentum * unbiased
    else:
        mean = xp.reshape(running_mean, (1, c, 1, 1))
        inv_std = 1.0 / xp.sqrt(xp.reshape(running_var, (1, c, 1, 1)) + eps)
        if not blocked:
            xhat = (x - mean) * inv_std
        new_mean, new_var = running_mean, running_var

    if blocked:
        y = _bn_forward_blocked(xp, x, mean, inv_std, w, b)
    else:
        y = xhat if w is None else xhat * w
        if b is not None:
            y = y + b
    return y, BatchNormCache(x, mean, inv_std, w, bias is not None, training, new_mean, new_var)


def batch_norm2d_backward(dy: Any, cache: BatchNormCache) -> tuple[Any, Any, Any]:
    """Gradients of ``batch_norm2d`` for ``x``, ``weight`` and ``bias``.

    With ``g = dy * weight`` and means over N, H, W per channel:

    * training: ``dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))`` (through the batch
      statistics);
    * evaluation: ``dx = inv_std * g`` (the running statistics are constants);
    * ``dweight = sum(dy * xhat)``, ``dbias = sum(dy)``.

    The running statistics are buffers, not parameters: they get no gradient.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    dweight, dbias : array, shape (C,), or None where the parameter was None
    """
    check_shape("batch_norm2d_backward", "dy", dy, cache.x.shape)
    xp = namespace("batch_norm2d_backward", dy=dy, x=cache.x)
    if BLOCKED_BATCH_NORM and is_numpy(xp):
        return _bn_backward_blocked(xp, dy, cache)
    c = cache.x.shape[1]
    xhat = (cache.x - cache.mean) * cache.inv_std
    dxhat, dweight, dbias = _affine_backward(xp, dy, xhat, cache.weight, cache.has_bias,
                                             _BN_AXES, (c,))
    if cache.training:
        dx = _standardize_backward(xp, dxhat, xhat, cache.inv_std, _BN_AXES)
    else:
        dx = dxhat * cache.inv_std
    return dx, dweight, dbias


#: Whether NumPy's batch norm takes the blocked path (the same formulas; tests compare the two).
BLOCKED_BATCH_NORM = True


def _channel_sums(xp: Any, partial: Any) -> Any:
    """(N, C, 1, 1) per-sample sums -> (1, C, 1, 1), summed over the batch."""
    return xp.sum(partial, axis=0, keepdims=True)


def _bn_statistics_blocked(xp: Any, x: Any, count: int) -> tuple[Any, Any]:
    """The batch mean and biased variance (1, C, 1, 1) of ``_standardize`` over N, H, W, in two
    passes over ``x`` and no full-size array: ``sum_over`` the sums per sample and channel, then
    block by block the sums of the centred squares (``sum_of_products``), each over H x W at
    memory speed (NumPy's ``mean`` over axes (0, 2, 3) is pairwise and strided: about 5x
    slower), then over the batch."""
    n, c = x.shape[:2]
    mean = _channel_sums(xp, sum_over(x, (2, 3))) / count
    squares = xp.empty((n, c, 1, 1), dtype=x.dtype, device=device(x))

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        centred = x[s, ch, ...] - mean[:, ch, ...]
        squares[s, ch, ...] = sum_of_products(centred, centred, (2, 3))

    run_blocks(block, batch_channel_blocks(x), x.size)
    return mean, _channel_sums(xp, squares) / count


def _bn_forward_blocked(xp: Any, x: Any, mean: Any, inv_std: Any, w: Any, b: Any) -> Any:
    """``y = x * alpha + beta`` with ``alpha = inv_std * weight`` and ``beta = bias - mean * alpha``
    per channel (PyTorch's CPU kernel computes the same), block by block
    (:func:`~npattn.backend.batch_channel_blocks`), each block's product written straight into
    ``y`` (:func:`~npattn.backend.store_scaled`): one full-size array and two element-wise steps
    where the clear path makes three to five full-size arrays in four to six steps."""
    alpha = inv_std if w is None else inv_std * w
    beta = -mean * alpha if b is None else b - mean * alpha
    y = xp.empty_like(x)

    def block(where: tuple[slice, slice]) -> None:
        s, ch = where
        store_scaled(y, (s, ch, ...), x[s, ch, ...], alpha[:, ch, ...], beta[:, ch, ...])

    run_blocks(block, batch_channel_blocks(x), x.size)
    return y


def _bn_backward_blocked(xp: Any, dy: Any, cache: BatchNormCache) -> tuple[Any, Any, Any]:
    """:func:`batch_norm2d_backward` block by block, from ``x`` and the statistics.

    With ``c = x - mean`` (so ``xhat = c * inv_std``), ``k = inv_std * weight`` and sums over N,
    H, W: ``dbias = sum(dy)``, ``dweight = inv_std * sum(dy * c)``; in training
    ``mean(g) = weight * dbias / M`` and ``mean(g * xhat) = weight * dweight / M``, so the clear
    formula ``dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))`` is
    ``dx = dy * k + (c * q1 + q0)`` with ``q1 = -k * inv_std * dweight / M`` and
    ``q0 = -k * dbias / M`` per channel; in evaluation ``dx = dy * k``.  One pass reads ``dy``
    and ``x`` for the sums per sample and channel (``sum_over``, ``sum_of_products``), a second
    writes ``dx`` (:func:`~npattn.backend.store_scaled`): one full-size array, where the clear
    path makes about seven."""
    x, mean, inv_std, w = cache.x, cache.mean, cache.inv_std, cache.weight
    n, c, h, wd = x.shape
    count = n * h * wd
    blocks = batch_channel_blocks(x)
    k = inv_std if w is None else inv_std * w
    need_dweight = cache.training or w is not None
    sum_dy = xp.empty((n, c, 1, 1), dtype=dy.dtype, device=device(dy))
    sum_dy_c = xp.empty((n, c, 1, 1), dtype=dy.dtype, device=device(dy))

    def sums(where: tuple[slice, slice]) -> None:
        s, ch = where
        sum_dy[s, ch, ...] = sum_over(dy[s, ch, ...], (2, 3))
        if need_dweight:
            sum_dy_c[s, ch, ...] = sum_of_products(dy[s, ch, ...], x[s, ch, ...] - mean[:, ch, ...],
                                                   (2, 3))

    if cache.training or cache.has_bias or w is not None:
        run_blocks(sums, blocks, x.size)
    dbias = _channel_sums(xp, sum_dy)
    dweight = inv_std * _channel_sums(xp, sum_dy_c) if need_dweight else None
    dx = xp.empty_like(dy)
    if cache.training:
        q1, q0 = -k * inv_std * dweight / count, -k * dbias / count

    def gradient(where: tuple[slice, slice]) -> None:
        s, ch = where
        shift = None
        if cache.training:
            shift = x[s, ch, ...] - mean[:, ch, ...]
            shift *= q1[:, ch, ...]
            shift += q0[:, ch, ...]
        store_scaled(dx, (s, ch, ...), dy[s, ch, ...], k[:, ch, ...], shift)

    run_blocks(gradient, blocks, x.size)
    return (dx, None if w is None else xp.reshape(dweight, (c,)),
            xp.reshape(dbias, (c,)) if cache.has_bias else None)


# ----------------------------------------------------------------------------------- layer_norm

def layer_norm_forward(x: Any, normalized_shape: Any, weight: Any = None, bias: Any = None,
                       eps: float = 1e-5) -> tuple[Any, LayerNormCache]:
    """Layer normalisation over the trailing ``normalized_shape`` axes
    (``torch.nn.functional.layer_norm``), with the biased variance.

    Parameters
    ----------
    x : array, shape (..., *normalized_shape), float32 or float64
    normalized_shape : int or tuple of int
        The trailing shape of ``x`` that each mean and variance is taken over.
    weight, bias : array, shape ``normalized_shape``, the dtype of ``x``, or None
        Element-wise affine parameters.
    eps : float > 0

    Returns
    -------
    y : array, the shape and dtype of ``x``
    cache : LayerNormCache
        ``xhat``, ``inv_std``, ``weight``, whether there is a bias, and ``k``.
    """
    op = "layer_norm"
    xp = namespace(op, x=x, weight=weight, bias=bias)
    check_float_array(op, "x", x)
    if isinstance(normalized_shape, int) and not isinstance(normalized_shape, bool):
        normalized_shape = (normalized_shape,)
    if (not isinstance(normalized_shape, (tuple, list)) or not normalized_shape
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in normalized_shape)):
        raise argument_error(op, "normalized_shape", "an int or a non-empty tuple of ints",
                             repr(normalized_shape), TypeError)
    shape = tuple(normalized_shape)
    k = len(shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise argument_error(op, "x", f"a shape ending in normalized_shape {shape}",
                             f"shape {tuple(x.shape)}")
    for arg, p in (("weight", weight), ("bias", bias)):
        _check_param(op, arg, p, x, shape)
    eps = _check_eps(op, eps)

    axes = tuple(range(x.ndim - k, x.ndim))
    xhat, inv_std, _, _ = _standardize(xp, x, axes, eps)
    y = xhat if weight is None else xhat * weight
    if bias is not None:
        y = y + bias
    return y, LayerNormCache(xhat, inv_std, weight, bias is not None, k)


def layer_norm_backward(dy: Any, cache: LayerNormCache) -> tuple[Any, None, Any, Any]:
    """Gradients of ``layer_norm``, aligned with its parameters: ``(dx, None, dweight, dbias)``.

    With ``g = dy * weight`` and means over the normalised axes, per sample:
    ``dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))``; ``dweight = sum(dy * xhat)`` and
    ``dbias = sum(dy)`` over the leading axes.

    Returns
    -------
    dx : array, the shape of ``x``
    None
        In the place of ``normalized_shape``, which is not an array.
    dweight, dbias : array, shape ``normalized_shape``, or None where the parameter was None
    """
    check_shape("layer_norm_backward", "dy", dy, cache.xhat.shape)
    xp = namespace("layer_norm_backward", dy=dy, xhat=cache.xhat)
    xhat = cache.xhat
    lead = xhat.ndim - cache.k
    shape = tuple(xhat.shape[lead:])
    dxhat, dweight, dbias = _affine_backward(xp, dy, xhat, cache.weight, cache.has_bias,
                                             tuple(range(lead)), shape)
    dx = _standardize_backward(xp, dxhat, xhat, cache.inv_std, tuple(range(lead, xhat.ndim)))
    return dx, None, dweight, dbias


# ----------------------------------------------------------------------------------- registry

def _batch_norm_example(rng):
    """Training mode (gradients through the batch statistics), no running statistics."""
    x = rng.standard_normal((3, 2, 2, 3))
    w, b = 1.0 + 0.5 * rng.standard_normal(2), rng.standard_normal(2)
    return (x, w, b), {"training": True}


register_op("batch_norm2d", batch_norm2d_forward, batch_norm2d_backward,
            _batch_norm_example, doc="ops/normalization.md")
register_op("layer_norm", layer_norm_forward, layer_norm_backward,
            lambda rng: ((rng.standard_normal((2, 3, 4)), (3, 4),
                          1.0 + 0.5 * rng.standard_normal((3, 4)), rng.standard_normal((3, 4))), {}),
            doc="ops/normalization.md")
